//! The hooked forward pass against candle-transformers' full-precision Gemma 3, fed the same
//! weights: the real default model (≤ 1e-3 on the logits) and a tiny random one (≤ 1e-5).

use crate::common::*;
use candle_core::{IndexOp, Tensor};
use mechinterp::prelude::*;

/// Last-position logits of the reference for `ids`.
fn reference_last_logits(
    r: &mut candle_transformers::models::gemma3::Model,
    ids: &[u32],
) -> Tensor {
    r.clear_kv_cache();
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    r.forward(&t, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

#[test]
fn default_model_matches_candle_transformers_gemma3() {
    let m = gemma();
    let c = m.cfg();
    assert_eq!(
        (
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.d_model,
            c.d_head,
            c.d_mlp,
            c.d_vocab
        ),
        (18, 4, 1, 640, 256, 2048, 262_144)
    );
    let globals: Vec<usize> = (0..c.n_layers)
        .filter(|&l| c.layers[l].sliding_window.is_none())
        .collect();
    assert_eq!(globals, vec![5, 11, 17]);
    let mut r = reference_model(m, RefMode::Prefill);
    for p in PROMPTS {
        let toks = m.to_tokens(p).unwrap();
        let ids = toks.i(0).unwrap().to_vec1::<u32>().unwrap();
        let logits = m.forward(&toks).unwrap();
        let s = ids.len();
        let ours = logits.i((0, s - 1)).unwrap();
        let theirs = reference_last_logits(&mut r, &ids);
        let d = max_abs_diff(&ours, &theirs);
        println!(
            "{p:?}: {s} tokens, max |Δlogit| = {d:.2e} (logit scale {:.1})",
            max_abs(&theirs)
        );
        assert!(d <= 1e-3, "{p:?}: max |Δlogit| {d}");
        // Also a middle position, through the reference on the prefix.
        let mid = s / 2;
        let theirs_mid = reference_last_logits(&mut r, &ids[..mid]);
        let d = max_abs_diff(&logits.i((0, mid - 1)).unwrap(), &theirs_mid);
        assert!(d <= 1e-3, "{p:?} position {}: max |Δlogit| {d}", mid - 1);
    }
}

#[test]
fn default_model_predicts_sensible_tokens() {
    // A behavioural check that the weights and tokenizer line up: the model must continue
    // a one-shot translation prompt with French.
    let m = gemma();
    let toks = m
        .to_tokens("English: The cat sleeps on the sofa.\nFrench:")
        .unwrap();
    let logits = m.forward(&toks).unwrap();
    let s = toks.dim(1).unwrap();
    let top = logits
        .i((0, s - 1))
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap();
    let word = m.tokenizer().unwrap().token_str(top);
    assert_eq!(word, " Le", "top next token");
}

#[test]
fn tiny_random_gemma3_matches_reference_at_every_position() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::default();
    let path = write_tiny_gguf(dir.path(), &t, 7);
    let m = HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()).unwrap();
    let c = m.cfg();
    assert_eq!((c.n_heads, c.n_kv_heads, c.d_model), (4, 2, 64));
    assert_eq!(c.layers[5].sliding_window, None);
    assert_eq!(c.layers[0].sliding_window, Some(4));
    let mut r = reference_model(&m, RefMode::Decode);
    // 11 tokens: longer than the window of 4, so the sliding mask matters.
    let ids: Vec<u32> = vec![2, 260, 261, 262, 263, 270, 271, 275, 260, 262, 265];
    let toks = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = m.forward(&toks).unwrap();
    let theirs = reference_decode_all(&mut r, &ids);
    let mut worst = 0f32;
    for (s, t) in theirs.iter().enumerate() {
        worst = worst.max(max_abs_diff(&logits.i((0, s)).unwrap(), t));
    }
    println!(
        "tiny model: worst max |Δlogit| over {} positions = {worst:.2e}",
        ids.len()
    );
    assert!(worst <= 1e-5, "worst {worst}");
}

#[test]
fn tiny_model_differs_from_reference_when_the_window_is_wrong() {
    // Guards the test above: an off-by-one in the sliding window must be visible.
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_gguf(dir.path(), &Tiny::default(), 7);
    let m = HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()).unwrap();
    let mut cfg = m.cfg().clone();
    for l in cfg.layers.iter_mut() {
        if let Some(w) = l.sliding_window.as_mut() {
            *w += 1;
        }
    }
    let m2 = HookedTransformer::new(cfg, m.weights().clone(), None).unwrap();
    let mut r = reference_model(&m, RefMode::Decode);
    let ids: Vec<u32> = vec![2, 260, 261, 262, 263, 270, 271, 275, 260, 262, 265];
    let toks = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ours = m2.forward(&toks).unwrap().i((0, ids.len() - 1)).unwrap();
    let theirs = reference_decode_all(&mut r, &ids);
    let d = max_abs_diff(&ours, theirs.last().unwrap());
    assert!(d > 1e-3, "a wrong window went unnoticed (Δ = {d})");
}

#[test]
fn long_prompts_run_blocked_attention_with_the_same_numbers() {
    // Past BLOCKED_ATTENTION_FROM (256) positions, attention runs in query blocks that skip
    // invisible keys, unless something reads the pattern. Both paths and the reference must agree.
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_gguf(dir.path(), &Tiny::default(), 11);
    let m = HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()).unwrap();
    let mut cfg = m.cfg().clone();
    cfg.max_position = 1024; // the tiny file says 128
    let m = HookedTransformer::new(cfg, m.weights().clone(), None).unwrap();
    let ids: Vec<u32> = std::iter::once(2)
        .chain((0..299u32).map(|i| 258 + (i * 7 + i / 3) % 19))
        .collect();
    let toks = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let blocked = m.forward(&toks).unwrap();
    let (full, cache) = m
        .run_with_cache_filtered(&toks, |n: &str| n.ends_with("hook_pattern"))
        .unwrap();
    assert_eq!(cache.pattern(0).unwrap().dims(), &[1, 4, 300, 300]);
    let d = max_abs_diff(&blocked, &full);
    println!("blocked vs full attention over 300 positions: max |Δlogit| = {d:.2e}");
    assert!(d <= 1e-5, "blocked attention differs by {d}");

    let mut r = reference_model(&m, RefMode::Decode);
    let theirs = reference_decode_all(&mut r, &ids);
    let worst = theirs
        .iter()
        .enumerate()
        .map(|(s, t)| max_abs_diff(&blocked.i((0, s)).unwrap(), t))
        .fold(0f32, f32::max);
    println!("blocked attention vs candle-transformers over 300 positions: {worst:.2e}");
    assert!(worst <= 1e-4, "worst {worst}");
}
