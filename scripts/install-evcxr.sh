#!/usr/bin/env bash
# Installs evcxr_jupyter (the kernel) and evcxr_repl (the `evcxr` terminal REPL), version
# 0.22.0, into cargo's bin folder where missing.
#   scripts/install-evcxr.sh [CRATE …]    the crates to have (default: both)
# Both are built by ONE cargo build in one workspace with one lockfile (kernelspec/
# evcxr-tools.lock, the union of the two crates' own lockfiles): their ~330 shared crates (the evcxr crate and rust-analyzer's among them) are
# compiled once, about 6½ minutes on 2 cores instead of 13½ for two `cargo install`s.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cache="${MECHINTERP_CACHE:-$HOME/.cache/mechinterp}"
bin="${CARGO_HOME:-$HOME/.cargo}/bin"
version=0.22.0
# The crates' sha256, as the registry's index lists them for 0.22.0.
declare -A sha=(
  [evcxr_jupyter]=3ce0d7b3058f68a9673df4f1266b641942fea0ec131881d095306e509a382764
  [evcxr_repl]=17998f5f330bc8880c03d2543e40aa13a99ff15fa9a34a1d0cff0216566f51ee
)
declare -A binary=([evcxr_jupyter]=evcxr_jupyter [evcxr_repl]=evcxr)
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$bin/$1" ]; }
missing=()
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(evcxr_jupyter evcxr_repl)
for c in "${wanted[@]}"; do
  [ -n "${binary[$c]:-}" ] || { echo "error: install-evcxr.sh builds evcxr_jupyter and evcxr_repl, not $c" >&2; exit 2; }
  have "${binary[$c]}" || missing+=("$c")
done
[ ${#missing[@]} -gt 0 ] || exit 0
echo "building ${missing[*]} $version (about 7 minutes on 2 cores, once)…" >&2
ws="$cache/evcxr-tools"
rm -rf "$ws"
mkdir -p "$ws"
# Both members always, so that the workspace matches its lockfile; only the missing are built.
for c in evcxr_jupyter evcxr_repl; do
  file="$ws/$c-$version.crate"
  # cargo's own download cache first (offline machines, mirrors), then the registry.
  cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$c-$version.crate" 2>/dev/null | head -1 || true)"
  if [ -n "$cached" ]; then
    cp "$cached" "$file"
  else
    curl --fail --silent --show-error --location --retry 3 \
      "https://static.crates.io/crates/$c/$version/download" -o "$file"
  fi
  sum="$( (sha256sum "$file" 2>/dev/null || shasum -a 256 "$file") | cut -d' ' -f1)"
  [ "$sum" = "${sha[$c]}" ] ||
    { echo "error: $file does not have the sha256 of $c $version; delete it and retry" >&2; exit 1; }
  tar -xzf "$file" -C "$ws"
  mv "$ws/$c-$version" "$ws/$c"
  rm "$ws/$c/Cargo.lock"
done
printf '[workspace]\nmembers = ["evcxr_jupyter", "evcxr_repl"]\nresolver = "2"\n' >"$ws/Cargo.toml"
cp "$project/kernelspec/evcxr-tools.lock" "$ws/Cargo.lock"
# An inherited CARGO_TARGET_DIR (CI sets the project's) would mix these crates into it.
packages=()
for c in "${missing[@]}"; do packages+=(-p "$c"); done
(cd "$ws" && CARGO_TARGET_DIR="$ws/target" cargo build --release --locked "${packages[@]}")
mkdir -p "$bin"
for c in "${missing[@]}"; do install -m 755 "$ws/target/release/${binary[$c]}" "$bin/"; done
# Like `cargo install`, keep the binaries and drop the build (about 1 GB).
rm -rf "$ws"
echo "installed ${missing[*]/%/ $version} in $bin ($SECONDS s)" >&2
