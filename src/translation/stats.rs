//! Honest statistics for head scores. The paired design (one translation − random difference
//! per source sentence): a bootstrap over sources, a sign-flip permutation test per head and
//! Benjamini–Hochberg over heads, with discovery on one half of the sources and confirmation
//! on the other. The original pooled statistics (each group resampled on its own, labels
//! permuted over all 2n prompts) stay beside them, bit-exact.

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

/// Per-head statistics from the observed differences, each head's bootstrap replicates (sorted
/// here) and its permutation exceedance count: percentile intervals, p-values that count the
/// observed arrangement (never 0) and Benjamini–Hochberg q-values.
fn assemble(
    diff: Vec<f32>,
    mut boots: Vec<Vec<f32>>,
    exceed: &[usize],
    level: f32,
    n_perm: usize,
) -> HeadStats {
    let alpha = (1.0 - level) / 2.0;
    let n_boot = boots.first().map_or(0, |b| b.len());
    let (mut ci_low, mut ci_high) = (
        Vec::with_capacity(diff.len()),
        Vec::with_capacity(diff.len()),
    );
    for b in boots.iter_mut() {
        ci_low.push(quantile(b, alpha));
        ci_high.push(quantile(b, 1.0 - alpha));
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
    assemble(diff, boots, &exceed, level, n_perm)
}

/// Paired statistics of per-source differences `d` ([source][head], translation − random for
/// the same source sentence): the mean per head, a bootstrap interval resampling sources, a
/// one-sided sign-flip permutation p-value (H0: the difference is symmetric around 0) and
/// Benjamini–Hochberg q-values over heads. One draw of resamples and signs serves every head.
pub fn paired_stats(
    d: &[Vec<f32>],
    n_boot: usize,
    n_perm: usize,
    level: f32,
    seed: u64,
) -> HeadStats {
    let h = d.first().map_or(0, |x| x.len());
    let n = d.len();
    let diff = column_means(d, 0..n, h);
    let mut rng = Rng::new(seed);

    let mut boots: Vec<Vec<f32>> = vec![Vec::with_capacity(n_boot); h];
    for _ in 0..n_boot {
        let b = column_means(d, (0..n).map(|_| rng.below(n)), h);
        for (k, x) in b.into_iter().enumerate() {
            boots[k].push(x);
        }
    }
    let mut exceed = vec![0usize; h];
    let mut s = vec![0f32; h];
    for _ in 0..n_perm {
        s.iter_mut().for_each(|x| *x = 0.0);
        let mut bits = 0u64;
        for (i, row) in d.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            let sign = if (bits >> (i % 64)) & 1 == 1 {
                1.0
            } else {
                -1.0
            };
            for (a, x) in s.iter_mut().zip(row) {
                *a += sign * x;
            }
        }
        for k in 0..h {
            // A tiny tolerance counts ties (all differences zero) as exceeding.
            if s[k] / n.max(1) as f32 >= diff[k] - 1e-7 {
                exceed[k] += 1;
            }
        }
    }
    assemble(diff, boots, &exceed, level, n_perm)
}

/// A seeded split of `0..n` into (kept, held out), `held` of them held out, each in
/// ascending order.
pub fn split_sources(n: usize, held: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ 0x5EED_5EED_5EED_5EED);
    for i in (1..n).rev() {
        idx.swap(i, rng.below(i + 1));
    }
    let (a, b) = idx.split_at(n - held.min(n));
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    (a, b)
}

/// How heads are chosen and confirmed.
#[derive(Debug, Clone)]
pub struct SelectOptions {
    /// False-discovery rate on the discovery half.
    pub fdr: f32,
    /// The smallest paired difference (mean diagonal attention) that counts as an effect.
    pub min_effect: f32,
    /// Share of sources held out for confirmation; 0 turns the split off (small data sets):
    /// heads are then found on every source and nothing is confirmed.
    pub split: f32,
    /// Bootstrap resamples.
    pub n_boot: usize,
    /// Sign-flip permutations.
    pub n_perm: usize,
    /// Interval level.
    pub level: f32,
    /// Seed for the split, the bootstrap and the signs.
    pub seed: u64,
}

impl Default for SelectOptions {
    fn default() -> Self {
        SelectOptions {
            fdr: 0.05,
            min_effect: 0.02,
            split: 0.5,
            n_boot: 1000,
            n_perm: 10_000,
            level: 0.95,
            seed: 7,
        }
    }
}

/// A head found on the discovery half, with its held-out effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FoundHead {
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Paired difference on the discovery half.
    pub discovery_diff: f32,
    /// Its q-value there.
    pub discovery_q: f32,
    /// Paired difference on the held-out half (NaN without a split).
    pub diff: f32,
    /// Held-out bootstrap interval.
    pub ci_low: f32,
    /// Upper end.
    pub ci_high: f32,
    /// The held-out interval lies above zero.
    pub replicated: bool,
}

/// The paired analysis of one direction: discovery, confirmation and the confirmed heads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadSelection {
    /// Sources in the discovery half (indices into the pairs).
    pub discovery: Vec<usize>,
    /// Sources held out for confirmation (empty without a split).
    pub confirmation: Vec<usize>,
    /// Paired statistics on the discovery half (every source without a split).
    pub discovery_stats: HeadStats,
    /// Paired statistics on the held-out half.
    pub confirmation_stats: Option<HeadStats>,
    /// Paired statistics on every source, for the tables.
    pub all_stats: HeadStats,
    /// Heads passing FDR with at least the minimum effect on the discovery half, largest first.
    pub found: Vec<FoundHead>,
    /// Found heads whose held-out interval lies above zero: the translation heads.
    pub confirmed: Vec<FoundHead>,
    /// Heads expected among `found` by chance if no head had an effect: fdr × found (BH bound).
    pub expected_false: f32,
    /// The minimum effect used.
    pub min_effect: f32,
    /// The FDR used.
    pub fdr: f32,
}

/// Discovery on one seeded half of the sources, confirmation on the other. `d` holds the
/// per-source differences [source][layer × head]; `n_heads` splits the flat index.
pub fn select_heads(d: &[Vec<f32>], n_heads: usize, o: &SelectOptions) -> HeadSelection {
    let n = d.len();
    let held = if o.split > 0.0 {
        ((n as f32 * o.split).round() as usize).min(n.saturating_sub(2))
    } else {
        0
    };
    let (discovery, confirmation) = split_sources(n, held, o.seed);
    let rows = |idx: &[usize]| idx.iter().map(|&i| d[i].clone()).collect::<Vec<_>>();
    let discovery_stats = paired_stats(&rows(&discovery), o.n_boot, o.n_perm, o.level, o.seed);
    let confirmation_stats = (!confirmation.is_empty()).then(|| {
        paired_stats(
            &rows(&confirmation),
            o.n_boot,
            o.n_perm,
            o.level,
            o.seed.wrapping_add(1),
        )
    });
    let all_stats = paired_stats(d, o.n_boot, o.n_perm, o.level, o.seed.wrapping_add(2));
    let h = n_heads.max(1);
    let mut found: Vec<FoundHead> = (0..discovery_stats.diff.len())
        .filter(|&i| discovery_stats.q[i] <= o.fdr && discovery_stats.diff[i] >= o.min_effect)
        .map(|i| {
            let (diff, ci_low, ci_high) = match &confirmation_stats {
                Some(c) => (c.diff[i], c.ci_low[i], c.ci_high[i]),
                None => (f32::NAN, f32::NAN, f32::NAN),
            };
            FoundHead {
                layer: i / h,
                head: i % h,
                discovery_diff: discovery_stats.diff[i],
                discovery_q: discovery_stats.q[i],
                diff,
                ci_low,
                ci_high,
                replicated: ci_low > 0.0,
            }
        })
        .collect();
    found.sort_by(|a, b| b.discovery_diff.total_cmp(&a.discovery_diff));
    let confirmed = found.iter().filter(|f| f.replicated).cloned().collect();
    let expected_false = o.fdr * found.len() as f32;
    HeadSelection {
        discovery,
        confirmation,
        discovery_stats,
        confirmation_stats,
        all_stats,
        found,
        confirmed,
        expected_false,
        min_effect: o.min_effect,
        fdr: o.fdr,
    }
}
