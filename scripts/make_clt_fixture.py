#!/usr/bin/env python3
"""Reference attribution graphs with cross-layer transcoders from circuit-tracer 0.5.0 itself
(issue 25, item 1): its nnsight backend (CPU, float32) on the tiny random Gemma 3 of
tests/fixtures/models/gemma3, with two seeded random CLTs, written to tests/fixtures/graph/clt/:

  ct/       circuit-tracer's CLT layout (config.yaml, W_enc_i / W_dec_i.safetensors; ReLU,
            no skip), written by its own CrossLayerTranscoder.to_safetensors
  gs2/      Gemma Scope 2's layout (layer_i.safetensors: w_enc [d, f], w_dec [f, n, d], b_enc,
            b_dec, threshold, affine_skip_connection; JumpReLU with a skip path)
  ct.safetensors, gs2.safetensors   circuit-tracer's unpruned Graph fields for each (its
            `attribute` with default options), and <name>.json with margins and versions

Not part of the test suite (tests/it/graph_clt.rs reads what it writes). Needs the venv of
tests/fixtures/graph/README.md:  ~/.cache/ctvenv/bin/python scripts/make_clt_fixture.py
"""

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY = os.path.join(REPO, "tests", "fixtures", "models", "gemma3")
OUT = os.path.join(REPO, "tests", "fixtures", "graph", "clt")
sys.path.insert(0, HERE)
import make_graph_fixture as mgf  # noqa: E402

# The tiny model's prompt, as tests/it/graph_clt.rs's (BOS first).
TOKENS = [2, 17, 42, 99, 250, 7, 300]
D_TC = 16
MARGIN = 1e-3


def hf_folder():
    """The tiny Gemma 3 as an HF folder transformers 4.57 reads (its config.v4.json)."""
    d = tempfile.mkdtemp(prefix="tiny-gemma3-")
    shutil.copy(os.path.join(TINY, "config.v4.json"), os.path.join(d, "config.json"))
    for f in ["model.safetensors", "tokenizer.json"]:
        shutil.copy(os.path.join(TINY, f), os.path.join(d, f))
    # Its tokenizer_config.json is transformers 5's (a list of extra special tokens, which 4.57
    # cannot read); the ids are given, the tokenizer only decodes.
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
                   "pad_token": "<pad>", "unk_token": "<unk>"}, f)
    return d


def random_clt(x, n, d, f, seed, jump, skip):
    """A CLT whose biases (ReLU) or thresholds (JumpReLU) let ~15% of the prompt's
    (position > 0, feature) pairs fire, each kept MARGIN away from its edge."""
    import torch
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    g = torch.Generator().manual_seed(seed)
    clt = CrossLayerTranscoder(
        n, f, d, activation_function="jump_relu" if jump else "relu", skip_connection=skip,
        lazy_decoder=False, lazy_encoder=False, feature_input_hook="mlp.hook_in",
        feature_output_hook="hook_mlp_out", device=torch.device("cpu"), dtype=torch.float32,
    )
    s = d ** -0.5
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(n, f, d, generator=g) * s)
        for i in range(n):
            clt.W_dec[i].copy_(torch.randn(f, n - i, d, generator=g) * s)
        clt.b_dec.copy_(torch.randn(n, d, generator=g) * 0.1)
        if skip:
            clt.W_skip.copy_(torch.randn(n, d, d, generator=g) * 0.3 * s)
        for i in range(n):
            pre = x[i][1:] @ clt.W_enc[i].T  # [s-1, f]
            edge = torch.quantile(pre, 0.85, dim=0)
            if jump:
                b = torch.randn(f, generator=g) * 0.01
                th = edge + b
                dist = lambda t, pre=pre, b=b: (pre + b - t).abs().min(0).values  # noqa: E731
                for _ in range(100):
                    bad = dist(th) < MARGIN
                    if not bad.any():
                        break
                    th[bad] += 2 * MARGIN
                clt.b_enc[i].copy_(b)
                clt.activation_function.threshold[i, 0].copy_(th)
            else:
                b = -edge
                dist = lambda b, pre=pre: (pre + b).abs().min(0).values  # noqa: E731
                for _ in range(100):
                    bad = dist(b) < MARGIN
                    if not bad.any():
                        break
                    b[bad] -= 2 * MARGIN
                clt.b_enc[i].copy_(b)
    return clt


def save_gs2(clt, out_dir):
    """Gemma Scope 2's per-layer files for `clt` (decoder entries before the layer zero)."""
    import torch
    from safetensors.torch import save_file

    n, f, d = clt.n_layers, clt.d_transcoder, clt.d_model
    os.makedirs(out_dir, exist_ok=True)
    for i in range(n):
        w_dec = torch.zeros(f, n, d)
        w_dec[:, i:] = clt.W_dec[i].detach()
        save_file(
            {
                "w_enc": clt.W_enc[i].detach().T.contiguous(),
                "w_dec": w_dec.contiguous(),
                "b_enc": clt.b_enc[i].detach().contiguous(),
                "b_dec": clt.b_dec[i].detach().contiguous(),
                "threshold": clt.activation_function.threshold[i, 0].detach().contiguous(),
                "affine_skip_connection": clt.W_skip[i].detach().contiguous(),
            },
            os.path.join(out_dir, f"layer_{i}.safetensors"),
        )


def graph(hf_dir, clt, name):
    import torch
    from circuit_tracer import attribute
    from circuit_tracer.replacement_model import ReplacementModel
    from safetensors.torch import save_file

    model = ReplacementModel.from_pretrained_and_transcoders(
        hf_dir, clt, backend="nnsight", device=torch.device("cpu"), dtype=torch.float32
    )
    ids = torch.tensor(TOKENS)
    g = attribute(ids, model)
    adj = g.adjacency_matrix.float().contiguous()
    save_file(
        {
            "adjacency_matrix": adj,
            "active_features": g.active_features.long().contiguous(),
            "selected_features": g.selected_features.long().contiguous(),
            "activation_values": g.activation_values.float().contiguous(),
            "logit_tokens": g.logit_token_ids.long().contiguous(),
            "logit_probabilities": g.logit_probabilities.float().contiguous(),
            "input_tokens": g.input_tokens.long().contiguous(),
        },
        os.path.join(OUT, f"{name}.safetensors"),
    )
    _, _, logits = mgf.mlp_io(model._model, ids)
    meta = {
        "input_tokens": TOKENS,
        "n_nodes": adj.shape[0],
        "n_features": int(len(g.selected_features)),
        "logit_tokens": g.logit_token_ids.tolist(),
        "max_abs_adjacency": float(adj.abs().max()),
        "logit_probability_gap": mgf.logit_gap(model._model, ids),
        "preactivation_margin_at_least": MARGIN,
        "versions": mgf.versions(),
    }
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    mgf.log(f"{name}: {adj.shape[0]} nodes, {meta['n_features']} features, gap {meta['logit_probability_gap']:.2e}")


def main():
    import torch

    torch.manual_seed(0)
    hf_dir = hf_folder()
    try:
        _, hf = mgf.load_hf(hf_dir)
        x, _, _ = mgf.mlp_io(hf, torch.tensor(TOKENS))
        n, d = x.shape[0], x.shape[2]
        os.makedirs(OUT, exist_ok=True)
        ct = random_clt(x, n, d, D_TC, 25, jump=False, skip=False)
        ct.to_safetensors(os.path.join(OUT, "ct"))
        with open(os.path.join(OUT, "ct", "config.yaml"), "w") as f:
            f.write("model_kind: cross_layer_transcoder\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n")
        graph(hf_dir, ct, "ct")
        gs2 = random_clt(x, n, d, D_TC, 26, jump=True, skip=True)
        save_gs2(gs2, os.path.join(OUT, "gs2"))
        graph(hf_dir, gs2, "gs2")
    finally:
        shutil.rmtree(hf_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
