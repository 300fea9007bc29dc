//! Padded batches never read padding: for prompts of different lengths, every function that
//! takes a position from logits or a cache gives, on the right-padded batch, what it gives on
//! each prompt alone (≤ 1e-4), or refuses with an error that names the padded row.

use crate::common::{gemma, max_abs_diff};
use mechinterp::prelude::*;

const A: &str = "The Eiffel Tower is in the city of";
const B: &str = "The Colosseum is in";
const TOL: f32 = 1e-4;

fn ids(m: &HookedTransformer) -> (u32, u32) {
    (m.token_id(" Paris").unwrap(), m.token_id(" Rome").unwrap())
}

#[test]
fn logit_diff_reads_each_rows_last_token() {
    let m = gemma();
    let (paris, rome) = ids(m);
    let batch = m.to_tokens_batch(&[A, B]).unwrap();
    let logits = m.forward(&batch).unwrap();
    let (na, nb) = (
        m.to_tokens(A).unwrap().dim(1).unwrap(),
        m.to_tokens(B).unwrap().dim(1).unwrap(),
    );
    assert_ne!(na, nb, "the prompts must differ in length");
    assert_eq!(logits.lengths(), &[na, nb]);
    let one = |t: &str| {
        logit_diff(
            &m.forward(&m.to_tokens(t).unwrap()).unwrap(),
            paris,
            rome,
            None,
        )
        .unwrap()
    };
    let (a, b) = (one(A), one(B));
    let batched = logit_diff(&logits, paris, rome, None).unwrap();
    println!(
        "one by one {a:.4} and {b:.4} (mean {:.4}); batched {batched:.4}",
        (a + b) / 2.0
    );
    assert!((batched - (a + b) / 2.0).abs() <= TOL);
    // The bare tensor cannot know its padding; that is what Logits is for.
    let bare = logit_diff(&*logits, paris, rome, None).unwrap();
    assert!(
        (bare - batched).abs() > 1e-2,
        "padding should change the bare reading"
    );
    // Swapped answers on the same batch: the swap-averaged metric agrees too.
    let sw = swap_averaged_logit_diff(&logits, &logits, paris, rome, None).unwrap();
    assert!(sw.abs() <= TOL);
    // A position that is padding in row 1 is refused, naming the row.
    let e = logit_diff(&logits, paris, rome, Some(na - 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1") && e.contains("padding"), "{e}");
    // A position real in both rows is read as is.
    let p = nb - 1;
    let at = logit_diff(&logits, paris, rome, Some(p)).unwrap();
    let ap = logit_diff(
        &m.forward(&m.to_tokens(A).unwrap()).unwrap(),
        paris,
        rome,
        Some(p),
    )
    .unwrap();
    assert!((at - (ap + b) / 2.0).abs() <= TOL);
}

#[test]
fn top_next_tokens_reads_the_first_rows_last_token() {
    let m = gemma();
    // The shorter prompt first, so its row is the padded one.
    let logits = m.forward(&m.to_tokens_batch(&[B, A]).unwrap()).unwrap();
    let alone = m.forward(&m.to_tokens(B).unwrap()).unwrap();
    let (x, y) = (
        m.top_next_tokens(&logits, 5).unwrap(),
        m.top_next_tokens(&alone, 5).unwrap(),
    );
    for ((s1, p1), (s2, p2)) in x.iter().zip(&y) {
        assert_eq!(s1, s2);
        assert!((p1 - p2).abs() <= TOL);
    }
}

#[test]
fn run_with_cache_and_hooks_keep_the_lengths() {
    let m = gemma();
    let batch = m.to_tokens_batch(&[A, B]).unwrap();
    let (logits, cache) = m.run_with_cache(&batch).unwrap();
    assert_eq!(cache.seq_lengths(), logits.lengths());
    let hooked = m
        .with_hooks(
            &Hooks::new()
                .add("blocks.0.hook_resid_pre", |x: &Tensor, _: &HookContext| {
                    Ok(x.clone())
                })
                .unwrap(),
        )
        .forward(&batch)
        .unwrap();
    assert_eq!(hooked.lengths(), logits.lengths());
    // Every real position of the cache equals the prompt's own run.
    for (row, t) in [A, B].iter().enumerate() {
        let (_, c1) = m.run_with_cache(&m.to_tokens(t).unwrap()).unwrap();
        let n = logits.lengths()[row];
        for name in ["blocks.5.hook_resid_post", "blocks.17.attn.hook_z"] {
            let got = cache
                .get(name)
                .unwrap()
                .get(row)
                .unwrap()
                .narrow(0, 0, n)
                .unwrap();
            let want = c1.get(name).unwrap().get(0).unwrap();
            assert!(max_abs_diff(&got, &want) <= TOL, "{name} row {row}");
        }
    }
}

#[test]
fn direct_logit_attribution_reads_each_rows_last_token() {
    let m = gemma();
    let (paris, rome) = ids(m);
    let (_, cache) = m
        .run_with_cache(&m.to_tokens_batch(&[A, B]).unwrap())
        .unwrap();
    let batched = direct_logit_attribution(m, &cache, paris, rome, None).unwrap();
    let one = |t: &str| {
        let (_, c) = m.run_with_cache(&m.to_tokens(t).unwrap()).unwrap();
        direct_logit_attribution(m, &c, paris, rome, None).unwrap()
    };
    let (a, b) = (one(A), one(B));
    assert!((batched.logit_diff - (a.logit_diff + b.logit_diff) / 2.0).abs() <= TOL);
    let flat = |t: &Table| -> Vec<f32> {
        t.to_tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for (x, (y, z)) in [
        (&batched.heads, (&a.heads, &b.heads)),
        (&batched.components, (&a.components, &b.components)),
    ] {
        for (got, (p, q)) in flat(x).iter().zip(flat(y).iter().zip(flat(z))) {
            assert!((got - (p + q) / 2.0).abs() <= TOL, "{got} vs {p} / {q}");
        }
    }
    let e = direct_logit_attribution(m, &cache, paris, rome, Some(cache.seq_lengths()[0] - 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1"), "{e}");
}

#[test]
fn ablation_on_a_padded_batch_equals_each_prompt_alone() {
    let m = gemma();
    let (paris, rome) = ids(m);
    let data_prompts = [
        "The Louvre is in the city of",
        "Big Ben stands in",
        "The Brandenburg Gate is in",
    ];
    let (_, data) = m
        .run_with_cache(&m.to_tokens_batch(&data_prompts).unwrap())
        .unwrap();
    let heads = [Component::Head(3, 1), Component::MlpOut(5)];
    for how in [
        Ablation::Mean(&data),
        Ablation::MeanPooled(&data),
        Ablation::Zero,
    ] {
        let batched = ablate(m, &m.to_tokens_batch(&[A, B]).unwrap(), &heads, how).unwrap();
        let one = |t: &str| {
            logit_diff(
                &ablate(m, &m.to_tokens(t).unwrap(), &heads, how).unwrap(),
                paris,
                rome,
                None,
            )
            .unwrap()
        };
        let want = (one(A) + one(B)) / 2.0;
        let got = logit_diff(&batched, paris, rome, None).unwrap();
        assert!((got - want).abs() <= TOL, "{got} vs {want}");
    }
}

#[test]
fn the_lens_and_patching_refuse_batches() {
    let m = gemma();
    let batch = m.to_tokens_batch(&[A, B]).unwrap();
    let e = LogitLens::from_tokens(m, &batch, vec![])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("one prompt"), "{e}");
    let e = Patcher::new(m, A, B, LogitDiff::from_strs(m, " Paris", " Rome").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("same number of tokens"), "{e}");
}

#[test]
fn bos_is_under_the_users_control() {
    let m = gemma();
    let with = m
        .to_tokens(A)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let without = m
        .to_tokens_with(A, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(with[0], 2);
    assert_eq!(&with[1..], without.as_slice());
    let nb = m.with_prepend_bos(false);
    assert_eq!(
        nb.to_tokens(A)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        without
    );
    assert_eq!(nb.to_str_tokens(A).unwrap().len(), without.len());
    assert!(m.bos_rule().unwrap().contains("prepended BOS <bos> (id 2)"));
    assert!(nb.bos_rule().unwrap().contains("no BOS prepended"));
}
