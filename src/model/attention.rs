//! Attention kernels: scaled, soft-capped, masked scores; softmax in f32 (differentiable, unlike
//! candle's fused kernel); blocked attention for long prompts; kv heads repeated for their
//! query heads (grouped-query attention).

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::model::config::Config;
use crate::model::masks::Mask;

/// Scaled, soft-capped and masked attention scores of queries [b, n, q, h] against keys
/// [b, n, k, h], with an additive mask [q, k].
pub(crate) fn attention_scores(
    cfg: &Config,
    q: &Tensor,
    k: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?.contiguous()?)? * cfg.attn_scale)?;
    let scores = match cfg.attn_softcap {
        Some(c) => ((scores / c)?.tanh()? * c)?,
        None => scores,
    };
    Ok(scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?)
}

/// softmax(scores) · V one block of queries at a time, each against only the keys it can
/// see; the same numbers as the full computation, without the s × s tensors.
pub(crate) fn blocked_attention(
    cfg: &Config,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask,
) -> Result<Tensor> {
    let blocks = mask.blocks()?;
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let scores = attention_scores(
            cfg,
            &q.narrow(2, b.q0, b.nq)?,
            &k.narrow(2, b.k0, b.nk)?,
            &b.mask,
        )?;
        out.push(softmax_f32(&scores)?.matmul(&v.narrow(2, b.k0, b.nk)?.contiguous()?)?);
    }
    Ok(Tensor::cat(&out, 2)?)
}

/// Softmax over the last dim in f32 (differentiable, unlike candle's fused kernel).
pub(crate) fn softmax_f32(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    Ok(candle_nn::ops::softmax(&x.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(dtype)?)
}

/// [b, k, s, h] -> [b, k*groups, s, h], each kv head repeated for its group of query heads.
pub(crate) fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.contiguous()?);
    }
    let (b, k, s, h) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, k, groups, s, h))?
        .contiguous()?
        .reshape((b, k * groups, s, h))?)
}
