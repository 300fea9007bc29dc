//! Honest statistics for head scores: bootstrap confidence intervals over sentence pairs, a
//! permutation test of translation against random, and Benjamini–Hochberg control of the
//! false-discovery rate over heads.

use crate::stats::{benjamini_hochberg, quantile, Rng};

/// Per-head statistics of translation − random.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadStats {
    /// Mean translation − mean random, per head.
    pub diff: Vec<f32>,
    /// Lower end of the bootstrap interval.
    pub ci_low: Vec<f32>,
    /// Upper end.
    pub ci_high: Vec<f32>,
    /// One-sided permutation p-value (translation > random).
    pub p: Vec<f32>,
    /// Benjamini–Hochberg adjusted p-values (q-values) over all heads.
    pub q: Vec<f32>,
    /// Confidence level of the intervals.
    pub level: f32,
    /// Bootstrap resamples.
    pub n_boot: usize,
    /// Permutations.
    pub n_perm: usize,
}

fn column_means(rows: &[Vec<f32>], idx: impl Iterator<Item = usize>, h: usize) -> Vec<f32> {
    let mut s = vec![0f32; h];
    let mut n = 0usize;
    for i in idx {
        for (a, x) in s.iter_mut().zip(&rows[i]) {
            *a += x;
        }
        n += 1;
    }
    s.iter().map(|x| x / n.max(1) as f32).collect()
}

/// Bootstrap (pairs resampled with replacement, each group on its own) and permutation
/// statistics of `t` (translation scores, [pair][head]) against `r` (random control).
pub fn head_stats(
    t: &[Vec<f32>],
    r: &[Vec<f32>],
    n_boot: usize,
    n_perm: usize,
    level: f32,
    seed: u64,
) -> HeadStats {
    let h = t.first().map_or(0, |x| x.len());
    let (nt, nr) = (t.len(), r.len());
    let mt = column_means(t, 0..nt, h);
    let mr = column_means(r, 0..nr, h);
    let diff: Vec<f32> = mt.iter().zip(&mr).map(|(a, b)| a - b).collect();
    let mut rng = Rng::new(seed);

    // Bootstrap.
    let mut boots: Vec<Vec<f32>> = vec![Vec::with_capacity(n_boot); h];
    for _ in 0..n_boot {
        let bt = column_means(t, (0..nt).map(|_| rng.below(nt)), h);
        let br = column_means(r, (0..nr).map(|_| rng.below(nr)), h);
        for k in 0..h {
            boots[k].push(bt[k] - br[k]);
        }
    }
    let alpha = (1.0 - level) / 2.0;
    let mut ci_low = Vec::with_capacity(h);
    let mut ci_high = Vec::with_capacity(h);
    for b in boots.iter_mut() {
        ci_low.push(quantile(b, alpha));
        ci_high.push(quantile(b, 1.0 - alpha));
    }

    // Permutation: shuffle the translation / random labels of the pooled prompts; one
    // permutation serves every head.
    let pooled: Vec<&Vec<f32>> = t.iter().chain(r.iter()).collect();
    let n = pooled.len();
    let total: Vec<f32> = (0..h)
        .map(|k| pooled.iter().map(|row| row[k]).sum())
        .collect();
    let mut exceed = vec![0usize; h];
    let mut idx: Vec<usize> = (0..n).collect();
    for _ in 0..n_perm {
        // Partial Fisher–Yates: the first nt entries are a uniform random subset.
        for i in 0..nt.min(n) {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        let mut s = vec![0f32; h];
        for &i in &idx[..nt] {
            for (a, x) in s.iter_mut().zip(pooled[i]) {
                *a += x;
            }
        }
        for k in 0..h {
            let d = s[k] / nt as f32 - (total[k] - s[k]) / (n - nt).max(1) as f32;
            // A tiny tolerance counts ties (identical score sets) as exceeding.
            if d >= diff[k] - 1e-7 {
                exceed[k] += 1;
            }
        }
    }
    let p: Vec<f32> = exceed
        .iter()
        .map(|&e| (e + 1) as f32 / (n_perm + 1) as f32)
        .collect();
    let q = benjamini_hochberg(&p);
    HeadStats {
        diff,
        ci_low,
        ci_high,
        p,
        q,
        level,
        n_boot,
        n_perm,
    }
}
