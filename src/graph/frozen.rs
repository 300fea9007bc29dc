//! The clean run a graph is built from, and the replacement model it defines: every norm scale
//! and attention pattern of the clean run, each layer's MLP input and output, and the logits.
//! [`Frozen::hooks`] turns it into circuit-tracer's frozen replacement forward (scales and
//! patterns replaced by the clean run's, every MLP output by a given tensor), through which
//! the graph's edges are exact direct effects.

use std::sync::{Arc, Mutex};

use candle_core::{DType, IndexOp, Tensor};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::graph::transcoders::Transcoders;
use crate::hooks::Hooks;
use crate::model::HookedTransformer;

/// The clean run of one prompt, with everything the frozen replacement model holds fixed.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Every `hook_scale`, `attn.hook_pattern`, transcoder input and `hook_mlp_out` of the run
    /// (batch 1).
    pub cache: ActivationCache,
    /// The logits at the last position [d_vocab] (f32, soft-capped where the model caps).
    pub last_logits: Tensor,
}

/// Whether the frozen replacement model holds the activation named `name` fixed.
fn frozen_name(name: &str) -> bool {
    name.ends_with("hook_scale") || name.ends_with("attn.hook_pattern")
}

impl Frozen {
    /// Runs `model` on `tokens` once, keeping the scales, patterns, the transcoders' inputs and
    /// every MLP output.
    pub fn run(
        model: &HookedTransformer,
        tokens: &[u32],
        transcoders: &dyn Transcoders,
    ) -> Result<Frozen> {
        let n = model.cfg().n_layers;
        if transcoders.n_layers() != n {
            return Err(Error::Invalid(format!(
                "{} transcoders for a model of {n} layers; an attribution graph needs one per layer",
                transcoders.n_layers()
            )));
        }
        if tokens.is_empty() {
            return Err(Error::Invalid(
                "an attribution graph needs a non-empty prompt".into(),
            ));
        }
        let inputs: Vec<String> = (0..n)
            .map(|l| transcoders.input(l).point(l).name())
            .collect();
        let filter = |name: &str| {
            frozen_name(name) || name.ends_with("hook_mlp_out") || inputs.iter().any(|i| i == name)
        };
        let toks = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
        let last = [tokens.len() - 1];
        let out = model.pass(&toks).cache(&filter).logits_at(&last).run()?;
        let last_logits = out.logits.i((0, 0))?.to_dtype(DType::F32)?;
        Ok(Frozen {
            tokens: tokens.to_vec(),
            cache: out.cache,
            last_logits,
        })
    }

    /// Number of positions.
    pub fn n_pos(&self) -> usize {
        self.tokens.len()
    }

    /// The activation `name` of the clean run without its batch dimension, in f32.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let t = self.cache.get(name)?;
        let t = if t.dims().first() == Some(&1) && t.rank() > 1 {
            t.i(0)?
        } else {
            t
        };
        Ok(t.to_dtype(DType::F32)?)
    }

    /// A norm's frozen scale as a column [s] (`name` is its `hook_scale`).
    pub fn scale(&self, name: &str) -> Result<Tensor> {
        Ok(self.get(name)?.flatten_all()?)
    }

    /// Layer `l`'s transcoder input [s, d] in the clean run.
    pub fn input(&self, transcoders: &dyn Transcoders, l: usize) -> Result<Tensor> {
        self.get(&transcoders.input(l).point(l).name())
    }

    /// Layer `l`'s MLP output [s, d] (`blocks.l.hook_mlp_out`) in the clean run.
    pub fn mlp_out(&self, l: usize) -> Result<Tensor> {
        self.get(&format!("blocks.{l}.hook_mlp_out"))
    }

    /// The frozen replacement forward as hooks: every norm scale and attention pattern
    /// replaced by the clean run's, and layer l's `hook_mlp_out` by `mlp_out[l]` ([s, d], or
    /// [b, s, d] for a batch of variants; the transcoders' output plus the frozen error, so the
    /// clean MLP output itself leaves the run unchanged). Add a perturbation to one layer's
    /// tensor to measure direct effects. The frozen values repeat over a batch of any size.
    pub fn hooks(&self, mlp_out: &[Tensor]) -> Result<Hooks> {
        let mut hooks = Hooks::new();
        for (name, t) in self.cache.iter() {
            if frozen_name(name) {
                let t = t.clone();
                hooks = hooks.add(name, move |x, _| repeat_rows(&t, x))?;
            }
        }
        for (l, t) in mlp_out.iter().enumerate() {
            let t = if t.rank() == 2 {
                t.unsqueeze(0)?
            } else {
                t.clone()
            };
            hooks = hooks.add(&format!("blocks.{l}.hook_mlp_out"), move |x, _| {
                repeat_rows(&t, x)
            })?;
        }
        Ok(hooks)
    }

    /// [`Frozen::hooks`] with the transcoders' skip paths live, as in circuit-tracer's
    /// replacement model (`skip + (mlp_out − skip).detach()`): layer l's MLP output is
    /// `mlp_out[l]` plus the skip map of how far layer l's transcoder input has moved from the
    /// clean run's. Without skip paths, the same as [`Frozen::hooks`].
    pub fn replacement_hooks(
        &self,
        mlp_out: &[Tensor],
        transcoders: &dyn Transcoders,
    ) -> Result<Hooks> {
        let mut hooks = self.hooks(mlp_out)?;
        for l in 0..mlp_out.len() {
            let Some(m) = transcoders.skip(l) else {
                continue;
            };
            let m_t = m.to_dtype(DType::F32)?.t()?.contiguous()?;
            let clean = self.input(transcoders, l)?;
            // The input is seen before the output in the same forward; the slot carries it.
            let seen = Arc::new(Mutex::new(None::<Tensor>));
            let put = seen.clone();
            let point = transcoders.input(l).point(l).name();
            hooks = hooks.observe(&point, move |x, _| {
                *put.lock().map_err(|_| poisoned())? = Some(x.clone());
                Ok(())
            })?;
            hooks = hooks.add(&format!("blocks.{l}.hook_mlp_out"), move |y, _| {
                let x = seen.lock().map_err(|_| poisoned())?.take().ok_or_else(|| {
                    Error::Invalid(format!(
                        "layer {l}'s transcoder input was not seen before its MLP output"
                    ))
                })?;
                let dx = x.to_dtype(DType::F32)?.broadcast_sub(&clean)?;
                let ds = crate::sae::autoencoder::matmul_last(&dx, &m_t)?;
                Ok((y + ds.to_dtype(y.dtype())?)?)
            })?;
        }
        Ok(hooks)
    }
}

/// The error of a hook whose shared state a panicked hook left behind.
pub(crate) fn poisoned() -> Error {
    Error::Invalid("a replacement-model hook panicked in another thread".into())
}

/// `t` (computed for batch 1) repeated along its first dimension to `like`'s shape, in its
/// dtype: batch-major layouts ([b, ..] and TransformerLens's [b·s·heads, ..]) repeat alike.
fn repeat_rows(t: &Tensor, like: &Tensor) -> Result<Tensor> {
    let t = t.to_dtype(like.dtype())?;
    if t.dims() == like.dims() {
        return Ok(t);
    }
    let (a, b) = (t.dim(0)?, like.dim(0)?);
    if a == 0 || b % a != 0 || t.dims()[1..] != like.dims()[1..] {
        return Err(Error::Invalid(format!(
            "a frozen activation of shape {:?} cannot stand for one of shape {:?}",
            t.dims(),
            like.dims()
        )));
    }
    let mut reps = vec![1usize; t.rank()];
    reps[0] = b / a;
    Ok(t.repeat(reps)?)
}
