#!/usr/bin/env python3
"""Same-run baselines for `mechinterp-bench --baseline-python PY`: HF transformers and
TransformerLens timed on the same model, prompts, thread count and machine as mechinterp.

Needs a Python with torch, transformers and gguf (transformers dequantizes the GGUF that
mechinterp fetched to f32, so both sides run the same weights); TransformerLens is optional
(3.x HookedTransformer or 4.x TransformerBridge). Writes one JSON object to --out; progress goes
to stderr. Not part of the test suite: torch is a 1 GB+ install.
"""

import argparse
import json
import os
import statistics
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(repeats, f, warm_up=True):
    if warm_up:
        f()
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        secs.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(secs),
        "min_s": min(secs),
        "max_s": max(secs),
        "repeats": repeats,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--clean", required=True)
    ap.add_argument("--corrupt", required=True)
    ap.add_argument("--answer", default=" Mary")
    ap.add_argument("--wrong", default=" John")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="where to write the JSON")
    ap.add_argument("--skip-tl", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true", help="skip the slow TL head sweep")
    a = ap.parse_args()

    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        sys.exit(
            f"error: {sys.executable} cannot import the baseline's libraries ({e}); give "
            "--baseline-python a Python with them: python3 -m venv VENV && "
            'VENV/bin/pip install torch transformers gguf "transformer_lens>=3,<4"'
        )

    torch.set_num_threads(a.threads)
    out = {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "threads": torch.get_num_threads(),
    }
    folder, name = os.path.split(os.path.abspath(a.gguf))
    log("baseline: loading the GGUF with transformers (dequantized to f32)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    hf.eval()
    # GGUF-built configs carry no `architectures`; TransformerLens dispatches on it.
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    clean = tok(a.clean, return_tensors="pt").input_ids
    corrupt = tok(a.corrupt, return_tensors="pt").input_ids
    ans = tok(a.answer, add_special_tokens=False).input_ids
    wrong = tok(a.wrong, add_special_tokens=False).input_ids
    out["tokens"] = clean.shape[1]
    out["clean_ids"] = clean[0].tolist()

    with torch.inference_mode():
        logits = hf(clean).logits[0, -1]
        top = torch.topk(logits, 10)
        out["hf_last_top"] = [[int(i), float(v)] for v, i in zip(top.values, top.indices)]
        log(f"baseline: HF forward, {clean.shape[1]} tokens")
        out["hf_forward"] = timed(a.repeats, lambda: hf(clean).logits)

    if not a.skip_tl:
        try:
            tl_baselines(a, out, hf, tok, clean, corrupt, ans[0], wrong[0])
        except ImportError as e:
            out["tl_error"] = f"TransformerLens not importable: {e}"
        except Exception as e:  # report, don't lose the HF numbers
            out["tl_error"] = f"{type(e).__name__}: {e}"
    with open(a.out, "w") as f:
        json.dump(out, f)


def tl_baselines(a, out, hf, tok, clean, corrupt, ans, wrong):
    import importlib.metadata

    import torch
    import transformer_lens

    version = importlib.metadata.version("transformer_lens")
    out["versions"]["transformer_lens"] = version
    log(f"baseline: TransformerLens {version}")
    # TransformerLens refuses a model whose config says GGUF: give it the same f32 weights in
    # a plain model.
    if getattr(hf.config, "quantization_config", None) is not None:
        from transformers import AutoModelForCausalLM

        cfg = hf.config
        del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(hf.state_dict())
        plain.eval()
        hf = plain
    if int(version.split(".")[0]) < 4:
        from transformer_lens import HookedTransformer

        model = HookedTransformer.from_pretrained_no_processing(
            "google/gemma-3-270m", hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32
        )
    else:
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers("google/gemma-3-270m", hf_model=hf, tokenizer=tok)
        model.enable_compatibility_mode(no_processing=True)
    model.eval()

    def metric(logits):
        last = logits[0, -1]
        return last[ans] - last[wrong]

    with torch.inference_mode():
        out["tl_clean_metric"] = float(metric(model(clean)))
        out["tl_forward"] = timed(a.repeats, lambda: model(clean))
        out["tl_run_with_cache"] = timed(a.repeats, lambda: model.run_with_cache(clean))

    # The 72-head sweep as TransformerLens users run it: patch each head's z at every position
    # from the clean cache into the corrupted run, one forward each.
    _, clean_cache = model.run_with_cache(clean)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads

    def sweep():
        from transformer_lens import patching

        with torch.inference_mode():
            return patching.get_act_patch_attn_head_out_all_pos(
                model, corrupt, clean_cache, metric
            )

    if not a.skip_sweep:
        log(f"baseline: TransformerLens {n_layers * n_heads}-head sweep")
        # 72 forwards already: one repeat, no warm-up (the forwards above warmed up).
        out["tl_head_patching_sweep"] = timed(1, sweep, warm_up=False)
        out["tl_head_patching_sweep"]["heads"] = n_layers * n_heads

    # Attribution patching as in Neel Nanda's notebook: cache activations forward, gradients
    # backward, at hook_z, resid_pre, attn_out and mlp_out.
    names = lambda n: n.endswith(("hook_z", "hook_resid_pre", "hook_attn_out", "hook_mlp_out"))

    def attribution():
        acts, grads = {}, {}

        def fwd(x, hook):
            acts[hook.name] = x.detach()

        def bwd(x, hook):
            grads[hook.name] = x.detach()

        model.reset_hooks()
        model.add_hook(names, fwd, "fwd")
        model.add_hook(names, bwd, "bwd")
        try:
            metric(model(corrupt)).backward()
        finally:
            model.reset_hooks()
        model.zero_grad(set_to_none=True)
        return {k: ((clean_cache[k] - acts[k]) * grads[k]).sum() for k in grads}

    log("baseline: TransformerLens attribution patching")
    out["tl_attribution_patching"] = timed(a.repeats, attribution)


if __name__ == "__main__":
    main()
