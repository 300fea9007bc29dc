#!/usr/bin/env python3
"""Time circuit-tracer 0.5.0's `attribute` on the default model (issue 25, item 6).

The same-run baseline for `mechinterp bench`: circuit-tracer's nnsight backend, CPU, float32,
on Gemma 3 270M (the local HF folder scripts/make_graph_fixture.py makes from mechinterp's GGUF)
with the fixture transcoders (tests/fixtures/graph/transcoders), default attribute options (all
active features, logit targets to cumulative probability 0.95, at most 10, batch_size 512).
Prints one JSON object on stdout (progress on stderr):
  seconds           wall time of attribute() (after one warm-up call unless --no-warm-up)
  peak_rss_bytes    the process's peak resident memory (model load included)
  attribute_peak_rss_bytes  peak resident memory during the timed call alone (Linux)
  n_nodes           nodes of the graph (features + errors + tokens + logits)
Needs the venv described in tests/fixtures/graph/README.md.
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_graph_fixture as mgf  # noqa: E402

# 20 tokens with the <bos> circuit-tracer prepends.
DEFAULT_PROMPT = mgf.BENCH_PROMPT


def status_bytes(field):
    """VmHWM / VmRSS from /proc/self/status, in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss():
    """Linux resets VmHWM to the current RSS on writing 5 to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--hf-dir", default=mgf.HF_DIR)
    ap.add_argument("--transcoders", default=os.path.join(mgf.FIXTURES, "transcoders"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--no-warm-up", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()

    import torch
    from circuit_tracer import attribute

    torch.set_num_threads(a.threads)
    if not os.path.exists(os.path.join(a.hf_dir, "config.json")):
        sys.exit(f"error: no model at {a.hf_dir}; run scripts/make_graph_fixture.py --steps model first")
    t0 = time.perf_counter()
    model = mgf.load_replacement_model(a.hf_dir, a.transcoders)
    load_s = time.perf_counter() - t0
    ids = model.ensure_tokenized(a.prompt)
    mgf.log(f"bench: {len(ids)} tokens, model + transcoders loaded in {load_s:.1f} s")

    def run():
        return attribute(a.prompt, model, batch_size=a.batch_size)

    warm = None
    if not a.no_warm_up:
        t0 = time.perf_counter()
        run()
        warm = time.perf_counter() - t0
        mgf.log(f"bench: warm-up {warm:.1f} s")
    reset_ok = reset_peak_rss()
    t0 = time.perf_counter()
    graph = run()
    secs = time.perf_counter() - t0
    out = {
        "tool": "circuit-tracer",
        "seconds": secs,
        "warm_up_seconds": warm,
        "load_seconds": load_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "attribute_peak_rss_bytes": status_bytes("VmHWM") if reset_ok else None,
        "n_nodes": int(graph.adjacency_matrix.shape[0]),
        "n_features": int(len(graph.selected_features)),
        "n_tokens": int(len(ids)),
        "n_logits": int(len(graph.logit_targets)),
        "threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "prompt": a.prompt,
        "versions": mgf.versions(),
    }
    text = json.dumps(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
