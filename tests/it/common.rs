//! Test support: the default model (fetched once into the cache), a tiny random Gemma 3
//! written as a real GGUF, and candle-transformers' full-precision Gemma 3 as the reference.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::gemma3 as reference;
use mechinterp::prelude::*;

/// The repository root (fixtures, data, `src/`): the workspace above `cli/`, the package this
/// test binary belongs to.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ sits inside the repository")
}

/// The default model, loaded once for the whole test binary (fetched into the cache if
/// needed) and shared by every test that uses it.
pub fn gemma() -> &'static HookedTransformer {
    static M: OnceLock<HookedTransformer> = OnceLock::new();
    M.get_or_init(|| HookedTransformer::gemma3_270m().expect("fetching/loading the default model"))
}

/// Shape of the tiny model.
pub struct Tiny {
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_model: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub window: usize,
    pub pattern: usize,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny {
            n_layers: 6,
            n_heads: 4,
            n_kv_heads: 2,
            d_model: 64,
            d_head: 16,
            d_mlp: 128,
            window: 4,
            pattern: 6,
        }
    }
}

/// The tiny vocabulary: control tokens, 256 byte tokens, then a few words.
pub fn tiny_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut toks: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3, 3, 3, 2];
    let mut scores = vec![-1000.0; 4];
    for b in 0..=255u8 {
        toks.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let words = [
        "\u{2581}",
        "a",
        "b",
        "c",
        "t",
        "h",
        "e",
        "\u{2581}t",
        "he",
        "\u{2581}the",
        "\u{2581}a",
        "ab",
        "abc",
        "\u{2581}c",
        "at",
        "\u{2581}cat",
    ];
    for (i, w) in words.iter().enumerate() {
        toks.push(w.to_string());
        types.push(1);
        scores.push(-(i as f32));
    }
    toks.push("\n".into());
    types.push(4);
    scores.push(-1000.0);
    (toks, scores, types)
}

/// Writes a tiny random Gemma 3 as an f32 GGUF (norms include the +1, as the real file's do).
pub fn write_tiny_gguf(dir: &Path, t: &Tiny, seed: u64) -> PathBuf {
    write_tiny_gguf_skipping(dir, t, seed, &[])
}

/// [`write_tiny_gguf`] without the named tensors (to test what loading says).
pub fn write_tiny_gguf_skipping(dir: &Path, t: &Tiny, seed: u64, skip: &[&str]) -> PathBuf {
    let dev = Device::Cpu;
    let (toks, scores, types) = tiny_vocab();
    let vocab = toks.len();
    let mut rng = seed;
    let mut rand = |shape: &[usize], scale: f64, offset: f64| -> Tensor {
        // A small deterministic generator keeps the weights the same run to run.
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
                ((u * 2.0 - 1.0) * scale + offset) as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let (d, nh, kh, m) = (
        t.d_model,
        t.n_heads * t.d_head,
        t.n_kv_heads * t.d_head,
        t.d_mlp,
    );
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("token_embd.weight".into(), rand(&[vocab, d], 0.5, 0.0)),
        ("output_norm.weight".into(), rand(&[d], 0.2, 1.0)),
    ];
    for l in 0..t.n_layers {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        tensors.extend([
            (p("attn_norm"), rand(&[d], 0.2, 1.0)),
            (p("post_attention_norm"), rand(&[d], 0.2, 1.0)),
            (p("ffn_norm"), rand(&[d], 0.2, 1.0)),
            (p("post_ffw_norm"), rand(&[d], 0.2, 1.0)),
            (p("attn_q_norm"), rand(&[t.d_head], 0.2, 1.0)),
            (p("attn_k_norm"), rand(&[t.d_head], 0.2, 1.0)),
            (p("attn_q"), rand(&[nh, d], 0.25, 0.0)),
            (p("attn_k"), rand(&[kh, d], 0.25, 0.0)),
            (p("attn_v"), rand(&[kh, d], 0.25, 0.0)),
            (p("attn_output"), rand(&[d, nh], 0.25, 0.0)),
            (p("ffn_gate"), rand(&[m, d], 0.25, 0.0)),
            (p("ffn_up"), rand(&[m, d], 0.25, 0.0)),
            (p("ffn_down"), rand(&[d, m], 0.25, 0.0)),
        ]);
    }
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F32).unwrap()))
        .collect();
    let a = "gemma3";
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (format!("{a}.context_length"), Value::U32(128)),
        (format!("{a}.embedding_length"), Value::U32(d as u32)),
        (format!("{a}.block_count"), Value::U32(t.n_layers as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(m as u32)),
        (
            format!("{a}.attention.head_count"),
            Value::U32(t.n_heads as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(t.n_kv_heads as u32),
        ),
        (
            format!("{a}.attention.key_length"),
            Value::U32(t.d_head as u32),
        ),
        (
            format!("{a}.attention.value_length"),
            Value::U32(t.d_head as u32),
        ),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        (
            format!("{a}.attention.sliding_window"),
            Value::U32(t.window as u32),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(1_000_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(toks.iter().map(|s| Value::String(s.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.iter().map(|s| Value::F32(*s)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|s| Value::I32(*s)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        // As llama.cpp's converter writes for Gemma (its default for SentencePiece is true).
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
    ];
    assert_eq!(
        t.pattern, 6,
        "the GGUF loader uses Gemma 3's fixed layer pattern"
    );
    let path = dir.join(format!("tiny-gemma3-{seed}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &q_refs).unwrap();
    path
}

/// candle-transformers' full-precision Gemma 3 fed our weights: HF names, norms minus 1
/// (its RMSNorm adds the 1 itself). Our window follows HF (keys at distance < window). candle's
/// prefill mask keeps distance <= window, so for whole-prompt runs it gets window - 1
/// (`Prefill`); its token-by-token decoding keeps `window` keys, so it gets the window as is
/// (`Decode`).
pub fn reference_model(m: &HookedTransformer, mode: RefMode) -> reference::Model {
    let c = m.cfg();
    let w = m.weights();
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let minus1 = |t: &Tensor| (t - 1.0).unwrap();
    map.insert("model.embed_tokens.weight".into(), w.embed.dense().unwrap());
    map.insert("model.norm.weight".into(), minus1(&w.ln_final));
    for (l, b) in w.blocks.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        map.insert(p("input_layernorm.weight"), minus1(&b.ln1));
        map.insert(
            p("post_attention_layernorm.weight"),
            minus1(b.ln1_post.as_ref().unwrap()),
        );
        map.insert(p("pre_feedforward_layernorm.weight"), minus1(&b.ln2));
        map.insert(
            p("post_feedforward_layernorm.weight"),
            minus1(b.ln2_post.as_ref().unwrap()),
        );
        map.insert(
            p("self_attn.q_norm.weight"),
            minus1(b.q_norm.as_ref().unwrap()),
        );
        map.insert(
            p("self_attn.k_norm.weight"),
            minus1(b.k_norm.as_ref().unwrap()),
        );
        map.insert(p("self_attn.q_proj.weight"), b.w_q.dense().unwrap());
        map.insert(p("self_attn.k_proj.weight"), b.w_k.dense().unwrap());
        map.insert(p("self_attn.v_proj.weight"), b.w_v.dense().unwrap());
        map.insert(p("self_attn.o_proj.weight"), b.w_o.dense().unwrap());
        map.insert(p("mlp.gate_proj.weight"), b.w_gate.dense().unwrap());
        map.insert(p("mlp.up_proj.weight"), b.w_up.dense().unwrap());
        map.insert(p("mlp.down_proj.weight"), b.w_down.dense().unwrap());
    }
    let global = c
        .layers
        .iter()
        .position(|l| l.sliding_window.is_none())
        .unwrap_or(c.n_layers);
    let window = c
        .layers
        .iter()
        .find_map(|l| l.sliding_window)
        .unwrap_or(4096);
    let local_theta = c
        .layers
        .iter()
        .find(|l| l.sliding_window.is_some())
        .map_or(10_000.0, |l| l.rope_theta);
    let global_theta = c
        .layers
        .iter()
        .find(|l| l.sliding_window.is_none())
        .map_or(1e6, |l| l.rope_theta);
    let cfg: reference::Config = serde_json::from_value(serde_json::json!({
        "attention_bias": false,
        "head_dim": c.d_head,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": c.d_model,
        "intermediate_size": c.d_mlp,
        "num_attention_heads": c.n_heads,
        "num_hidden_layers": c.n_layers,
        "num_key_value_heads": c.n_kv_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": global_theta,
        "rope_local_base_freq": local_theta,
        "vocab_size": c.d_vocab,
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "query_pre_attn_scalar": c.d_head,
        "sliding_window": match mode { RefMode::Prefill => window - 1, RefMode::Decode => window },
        "sliding_window_pattern": global + 1,
        "max_position_embeddings": 1024,
    }))
    .unwrap();
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    reference::Model::new(false, &cfg, vb).unwrap()
}

/// How the reference will be run (see [`reference_model`]).
#[derive(Clone, Copy)]
pub enum RefMode {
    /// One forward over the whole prompt (candle's rotating cache fails past the window).
    Prefill,
    /// One token at a time through the kv cache.
    Decode,
}

/// The reference's logits at every position, decoding one token at a time.
pub fn reference_decode_all(r: &mut reference::Model, ids: &[u32]) -> Vec<Tensor> {
    r.clear_kv_cache();
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let t = Tensor::new(&[[id]], &Device::Cpu).unwrap();
            r.forward(&t, i)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
        })
        .collect()
}

/// Max |a - b| over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Max |x| over all elements.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Real prompts in several languages and shapes.
pub const PROMPTS: &[&str] = &[
    "EN: This is the largest temple that I've seen. FR: C'est le plus grand temple que j'ai jamais vu.",
    "English: The cat sleeps on the sofa.\nFrench: Le chat dort sur le canapé.",
    "EN: I like green apples. DE: Ich mag grüne Äpfel.",
    "EN: Where is the station? JA: 駅はどこですか。",
    "The Eiffel Tower is in the city of",
];

/// Every text of the shared multilingual tokenizer fixture (`../shared/fixtures/`).
pub fn fixture_texts() -> Vec<String> {
    let path = repo().join("../shared/fixtures/gemma3_270m_tokens.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing fixture {} (the shared/ folder beside the checkout): {e}",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A copy of the GGUF file at `src` in `dir` with every weight matrix (a 2-D `.weight` other
/// than a norm, whose rows are whole blocks) quantised to `dtype` by candle's quantiser; norms,
/// biases and the metadata as they were.
pub fn requantised(src: &Path, dir: &Path, dtype: GgmlDType) -> PathBuf {
    let mut f = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .iter()
        .map(|name| {
            let q = content.tensor(&mut f, name, &Device::Cpu).unwrap();
            let dims = q.shape().dims().to_vec();
            let matrix = dims.len() == 2
                && name.ends_with(".weight")
                && !name.contains("norm")
                && dims[1].is_multiple_of(dtype.block_size());
            if !matrix {
                return (name.to_string(), q);
            }
            let w = q.dequantize(&Device::Cpu).unwrap();
            (name.to_string(), QTensor::quantize(&w, dtype).unwrap())
        })
        .collect();
    let meta: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let stem = src.file_stem().unwrap().to_string_lossy();
    let path = dir.join(format!("{stem}.{dtype:?}.gguf"));
    let mut out = std::fs::File::create(&path).unwrap();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &meta, &refs).unwrap();
    path
}

/// A model loaded from a GGUF file with its weights held as `mode` says.
pub fn load_as(path: &Path, mode: WeightMode) -> HookedTransformer {
    HookedTransformer::from_spec(
        path,
        &LoadOptions {
            weights: mode,
            ..LoadOptions::from_env().unwrap()
        },
    )
    .unwrap()
}
