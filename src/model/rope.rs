//! Rotary position embeddings: cos / sin tables per (base, scaling), with linear, Llama 3 and
//! per-frequency (llama.cpp `rope_freqs`) scaling, and rotate-half RoPE, at positions 0..s or
//! at each row's own positions (generation from a left-padded KV cache).

use candle_core::{Device, Tensor, D};

use crate::error::Result;
use crate::model::config::{Config, RopeScaling};

/// RoPE tables for one base frequency and scaling: cos and sin, [s, d_head/2] for positions
/// 0..s, or [b, s, d_head/2] at per-row positions ([`Rope::at_positions`]).
pub(crate) struct Rope {
    pub(crate) theta: f64,
    pub(crate) scaling: Option<RopeScaling>,
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// One table per distinct (base, scaling) among the layers, for `s` positions.
    pub(crate) fn tables(cfg: &Config, s: usize, device: &Device) -> Result<Vec<Rope>> {
        let mut ropes: Vec<Rope> = Vec::new();
        let h = cfg.d_head;
        for lc in &cfg.layers {
            if !ropes
                .iter()
                .any(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
            {
                let half = h / 2;
                let mut cos = Vec::with_capacity(s * half);
                let mut sin = Vec::with_capacity(s * half);
                for p in 0..s {
                    for i in 0..half {
                        let mut inv = 1.0 / lc.rope_theta.powf((2 * i) as f64 / h as f64);
                        if let Some(sc) = &lc.rope_scaling {
                            inv = sc.apply(i, inv);
                        }
                        let a = p as f64 * inv;
                        cos.push(a.cos() as f32);
                        sin.push(a.sin() as f32);
                    }
                }
                ropes.push(Rope {
                    theta: lc.rope_theta,
                    scaling: lc.rope_scaling.clone(),
                    cos: Tensor::from_vec(cos, (s, half), device)?,
                    sin: Tensor::from_vec(sin, (s, half), device)?,
                });
            }
        }
        Ok(ropes)
    }
}

impl Rope {
    /// The tables at per-row positions `pos` [b, s] (u32, each below the table's length):
    /// [b, s, h/2], the same numbers as the rows of the shared table.
    pub(crate) fn at_positions(&self, pos: &Tensor) -> Result<Rope> {
        let (b, s) = pos.dims2()?;
        let half = self.cos.dim(1)?;
        let idx = pos.flatten_all()?;
        Ok(Rope {
            theta: self.theta,
            scaling: self.scaling.clone(),
            cos: self.cos.index_select(&idx, 0)?.reshape((b, s, half))?,
            sin: self.sin.index_select(&idx, 0)?.reshape((b, s, half))?,
        })
    }
}

/// Rotate-half RoPE on [b, s, heads, h] with tables [s, h/2] (positions 0..s) or [b, s, h/2].
pub(crate) fn apply_rope(x: &Tensor, rope: &Rope) -> Result<Tensor> {
    let (b, s, _, h) = x.dims4()?;
    let half = h / 2;
    let rows = if rope.cos.rank() == 3 { b } else { 1 };
    let cos = rope.cos.reshape((rows, s, 1, half))?.to_dtype(x.dtype())?;
    let sin = rope.sin.reshape((rows, s, 1, half))?.to_dtype(x.dtype())?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
}
