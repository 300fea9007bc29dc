//! The forward pass's per-layer pieces, public for techniques that assemble their own pass
//! (a replacement model with frozen attention and norm scales): one norm with its own or a
//! given scale, one layer's attention with its own or a given pattern, one layer's MLP. Each
//! is the code the full forward pass runs, without hooks.
//!
//! Inside a full pass the same freezing is a hook: replacing `hook_pattern` or a norm's
//! `hook_scale` with a detached tensor makes the pass use it (see [`crate::model::Pass`]).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::model::masks::Mask;
use crate::model::rope::Rope;
use crate::model::run::Run;
use crate::model::transformer::HookedTransformer;

/// One of a model's RMSNorms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Before layer l's attention (`ln1`).
    Ln1(usize),
    /// After layer l's attention, before the residual add (`ln1_post`, Gemma 2/3).
    Ln1Post(usize),
    /// Before layer l's MLP (`ln2`).
    Ln2(usize),
    /// After layer l's MLP, before the residual add (`ln2_post`, Gemma 2/3).
    Ln2Post(usize),
    /// Layer l's per-head query norm (`attn.q_norm`, [.., d_head]).
    QNorm(usize),
    /// Layer l's per-head key norm (`attn.k_norm`, [.., d_head]).
    KNorm(usize),
    /// The final norm (`ln_final`).
    Final,
}

impl Norm {
    /// Its (`hook_scale`, `hook_normalized`) points.
    pub fn hook_points(self) -> (HookPoint, HookPoint) {
        use HookPoint as P;
        match self {
            Norm::Ln1(l) => (P::Ln1Scale(l), P::Ln1Normalized(l)),
            Norm::Ln1Post(l) => (P::Ln1PostScale(l), P::Ln1PostNormalized(l)),
            Norm::Ln2(l) => (P::Ln2Scale(l), P::Ln2Normalized(l)),
            Norm::Ln2Post(l) => (P::Ln2PostScale(l), P::Ln2PostNormalized(l)),
            Norm::QNorm(l) => (P::QNormScale(l), P::QNormNormalized(l)),
            Norm::KNorm(l) => (P::KNormScale(l), P::KNormNormalized(l)),
            Norm::Final => (P::LnFinalScale, P::LnFinalNormalized),
        }
    }
}

impl HookedTransformer {
    /// The norm's output (after its weight) for `x` [.., d], dividing by `scale` [.., 1] when
    /// given (a frozen scale: gradients then do not flow through it) instead of x's own RMS.
    pub fn norm(&self, which: Norm, x: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
        let (scale_at, normalized_at) = which.hook_points();
        self.check_hook_point(scale_at)?;
        let w = self.w.as_ref();
        let weight = match which {
            Norm::Ln1(l) => Some(&block(w, l)?.ln1),
            Norm::Ln1Post(l) => block(w, l)?.ln1_post.as_ref(),
            Norm::Ln2(l) => Some(&block(w, l)?.ln2),
            Norm::Ln2Post(l) => block(w, l)?.ln2_post.as_ref(),
            Norm::QNorm(l) => block(w, l)?.q_norm.as_ref(),
            Norm::KNorm(l) => block(w, l)?.k_norm.as_ref(),
            Norm::Final => Some(&w.ln_final),
        }
        .ok_or_else(|| Error::Invalid(format!("this model has no {which:?} norm")))?;
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        let frozen = scale.map(|s| move |_: &Tensor, _: &HookContext| Ok(s.clone()));
        if let Some(f) = &frozen {
            run.hook(scale_at, f);
        }
        self.rms_norm(x, weight, (scale_at, normalized_at), &mut run)
    }

    /// Layer `l`'s attention on its normed input `x` [b, s, d] (after `ln1`'s weight): the
    /// output projection's result with its bias, before any post-attention norm. With
    /// `pattern` [b, n_heads, s, s] given, it is used instead of softmax(q·k) (a frozen
    /// pattern: gradients flow only through the values and the output projection).
    pub fn attention(&self, l: usize, x: &Tensor, pattern: Option<&Tensor>) -> Result<Tensor> {
        let w = block(&self.w, l)?;
        let s = x.dim(1)?;
        let lc = &self.cfg.layers[l];
        let rope = Rope::tables(&self.cfg, s, &self.device)?
            .into_iter()
            .find(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
            .ok_or_else(|| Error::Load(format!("no RoPE table for layer {l}")))?;
        let mask = Mask::for_layers(&self.cfg, s, &self.device)
            .into_iter()
            .find(|m| m.window == lc.sliding_window)
            .ok_or_else(|| Error::Load(format!("no mask for layer {l}")))?;
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        let frozen = pattern.map(|p| move |_: &Tensor, _: &HookContext| Ok(p.clone()));
        if let Some(f) = &frozen {
            run.hook(HookPoint::Pattern(l), f);
        }
        self.attention_inner(l, w, x, &rope, &mask, None, &mut run)
    }

    /// Layer `l`'s MLP on its normed input `x` [b, s, d] (after `ln2`'s weight), before any
    /// post-MLP norm.
    pub fn mlp(&self, l: usize, x: &Tensor) -> Result<Tensor> {
        let w = block(&self.w, l)?;
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        self.mlp_inner(l, w, x, &mut run)
    }
}

fn block(w: &crate::model::Weights, l: usize) -> Result<&crate::model::BlockWeights> {
    w.blocks.get(l).ok_or_else(|| {
        Error::Invalid(format!(
            "layer {l} does not exist ({} layers)",
            w.blocks.len()
        ))
    })
}
