#!/usr/bin/env python3
"""Time circuit-tracer 0.5.0's graph (`attribute`, then `prune_graph`) on the default model
(issue 25, item 6).

The same-run baseline of `mechinterp-bench --set graph --baseline-python PYTHON` (which runs
this script, embedded, with the same token ids, transcoders and thread count): circuit-tracer's
nnsight backend, CPU, float32, on Gemma 3 270M (the local HF folder
scripts/make_graph_fixture.py makes from mechinterp's GGUF) with the fixture transcoders
(tests/fixtures/graph/transcoders), default attribute options (all active features, logit
targets to cumulative probability 0.95, at most 10) except --batch-size (circuit-tracer's
default is 512).

Prompts: --tokens IDS (comma-separated ids, BOS first; repeatable) or --prompt TEXT
(repeatable; circuit-tracer prepends <bos>); by default the 20-token bench prompt. One warm-up
call on the first prompt (unless --no-warm-up), then each prompt once.

Prints one JSON object on stdout (progress on stderr):
  runs              per prompt: tokens, n_tokens, attribute_seconds, prune_seconds,
                    graph_seconds (their sum), rss_before_bytes, attribute_peak_rss_bytes
                    (VmHWM reset to the current RSS before the prompt: the most the process
                    held at once while building that graph, model included; Linux),
                    n_nodes, n_features, n_logits
  seconds, attribute_peak_rss_bytes, n_nodes, ...   the first prompt's, as before
  peak_rss_bytes    the process's peak resident memory over everything (model load included)
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
    ap.add_argument("--prompt", action="append", default=[])
    ap.add_argument("--tokens", action="append", default=[], help="comma-separated token ids, BOS first")
    ap.add_argument("--hf-dir", default=mgf.HF_DIR)
    ap.add_argument("--transcoders", default=os.path.join(mgf.FIXTURES, "transcoders"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--no-warm-up", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()

    import torch
    from circuit_tracer import attribute
    from circuit_tracer.graph import prune_graph

    torch.set_num_threads(a.threads)
    if not os.path.exists(os.path.join(a.hf_dir, "config.json")):
        sys.exit(f"error: no model at {a.hf_dir}; run scripts/make_graph_fixture.py --steps model first")
    t0 = time.perf_counter()
    model = mgf.load_replacement_model(a.hf_dir, a.transcoders)
    load_s = time.perf_counter() - t0
    prompts = [[int(t) for t in ids.split(",") if t.strip()] for ids in a.tokens] + list(a.prompt)
    if not prompts:
        prompts = [DEFAULT_PROMPT]
    mgf.log(f"bench: {len(prompts)} prompt(s), model + transcoders loaded in {load_s:.1f} s")

    def run(p):
        return attribute(p, model, batch_size=a.batch_size)

    warm = None
    if not a.no_warm_up:
        t0 = time.perf_counter()
        run(prompts[0])
        warm = time.perf_counter() - t0
        mgf.log(f"bench: warm-up {warm:.1f} s")
    runs = []
    for p in prompts:
        ids = model.ensure_tokenized(p)
        reset_ok = reset_peak_rss()
        before = status_bytes("VmRSS")
        t0 = time.perf_counter()
        graph = run(p)
        t1 = time.perf_counter()
        prune_graph(graph, 0.8, 0.98)
        t2 = time.perf_counter()
        r = {
            "tokens": [int(t) for t in ids.tolist()],
            "n_tokens": int(len(ids)),
            "attribute_seconds": t1 - t0,
            "prune_seconds": t2 - t1,
            "graph_seconds": t2 - t0,
            "rss_before_bytes": before,
            "attribute_peak_rss_bytes": status_bytes("VmHWM") if reset_ok else None,
            "n_nodes": int(graph.adjacency_matrix.shape[0]),
            "n_features": int(len(graph.selected_features)),
            "n_logits": int(len(graph.logit_targets)),
        }
        mgf.log(f"bench: {r['n_tokens']} tokens: attribute {r['attribute_seconds']:.1f} s, prune {r['prune_seconds']:.2f} s")
        runs.append(r)
        del graph
    first = runs[0]
    out = {
        "tool": "circuit-tracer",
        "runs": runs,
        "seconds": first["attribute_seconds"],
        "warm_up_seconds": warm,
        "load_seconds": load_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "attribute_peak_rss_bytes": first["attribute_peak_rss_bytes"],
        "n_nodes": first["n_nodes"],
        "n_features": first["n_features"],
        "n_tokens": first["n_tokens"],
        "n_logits": first["n_logits"],
        "threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "prompt": prompts[0] if isinstance(prompts[0], str) else None,
        "versions": mgf.versions(),
    }
    text = json.dumps(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
