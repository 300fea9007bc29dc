//! The activation functions and penalties of SAELens's training SAEs, built so that candle's
//! autograd gives SAELens's gradients: TopK / BatchTopK as a constant selection mask times
//! ReLU'd pre-activations, JumpReLU and the step function with their straight-through
//! estimators (rectangle kernel), and the selection of dead latents for the aux-k loss.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// The selection masks are computed on the host, where a k-th-value selection costs O(n).
fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.detach()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

/// The `k` entries of `row` among `idx` with the largest values, ties going to the lower index
/// and NaN counting as smallest; the fast path and the masks select with this one rule.
pub(crate) fn top_k_of(
    row: &[f32],
    idx: &[usize],
    k: usize,
    scratch: &mut Vec<(f32, usize)>,
) -> Vec<usize> {
    if k == 0 || idx.is_empty() {
        return Vec::new();
    }
    if k >= idx.len() {
        return idx.to_vec();
    }
    scratch.clear();
    scratch.extend(idx.iter().map(|&j| (finite_or_min(row[j]), j)));
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    scratch.select_nth_unstable_by(k - 1, order);
    scratch[..k].iter().map(|&(_, j)| j).collect()
}

/// Marks the `k` entries that [`top_k_of`] selects with 1.0 in `mask`.
fn mark_top_k(
    row: &[f32],
    idx: &[usize],
    k: usize,
    scratch: &mut Vec<(f32, usize)>,
    mask: &mut [f32],
) {
    for j in top_k_of(row, idx, k, scratch) {
        mask[j] = 1.0;
    }
}

fn finite_or_min(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// TopK's selection: 1.0 at the `k` largest entries of each row of `h` [b, d_sae], as
/// `torch.topk(h, k, dim=-1)` selects them.
pub fn topk_mask(h: &Tensor, k: usize) -> Result<Tensor> {
    let (b, d) = h.dims2()?;
    let vals = host_values(h)?;
    let mut mask = vec![0f32; b * d];
    let all: Vec<usize> = (0..d).collect();
    let mut scratch = Vec::with_capacity(d);
    for (row, m) in vals.chunks_exact(d).zip(mask.chunks_exact_mut(d)) {
        mark_top_k(row, &all, k, &mut scratch, m);
    }
    Ok(Tensor::from_vec(mask, (b, d), h.device())?)
}

/// BatchTopK's selection: 1.0 at the `⌊k·b⌋` largest entries of `relu(h)` over the whole batch,
/// as SAELens's `BatchTopK` selects them.
pub fn batch_topk_mask(h: &Tensor, k: f64) -> Result<Tensor> {
    let (b, d) = h.dims2()?;
    let vals: Vec<f32> = host_values(h)?.into_iter().map(|v| v.max(0.0)).collect();
    let n = ((k * b as f64) as usize).min(b * d);
    let mut mask = vec![0f32; b * d];
    let all: Vec<usize> = (0..b * d).collect();
    let mut scratch = Vec::with_capacity(b * d);
    mark_top_k(&vals, &all, n, &mut scratch, &mut mask);
    Ok(Tensor::from_vec(mask, (b, d), h.device())?)
}

/// The aux-k selection: in each row of `h`, 1.0 at the `k_aux` largest entries among the dead
/// latents (`calculate_topk_aux_acts`: `where(dead, h, -inf).topk(k_aux)`).
pub fn dead_topk_mask(h: &Tensor, dead: &[bool], k_aux: usize) -> Result<Tensor> {
    let (b, d) = h.dims2()?;
    let vals = host_values(h)?;
    let idx: Vec<usize> = (0..d).filter(|&j| dead[j]).collect();
    let mut mask = vec![0f32; b * d];
    let mut scratch = Vec::with_capacity(idx.len());
    for (row, m) in vals.chunks_exact(d).zip(mask.chunks_exact_mut(d)) {
        mark_top_k(row, &idx, k_aux, &mut scratch, m);
    }
    Ok(Tensor::from_vec(mask, (b, d), h.device())?)
}

/// SAELens's `rectangle((x − θ)/bandwidth)`, a constant: 1 where |x − θ| < bandwidth/2.
fn rectangle(x: &Tensor, threshold: &Tensor, bandwidth: f64) -> Result<Tensor> {
    let u = (x.detach().broadcast_sub(&threshold.detach())? / bandwidth)?;
    Ok(u.abs()?.lt(0.5)?.to_dtype(DType::F32)?)
}

/// `(x_or_const − θ)·c − detach(same)`: zero in value, with gradient `−Σ_batch c` to θ and
/// (when `to_input`) `c` to `x`; this is how the straight-through estimators are attached.
fn ste_term(x: &Tensor, threshold: &Tensor, c: &Tensor, to_input: bool) -> Result<Tensor> {
    let xs = if to_input { x.clone() } else { x.detach() };
    let lin = xs.broadcast_sub(threshold)?.mul(c)?;
    Ok((&lin - lin.detach())?)
}

/// SAELens's `JumpReLU.apply(x, θ, bandwidth, ste_to_input)`: `x·1[x > θ]` forward; backward
/// `1[x > θ]·g` to `x` (plus the estimator when `ste_to_input`) and
/// `−Σ_batch (θ/bandwidth)·rectangle((x − θ)/bandwidth)·g` to θ.
pub fn jumprelu(x: &Tensor, threshold: &Tensor, bandwidth: f64, to_input: bool) -> Result<Tensor> {
    let gate = x
        .detach()
        .broadcast_gt(&threshold.detach())?
        .to_dtype(DType::F32)?;
    let c =
        rectangle(x, threshold, bandwidth)?.broadcast_mul(&(threshold.detach() / bandwidth)?)?;
    Ok((x.mul(&gate)? + ste_term(x, threshold, &c, to_input)?)?)
}

/// SAELens's `Step.apply(x, θ, bandwidth, ste_to_input)`: `1[x > θ]` forward; backward
/// `−Σ_batch rectangle((x − θ)/bandwidth)·g / bandwidth` to θ (and its negation to `x` when
/// `ste_to_input`).
pub fn step(x: &Tensor, threshold: &Tensor, bandwidth: f64, to_input: bool) -> Result<Tensor> {
    let gate = x
        .detach()
        .broadcast_gt(&threshold.detach())?
        .to_dtype(DType::F32)?;
    let c = (rectangle(x, threshold, bandwidth)? / bandwidth)?;
    Ok((gate + ste_term(x, threshold, &c, to_input)?)?)
}
