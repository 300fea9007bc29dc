//! Statistics shared by the techniques: a seeded generator, rank and linear correlation,
//! quantiles, the normal CDF and Benjamini–Hochberg. Plain functions on slices, no state.

/// A small seeded generator (SplitMix64), so results reproduce exactly from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A standard normal draw (Box–Muller, one of the pair; two draws of 53 bits each).
    pub fn gaussian(&mut self) -> f64 {
        // u1 in (0, 1], so its logarithm is finite.
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// `statistic` of `v` with its percentile bootstrap interval at `level` (0.95: the 2.5 % and
/// 97.5 % quantiles of `resamples` statistics of resamples drawn with replacement), seeded:
/// (point estimate, low, high).
pub fn bootstrap_interval(
    v: &[f32],
    statistic: impl Fn(&[f32]) -> f32,
    resamples: usize,
    level: f64,
    seed: u64,
) -> (f32, f32, f32) {
    let mut rng = Rng::new(seed);
    let mut stats: Vec<f32> = (0..resamples)
        .map(|_| {
            let s: Vec<f32> = (0..v.len()).map(|_| v[rng.below(v.len())]).collect();
            statistic(&s)
        })
        .collect();
    // In f64, so that 0.95 gives exactly the f32 quantiles 0.025 and 0.975.
    let tail = (1.0 - level) / 2.0;
    (
        statistic(v),
        quantile(&mut stats, tail as f32),
        quantile(&mut stats, (1.0 - tail) as f32),
    )
}

/// Pearson correlation of two equally long series (NaN when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()).max(1) as f32;
    let ma = a.iter().sum::<f32>() / n;
    let mb = b.iter().sum::<f32>() / n;
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// Ranks from 0, ties given their average rank.
pub fn ranks(v: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&x, &y| v[x].total_cmp(&v[y]));
    let mut r = vec![0f32; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f32 / 2.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (average ranks for ties).
pub fn spearman(a: &[f32], b: &[f32]) -> f32 {
    pearson(&ranks(a), &ranks(b))
}

/// The `q` quantile (0..=1) of `v`, interpolating linearly between order statistics (NumPy's
/// default); sorts `v` in place. NaN for an empty slice.
pub fn quantile(v: &mut [f32], q: f32) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f32;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f32)
}

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Φ(z), the standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    if !z.is_finite() {
        return if z > 0.0 {
            1.0
        } else if z < 0.0 {
            0.0
        } else {
            f64::NAN
        };
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Benjamini–Hochberg adjusted p-values: test i is a discovery at FDR α when q[i] ≤ α.
pub fn benjamini_hochberg(p: &[f32]) -> Vec<f32> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1f32; m];
    let mut running = 1f32;
    for (rank, &i) in idx.iter().enumerate().rev() {
        let v = (p[i] * m as f32 / (rank + 1) as f32).min(1.0);
        running = running.min(v);
        q[i] = running;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_splitmix64() {
        // The first output for seed 0 in the reference implementation (Vigna).
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn spearman_handles_ties_and_order() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-6);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-6);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![1.5, 0.0, 1.5]);
    }

    #[test]
    fn quantiles_interpolate() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!((quantile(&mut v, 0.5) - 2.5).abs() < 1e-6);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
    }
}
