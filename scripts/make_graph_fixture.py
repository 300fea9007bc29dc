#!/usr/bin/env python3
"""Reference attribution graphs from circuit-tracer 0.5.0 itself (issue 25, item 3b).

Runs circuit-tracer's own `attribute` (nnsight backend, CPU, float32) on the default model
(Gemma 3 270M, dequantized from mechinterp's GGUF) with a seeded random sparse per-layer
transcoder set, and writes what `tests/fixtures/graph/` holds. Not part of the test suite:
circuit-tracer needs its own venv (circuit-tracer 0.5.0, transformers 4.57.3, nnsight 0.6.3,
gguf); see tests/fixtures/graph/README.md for the exact commands.

Steps (all by default, or pick with --steps):
  model        GGUF -> local HF folder with a transformers-4 config (outside the repo)
  transcoders  seeded random sparse transcoders, circuit-tracer per-layer format
  graphs       attribute + prune_graph + compute_graph_scores per prompt; graph.json for one
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURES = os.path.join(REPO, "tests", "fixtures", "graph")
GGUF = os.path.expanduser("~/.cache/mechinterp/gemma-3-270m-q4_k_m.gguf")
HF_DIR = os.path.expanduser("~/.cache/ct-gemma3-270m")

# Gemma 3 with the nnsight backend: mlp.hook_in is pre_feedforward_layernorm's output,
# hook_mlp_out is post_feedforward_layernorm's output (circuit_tracer/utils/tl_nnsight_mapping.py).
FEATURE_INPUT_HOOK = "mlp.hook_in"
FEATURE_OUTPUT_HOOK = "hook_mlp_out"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


TYPE_NORMAL, TYPE_CONTROL, TYPE_USER_DEFINED = 1, 3, 4


def gguf_tokenizer(gguf_path):
    """The GGUF's SentencePiece vocabulary as llama.cpp (and mechinterp's src/tokenizer.rs)
    tokenizes it: a BPE whose merges are every split of a normal token into two normal tokens,
    ranked by the merged token's score; byte fallback; spaces become '▁' (no prefix space
    for Gemma 3); user-defined tokens matched first, control tokens special.

    transformers 4.57's own GGUF conversion builds a Unigram model from these scores, which
    tokenizes Gemma 3 wrongly ("English" -> "En" "gl" "ish"), so it is replaced.
    """
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    r = gguf.GGUFReader(gguf_path)
    f = r.fields
    tokens = [str(bytes(f["tokenizer.ggml.tokens"].parts[i]), "utf-8") for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    unk = int(f["tokenizer.ggml.unknown_token_id"].parts[-1][0])
    prefix = bool(f["tokenizer.ggml.add_space_prefix"].parts[-1][0])
    if prefix:
        sys.exit("error: this GGUF asks for a space prefix; gguf_tokenizer only handles Gemma 3's none")
    vocab = {t: i for i, t in enumerate(tokens)}

    def normal(t):
        i = vocab.get(t)
        return i is not None and types[i] == TYPE_NORMAL

    merges = []
    for i, t in enumerate(tokens):
        if types[i] != TYPE_NORMAL:
            continue
        for pos in range(1, len(t)):
            a, b = t[:pos], t[pos:]
            if normal(a) and normal(b):
                merges.append((-scores[i], i, pos, a, b))
    merges.sort()
    bpe = BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], unk_token=tokens[unk], byte_fallback=True, fuse_unk=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tk.add_tokens([AddedToken(t, normalized=False) for i, t in enumerate(tokens) if types[i] == TYPE_USER_DEFINED])
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for i, t in enumerate(tokens) if types[i] == TYPE_CONTROL])
    return tk


def make_model(gguf, out_dir):
    """Dequantize the GGUF to f32 and save an HF folder transformers 4.57 can read."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.path.exists(os.path.join(out_dir, "config.json")):
        log(f"model: {out_dir} exists, kept")
        return
    folder, name = os.path.split(os.path.abspath(gguf))
    log(f"model: dequantizing {gguf} (takes a few minutes)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = hf.config
    # GGUF-built configs carry no `architectures`; circuit-tracer dispatches its hook mapping
    # on it. The name must not end in "-it" (that would make circuit-tracer zero 4 positions).
    cfg.architectures = ["Gemma3ForCausalLM"]
    cfg._name_or_path = "gemma-3-270m"
    if getattr(cfg, "quantization_config", None) is not None:
        del cfg.quantization_config
    hf.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    fix_tokenizer(gguf, out_dir)
    with open(os.path.join(out_dir, "config.json")) as f:
        saved = json.load(f)
    # transformers 4.57 reads rope_theta / rope_local_base_freq / rope_scaling, not
    # transformers 5's rope_parameters.
    for key in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window"):
        if key not in saved:
            sys.exit(f"error: saved config.json lacks {key}; edit {out_dir}/config.json")
    if "rope_parameters" in saved:
        sys.exit(f"error: saved config.json has rope_parameters; 4.57 cannot read it")
    log(f"model: saved {out_dir}")


# Seeded calibration text: the transcoders' biases are set from these activations so that only
# a handful of features fire per position. Changing it changes every fixture.
CALIBRATION = [
    "English: I like green apples.\nFrench: J'aime les pommes vertes.",
    "The cat sat on the mat and looked out of the window at the rain.",
    "English: The house is big.\nFrench: La maison est grande.",
    "In 1905 Albert Einstein published four papers that changed physics.",
    "def add(a, b):\n    return a + b\n",
    "Die Katze schläft auf dem Sofa, während der Hund im Garten spielt.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "She opened the door, took a deep breath, and walked into the room.",
]

# The fixture prompts: (name, text). circuit-tracer prepends <bos> (id 2) itself. Each one's top
# 11 probabilities are >= 1e-4 apart, so the logit targets' order and cut are robust.
PROMPTS = [
    ("capital", "The capital of France is"),
    # (8 tokens; "English: green.\nFrench:" was dropped: its 6th and 7th logits differ by 3.5e-6,
    # too close for two implementations to order alike.)
    ("water", "English: water.\nFrench:"),
    # The tutorial's prompt, shortened so that its dense f32 adjacency stays small.
    ("apples", "English: green apples.\nFrench: pommes"),
]
# circuit_tracer_bench.py's default: 20 tokens with <bos>.
BENCH_PROMPT = "English: I like green apples and red cherries.\nFrench: J'aime les pommes vertes"
FIXED_TEXTS = [t for _, t in PROMPTS] + [BENCH_PROMPT]
# Which prompt's graph.json (circuit-tracer's create_graph_files) is committed.
JSON_PROMPT = "capital"


def load_hf(hf_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    return tok, hf


def mlp_io(hf, ids):
    """Per layer: pre_feedforward_layernorm output (mlp.hook_in) and post_feedforward_layernorm
    output (hook_mlp_out), [n_layers, n_pos, d_model]."""
    import torch

    ins, outs, hs = [], [], []
    for layer in hf.model.layers:
        hs.append(layer.pre_feedforward_layernorm.register_forward_hook(lambda m, i, o: ins.append(o[0])))
        hs.append(layer.post_feedforward_layernorm.register_forward_hook(lambda m, i, o: outs.append(o[0])))
    try:
        with torch.no_grad():
            logits = hf(ids[None]).logits[0]
    finally:
        for h in hs:
            h.remove()
    return torch.stack(ins), torch.stack(outs), logits


def tokens_with_bos(tok, text):
    """circuit-tracer's ensure_tokenized for a base Gemma: no special tokens, then <bos>."""
    import torch

    ids = tok(text, add_special_tokens=False).input_ids
    return torch.tensor([tok.bos_token_id] + ids)


MARGIN = 2e-3


def keep_away(v, distance):
    """Moves each f16 entry of v by the smallest multiple of MARGIN (either way) that makes
    distance(v) >= MARGIN for it; returns the new v and how many entries moved."""
    import torch

    v = v.clone()
    moved = 0
    bad = distance(v) < MARGIN
    for k in range(1, 200):
        if not bad.any():
            break
        for sign in (1, -1):
            cand = v.clone()
            cand[bad] = (v[bad].float() + sign * k * MARGIN).to(v.dtype)
            ok = bad & (distance(cand) >= MARGIN)
            v[ok] = cand[ok]
            moved += int(ok.sum())
            bad &= ~ok
    if bad.any():
        sys.exit("error: could not keep the fixture prompts away from the activation edges")
    return v, moved


def make_transcoders(hf_dir, out_dir, d_tc, seed, rate):
    """Random sparse transcoders in circuit-tracer's per-layer format, all tensors f16.

    Even layers use ReLU with negative encoder biases, odd layers JumpReLU (a threshold, small
    biases), so both of circuit-tracer's per-layer activation functions are exercised. Biases and
    thresholds are the per-feature (1 - rate) quantiles of the pre-activations on CALIBRATION
    (positions after <bos>), so about rate * d_tc features fire per position and layer.
    """
    import torch
    import torch.nn.functional as F
    import yaml
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU

    tok, hf = load_hf(hf_dir)
    n_layers, d_model = hf.config.num_hidden_layers, hf.config.hidden_size
    xs, ys = [], []
    for text in CALIBRATION:
        x, y, _ = mlp_io(hf, tokens_with_bos(tok, text))
        xs.append(x[:, 1:])
        ys.append(y[:, 1:])
    X, Y = torch.cat(xs, 1), torch.cat(ys, 1)  # [n_layers, n_calib, d_model]
    log(f"transcoders: calibrating on {X.shape[1]} positions")

    # The fixture and bench prompts' pre-activations, kept MARGIN away from every ReLU / JumpReLU
    # edge so that an f32 reimplementation (errors ~1e-5) finds the same active set.
    fixed = torch.cat([mlp_io(hf, tokens_with_bos(tok, t))[0][:, 1:] for t in FIXED_TEXTS], 1)

    g = torch.Generator().manual_seed(seed)
    half = torch.float16
    tcs = {}
    nudged = 0
    for layer in range(n_layers):
        w_enc = (torch.randn(d_tc, d_model, generator=g) / d_model**0.5).to(half).float()
        pre = X[layer] @ w_enc.T
        q = torch.quantile(pre, 1 - rate, dim=0)
        w_dec = torch.randn(d_tc, d_model, generator=g)
        out_norm = Y[layer].norm(dim=-1).median()
        w_dec = (w_dec / w_dec.norm(dim=-1, keepdim=True) * out_norm / 4).to(half)
        b_dec = Y[layer].mean(0).to(half)
        fixed_pre = fixed[layer] @ w_enc.T  # [n_fixed, d_tc], before b_enc
        if layer % 2 == 0:
            b_enc = (-q).to(half)
            # ReLU: pre = fixed_pre + b_enc must stay MARGIN away from 0.
            b_enc, n = keep_away(b_enc, lambda b: (fixed_pre + b.float()).abs().min(0).values)
            act = F.relu
        else:
            b_enc = (0.1 * q.abs() * torch.randn(d_tc, generator=g)).to(half)
            thr = (q + b_enc.float()).clamp(min=1e-3).to(half)
            # JumpReLU: pre = fixed_pre + b_enc must stay MARGIN away from the threshold.
            thr, n = keep_away(thr, lambda t: (fixed_pre + b_enc.float() - t.float()).abs().min(0).values)
            act = JumpReLU(thr, 0.1)
        nudged += n
        tc = SingleLayerTranscoder(d_model, d_tc, act, layer, device=torch.device("cpu"), dtype=half)
        with torch.no_grad():
            tc.W_enc.copy_(w_enc.to(half))
            tc.W_dec.copy_(w_dec)
            tc.b_enc.copy_(b_enc)
            tc.b_dec.copy_(b_dec)
        tcs[layer] = tc
    tset = TranscoderSet(tcs, FEATURE_INPUT_HOOK, FEATURE_OUTPUT_HOOK, scan=SCAN)
    os.makedirs(out_dir, exist_ok=True)
    tset.to_safetensors(out_dir)
    config = {
        "model_name": "google/gemma-3-270m",
        "model_kind": "transcoder_set",
        "feature_input_hook": FEATURE_INPUT_HOOK,
        "feature_output_hook": FEATURE_OUTPUT_HOOK,
        "scan": SCAN,
    }
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    log(f"transcoders: {nudged} biases / thresholds nudged to keep {MARGIN} from the fixture prompts' edges")
    log(f"transcoders: wrote {n_layers} layers, d_transcoder {d_tc}, to {out_dir}")


SCAN = "mechinterp-fixture-random-plt"


def load_transcoders(tc_dir, n_layers=18):
    """The set as circuit-tracer loads a config.yaml whose `transcoders` lists local files."""
    import torch
    import yaml
    from circuit_tracer.utils.hf_utils import load_transcoders as ct_load

    with open(os.path.join(tc_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["transcoders"] = [os.path.join(tc_dir, f"layer_{i}.safetensors") for i in range(n_layers)]
    config.setdefault("repo_id", "")
    return ct_load(config, device=torch.device("cpu"), dtype=torch.float32, lazy_encoder=False, lazy_decoder=False)


def load_replacement_model(hf_dir, tc_dir):
    import torch
    from circuit_tracer.replacement_model import ReplacementModel

    return ReplacementModel.from_pretrained_and_transcoders(
        hf_dir, load_transcoders(tc_dir), backend="nnsight", device=torch.device("cpu"), dtype=torch.float32
    )


def versions():
    import importlib.metadata as md

    import torch

    names = ["circuit-tracer", "transformers", "nnsight", "transformer-lens", "gguf", "safetensors"]
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def preact_margin(model, input_ids):
    """How far the nearest (layer, position > 0, feature) pre-activation is from its ReLU / JumpReLU
    edge: a second implementation only reproduces the active set if its error stays below this."""
    from circuit_tracer.transcoder.activation_functions import JumpReLU

    tset = getattr(model.transcoders, "_module", model.transcoders)
    x, _, _ = mlp_io(model._model, input_ids.cpu())
    margin = float("inf")
    for layer in range(len(tset)):
        tc = tset[layer]
        pre = tc.encode(x[layer][1:], apply_activation_function=False)
        edge = tc.activation_function.threshold if isinstance(tc.activation_function, JumpReLU) else 0.0
        margin = min(margin, float((pre - edge).abs().min()))
    return margin


def logit_gap(hf, input_ids, max_n_logits=10, desired=0.95):
    """The smallest difference between consecutive probabilities among the logit targets and the
    first one left out: another implementation orders and cuts them alike if its error is below."""
    import torch

    _, _, logits = mlp_io(hf, input_ids.cpu())
    top = torch.softmax(logits[-1], -1).topk(max_n_logits + 1).values
    cut = min(int(torch.searchsorted(top[:max_n_logits].cumsum(0), desired)) + 1, max_n_logits)
    return float((top[:-1] - top[1:])[:cut].min())


def add_gaps(hf_dir, out_dir):
    """Writes logit_probability_gap into existing <name>.json files."""
    tok, hf = load_hf(hf_dir)
    for name, text in PROMPTS:
        path = os.path.join(out_dir, f"{name}.json")
        with open(path) as f:
            meta = json.load(f)
        meta["logit_probability_gap"] = logit_gap(hf, tokens_with_bos(tok, text))
        with open(path, "w") as f:
            json.dump(meta, f, indent=1)


def make_graphs(hf_dir, tc_dir, out_dir, names=None):
    """circuit-tracer's own attribute / prune_graph / compute_graph_scores per prompt."""
    import torch
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph
    from circuit_tracer.utils.create_graph_files import create_graph_files
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = load_replacement_model(hf_dir, tc_dir)
    tok = model.tokenizer
    for name, text in PROMPTS:
        if names and name not in names:
            continue
        log(f"graphs: {name}: attribute")
        t0 = time.perf_counter()
        graph = attribute(text, model, verbose=True)
        secs = time.perf_counter() - t0
        ids = graph.input_tokens.cpu()
        node_mask, edge_mask, cumulative = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
        replacement, completeness = compute_graph_scores(graph)
        adj = graph.adjacency_matrix.float().contiguous()
        n_feat = len(graph.selected_features)
        n_pos = len(ids)
        n_layers = model.cfg.n_layers
        n_logits = len(graph.logit_targets)
        tensors = {
            "adjacency_matrix": adj,
            "active_features": graph.active_features.long().contiguous(),
            "selected_features": graph.selected_features.long().contiguous(),
            "activation_values": graph.activation_values.float().contiguous(),
            "logit_tokens": graph.logit_token_ids.long().contiguous(),
            "logit_probabilities": graph.logit_probabilities.float().contiguous(),
            "input_tokens": ids.long().contiguous(),
            "pruned_node_mask": node_mask.to(torch.uint8).contiguous(),
            "pruned_edge_mask": edge_mask.to(torch.uint8).contiguous(),
            "node_cumulative_scores": cumulative.float().contiguous(),
        }
        os.makedirs(out_dir, exist_ok=True)
        save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"))
        meta = {
            "prompt": text,
            "input_tokens": ids.tolist(),
            "input_token_strings": [tok.decode([i]) for i in ids.tolist()],
            "logit_tokens": graph.logit_token_ids.tolist(),
            "logit_token_strings": [t.token_str for t in graph.logit_targets],
            "logit_probabilities": graph.logit_probabilities.tolist(),
            "n_nodes": adj.shape[0],
            "n_active_features": int(graph.active_features.shape[0]),
            "n_selected_features": n_feat,
            "n_error_nodes": n_layers * n_pos,
            "n_token_nodes": n_pos,
            "n_logit_nodes": n_logits,
            "n_layers": n_layers,
            "replacement_score": replacement,
            "completeness_score": completeness,
            "pruned_nodes": int(node_mask.sum()),
            "pruned_edges": int(edge_mask.sum()),
            "max_abs_adjacency": float(adj.abs().max()),
            "preactivation_margin": preact_margin(model, ids),
            "logit_probability_gap": logit_gap(model._model, ids),
            "attribute_seconds": secs,
            "options": {
                "max_n_logits": 10,
                "desired_logit_prob": 0.95,
                "batch_size": 512,
                "max_feature_nodes": None,
                "node_threshold": 0.8,
                "edge_threshold": 0.98,
                "backend": "nnsight",
                "device": "cpu",
                "dtype": "float32",
            },
            "transcoders": "transcoders/ (config.yaml, layer_{i}.safetensors)",
            "versions": versions(),
        }
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        log(f"graphs: {name}: {adj.shape[0]} nodes, {n_feat} features, {secs:.1f} s, scores {replacement:.4f} / {completeness:.4f}")
        if name == JSON_PROMPT:
            tmp = os.path.join(out_dir, "_graph_json")
            create_graph_files(graph, slug=name, output_path=tmp, scan=SCAN, node_threshold=0.8, edge_threshold=0.98)
            os.replace(os.path.join(tmp, f"{name}.json"), os.path.join(out_dir, f"{name}.graph.json"))
            for f in os.listdir(tmp):
                os.remove(os.path.join(tmp, f))
            os.rmdir(tmp)


def fix_tokenizer(gguf, out_dir):
    """Replaces the saved tokenizer.json with gguf_tokenizer's; the slow tokenizer.model goes
    (transformers would otherwise prefer rebuilding from it)."""
    log("model: building the GGUF vocabulary's BPE tokenizer (llama.cpp's rule)")
    gguf_tokenizer(gguf).save(os.path.join(out_dir, "tokenizer.json"))
    spm = os.path.join(out_dir, "tokenizer.model")
    if os.path.exists(spm):
        os.remove(spm)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="model,transcoders,graphs")
    ap.add_argument("--gguf", default=GGUF)
    ap.add_argument("--hf-dir", default=HF_DIR)
    ap.add_argument("--out", default=FIXTURES)
    ap.add_argument("--d-transcoder", type=int, default=64)
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--rate", type=float, default=0.03, help="target fraction of features firing")
    ap.add_argument("--prompts", default="", help="comma-separated names from PROMPTS (default all)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    steps = a.steps.split(",")
    import torch

    torch.set_num_threads(a.threads)
    if "model" in steps:
        make_model(a.gguf, a.hf_dir)
    if "tokenizer" in steps:
        fix_tokenizer(a.gguf, a.hf_dir)
    tc_dir = os.path.join(a.out, "transcoders")
    if "transcoders" in steps:
        make_transcoders(a.hf_dir, tc_dir, a.d_transcoder, a.seed, a.rate)
    if "gaps" in steps:
        add_gaps(a.hf_dir, a.out)
    if "graphs" in steps:
        make_graphs(a.hf_dir, tc_dir, a.out, a.prompts.split(",") if a.prompts else None)


if __name__ == "__main__":
    main()
