#!/usr/bin/env bash
# The terminal REPL with the notebooks' setup: evcxr with `use mechinterp::prelude::*;`, the
# kernel's persistent build folder and its library path. Installs evcxr_repl where missing.
#   scripts/repl.sh                       interactive
#   printf 'cell\n' | scripts/repl.sh     a scripted session (one input line per cell)
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
evcxr="${EVCXR_REPL:-$(command -v evcxr || echo "$HOME/.cargo/bin/evcxr")}"
if [ ! -x "$evcxr" ]; then
  "$project/scripts/install-evcxr.sh" evcxr_repl >&2
  evcxr="${CARGO_HOME:-$HOME/.cargo}/bin/evcxr"
fi
# shellcheck source=../kernelspec/evcxr-env.sh
. "$project/kernelspec/evcxr-env.sh"
exec "$evcxr" "$@"
