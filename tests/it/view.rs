//! The hooked view: `model.with_hooks(&hooks)` has the model's whole API, and every technique
//! given the view runs its hooks. With no hooks the view gives bit-for-bit the model's numbers;
//! with a hook set every technique's answer changes; nested views compose inner first.

use std::sync::{Arc, Mutex};

use candle_core::{Device, IndexOp, Tensor};
use mechinterp::ablation::{ablate, Ablation, Component};
use mechinterp::metrics::{continuation_logprob, continuation_logprobs, LogitDiff};
use mechinterp::prelude::*;

fn tiny() -> HookedTransformer {
    let dir = crate::common::repo().join("tests/fixtures/models/gemma3");
    HookedTransformer::from_local_dir(dir).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

const CLEAN: [u32; 8] = [2, 17, 42, 99, 250, 7, 180, 64];
const CORRUPT: [u32; 8] = [2, 17, 43, 98, 250, 7, 180, 64];

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// Everything a technique answers for this model, as text (f32 values print exactly).
fn answers(m: &HookedTransformer) -> Vec<(&'static str, String)> {
    let (t, k) = (ids(&CLEAN), ids(&CORRUPT));
    let metric = LogitDiff::new(5, 9);
    let mut out = vec![];
    out.push(("forward", format!("{:?}", vals(&m.forward(&t).unwrap()))));
    let (_, cache) = m.run_with_cache(&t).unwrap();
    out.push((
        "run_with_cache",
        format!(
            "{:?}",
            vals(&cache.get("blocks.3.hook_resid_post").unwrap())
        ),
    ));
    let g = m
        .generate_ids(&[CLEAN.to_vec()], &GenerateOptions::greedy(4))
        .unwrap();
    out.push(("generate", format!("{:?}", g[0].logprobs)));
    out.push((
        "continuation_logprob",
        format!(
            "{:?}",
            continuation_logprob(m, "I like green", " apples").unwrap()
        ),
    ));
    out.push((
        "continuation_logprobs",
        format!(
            "{:?}",
            continuation_logprobs(m, &[("I like", " green apples"), ("green", " apples")]).unwrap()
        ),
    ));
    let ab = ablate(m, &t, &[Component::Head(2, 1)], Ablation::Zero).unwrap();
    out.push(("ablate", format!("{:?}", vals(&ab))));
    let lens =
        LogitLens::from_tokens(m, &t, CLEAN.iter().map(|i| i.to_string()).collect()).unwrap();
    out.push((
        "logit lens",
        format!("{:?}", lens.logits_of(7, &[5, 9]).unwrap()),
    ));
    let dla = direct_logit_attribution(m, &cache, 5, 9, None).unwrap();
    out.push(("dla", format!("{dla:?}")));
    let p = Patcher::from_tokens(m, &t, &k, metric).unwrap().quiet(true);
    out.push((
        "activation patching",
        format!(
            "{:?}",
            p.activation(PatchTarget::HeadOut, Direction::Denoise)
                .unwrap()
        ),
    ));
    out.push((
        "path patching",
        format!(
            "{:?}",
            p.path_sweep(&Receivers::Logits, Direction::Noise, false)
                .unwrap()
        ),
    ));
    out.push((
        "attribution patching",
        format!("{:?}", p.attribution(Direction::Denoise).unwrap().head_out),
    ));
    out
}

#[test]
fn an_empty_view_gives_the_models_numbers_and_a_hooked_view_changes_every_technique() {
    let m = tiny();
    let plain = answers(&m);
    let empty = answers(&m.with_hooks(&Hooks::new()));
    for ((name, a), (_, b)) in plain.iter().zip(&empty) {
        assert_eq!(a, b, "{name}: the empty view differs from the model");
    }
    // Halve every head's output in layers 0–2 (hook_z; hook_pattern for the scores, which
    // read patterns only).
    let hooks = Hooks::new()
        .add_filter(
            |n| {
                n.ends_with("attn.hook_z")
                    && !n.starts_with("blocks.3")
                    && !n.starts_with("blocks.4")
                    && !n.starts_with("blocks.5")
            },
            |x, _| Ok((x * 0.5)?),
        )
        .add_filter(
            |n| n.ends_with("hook_pattern"),
            |x, _| Ok((x.sqr()? * 1.0)?),
        );
    let hooked = answers(&m.with_hooks(&hooks));
    for ((name, a), (_, b)) in plain.iter().zip(&hooked) {
        assert_ne!(a, b, "{name}: the hook set did not change this technique");
    }
}

#[test]
fn nested_views_run_the_inner_hooks_first() {
    let m = tiny();
    let t = ids(&CLEAN);
    let (_, cache) = m.run_with_cache(&t).unwrap();
    let embed = cache.get("hook_embed").unwrap();
    let scale = Hooks::new()
        .intervene("hook_embed", Intervention::Scale(2.0))
        .unwrap();
    let one = Tensor::new(1f32, &Device::Cpu).unwrap();
    let add = Hooks::new()
        .intervene("hook_embed", Intervention::Add(one))
        .unwrap();
    let (_, nested) = m
        .with_hooks(&scale)
        .with_hooks(&add)
        .run_with_cache(&t)
        .unwrap();
    let want = ((embed * 2.0).unwrap() + 1.0).unwrap();
    assert_eq!(vals(&nested.get("hook_embed").unwrap()), vals(&want));
    // A technique's own hooks (a patch, an ablation) run after the view's, and the view's
    // hooks also act in the base runs a patcher caches.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let spy = Hooks::new()
        .observe("blocks.1.attn.hook_z", move |x, _| {
            s2.lock()
                .unwrap()
                .push(x.i((0, 3, 1, 0)).unwrap().to_scalar::<f32>().unwrap());
            Ok(())
        })
        .unwrap();
    let view = m.with_hooks(&spy);
    ablate(&view, &t, &[Component::Head(1, 1)], Ablation::Zero).unwrap();
    // The spy ran before the ablation zeroed head 1: it saw the live value.
    let live = cache
        .get("blocks.1.attn.hook_z")
        .unwrap()
        .i((0, 3, 1, 0))
        .unwrap();
    assert_eq!(seen.lock().unwrap()[0], live.to_scalar::<f32>().unwrap());
    // The view's hooks are the model's: `without_hooks` drops them.
    assert_eq!(view.active_hooks().len(), 1);
    assert!(view.without_hooks().active_hooks().is_empty());
}

#[test]
fn hooks_by_name_filter_read_only_and_clone() {
    let m = tiny();
    let t = ids(&CLEAN);
    let count = Arc::new(Mutex::new(0usize));
    let c2 = count.clone();
    let hooks = Hooks::new().observe_filter(
        |n| n.ends_with("hook_z"),
        move |_, _| {
            *c2.lock().unwrap() += 1;
            Ok(())
        },
    );
    let copy = hooks.clone();
    let a = m.with_hooks(&copy).forward(&t).unwrap();
    assert_eq!(
        *count.lock().unwrap(),
        m.cfg().n_layers,
        "one call per layer's hook_z"
    );
    // Read-only hooks leave every logit as it was.
    assert_eq!(vals(&a), vals(&m.forward(&t).unwrap()));
    // A layer the model lacks is refused when the view runs, naming the layer count.
    let far = Hooks::new()
        .intervene("blocks.40.hook_resid_pre", Intervention::Zero)
        .unwrap();
    let e = m.with_hooks(&far).forward(&t).unwrap_err().to_string();
    assert!(e.contains("layers"), "{e}");
    // to_tokens_batch takes owned strings as well as &str.
    let texts = vec!["I like".to_string(), "green apples".to_string()];
    assert_eq!(
        vals(&m.to_tokens_batch(&texts).unwrap()),
        vals(&m.to_tokens_batch(&["I like", "green apples"]).unwrap())
    );
}

#[test]
fn the_partial_pass_reruns_layers_from_a_residual() {
    let m = tiny();
    let t = ids(&CLEAN);
    let (logits, cache) = m.run_with_cache(&t).unwrap();
    for layer in [0, 3, m.cfg().n_layers] {
        let resid = if layer == m.cfg().n_layers {
            cache
                .get(&format!("blocks.{}.hook_resid_post", layer - 1))
                .unwrap()
        } else {
            cache
                .get(&format!("blocks.{layer}.hook_resid_pre"))
                .unwrap()
        };
        let out = m.pass_from(layer, resid).logits_at(&[7]).run().unwrap();
        let want = logits.i((.., 7..8, ..)).unwrap();
        let d = vals(&(out.logits - want).unwrap())
            .iter()
            .fold(0f32, |a, x| a.max(x.abs()));
        assert!(d < 1e-4, "from layer {layer}: {d}");
    }
    // The per-layer pieces are the forward pass's: layer 2's attention and MLP from the cache.
    let x = cache.get("blocks.2.attn.hook_in").unwrap();
    let pattern = cache.get("blocks.2.attn.hook_pattern").unwrap();
    let attn = m.attention(2, &x, Some(&pattern)).unwrap();
    let attn = m.norm(Norm::Ln1Post(2), &attn, None).unwrap();
    let want = cache.get("blocks.2.hook_attn_out").unwrap();
    let d = vals(&(attn - want).unwrap())
        .iter()
        .fold(0f32, |a, x| a.max(x.abs()));
    assert!(d < 1e-5, "attention piece: {d}");
    let mlp = m
        .mlp(2, &cache.get("blocks.2.mlp.hook_in").unwrap())
        .unwrap();
    let scale = cache.get("blocks.2.ln2_post.hook_scale").unwrap();
    let mlp = m.norm(Norm::Ln2Post(2), &mlp, Some(&scale)).unwrap();
    let want = cache.get("blocks.2.hook_mlp_out").unwrap();
    let d = vals(&(mlp - want).unwrap())
        .iter()
        .fold(0f32, |a, x| a.max(x.abs()));
    assert!(d < 1e-5, "mlp piece: {d}");
}

#[test]
fn the_translation_scores_run_the_views_hooks() {
    // The tiny tokenizer has no one-token language tags: the default model.
    let m = crate::common::gemma();
    let pairs = vec![
        SentencePair {
            src: "I like green apples.".into(),
            tgt: "J'aime les pommes vertes.".into(),
        },
        SentencePair {
            src: "The cat sleeps.".into(),
            tgt: "Le chat dort.".into(),
        },
        SentencePair {
            src: "We eat bread.".into(),
            tgt: "Nous mangeons du pain.".into(),
        },
    ];
    let opts = ScoreOptions {
        quiet: true,
        ..ScoreOptions::default()
    };
    let score = |m: &HookedTransformer| {
        format!(
            "{:?}",
            score_heads(m, &pairs, "en", "fr", &opts)
                .unwrap()
                .paired_differences()
        )
    };
    let plain = score(m);
    assert_eq!(score(&m.with_hooks(&Hooks::new())), plain);
    let zero = Hooks::new()
        .intervene("blocks.3.hook_resid_post", Intervention::Scale(0.5))
        .unwrap();
    assert_ne!(score(&m.with_hooks(&zero)), plain);
}
