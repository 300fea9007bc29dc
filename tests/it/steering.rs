//! Steering helpers and the bootstrap interval: the same numbers as the notebook code they
//! replace (kept here as the reference), and the language measures on known texts.

use candle_core::IndexOp;
use mechinterp::prelude::*;
use mechinterp::stats::{bootstrap_interval, quantile, Rng};
use mechinterp::steering;

#[test]
fn gaussian_and_bootstrap_match_the_code_they_replace() {
    let (mut a, mut b) = (Rng::new(8), Rng::new(8));
    for _ in 0..100 {
        let u1 = ((a.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (a.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let old = ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32;
        assert_eq!(b.gaussian() as f32, old);
    }
    let v: Vec<f32> = (0..37)
        .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 3.0)
        .collect();
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let mut rng = Rng::new(1);
    let mut stats: Vec<f32> = (0..2000)
        .map(|_| {
            mean(
                &(0..v.len())
                    .map(|_| v[rng.below(v.len())])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let old = (
        mean(&v),
        quantile(&mut stats, 0.025),
        quantile(&mut stats, 0.975),
    );
    assert_eq!(bootstrap_interval(&v, mean, 2000, 0.95, 1), old);
}

#[test]
fn steering_vectors_and_language_shares() {
    let dir = crate::common::repo().join("tests/fixtures/models/gemma3");
    let m = HookedTransformer::from_local_dir(dir).unwrap();
    let pos = vec!["I like green apples".to_string(), "The cat".to_string()];
    let neg = vec!["I like red apples".to_string(), "The dog".to_string()];
    let v = steering::mean_difference(&m, &pos, &neg).unwrap();
    assert_eq!(v.len(), m.cfg().n_layers);
    // Layer 2 by hand.
    let last = |t: &str| {
        let toks = m.to_tokens(t).unwrap();
        let (_, c) = m.run_with_cache(&toks).unwrap();
        c.get("blocks.2.hook_resid_post")
            .unwrap()
            .i((0, toks.dim(1).unwrap() - 1))
            .unwrap()
    };
    let want = ((((last(&pos[0]) - last(&neg[0])).unwrap()
        + (last(&pos[1]) - last(&neg[1])).unwrap())
    .unwrap())
        / 2.0)
        .unwrap();
    let d = (&v[2] - want)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "{d}");
    let control = steering::random_like(&v, 8).unwrap();
    let (nv, nc) = (
        steering::norms(&v).unwrap(),
        steering::norms(&control).unwrap(),
    );
    for (a, b) in nv.iter().zip(&nc) {
        assert!((a - b).abs() <= 1e-4 * a.max(1.0), "{a} vs {b}");
    }
    // Steering with the zero scale changes nothing.
    let toks = m.to_tokens("I like").unwrap();
    let plain = m
        .forward(&toks)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let zero = m.with_hooks(&steering::add_hooks(&v[2], 2, 0.0).unwrap());
    let same = zero
        .forward(&toks)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(plain, same);

    let fr = vec!["le chat mange".to_string(), "le chien".to_string()];
    let de = vec!["die katze".to_string(), "der hund mange".to_string()];
    let (a, b) = steering::distinctive_words(&fr, &de);
    assert!(a.contains("le") && !a.contains("mange") && b.contains("katze"));
    let texts = vec![
        "le chat et la katze".to_string(),
        "lalalalalalalalala".to_string(),
    ];
    let s = steering::language_share(&texts, &a, &b);
    assert_eq!((s.counted, s.repetitive), (3, 1));
    assert!((s.share - 2.0 / 3.0).abs() < 1e-6);
}
