#!/usr/bin/env bash
# Times mechinterp at the original study's scale on the random-weight files of
# scripts/make_scale_models.py (Qwen2.5-3B and Qwen2-7B shapes, Q4_0 and Q8_0): each way of
# holding the weights in its own process (load time, peak RSS, a 40-token-class forward and a
# translation-heads pass scaled to 100 pairs from a few). f32 is left out for the 7B shape
# (30 GB of weights on a 24 GB machine). Never in CI; about 40 minutes on 2 cores.
#   scripts/scale_bench.sh [DIR]      (default ~/.cache/mechinterp/scale)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-$HOME/.cache/mechinterp/scale}"
bin="${CARGO_TARGET_DIR:-target}/release/mechinterp-bench"
cargo build --release --quiet --bin mechinterp-bench
for f in "$dir"/qwen2.5-3b-shape-q4_0.gguf "$dir"/qwen2.5-3b-shape-q8_0.gguf \
         "$dir"/qwen2-7b-shape-q4_0.gguf "$dir"/qwen2-7b-shape-q8_0.gguf; do
  case "$f" in *7b*) modes=stream,quantized ;; *) modes=f32,stream,quantized ;; esac
  echo "=== $(basename "$f") ($(du -h "$f" | cut -f1))"
  "$bin" --model "$f" --set scale --compare-weights "$modes" --pairs "${PAIRS:-4}" \
    --repeats 1 --json "$dir/$(basename "$f" .gguf).bench.json"
done
