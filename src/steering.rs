//! Steering: a direction added to the residual stream while the model runs (activation
//! addition, Turner et al. 2023). The mean difference of the residual stream between two sets
//! of contexts, a random control of the same norm, the hooks that add a scaled direction, and
//! the measures a steering experiment reads: the log-probability gap between two references
//! and the share of words of one language in what the model writes.

use std::collections::HashSet;

use candle_core::{DType, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::hooks::{HookPoint, Hooks, Intervention};
use crate::metrics::continuation_logprobs;
use crate::model::HookedTransformer;
use crate::stats::Rng;

/// Per layer, the mean over pairs of `hook_resid_post` at each prompt's last position,
/// `positive[i]` minus `negative[i]`: [d_model] tensors (f32), one per layer.
pub fn mean_difference(
    model: &HookedTransformer,
    positive: &[String],
    negative: &[String],
) -> Result<Vec<Tensor>> {
    if positive.len() != negative.len() || positive.is_empty() {
        return Err(Error::Invalid(format!(
            "mean_difference needs as many positive as negative prompts, at least one ({} and {})",
            positive.len(),
            negative.len()
        )));
    }
    let cfg = model.cfg();
    let zero = Tensor::zeros(cfg.d_model, DType::F32, model.device())?;
    let mut sum = vec![zero; cfg.n_layers];
    for (p, n) in positive.iter().zip(negative) {
        for (sign, text) in [(1.0, p), (-1.0, n)] {
            let toks = model.to_tokens(text)?;
            let s = toks.dim(1)?;
            let cache = model.cache_activations(&toks, |n: &str| n.ends_with("hook_resid_post"))?;
            for (l, acc) in sum.iter_mut().enumerate() {
                let last = cache.act("resid_post", l)?.i((0, s - 1))?;
                *acc = (&*acc + (last.to_dtype(DType::F32)? * sign)?)?;
            }
        }
    }
    sum.iter()
        .map(|v| Ok((v / positive.len() as f64)?))
        .collect()
}

/// The L2 norm of each vector.
pub fn norms(vectors: &[Tensor]) -> Result<Vec<f32>> {
    vectors
        .iter()
        .map(|v| Ok(v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?))
        .collect()
}

/// A control for `vectors`: one seeded Gaussian direction of `d_model` entries, unit length,
/// scaled to each vector's norm.
pub fn random_like(vectors: &[Tensor], seed: u64) -> Result<Vec<Tensor>> {
    let d = vectors.first().map_or(Ok(0), |v| v.dim(0))?;
    let device = vectors
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let mut rng = Rng::new(seed);
    let gauss: Vec<f32> = (0..d).map(|_| rng.gaussian() as f32).collect();
    let g = Tensor::new(gauss.as_slice(), &device)?;
    let g = (&g / g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64)?;
    norms(vectors)?
        .iter()
        .map(|n| Ok((&g * *n as f64)?))
        .collect()
}

/// Hooks that add `scale × v` to `blocks.{layer}.hook_resid_post` at every position.
pub fn add_hooks(v: &Tensor, layer: usize, scale: f64) -> Result<Hooks> {
    Ok(Hooks::new().add_point(HookPoint::ResidPost(layer), {
        let iv = Intervention::Add((v * scale)?);
        move |x, ctx| iv.apply(x, ctx)
    }))
}

/// Mean over `items` (prompt, reference a, reference b) of log p(a | prompt) − log p(b | prompt),
/// teacher-forced, all scored in batches under the model (or view) given.
pub fn logprob_gap(model: &HookedTransformer, items: &[(String, String, String)]) -> Result<f32> {
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .map(|(p, a, _)| (p.as_str(), a.as_str()))
        .chain(items.iter().map(|(p, _, b)| (p.as_str(), b.as_str())))
        .collect();
    let lp = continuation_logprobs(model, &pairs)?;
    let n = items.len();
    Ok((0..n).map(|i| lp[i].total - lp[n + i].total).sum::<f32>() / n.max(1) as f32)
}

/// The lower-cased words of a text (runs of letters, longer than one character).
pub fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() > 1)
        .map(|w| w.to_lowercase())
        .collect()
}

/// Words that occur in one set only: (only in `a`, only in `b`).
pub fn distinctive_words(a: &[String], b: &[String]) -> (HashSet<String>, HashSet<String>) {
    let wa: HashSet<String> = a.iter().flat_map(|t| words(t)).collect();
    let wb: HashSet<String> = b.iter().flat_map(|t| words(t)).collect();
    (&wa - &wb, &wb - &wa)
}

/// The share of `a`'s words among the words of `texts` found in `a` or `b` but not both, and
/// how many such words there were: (share, count); the share is 0 when none was found.
pub fn word_share(texts: &[String], a: &HashSet<String>, b: &HashSet<String>) -> (f32, usize) {
    let (mut na, mut nb) = (0usize, 0usize);
    for w in texts.iter().flat_map(|t| words(t)) {
        match (a.contains(&w), b.contains(&w)) {
            (true, false) => na += 1,
            (false, true) => nb += 1,
            _ => {}
        }
    }
    (na as f32 / (na + nb).max(1) as f32, na + nb)
}

/// Whether a text is mostly one fragment repeated: fewer distinct character trigrams than 40 %
/// of its trigrams (or under three characters).
pub fn is_repetitive(t: &str) -> bool {
    let c: Vec<char> = t.chars().collect();
    let grams: HashSet<&[char]> = c.windows(3).collect();
    c.len() < 3 || (grams.len() as f32) < 0.4 * (c.len() - 2) as f32
}

/// The language of a set of generated texts: see [`language_share`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageShare {
    /// The share of `a`'s words among the counted words of the non-repetitive texts (NaN when
    /// none was counted).
    pub share: f32,
    /// How many words were counted (found in `a` or `b` but not both).
    pub counted: usize,
    /// How many texts were left out as repetitive ([`is_repetitive`]): repeated fragments are
    /// not language.
    pub repetitive: usize,
}

/// [`word_share`] over the texts that are not repetitive, with how many were.
pub fn language_share(texts: &[String], a: &HashSet<String>, b: &HashSet<String>) -> LanguageShare {
    let fluent: Vec<String> = texts
        .iter()
        .filter(|t| !is_repetitive(t))
        .cloned()
        .collect();
    let (share, counted) = word_share(&fluent, a, b);
    LanguageShare {
        share: if counted == 0 { f32::NAN } else { share },
        counted,
        repetitive: texts.len() - fluent.len(),
    }
}
