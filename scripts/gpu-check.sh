#!/usr/bin/env bash
# The GPU check of issue 16, for a session that the `device` tool lends a machine (one H200;
# CUDA's nvcc and drivers, no Rust toolchain, no network, 64 MiB carried with the tree).
#
# 1. Here (no GPU needed): build the CUDA binaries. candle's kernels and cudarc's build need
#    CUDA's nvcc on PATH (or CUDA_ROOT), for compute capability 9.0 (Hopper); cudarc loads the
#    driver at run time. PyPI's nvidia-cuda-nvcc wheels do not do: they ship ptxas and libnvvm
#    but no nvcc driver (tried 2026-12-02). Debian's nvidia-cuda-toolkit (non-free) or NVIDIA's
#    toolkit installer do.
#        scripts/gpu-check.sh build            -> .gpu/ (git-ignored): mechinterp, tests, model
# 2. There: run it with the device tool, carrying .gpu, for example
#        run(command="scripts/gpu-check.sh run", carry=[".gpu"], timeout_s=420)
#    It runs the tiny-model reference tests and the default-model tests on the GPU and a bench,
#    and writes everything to $OUT.
# Untested end to end so far: no session that wrote it was lent a device (see PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
  if ! command -v nvcc >/dev/null 2>&1; then
    echo "no nvcc on PATH: install CUDA's toolkit (Debian: nvidia-cuda-toolkit from non-free; or NVIDIA's installer) and run again" >&2
    exit 1
  fi
  export CUDA_COMPUTE_CAP=90
  export CARGO_TARGET_DIR="$HOME/.cache/mechinterp-target-cuda"
  cargo build --release --features cuda --bin mechinterp --bin mechinterp-bench
  cargo test --release --features cuda --no-run --test it \
    --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' > /tmp/gpu-tests.txt
  rm -rf .gpu && mkdir -p .gpu/bin
  cp "$CARGO_TARGET_DIR/release/mechinterp" "$CARGO_TARGET_DIR/release/mechinterp-bench" .gpu/bin/
  while read -r name exe; do cp "$exe" ".gpu/bin/test-$name"; done < /tmp/gpu-tests.txt
  cp "$HOME/.cache/mechinterp/gemma-3-270m-q4_k_m.gguf" .gpu/model.gguf
  grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
  du -sh .gpu
  ;;
run)
  out="${OUT:-/tmp/gpu-out}"; mkdir -p "$out"; mkdir -p ~/.cache/mechinterp
  cp .gpu/model.gguf ~/.cache/mechinterp/gemma-3-270m-q4_k_m.gguf
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
  export MECHINTERP_DEVICE=cuda
  for t in .gpu/bin/test-*; do
    echo "== $t" | tee -a "$out/tests.txt"
    # One test binary: the GPU-relevant modules only.
    timeout 360 "$t" --test-threads 1 checkpoints:: weights:: generate:: 2>&1 | tail -30 | tee -a "$out/tests.txt" || true
  done
  timeout 200 .gpu/bin/mechinterp-bench --set weights --repeats 3 --json "$out/bench.json" 2>&1 \
    | tee "$out/bench.txt" || true
  ;;
*)
  echo "usage: scripts/gpu-check.sh build|run" >&2; exit 2 ;;
esac
