"""Keeps each tutorial notebook `notebooks/NN_name.ipynb` (committed with its outputs, what users
open) and its source `notebooks/NN_name.rs` (jupytext's percent format: what to review and edit)
in agreement.

    python3 scripts/notebooks.py sync [NAME …]        .rs → .ipynb, keeping the outputs of unchanged cells
    python3 scripts/notebooks.py from-ipynb [NAME …]  .ipynb → .rs, after editing in JupyterLab
    python3 scripts/notebooks.py check                fails when a pair disagrees (CI; no kernel)

NAME is a notebook's name or a prefix of it ("07", "07_logit_difference", or a path to either
file); the default is every notebook. `sync` keeps a code cell's outputs (and its id) only when
its kind and source are exactly those of a cell of the old .ipynb, in the same order; a changed,
new or moved cell comes out with no outputs, for `scripts/run-notebooks.sh --update` to fill in.
(jupytext's own `--update` is not used: it matches cells up to spaces, commas, quotes and
parentheses, and gives a cell the outputs of an old cell it ends like, so an edited string or
argument list would keep its stale output.) The notebook's metadata is kept, with the kernelspec
taken from the .rs header. Needs jupytext (scripts/install-kernel.sh puts it in the kernel's venv)."""
import copy
import difflib
import glob
import json
import os
import sys
import uuid

try:
    import jupytext
except ImportError:
    sys.exit(
        "scripts/notebooks.py needs jupytext: pip install jupytext "
        "(scripts/install-kernel.sh installs it into ~/.cache/mechinterp/venv)"
    )

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
# The .rs header keeps the kernelspec only: no jupytext version (which would change with every
# jupytext release) and no cell metadata.
FMT = {
    "extension": ".rs",
    "format_name": "percent",
    "notebook_metadata_filter": "kernelspec,-all",
    "cell_metadata_filter": "-all",
}
KERNELSPEC = {"display_name": "Rust (mechinterp)", "language": "rust", "name": "mechinterp"}


def rel(path):
    return os.path.relpath(path, os.getcwd())


def stems():
    return sorted({os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.ipynb")) + glob.glob(os.path.join(ROOT, "*.rs"))})


def selected(args):
    every = stems()
    if not args:
        return every
    out = []
    for a in args:
        a = os.path.splitext(os.path.basename(a))[0]
        hits = [s for s in every if s.startswith(a)]
        if not hits:
            sys.exit(f"no notebook named {a}* in {rel(ROOT)}")
        out += [h for h in hits if h not in out]
    return out


def read_rs(path):
    return jupytext.read(path, fmt={"extension": ".rs", "format_name": "percent"})


def read_ipynb(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_ipynb(path, nb):
    # As nbformat writes it (and scripts/check_notebook.py --clean rewrites it).
    text = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def source(cell):
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def lines(text):
    return text.splitlines(keepends=True)


def new_id(taken):
    while True:
        i = uuid.uuid4().hex[:8]
        if i not in taken:
            taken.add(i)
            return i


def combine(rs_cells, old):
    """The .ipynb cells for the .rs cells: an unchanged cell is the old one as it was (outputs,
    execution count, id, metadata); a changed one reuses the id of the old cell it replaces."""
    old_cells = old["cells"] if old else []
    a = [(c["cell_type"], source(c)) for c in old_cells]
    b = [(c.cell_type, c.source) for c in rs_cells]
    taken = {c.get("id") for c in old_cells}
    cells, kept, changed = [], 0, 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            cells += [copy.deepcopy(c) for c in old_cells[i1:i2]]
            kept += sum(1 for c in old_cells[i1:i2] if c["cell_type"] == "code")
            continue
        for k in range(j1, j2):
            kind, text = b[k]
            replaced = old_cells[i1 + k - j1] if tag == "replace" and i1 + k - j1 < i2 else None
            cid = replaced.get("id") if replaced and replaced["cell_type"] == kind else None
            cell = {"cell_type": kind, "id": cid or new_id(taken), "metadata": {}, "source": lines(text)}
            if kind == "code":
                cell["execution_count"] = None
                cell["outputs"] = []
                changed += 1
            cells.append(cell)
    return cells, kept, changed


def sync(stem):
    rs, ipynb = (os.path.join(ROOT, stem + ext) for ext in (".rs", ".ipynb"))
    if not os.path.exists(rs):
        sys.exit(f"{rel(rs)} is missing: run `python3 scripts/notebooks.py from-ipynb {stem}` to write it")
    src = read_rs(rs)
    old = read_ipynb(ipynb) if os.path.exists(ipynb) else None
    cells, kept, changed = combine(src.cells, old)
    if old:
        nb = copy.deepcopy(old)
        nb["cells"] = cells
    else:
        nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    nb["metadata"]["kernelspec"] = dict(src.metadata.get("kernelspec") or nb["metadata"].get("kernelspec") or KERNELSPEC)
    if old == nb:
        print(f"{rel(ipynb)}: up to date")
        return
    write_ipynb(ipynb, nb)
    what = f"{changed} code cell{'s' if changed != 1 else ''} to run" if changed else "no code cell to run"
    print(f"{rel(ipynb)}: written from {rel(rs)}; {kept} code cells keep their outputs, {what}")


def from_ipynb(stem):
    rs, ipynb = (os.path.join(ROOT, stem + ext) for ext in (".rs", ".ipynb"))
    if not os.path.exists(ipynb):
        sys.exit(f"{rel(ipynb)} is missing")
    text = jupytext.writes(jupytext.read(ipynb), fmt=FMT)
    if os.path.exists(rs):
        with open(rs, encoding="utf-8") as f:
            if f.read() == text:
                print(f"{rel(rs)}: up to date")
                return
    with open(rs, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{rel(rs)}: written from {rel(ipynb)}")


def first_line(kind, text):
    first = text.strip("\n").split("\n", 1)[0]
    return f"{kind} `{first[:70]}{'…' if len(first) > 70 else ''}`"


def check_pair(stem):
    """The first disagreement between a notebook and its source, or None."""
    rs, ipynb = (os.path.join(ROOT, stem + ext) for ext in (".rs", ".ipynb"))
    if not os.path.exists(rs):
        return f"{rel(ipynb)} has no source {rel(rs)} (python3 scripts/notebooks.py from-ipynb {stem})"
    if not os.path.exists(ipynb):
        return f"{rel(rs)} has no notebook {rel(ipynb)} (python3 scripts/notebooks.py sync {stem})"
    try:
        src = read_rs(rs)
        nb = read_ipynb(ipynb)
    except Exception as e:  # unreadable: report it like a disagreement
        return f"{stem}: cannot read the pair: {e}"
    a = [(c.cell_type, c.source) for c in src.cells]
    b = [(c["cell_type"], source(c)) for c in nb["cells"]]
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            how = "kind" if x[0] != y[0] else "source"
            diff = ""
            if x[0] == y[0]:
                la, lb = x[1].split("\n"), y[1].split("\n")
                n = next((k for k in range(max(len(la), len(lb))) if la[k:k + 1] != lb[k:k + 1]), 0)
                diff = (f"\n    line {n + 1}: .rs    {la[n] if n < len(la) else '(none)'!r}"
                        f"\n    line {n + 1}: .ipynb {lb[n] if n < len(lb) else '(none)'!r}")
            return (f"{stem}: cell {i} differs in {how}: .rs has {first_line(*x)}, "
                    f".ipynb has {first_line(*y)}{diff}")
    if len(a) != len(b):
        i = min(len(a), len(b))
        extra, where = (a[i], ".rs") if len(a) > len(b) else (b[i], ".ipynb")
        return f"{stem}: .rs has {len(a)} cells, .ipynb {len(b)}; cell {i}, only in the {where}: {first_line(*extra)}"
    ks_rs = (src.metadata.get("kernelspec") or {}).get("name")
    ks_nb = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
    if ks_rs != ks_nb:
        return f"{stem}: the kernelspec differs: .rs {ks_rs!r}, .ipynb {ks_nb!r}"
    return None


def check(args):
    problems = [p for p in (check_pair(s) for s in selected(args)) if p]
    if problems:
        print("notebooks and their .rs sources disagree:\n  " + "\n  ".join(problems))
        print("edited the .rs: python3 scripts/notebooks.py sync NAME, then "
              "scripts/run-notebooks.sh --update notebooks/NAME.ipynb; "
              "edited the .ipynb: python3 scripts/notebooks.py from-ipynb NAME")
        sys.exit(1)
    print(f"ok: {len(stems() if not args else selected(args))} notebooks agree with their .rs sources")


def main():
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else (None, [])
    if cmd == "sync":
        for s in selected(args):
            sync(s)
    elif cmd == "from-ipynb":
        for s in selected(args):
            from_ipynb(s)
    elif cmd == "check":
        check(args)
    else:
        sys.exit(__doc__)


main()
