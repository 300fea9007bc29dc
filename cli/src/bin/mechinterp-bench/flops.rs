//! Honest FLOP counts of the timed operations, and this machine's matmul peak measured with
//! the same kernel, so that each timing can be read as a fraction of what the CPU can do.

use anyhow::Result;
use candle_core::{Device, Tensor};
use mechinterp::model::Config;

use crate::timing::time;

/// FLOPs of the blocks from layer `from` on, for `rows` sequences of `s` tokens.
pub fn block_flops(cfg: &Config, s: usize, rows: usize, from: usize) -> f64 {
    let (d, n, k, h, m) = (
        cfg.d_model as f64,
        cfg.n_heads as f64,
        cfg.n_kv_heads as f64,
        cfg.d_head as f64,
        cfg.d_mlp as f64,
    );
    let s = s as f64;
    let proj = 2.0 * d * (n * h + 2.0 * k * h) + 2.0 * n * h * d;
    let attn = 2.0 * 2.0 * n * h * s; // scores and weighted values, full s × s
    let mlp = 3.0 * 2.0 * d * m;
    (cfg.n_layers - from.min(cfg.n_layers)) as f64 * rows as f64 * s * (proj + attn + mlp)
}

/// FLOPs of a forward pass with logits at `logit_positions` positions per row.
pub fn forward_flops(cfg: &Config, s: usize, rows: usize, logit_positions: usize) -> f64 {
    block_flops(cfg, s, rows, 0)
        + rows as f64 * logit_positions as f64 * 2.0 * cfg.d_model as f64 * cfg.d_vocab as f64
}

/// This machine's sgemm rate (GFLOP/s) with candle's matmul, on the model's largest shapes.
pub fn sgemm_peak(repeats: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (512, 640), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (640, 2048), &dev)?;
    let c = Tensor::randn(0f32, 1.0, (2048, 640), &dev)?;
    let t = time(repeats, || {
        Ok((a.matmul(&b)?.matmul(&c)?).sum_all()?.to_scalar::<f32>()?)
    })?;
    let flops = 2.0 * 512.0 * 640.0 * 2048.0 * 2.0;
    let best = t.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(flops / best / 1e9)
}
