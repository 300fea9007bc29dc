//! The interpretability toolkit against brute force and invariants: activation, path and
//! attribution patching, ablation, the logit lens and DLA, and the metrics. Tiny random
//! Gemma 3 (4 query heads sharing 2 kv heads) for breadth, the default model for the real thing.

use crate::common::*;
use candle_core::{IndexOp, Tensor, D};
use mechinterp::hooks::HookPoint;
use mechinterp::prelude::*;

fn tiny() -> (tempfile::TempDir, HookedTransformer) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_gguf(dir.path(), &Tiny::default(), 21);
    let m = HookedTransformer::from_spec(&path, &LoadOptions::from_env().unwrap()).unwrap();
    (dir, m)
}

fn toks(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

const CLEAN: [u32; 8] = [2, 260, 261, 262, 270, 263, 264, 265];
const CORRUPT: [u32; 8] = [2, 260, 266, 262, 271, 263, 264, 265];

fn tiny_patcher(m: &HookedTransformer) -> Patcher {
    Patcher::from_tokens(m, &toks(&CLEAN), &toks(&CORRUPT), LogitDiff::new(272, 273))
        .unwrap()
        .batch_size(5)
        .quiet(true)
}

/// The metric of a run of `base` with `point`'s activation replaced where `keep` says so.
fn by_hand(
    m: &HookedTransformer,
    base: &[u32],
    source: &[u32],
    point: HookPoint,
    sel: impl Fn(&Tensor) -> Tensor + Send + Sync + 'static,
) -> f32 {
    let (_, src) = m.run_with_cache(&toks(source)).unwrap();
    let src = src.get(&point.name()).unwrap();
    let hook = move |x: &Tensor, _: &HookContext| {
        let keep = sel(x); // u8 mask, 1 = take the source
        Ok(keep.where_cond(&src, x)?)
    };
    let logits = m
        .with_hooks(&Hooks::new().add_point(point, hook))
        .forward(&toks(base))
        .unwrap();
    logit_diff(&logits, 272, 273, None).unwrap()
}

fn mask_where(x: &Tensor, f: impl Fn(&[usize]) -> bool) -> Tensor {
    let d = x.dims().to_vec();
    let n: usize = d.iter().product();
    let v: Vec<u8> = (0..n)
        .map(|mut i| {
            let mut idx = vec![0; d.len()];
            for k in (0..d.len()).rev() {
                idx[k] = i % d[k];
                i /= d[k];
            }
            f(&idx) as u8
        })
        .collect();
    Tensor::from_vec(v, d, x.device()).unwrap()
}

#[test]
fn activation_patching_tables_match_brute_force() {
    let (_d, m) = tiny();
    let p = tiny_patcher(&m);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
    // resid_pre, denoising: layer 2, position 2.
    let t = p
        .activation(PatchTarget::ResidPre, Direction::Denoise)
        .unwrap();
    assert_eq!(t.table.shape(), vec![6, 8]);
    let want = by_hand(&m, &CORRUPT, &CLEAN, HookPoint::ResidPre(2), |x| {
        mask_where(x, |i| i[1] == 2)
    });
    assert!(
        close(t.table.get(&[2, 2]).unwrap(), want),
        "{} vs {want}",
        t.table.get(&[2, 2]).unwrap()
    );
    // Positions where the prompts agree and that come before any difference change nothing.
    assert!(close(t.table.get(&[0, 0]).unwrap(), p.corrupted_value()));
    // head-out, noising: layer 3, head 1 (shares kv head 0 with head 0).
    let t = p
        .activation(PatchTarget::HeadOut, Direction::Noise)
        .unwrap();
    let want = by_hand(&m, &CLEAN, &CORRUPT, HookPoint::Z(3), |x| {
        mask_where(x, |i| i[2] == 1)
    });
    assert!(close(t.table.get(&[3, 1]).unwrap(), want));
    // head-k is per kv head.
    let t = p
        .activation(PatchTarget::HeadK, Direction::Denoise)
        .unwrap();
    assert_eq!(t.table.axes[1].name, "kv_head");
    assert_eq!(t.table.shape(), vec![6, 2]);
    let want = by_hand(&m, &CORRUPT, &CLEAN, HookPoint::K(4), |x| {
        mask_where(x, |i| i[2] == 1)
    });
    assert!(close(t.table.get(&[4, 1]).unwrap(), want));
    // head-pattern and head-out-by-pos.
    let t = p
        .activation(PatchTarget::HeadPattern, Direction::Denoise)
        .unwrap();
    let want = by_hand(&m, &CORRUPT, &CLEAN, HookPoint::Pattern(1), |x| {
        mask_where(x, |i| i[1] == 3)
    });
    assert!(close(t.table.get(&[1, 3]).unwrap(), want));
    let t = p
        .activation(PatchTarget::HeadOutByPos, Direction::Denoise)
        .unwrap();
    assert_eq!(t.table.shape(), vec![6, 4, 8]);
    let want = by_hand(&m, &CORRUPT, &CLEAN, HookPoint::Z(2), |x| {
        mask_where(x, |i| i[2] == 2 && i[1] == 4)
    });
    assert!(close(t.table.get(&[2, 2, 4]).unwrap(), want));
    // JSON: raw values nested [layer][head][pos], with the run's metric values.
    let j = t.to_json();
    assert_eq!(j["values"].as_array().unwrap().len(), 6);
    assert_eq!(j["values"][2][2].as_array().unwrap().len(), 8);
    assert_eq!(j["clean_value"].as_f64().unwrap() as f32, p.clean_value());
}

#[test]
fn patching_invariants_hold() {
    let (_d, m) = tiny();
    let p = tiny_patcher(&m);
    // Every position of resid_pre at layer 0 from the clean run gives the clean logits.
    let patched = p
        .run_patched(&[HookPoint::ResidPre(0)], Direction::Denoise)
        .unwrap();
    let clean = m.forward(&toks(&CLEAN)).unwrap();
    assert!(
        max_abs_diff(&patched, &clean) <= 1e-6,
        "{}",
        max_abs_diff(&patched, &clean)
    );
    // Noising with identical prompts changes nothing.
    let same = Patcher::from_tokens(&m, &toks(&CLEAN), &toks(&CLEAN), LogitDiff::new(272, 273))
        .unwrap()
        .quiet(true);
    for target in [
        PatchTarget::ResidPre,
        PatchTarget::HeadOut,
        PatchTarget::HeadV,
        PatchTarget::HeadPattern,
    ] {
        let t = same.activation(target, Direction::Noise).unwrap();
        assert!(
            t.table
                .values
                .iter()
                .all(|&v| (v - same.clean_value()).abs() <= 1e-5),
            "{target:?}"
        );
    }
    // Path patching with every head as sender to the logits = patching every hook_z at once.
    let n = m.cfg().n_heads;
    let all: Vec<(usize, usize)> = (0..6).flat_map(|l| (0..n).map(move |h| (l, h))).collect();
    let path = p
        .path(&all, &Receivers::Logits, Direction::Denoise, false)
        .unwrap();
    let zs: Vec<HookPoint> = (0..6).map(HookPoint::Z).collect();
    let direct = p
        .metric_of(&p.run_patched(&zs, Direction::Denoise).unwrap())
        .unwrap()[0];
    assert!((path - direct).abs() <= 1e-4, "{path} vs {direct}");
    // A single sender with no other heads frozen... differs from plain activation patching
    // only through the frozen heads; with freezing it is a different, smaller effect.
    let sweep = p
        .path_sweep(&Receivers::Logits, Direction::Denoise, false)
        .unwrap();
    assert_eq!(sweep.table.shape(), vec![6, 4]);
    let one = p
        .path(&[(2, 1)], &Receivers::Logits, Direction::Denoise, false)
        .unwrap();
    assert!((sweep.table.get(&[2, 1]).unwrap() - one).abs() <= 1e-5);
}

#[test]
fn path_patching_to_head_inputs_matches_brute_force() {
    let (_d, m) = tiny();
    let p = tiny_patcher(&m);
    let cfg = m.cfg().clone();
    // Sender (1, 2) -> receiver q of (4, 3), by hand: step 1 freezes every other head at the
    // corrupted z, takes the sender's clean z, and records layer 4's q; step 2 puts head 3's
    // q into a plain corrupted run.
    let (_, clean) = m.run_with_cache(&toks(&CLEAN)).unwrap();
    let (_, corrupt) = m.run_with_cache(&toks(&CORRUPT)).unwrap();
    let mut hooks = Hooks::new();
    for l in 0..cfg.n_layers {
        let (c, k) = (
            clean.get(&HookPoint::Z(l).name()).unwrap(),
            corrupt.get(&HookPoint::Z(l).name()).unwrap(),
        );
        hooks = hooks.add_point(HookPoint::Z(l), move |x: &Tensor, _: &HookContext| {
            let m = mask_where(x, |i| l == 1 && i[2] == 2);
            Ok(m.where_cond(&c, &k)?)
        });
    }
    let (_, step1) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&toks(&CORRUPT), |n: &str| n == "blocks.4.attn.hook_q")
        .unwrap();
    let q = step1.get("blocks.4.attn.hook_q").unwrap();
    let hook =
        move |x: &Tensor, _: &HookContext| Ok(mask_where(x, |i| i[2] == 3).where_cond(&q, x)?);
    let logits = m
        .with_hooks(&Hooks::new().add("blocks.4.attn.hook_q", hook).unwrap())
        .forward(&toks(&CORRUPT))
        .unwrap();
    let want = logit_diff(&logits, 272, 273, None).unwrap();
    let got = p
        .path(
            &[(1, 2)],
            &Receivers::Heads(vec![Receiver::Q(4, 3)]),
            Direction::Denoise,
            false,
        )
        .unwrap();
    assert!((got - want).abs() <= 1e-4, "{got} vs {want}");
    // The sweep agrees entry by entry and leaves heads at or after the receiver empty.
    let sweep = p
        .path_sweep(
            &Receivers::Heads(vec![Receiver::Q(4, 3)]),
            Direction::Denoise,
            false,
        )
        .unwrap();
    assert!((sweep.table.get(&[1, 2]).unwrap() - got).abs() <= 1e-5);
    assert!(sweep.table.get(&[4, 0]).unwrap().is_nan());
    // k receivers are kv heads; senders must come before receivers.
    let e = p
        .path(
            &[(5, 0)],
            &Receivers::Heads(vec![Receiver::K(4, 1)]),
            Direction::Denoise,
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains("not before receiver"), "{e}");
    let e = p
        .path(
            &[(0, 0)],
            &Receivers::Heads(vec![Receiver::V(4, 2)]),
            Direction::Denoise,
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains("kv heads"), "{e}");
}

#[test]
fn attribution_agrees_with_activation_patching_for_small_perturbations() {
    let (_d, m) = tiny();
    // Source = the clean activations plus a small random perturbation at every point. Each
    // technique patches one point at a time, so the perturbed values need not be consistent
    // with each other; to first order the estimate must match.
    let (_, clean) = m.run_with_cache(&toks(&CLEAN)).unwrap();
    let eps = 1e-3;
    let hooks = (0..6).fold(Hooks::new(), |mut h, l| {
        for p in [
            HookPoint::ResidPre(l),
            HookPoint::Z(l),
            HookPoint::AttnOut(l),
            HookPoint::MlpOut(l),
        ] {
            h = h.add_point(p, move |x: &Tensor, _: &HookContext| {
                Ok((x + (x.randn_like(0.0, 1.0)? * eps)?)?)
            });
        }
        h
    });
    let (_, noisy) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&toks(&CLEAN), |_: &str| true)
        .unwrap();
    let patcher = Patcher::from_caches(
        &m,
        (&toks(&CLEAN), clean),
        (&toks(&CLEAN), noisy),
        LogitDiff::new(272, 273),
    )
    .unwrap()
    .quiet(true);
    let attr = patcher.attribution(Direction::Noise).unwrap();
    for target in [
        PatchTarget::HeadOut,
        PatchTarget::ResidPre,
        PatchTarget::MlpOut,
    ] {
        let act = patcher.activation(target, Direction::Noise).unwrap();
        let agree = attr.agreement(&act).unwrap();
        let worst = agree
            .points
            .iter()
            .map(|(_, e, a)| (e - a).abs())
            .fold(0f32, f32::max);
        let scale = agree
            .points
            .iter()
            .map(|(_, _, a)| a.abs())
            .fold(0f32, f32::max);
        println!(
            "{target:?}: pearson {:.5}, worst |est - actual| {worst:.2e} of {scale:.2e}",
            agree.pearson
        );
        assert!(agree.pearson > 0.99, "{target:?}: {}", agree.pearson);
        assert!(
            worst <= 0.05 * scale + 1e-5,
            "{target:?}: {worst} vs {scale}"
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    // The forward pass must be differentiable end to end: a directional derivative from
    // the attribution gradients equals a central finite difference.
    let (_d, m) = tiny();
    let (_, clean) = m.run_with_cache(&toks(&CLEAN)).unwrap();
    let name = HookPoint::ResidPre(1).name();
    let x = clean.get(&name).unwrap();
    let dir = x.randn_like(0.0, 1.0).unwrap();
    let h = 1e-2;
    let f = |t: f64| {
        let v = (&x + (&dir * t).unwrap()).unwrap();
        let hook = move |_: &Tensor, _: &HookContext| Ok(v.clone());
        let l = m
            .with_hooks(&Hooks::new().add(&name, hook).unwrap())
            .forward(&toks(&CLEAN))
            .unwrap();
        logit_diff(&l, 272, 273, None).unwrap() as f64
    };
    let fd = (f(h) - f(-h)) / (2.0 * h);
    // Source = clean + dir at that point only: the resid-pre estimate summed over positions
    // is the directional derivative.
    let mut hooks = Hooks::new();
    let d2 = dir.clone();
    hooks = hooks.add_point(
        HookPoint::ResidPre(1),
        move |x: &Tensor, _: &HookContext| Ok((x + &d2)?),
    );
    let (_, src) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&toks(&CLEAN), |_: &str| true)
        .unwrap();
    let p = Patcher::from_caches(
        &m,
        (&toks(&CLEAN), clean),
        (&toks(&CLEAN), src),
        LogitDiff::new(272, 273),
    )
    .unwrap()
    .quiet(true);
    let a = p.attribution(Direction::Noise).unwrap();
    let est: f32 = (0..CLEAN.len())
        .map(|q| a.resid_pre.get(&[1, q]).unwrap())
        .sum();
    println!("finite difference {fd:.6}, gradient {est:.6}");
    assert!(
        (est as f64 - fd).abs() <= 1e-3 * (1.0 + fd.abs()),
        "gradient {est} vs finite difference {fd}"
    );
    assert!(fd.abs() > 1e-3, "the check needs a non-zero derivative");
}

#[test]
fn ablation_modes() {
    let (_d, m) = tiny();
    let t = toks(&CLEAN);
    // Zero-ablating head (2, 1) = zeroing its z by hand; head 0 (same kv head) untouched.
    let ablated = ablate(&m, &t, &[Component::Head(2, 1)], Ablation::Zero).unwrap();
    let hand = m
        .with_hooks(
            &Hooks::new()
                .add("blocks.2.attn.hook_z", |x: &Tensor, ctx: &HookContext| {
                    Intervention::ZeroHead(1).apply(x, ctx)
                })
                .unwrap(),
        )
        .forward(&t)
        .unwrap();
    assert_eq!(max_abs_diff(&ablated, &hand), 0.0);
    let hooks =
        mechinterp::ablation::ablation_hooks(&m, &t, &[Component::Head(2, 1)], Ablation::Zero)
            .unwrap();
    let (_, c) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&t, |n: &str| n == "blocks.2.attn.hook_z")
        .unwrap();
    let (_, clean) = m
        .run_with_cache_filtered(&t, |n: &str| n == "blocks.2.attn.hook_z")
        .unwrap();
    let z = c.get("blocks.2.attn.hook_z").unwrap();
    let zc = clean.get("blocks.2.attn.hook_z").unwrap();
    assert_eq!(max_abs(&z.i((.., .., 1)).unwrap()), 0.0);
    assert_eq!(
        max_abs_diff(&z.i((.., .., 0)).unwrap(), &zc.i((.., .., 0)).unwrap()),
        0.0
    );
    // Mean over a padded dataset excludes padding: a dataset of one prompt repeated (with a
    // longer one beside it) has the repeated prompt's activations as the mean at early positions.
    let data = Tensor::new(
        &[
            [2u32, 260, 261, 262, 270, 263, 264, 265, 266, 267],
            [2, 260, 261, 262, 270, 263, 264, 265, 0, 0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let (_, ds) = m.run_with_cache(&data).unwrap();
    assert_eq!(ds.seq_lengths(), &[10, 8]);
    let mean = ablate(&m, &t, &[Component::MlpOut(3)], Ablation::Mean(&ds)).unwrap();
    // Both dataset rows equal the prompt for 8 positions (causal), so the mean is the prompt's own.
    assert!(max_abs_diff(&mean, &m.forward(&t).unwrap()) < 1e-4);
    let pooled = ablate(&m, &t, &[Component::MlpOut(3)], Ablation::MeanPooled(&ds)).unwrap();
    assert!(max_abs_diff(&pooled, &m.forward(&t).unwrap()) > 1e-3);
    // Resampling is deterministic per seed and needs a long enough donor.
    let a = ablate(
        &m,
        &t,
        &[Component::AttnOut(1), Component::Resid(2, 3)],
        Ablation::Resample(&ds, 7),
    )
    .unwrap();
    let b = ablate(
        &m,
        &t,
        &[Component::AttnOut(1), Component::Resid(2, 3)],
        Ablation::Resample(&ds, 7),
    )
    .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let long = toks(&[2, 260, 261, 262, 270, 263, 264, 265, 266, 267, 268]);
    let e = ablate(
        &m,
        &long,
        &[Component::AttnOut(1)],
        Ablation::Resample(&ds, 1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least as long"), "{e}");
    let e = ablate(&m, &t, &[Component::Head(2, 9)], Ablation::Zero).unwrap_err();
    assert!(e.to_string().contains("4 query heads"), "{e}");
}

#[test]
fn metrics_are_what_they_say() {
    let (_d, m) = tiny();
    let logits = m.forward(&toks(&CLEAN)).unwrap();
    let row = logits.i((0, 7)).unwrap().to_vec1::<f32>().unwrap();
    assert!((logit_diff(&logits, 272, 273, None).unwrap() - (row[272] - row[273])).abs() < 1e-6);
    let swapped = swap_averaged_logit_diff(&logits, &logits, 272, 273, None).unwrap();
    assert!(
        swapped.abs() < 1e-6,
        "the same prompt both ways cancels: {swapped}"
    );
    assert_eq!(normalized(3.0, 5.0, 1.0), 0.5);
}

#[test]
fn default_model_toolkit() {
    let m = gemma();
    // Teacher-forced log-probability equals the sum of log-softmax entries by hand.
    let lp = continuation_logprob(
        m,
        "English: I like green apples.\nFrench:",
        " J'aime les pommes vertes.",
    )
    .unwrap();
    let ids = m
        .to_tokens("English: I like green apples.\nFrench:")
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let cont = m
        .tokenizer()
        .unwrap()
        .encode(" J'aime les pommes vertes.", false)
        .unwrap();
    let all: Vec<u32> = ids.iter().chain(&cont).copied().collect();
    let logits = m.forward(&toks(&all)).unwrap().i(0).unwrap();
    let ls = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let by_hand: f32 = cont
        .iter()
        .enumerate()
        .map(|(i, &t)| ls[ids.len() - 1 + i][t as usize])
        .sum();
    assert!(
        (lp.total - by_hand).abs() < 1e-3,
        "{} vs {by_hand}",
        lp.total
    );
    assert_eq!(lp.tokens.len(), cont.len());
    let wrong = continuation_logprob(
        m,
        "English: I like green apples.\nFrench:",
        " Le chien mange du pain.",
    )
    .unwrap();
    assert!(
        lp.mean() > wrong.mean(),
        "the right translation must score higher"
    );

    // Batched scoring equals one run per pair, with and without hooks, for prompts and
    // continuations of different lengths (right padding, spans of different widths).
    let items = [
        (
            "English: I like green apples.\nFrench:",
            " J'aime les pommes vertes.",
        ),
        (
            "English: The cat sleeps on the old red sofa.\nFrench:",
            " Le chat",
        ),
        (
            "English: I like green apples.\nFrench:",
            " Le chien mange du pain.",
        ),
    ];
    let steer = Hooks::new()
        .intervene("blocks.6.hook_resid_post", Intervention::Scale(0.7))
        .unwrap();
    for hooks in [Hooks::new(), steer] {
        let view = m.with_hooks(&hooks);
        let batched = continuation_logprobs(&view, &items).unwrap();
        assert_eq!(batched.len(), items.len());
        for ((p, c), b) in items.iter().zip(&batched) {
            let one = continuation_logprob(&view, p, c).unwrap();
            assert_eq!(one.tokens.len(), b.tokens.len());
            for ((t1, x1), (t2, x2)) in one.tokens.iter().zip(&b.tokens) {
                assert_eq!(t1, t2);
                assert!(
                    (x1 - x2).abs() < 1e-4,
                    "{p:?} + {c:?}: {x1} vs {x2} at {t1:?}"
                );
            }
        }
    }

    // Logit lens: the last layer reproduces the logits; DLA adds up (TransformerLens #523).
    let prompt = "The Eiffel Tower is in the city of";
    let lens = LogitLens::new(m, prompt).unwrap();
    let t = m.to_tokens(prompt).unwrap();
    let s = t.dim(1).unwrap();
    let (logits, cache) = m.run_with_cache(&t).unwrap();
    let last = lens.logits_at(s - 1).unwrap().i(m.cfg().n_layers).unwrap();
    assert!(max_abs_diff(&last, &logits.i((0, s - 1)).unwrap()) < 1e-3);
    let paris = mechinterp::metrics::single_token(m, " Paris").unwrap();
    let rome = mechinterp::metrics::single_token(m, " Rome").unwrap();
    let ranks = lens.rank_of(s - 1, paris).unwrap();
    assert_eq!(*ranks.last().unwrap(), 0, "Paris is the top prediction");
    assert!(ranks[2] > 0, "but not at layer 2");
    let dla = direct_logit_attribution(m, &cache, paris, rome, None).unwrap();
    let ld = logit_diff(&logits, paris, rome, None).unwrap();
    let sum: f32 = dla.components.values.iter().sum();
    println!(
        "logit diff {ld:.5}, DLA total {:.5}, components sum {sum:.5}",
        dla.logit_diff
    );
    assert!(
        (dla.logit_diff - ld).abs() <= 1e-4,
        "{} vs {ld}",
        dla.logit_diff
    );
    assert!(
        (sum - ld).abs() <= 1e-4 * (1.0 + ld.abs()),
        "components sum {sum} vs {ld}"
    );
    for l in 0..m.cfg().n_layers {
        let heads: f32 = (0..m.cfg().n_heads)
            .map(|h| dla.heads.get(&[l, h]).unwrap())
            .sum();
        let attn = dla.components.values[1 + 2 * l];
        assert!(
            (heads - attn).abs() <= 1e-4 * (1.0 + attn.abs()),
            "layer {l}: heads {heads} vs attn_out {attn}"
        );
    }

    // Attribution on the real model, against the sweep it estimates.
    let p0 = Patcher::new(
        m,
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
        LogitDiff::from_strs(m, " Mary", " John").unwrap(),
    )
    .unwrap()
    .quiet(true);
    let attr = p0.attribution(Direction::Denoise).unwrap();
    let act = p0
        .activation(PatchTarget::HeadOut, Direction::Denoise)
        .unwrap();
    let agree = attr.agreement(&act).unwrap();
    println!(
        "default model, head-out: attribution vs activation patching pearson {:.3} over {} heads",
        agree.pearson, agree.n
    );
    assert!(agree.pearson.is_finite() && agree.n == 72);

    // Activation patching on the real model: one entry by brute force; mismatched lengths fail.
    let clean = "When Mary and John went to the store, John gave a drink to";
    let corrupt = "When Mary and John went to the store, Mary gave a drink to";
    let p = Patcher::new(
        m,
        clean,
        corrupt,
        LogitDiff::from_strs(m, " Mary", " John").unwrap(),
    )
    .unwrap()
    .quiet(true);
    assert!(
        p.clean_value() > 0.0 && p.corrupted_value() < 0.0,
        "{} {}",
        p.clean_value(),
        p.corrupted_value()
    );
    let r = p
        .activation(PatchTarget::HeadOut, Direction::Denoise)
        .unwrap();
    let (_, cc) = m.run_with_cache(&m.to_tokens(clean).unwrap()).unwrap();
    let z = cc.get("blocks.11.attn.hook_z").unwrap();
    let hook =
        move |x: &Tensor, _: &HookContext| Ok(mask_where(x, |i| i[2] == 3).where_cond(&z, x)?);
    let l = m
        .with_hooks(&Hooks::new().add("blocks.11.attn.hook_z", hook).unwrap())
        .forward(&m.to_tokens(corrupt).unwrap())
        .unwrap();
    let mary = mechinterp::metrics::single_token(m, " Mary").unwrap();
    let john = mechinterp::metrics::single_token(m, " John").unwrap();
    let want = logit_diff(&l, mary, john, None).unwrap();
    assert!(
        (r.table.get(&[11, 3]).unwrap() - want).abs() <= 1e-3,
        "{} vs {want}",
        r.table.get(&[11, 3]).unwrap()
    );
    let e = Patcher::new(
        m,
        clean,
        "When Mary went to the store, Mary gave a drink to",
        LogitDiff::new(mary, john),
    )
    .err()
    .unwrap();
    let e = e.to_string();
    assert!(
        e.contains("same number of tokens") && e.contains("\" John\"") && e.contains("\" Mary\""),
        "{e}"
    );
}

#[test]
fn wavefront_sweeps_match_brute_force_for_every_entry() {
    // Activation sweeps run several layers' patches in one pass, each layer's rows joining the
    // batch at their own layer. Whatever the grouping (all layers in one wave by default, two
    // layers per wave, a layer split over waves), every entry must equal its own patched run.
    let (_d, m) = tiny();
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
    let want: Vec<Vec<f32>> = (0..6)
        .map(|l| {
            (0..4)
                .map(|h| {
                    by_hand(&m, &CORRUPT, &CLEAN, HookPoint::Z(l), move |x| {
                        mask_where(x, |i| i[2] == h)
                    })
                })
                .collect()
        })
        .collect();
    let want_resid: Vec<Vec<f32>> = (0..6)
        .map(|l| {
            (0..8)
                .map(|p| {
                    by_hand(&m, &CORRUPT, &CLEAN, HookPoint::ResidPre(l), move |x| {
                        mask_where(x, |i| i[1] == p)
                    })
                })
                .collect()
        })
        .collect();
    for batch in [None, Some(9), Some(3)] {
        let p = Patcher::from_tokens(&m, &toks(&CLEAN), &toks(&CORRUPT), LogitDiff::new(272, 273))
            .unwrap()
            .quiet(true);
        let p = match batch {
            Some(b) => p.batch_size(b),
            None => p,
        };
        let t = p
            .activation(PatchTarget::HeadOut, Direction::Denoise)
            .unwrap();
        let r = p
            .activation(PatchTarget::ResidPre, Direction::Denoise)
            .unwrap();
        for (l, (heads, positions)) in want.iter().zip(&want_resid).enumerate() {
            for (h, &w) in heads.iter().enumerate() {
                let got = t.table.get(&[l, h]).unwrap();
                assert!(close(got, w), "batch {batch:?}, L{l}H{h}: {got} vs {w}");
            }
            for (q, &w) in positions.iter().enumerate() {
                let got = r.table.get(&[l, q]).unwrap();
                assert!(
                    close(got, w),
                    "batch {batch:?}, resid L{l} pos {q}: {got} vs {w}"
                );
            }
        }
    }
}
