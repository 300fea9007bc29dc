"""Checks an executed notebook: any error output, or any stderr text that is not one of
mechinterp's progress or warning lines, fails (evcxr shows a cell's `?` error only as stderr
text and carries on). With --clean, also drops run-specific metadata so outputs are stable."""
import json, re, sys

ALLOWED = re.compile(
    r"^(warning: .*|[\w\s→:.-]+: \d+/\d+ \([\d.]+ s\)|[\w\s→:.-]+: \d+ runs in [\d.]+ s|"
    r"\[\d/3\] .*|\s+\S+\.part\d+: .*|fetched .*|verifying .*|ok: sha256 .*|\s*)$"
)

def main():
    path = sys.argv[1]
    nb = json.load(open(path))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: error {out.get('ename')}: {out.get('evalue')}")
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text", []))
                bad = [l for l in text.splitlines() if not ALLOWED.match(l)]
                if bad:
                    problems.append(f"cell {i}: stderr: {' | '.join(bad[:3])}")
    if "--clean" in sys.argv:
        for cell in nb["cells"]:
            cell.get("metadata", {}).pop("execution", None)
        with open(path, "w") as f:
            json.dump(nb, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if problems:
        print(f"{path}:\n  " + "\n  ".join(problems))
        sys.exit(1)

main()
