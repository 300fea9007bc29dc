#!/usr/bin/env python3
"""TransformerLens hook fixtures: what every TransformerLens hook name means, and its shape.

For the tiny random checkpoints in tests/fixtures/models/{gemma3,qwen3,llama}/ (made by
scripts/make_reference_models.py) this loads the checkpoint into TransformerLens's
HookedTransformer *unprocessed* (`from_pretrained_no_processing`: no fold_ln, no centering, no
value-bias folding), runs `run_with_cache` on the `ids` of reference.safetensors, and writes:

  tests/fixtures/models/{arch}/tl_hooks.safetensors
      every cached hook of layer 0 and of the last layer, and every global hook (hook_embed,
      ln_final.*; hook_tokens), under TransformerLens's hook names, float32, TransformerLens's
      shapes (batch dimension included); also `ids` ([1, s], int64, as run) and `logits`
      (TransformerLens's, [1, s, d_vocab]).
      Hooks that TransformerLens only computes on request are included: they come from a second
      model with every such flag on (use_attn_result, use_split_qkv_input, use_attn_in,
      use_hook_mlp_in, and the construction-time use_hook_tokens; hook_tokens is stored as
      float32). All other hooks are stored as
      the default model (every flag off) computes them, since use_split_qkv_input / use_attn_in
      change the shapes of ln1.* (a head axis is added) -- see `shape_with_flags` in the json.
  tests/fixtures/models/{arch}/tl_hooks.json
      versions, flags, "hooks": every hook name of the whole model (all layers) in forward order,
      with shape, flag_only, the flag that turns it on, and its shape in the all-flags model when
      that differs; the logits' max abs difference from HF's (reference.safetensors
      `logits_v5`), and "checks": semantics verified numerically here (recomputed from the HF
      weights), e.g. where hook_q sits relative to q_norm.

How TransformerLens is made to read the local folders (no network): TL builds its config from
an official model name (`google/gemma-3-270m`, `Qwen/Qwen3-0.6B`, `meta-llama/Llama-3.2-1B`:
the same architecture). `loading_from_pretrained.convert_hf_model_config` is wrapped so that
  - its `AutoConfig.from_pretrained` reads the local config.json (Qwen3's branch builds the
    whole TL config from it, so nothing else is overridden there), and
  - for Gemma 3 and Llama, whose branches are hard-coded per official name, the sizes, eps,
    RoPE (bases, Gemma's per-layer-type bases and linear factor, Llama 3 NTK-by-parts), window
    and layer types are replaced by those of the local config.json;
  - tokenizer_name points at the local folder.
The HF model (eager attention, float32) is loaded from the folder and passed as `hf_model`, so
TL's own weight conversion (e.g. Gemma's +1 on norm weights, sqrt(d_model) into W_E) is used.

Create the venv and run (CPU is enough; a few minutes to install, seconds to run):

    python3 -m venv ~/.cache/tlvenv
    ~/.cache/tlvenv/bin/pip install "transformer-lens==3.9.0" torch "transformers==5.24.0" safetensors numpy
    ~/.cache/tlvenv/bin/python scripts/make_tl_hook_fixture.py

(recorded with transformer-lens 3.9.0, transformers 5.24.0, torch 2.15.0 (PyPI's default wheel,
run on the CPU), numpy 2.4.6, safetensors 0.8.0). HF_HUB_OFFLINE=1 is set here: nothing reaches
the hub. Deterministic: a rerun writes identical files.

use_attn_in is refused by TL for grouped-query attention (all three models here), so its
hook_attn_in is absent; the json records that under flags.refused_by_tl. The json also lists,
for information, how TL 3's TransformerBridge (compatibility mode, no processing) differs.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib
import io
import json
import logging
import math
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

import transformer_lens
import transformer_lens.loading_from_pretrained as loading
from transformer_lens import HookedTransformer

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"

ARCHS = {
    "gemma3": "google/gemma-3-270m",
    "qwen3": "Qwen/Qwen3-0.6B",
    "llama": "meta-llama/Llama-3.2-1B",
}

# Flags that make TL compute extra hooks. The use_set_* ones are toggled on a built model; the
# construction-time one goes into the config.
RUNTIME_FLAGS = ["use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"]
CONFIG_FLAGS = ["use_hook_tokens"]

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


# ------------------------------------------------------------------ loading
def local_overrides(arch: str, local: Path) -> dict:
    """TL config fields taken from the local config.json (for branches hard-coded by name)."""
    c = json.loads((local / "config.json").read_text())
    n_kv = c["num_key_value_heads"]
    common = {
        "d_model": c["hidden_size"],
        "d_head": c["head_dim"],
        "n_heads": c["num_attention_heads"],
        "n_key_value_heads": n_kv if n_kv != c["num_attention_heads"] else None,
        "d_mlp": c["intermediate_size"],
        "n_layers": c["num_hidden_layers"],
        "n_ctx": c["max_position_embeddings"],
        "eps": c["rms_norm_eps"],
        "d_vocab": c["vocab_size"],
        "rotary_dim": c["head_dim"],
    }
    rp = c["rope_parameters"]
    if arch == "gemma3":
        full, sliding = rp["full_attention"], rp["sliding_attention"]
        assert full.get("rope_type") in ("linear", "default"), full
        assert sliding.get("rope_type", "default") == "default", sliding
        assert c.get("attn_logit_softcapping") is None and c.get("final_logit_softcapping") is None
        common.update(
            rotary_base=full["rope_theta"],
            rotary_base_local=sliding["rope_theta"],
            rotary_scaling_factor=float(full.get("factor", 1.0)),
            window_size=c["sliding_window"],
            attn_types=["local" if t == "sliding_attention" else "global" for t in c["layer_types"]],
            # TL's default attn_scale is sqrt(d_head); Gemma 3 divides by sqrt(query_pre_attn_scalar)
            attn_scale=math.sqrt(c["query_pre_attn_scalar"]),
        )
    elif arch == "llama":
        assert rp["rope_type"] == "llama3", rp
        common.update(
            rotary_base=rp["rope_theta"],
            use_NTK_by_parts_rope=True,
            NTK_by_parts_factor=rp["factor"],
            NTK_by_parts_low_freq_factor=rp["low_freq_factor"],
            NTK_by_parts_high_freq_factor=rp["high_freq_factor"],
            NTK_original_ctx_len=rp["original_max_position_embeddings"],
        )
    elif arch == "qwen3":
        common = {}  # TL's Qwen3ForCausalLM branch reads everything from the (local) HF config
    return common


@contextlib.contextmanager
def tl_reads_local(arch: str, local: Path, extra_cfg: dict):
    orig_convert = loading.convert_hf_model_config
    orig_autoconfig = loading.AutoConfig

    class LocalAutoConfig:
        @staticmethod
        def from_pretrained(name, **kw):
            kw.pop("token", None)
            kw.pop("trust_remote_code", None)
            return transformers.AutoConfig.from_pretrained(str(local), **kw)

    def convert(model_name, **kwargs):
        cfg = orig_convert(model_name, **kwargs)
        cfg.update(local_overrides(arch, local))
        cfg["tokenizer_name"] = str(local)
        cfg.update(extra_cfg)
        return cfg

    loading.convert_hf_model_config = convert
    loading.AutoConfig = LocalAutoConfig
    try:
        yield
    finally:
        loading.convert_hf_model_config = orig_convert
        loading.AutoConfig = orig_autoconfig


def load_hf(local: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(local), dtype=torch.float32, attn_implementation="eager"
    ).eval()


def load_tl(arch: str, local: Path, hf, extra_cfg: dict | None = None) -> HookedTransformer:
    with tl_reads_local(arch, local, extra_cfg or {}), contextlib.redirect_stdout(io.StringIO()):
        model = HookedTransformer.from_pretrained_no_processing(
            ARCHS[arch], hf_model=hf, device="cpu", dtype=torch.float32
        )
    return model.eval()


# ------------------------------------------------------------------ caching
UNSUPPORTED: dict[str, str] = {}


def set_flags(model: HookedTransformer, on: set[str]):
    """Turn the runtime flags in `on` on and the others off, with TL's own setters. A flag TL
    refuses for this model (use_attn_in with grouped-query attention) is recorded and left off."""
    for f in RUNTIME_FLAGS:
        if bool(getattr(model.cfg, f)) == (f in on):
            continue
        try:
            getattr(model, f"set_{f}")(f in on)
        except AssertionError as e:
            UNSUPPORTED[f] = str(e)


def run_cache(model: HookedTransformer, ids: torch.Tensor):
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    # ActivationCache keeps the order in which the hooks first fired: forward order.
    return logits, {k: v.detach().clone() for k, v in cache.cache_dict.items()}


def layer_of(name: str):
    return int(name.split(".")[1]) if name.startswith("blocks.") else None


def generic(name: str) -> str:
    return ".".join(name.split(".")[2:]) if name.startswith("blocks.") else name


def dim_letters(model: HookedTransformer, seq: int) -> dict:
    c = model.cfg
    n, k = c.n_heads, c.n_key_value_heads or c.n_heads
    d = {c.d_model: "d", c.d_mlp: "m", c.d_vocab: "v", seq: "s", n: "n", k: "k", c.d_head: "h",
         seq * n: "(b*s*n)", seq * k: "(b*s*k)"}
    assert len(d) == 9, "tiny model sizes must be distinct to name the axes"
    return d


def letters(dims: dict, shape) -> str:
    out = []
    for i, x in enumerate(shape):
        out.append("b" if (i == 0 and x == 1) else ("1" if x == 1 else dims[x]))
    return "[" + ",".join(out) + "]"


# ------------------------------------------------------------------ numerical checks
def hf_capture(hf, ids: torch.Tensor):
    """HF's own intermediate values, captured with forward hooks on its modules (eager, float32)."""
    got = {}
    hooks = []

    def out_hook(key):
        def f(mod, args, kwargs, out):
            got[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return f

    def in_hook(key):
        def f(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            got[key] = x.detach().clone()
        return f

    base = hf.model
    hooks.append(base.embed_tokens.register_forward_hook(out_hook("embed"), with_kwargs=True))
    hooks.append(base.norm.register_forward_hook(out_hook("norm"), with_kwargs=True))
    for l, layer in enumerate(base.layers):
        hooks.append(layer.register_forward_pre_hook(in_hook(f"{l}.in"), with_kwargs=True))
        hooks.append(layer.register_forward_hook(out_hook(f"{l}.out"), with_kwargs=True))
        mods = dict(layer.named_modules())
        for name in ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.q_norm", "self_attn.k_norm", "self_attn.o_proj",
                     "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "mlp", "mlp.gate_proj", "mlp.up_proj",
                     "mlp.down_proj"]:
            if name in mods:
                hooks.append(mods[name].register_forward_hook(out_hook(f"{l}.{name}"), with_kwargs=True))
                hooks.append(mods[name].register_forward_pre_hook(in_hook(f"{l}.{name}.in"), with_kwargs=True))
    try:
        with torch.no_grad():
            out = hf(ids, output_attentions=True, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    got["attentions"] = out.attentions
    got["logits"] = out.logits
    return got


def rms(x, eps):
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def maxdiff(a, b) -> float:
    a, b = a.float(), b.float()
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def run_checks(arch: str, model: HookedTransformer, hf, ids, c: dict, cf: dict) -> dict:
    """Each entry: the largest |TL - expected| over all layers. `c` is the default model's cache,
    `cf` the all-flags model's."""
    cfg = model.cfg
    eps = cfg.eps
    gemma = arch.startswith("gemma")
    hc = hf.config
    n, h = cfg.n_heads, cfg.d_head
    k = cfg.n_key_value_heads or n
    b, s = ids.shape
    H = hf_capture(hf, ids)
    base = hf.model
    out: dict[str, float] = {}

    def bshh(t):  # HF applies q_norm/k_norm to [b,s,heads,h] (Qwen3) or [b,heads,s,h] (Gemma 3)
        return t if t.shape[1] == s else t.transpose(1, 2)

    def rec(key, val):
        out[key] = max(out.get(key, 0.0), float(val))

    raw_embed = base.embed_tokens.weight[ids]
    rec("hook_embed == HF embed_tokens output", maxdiff(c["hook_embed"], H["embed"]))
    if gemma:
        rec("hook_embed == raw embedding row * sqrt(d_model) (Gemma's scale is inside hook_embed)",
            maxdiff(c["hook_embed"], raw_embed * math.sqrt(cfg.d_model)))
        out["hook_embed vs raw embedding row, unscaled (should be large)"] = maxdiff(c["hook_embed"], raw_embed)
    else:
        rec("hook_embed == raw embedding row", maxdiff(c["hook_embed"], raw_embed))

    rope_cs = {}
    if gemma:
        for lt in set(hc.layer_types):
            rope_cs[lt] = base.rotary_emb(H["embed"], torch.arange(s)[None], lt)
    else:
        rope_cs[None] = base.rotary_emb(H["embed"], torch.arange(s)[None])
    mod = sys.modules[type(hf).__module__]

    for l, layer in enumerate(base.layers):
        p = f"blocks.{l}."
        x = c[p + "hook_resid_pre"]
        rec("hook_resid_pre == HF decoder layer input", maxdiff(x, H[f"{l}.in"]))
        sc = rms(x, eps)
        rec("ln1.hook_scale == sqrt(mean(resid_pre^2) + eps)", maxdiff(c[p + "ln1.hook_scale"], sc))
        rec("ln1.hook_normalized == resid_pre / ln1.hook_scale (before the weight)",
            maxdiff(c[p + "ln1.hook_normalized"], x / sc))
        w1 = layer.input_layernorm.weight
        w1_eff = (1.0 + w1) if gemma else w1
        rec("ln1.hook_normalized * w%s == HF input_layernorm output" % (" (1 + HF weight)" if gemma else ""),
            maxdiff(c[p + "ln1.hook_normalized"] * w1_eff, H[f"{l}.input_layernorm"]))
        q_raw = H[f"{l}.self_attn.q_proj"].view(b, s, n, h)
        k_raw = H[f"{l}.self_attn.k_proj"].view(b, s, k, h)
        v_raw = H[f"{l}.self_attn.v_proj"].view(b, s, k, h)
        rec("attn.hook_q == HF q_proj output [b,s,n,h] (before q_norm and RoPE)", maxdiff(c[p + "attn.hook_q"], q_raw))
        rec("attn.hook_k == HF k_proj output [b,s,k,h] (kv heads only, before k_norm and RoPE)", maxdiff(c[p + "attn.hook_k"], k_raw))
        rec("attn.hook_v == HF v_proj output [b,s,k,h] (kv heads only)", maxdiff(c[p + "attn.hook_v"], v_raw))
        if cfg.use_qk_norm:
            for which, raw, hh in (("q", q_raw, n), ("k", k_raw, k)):
                flat = raw.reshape(-1, h)
                scq = rms(flat, eps)
                rec(f"attn.{which}_norm.hook_scale == rms over d_head, shape [b*s*heads, 1]",
                    maxdiff(c[p + f"attn.{which}_norm.hook_scale"], scq))
                rec(f"attn.{which}_norm.hook_normalized == hook_{which} / scale, [b*s*heads, h] (before the weight)",
                    maxdiff(c[p + f"attn.{which}_norm.hook_normalized"], flat / scq))
                wn = getattr(layer.self_attn, f"{which}_norm").weight
                wn_eff = (1.0 + wn) if gemma else wn
                rec(f"attn.{which}_norm.hook_normalized * w{' (1 + HF weight)' if gemma else ''} == HF {which}_norm output",
                    maxdiff(c[p + f"attn.{which}_norm.hook_normalized"].view(b, s, hh, h) * wn_eff,
                            bshh(H[f"{l}.self_attn.{which}_norm"])))
            q_n = bshh(H[f"{l}.self_attn.q_norm"])
            k_n = bshh(H[f"{l}.self_attn.k_norm"])
        else:
            q_n, k_n = q_raw, k_raw
        lt = hc.layer_types[l] if gemma else None
        cos, sin = rope_cs[lt]
        rq, rk = mod.apply_rotary_pos_emb(q_n.transpose(1, 2), k_n.transpose(1, 2), cos, sin)
        rq, rk = rq.transpose(1, 2), rk.transpose(1, 2)  # [b,s,heads,h]
        rec("attn.hook_rot_q == HF RoPE(q_norm(q)) [b,s,n,h]", maxdiff(c[p + "attn.hook_rot_q"], rq))
        rec("attn.hook_rot_k == HF RoPE(k_norm(k)) [b,s,k,h] (kv heads only)", maxdiff(c[p + "attn.hook_rot_k"], rk))
        scaling = layer.self_attn.scaling
        rk_rep = rk.repeat_interleave(n // k, dim=2)
        scores = torch.einsum("bqnh,bknh->bnqk", rq, rk_rep) * scaling
        qpos, kpos = torch.arange(s)[:, None], torch.arange(s)[None, :]
        allowed = kpos <= qpos
        win = getattr(layer.self_attn, "sliding_window", None)
        if win:
            allowed = allowed & (kpos > qpos - win)
        allowed = allowed[None, None].expand_as(scores)
        tl_scores = c[p + "attn.hook_attn_scores"]
        rec("attn.hook_attn_scores (allowed entries) == rot_q . rot_k * HF scaling (no softcap)",
            maxdiff(tl_scores[allowed], scores[allowed]))
        masked = tl_scores[~allowed]
        out.setdefault("attn.hook_attn_scores masked entries: values seen", [])
        for v in sorted(set(masked.tolist())):
            if str(v) not in out["attn.hook_attn_scores masked entries: values seen"]:
                out["attn.hook_attn_scores masked entries: values seen"].append(str(v))
        if win:
            outside = (qpos - kpos >= win)  # causal but outside the window
            key = f"sliding layers: attn.hook_attn_scores is -inf outside the window ({win}) too"
            out[key] = out.get(key, True) and bool(torch.isneginf(tl_scores[0][:, outside]).all())
        rec("attn.hook_pattern == HF attention weights (eager)", maxdiff(c[p + "attn.hook_pattern"], H["attentions"][l]))
        z_hf = H[f"{l}.self_attn.o_proj.in"].view(b, s, n, h)
        rec("attn.hook_z == HF o_proj input [b,s,n,h]", maxdiff(c[p + "attn.hook_z"], z_hf))
        Wo = layer.self_attn.o_proj.weight  # [d, n*h]
        per_head = torch.einsum("bsnh,dnh->bsnd", z_hf, Wo.view(cfg.d_model, n, h))
        rec("attn.hook_result[:, :, i] == z_i @ W_O[i] (no bias) [b,s,n,d]", maxdiff(cf[p + "attn.hook_result"], per_head))
        o = H[f"{l}.self_attn.o_proj"]
        rec("attn.hook_result.sum(heads) == HF o_proj output (before ln1_post)", maxdiff(cf[p + "attn.hook_result"].sum(2), o))
        if gemma:
            sc = rms(o, eps)
            rec("ln1_post.hook_scale == rms of o_proj output", maxdiff(c[p + "ln1_post.hook_scale"], sc))
            rec("ln1_post.hook_normalized == o_proj output / scale (before the weight)", maxdiff(c[p + "ln1_post.hook_normalized"], o / sc))
            rec("hook_attn_out == HF post_attention_layernorm(o_proj) (after ln1_post)", maxdiff(c[p + "hook_attn_out"], H[f"{l}.post_attention_layernorm"]))
        else:
            rec("hook_attn_out == HF o_proj output", maxdiff(c[p + "hook_attn_out"], o))
        mid = c[p + "hook_resid_mid"]
        rec("hook_resid_mid == resid_pre + attn_out", maxdiff(mid, x + c[p + "hook_attn_out"]))
        sc = rms(mid, eps)
        rec("ln2.hook_scale == rms of resid_mid", maxdiff(c[p + "ln2.hook_scale"], sc))
        rec("ln2.hook_normalized == resid_mid / scale (before the weight)", maxdiff(c[p + "ln2.hook_normalized"], mid / sc))
        ln2_name = "pre_feedforward_layernorm" if gemma else "post_attention_layernorm"
        rec("ln2 output (normalized * w) == HF %s output" % ln2_name,
            maxdiff(c[p + "ln2.hook_normalized"] * ((1.0 + getattr(layer, ln2_name).weight) if gemma else getattr(layer, ln2_name).weight), H[f"{l}.{ln2_name}"]))
        rec("mlp.hook_pre == HF gate_proj output (before the activation)", maxdiff(c[p + "mlp.hook_pre"], H[f"{l}.mlp.gate_proj"]))
        rec("mlp.hook_pre_linear == HF up_proj output", maxdiff(c[p + "mlp.hook_pre_linear"], H[f"{l}.mlp.up_proj"]))
        rec("mlp.hook_post == act(gate) * up == HF down_proj input", maxdiff(c[p + "mlp.hook_post"], H[f"{l}.mlp.down_proj.in"]))
        down = H[f"{l}.mlp.down_proj"]
        if gemma:
            sc = rms(down, eps)
            rec("ln2_post.hook_scale == rms of down_proj output", maxdiff(c[p + "ln2_post.hook_scale"], sc))
            rec("ln2_post.hook_normalized == down_proj output / scale", maxdiff(c[p + "ln2_post.hook_normalized"], down / sc))
            rec("hook_mlp_out == HF post_feedforward_layernorm(down_proj) (after ln2_post)", maxdiff(c[p + "hook_mlp_out"], H[f"{l}.post_feedforward_layernorm"]))
        else:
            rec("hook_mlp_out == HF down_proj output", maxdiff(c[p + "hook_mlp_out"], down))
        rec("hook_resid_post == resid_mid + mlp_out == HF decoder layer output", max(
            maxdiff(c[p + "hook_resid_post"], mid + c[p + "hook_mlp_out"]), maxdiff(c[p + "hook_resid_post"], H[f"{l}.out"])))
        # hooks that exist only with flags
        if p + "hook_attn_in" in cf:
            rec("hook_attn_in == resid_pre repeated over n heads [b,s,n,d]", maxdiff(cf[p + "hook_attn_in"], x[:, :, None].expand(b, s, n, -1)))
        rec("hook_q_input == resid_pre repeated over n heads [b,s,n,d]", maxdiff(cf[p + "hook_q_input"], x[:, :, None].expand(b, s, n, -1)))
        rec("hook_k_input / hook_v_input == resid_pre repeated over k kv heads [b,s,k,d]", max(
            maxdiff(cf[p + "hook_k_input"], x[:, :, None].expand(b, s, k, -1)),
            maxdiff(cf[p + "hook_v_input"], x[:, :, None].expand(b, s, k, -1))))
        rec("hook_mlp_in == resid_mid", maxdiff(cf[p + "hook_mlp_in"], mid))
        rec("all-flags ln1.hook_normalized == default one repeated over the value input's k heads",
            maxdiff(cf[p + "ln1.hook_normalized"], c[p + "ln1.hook_normalized"][:, :, None].expand(b, s, k, -1)))

    last = c[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    sc = rms(last, eps)
    rec("ln_final.hook_scale == rms of last resid_post", maxdiff(c["ln_final.hook_scale"], sc))
    rec("ln_final.hook_normalized == last resid_post / scale (before the weight)", maxdiff(c["ln_final.hook_normalized"], last / sc))
    rec("ln_final output == HF final norm output", maxdiff(c["ln_final.hook_normalized"] * ((1.0 + base.norm.weight) if gemma else base.norm.weight), H["norm"]))
    rec("hook_tokens == ids", maxdiff(cf["hook_tokens"].float(), ids.float()))
    return out


# ------------------------------------------------------------------ TL 3's TransformerBridge
def bridge_comparison(local: Path, ids, ref_logits, cache: dict) -> dict:
    """For information only (nothing stored from it): TL 3's recommended TransformerBridge, which
    wraps the HF model and reads the local folder itself, in compatibility mode without weight
    processing; how its hooks compare with HookedTransformer's (values and shapes)."""
    from transformer_lens.model_bridge import TransformerBridge

    with contextlib.redirect_stdout(io.StringIO()):
        bridge = TransformerBridge.boot_transformers(str(local), device="cpu", dtype=torch.float32)
        bridge.enable_compatibility_mode(no_processing=True)
    with torch.no_grad():
        logits, cb = bridge.run_with_cache(ids)
    cb = dict(cb.items())
    shape_diff, value_diff = {}, 0.0
    for name, v in cache.items():
        if name not in cb:
            continue
        g = generic(name)
        if tuple(cb[name].shape) != tuple(v.shape):
            shape_diff[g] = {"hooked_transformer": list(v.shape), "bridge": list(cb[name].shape)}
            continue
        assert torch.equal(torch.isinf(v), torch.isinf(cb[name])), name
        fin = ~torch.isinf(v)
        value_diff = max(value_diff, maxdiff(v[fin], cb[name][fin]))
    only_bridge = []
    for name in cb:
        if name not in cache and generic(name) not in only_bridge:
            only_bridge.append(generic(name))
    return {
        "loader": "TransformerBridge.boot_transformers(local folder, dtype=float32) + "
                  "enable_compatibility_mode(no_processing=True)",
        "logits_max_abs_diff_vs_hf": maxdiff(logits[0], ref_logits),
        "hooks_missing_in_bridge": sorted({generic(n) for n in cache if n not in cb}),
        "extra_hooks_in_bridge (layer suffixes and globals)": only_bridge,
        "shape_differences": shape_diff,
        "max_abs_diff_on_common_same_shape_hooks": value_diff,
    }


# ------------------------------------------------------------------ main
def make(arch: str, versions: dict) -> dict:
    UNSUPPORTED.clear()
    local = MODELS / arch
    ref = load_file(str(local / "reference.safetensors"))
    ids = ref["ids"].to(torch.int64).reshape(1, -1)
    hf = load_hf(local)

    model = load_tl(arch, local, hf)
    set_flags(model, set())
    logits, cache = run_cache(model, ids)
    diff = maxdiff(logits[0], ref["logits_v5"])
    with torch.no_grad():
        diff_hf_now = maxdiff(logits[0], hf(ids).logits[0])

    # Which flag makes which hook: one flag at a time.
    flag_of: dict[str, str] = {}
    for f in RUNTIME_FLAGS:
        set_flags(model, {f})
        _, cf1 = run_cache(model, ids)
        for name in cf1:
            if name not in cache:
                flag_of.setdefault(name, f)
    set_flags(model, set())

    flagged = load_tl(arch, local, hf, {f: True for f in CONFIG_FLAGS})
    for name in run_cache(flagged, ids)[1]:
        if name not in cache:
            flag_of.setdefault(name, "use_hook_tokens")
    set_flags(flagged, set(RUNTIME_FLAGS))
    logits_f, cache_f = run_cache(flagged, ids)
    diff_flags = maxdiff(logits_f, logits)

    checks = run_checks(arch, model, hf, ids, cache, cache_f)

    # Not a hook flag, but it changes shapes: ungroup_grouped_query_attention gives k/v n heads.
    model.set_ungroup_grouped_query_attention(True)
    logits_u, cache_u = run_cache(model, ids)
    model.set_ungroup_grouped_query_attention(False)
    diff_ungrouped = maxdiff(logits_u, logits)

    try:
        bridge = bridge_comparison(local, ids, ref["logits_v5"], cache)
    except Exception as e:  # informational only
        bridge = {"error": repr(e)[:500]}

    dims = dim_letters(model, ids.shape[1])
    last = model.cfg.n_layers - 1
    hooks, tensors = [], {}
    for name, v in cache_f.items():  # the all-flags model fires every hook, in forward order
        flag_only = name not in cache
        assert flag_only == (name in flag_of), name
        val = cache_f[name] if flag_only else cache[name]
        entry = {"name": name, "shape": list(val.shape), "dims": letters(dims, val.shape),
                 "flag_only": flag_only}
        if flag_only:
            entry["flag"] = flag_of[name]
        elif list(v.shape) != list(val.shape):
            entry["shape_with_flags"] = list(v.shape)
            entry["dims_with_flags"] = letters(dims, v.shape)
        if not flag_only and list(cache_u[name].shape) != list(val.shape):
            entry["shape_with_ungroup_grouped_query_attention"] = list(cache_u[name].shape)
            entry["dims_with_ungroup_grouped_query_attention"] = letters(dims, cache_u[name].shape)
        hooks.append(entry)
        if layer_of(name) in (None, 0, last):
            tensors[name] = val.to(torch.float32).contiguous()
    missing = set(cache) - set(cache_f)
    assert not missing, missing
    tensors["ids"] = ids.contiguous()
    tensors["logits"] = logits.to(torch.float32).contiguous()
    save_file(tensors, str(local / "tl_hooks.safetensors"))
    os.chmod(local / "tl_hooks.safetensors", 0o644)

    cfg = model.cfg
    info = {
        **versions,
        "official_model_name_for_tl_config": ARCHS[arch],
        "loader": "HookedTransformer.from_pretrained_no_processing(official name, hf_model=local "
                  "HF model, dtype=float32) with the TL config overridden from the local config.json",
        "tl_config": {key: (val if not isinstance(val, float) or math.isfinite(val) else str(val))
                      for key, val in cfg.to_dict().items()
                      if key in ("d_model", "d_head", "n_heads", "n_key_value_heads", "d_mlp",
                                 "n_layers", "n_ctx", "eps", "d_vocab", "rotary_base",
                                 "rotary_base_local", "rotary_scaling_factor", "window_size",
                                 "attn_types", "attn_scale", "use_qk_norm",
                                 "use_normalization_before_and_after", "use_NTK_by_parts_rope",
                                 "NTK_by_parts_factor", "NTK_original_ctx_len",
                                 "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor",
                                 "normalization_type", "act_fn", "dtype")},
        "flags": {
            "stored_non_flag_hooks_from": "default model: every flag off",
            "stored_flag_only_hooks_from": {f: f not in UNSUPPORTED for f in RUNTIME_FLAGS + CONFIG_FLAGS},
            "refused_by_tl": dict(UNSUPPORTED),
            "fold_ln": False, "center_writing_weights": False, "center_unembed": False,
            "fold_value_biases": False, "refactor_factored_attn_matrices": False,
        },
        "stored_layers": sorted({0, last}),
        "dims_legend": {"b": 1, "s": ids.shape[1], "n": cfg.n_heads,
                        "k": cfg.n_key_value_heads or cfg.n_heads, "h": cfg.d_head,
                        "d": cfg.d_model, "m": cfg.d_mlp, "v": cfg.d_vocab},
        "logits_max_abs_diff_vs_hf": diff,
        "logits_max_abs_diff_vs_hf_rerun_here": diff_hf_now,
        "logits_max_abs_diff_all_flags_vs_default": diff_flags,
        "logits_max_abs_diff_ungrouped_gqa_vs_default": diff_ungrouped,
        "hooks": hooks,
        "transformer_bridge_for_information": bridge,
        "checks_max_abs_diff": checks,
    }
    (local / "tl_hooks.json").write_text(dump_json(info))
    return info


def dump_json(info: dict) -> str:
    """Indented, but each hook entry on one line."""
    hooks = info["hooks"]
    text = json.dumps({**info, "hooks": "@HOOKS@"}, indent=1, default=str)
    lines = ",\n".join("  " + json.dumps(h) for h in hooks)
    return text.replace('"@HOOKS@"', "[\n" + lines + "\n ]") + "\n"


def main():
    versions = {
        "transformer_lens": version("transformer-lens"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "safetensors": version("safetensors"),
    }
    torch.set_grad_enabled(False)
    for arch in ARCHS:
        info = make(arch, versions)
        print(f"{arch}: {len(info['hooks'])} hooks, logits max |TL - HF| = "
              f"{info['logits_max_abs_diff_vs_hf']:.3g}")


if __name__ == "__main__":
    main()
