//! Every TransformerLens hook name means here what it means in TransformerLens 3.9, with its
//! shape: checked against caches that TransformerLens itself wrote
//! (`scripts/make_tl_hook_fixture.py`, unprocessed weights, so equal to HF) for Gemma 3, Qwen 3
//! and Llama, on the tiny reference checkpoints: every hook of the first and last layer and the
//! global ones by value, every hook of every layer by name and shape.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use mechinterp::prelude::*;

/// TransformerLens's points that only exist with a flag we do not offer, and why.
const NOT_OFFERED: &[(&str, &str)] = &[
    ("hook_tokens", "use_hook_tokens: the ids are the input"),
    (
        "hook_q_input",
        "use_split_qkv_input: per-head copies of the residual",
    ),
    ("hook_k_input", "use_split_qkv_input"),
    ("hook_v_input", "use_split_qkv_input"),
];

/// Our points that TransformerLens lacks (names it cannot confuse).
const OURS_ONLY: &[&str] = &["attn.hook_in", "mlp.hook_in"];

fn fixture(arch: &str) -> PathBuf {
    crate::common::repo().join(format!("tests/fixtures/models/{arch}"))
}

fn suffix(name: &str) -> &str {
    match name.strip_prefix("blocks.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, s)| s),
        None => name,
    }
}

/// max |a − b| over entries where TransformerLens's value is finite (masked attention scores
/// are −∞ in both, checked separately), relative to TransformerLens's largest finite entry.
fn rel_diff(name: &str, ours: &Tensor, theirs: &Tensor) -> f32 {
    let a = ours
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "{name}: element count");
    let mut scale = 0f32;
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(&b) {
        if y.is_finite() {
            scale = scale.max(y.abs());
            worst = worst.max((x - y).abs());
        } else {
            assert_eq!(x, y, "{name}: TransformerLens has {y}, we have {x}");
        }
    }
    worst / scale.max(1e-12)
}

fn check(arch: &str) {
    let dir = fixture(arch);
    let model = HookedTransformer::from_local_dir(&dir).unwrap();
    let tl =
        candle_core::safetensors::load(dir.join("tl_hooks.safetensors"), &Device::Cpu).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tl_hooks.json")).unwrap()).unwrap();
    let ids = tl["ids"].to_dtype(DType::U32).unwrap();
    let (logits, cache) = model.run_with_cache(&ids).unwrap();

    // Every name TransformerLens has, in every layer: ours too, with its shape.
    let ours: HashMap<String, Vec<usize>> = cache
        .iter()
        .map(|(n, t)| (n.to_string(), t.dims().to_vec()))
        .collect();
    let mut tl_suffixes = BTreeSet::new();
    for h in meta["hooks"].as_array().unwrap() {
        let name = h["name"].as_str().unwrap();
        tl_suffixes.insert(suffix(name).to_string());
        if NOT_OFFERED.iter().any(|(s, _)| *s == suffix(name)) {
            assert!(
                name.parse::<HookPoint>().is_err(),
                "{name} is offered now: update NOT_OFFERED"
            );
            continue;
        }
        let shape: Vec<usize> = h["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let got = ours
            .get(name)
            .unwrap_or_else(|| panic!("{arch}: TransformerLens's {name} is not in our cache"));
        assert_eq!(got, &shape, "{arch}: shape of {name}");
    }
    // Every name of ours: TransformerLens's, or one it cannot confuse.
    for name in ours.keys() {
        let s = suffix(name);
        assert!(
            tl_suffixes.contains(s) || OURS_ONLY.contains(&s),
            "{arch}: our {name} is neither TransformerLens's nor in OURS_ONLY"
        );
    }

    // Values of the stored layers and the global points (≤ 1e-4 of each tensor's largest).
    let mut checked = 0;
    for (name, theirs) in &tl {
        if name == "ids" || NOT_OFFERED.iter().any(|(s, _)| *s == suffix(name)) {
            continue;
        }
        let mine = if name == "logits" {
            logits.clone().into_tensor()
        } else {
            cache.get(name).unwrap()
        };
        let d = rel_diff(name, &mine, theirs);
        assert!(
            d <= 1e-4,
            "{arch}: {name} differs from TransformerLens by {d:.2e} (relative)"
        );
        checked += 1;
    }
    assert!(checked > 40, "{arch}: only {checked} tensors compared");
}

#[test]
fn gemma3_hooks_mean_what_transformer_lens_means() {
    check("gemma3");
}

#[test]
fn qwen3_hooks_mean_what_transformer_lens_means() {
    check("qwen3");
}

#[test]
fn llama_hooks_mean_what_transformer_lens_means() {
    check("llama");
}

#[test]
fn hooking_a_norm_scale_uses_the_replacement() {
    // As in TransformerLens: a frozen `hook_scale` is what the norm divides by.
    let model = HookedTransformer::from_local_dir(fixture("qwen3")).unwrap();
    let ids = Tensor::new(&[[1u32, 17, 42, 99, 250]], &Device::Cpu).unwrap();
    let (_, cache) = model.run_with_cache(&ids).unwrap();
    let scale = cache.get("blocks.1.ln2.hook_scale").unwrap();
    let doubled = (scale * 2.0).unwrap();
    let hooks = Hooks::new()
        .add("blocks.1.ln2.hook_scale", move |_, _| Ok(doubled.clone()))
        .unwrap();
    let (_, hooked) = model.with_hooks(&hooks).run_with_cache(&ids).unwrap();
    let half = (cache.get("blocks.1.ln2.hook_normalized").unwrap() * 0.5).unwrap();
    let got = hooked.get("blocks.1.ln2.hook_normalized").unwrap();
    assert!(rel_diff("ln2.hook_normalized", &got, &half) < 1e-6);
}
