//! Hub models without network: tiny random checkpoints of every supported architecture,
//! written into a temporary hf-hub cache (`models--org--name/snapshots/<rev>/…` + `refs/main`),
//! loaded offline through the real hf-hub code path (the cache folder and offline mode passed in
//! [`LoadOptions`], not through `HF_HOME` / `HF_HUB_OFFLINE`: these tests share their process
//! with the others), and compared with
//! candle-transformers' own implementation of each architecture (≤ 1e-4 on the logits).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{max_abs, max_abs_diff};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as refm;
use mechinterp::prelude::*;
use serde_json::{json, Value};

const VOCAB: usize = 300;
const REV: &str = "0123456789abcdef0123456789abcdef01234567";
/// 12 tokens, longer than the tiny sliding windows.
const IDS: [u32; 12] = [1, 17, 42, 99, 250, 7, 7, 180, 3, 64, 299, 12];

/// The HF_HOME of these tests, made once (its `hub/` folder is the hub cache they load from).
fn hf_home() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Load options reading only the test hub cache, offline (as `HF_HOME=hf_home()
/// HF_HUB_OFFLINE=1` would, without changing the process's environment).
fn hub_opts() -> LoadOptions {
    LoadOptions {
        cache_dir: Some(hf_home().join("hub")),
        offline: Some(true),
        ..LoadOptions::from_env().unwrap()
    }
}

/// Loads `repo` from the test hub cache.
fn from_hub(repo: &str) -> mechinterp::Result<HookedTransformer> {
    HookedTransformer::from_spec(repo, &hub_opts())
}

/// Deterministic uniform(-scale, scale) + offset tensors.
struct Rng(u64);
impl Rng {
    fn t(&mut self, shape: &[usize], scale: f64, offset: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
                ((u * 2.0 - 1.0) * scale + offset) as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// Random weights with HF names for a config (norm weights as HF stores them: Gemma's
/// around 0, since the model adds 1; the others around 1).
fn random_weights(c: &Value, seed: u64) -> HashMap<String, Tensor> {
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let (d, n, m) = (
        u("hidden_size"),
        u("num_attention_heads"),
        u("intermediate_size"),
    );
    let k = c
        .get("num_key_value_heads")
        .and_then(|v| v.as_u64())
        .map_or(n, |x| x as usize);
    let h = c
        .get("head_dim")
        .and_then(|v| v.as_u64())
        .map_or(d / n, |x| x as usize);
    let arch = c["architectures"][0].as_str().unwrap();
    let gemma = arch.starts_with("Gemma");
    let norm_offset = if gemma { 0.0 } else { 1.0 };
    let mut r = Rng(seed);
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".to_string(),
        r.t(&[VOCAB, d], 0.5, 0.0),
    );
    w.insert("model.norm.weight".to_string(), r.t(&[d], 0.2, norm_offset));
    if c["tie_word_embeddings"] == json!(false) {
        w.insert("lm_head.weight".to_string(), r.t(&[VOCAB, d], 0.5, 0.0));
    }
    for l in 0..u("num_hidden_layers") {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let mut norms = vec!["input_layernorm", "post_attention_layernorm"];
        if gemma {
            norms.extend(["pre_feedforward_layernorm", "post_feedforward_layernorm"]);
        }
        for nm in norms {
            w.insert(p(&format!("{nm}.weight")), r.t(&[d], 0.2, norm_offset));
        }
        if arch == "Gemma3ForCausalLM" || arch == "Qwen3ForCausalLM" {
            w.insert(p("self_attn.q_norm.weight"), r.t(&[h], 0.2, norm_offset));
            w.insert(p("self_attn.k_norm.weight"), r.t(&[h], 0.2, norm_offset));
        }
        w.insert(p("self_attn.q_proj.weight"), r.t(&[n * h, d], 0.3, 0.0));
        w.insert(p("self_attn.k_proj.weight"), r.t(&[k * h, d], 0.3, 0.0));
        w.insert(p("self_attn.v_proj.weight"), r.t(&[k * h, d], 0.3, 0.0));
        w.insert(p("self_attn.o_proj.weight"), r.t(&[d, n * h], 0.3, 0.0));
        if arch == "Qwen2ForCausalLM" {
            w.insert(p("self_attn.q_proj.bias"), r.t(&[n * h], 0.5, 0.0));
            w.insert(p("self_attn.k_proj.bias"), r.t(&[k * h], 0.5, 0.0));
            w.insert(p("self_attn.v_proj.bias"), r.t(&[k * h], 0.5, 0.0));
        }
        w.insert(p("mlp.gate_proj.weight"), r.t(&[m, d], 0.3, 0.0));
        w.insert(p("mlp.up_proj.weight"), r.t(&[m, d], 0.3, 0.0));
        w.insert(p("mlp.down_proj.weight"), r.t(&[d, m], 0.3, 0.0));
    }
    w
}

/// A word-level tokenizer.json over "w2".."w299" (ids = numbers), `<unk>` 0 and `<bos>` 1.
fn write_tokenizer(path: &Path) {
    let mut vocab = serde_json::Map::new();
    for i in 2..VOCAB {
        vocab.insert(format!("w{i}"), json!(i));
    }
    vocab.insert("<unk>".into(), json!(0));
    vocab.insert("<bos>".into(), json!(1));
    let t = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(path, t.to_string()).unwrap();
}

/// Writes a checkpoint (config, tokenizer, weights; `shards` > 1 splits them with an index)
/// into `dir`.
fn write_checkpoint(dir: &Path, config: &Value, weights: &HashMap<String, Tensor>, shards: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    write_tokenizer(&dir.join("tokenizer.json"));
    if shards <= 1 {
        candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
        return;
    }
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for s in 0..shards {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let part: HashMap<String, Tensor> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, n)| ((*n).clone(), weights[*n].clone()))
            .collect();
        for n in part.keys() {
            map.insert(n.clone(), Value::String(file.clone()));
        }
        candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Writes a checkpoint into the test hub cache as `org/name` and returns the snapshot folder.
fn publish(
    repo: &str,
    config: &Value,
    weights: &HashMap<String, Tensor>,
    shards: usize,
) -> PathBuf {
    let root = hf_home()
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(REV);
    write_checkpoint(&snap, config, weights, shards);
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs").join("main"), REV).unwrap();
    snap
}

fn ids() -> Tensor {
    Tensor::new(&IDS, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// The last row of a reference's logits, whatever its leading dims.
fn last_row(t: Tensor) -> Tensor {
    let v = t.dims()[t.rank() - 1];
    let t = t.reshape(((), v)).unwrap();
    let n = t.dim(0).unwrap();
    t.i(n - 1).unwrap()
}

fn vb(w: &HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu)
}

/// Loads from the hub cache and checks last-position logits against `reference`, plus the
/// hook points every architecture shares.
fn check(repo: &str, reference: Tensor, tol: f32) -> HookedTransformer {
    let m = from_hub(repo).unwrap();
    let logits = m.forward(&ids()).unwrap();
    let ours = logits.i((0, IDS.len() - 1)).unwrap();
    let d = max_abs_diff(&ours, &reference);
    println!(
        "{repo}: max |Δlogit| = {d:.2e} (logit scale {:.2})",
        max_abs(&reference)
    );
    assert!(d <= tol, "{repo}: max |Δlogit| {d}");
    let (_, cache) = m.run_with_cache(&ids()).unwrap();
    assert_eq!(cache.keys(), m.hook_names().as_slice());
    let c = m.cfg();
    let s = IDS.len();
    assert_eq!(
        cache.act("k", 0).unwrap().dims(),
        &[1, s, c.n_kv_heads, c.d_head]
    );
    assert_eq!(
        cache.act("q", 0).unwrap().dims(),
        &[1, s, c.n_heads, c.d_head]
    );
    assert_eq!(
        cache.act("pattern", 0).unwrap().dims(),
        &[1, c.n_heads, s, s]
    );
    assert_eq!(
        cache.act("result", 0).unwrap().dims(),
        &[1, s, c.n_heads, c.d_model]
    );
    m
}

fn base(arch: &str, extra: Value) -> Value {
    let mut c = json!({
        "architectures": [arch],
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn qwen2_with_biases_and_tied_embeddings() {
    // candle-transformers' qwen2 applies `sliding_window` even when use_sliding_window is
    // false (HF does not), so the window is set beyond the prompt here.
    let c = base(
        "Qwen2ForCausalLM",
        json!({
            "hidden_act": "silu", "tie_word_embeddings": true, "rope_theta": 1000000.0,
            "sliding_window": 32768, "max_window_layers": 2, "use_sliding_window": false,
        }),
    );
    let w = random_weights(&c, 11);
    publish("tiny/qwen2", &c, &w, 1);
    let cfg: refm::qwen2::Config = serde_json::from_value(c.clone()).unwrap();
    let mut r = refm::qwen2::ModelForCausalLM::new(&cfg, vb(&w)).unwrap();
    let reference = last_row(r.forward(&ids(), 0).unwrap());
    let m = check("tiny/qwen2", reference, 1e-4);
    assert!(m.cfg().qkv_bias && m.cfg().tied_embeddings && m.weights().unembed.is_none());
    assert!(
        m.cfg().layers.iter().all(|l| l.sliding_window.is_none()),
        "use_sliding_window is false"
    );
}

#[test]
fn llama3_with_rope_scaling_untied_and_sharded() {
    let c = base(
        "LlamaForCausalLM",
        json!({
            "num_attention_heads": 8, "hidden_act": "silu", "tie_word_embeddings": false,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        }),
    );
    let w = random_weights(&c, 12);
    publish("tiny/llama", &c, &w, 3);
    let lc: refm::llama::LlamaConfig = serde_json::from_value(c.clone()).unwrap();
    let cfg = lc.into_config(false);
    let r = refm::llama::Llama::load(vb(&w), &cfg).unwrap();
    let mut cache = refm::llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    let reference = last_row(r.forward(&ids(), 0, &mut cache).unwrap());
    let m = check("tiny/llama", reference.clone(), 1e-4);
    assert!(m.weights().unembed.is_some());
    // The scaling matters: without it the logits move.
    let mut plain = m.cfg().clone();
    plain.layers.iter_mut().for_each(|l| l.rope_scaling = None);
    let unscaled = HookedTransformer::new(plain, m.weights().clone(), None).unwrap();
    let d = max_abs_diff(
        &unscaled
            .forward(&ids())
            .unwrap()
            .i((0, IDS.len() - 1))
            .unwrap(),
        &reference,
    );
    assert!(d > 1e-3, "RoPE scaling had no effect ({d})");
}

#[test]
fn qwen3_with_qk_norm_and_odd_head_dim() {
    let c = base(
        "Qwen3ForCausalLM",
        json!({
            "head_dim": 24, "hidden_act": "silu", "tie_word_embeddings": false, "attention_bias": false,
            "sliding_window": null, "max_window_layers": 4, "use_sliding_window": false,
        }),
    );
    let w = random_weights(&c, 13);
    publish("tiny/qwen3", &c, &w, 1);
    let cfg: refm::qwen3::Config = serde_json::from_value(c.clone()).unwrap();
    let mut r = refm::qwen3::ModelForCausalLM::new(&cfg, vb(&w)).unwrap();
    let reference = last_row(r.forward(&ids(), 0).unwrap());
    let m = check("tiny/qwen3", reference, 1e-4);
    assert_eq!((m.cfg().d_head, m.cfg().qk_norm), (24, true));
}

#[test]
fn gemma2_with_softcaps_and_query_pre_attn_scalar() {
    // Window 16 > the prompt: candle-transformers' gemma2 puts the window on every layer
    // (HF alternates), so the window itself is checked in the next test, not against it.
    let c = base(
        "Gemma2ForCausalLM",
        json!({
            "head_dim": 24, "hidden_activation": "gelu_pytorch_tanh", "attention_bias": false,
            "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
            "query_pre_attn_scalar": 32, "sliding_window": 16, "tie_word_embeddings": true,
        }),
    );
    let w = random_weights(&c, 14);
    publish("tiny/gemma2", &c, &w, 1);
    // candle's gemma2 scales scores by head_dim^-0.5, ignoring query_pre_attn_scalar; scaling
    // W_q by sqrt(head_dim / query_pre_attn_scalar) gives it the scores HF computes.
    let mut wr = w.clone();
    for (k, t) in wr.iter_mut() {
        if k.ends_with("q_proj.weight") {
            *t = (t.clone() * (24f64 / 32.0).sqrt()).unwrap();
        }
    }
    let cfg: refm::gemma2::Config = serde_json::from_value(c.clone()).unwrap();
    let mut r = refm::gemma2::Model::new(false, &cfg, vb(&wr)).unwrap();
    let reference = last_row(r.forward(&ids(), 0).unwrap());
    let m = check("tiny/gemma2", reference.clone(), 1e-4);
    assert!(max_abs(&reference) <= 3.0 + 1e-4, "final soft-cap");
    assert_eq!(m.cfg().attn_softcap, Some(2.0));
    // Ignoring query_pre_attn_scalar, as candle does, would be visibly wrong.
    let mut wrong = m.cfg().clone();
    wrong.attn_scale = 1.0 / 24f64.sqrt();
    let wrong = HookedTransformer::new(wrong, m.weights().clone(), None).unwrap();
    let d = max_abs_diff(
        &wrong
            .forward(&ids())
            .unwrap()
            .i((0, IDS.len() - 1))
            .unwrap(),
        &reference,
    );
    assert!(d > 1e-3, "query_pre_attn_scalar had no effect ({d})");
}

#[test]
fn gemma2_slides_on_even_layers_only() {
    let c = base(
        "Gemma2ForCausalLM",
        json!({
            "head_dim": 24, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
            "query_pre_attn_scalar": 24, "sliding_window": 4, "tie_word_embeddings": true,
        }),
    );
    let w = random_weights(&c, 15);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &c, &w, 1);
    let m = HookedTransformer::from_local_dir(dir.path()).unwrap();
    let windows: Vec<Option<usize>> = m.cfg().layers.iter().map(|l| l.sliding_window).collect();
    assert_eq!(
        windows,
        vec![Some(4), None, Some(4), None],
        "HF order: layer 0 slides"
    );
    let (_, cache) = m.run_with_cache(&ids()).unwrap();
    for l in 0..4 {
        let p = cache
            .pattern(l)
            .unwrap()
            .i((0, 0))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let last = &p[IDS.len() - 1];
        let seen = last.iter().filter(|&&x| x > 0.0).count();
        assert_eq!(seen, if l % 2 == 0 { 4 } else { IDS.len() }, "layer {l}");
    }
}

#[test]
fn gemma3_text_with_window_shorter_than_the_prompt() {
    let c = base(
        "Gemma3ForCausalLM",
        json!({
            "head_dim": 24, "hidden_activation": "gelu_pytorch_tanh", "attention_bias": false,
            "query_pre_attn_scalar": 24, "sliding_window": 4, "sliding_window_pattern": 3,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
            "final_logit_softcapping": null, "attn_logit_softcapping": null, "tie_word_embeddings": true,
        }),
    );
    let w = random_weights(&c, 16);
    publish("tiny/gemma3", &c, &w, 2);
    let cfg: refm::gemma3::Config = serde_json::from_value(c.clone()).unwrap();
    // Token by token, candle's gemma3 keeps exactly `sliding_window` keys, as HF does.
    let mut r = refm::gemma3::Model::new(false, &cfg, vb(&w)).unwrap();
    let mut rows = Vec::new();
    for (i, &id) in IDS.iter().enumerate() {
        rows.push(last_row(
            r.forward(&Tensor::new(&[[id]], &Device::Cpu).unwrap(), i)
                .unwrap(),
        ));
    }
    let m = check("tiny/gemma3", rows.last().unwrap().clone(), 1e-4);
    let windows: Vec<Option<usize>> = m.cfg().layers.iter().map(|l| l.sliding_window).collect();
    assert_eq!(windows, vec![Some(4), Some(4), None, Some(4)]);
    let logits = m.forward(&ids()).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let d = max_abs_diff(&logits.i((0, i)).unwrap(), row);
        assert!(d <= 1e-4, "position {i}: {d}");
    }
}

#[test]
fn bf16_runs_close_to_f32() {
    let c = base(
        "Qwen2ForCausalLM",
        json!({"hidden_act": "silu", "tie_word_embeddings": true,
        "sliding_window": 4, "max_window_layers": 2, "use_sliding_window": false}),
    );
    let w = random_weights(&c, 17);
    publish("tiny/qwen2-bf16", &c, &w, 1);
    let f32m = from_hub("tiny/qwen2-bf16").unwrap();
    let opts = LoadOptions {
        dtype: DType::BF16,
        ..hub_opts()
    };
    let bf = HookedTransformer::from_spec("tiny/qwen2-bf16", &opts).unwrap();
    assert_eq!(bf.weights().embed.dtype(), DType::BF16);
    let (a, b) = (f32m.forward(&ids()).unwrap(), bf.forward(&ids()).unwrap());
    assert_eq!(b.dtype(), DType::F32, "logits come back as f32");
    let rel = max_abs_diff(&a, &b) / max_abs(&a);
    println!("bf16 vs f32: relative max |Δlogit| = {rel:.2e}");
    assert!(rel < 0.05, "bf16 drifted: {rel}");
    let (_, cache) = bf.run_with_cache(&ids()).unwrap();
    assert_eq!(cache.pattern(1).unwrap().dtype(), DType::BF16);
}

#[test]
fn text_goes_through_tokenizer_json_with_bos() {
    let c = base(
        "Qwen3ForCausalLM",
        json!({"head_dim": 16, "hidden_act": "silu", "tie_word_embeddings": true,
        "attention_bias": false, "sliding_window": null, "max_window_layers": 4, "use_sliding_window": false}),
    );
    publish("tiny/qwen3-tok", &c, &random_weights(&c, 18), 1);
    let m = from_hub("tiny/qwen3-tok").unwrap();
    let t = m.to_tokens("w17 w42 w99").unwrap();
    assert_eq!(
        t.i(0).unwrap().to_vec1::<u32>().unwrap(),
        vec![1, 17, 42, 99]
    );
    assert_eq!(m.to_str_tokens("w5 w6").unwrap(), vec!["<bos>", "w5", "w6"]);
}

#[test]
fn loading_errors_name_the_problem() {
    let e = from_hub("tiny/not-there").unwrap_err().to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("tiny/not-there"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = base("MistralForCausalLM", json!({"hidden_act": "silu"}));
    write_checkpoint(
        dir.path(),
        &c,
        &HashMap::from([(
            "x".to_string(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        )]),
        1,
    );
    let e = HookedTransformer::from_local_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MistralForCausalLM")
            && e.contains("Qwen2ForCausalLM")
            && e.contains("Gemma2ForCausalLM"),
        "{e}"
    );
    let c = base(
        "LlamaForCausalLM",
        json!({"hidden_act": "silu", "tie_word_embeddings": false}),
    );
    let mut w = random_weights(&c, 19);
    w.remove("model.layers.2.mlp.up_proj.weight");
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &c, &w, 1);
    let e = HookedTransformer::from_local_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.layers.2.mlp.up_proj.weight"), "{e}");
    let e = HookedTransformer::from_local_dir("/nonexistent/folder")
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn cli_takes_a_local_folder_and_a_dtype() {
    let c = base(
        "LlamaForCausalLM",
        json!({"hidden_act": "silu", "tie_word_embeddings": true}),
    );
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &c, &random_weights(&c, 20), 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mechinterp"))
        .args([
            "run", "w5 w6 w7", "--top-k", "2", "--dtype", "bf16", "--model",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(4 tokens"), "{stdout}");
}
