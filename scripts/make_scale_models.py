#!/usr/bin/env python3
"""Random-weight GGUF files with the exact shapes of Qwen2.5-3B and of a 7B Qwen 2 model
(Qwen2-7B), written as Q4_0 and Q8_0 by the `gguf` Python package (llama.cpp's own writer
and quantiser; it has no K-quant quantiser), to measure mechinterp at the original study's
scale. No trained model above 270M can be downloaded here, and timings and memory depend only
on the shapes. Never run in CI: the four files take about 18 GB and many minutes.

    python3 -m venv ~/.cache/ggufvenv && ~/.cache/ggufvenv/bin/pip install gguf numpy
    ~/.cache/ggufvenv/bin/python scripts/make_scale_models.py [--out DIR] [--only 3b|7b] [--types q4_0,q8_0]

The tokenizer is the tiny Qwen 2 fixture's (tests/fixtures/models/qwen2/model.gguf), so prompts
tokenize into real, if more, tokens; the embedding keeps the real vocabulary size. Each tensor
is generated, quantised into every requested type and written before the next one, so memory
stays at one tensor.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

ROOT = Path(__file__).resolve().parent.parent

# The shapes of the checkpoints' config.json (Qwen/Qwen2.5-3B, Qwen/Qwen2-7B).
SHAPES = {
    "3b": dict(name="qwen2.5-3b-shape", n_layers=36, d_model=2048, d_mlp=11008, n_heads=16,
               n_kv_heads=2, d_head=128, vocab=151936, tied=True),
    "7b": dict(name="qwen2-7b-shape", n_layers=28, d_model=3584, d_mlp=18944, n_heads=28,
               n_kv_heads=4, d_head=128, vocab=152064, tied=False),
    # A few MB, to check the script and the loader quickly.
    "smoke": dict(name="qwen2-smoke-shape", n_layers=2, d_model=256, d_mlp=512, n_heads=4,
                  n_kv_heads=2, d_head=64, vocab=1000, tied=False),
}
TYPES = {"q4_0": Q.Q4_0, "q8_0": Q.Q8_0}


def tensors(s):
    """(name, numpy shape [out, in] or [n], is a quantised matrix) in file order."""
    d, m, nh, kh = s["d_model"], s["d_mlp"], s["n_heads"] * s["d_head"], s["n_kv_heads"] * s["d_head"]
    yield "token_embd.weight", (s["vocab"], d), True
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        yield p + "attn_norm.weight", (d,), False
        yield p + "attn_q.weight", (nh, d), True
        yield p + "attn_q.bias", (nh,), False
        yield p + "attn_k.weight", (kh, d), True
        yield p + "attn_k.bias", (kh,), False
        yield p + "attn_v.weight", (kh, d), True
        yield p + "attn_v.bias", (kh,), False
        yield p + "attn_output.weight", (d, nh), True
        yield p + "ffn_norm.weight", (d,), False
        yield p + "ffn_gate.weight", (m, d), True
        yield p + "ffn_up.weight", (m, d), True
        yield p + "ffn_down.weight", (d, m), True
    yield "output_norm.weight", (d,), False
    if not s["tied"]:
        yield "output.weight", (s["vocab"], d), True


# Language tags the translation prompts use ("EN: … FR: …"), which the scorer needs as single
# tokens; the tiny fixture vocabulary splits them, so merges are added for them.
TAGS = ["EN", "FR", "DE", "ES", "IT", "JA", "ZH", "RU", "PT"]


def tokenizer_fields():
    """The tiny Qwen 2 fixture's tokenizer.* metadata, as (key, value, type, sub-type), with a
    token and a merge for each language tag, bare and after a space."""
    r = gguf.GGUFReader(ROOT / "tests/fixtures/models/qwen2/model.gguf")
    fields = {}
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        fields[key] = [f.contents(), vtype, sub]
    toks = fields["tokenizer.ggml.tokens"][0]
    types = fields["tokenizer.ggml.token_type"][0]
    merges = fields["tokenizer.ggml.merges"][0]
    have = set(toks)

    def add(left, right):
        if left + right in have or left not in have or right not in have:
            return
        toks.append(left + right)
        types.append(1)
        merges.append(f"{left} {right}")
        have.add(left + right)

    for tag in TAGS:
        for prefix in ["", "\u0120"]:
            if prefix:
                add(prefix, tag[0])
            add(prefix + tag[0], tag[1])
    return [(k, v, t, sub) for k, (v, t, sub) in fields.items()]


def write(s, qtypes, out_dir):
    writers = {}
    for tname, qt in qtypes.items():
        path = out_dir / f"{s['name']}-{tname}.gguf"
        w = gguf.GGUFWriter(path, "qwen2")
        w.add_name(f"random weights, {s['name']}")
        w.add_block_count(s["n_layers"])
        w.add_context_length(32768)
        w.add_embedding_length(s["d_model"])
        w.add_feed_forward_length(s["d_mlp"])
        w.add_head_count(s["n_heads"])
        w.add_head_count_kv(s["n_kv_heads"])
        w.add_rope_freq_base(1_000_000.0)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_0 if qt == Q.Q4_0 else gguf.LlamaFileType.MOSTLY_Q8_0))
        for key, val, vtype, sub in tokenizer_fields():
            w.add_key_value(key, val, vtype, sub_type=sub)
        writers[tname] = (path, w, qt)
    specs = list(tensors(s))
    for _, (path, w, qt) in writers.items():
        for name, shape, is_matrix in specs:
            if is_matrix:
                nbytes = shape[0] * (shape[1] // gguf.GGML_QUANT_SIZES[qt][0]) * gguf.GGML_QUANT_SIZES[qt][1]
                byte_shape = (shape[0], nbytes // shape[0])
                w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qt)
            else:
                w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * shape[0])
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for i, (name, shape, is_matrix) in enumerate(specs):
        if is_matrix:
            x = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            x = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        else:
            x = 1.0 + 0.02 * rng.standard_normal(shape, dtype=np.float32)
        for _, (path, w, qt) in writers.items():
            data = gguf.quants.quantize(x, qt) if is_matrix else x
            w.write_tensor_data(data)
        if i % 25 == 0:
            print(f"  {s['name']}: {i + 1}/{len(specs)} tensors", file=sys.stderr, flush=True)
    for _, (path, w, qt) in writers.items():
        w.close()
        print(f"wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB)")


def retokenize(path):
    """Rewrites a file this script made with the current tokenizer metadata, copying the
    tensors as they are (minutes instead of regenerating them)."""
    r = gguf.GGUFReader(path)
    tmp = Path(str(path) + ".tmp")
    w = gguf.GGUFWriter(tmp, "qwen2")
    for key, f in r.fields.items():
        if key.startswith("tokenizer.") or key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    for key, val, vtype, sub in tokenizer_fields():
        w.add_key_value(key, val, vtype, sub_type=sub)
    for t in r.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    w.write_header_to_file(tmp)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(t.data)
    w.close()
    os.replace(tmp, path)
    print(f"rewrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/mechinterp/scale"))
    ap.add_argument("--only", choices=sorted(SHAPES), action="append")
    ap.add_argument("--types", default="q4_0,q8_0")
    ap.add_argument("--retokenize", nargs="+", metavar="FILE",
                    help="rewrite files made by an earlier version with the current tokenizer")
    a = ap.parse_args()
    if a.retokenize:
        for f in a.retokenize:
            retokenize(Path(f))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    qtypes = {t: TYPES[t] for t in a.types.split(",")}
    for key in a.only or ["3b", "7b"]:
        write(SHAPES[key], qtypes, out)


if __name__ == "__main__":
    main()
