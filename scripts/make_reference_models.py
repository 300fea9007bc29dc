#!/usr/bin/env python3
"""Reference fixtures for the loaders, made once with independent tools and committed, so that CI
needs no torch (see tests/fixtures/README.md).

For every supported architecture (llama, qwen2, qwen3, gemma2, gemma3) it writes a tiny random
checkpoint whose RoPE is not the default (other thetas, llama3 / linear scaling, per-layer-type
parameters), with:
  - config.json as transformers 5 writes it (`rope_parameters`, `layer_types`),
  - config.v4.json as transformers 4 writes it (top-level `rope_theta` / `rope_scaling`),
  - model.safetensors and a tokenizer trained here on the project's own sentences,
  - model.gguf, written by llama.cpp's own convert_hf_to_gguf.py (f32),
  - reference.safetensors: the token ids and HF transformers' logits at every position, once
    with each config dialect (transformers 5 and transformers 4 each reading its own file).
It also writes vocabulary-only GGUFs for each tokenizer kind (tokenizers/*.gguf beside the HF
tokenizer.json they came from) and config_cases.json: config dicts in both dialects with what
transformers 5 resolves them to, layer by layer.

Usage (a venv with torch, transformers 5, tokenizers, sentencepiece, safetensors, numpy):
    python scripts/make_reference_models.py --llama-cpp DIR --tf4 DIR [--out tests/fixtures]
DIR for --llama-cpp holds convert_hf_to_gguf.py, conversion/ and gguf-py/ (the llama.cpp tree
vendored in the llama-cpp-python sdist on PyPI); --tf4 is a folder with transformers 4.57 installed
by `pip install --target DIR "transformers==4.57.*" "huggingface_hub<1.0" "tokenizers<0.23" --no-deps`.
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
IDS = [1, 17, 42, 99, 250, 7, 7, 180, 3, 64, 299, 12, 401, 88, 5, 300, 150, 9, 77, 256]

# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp), as HF `Split` pre-tokenizers.
LLAMA3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


def sentences():
    out = []
    for f in sorted((ROOT / "data").glob("*.tsv")):
        for line in f.read_text(encoding="utf-8").splitlines()[1:]:
            out.extend(p for p in line.split("\t") if p.strip())
    return out


def train_bpe(pre: str, out: Path, vocab_size: int = 512):
    """A byte-level BPE like Llama 3's / Qwen 2's / SmolLM's / GPT-2's, trained on our sentences."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre == "llama-bpe":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"), byte_level])
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"), byte_level])
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise ValueError(pre)
    tok.decoder = decoders.ByteLevel()
    # Qwen's vocabularies have no BOS and pad with their end-of-text token.
    qwen = pre == "qwen2"
    specials = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if qwen
                else ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(sentences(), trainer)
    if not qwen:
        # As Llama 3's tokenizer.json does: its post-processor puts BOS first.
        from tokenizers import processors
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    if qwen:
        cfg = {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "add_bos_token": False, "tokenizer_class": "Qwen2Tokenizer"}
    else:
        cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
               "pad_token": "<|pad|>", "add_bos_token": True,
               "tokenizer_class": "PreTrainedTokenizerFast"}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    return tok.get_vocab_size()


def train_spm(out: Path, vocab_size: int = 1024, prefix: bool = False):
    """A SentencePiece BPE with byte fallback and no dummy prefix, like Gemma's; with `prefix`,
    one that prepends a space, like Llama 2's."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(sentences()))
        corpus = f.name
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=str(out / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, add_dummy_prefix=prefix,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        character_coverage=0.98, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["\n", "\n\n"], minloglevel=2, num_threads=1)
    os.unlink(corpus)
    (out / "tokenizer.vocab").unlink()
    from transformers import AutoTokenizer

    # transformers converts the SentencePiece model into its own tokenizer.json, as for Gemma.
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer" if prefix else "GemmaTokenizer",
        "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True}))
    t = AutoTokenizer.from_pretrained(str(out))
    t.save_pretrained(str(out))
    return len(t)


def sentencepiece_disagreements(d: Path):
    """Where transformers' conversion of a space-prefixing SentencePiece model gives other ids
    than SentencePiece itself (texts that begin with whitespace or an added token: its
    Metaspace does not prepend there), SentencePiece's ids, which llama.cpp follows."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    fixture = ROOT.parent / "shared" / "fixtures" / "gemma3_270m_tokens.jsonl"
    texts = [json.loads(line)["text"] for line in fixture.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    hf = AutoTokenizer.from_pretrained(str(d))
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    out = {}
    for t in texts:
        a, b = hf(t, add_special_tokens=False).input_ids, sp.encode(t)
        if a != b:
            out[t] = b
    (d / "sentencepiece_ids.json").write_text(json.dumps(out, ensure_ascii=False, indent=1))
    print(f"spm-prefix: SentencePiece and transformers differ on {len(out)} of {len(texts)} texts")


# Each case: the transformers 5 config class and its kwargs (transformers 5 dialect), and the same
# model in the transformers 4 dialect.
COMMON = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rms_norm_eps=1e-6)


def cases(vocab):
    return {
        "llama": dict(
            cls="LlamaConfig", tok="llama-bpe", vocab=vocab["llama-bpe"],
            v5=dict(num_hidden_layers=2, hidden_act="silu", tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="llama3", rope_theta=50000.0, factor=8.0,
                                         low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=16)),
            v4=dict(num_hidden_layers=2, hidden_act="silu", tie_word_embeddings=False,
                    rope_theta=50000.0,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=16))),
        "qwen2": dict(
            cls="Qwen2Config", tok="qwen2", vocab=vocab["qwen2"],
            v5=dict(num_hidden_layers=2, tie_word_embeddings=True, use_sliding_window=False,
                    sliding_window=4, max_window_layers=1,
                    rope_parameters=dict(rope_type="linear", rope_theta=20000.0, factor=4.0)),
            v4=dict(num_hidden_layers=2, tie_word_embeddings=True, use_sliding_window=False,
                    sliding_window=4, max_window_layers=1, rope_theta=20000.0,
                    rope_scaling=dict(type="linear", factor=4.0))),
        "qwen3": dict(
            cls="Qwen3Config", tok="qwen2", vocab=vocab["qwen2"],
            v5=dict(num_hidden_layers=2, head_dim=8, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=500000.0)),
            v4=dict(num_hidden_layers=2, head_dim=8, tie_word_embeddings=False,
                    rope_theta=500000.0)),
        "gemma2": dict(
            cls="Gemma2Config", tok="spm", vocab=vocab["spm"],
            v5=dict(num_hidden_layers=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                    hidden_activation="gelu_pytorch_tanh",
                    rope_parameters=dict(rope_type="default", rope_theta=30000.0)),
            v4=dict(num_hidden_layers=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                    hidden_activation="gelu_pytorch_tanh", rope_theta=30000.0)),
        "gemma3": dict(
            cls="Gemma3TextConfig", tok="spm", vocab=vocab["spm"],
            v5=dict(num_hidden_layers=6, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                    rope_parameters=dict(
                        full_attention=dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
                        sliding_attention=dict(rope_type="default", rope_theta=10000.0))),
            v4=dict(num_hidden_layers=6, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                    sliding_window_pattern=6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                    rope_scaling=dict(rope_type="linear", factor=8.0))),
    }


ARCH = {"LlamaConfig": "LlamaForCausalLM", "Qwen2Config": "Qwen2ForCausalLM",
        "Qwen3Config": "Qwen3ForCausalLM", "Gemma2Config": "Gemma2ForCausalLM",
        "Gemma3TextConfig": "Gemma3ForCausalLM"}


def randomize(model, gemma: bool, seed: int):
    """Weights well away from HF's init (std 0.02), so that every part of the math shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            u = torch.rand(p.shape, generator=g) * 2 - 1
            if name.endswith("norm.weight"):
                p.copy_(u * 0.2 + (0.0 if gemma else 1.0))
            elif name.endswith("bias"):
                p.copy_(u * 0.5)
            elif "embed" in name or "lm_head" in name:
                p.copy_(u * 0.5)
            else:
                p.copy_(u * 0.3)


def hf_logits(model_dir: Path, ids, rope_theta=None):
    import transformers
    kw = {}
    if rope_theta is not None:
        cfg = transformers.AutoConfig.from_pretrained(str(model_dir))
        cfg.rope_parameters["rope_theta"] = rope_theta
        kw["config"] = cfg
    # Eager attention: transformers 4's default sdpa path drops Gemma 2's attention soft-cap.
    m = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                          attn_implementation="eager", **kw)
    m.eval()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float()


TF4_SNIPPET = r"""
import json, sys, torch, transformers
from safetensors.torch import save_file
cls, kw, arch, src, out, ids = json.loads(sys.argv[1])
assert transformers.__version__.startswith("4."), transformers.__version__
cfg = getattr(transformers, cls)(**kw)
cfg.architectures = [arch]
cfg.save_pretrained(out)
m = transformers.AutoModelForCausalLM.from_pretrained(src, config=cfg, torch_dtype=torch.float32,
                                              attn_implementation="eager")
m.eval()
with torch.no_grad():
    logits = m(torch.tensor([ids])).logits[0].float().contiguous()
save_file({"logits": logits}, out + "/logits_v4.safetensors")
"""


def convert(llama_cpp: Path, model_dir: Path, outfile: Path, pre: str, vocab_only=False,
            outtype="f32"):
    """Runs llama.cpp's converter; our tokenizers are new, so the pre-tokenizer name its hash table
    cannot know is set by hand (as the issue asks)."""
    code = (
        "import sys, runpy\n"
        f"sys.path.insert(0, {str(llama_cpp)!r})\n"
        f"sys.path.insert(1, {str(llama_cpp / 'gguf-py')!r})\n"
        "import conversion.base as b\n"
        f"b.TextModel.get_vocab_base_pre = lambda self, tok: {pre!r}\n"
        f"sys.argv = ['convert_hf_to_gguf.py', {str(model_dir)!r}, '--outfile', {str(outfile)!r},"
        f" '--outtype', {outtype!r}] + ({['--vocab-only'] if vocab_only else []!r})\n"
        f"runpy.run_path({str(llama_cpp / 'convert_hf_to_gguf.py')!r}, run_name='__main__')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "NO_LOCAL_GGUF": ""},
                   stdout=subprocess.DEVNULL)


# Quantised GGUFs that llama.cpp's converter writes, one type per model (llama's q/k rows are also
# permuted, so the q8_0 one checks both at once).
QUANTISED = {"llama": "q8_0", "qwen3": "bf16", "gemma3": "f16"}
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
    "output_norm.weight": "model.norm.weight",
}
BLOCK = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def dequantized_reference(model_dir: Path, gguf_path: Path, name: str, ids):
    """HF's forward on the weights gguf-py dequantizes from a GGUF (the reference for a quantised
    file): each tensor mapped back to its HF name, llama's q/k permutation and Gemma's +1 undone."""
    import gguf
    import numpy as np
    import transformers

    gemma = name.startswith("gemma")
    cfg = transformers.AutoConfig.from_pretrained(str(model_dir))
    m = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                          attn_implementation="eager")
    m.eval()
    params = dict(m.named_parameters())
    r = gguf.GGUFReader(str(gguf_path))
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        w = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        w = w.reshape([int(x) for x in reversed(t.shape)]) if w.ndim == 1 and len(t.shape) > 1 else w
        if t.name in GGUF_TO_HF:
            hf = GGUF_TO_HF[t.name]
        else:
            _, layer, kind, _ = t.name.split(".")
            gemma_norms = {"post_attention_norm": "post_attention_layernorm",
                           "ffn_norm": "pre_feedforward_layernorm" if gemma else "post_attention_layernorm",
                           "post_ffw_norm": "post_feedforward_layernorm"}
            base = BLOCK.get(kind) or gemma_norms[kind]
            hf = f"model.layers.{layer}.{base}.{t.name.split('.')[-1]}"
        if name == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            heads = cfg.num_attention_heads if ".q_proj." in hf else cfg.num_key_value_heads
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        if gemma and hf.endswith("norm.weight"):
            w = w - 1.0
        p = params[hf]
        assert tuple(w.shape) == tuple(p.shape), (t.name, w.shape, p.shape)
        with torch.no_grad():
            p.copy_(w)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().contiguous()


def quant_fixture(default_gguf: Path, out: Path):
    """The first rows of one tensor of each type in the default model, dequantized by gguf-py."""
    import gguf
    import numpy as np
    from safetensors.torch import save_file

    r = gguf.GGUFReader(str(default_gguf))
    seen, rows = {}, 8
    for t in r.tensors:
        kind = t.tensor_type.name
        if kind in seen or kind == "F32":
            continue
        # Dequantize whole rows: each row is an integer number of blocks.
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        row_bytes = int(t.shape[0]) // block * size
        data = np.asarray(t.data).reshape(-1)[: rows * row_bytes]
        w = gguf.quants.dequantize(data.reshape(rows, row_bytes), t.tensor_type)
        seen[kind] = t.name
        save_name = f"{kind}:{t.name}"
        out.mkdir(parents=True, exist_ok=True)
        save_file({save_name: torch.from_numpy(np.array(w, dtype=np.float32)).contiguous()},
                  str(out / f"{kind.lower()}.safetensors"))
    print("dequantized by gguf-py:", seen)


def config_cases():
    """Config dicts in both dialects and what transformers 5 resolves them to, layer by layer."""
    import transformers

    cs = [
        ("LlamaConfig", dict(num_hidden_layers=2, rope_theta=123456.0)),
        ("LlamaConfig", dict(num_hidden_layers=2, rope_parameters=dict(rope_type="default", rope_theta=7777.0))),
        ("LlamaConfig", dict(num_hidden_layers=2, rope_theta=5e5, rope_scaling=dict(type="linear", factor=2.0))),
        ("LlamaConfig", dict(num_hidden_layers=2, rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192), rope_theta=500000.0)),
        ("LlamaConfig", dict(num_hidden_layers=2)),
        ("Qwen2Config", dict(num_hidden_layers=4, use_sliding_window=True, sliding_window=16, max_window_layers=2)),
        ("Qwen2Config", dict(num_hidden_layers=4, use_sliding_window=False, sliding_window=16, max_window_layers=2)),
        ("Qwen2Config", dict(num_hidden_layers=4, rope_theta=1e6)),
        ("Qwen3Config", dict(num_hidden_layers=4, use_sliding_window=True, sliding_window=8, max_window_layers=1, rope_theta=1e6)),
        ("Gemma2Config", dict(num_hidden_layers=4, sliding_window=16)),
        ("Gemma2Config", dict(num_hidden_layers=4, sliding_window=16, rope_theta=20000.0)),
        ("Gemma3TextConfig", dict(num_hidden_layers=12, sliding_window=32)),
        ("Gemma3TextConfig", dict(num_hidden_layers=8, sliding_window=32, sliding_window_pattern=4, rope_theta=2e6, rope_local_base_freq=20000.0, rope_scaling=dict(rope_type="linear", factor=8.0))),
        ("Gemma3TextConfig", dict(num_hidden_layers=6, sliding_window=32, rope_parameters=dict(full_attention=dict(rope_type="linear", factor=4.0, rope_theta=1e6), sliding_attention=dict(rope_type="default", rope_theta=1e4)))),
        ("Gemma3TextConfig", dict(num_hidden_layers=4, sliding_window=32, layer_types=["sliding_attention", "full_attention", "full_attention", "sliding_attention"])),
    ]
    out = []
    for cls, kw in cs:
        full = {**COMMON, **kw}
        # transformers edits the dicts it is given; keep the input as written.
        cfg = getattr(transformers, cls)(**copy.deepcopy(full))
        rp = cfg.rope_parameters
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
        layers = []
        for t in types:
            p = rp.get(t, rp) if isinstance(rp, dict) and t in rp else rp
            layers.append(dict(sliding=t == "sliding_attention",
                               window=cfg.sliding_window if t == "sliding_attention" else None,
                               rope=p))
        js = dict(full, architectures=[ARCH[cls]], vocab_size=300)
        written = json.loads(cfg.to_json_string())
        out.append(dict(config=js, written_by_transformers_5=written, layers=layers))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True)
    ap.add_argument("--tf4", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    ap.add_argument("--default-gguf", type=Path,
                    default=Path.home() / ".cache/mechinterp/gemma-3-270m-q4_k_m.gguf")
    a = ap.parse_args()
    import transformers
    from safetensors.torch import load_file, save_file

    assert transformers.__version__.startswith("5."), transformers.__version__
    out = a.out
    toks = out / "tokenizers"
    if toks.exists():
        shutil.rmtree(toks)
    vocab = {}
    for pre in ["llama-bpe", "qwen2", "smollm", "gpt2"]:
        vocab[pre] = train_bpe(pre, toks / pre)
    vocab["spm"] = train_spm(toks / "spm")
    vocab["spm-prefix"] = train_spm(toks / "spm-prefix", prefix=True)
    sentencepiece_disagreements(toks / "spm-prefix")

    # Vocabulary-only GGUFs: every tokenizer kind, through llama.cpp's converter.
    with tempfile.TemporaryDirectory() as tmp:
        for pre in ["llama-bpe", "qwen2", "smollm", "gpt2", "spm", "spm-prefix"]:
            d = Path(tmp) / pre
            shutil.copytree(toks / pre, d)
            # Gemma 3's converter reads tokenizer.model and says add_space_prefix = false;
            # Llama's reads it too and leaves llama.cpp's default (true).
            arch = "Gemma3ForCausalLM" if pre == "spm" else "LlamaForCausalLM"
            cfg = dict(COMMON, architectures=[arch], num_hidden_layers=1, vocab_size=vocab[pre],
                       head_dim=8, sliding_window=4, bos_token_id=2 if "spm" in pre else 0)
            (d / "config.json").write_text(json.dumps(cfg))
            convert(a.llama_cpp, d, toks / pre / "vocab.gguf", pre if "spm" not in pre else "default",
                    vocab_only=True)

    for seed, (name, c) in enumerate(cases(vocab).items()):
        d = out / "models" / name
        if d.exists():
            shutil.rmtree(d)
        tokdir = toks / c["tok"]
        tk = json.loads((tokdir / "tokenizer_config.json").read_text())
        tok = json.loads((tokdir / "tokenizer.json").read_text())
        special = {t["content"]: t["id"] for t in tok["added_tokens"]}
        pick = lambda *names: next((special[n] for n in names if n in special), None)
        ids_ = dict(bos_token_id=pick("<|begin_of_text|>", "<bos>"),
                    eos_token_id=pick("<|end_of_text|>", "<eos>", "<|endoftext|>"),
                    pad_token_id=pick("<|pad|>", "<pad>", "<|endoftext|>"))
        cls = getattr(transformers, c["cls"])
        cfg = cls(**COMMON, vocab_size=c["vocab"], **ids_, **c["v5"])
        cfg.architectures = [ARCH[c["cls"]]]
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        randomize(model, name.startswith("gemma"), 1000 + seed)
        model.save_pretrained(str(d))
        for f in tokdir.iterdir():
            if f.suffix != ".gguf":
                shutil.copy(f, d / f.name)
        ids = [i % c["vocab"] for i in IDS]
        v5 = hf_logits(d, ids)
        # transformers 4 writes its own config.json and computes its own logits.
        with tempfile.TemporaryDirectory() as tmp:
            arg = json.dumps([c["cls"], {**COMMON, "vocab_size": c["vocab"], **ids_, **c["v4"]},
                              ARCH[c["cls"]], str(d), tmp, ids])
            env = {**os.environ, "PYTHONPATH": str(a.tf4)}
            subprocess.run([sys.executable, "-c", TF4_SNIPPET, arg], check=True, env=env)
            v4_cfg = json.loads((Path(tmp) / "config.json").read_text())
            assert "rope_parameters" not in v4_cfg, "transformers 4 wrote rope_parameters"
            (d / "config.v4.json").write_text(json.dumps(v4_cfg, indent=2, sort_keys=True))
            v4 = load_file(str(Path(tmp) / "logits_v4.safetensors"))["logits"]
        gap = (v4 - v5).abs().max().item()
        assert gap < 1e-4, f"{name}: transformers 4 and 5 disagree by {gap}"
        # llama.cpp's converter writes no RoPE base for Gemma 2, so the file means llama.cpp's
        # default 10 000: the GGUF's reference is HF's forward with that base.
        gguf_ref = hf_logits(d, ids, rope_theta=10000.0) if name == "gemma2" else v5
        save_file({"ids": torch.tensor(ids, dtype=torch.int64), "logits_v5": v5.contiguous(),
                   "logits_v4": v4.contiguous(), "logits_gguf": gguf_ref.clone()},
                  str(d / "reference.safetensors"))
        pre = c["tok"] if c["tok"] != "spm" else "default"
        convert(a.llama_cpp, d, d / "model.gguf", pre)
        if name in QUANTISED:
            qt = QUANTISED[name]
            qpath = d / f"model.{qt}.gguf"
            convert(a.llama_cpp, d, qpath, pre, outtype=qt)
            ref = dequantized_reference(d, qpath, name, ids)
            save_file({"logits": ref}, str(d / f"reference.{qt}.safetensors"))
            print(f"{name} {qt}: dequantized weights move HF's logits by {(ref - v5).abs().max():.1e}")
        for extra in ["generation_config.json", "tokenizer.model"]:
            (d / extra).unlink(missing_ok=True)
        print(f"{name}: vocab {c['vocab']}, |logits| max {v5.abs().max():.2f}, v4 vs v5 {gap:.1e}")

    (out / "config_cases.json").write_text(json.dumps(config_cases(), indent=1))
    quant_fixture(a.default_gguf, out / "quants")


if __name__ == "__main__":
    main()
