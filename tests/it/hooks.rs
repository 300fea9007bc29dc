//! Hook points and the cache: invariants of the forward pass, identity and replacement hooks,
//! padding, grouped-query heads, and the errors a user sees.

use crate::common::*;
use candle_core::{IndexOp, Tensor, D};
use mechinterp::prelude::*;

const PROMPT: &str = "EN: I like green apples. FR: J'aime les pommes vertes.";

fn tiny() -> (tempfile::TempDir, HookedTransformer) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_gguf(dir.path(), &Tiny::default(), 3);
    let m = HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()).unwrap();
    (dir, m)
}

#[test]
fn cache_has_every_hook_point_with_transformer_lens_shapes() {
    let m = gemma();
    let c = m.cfg().clone();
    let toks = m.to_tokens(PROMPT).unwrap();
    let s = toks.dim(1).unwrap();
    let (logits, cache) = m.run_with_cache(&toks).unwrap();
    assert_eq!(logits.dims(), &[1, s, c.d_vocab]);
    assert_eq!(cache.keys(), m.hook_names().as_slice());
    let (n, k, h, d) = (c.n_heads, c.n_kv_heads, c.d_head, c.d_model);
    for l in [0, 5, 17] {
        let shape = |short: &str| cache.act(short, l).unwrap().dims().to_vec();
        assert_eq!(shape("resid_pre"), vec![1, s, d]);
        assert_eq!(shape("q"), vec![1, s, n, h]);
        assert_eq!(shape("k"), vec![1, s, k, h], "k carries the kv heads");
        assert_eq!(shape("v"), vec![1, s, k, h]);
        assert_eq!(shape("rot_q"), vec![1, s, n, h]);
        assert_eq!(shape("rot_k"), vec![1, s, k, h]);
        assert_eq!(shape("attn_scores"), vec![1, n, s, s]);
        assert_eq!(shape("pattern"), vec![1, n, s, s]);
        assert_eq!(shape("z"), vec![1, s, n, h]);
        assert_eq!(shape("result"), vec![1, s, n, d]);
        assert_eq!(shape("attn_out"), vec![1, s, d]);
        assert_eq!(shape("pre"), vec![1, s, c.d_mlp]);
        assert_eq!(shape("pre_linear"), vec![1, s, c.d_mlp]);
        assert_eq!(shape("post"), vec![1, s, c.d_mlp]);
        assert_eq!(shape("ln1_scale"), vec![1, s, 1]);
    }
    assert_eq!(
        cache.get("ln_final.hook_normalized").unwrap().dims(),
        &[1, s, d]
    );
    // hook_embed is the embedding row times sqrt(d_model).
    let e = cache.get("hook_embed").unwrap().i((0, 0)).unwrap();
    let want = (m.weights().embed.dense().unwrap().i(2).unwrap() * (d as f64).sqrt()).unwrap();
    assert!(max_abs_diff(&e, &want) < 1e-6);
}

#[test]
fn residual_stream_adds_up_and_patterns_are_distributions() {
    let m = gemma();
    let toks = m.to_tokens(PROMPT).unwrap();
    let (_, cache) = m.run_with_cache(&toks).unwrap();
    let s = toks.dim(1).unwrap();
    assert_eq!(
        max_abs_diff(
            &cache.get("hook_embed").unwrap(),
            &cache.act("resid_pre", 0).unwrap()
        ),
        0.0
    );
    for l in 0..m.cfg().n_layers {
        let a = |n: &str| cache.act(n, l).unwrap();
        let mid = (a("resid_pre") + a("attn_out")).unwrap();
        assert!(
            max_abs_diff(&a("resid_mid"), &mid) <= 1e-6,
            "layer {l} resid_mid"
        );
        let post = (a("resid_mid") + a("mlp_out")).unwrap();
        assert!(
            max_abs_diff(&a("resid_post"), &post) <= 1e-6,
            "layer {l} resid_post"
        );
        if l + 1 < m.cfg().n_layers {
            assert_eq!(
                max_abs_diff(&a("resid_post"), &cache.act("resid_pre", l + 1).unwrap()),
                0.0
            );
        }
        let p = a("pattern");
        let sums = p.sum(D::Minus1).unwrap();
        let ones = sums.ones_like().unwrap();
        assert!(max_abs_diff(&sums, &ones) < 1e-5, "layer {l} rows sum to 1");
        // Causality: nothing above the diagonal.
        let pv = p.i(0).unwrap().to_vec3::<f32>().unwrap();
        for head in &pv {
            for (i, row) in head.iter().enumerate() {
                assert!(
                    row[i + 1..].iter().all(|&x| x == 0.0),
                    "layer {l} attends to the future"
                );
            }
        }
        // pattern = softmax(attn_scores).
        let sm = candle_nn::ops::softmax(&a("attn_scores"), D::Minus1).unwrap();
        assert!(max_abs_diff(&sm, &p) < 1e-6);
        // RoPE rotates pairs: it keeps each head vector's norm. hook_q/hook_k come before
        // Gemma's q/k norm, rot_q/rot_k after it (and RoPE), so compare RoPE's input: the
        // q/k norm's normalized value times its weight.
        let norm = |t: Tensor| t.sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap();
        let blk = &m.weights().blocks[l];
        let normed = |short: &str, like: &str, w: &Tensor| {
            a(short)
                .reshape(a(like).shape())
                .unwrap()
                .broadcast_mul(w)
                .unwrap()
        };
        let q_in = normed("q_norm", "q", blk.q_norm.as_ref().unwrap());
        let k_in = normed("k_norm", "k", blk.k_norm.as_ref().unwrap());
        assert!(max_abs_diff(&norm(q_in), &norm(a("rot_q"))) < 1e-3);
        assert!(max_abs_diff(&norm(k_in), &norm(a("rot_k"))) < 1e-3);
    }
    assert!(s > 5);
}

#[test]
fn sliding_window_layers_see_only_the_window() {
    let (_dir, m) = tiny();
    let toks = Tensor::new(
        &[[2u32, 260, 261, 262, 263, 270, 271, 275, 260, 262]],
        &Device::Cpu,
    )
    .unwrap();
    let (_, cache) = m.run_with_cache(&toks).unwrap();
    for l in 0..m.cfg().n_layers {
        let window = m.cfg().layers[l].sliding_window;
        let p = cache
            .pattern(l)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for head in &p {
            for (i, row) in head.iter().enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    let visible = j <= i && window.is_none_or(|w| i - j < w);
                    if visible {
                        assert!(x > 0.0, "layer {l} ({i},{j}) should be visible");
                    } else {
                        assert_eq!(
                            x, 0.0,
                            "layer {l} ({i},{j}) should be masked (window {window:?})"
                        );
                    }
                }
            }
        }
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn identity_hooks_everywhere_leave_logits_bit_identical() {
    let m = gemma();
    let toks = m.to_tokens(PROMPT).unwrap();
    let plain = bits(&m.forward(&toks).unwrap());
    let names = m.hook_names();
    let hooks = names.iter().fold(Hooks::new(), |h, n| {
        h.add(n, |x: &Tensor, _: &HookContext| Ok(x.clone()))
            .unwrap()
    });
    assert_eq!(
        bits(&m.with_hooks(&hooks).forward(&toks).unwrap()),
        plain,
        "identity hooks changed the logits"
    );
    assert_eq!(
        bits(&m.run_with_cache(&toks).unwrap().0),
        plain,
        "caching changed the logits"
    );
    // A hook that rebuilds the same values (a new tensor) is exact too, except at hook_result,
    // where the heads are then summed one by one instead of inside W_O's matmul.
    let copy = |x: &Tensor, _: &HookContext| Ok(x.copy()?);
    let copies = names
        .iter()
        .filter(|n| !n.ends_with("hook_result"))
        .fold(Hooks::new(), |h, n| h.add(n, copy).unwrap());
    assert_eq!(bits(&m.with_hooks(&copies).forward(&toks).unwrap()), plain);
    let via_result = m
        .with_hooks(&Hooks::new().add("blocks.4.attn.hook_result", copy).unwrap())
        .forward(&toks)
        .unwrap();
    assert!(max_abs_diff(&via_result, &m.forward(&toks).unwrap()) < 1e-3);
}

#[test]
fn head_results_sum_to_attention_output_before_the_post_norm() {
    let m = gemma();
    let toks = m.to_tokens(PROMPT).unwrap();
    let (_, cache) = m.run_with_cache(&toks).unwrap();
    let eps = m.cfg().rms_norm_eps;
    for l in [0, 7, 17] {
        let summed = cache.act("result", l).unwrap().sum(2).unwrap();
        // Gemma: attn_out = RMSNorm_post(Σ_heads result), so the heads do not sum to attn_out…
        assert!(max_abs_diff(&summed, &cache.act("attn_out", l).unwrap()) > 1e-2);
        // …but they do once the post-attention norm is applied.
        let w = m.weights().blocks[l].ln1_post.clone().unwrap();
        let rms = (summed.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps)
            .unwrap()
            .sqrt()
            .unwrap();
        let normed = summed
            .broadcast_div(&rms)
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        let out = cache.act("attn_out", l).unwrap();
        let rel = max_abs_diff(&normed, &out) / max_abs(&out);
        assert!(rel < 1e-5, "layer {l}: relative error {rel}");
    }
}

#[test]
fn padded_batch_matches_single_runs() {
    let m = gemma();
    let texts = ["EN: Hello. FR: Bonjour.", PROMPT, "The Eiffel Tower is in"];
    let batch = m.to_tokens_batch(&texts).unwrap();
    let lens = m.seq_lengths(&batch).unwrap();
    let logits = m.forward(&batch).unwrap();
    let mask = m.attention_mask(&batch).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = m.to_tokens(t).unwrap();
        let s = single.dim(1).unwrap();
        assert_eq!(lens[i], s);
        assert_eq!(
            mask.i(i)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            s as f32
        );
        let one = m.forward(&single).unwrap();
        let d = max_abs_diff(&logits.i((i, 0..s)).unwrap(), &one.i(0).unwrap());
        assert!(d <= 1e-4, "text {i}: {d}");
    }
}

#[test]
fn zeroing_one_query_head_spares_heads_that_share_its_kv_head() {
    let (_dir, m) = tiny();
    assert_eq!((m.cfg().n_heads, m.cfg().n_kv_heads), (4, 2));
    let toks = Tensor::new(&[[2u32, 260, 261, 262, 263, 270]], &Device::Cpu).unwrap();
    let (_, clean) = m
        .run_with_cache_filtered(&toks, |n: &str| n == "blocks.1.attn.hook_z")
        .unwrap();
    let hooks = Hooks::new()
        .intervene("blocks.1.attn.hook_z", Intervention::ZeroHead(2))
        .unwrap();
    let (ablated_logits, ablated) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&toks, |n: &str| n == "blocks.1.attn.hook_z")
        .unwrap();
    let z = ablated.get("blocks.1.attn.hook_z").unwrap();
    let zc = clean.get("blocks.1.attn.hook_z").unwrap();
    assert_eq!(max_abs(&z.i((.., .., 2)).unwrap()), 0.0);
    // Head 3 shares kv head 1 with head 2 and is untouched.
    for h in [0, 1, 3] {
        assert_eq!(
            max_abs_diff(&z.i((.., .., h)).unwrap(), &zc.i((.., .., h)).unwrap()),
            0.0
        );
    }
    // The same ablation through hook_result gives the same logits.
    let via_result = m
        .with_hooks(
            &Hooks::new()
                .intervene("blocks.1.attn.hook_result", Intervention::ZeroHead(2))
                .unwrap(),
        )
        .forward(&toks)
        .unwrap();
    assert!(max_abs_diff(&via_result, &ablated_logits) < 1e-4);
    assert!(
        max_abs_diff(&m.forward(&toks).unwrap(), &ablated_logits) > 1e-4,
        "ablation had no effect"
    );
    // k hooks carry kv heads: ZeroHead(2) there is an error, not a silent no-op.
    let err = m
        .with_hooks(
            &Hooks::new()
                .intervene("blocks.0.attn.hook_k", Intervention::ZeroHead(2))
                .unwrap(),
        )
        .forward(&toks)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 kv heads"), "{err}");
}

#[test]
fn replacing_an_activation_changes_what_follows() {
    let (_dir, m) = tiny();
    let toks = Tensor::new(&[[2u32, 260, 261, 262]], &Device::Cpu).unwrap();
    let zero = |x: &Tensor, ctx: &HookContext| {
        assert_eq!(ctx.layer, Some(2));
        assert_eq!((ctx.n_heads, ctx.n_kv_heads), (4, 2));
        Ok(x.zeros_like()?)
    };
    let logits = m
        .with_hooks(&Hooks::new().add("blocks.2.hook_resid_post", zero).unwrap())
        .forward(&toks)
        .unwrap();
    // With the residual zeroed after layer 2, position 0 and 3 see the same input to layer 3…
    // so at least the run must differ from the clean one.
    assert!(max_abs_diff(&logits, &m.forward(&toks).unwrap()) > 1e-3);
    let (_, cache) = m
        .with_hooks(
            &Hooks::new()
                .intervene("blocks.2.hook_resid_post", Intervention::Zero)
                .unwrap(),
        )
        .run_with_cache_filtered(&toks, |n: &str| n.starts_with("blocks.3.hook_resid_pre"))
        .unwrap();
    assert_eq!(max_abs(&cache.get("blocks.3.hook_resid_pre").unwrap()), 0.0);
}

#[test]
fn bad_hooks_give_clear_errors() {
    let (_dir, m) = tiny();
    let toks = Tensor::new(&[[2u32, 260, 261]], &Device::Cpu).unwrap();
    let id = |x: &Tensor, _: &HookContext| Ok(x.clone());
    // An unknown name is refused when the hook is added.
    let e = Hooks::new()
        .add("blocks.1.attn.hook_patern", id)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown hook point `blocks.1.attn.hook_patern`")
            && e.contains("blocks.1.attn.hook_pattern"),
        "{e}"
    );
    // A layer the model lacks is refused when the run starts.
    let e = m
        .with_hooks(&Hooks::new().add("blocks.9.hook_resid_pre", id).unwrap())
        .forward(&toks)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("6 layers") && e.contains("blocks.5.hook_resid_pre"),
        "{e}"
    );
    let wrong = |x: &Tensor, _: &HookContext| Ok(x.narrow(1, 0, 1)?);
    let e = m
        .with_hooks(&Hooks::new().add("blocks.0.attn.hook_z", wrong).unwrap())
        .forward(&toks)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blocks.0.attn.hook_z")
            && e.contains("[1, 1, 4, 16]")
            && e.contains("[1, 3, 4, 16]"),
        "{e}"
    );
    let (_, cache) = m
        .run_with_cache_filtered(&toks, |n: &str| n.ends_with("hook_pattern"))
        .unwrap();
    assert_eq!(cache.len(), 6);
    let e = cache.get("blocks.1.attn.hook_z").unwrap_err().to_string();
    assert!(e.contains("did not cache"), "{e}");
    let e = cache
        .get("blocks.1.attn.hook_patten")
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks.1.attn.hook_pattern"), "{e}");
    let e = m
        .forward(&Tensor::new(&[[2u32, 99_999]], &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("99999") && e.contains("out of range"), "{e}");
    let e = m
        .forward(&Tensor::new(&[[1.5f32]], &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("integer ids"), "{e}");
}

#[test]
fn safetensors_dump_round_trips() {
    let (dir, m) = tiny();
    let toks = Tensor::new(&[[2u32, 260, 261]], &Device::Cpu).unwrap();
    let (logits, cache) = m.run_with_cache(&toks).unwrap();
    let out = dir.path().join("acts.safetensors");
    cache
        .save_safetensors(&out, &[("logits", &logits)])
        .unwrap();
    let back = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.len(), cache.len() + 1);
    assert_eq!(max_abs_diff(&back["logits"], &logits), 0.0);
    assert_eq!(
        max_abs_diff(
            &back["blocks.2.attn.hook_pattern"],
            &cache.pattern(2).unwrap()
        ),
        0.0
    );
}
