# Sourced by the Jupyter launcher (kernelspec/mechinterp-kernel) and the terminal REPL
# (scripts/repl.sh): the evcxr configuration and environment they share. Expects $project.
# evcxr's init.evcxr cannot expand variables and resolves relative paths against the notebook's
# folder, so this writes an evcxr config with the project's absolute path on every start.
cache="${MECHINTERP_CACHE:-$HOME/.cache/mechinterp}"
config="$cache/evcxr-config"
mkdir -p "$config"
{
  echo ":dep mechinterp = { path = \"$project\" }"
  # Strict mode (CI): a panicking cell fails the run instead of being caught.
  if [ "${MECHINTERP_NOTEBOOK_STRICT:-0}" = "1" ]; then echo ":preserve_vars_on_panic 0"; fi
} > "$config/init.evcxr"
echo "use mechinterp::prelude::*;" > "$config/prelude.rs"
export EVCXR_CONFIG_DIR="$config"
# evcxr finds its compiled cells under its own build folder; an inherited target dir breaks that.
unset CARGO_TARGET_DIR
# A persistent build folder keeps compiled dependencies between kernel starts. It sits in a
# folder of its own (MECHINTERP_EVCXR_DIR, default ~/.cache/mechinterp/evcxr) beside a cargo
# config: evcxr builds every crate with debug assertions and overflow checks on, which makes
# candle's CPU kernels about twice as slow (a translation scoring pass: 21 s against 10 s), and
# the config turns both off for the dependencies (mechinterp, candle, …) while cells keep them.
# It cannot go in the build folder's own .cargo/config.toml, which evcxr rewrites; cargo also
# reads the one in the folder above. An EVCXR_TMPDIR set by hand is used as it is.
evcxr_dir="${MECHINTERP_EVCXR_DIR:-$cache/evcxr}"
if [ -z "${EVCXR_TMPDIR:-}" ]; then
  export EVCXR_TMPDIR="$evcxr_dir/build"
  mkdir -p "$evcxr_dir/.cargo"
  cat >"$evcxr_dir/.cargo/config.toml" <<'TOML'
# Written by mechinterp's kernelspec/evcxr-env.sh: dependencies at full speed, cells checked.
[profile.dev.package."*"]
debug-assertions = false
overflow-checks = false
TOML
fi
mkdir -p "$EVCXR_TMPDIR"
# evcxr links each cell against libstd with a relative rpath computed for cargo's deps/
# folder; with the build folder under the same home as ~/.rustup that path resolves one level
# off and dlopen fails. Putting the toolchain's libraries on the search path fixes it anywhere.
if command -v rustc >/dev/null 2>&1; then
  sysroot="$(rustc --print sysroot)"
  host="$(rustc -vV | sed -n 's/^host: //p')"
  export LD_LIBRARY_PATH="$sysroot/lib/rustlib/$host/lib:$sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
