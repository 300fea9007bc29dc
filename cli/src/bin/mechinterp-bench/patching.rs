//! Patching benchmarks: the 72-head activation-patching sweep, the same sweep done naively
//! (the before), and attribution patching.

use anyhow::Result;
use candle_core::Tensor;
use mechinterp::hooks::{HookContext, HookPoint, Hooks};
use mechinterp::model::HookedTransformer;
use mechinterp::patching::{Direction, PatchTarget, Patcher};

use crate::flops::{block_flops, forward_flops};
use crate::sets::{CLEAN, CORRUPT};
use crate::timing::{time, Timing};

/// Activation patching of every head's output.
pub fn head_sweep(
    model: &HookedTransformer,
    p: &Patcher,
    repeats: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let s = model.to_tokens(CLEAN)?.dim(1)?;
    let secs = time(repeats.clamp(1, 3), || {
        p.activation(PatchTarget::HeadOut, Direction::Denoise)
    })?;
    let sweep_flops: f64 = (0..cfg.n_layers)
        .map(|l| {
            block_flops(cfg, s, cfg.n_heads, l)
                + cfg.n_heads as f64 * 2.0 * (cfg.d_model * cfg.d_vocab) as f64
        })
        .sum();
    out.push(Timing {
        name: "head_patching_sweep".into(),
        seconds: secs,
        tokens: (cfg.n_layers * cfg.n_heads * s) as f64,
        flops: sweep_flops,
        note: format!(
            "{} heads, denoising, in waves from the cached residuals, last-position logits",
            cfg.n_layers * cfg.n_heads
        ),
    });
    Ok(())
}

/// The same sweep done the naive way, for the before/after ratio: one full forward per head
/// with logits at every position, from the clean run's own cache.
pub fn naive_sweep(model: &HookedTransformer, out: &mut Vec<Timing>) -> Result<()> {
    let cfg = model.cfg();
    let toks = model.to_tokens(CLEAN)?;
    let s = toks.dim(1)?;
    let (_, clean_cache) = model.run_with_cache(&toks)?;
    let corrupt = model.to_tokens(CORRUPT)?;
    let secs = time(1, || {
        for l in 0..cfg.n_layers {
            let src = clean_cache.get(&HookPoint::Z(l).name())?;
            for h in 0..cfg.n_heads {
                let src = src.clone();
                let hook = move |x: &Tensor, _: &HookContext| -> mechinterp::Result<Tensor> {
                    let n = x.dim(2)?;
                    let on: Vec<u8> = (0..n).map(|i| u8::from(i == h)).collect();
                    let mask = Tensor::from_vec(on, (1, 1, n, 1), x.device())?;
                    let src = src.to_dtype(x.dtype())?.broadcast_as(x.shape())?;
                    Ok(mask.broadcast_as(x.shape())?.where_cond(&src, x)?)
                };
                model
                    .with_hooks(&Hooks::new().add_point(HookPoint::Z(l), hook))
                    .forward(&corrupt)?;
            }
        }
        Ok(())
    })?;
    out.push(Timing {
        name: "head_patching_sweep_naive".into(),
        seconds: secs,
        tokens: (cfg.n_layers * cfg.n_heads * s) as f64,
        flops: (cfg.n_layers * cfg.n_heads) as f64 * forward_flops(cfg, s, 1, s),
        note: "the same sweep as 72 separate full forwards with all logits (the before)".into(),
    });
    Ok(())
}

/// Attribution patching: one forward and backward on the corrupted run of the `s`-token pair.
pub fn attribution(
    model: &HookedTransformer,
    p: &Patcher,
    repeats: usize,
    s: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let secs = time(repeats.clamp(1, 3), || p.attribution(Direction::Denoise))?;
    out.push(Timing {
        name: "attribution_patching".into(),
        seconds: secs,
        tokens: s as f64,
        flops: 3.0 * forward_flops(model.cfg(), s, 1, 1),
        note: "one forward + backward on the corrupted run".into(),
    });
    Ok(())
}
