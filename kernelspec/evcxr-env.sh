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
# A persistent build folder keeps compiled dependencies between kernel starts.
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-$cache/evcxr-build}"
mkdir -p "$EVCXR_TMPDIR"
# evcxr links each cell against libstd with a relative rpath computed for cargo's deps/
# folder; with the build folder under the same home as ~/.rustup that path resolves one level
# off and dlopen fails. Putting the toolchain's libraries on the search path fixes it anywhere.
if command -v rustc >/dev/null 2>&1; then
  sysroot="$(rustc --print sysroot)"
  host="$(rustc -vV | sed -n 's/^host: //p')"
  export LD_LIBRARY_PATH="$sysroot/lib/rustlib/$host/lib:$sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
