"""Checks an executed notebook: any error output, or any stderr text that is not one of
mechinterp's progress or warning lines, fails (evcxr shows a cell's `?` error only as stderr
text and carries on); and so does any number in the prose that no cell printed, since every
number a tutorial states must come from its own outputs; and so does any output that is a Rust
`Debug` dump of a struct (`BarChart { title: "…", bars: [...] }`, `PatchResult {` and the like):
a chart or result shown to a reader displays itself, or the cell prints what matters. With
--clean, also drops run-specific metadata so outputs are stable."""
import json, re, sys

ALLOWED = re.compile(
    r"^(warning: .*|[\w\s→:.-]+: \d+/\d+ \([\d.]+ s\)|[\w\s→:.-]+: \d+ runs in [\d.]+ s|"
    r"\[\d/3\] .*|\s+\S+\.part\d+: .*|fetched .*|verifying .*|ok: sha256 .*|\s*)$"
)

# A number in prose: not part of a word or identifier (L3H2, 270M, blocks.3, 08_steering), not
# a list or heading index ("1. ", "# 05 ·").
PROSE_NUMBER = re.compile(r"(?<![\w.\-−/])[-−]?\d+(?:[.,]\d+)*(?![\w]|\.\d)")
OUTPUT_NUMBER = re.compile(r"[-−]?\d+(?:[.,]\d+)*")

# A struct's `Debug`: an UpperCamelCase name, " {", then a field ("Heatmap { title: …"), on one
# line ({:?}, also inside other text) or with the fields on the lines below ({:#?}).
DEBUG_STRUCT = re.compile(r"\b([A-Z][A-Za-z0-9]*) \{ (?:r#)?[a-z_][a-z0-9_]*: ")
DEBUG_STRUCT_OPEN = re.compile(r"^\s*(?:[a-z_][a-z0-9_]*: )?[\[(]*(?:(?:Some|Ok|Err)\()?([A-Z][A-Za-z0-9]*) \{$")
DEBUG_FIELD = re.compile(r"^\s+(?:r#)?[a-z_][a-z0-9_]*: ")


def debug_dump(text):
    """The first line of text that shows a struct's Debug, or None."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if DEBUG_STRUCT.search(line):
            return line
        if DEBUG_STRUCT_OPEN.match(line) and k + 1 < len(lines) and DEBUG_FIELD.match(lines[k + 1]):
            return line + " " + lines[k + 1].strip()
    return None


def shown_texts(out):
    """The plain text a reader sees in an output: stdout, and text/plain of a result or display."""
    if out.get("output_type") == "stream" and out.get("name") == "stdout":
        yield "".join(out.get("text", []))
    if out.get("output_type") in ("execute_result", "display_data"):
        t = out.get("data", {}).get("text/plain")
        if t is not None:
            yield "".join(t) if isinstance(t, list) else str(t)


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
            for text in shown_texts(out):
                line = debug_dump(text)
                if line:
                    line = line.strip()
                    problems.append(f"cell {i}: a Debug dump in its output: {line[:100]}{'…' if len(line) > 100 else ''}")
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
