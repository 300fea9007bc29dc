//! The logit nodes, as circuit-tracer's salient-logit targets: the most likely next tokens
//! until their cumulative probability reaches `desired_logit_prob` (at most `max_n_logits`),
//! each with its probability and its demeaned unembedding row.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;

/// The logit targets of a graph.
#[derive(Debug, Clone)]
pub struct LogitTargets {
    /// Token ids, most likely first.
    pub tokens: Vec<u32>,
    /// Their softmax probabilities.
    pub probabilities: Vec<f32>,
    /// Their unembedding rows minus the mean row [k, d_model].
    pub vectors: Tensor,
}

/// circuit-tracer's `_from_salient`: the top `max_n` tokens of `logits` [d_vocab], cut after
/// the first whose cumulative probability reaches `desired_prob`.
pub fn salient(
    model: &HookedTransformer,
    logits: &Tensor,
    max_n: usize,
    desired_prob: f32,
) -> Result<LogitTargets> {
    let probs = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let p: Vec<f32> = probs.to_vec1()?;
    let mut order: Vec<usize> = (0..p.len()).collect();
    // Stable on ties, largest first, as torch.topk returns them in practice.
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order.truncate(max_n.min(p.len()));
    let mut cum = 0f32;
    let mut cutoff = order.len();
    for (i, &k) in order.iter().enumerate() {
        cum += p[k];
        // searchsorted (left) finds the first cumulative sum >= desired_prob; keep it.
        if cum >= desired_prob {
            cutoff = i + 1;
            break;
        }
    }
    order.truncate(cutoff);
    let tokens: Vec<u32> = order.iter().map(|&k| k as u32).collect();
    let probabilities = order.iter().map(|&k| p[k]).collect();
    let vectors = demeaned_rows(model, &tokens)?;
    Ok(LogitTargets {
        tokens,
        probabilities,
        vectors,
    })
}

/// circuit-tracer's `_from_indices` (its `attribution_targets` given as tokens): exactly these
/// tokens, in this order, each with its own softmax probability in `logits` [d_vocab].
pub fn chosen(model: &HookedTransformer, logits: &Tensor, tokens: &[u32]) -> Result<LogitTargets> {
    let probs = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let p: Vec<f32> = probs.to_vec1()?;
    if tokens.is_empty() {
        return Err(Error::Invalid(
            "attribution targets cannot be empty: give at least one token".into(),
        ));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= p.len()) {
        return Err(Error::Invalid(format!(
            "attribution target token id {bad} is outside the vocabulary (0..{})",
            p.len()
        )));
    }
    Ok(LogitTargets {
        tokens: tokens.to_vec(),
        probabilities: tokens.iter().map(|&t| p[t as usize]).collect(),
        vectors: demeaned_rows(model, tokens)?,
    })
}

/// The unembedding rows of `tokens` minus the mean unembedding row, [k, d_model] (f32).
pub fn demeaned_rows(model: &HookedTransformer, tokens: &[u32]) -> Result<Tensor> {
    let u = model.unembed().dense()?;
    // The mean of 262k rows: summed slab by slab in f64, as an f32 running sum drifts (torch's
    // cascade summation does not, and circuit-tracer's logit rows carry this mean).
    let rows = u.dim(0)?;
    let mut sum = Tensor::zeros((1, u.dim(1)?), DType::F64, u.device())?;
    for start in (0..rows).step_by(4096) {
        let slab = u.narrow(0, start, 4096.min(rows - start))?;
        sum = (sum + slab.to_dtype(DType::F64)?.sum_keepdim(0)?)?;
    }
    let mean = (sum / rows as f64)?.to_dtype(DType::F32)?;
    let ids = Tensor::new(tokens, u.device())?;
    Ok(u.index_select(&ids, 0)?
        .to_dtype(DType::F32)?
        .broadcast_sub(&mean)?)
}
