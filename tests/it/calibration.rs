//! Calibration of the paired head statistics on synthetic scores (no model): the false-positive
//! rate under a true null, the power to find a planted effect, and bootstrap coverage.

use mechinterp::stats::Rng;
use mechinterp::translation::stats::{paired_stats, select_heads, SelectOptions};

const HEADS: usize = 72;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Rng) -> f32 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Per-source differences translation − random for `n` sources: both scores drawn around a
/// per-head base with noise `sd`, the translation score shifted by `effect[k]`.
fn differences(n: usize, effect: &[f32], sd: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let base: Vec<f32> = (0..HEADS)
        .map(|_| 0.1 + 0.05 * normal(&mut rng).abs())
        .collect();
    (0..n)
        .map(|_| {
            (0..HEADS)
                .map(|k| {
                    let t = base[k] + effect[k] + sd * normal(&mut rng);
                    let r = base[k] + sd * normal(&mut rng);
                    t - r
                })
                .collect()
        })
        .collect()
}

#[test]
fn under_a_true_null_few_runs_list_any_head() {
    let seeds = 200;
    let mut with_any = 0;
    for seed in 0..seeds {
        let d = differences(40, &[0.0; HEADS], 0.03, seed);
        let s = paired_stats(&d, 0, 2000, 0.95, seed);
        if s.q.iter().any(|&q| q <= 0.05) {
            with_any += 1;
        }
    }
    let share = with_any as f32 / seeds as f32;
    eprintln!("null: {with_any} of {seeds} runs listed a head at FDR 5%");
    assert!(
        share <= 0.08,
        "{with_any} of {seeds} null runs listed a head"
    );
}

#[test]
fn a_planted_effect_on_three_heads_is_found() {
    // Effect 0.04 in mean diagonal attention with per-score noise sd 0.03 (the per-source
    // differences' sd is 0.042, so a standardised effect of 0.94), 40 sources.
    let mut effect = [0.0f32; HEADS];
    for k in [5, 40, 66] {
        effect[k] = 0.04;
    }
    let seeds = 100;
    let mut found_all = 0;
    let mut false_heads = 0;
    for seed in 0..seeds {
        let d = differences(40, &effect, 0.03, 1000 + seed);
        let s = paired_stats(&d, 0, 2000, 0.95, seed);
        if [5, 40, 66].iter().all(|&k| s.q[k] <= 0.05) {
            found_all += 1;
        }
        false_heads += (0..HEADS)
            .filter(|k| ![5, 40, 66].contains(k) && s.q[*k] <= 0.05)
            .count();
    }
    eprintln!("planted: all three found in {found_all} of {seeds} runs, {false_heads} false heads");
    assert!(
        found_all as f32 >= 0.9 * seeds as f32,
        "all three planted heads found in {found_all} of {seeds} runs"
    );
    assert!(
        false_heads <= seeds as usize / 5,
        "{false_heads} false heads in {seeds} runs"
    );
}

#[test]
fn bootstrap_intervals_cover_the_true_mean() {
    let seeds = 100;
    let (mut covered, mut total) = (0usize, 0usize);
    for seed in 0..seeds {
        let mut effect = [0.0f32; HEADS];
        effect
            .iter_mut()
            .enumerate()
            .for_each(|(k, e)| *e = 0.001 * k as f32);
        let d = differences(60, &effect, 0.03, 5000 + seed);
        let s = paired_stats(&d, 1000, 0, 0.95, seed);
        for (k, &e) in effect.iter().enumerate() {
            total += 1;
            covered += usize::from(s.ci_low[k] <= e && e <= s.ci_high[k]);
        }
    }
    let share = covered as f32 / total as f32;
    eprintln!("coverage: {covered} of {total} intervals ({share:.3})");
    assert!(
        (share - 0.95).abs() <= 0.03,
        "coverage {share:.3} over {total} intervals"
    );
}

#[test]
fn discovery_and_confirmation_find_and_replicate_a_planted_effect() {
    // 80 sources split 40 / 40; effect 0.05 with per-score noise sd 0.035 (standardised 1.0).
    let mut effect = [0.0f32; HEADS];
    for k in [3, 30, 70] {
        effect[k] = 0.05;
    }
    let o = SelectOptions {
        n_boot: 500,
        n_perm: 2000,
        ..Default::default()
    };
    let seeds = 50;
    let (mut all_confirmed, mut false_confirmed, mut null_any) = (0, 0, 0);
    for seed in 0..seeds {
        let d = differences(80, &effect, 0.035, 9000 + seed);
        let sel = select_heads(&d, 8, &SelectOptions { seed, ..o.clone() });
        assert_eq!(sel.discovery.len() + sel.confirmation.len(), 80);
        let flat: Vec<usize> = sel.confirmed.iter().map(|h| h.layer * 8 + h.head).collect();
        if [3, 30, 70].iter().all(|k| flat.contains(k)) {
            all_confirmed += 1;
        }
        false_confirmed += flat.iter().filter(|k| ![3, 30, 70].contains(*k)).count();
        let null = differences(80, &[0.0; HEADS], 0.035, 19000 + seed);
        null_any += usize::from(
            !select_heads(&null, 8, &SelectOptions { seed, ..o.clone() })
                .confirmed
                .is_empty(),
        );
    }
    eprintln!("split: all three confirmed in {all_confirmed} of {seeds}, {false_confirmed} false confirmations, {null_any} null runs confirmed a head");
    assert!(
        all_confirmed as f32 >= 0.9 * seeds as f32,
        "{all_confirmed} of {seeds}"
    );
    assert!(
        false_confirmed <= 2,
        "{false_confirmed} false confirmations"
    );
    assert!(null_any <= 2, "{null_any} null runs confirmed a head");
}

#[test]
fn split_zero_finds_on_every_source_and_confirms_nothing() {
    let mut effect = [0.0f32; HEADS];
    effect[7] = 0.05;
    let d = differences(30, &effect, 0.03, 1);
    let sel = select_heads(
        &d,
        8,
        &SelectOptions {
            split: 0.0,
            n_perm: 2000,
            n_boot: 200,
            ..Default::default()
        },
    );
    assert_eq!(sel.discovery.len(), 30);
    assert!(sel.confirmation.is_empty() && sel.confirmation_stats.is_none());
    assert!(sel.found.iter().any(|h| h.layer == 0 && h.head == 7));
    assert!(sel.confirmed.is_empty());
}
