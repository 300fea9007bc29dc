"""Checks an executed notebook: any error output, or any stderr text that is not one of
mechinterp's progress or warning lines, fails (evcxr shows a cell's `?` error only as stderr
text and carries on); and so does any number in the prose that no cell printed, since every
number a tutorial states must come from its own outputs. With --clean, also drops run-specific
metadata so outputs are stable."""
import json, re, sys

ALLOWED = re.compile(
    r"^(warning: .*|[\w\s→:.-]+: \d+/\d+ \([\d.]+ s\)|[\w\s→:.-]+: \d+ runs in [\d.]+ s|"
    r"\[\d/3\] .*|\s+\S+\.part\d+: .*|fetched .*|verifying .*|ok: sha256 .*|\s*)$"
)

# A number in prose: not part of a word or identifier (L3H2, 270M, blocks.3, 08_steering), not
# a list or heading index ("1. ", "# 05 ·").
PROSE_NUMBER = re.compile(r"(?<![\w.\-−/])[-−]?\d+(?:[.,]\d+)*(?![\w]|\.\d)")
OUTPUT_NUMBER = re.compile(r"[-−]?\d+(?:[.,]\d+)*")


def prose_numbers(md):
    """Numbers stated in a markdown cell, outside code spans, links and headings' indices."""
    text = re.sub(r"```.*?```", " ", md, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"^#+\s*\d+\s*·", "#", text, flags=re.M)  # "# 05 · Title"
    text = re.sub(r"^\s*\d+\.\s", " ", text, flags=re.M)  # numbered lists
    text = re.sub(r"notebooks? \d\d(?:\s*(?:[–-]|and|,)\s*\d\d)*", " ", text)  # cross-references
    text = re.sub(r"\((?:19|20)\d\d\)", " ", text)  # citation years
    out = []
    for m in PROSE_NUMBER.finditer(text):
        n = m.group(0).replace("−", "-").lstrip("-").rstrip(".,")
        # Single digits are counts and indices that any output contains; years are dates.
        if len(n.replace(".", "").replace(",", "")) > 1:
            out.append(n)
    return out


def output_numbers(nb):
    found = set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")]
            texts += [v for v in out.get("data", {}).values()]
            for t in texts:
                t = "".join(t) if isinstance(t, list) else str(t)
                for m in OUTPUT_NUMBER.finditer(t):
                    n = m.group(0).replace("−", "-").lstrip("-")
                    found.add(n)
                    found.add(n.replace(",", ""))
    return found


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
    printed = output_numbers(nb)
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for n in prose_numbers("".join(cell["source"])):
            if n not in printed and n.replace(",", "") not in printed:
                problems.append(f"cell {i}: the prose states {n}, which no cell printed")
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
