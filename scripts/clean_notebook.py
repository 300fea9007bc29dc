"""Drops run-specific metadata (timestamps) from an executed notebook so outputs are stable."""
import json, sys

path = sys.argv[1]
nb = json.load(open(path))
for cell in nb["cells"]:
    cell.get("metadata", {}).pop("execution", None)
nb.get("metadata", {}).pop("papermill", None)
with open(path, "w") as f:
    json.dump(nb, f, indent=1, ensure_ascii=False)
    f.write("\n")
