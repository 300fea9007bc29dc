//! A word alignment that involves no attention head: IBM Model 1 with fast_align's diagonal
//! prior, trained by EM on a direction's own token pairs, with identical tokens (names,
//! numbers, punctuation, cognates) as anchors. The alignment-aware score rests on it, so its
//! agreement with the diagonal score is not built in.

use std::collections::HashMap;

/// fast_align's default diagonal tension: p(i | j) ∝ exp(−λ |i/n − j/m|).
pub const DIAGONAL_TENSION: f64 = 4.0;
/// EM iterations (fast_align's default is 5).
pub const ITERATIONS: usize = 5;

/// Lexical translation probabilities t(target token | source token), learnt by EM.
#[derive(Debug, Clone, Default)]
pub struct Model1 {
    t: HashMap<(u32, u32), f64>,
    uniform: f64,
}

fn prior(i: usize, n: usize, j: usize, m: usize) -> f64 {
    let x = (i as f64 + 0.5) / n as f64 - (j as f64 + 0.5) / m as f64;
    (-DIAGONAL_TENSION * x.abs()).exp()
}

impl Model1 {
    /// Trains on (source tokens, target tokens) pairs.
    pub fn train(pairs: &[(Vec<u32>, Vec<u32>)]) -> Self {
        let vocab: std::collections::HashSet<u32> =
            pairs.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let mut model = Model1 {
            t: HashMap::new(),
            uniform: 1.0 / vocab.len().max(1) as f64,
        };
        for _ in 0..ITERATIONS {
            let mut counts: HashMap<(u32, u32), f64> = HashMap::new();
            let mut totals: HashMap<u32, f64> = HashMap::new();
            for (src, tgt) in pairs {
                let (n, m) = (src.len(), tgt.len());
                if n == 0 || m == 0 {
                    continue;
                }
                for (j, &f) in tgt.iter().enumerate() {
                    let w: Vec<f64> = (0..n)
                        .map(|i| prior(i, n, j, m) * model.prob(f, src[i]))
                        .collect();
                    let z: f64 = w.iter().sum();
                    if z <= 0.0 {
                        continue;
                    }
                    for (i, wi) in w.iter().enumerate() {
                        *counts.entry((f, src[i])).or_default() += wi / z;
                        *totals.entry(src[i]).or_default() += wi / z;
                    }
                }
            }
            model.t = counts
                .into_iter()
                .map(|((f, e), c)| ((f, e), c / totals[&e]))
                .collect();
        }
        model
    }

    /// t(f | e); unseen pairs get a small floor so that the prior decides.
    pub fn prob(&self, f: u32, e: u32) -> f64 {
        self.t.get(&(f, e)).copied().unwrap_or(1e-9 * self.uniform)
    }

    /// The source position (0-based within `src`) of each target token: an identical token
    /// where there is one (the occurrence at the most similar relative position), else the
    /// most probable under Model 1 and the diagonal prior. Also says which were identical.
    pub fn align(&self, src: &[u32], tgt: &[u32]) -> Vec<(usize, bool)> {
        let (n, m) = (src.len(), tgt.len());
        if n == 0 {
            return Vec::new();
        }
        (0..m)
            .map(|j| match identical(src, tgt, j) {
                Some(i) => (i, true),
                None => (self.lexical(src, tgt, j), false),
            })
            .collect()
    }

    /// Model 1's choice for target token `j`, ignoring identical anchors.
    pub fn lexical(&self, src: &[u32], tgt: &[u32], j: usize) -> usize {
        let (n, m) = (src.len(), tgt.len());
        (0..n)
            .max_by(|&a, &b| {
                let pa = prior(a, n, j, m) * self.prob(tgt[j], src[a]);
                let pb = prior(b, n, j, m) * self.prob(tgt[j], src[b]);
                pa.total_cmp(&pb)
            })
            .unwrap_or(0)
    }
}

/// The source occurrence of target token `j`'s identical token at the most similar relative
/// position, if any.
pub fn identical(src: &[u32], tgt: &[u32], j: usize) -> Option<usize> {
    let (n, m) = (src.len(), tgt.len());
    let rel = j as f32 / m.max(1) as f32;
    (0..n).filter(|&i| src[i] == tgt[j]).min_by(|&x, &y| {
        let rx = (x as f32 / n as f32 - rel).abs();
        let ry = (y as f32 / n as f32 - rel).abs();
        rx.total_cmp(&ry)
    })
}

/// Share of target tokens with an identical anchor where Model 1 alone picks an identical
/// source token too (the agreement of the two where both exist); NaN without anchors.
pub fn anchor_agreement(model: &Model1, pairs: &[(Vec<u32>, Vec<u32>)]) -> f32 {
    let (mut agree, mut total) = (0usize, 0usize);
    for (src, tgt) in pairs {
        for j in 0..tgt.len() {
            if identical(src, tgt, j).is_some() {
                total += 1;
                agree += usize::from(src[model.lexical(src, tgt, j)] == tgt[j]);
            }
        }
    }
    if total == 0 {
        f32::NAN
    } else {
        agree as f32 / total as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn em_learns_a_consistent_dictionary() {
        // "a"=1 ↔ "x"=11, "b"=2 ↔ "y"=12, "c"=3 ↔ "z"=13, in varying orders.
        let pairs = vec![
            (vec![1, 2], vec![11, 12]),
            (vec![2, 3], vec![12, 13]),
            (vec![1, 3], vec![11, 13]),
            (vec![3, 1, 2], vec![13, 11, 12]),
        ];
        let m = Model1::train(&pairs);
        assert!(m.prob(12, 2) > m.prob(12, 1) && m.prob(12, 2) > m.prob(12, 3));
        // Against the diagonal: "y x" for "a b" aligns y to b.
        assert_eq!(m.align(&[1, 2], &[12, 11]), vec![(1, false), (0, false)]);
        // Identical tokens anchor.
        assert_eq!(m.align(&[5, 1], &[11, 5]), vec![(1, false), (0, true)]);
    }
}
