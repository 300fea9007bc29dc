#!/usr/bin/env bash
# Installs the "Rust (mechinterp)" Jupyter kernel: evcxr_jupyter (scripts/install-evcxr.sh, where
# missing), Jupyter in a virtualenv, and the kernelspec. `--minimal` installs only what executing
# notebooks needs (nbconvert, nbclient), as CI does. It ends by compiling mechinterp inside
# evcxr's persistent build folder, so that the first cell of a fresh kernel answers at once.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cache="${MECHINTERP_CACHE:-$HOME/.cache/mechinterp}"
venv="$cache/venv"
minimal=0
[ "${1:-}" = "--minimal" ] && minimal=1

# Where evcxr_jupyter is missing, evcxr_repl (scripts/repl.sh) is built with it: one build of
# their shared crates for both, about a minute more than evcxr_jupyter alone.
if ! command -v evcxr_jupyter >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/evcxr_jupyter" ]; then
  "$project/scripts/install-evcxr.sh" evcxr_jupyter evcxr_repl
fi
if [ ! -x "$venv/bin/jupyter-nbconvert" ]; then
  echo "creating the Jupyter virtualenv in $venv…"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet nbconvert nbclient nbformat jupyter_client ipykernel jupytext
fi
# jupytext (scripts/notebooks.py, which scripts/run-notebooks.sh runs first) in a venv made before it.
[ -x "$venv/bin/jupytext" ] || "$venv/bin/pip" install --quiet jupytext
if [ "$minimal" = 0 ] && [ ! -x "$venv/bin/jupyter-lab" ]; then
  "$venv/bin/pip" install --quiet jupyterlab
fi
# Before evcxr's build folder moved into ~/.cache/mechinterp/evcxr/ (kernelspec/evcxr-env.sh).
rm -rf "$cache/evcxr-build"
kdir="$venv/share/jupyter/kernels/mechinterp"
mkdir -p "$kdir"
python3 - "$project/kernelspec/kernel.json" "$kdir/kernel.json" "$project/kernelspec/mechinterp-kernel" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["argv"][0] = sys.argv[3]
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
echo "kernel \"Rust (mechinterp)\" installed in $kdir"
# evcxr compiles mechinterp and its dependencies into its own build folder on the first kernel
# start (minutes); doing it here means the first cell a user runs answers in seconds.
echo "compiling mechinterp inside evcxr's build folder (once; about 4 minutes on 2 cores)…"
JUPYTER_PATH="$venv/share/jupyter" "$venv/bin/python" "$project/scripts/warm_kernel.py"
echo "start Jupyter with: $venv/bin/jupyter lab $project/notebooks   (or jupyter nbconvert --execute …)"
