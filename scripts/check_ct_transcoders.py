#!/usr/bin/env python3
"""Checks that circuit-tracer 0.5.0 loads a transcoder set `mechinterp transcoders train` wrote
(issue 25, item 4), and that its encode and decode equal ours. Not part of the test suite.

    ~/.cache/ctvenv/bin/python scripts/check_ct_transcoders.py OUT [--mechinterp BIN]

circuit-tracer reads OUT/config.yaml (its keys, as `load_transcoders` takes them, with the
layer files listed) and every OUT/layer_L.safetensors through `load_relu_transcoder`; ours
reads OUT/saelens/layer_L (SAELens) and OUT/layer_L.safetensors through `mechinterp sae
encode`. Both encode the same probes (along encoder rows, around the thresholds); the largest
difference relative to the largest entry must stay under 1e-5.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import yaml
from safetensors.torch import load_file, save_file

from circuit_tracer.utils.hf_utils import load_transcoders

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="the folder transcoders train wrote")
    ap.add_argument(
        "--mechinterp",
        default=os.path.join(
            os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")),
            "release",
            "mechinterp",
        ),
    )
    a = ap.parse_args()
    with open(os.path.join(a.out, "config.yaml")) as f:
        config = yaml.safe_load(f)
    n = 0
    while os.path.isfile(os.path.join(a.out, f"layer_{n}.safetensors")):
        n += 1
    config["transcoders"] = [os.path.join(a.out, f"layer_{i}.safetensors") for i in range(n)]
    ts = load_transcoders(
        config, device=torch.device("cpu"), lazy_encoder=False, lazy_decoder=False
    )
    print(
        f"circuit-tracer loaded {n} layers: {config['model_kind']}, "
        f"{ts.feature_input_hook} -> {ts.feature_output_hook}, scan {ts.scan}"
    )
    torch.manual_seed(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for layer in range(n):
            tc = ts.transcoders[layer]
            d_model = tc.b_dec.shape[0]
            # Probes that sit on both sides of the threshold: row i points along latent j_i's
            # encoder row, with pre-activation θ_j ± up to half of it, plus a little noise.
            w = load_file(config["transcoders"][layer])
            we, be = w["W_enc"], w["b_enc"]
            th = w.get("activation_function.threshold", torch.zeros_like(be))
            j = torch.randint(0, we.shape[0], (64,))
            t = th[j] * (1 + torch.linspace(-0.5, 0.5, 64)) + 0.1 * th.mean() - be[j]
            x = t[:, None] * we[j] / (we[j] ** 2).sum(1, keepdim=True)
            x = x + 1e-3 * x.norm(dim=1, keepdim=True) * torch.randn(64, d_model) / d_model**0.5
            with torch.no_grad():
                acts = tc.encode(x)
                out = tc.decode(acts, x)
            acts_path = os.path.join(tmp, "x.safetensors")
            save_file({"acts": x.contiguous()}, acts_path)
            for which in [os.path.join(a.out, "saelens", f"layer_{layer}"), config["transcoders"][layer]]:
                res = os.path.join(tmp, "y.safetensors")
                subprocess.run(
                    [a.mechinterp, "sae", "encode", "--sae", which, "--acts", acts_path, "--out", res],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                ours = load_file(res)
                for name, theirs in [("feature_acts", acts), ("output", out)]:
                    d = (ours[name] - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)
                    worst = max(worst, float(d))
                    if d > 1e-5:
                        sys.exit(f"layer {layer} {which}: {name} differs by {float(d):.2e}")
            l0 = (acts > 0).float().sum(1).mean()
            print(f"layer {layer:>2}: encode and decode agree (mean L0 on the probe {l0:.1f})")
    print(f"circuit-tracer and mechinterp agree on all {n} layers: worst relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
