//! Ablation: replace a component's activation by zero, by its mean over a dataset, or by its
//! value on another prompt (resampling), and return the logits.
//!
//! Heads are ablated through `hook_z`, one query head at a time: under grouped-query
//! attention the other query heads that share its kv head are untouched.

use candle_core::{DType, IndexOp, Tensor};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::{HookedTransformer, Logits};
use crate::stats::Rng;

/// What to ablate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Query head (layer, head), via `hook_z`, at every position.
    Head(usize, usize),
    /// A layer's attention output (`hook_attn_out`).
    AttnOut(usize),
    /// A layer's MLP output (`hook_mlp_out`).
    MlpOut(usize),
    /// The residual stream entering a layer at one position (`hook_resid_pre`).
    Resid(usize, usize),
}

pub use Component::{AttnOut, Head, MlpOut, Resid};

impl Component {
    /// The hook point the ablation replaces.
    pub fn point(self) -> HookPoint {
        match self {
            Head(l, _) => HookPoint::Z(l),
            AttnOut(l) => HookPoint::AttnOut(l),
            MlpOut(l) => HookPoint::MlpOut(l),
            Resid(l, _) => HookPoint::ResidPre(l),
        }
    }
}

/// How to ablate.
#[derive(Debug, Clone, Copy)]
pub enum Ablation<'a> {
    /// Zeros.
    Zero,
    /// The mean at each position over the prompts of a cache (a batch run with
    /// `run_with_cache`; padding is excluded). Positions no dataset prompt reaches use the
    /// pooled mean.
    Mean(&'a ActivationCache),
    /// The mean over every position of every prompt of a cache.
    MeanPooled(&'a ActivationCache),
    /// The activation of a randomly chosen prompt of a cache (one at least as long as the
    /// ablated prompt), chosen with this seed.
    Resample(&'a ActivationCache, u64),
}

/// Logits of `tokens` (one or more rows) with `components` ablated.
pub fn ablate(
    model: &HookedTransformer,
    tokens: &Tensor,
    components: &[Component],
    how: Ablation,
) -> Result<Logits> {
    let hooks = ablation_hooks(model, tokens, components, how)?;
    model.with_hooks(&hooks).forward(tokens)
}

/// The hooks [`ablate`] applies, to combine with others.
pub fn ablation_hooks(
    model: &HookedTransformer,
    tokens: &Tensor,
    components: &[Component],
    how: Ablation,
) -> Result<Hooks> {
    let cfg = model.cfg();
    let toks = if tokens.rank() == 1 {
        tokens.unsqueeze(0)?
    } else {
        tokens.clone()
    };
    let s = toks.dim(1)?;
    let mut hooks = Hooks::new();
    for &c in components {
        let p = c.point();
        p.check_layers(cfg.n_layers)?;
        match c {
            Head(_, h) if h >= cfg.n_heads => {
                return Err(Error::Invalid(format!(
                    "head {h} does not exist: the model has {} query heads",
                    cfg.n_heads
                )))
            }
            Resid(_, q) if q >= s => {
                return Err(Error::Invalid(format!(
                    "position {q} is out of range for {s} tokens"
                )))
            }
            _ => {}
        }
        // The replacement for the whole activation [1 or b, s, ...], then masked to the component.
        let replacement: Option<Tensor> = match how {
            Ablation::Zero => None,
            Ablation::Mean(cache) => Some(mean_per_position(cache, p, s)?),
            Ablation::MeanPooled(cache) => Some(mean_pooled(cache, p)?.unsqueeze(0)?.unsqueeze(0)?),
            Ablation::Resample(cache, seed) => Some(resample(cache, p, s, seed)?),
        };
        hooks = hooks.add_point(p, move |x: &Tensor, _: &HookContext| {
            let r = match &replacement {
                Some(r) => r
                    .to_dtype(x.dtype())?
                    .broadcast_as(x.shape())?
                    .contiguous()?,
                None => x.zeros_like()?,
            };
            let shape = x.dims().to_vec();
            let on = |i: &[usize]| -> bool {
                match c {
                    Head(_, h) => i[2] == h,
                    Resid(_, q) => i[1] == q,
                    _ => true,
                }
            };
            let m = match c {
                Head(..) => crate::patching::mask(&[1, 1, shape[2], 1], x.device(), on)?,
                Resid(..) => crate::patching::mask(&[1, shape[1], 1], x.device(), on)?,
                _ => return Ok(r),
            };
            crate::patching::splice(x, &m, &r)
        });
    }
    Ok(hooks)
}

/// Rows of a cached activation [b, s, ...] with each row cut to its real length.
fn rows(cache: &ActivationCache, p: HookPoint) -> Result<Vec<Tensor>> {
    let t = cache.get(&p.name())?.to_dtype(DType::F32)?;
    let b = t.dim(0)?;
    let lens = cache.seq_lengths();
    (0..b)
        .map(|i| {
            let n = lens.get(i).copied().unwrap_or(t.dim(1)?).min(t.dim(1)?);
            Ok(t.i(i)?.narrow(0, 0, n)?)
        })
        .collect()
}

fn mean_pooled(cache: &ActivationCache, p: HookPoint) -> Result<Tensor> {
    let all = Tensor::cat(&rows(cache, p)?, 0)?;
    Ok(all.mean(0)?)
}

fn mean_per_position(cache: &ActivationCache, p: HookPoint, s: usize) -> Result<Tensor> {
    let rs = rows(cache, p)?;
    let pooled = mean_pooled(cache, p)?;
    let per: Vec<Tensor> = (0..s)
        .map(|q| {
            let at: Vec<Tensor> = rs
                .iter()
                .filter(|r| r.dim(0).is_ok_and(|n| n > q))
                .map(|r| r.i(q))
                .collect::<candle_core::Result<_>>()?;
            if at.is_empty() {
                Ok(pooled.clone())
            } else {
                Ok(Tensor::stack(&at, 0)?.mean(0)?)
            }
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::stack(&per, 0)?.unsqueeze(0)?)
}

fn resample(cache: &ActivationCache, p: HookPoint, s: usize, seed: u64) -> Result<Tensor> {
    let rs = rows(cache, p)?;
    let long: Vec<&Tensor> = rs
        .iter()
        .filter(|r| r.dim(0).is_ok_and(|n| n >= s))
        .collect();
    if long.is_empty() {
        return Err(Error::Invalid(format!(
            "resample ablation needs a dataset prompt at least as long as the ablated one ({s} tokens); the longest has {}",
            rs.iter().filter_map(|r| r.dim(0).ok()).max().unwrap_or(0)
        )));
    }
    // The shared seeded generator, so a seed means the same prompt everywhere.
    let i = Rng::new(seed).below(long.len());
    let pick = long[i];
    Ok(pick.narrow(0, 0, s)?.unsqueeze(0)?)
}
