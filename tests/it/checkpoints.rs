//! Checkpoints as users have them, made by independent tools (`scripts/make_reference_models.py`,
//! run once; see tests/fixtures/README.md): for every architecture a tiny random model with
//! non-default RoPE, loaded from config.json in both transformers dialects and from the GGUF
//! that llama.cpp's own converter wrote, against HF transformers' logits at every position;
//! GGUF tokenizers of both kinds against the HF tokenizers they came from; config.json variants
//! against what transformers 5 resolves them to; and what is refused, by name.

use std::path::PathBuf;

use crate::common::max_abs_diff;
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::{Device, IndexOp, Tensor};
use mechinterp::model::load::hf_config;
use mechinterp::prelude::*;
use serde_json::{json, Value};

const ARCHS: [&str; 5] = ["llama", "qwen2", "qwen3", "gemma2", "gemma3"];
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    crate::common::repo().join("tests/fixtures")
}

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Token ids [1, s] and HF's logits [s, v] under `key`.
fn reference(name: &str, key: &str) -> (Tensor, Tensor) {
    let r =
        candle_core::safetensors::load(model_dir(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let ids = r["ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    (ids, r[key].clone())
}

/// Max |Δlogit| over every position.
fn gap(m: &HookedTransformer, name: &str, key: &str) -> f32 {
    let (ids, want) = reference(name, key);
    let got = m.forward(&ids).unwrap().i(0).unwrap();
    max_abs_diff(&got, &want)
}

/// The fixture folder with `config.v4.json` as its config.json.
fn v4_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(model_dir(name).join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(
        model_dir(name).join("config.v4.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    tmp
}

#[test]
fn hf_checkpoints_match_transformers_in_both_config_dialects() {
    for name in ARCHS {
        let v5 = HookedTransformer::from_local_dir(model_dir(name)).unwrap();
        let d5 = gap(&v5, name, "logits_v5");
        let tmp = v4_copy(name);
        let v4 = HookedTransformer::from_local_dir(tmp.path()).unwrap();
        let d4 = gap(&v4, name, "logits_v4");
        println!("{name}: transformers 5 config {d5:.1e}, transformers 4 config {d4:.1e}");
        assert!(d5 <= TOL && d4 <= TOL, "{name}: {d5} / {d4}");
        assert_eq!(v4.cfg().layers, v5.cfg().layers, "{name}: dialects differ");
    }
}

#[test]
fn the_rope_settings_matter_so_the_test_can_fail() {
    // With the default RoPE (theta 10 000, no scaling) every model's logits move well past the
    // tolerance, so matching above means the dialect was read.
    for name in ARCHS {
        let m = HookedTransformer::from_local_dir(model_dir(name)).unwrap();
        let mut plain = m.cfg().clone();
        for l in plain.layers.iter_mut() {
            l.rope_theta = 10_000.0;
            l.rope_scaling = None;
        }
        let p = HookedTransformer::new(plain, m.weights().clone(), None).unwrap();
        let d = gap(&p, name, "logits_v5");
        println!("{name}: default RoPE moves the logits by {d:.2e}");
        assert!(d > 1e-2, "{name}: {d}");
    }
}

#[test]
fn gguf_files_from_llama_cpp_match_transformers() {
    for name in ARCHS {
        let g = HookedTransformer::from_spec(
            model_dir(name).join("model.gguf"),
            &LoadOptions::from_env().unwrap(),
        )
        .unwrap();
        let h = HookedTransformer::from_local_dir(model_dir(name)).unwrap();
        let d = gap(&g, name, "logits_gguf");
        println!("{name}.gguf: max |Δlogit| {d:.1e}");
        assert!(d <= TOL, "{name}.gguf: {d}");
        let (cg, ch) = (g.cfg(), h.cfg());
        assert_eq!(
            (
                cg.n_heads,
                cg.n_kv_heads,
                cg.d_head,
                cg.qkv_bias,
                cg.tied_embeddings
            ),
            (
                ch.n_heads,
                ch.n_kv_heads,
                ch.d_head,
                ch.qkv_bias,
                ch.tied_embeddings
            ),
            "{name}"
        );
        // The GGUF's own tokenizer gives the HF tokenizer's ids.
        let text = "EN: I like green apples. FR: J'aime les pommes vertes. 123 日本語";
        let a = g.tokenizer().unwrap().encode(text, false).unwrap();
        let b = h.tokenizer().unwrap().encode(text, false).unwrap();
        assert_eq!(a, b, "{name}: tokens");
    }
}

#[test]
fn gguf_tokenizers_match_hf_tokenizers_on_the_multilingual_fixture() {
    let texts: Vec<String> = crate::common::fixture_texts();
    assert!(texts.len() > 5000);
    for kind in ["llama-bpe", "qwen2", "smollm", "gpt2", "spm", "spm-prefix"] {
        let dir = fixtures().join("tokenizers").join(kind);
        let ours = Tokenizer::from_gguf(dir.join("vocab.gguf")).unwrap();
        let hf = Tokenizer::from_file(dir.join("tokenizer.json"), None, None, 0, false).unwrap();
        // Where transformers' conversion of a space-prefixing SentencePiece model disagrees
        // with SentencePiece itself (texts that begin with whitespace), the file means what
        // SentencePiece and llama.cpp do: the generator recorded SentencePiece's ids there.
        let sp: std::collections::HashMap<String, Vec<u32>> =
            match std::fs::read_to_string(dir.join("sentencepiece_ids.json")) {
                Ok(t) => serde_json::from_str(&t).unwrap(),
                Err(_) => Default::default(),
            };
        let mut bad = Vec::new();
        for t in &texts {
            let a = ours.encode(t, false).unwrap();
            let b = match sp.get(t) {
                Some(ids) => ids.clone(),
                None => hf.encode(t, false).unwrap(),
            };
            if a != b {
                bad.push((t.clone(), a, b));
            }
        }
        println!("{kind}: {} of {} texts differ", bad.len(), texts.len());
        for (t, a, b) in bad.iter().take(3) {
            println!("  {t:?}\n    ours {a:?}\n    hf   {b:?}");
        }
        assert!(bad.is_empty(), "{kind}: {} texts differ", bad.len());
        // Decoding round-trips through the byte-level / byte-fallback decoders.
        let s = "J'aime les pommes vertes. 我喜欢苹果。";
        assert_eq!(
            ours.decode(&ours.encode(s, false).unwrap(), true).unwrap(),
            s
        );
    }
}

/// What transformers 5 resolved a config to, for one layer.
fn expect_layer(l: &Value) -> (Option<usize>, f64, Option<(String, f64)>) {
    let rope = &l["rope"];
    let kind = rope["rope_type"].as_str().unwrap_or("default").to_string();
    let scaling = (kind != "default").then(|| (kind, rope["factor"].as_f64().unwrap()));
    (
        l["window"].as_u64().map(|w| w as usize),
        rope["rope_theta"].as_f64().unwrap(),
        scaling,
    )
}

fn ours_layer(l: &mechinterp::model::LayerConfig) -> (Option<usize>, f64, Option<(String, f64)>) {
    use mechinterp::model::RopeScaling as R;
    let scaling = l.rope_scaling.as_ref().map(|s| match s {
        R::Linear { factor } => ("linear".to_string(), *factor),
        R::Llama3 { factor, .. } => ("llama3".to_string(), *factor),
        R::Factors(_) => ("factors".to_string(), 0.0),
    });
    (l.sliding_window, l.rope_theta, scaling)
}

#[test]
fn config_variants_resolve_as_transformers_resolves_them() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("config_cases.json")).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 10);
    for c in &cases {
        let want: Vec<_> = c["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(expect_layer)
            .collect();
        // The dict as given (either dialect) and as transformers 5 writes it back.
        let written = {
            let mut w = c["written_by_transformers_5"].clone();
            w["architectures"] = c["config"]["architectures"].clone();
            w
        };
        for j in [&c["config"], &written] {
            let (_, cfg) = hf_config::read(j).unwrap();
            let got: Vec<_> = cfg.layers.iter().map(ours_layer).collect();
            assert_eq!(got, want, "config {j}");
        }
    }
}

fn refused(j: &Value) -> String {
    match hf_config::read(j) {
        Ok(_) => panic!("accepted {j}"),
        Err(e) => e.to_string(),
    }
}

fn base_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir("llama").join("config.json")).unwrap())
        .unwrap()
}

#[test]
fn config_values_we_cannot_honour_are_refused_by_name() {
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for kind in ["yarn", "dynamic", "longrope"] {
        let mut v5 = base_config();
        v5["rope_parameters"]["rope_type"] = json!(kind);
        cases.push((v5, kind));
        let mut v4 = base_config();
        v4.as_object_mut().unwrap().remove("rope_parameters");
        v4["rope_theta"] = json!(10000.0);
        v4["rope_scaling"] = json!({"type": kind, "factor": 4.0});
        cases.push((v4, kind));
    }
    let mut c = base_config();
    c["hidden_act"] = json!("relu2");
    cases.push((c, "relu2"));
    let mut c = base_config();
    c["attention_chunk_size"] = json!(8192);
    cases.push((c, "attention_chunk_size"));
    let mut c = base_config();
    c["rope_parameters"]["partial_rotary_factor"] = json!(0.5);
    cases.push((c, "partial_rotary_factor"));
    let mut c = base_config();
    c["layer_types"] = json!(["full_attention", "chunked_attention"]);
    cases.push((c, "chunked_attention"));
    let mut c = base_config();
    c["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
    cases.push((c, "rope_scaling"));
    let mut c = base_config();
    c["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 1e4});
    cases.push((c, "factor"));
    let mut g: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("gemma3").join("config.json")).unwrap(),
    )
    .unwrap();
    g["use_bidirectional_attention"] = json!(true);
    cases.push((g.clone(), "use_bidirectional_attention"));
    g["use_bidirectional_attention"] = json!(false);
    g["hidden_activation"] = json!("quick_gelu");
    cases.push((g, "quick_gelu"));
    for (j, key) in &cases {
        let e = refused(j);
        println!("{key}: {e}");
        assert!(e.contains(key), "error for {key} does not name it: {e}");
    }
}

/// A copy of a fixture GGUF with metadata keys changed (`None` removes one).
fn edited_gguf(name: &str, edits: &[(&str, Option<GValue>)]) -> (tempfile::TempDir, PathBuf) {
    let src = model_dir(name).join("model.gguf");
    let mut f = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut meta: Vec<(String, GValue)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in edits {
        meta.retain(|(mk, _)| mk != k);
        if let Some(v) = v {
            meta.push((k.to_string(), v.clone()));
        }
    }
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{name}.gguf"));
    let mut w = std::fs::File::create(&out).unwrap();
    let m: Vec<(&str, &GValue)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &m, &t).unwrap();
    (tmp, out)
}

#[test]
fn gguf_values_we_cannot_honour_are_refused_by_name() {
    let s = |x: &str| Some(GValue::String(x.into()));
    type Edits<'a> = Vec<(&'a str, Option<GValue>)>;
    let cases: Vec<(&str, Edits, &str)> = vec![
        (
            "qwen2",
            vec![("qwen2.rope.scaling.type", s("yarn"))],
            "yarn",
        ),
        ("llama", vec![("general.architecture", s("mamba"))], "mamba"),
        (
            "llama",
            vec![("tokenizer.ggml.pre", s("deepseek-coder"))],
            "deepseek-coder",
        ),
        ("llama", vec![("tokenizer.ggml.model", s("t5"))], "t5"),
        (
            "llama",
            vec![("llama.rope.dimension_count", Some(GValue::U32(4)))],
            "rope.dimension_count",
        ),
        (
            "qwen3",
            vec![("qwen3.expert_count", Some(GValue::U32(8)))],
            "expert_count",
        ),
        (
            "qwen2",
            vec![("qwen2.attention.sliding_window", Some(GValue::U32(4)))],
            "sliding_window",
        ),
        (
            "llama",
            vec![("llama.attention.layer_norm_rms_epsilon", None)],
            "layer_norm_rms_epsilon",
        ),
        // A Gemma 3 size llama.cpp does not know, whose query scaling the file cannot tell.
        (
            "gemma3",
            vec![("gemma3.attention.head_count", Some(GValue::U32(2)))],
            "query scaling",
        ),
    ];
    for (name, edits, key) in cases {
        let (_tmp, path) = edited_gguf(name, &edits);
        let e = match HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()) {
            Ok(_) => panic!("{name} with {key} was accepted"),
            Err(e) => e.to_string(),
        };
        println!("{key}: {e}");
        assert!(e.contains(key), "error for {key} does not name it: {e}");
    }
}

#[test]
fn quantised_gguf_files_match_transformers_on_the_dequantized_weights() {
    // llama.cpp's converter wrote these; the reference is HF's forward on the weights gguf-py
    // dequantizes from the same file.
    for (name, kind) in [("llama", "q8_0"), ("qwen3", "bf16"), ("gemma3", "f16")] {
        let m = HookedTransformer::from_spec(
            model_dir(name).join(format!("model.{kind}.gguf")),
            &LoadOptions::from_env().unwrap(),
        )
        .unwrap();
        let r = candle_core::safetensors::load(
            model_dir(name).join(format!("reference.{kind}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let (ids, _) = reference(name, "logits_v5");
        let d = max_abs_diff(&m.forward(&ids).unwrap().i(0).unwrap(), &r["logits"]);
        println!("{name}.{kind}.gguf: max |Δlogit| {d:.1e}");
        assert!(d <= TOL, "{name} {kind}: {d}");
    }
}

#[test]
fn k_quants_dequantize_as_gguf_py_does() {
    // One tensor of each type in the default model (Q8_0, Q5_0, Q4_K, Q6_K): its first rows
    // as gguf-py dequantizes them, against ours, in f32 and (rounded) in bf16.
    let m = crate::common::gemma();
    let bf = HookedTransformer::from_spec(
        default_model_path(),
        &LoadOptions {
            dtype: candle_core::DType::BF16,
            ..Default::default()
        },
    )
    .unwrap();
    let dir = fixtures().join("quants");
    let mut kinds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let t = candle_core::safetensors::load(entry.unwrap().path(), &Device::Cpu).unwrap();
        for (key, want) in t {
            let name = key.split_once(':').unwrap().1;
            let pick = |m: &HookedTransformer| -> Tensor {
                let w = m.weights();
                let b = &w.blocks[0];
                match name {
                    "token_embd.weight" => w.embed.dense().unwrap(),
                    "blk.0.attn_k.weight" => b.w_k.dense().unwrap(),
                    "blk.0.attn_output.weight" => b.w_o.dense().unwrap(),
                    "blk.0.ffn_down.weight" => b.w_down.dense().unwrap(),
                    other => panic!("no mapping for {other}"),
                }
            };
            let rows = want.dim(0).unwrap();
            let ours = pick(m).narrow(0, 0, rows).unwrap();
            let d = max_abs_diff(&ours, &want);
            let half = pick(&bf)
                .narrow(0, 0, rows)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let dh = max_abs_diff(&half, &want);
            let scale = crate::common::max_abs(&want);
            println!("{key}: f32 {d:.1e}, bf16 {dh:.1e} (values up to {scale:.2})");
            assert!(d <= 1e-6, "{key}: {d}");
            assert!(dh <= scale / 128.0, "{key}: bf16 {dh}");
            kinds += 1;
        }
    }
    assert_eq!(kinds, 4);
}

#[test]
fn byte_level_tokens_read_as_text() {
    // GPT-2's byte alphabet spells a space "Ġ"; token strings show the text instead, and a
    // lone byte of a multi-byte character keeps its raw form.
    let m = HookedTransformer::from_spec(
        model_dir("llama").join("model.gguf"),
        &LoadOptions::from_env().unwrap(),
    )
    .unwrap();
    let strs = m.to_str_tokens("I like green apples").unwrap();
    assert_eq!(strs[0], "<|begin_of_text|>");
    assert_eq!(strs[1..].concat(), "I like green apples", "{strs:?}");
    assert!(strs.iter().all(|s| !s.contains('Ġ')), "{strs:?}");
}
