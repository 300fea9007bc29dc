#!/usr/bin/env python3
"""Writes tests/fixtures/sae/: small SAEs and transcoders in every format `Sae::load` reads,
each with inputs and the reference library's own outputs, for tests/it/sae_formats.rs.

- SAELens 6.x folders: written by SAELens's own classes (`StandardSAE`, `JumpReLUSAE`, ...) and
  `save_model`; outputs from `SAE.load_from_disk` of the written folder.
- Pre-6 flat configs: cfg.json written by hand in the old key set; outputs from
  `SAE.load_from_disk`, which converts them (`handle_pre_6_0_config`).
- Gemma Scope 2: `config.json` + `params.safetensors` as the hub has them; outputs from SAELens's
  own Gemma Scope 2 loader (`gemma_3_sae_huggingface_loader`, with the hub download pointed at the
  fixture folder).
- circuit-tracer: per-layer transcoder files and a cross-layer transcoder, in circuit-tracer's
  layout; outputs from circuit-tracer itself (`load_transcoder_set`, `load_clt`).

Run with the SAELens venv (SAELens 6.54.12, torch) and circuit-tracer on the path, e.g.
    pip download --no-deps circuit-tracer==0.5.0 -d /tmp/ct && unzip -o /tmp/ct/*.whl -d /tmp/ctpkg
    PYTHONPATH=/tmp/ctpkg ~/.cache/tlvenv/bin/python scripts/make_sae_fixtures.py
Every tensor is float32 with a fixed seed, so reruns write the same files.
"""

import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")

import sae_lens  # noqa: E402
from sae_lens import SAE  # noqa: E402
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig  # noqa: E402
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig  # noqa: E402
from sae_lens.saes.transcoder import (  # noqa: E402
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sae"
D_IN, D_SAE, D_OUT, K = 16, 64, 12, 6
SHAPE = (2, 5)  # batch, positions


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale=1.0, offset=0.0):
    return torch.randn(*shape, generator=g) * scale + offset


def inputs(seed, d=D_IN):
    g = gen(1000 + seed)
    x = randn(g, *SHAPE, d, scale=1.5, offset=0.2)
    x[0, 1] *= 8.0  # one large row, as a massive activation would be
    return x


def fill(sae, seed):
    """Random weights with a fixed seed; thresholds straddle 0 (some negative)."""
    g = gen(seed)
    with torch.no_grad():
        for name, p in sorted(sae.named_parameters()):
            if name == "threshold":
                p.copy_(randn(g, *p.shape, scale=0.4, offset=0.05))
            elif name == "r_mag":
                p.copy_(randn(g, *p.shape, scale=0.3))
            elif name.startswith("W_"):
                p.copy_(randn(g, *p.shape, scale=0.4))
            else:
                p.copy_(randn(g, *p.shape, scale=0.3))
    return sae


def record(sae, x):
    """SAELens's outputs for x: encode, the pre-activations (its hook), decode, forward."""
    pre = {}
    handle = sae.hook_sae_acts_pre.add_hook(lambda t, hook: pre.setdefault("v", t.clone()))
    with torch.no_grad():
        feats = sae.encode(x)
        decoded = sae.decode(feats)
    sae.reset_hooks()
    del handle
    with torch.no_grad():
        out = sae(x)
    return {
        "x": x,
        "feature_acts": feats,
        "acts_pre": pre["v"],
        "decoded": decoded,
        "output": out,
    }


def save_io(folder, tensors):
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, folder / "io.safetensors")


ARCHS = {
    "standard": (StandardSAE, StandardSAEConfig, {}),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
    "topk": (TopKSAE, TopKSAEConfig, {"k": K}),
    "gated": (GatedSAE, GatedSAEConfig, {}),
    "transcoder": (Transcoder, TranscoderConfig, {"d_out": D_OUT}),
    "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig, {"d_out": D_OUT}),
    "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig, {"d_out": D_OUT}),
    "jumprelu_skip_transcoder": (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        {"d_out": D_OUT},
    ),
}

# (case name, architecture, normalisation, apply_b_dec_to_input, extra config)
V6_CASES = [
    ("standard_none", "standard", "none", True, {}),
    ("standard_none_nobdec", "standard", "none", False, {}),
    ("standard_expected_average", "standard", "expected_average_only_in", True, {}),
    ("standard_constant_norm", "standard", "constant_norm_rescale", True, {}),
    ("standard_layer_norm", "standard", "layer_norm", True, {}),
    ("standard_layer_norm_nobdec", "standard", "layer_norm", False, {}),
    ("jumprelu_none", "jumprelu", "none", True, {}),
    ("jumprelu_none_nobdec", "jumprelu", "none", False, {}),
    ("jumprelu_layer_norm", "jumprelu", "layer_norm", False, {}),
    ("jumprelu_constant_norm", "jumprelu", "constant_norm_rescale", True, {}),
    ("topk_none", "topk", "none", True, {}),
    ("topk_rescale", "topk", "none", True, {"rescale_acts_by_decoder_norm": True}),
    ("topk_rescale_nobdec", "topk", "none", False, {"rescale_acts_by_decoder_norm": True}),
    ("topk_layer_norm_rescale", "topk", "layer_norm", True, {"rescale_acts_by_decoder_norm": True}),
    ("topk_constant_norm", "topk", "constant_norm_rescale", False, {}),
    ("gated_none", "gated", "none", True, {}),
    ("gated_none_nobdec", "gated", "none", False, {}),
    ("gated_layer_norm", "gated", "layer_norm", True, {}),
    ("transcoder_none", "transcoder", "none", False, {}),
    ("transcoder_layer_norm", "transcoder", "layer_norm", False, {}),
    ("transcoder_constant_norm", "transcoder", "constant_norm_rescale", False, {}),
    ("skip_transcoder_none", "skip_transcoder", "none", False, {}),
    ("jumprelu_transcoder_none", "jumprelu_transcoder", "none", False, {}),
    ("jumprelu_skip_transcoder_none", "jumprelu_skip_transcoder", "none", False, {}),
    ("jumprelu_skip_transcoder_layer_norm", "jumprelu_skip_transcoder", "layer_norm", False, {}),
]


def v6_case(i, name, arch, norm, bdec, extra):
    cls, cfg_cls, kw = ARCHS[arch]
    transcoder = "d_out" in kw
    metadata = {
        "model_name": "google/gemma-3-270m",
        "hook_name": "blocks.2.mlp.hook_in" if transcoder else "blocks.3.hook_resid_post",
        "hook_head_index": None,
        "context_size": 128,
        "prepend_bos": True,
    }
    if transcoder:
        metadata["hook_name_out"] = "blocks.2.hook_mlp_out"
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        apply_b_dec_to_input=bdec,
        normalize_activations=norm,
        **kw,
        **extra,
    )
    for k, v in metadata.items():
        cfg.metadata[k] = v
    sae = fill(cls(cfg), seed=i + 1)
    folder = ROOT / name
    sae.save_model(folder)
    if name == "standard_none":
        g = gen(77)
        sparsity = torch.log10(torch.rand(D_SAE, generator=g) * 0.1 + 1e-4)
        save_file({"sparsity": sparsity}, folder / "sparsity.safetensors")
    # The reference outputs come from the folder as SAELens reads it back.
    loaded = SAE.load_from_disk(folder)
    save_io(folder, record(loaded, inputs(i)))


def legacy_cases():
    """Pre-6 flat configs, as SAELens 3–5 wrote them."""
    cases = [
        (
            "legacy_topk",
            {
                "architecture": "standard",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": K},
                "apply_b_dec_to_input": True,
                "finetuning_scaling_factor": False,
                "context_size": 128,
                "model_name": "gpt2-small",
                "hook_point": "blocks.4.hook_resid_pre",
                "hook_point_layer": 4,
                "hook_point_head_index": None,
                "prepend_bos": True,
                "dataset_path": "Skylion007/openwebtext",
                "dataset_trust_remote_code": True,
                "normalize_activations": False,
                "dtype": "float32",
                "device": "cpu",
                "sae_lens_training_version": "3.5.0",
                "expansion_factor": 4,
                "lr": 0.0004,
                "l1_coefficient": 8e-05,
                "lp_norm": 1,
                "train_batch_size_tokens": 4096,
                "training_tokens": 300000000,
                "seed": 42,
                "use_ghost_grads": False,
                "log_to_wandb": True,
                "wandb_project": "gpt2",
            },
            False,
        ),
        (
            "legacy_standard_norm",
            {
                "architecture": "standard",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "activation_fn_str": "relu",
                "activation_fn_kwargs": {},
                "apply_b_dec_to_input": False,
                "finetuning_scaling_factor": False,
                "context_size": 1024,
                "model_name": "gemma-2b",
                "hook_name": "blocks.6.hook_resid_post",
                "hook_layer": 6,
                "hook_head_index": None,
                "prepend_bos": True,
                "dataset_path": "HuggingFaceFW/fineweb",
                "normalize_activations": True,
                "dtype": "float32",
                "device": "cpu",
                "sae_lens_training_version": "4.4.1",
                "neuronpedia_id": None,
                "model_from_pretrained_kwargs": {},
            },
            True,
        ),
        (
            "legacy_jumprelu_5x",
            {
                "architecture": "jumprelu",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "activation_fn_str": "relu",
                "apply_b_dec_to_input": False,
                "finetuning_scaling_factor": False,
                "context_size": 1024,
                "model_name": "gemma-2-2b",
                "hook_name": "blocks.5.hook_resid_post",
                "hook_layer": 5,
                "hook_head_index": None,
                "prepend_bos": True,
                "dataset_path": "monology/pile-uncopyrighted",
                "normalize_activations": None,
                "dtype": "float32",
                "device": "cpu",
                "sae_lens_version": "5.9.1",
                "sae_lens_training_version": None,
                "neuronpedia_id": None,
                "seqpos_slice": [None],
            },
            False,
        ),
    ]
    for j, (name, cfg, scaling) in enumerate(cases):
        arch = "jumprelu" if cfg["architecture"] == "jumprelu" else "standard"
        cls, cfg_cls, _ = ARCHS[arch]
        sae = fill(cls(cfg_cls(d_in=D_IN, d_sae=D_SAE)), seed=100 + j)
        folder = ROOT / name
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone().contiguous() for k, v in sae.state_dict().items()}
        if scaling:
            state["scaling_factor"] = torch.ones(D_SAE)
        save_file(state, folder / "sae_weights.safetensors")
        (folder / "cfg.json").write_text(json.dumps(cfg, indent=1))
        loaded = SAE.load_from_disk(folder)
        save_io(folder, record(loaded, inputs(100 + j)))


def gemma_scope_2_cases():
    """Gemma Scope 2 folders, read back through SAELens's own Gemma Scope 2 loader."""
    from safetensors import safe_open

    import sae_lens.loading.pretrained_sae_loaders as loaders

    base = ROOT / "gemma_scope_2"

    def fake_download(repo_id, filename, subfolder=None, force_download=False, revision=None):
        path = base / (f"{subfolder}/{filename}" if subfolder else filename)
        if not path.exists():
            raise loaders.EntryNotFoundError(str(path))
        return str(path)

    def fake_shapes(repo_id, filename):
        with safe_open(base / filename, framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    loaders.hf_hub_download = fake_download
    loaders.get_safetensors_tensor_shapes = fake_shapes

    cases = [
        ("resid_post/layer_1_width_64_l0_small", "model.layers.1.output", None, D_IN, False),
        ("attn_out/layer_2_width_64_l0_small", "model.layers.2.self_attn.o_proj.input", None, D_IN, False),
        (
            "transcoder/layer_3_width_64_l0_small_affine",
            "model.layers.3.pre_feedforward_layernorm.output",
            "model.layers.3.post_feedforward_layernorm.output",
            D_IN,
            True,
        ),
    ]
    for j, (folder_name, hook_in, hook_out, d_out, affine) in enumerate(cases):
        g = gen(300 + j)
        raw = {
            "w_enc": randn(g, D_IN, D_SAE, scale=0.4),
            "w_dec": randn(g, D_SAE, d_out, scale=0.4),
            "b_enc": randn(g, D_SAE, scale=0.3),
            "b_dec": randn(g, d_out, scale=0.3),
            "threshold": randn(g, D_SAE, scale=0.4, offset=0.05),
        }
        if affine:
            raw["affine_skip_connection"] = randn(g, D_IN, d_out, scale=0.2)
        folder = base / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        save_file(raw, folder / "params.safetensors")
        config = {
            "hf_hook_point_in": hook_in,
            "hf_hook_point_out": hook_out if hook_out else hook_in,
            "width": D_SAE,
            "model_name": "gemma-v3-270m-pt",
            "architecture": "jump_relu",
            "l0": 20,
            "affine_connection": affine,
            "type": "transcoder" if hook_out else "sae",
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        cfg_dict, state_dict, _ = loaders.gemma_3_sae_huggingface_loader(
            repo_id="google/gemma-scope-2-270m-pt", folder_name=folder_name, device="cpu"
        )
        cfg_dict = loaders.handle_config_defaulting(cfg_dict)
        sae = SAE.from_dict(cfg_dict)
        sae.load_state_dict(state_dict, assign=True)
        save_io(folder, record(sae, inputs(300 + j)))


def circuit_tracer_cases():
    """circuit-tracer's per-layer transcoders (a transcoder set) and a cross-layer transcoder."""
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    dev = torch.device("cpu")
    plt = ROOT / "circuit_tracer_plt"
    plt.mkdir(parents=True, exist_ok=True)
    (plt / "config.yaml").write_text(
        "model_kind: transcoder_set\n"
        'model_name: "google/gemma-3-270m"\n'
        'feature_input_hook: "mlp.hook_in"\n'
        'feature_output_hook: "hook_mlp_out"\n'
    )
    for layer in range(2):
        g = gen(400 + layer)
        w = {
            "W_enc": randn(g, D_SAE, D_IN, scale=0.4),  # [d_transcoder, d_model]: F.linear
            "W_dec": randn(g, D_SAE, D_IN, scale=0.4),
            "b_enc": randn(g, D_SAE, scale=0.3),
            "b_dec": randn(g, D_IN, scale=0.3),
        }
        if layer == 0:  # JumpReLU with a skip path; thresholds straddle 0
            w["activation_function.threshold"] = randn(g, D_SAE, scale=0.4, offset=0.05)
            w["W_skip"] = randn(g, D_IN, D_IN, scale=0.2)
        save_file(w, plt / f"layer_{layer}.safetensors")
    paths = {i: str(plt / f"layer_{i}.safetensors") for i in range(2)}
    tset = load_transcoder_set(
        paths, "fixture", "mlp.hook_in", "hook_mlp_out", device=dev,
        lazy_encoder=False, lazy_decoder=False,
    )
    for layer in range(2):
        tc = tset[layer]
        x = inputs(400 + layer)
        with torch.no_grad():
            pre = tc.encode(x, apply_activation_function=False)
            feats = tc.encode(x)
            out = tc.forward(x)
        save_io_named(plt, f"io_layer_{layer}", {"x": x, "acts_pre": pre, "feature_acts": feats, "output": out})

    clt = ROOT / "circuit_tracer_clt"
    clt.mkdir(parents=True, exist_ok=True)
    (clt / "config.yaml").write_text(
        "model_kind: cross_layer_transcoder\n"
        'model_name: "google/gemma-3-270m"\n'
        'feature_input_hook: "hook_resid_mid"\n'
        'feature_output_hook: "hook_mlp_out"\n'
    )
    n_layers, d_tc = 3, 32
    g = gen(500)
    for i in range(n_layers):
        save_file(
            {
                f"W_enc_{i}": randn(g, d_tc, D_IN, scale=0.4),
                f"b_enc_{i}": randn(g, d_tc, scale=0.3, offset=0.3),
                f"b_dec_{i}": randn(g, D_IN, scale=0.3),
                f"threshold_{i}": randn(g, d_tc, scale=0.4, offset=0.05),
            },
            clt / f"W_enc_{i}.safetensors",
        )
        save_file({f"W_dec_{i}": randn(g, d_tc, n_layers - i, D_IN, scale=0.4)}, clt / f"W_dec_{i}.safetensors")
    model = load_clt(str(clt), device=dev, dtype=torch.float32, lazy_decoder=False)
    x = randn(gen(501), n_layers, 6, D_IN, scale=1.5, offset=0.2)  # [layer, pos, d_model]
    with torch.no_grad():
        pre = torch.stack([model.encode_layer(x[i], i, apply_activation_function=False) for i in range(n_layers)])
        feats = model.encode(x)
        out = model.forward(x)
    save_io_named(clt, "io", {"x": x, "acts_pre": pre, "feature_acts": feats, "output": out})


def gemma_scope_2_clt_case():
    """A Gemma Scope 2 cross-layer transcoder (one file per layer: w_enc [d_in, d_sae],
    w_dec [d_sae, n_layers, d_out], affine_skip_connection [d_in, d_out]), read by
    circuit-tracer's `load_gemma_scope_2_clt`."""
    from circuit_tracer.transcoder.cross_layer_transcoder import load_gemma_scope_2_clt

    folder = ROOT / "gemma_scope_2_clt"
    folder.mkdir(parents=True, exist_ok=True)
    n_layers, d_tc = 3, 32
    g = gen(600)
    paths = {}
    for i in range(n_layers):
        w_dec = randn(g, d_tc, n_layers, D_IN, scale=0.4)
        w_dec[:, :i] = 0.0  # a layer writes only to itself and later layers
        p = folder / f"layer_{i}_width_32_l0_small_affine.safetensors"
        save_file(
            {
                "w_enc": randn(g, D_IN, d_tc, scale=0.4),
                "w_dec": w_dec,
                "b_enc": randn(g, d_tc, scale=0.3, offset=0.3),
                "b_dec": randn(g, D_IN, scale=0.3),
                "threshold": randn(g, d_tc, scale=0.4, offset=0.05),
                "affine_skip_connection": randn(g, D_IN, D_IN, scale=0.2),
            },
            p,
        )
        paths[i] = str(p)
    # circuit-tracer 0.5 loads layers range(max(paths)): one extra key makes it load them all.
    paths[n_layers] = paths[n_layers - 1]
    model = load_gemma_scope_2_clt(paths, device=torch.device("cpu"), dtype=torch.float32)
    assert model.n_layers == n_layers
    x = randn(gen(601), n_layers, 6, D_IN, scale=1.5, offset=0.2)
    with torch.no_grad():
        pre = torch.stack([model.encode_layer(x[i], i, apply_activation_function=False) for i in range(n_layers)])
        feats = model.encode(x)
        # forward() asserts without input_acts when there is a skip path; decode takes them.
        out = model.decode(feats.to_sparse(), input_acts=x)
    save_io_named(folder, "io", {"x": x, "acts_pre": pre, "feature_acts": feats, "output": out})


def save_io_named(folder, stem, tensors):
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, folder / f"{stem}.safetensors")


def main():
    print(f"SAELens {sae_lens.__version__}, torch {torch.__version__}")
    if ROOT.exists():
        shutil.rmtree(ROOT)
    ROOT.mkdir(parents=True)
    for i, case in enumerate(V6_CASES):
        v6_case(i, *case)
    legacy_cases()
    gemma_scope_2_cases()
    try:
        circuit_tracer_cases()
        gemma_scope_2_clt_case()
    except ImportError as e:
        sys.exit(f"circuit-tracer is not importable ({e}); see this script's docstring")
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {ROOT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
