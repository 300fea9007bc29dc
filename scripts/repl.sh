#!/usr/bin/env bash
# The terminal REPL with the notebooks' setup: evcxr with `use mechinterp::prelude::*;`, the
# kernel's persistent build folder and its library path. Installs evcxr_repl where missing.
#   scripts/repl.sh                       interactive
#   printf 'cell\n' | scripts/repl.sh     a scripted session (one input line per cell)
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
evcxr="${EVCXR_REPL:-$(command -v evcxr || echo "$HOME/.cargo/bin/evcxr")}"
if [ ! -x "$evcxr" ]; then
  echo "installing evcxr_repl (several minutes the first time)…" >&2
  # The version built and tested here with this toolchain (the kernel uses evcxr_jupyter 0.22).
  # The same build folder as install-kernel.sh's evcxr_jupyter, whose compiled crates it reuses.
  CARGO_TARGET_DIR="${MECHINTERP_CACHE:-$HOME/.cache/mechinterp}/evcxr-install-target" \
    cargo install evcxr_repl --locked --version 0.22.0 >&2
  evcxr="$HOME/.cargo/bin/evcxr"
fi
# shellcheck source=../kernelspec/evcxr-env.sh
. "$project/kernelspec/evcxr-env.sh"
exec "$evcxr" "$@"
