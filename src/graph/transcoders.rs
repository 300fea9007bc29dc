//! The seam between the attribution graph and the transcoders it replaces the MLPs with: what a
//! graph needs from a set of them (where each layer's features read and write, their
//! activations, encoder rows and activation-scaled decoder rows), so that per-layer transcoders
//! ([`PerLayer`]) and cross-layer transcoders (one encoder per layer, decoders to every later
//! layer: [`crate::graph::CrossLayer`]) both fit.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::sae::{Architecture, Normalization, Sae};

/// Where a layer's features read their input, relative to the MLP's norm (`ln2`): the point's
/// gradient with respect to `hook_resid_mid` is then a fixed map once the norm's scale is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureInput {
    /// `blocks.L.mlp.hook_in`: after `ln2`'s weight (circuit-tracer's `mlp.hook_in`).
    MlpIn,
    /// `blocks.L.ln2.hook_normalized`: after dividing by the scale, before the weight.
    Ln2Normalized,
    /// `blocks.L.hook_resid_mid` (or `hook_mlp_in`): the residual itself.
    ResidMid,
}

impl FeatureInput {
    /// The input point a hook name names at `layer`, or an error naming what is accepted.
    pub fn parse(name: &str, layer: usize) -> Result<FeatureInput> {
        let pre = format!("blocks.{layer}.");
        let rest = name.strip_prefix(&pre).unwrap_or("");
        match rest {
            "mlp.hook_in" => Ok(FeatureInput::MlpIn),
            "ln2.hook_normalized" => Ok(FeatureInput::Ln2Normalized),
            "hook_resid_mid" | "hook_mlp_in" => Ok(FeatureInput::ResidMid),
            _ => Err(Error::Invalid(format!(
                "layer {layer}'s transcoder reads `{name}`; an attribution graph needs it to read \
                 blocks.{layer}.mlp.hook_in, blocks.{layer}.ln2.hook_normalized or \
                 blocks.{layer}.hook_resid_mid"
            ))),
        }
    }

    /// The hook point at `layer`.
    pub fn point(self, layer: usize) -> HookPoint {
        match self {
            FeatureInput::MlpIn => HookPoint::MlpIn(layer),
            FeatureInput::Ln2Normalized => HookPoint::Ln2Normalized(layer),
            FeatureInput::ResidMid => HookPoint::ResidMid(layer),
        }
    }
}

/// What an attribution graph needs from the transcoders that replace a model's MLPs. Layer
/// `l`'s features read at [`Transcoders::input`]`(l)` and write (possibly to several layers)
/// at `blocks.L.hook_mlp_out`. Encoders must be affine in their input (no input normalisation)
/// so that a feature's pre-activation is linear in the residual stream.
pub trait Transcoders {
    /// Number of layers covered (the model's).
    fn n_layers(&self) -> usize;
    /// Features per layer.
    fn d_sae(&self, layer: usize) -> usize;
    /// Where layer `layer`'s features read.
    fn input(&self, layer: usize) -> FeatureInput;
    /// Activations [s, d_sae] of layer `layer`'s features for its input `x` [s, d_model].
    fn encode(&self, layer: usize, x: &Tensor) -> Result<Tensor>;
    /// Pre-activations [s, d_sae] (the affine part of the encoder) for `x` [s, d_model].
    fn encode_pre(&self, layer: usize, x: &Tensor) -> Result<Tensor>;
    /// Encoder rows [k, d_model] of layer `layer`'s features `feats`: the gradient of each
    /// pre-activation with respect to the input.
    fn encoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Tensor>;
    /// Decoder rows of layer `layer`'s features `feats`, one [k, d_model] block per layer they
    /// write to (a per-layer transcoder: its own layer only).
    fn decoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Vec<(usize, Tensor)>>;
    /// The part of layer `out`'s output that does not come from feature activations, given
    /// every layer's input [n_layers][s, d_model]: the decoder bias plus any skip path [s, d].
    fn output_bias(&self, out: usize, inputs: &[Tensor]) -> Result<Tensor>;
    /// The skip path's matrix W_skip [d_model, d_model] (out = in · W_skipᵀ) of the transcoder
    /// writing layer `out` from layer `out`'s input, when it has one: gradients flow through it.
    fn skip(&self, out: usize) -> Option<&Tensor>;
}

/// One transcoder per layer (SAELens, Gemma Scope 2 or circuit-tracer's per-layer files).
#[derive(Debug, Clone)]
pub struct PerLayer {
    saes: Vec<Sae>,
    inputs: Vec<FeatureInput>,
}

impl PerLayer {
    /// A set from one transcoder per layer, in layer order; each must be a transcoder reading
    /// layer l's MLP input and writing `blocks.l.hook_mlp_out`, without input normalisation.
    pub fn new(saes: Vec<Sae>) -> Result<PerLayer> {
        let mut inputs = Vec::with_capacity(saes.len());
        for (l, s) in saes.iter().enumerate() {
            let c = s.cfg();
            if !matches!(
                c.architecture,
                Architecture::Transcoder
                    | Architecture::SkipTranscoder
                    | Architecture::JumpReluTranscoder
                    | Architecture::JumpReluSkipTranscoder
            ) {
                return Err(Error::Invalid(format!(
                    "layer {l}'s SAE is a `{}`; an attribution graph needs (jumprelu) transcoders",
                    c.architecture.saelens_name()
                )));
            }
            if !matches!(
                c.normalize_activations,
                Normalization::None | Normalization::ExpectedAverageOnlyIn
            ) || c.rescale_acts_by_decoder_norm
            {
                return Err(Error::Invalid(format!(
                    "layer {l}'s transcoder normalises its input (`{}`), so its features are not \
                     linear in the residual stream; use one without input normalisation",
                    c.normalize_activations.saelens_name()
                )));
            }
            let out = format!("blocks.{l}.hook_mlp_out");
            if s.hook_name_out() != out {
                return Err(Error::Invalid(format!(
                    "layer {l}'s transcoder writes `{}`; an attribution graph needs `{out}`",
                    s.hook_name_out()
                )));
            }
            inputs.push(FeatureInput::parse(s.hook_name(), l)?);
        }
        Ok(PerLayer { saes, inputs })
    }

    /// The transcoders, in layer order.
    pub fn saes(&self) -> &[Sae] {
        &self.saes
    }

    fn sae(&self, layer: usize) -> Result<&Sae> {
        self.saes.get(layer).ok_or_else(|| {
            Error::Invalid(format!(
                "no transcoder for layer {layer} ({} given)",
                self.saes.len()
            ))
        })
    }
}

fn ids(feats: &[u32], dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::new(feats, dev)?)
}

impl Transcoders for PerLayer {
    fn n_layers(&self) -> usize {
        self.saes.len()
    }

    fn d_sae(&self, layer: usize) -> usize {
        self.saes.get(layer).map_or(0, Sae::d_sae)
    }

    fn input(&self, layer: usize) -> FeatureInput {
        self.inputs[layer]
    }

    fn encode(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.sae(layer)?.encode(x)
    }

    fn encode_pre(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.sae(layer)?.encode_pre(x)
    }

    fn encoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Tensor> {
        let s = self.sae(layer)?;
        let w = s.w_enc().to_dtype(DType::F32)?;
        Ok(w.index_select(&ids(feats, w.device())?, 1)?
            .t()?
            .contiguous()?)
    }

    fn decoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Vec<(usize, Tensor)>> {
        let s = self.sae(layer)?;
        let w = s.w_dec().to_dtype(DType::F32)?;
        Ok(vec![(layer, w.index_select(&ids(feats, w.device())?, 0)?)])
    }

    fn output_bias(&self, out: usize, inputs: &[Tensor]) -> Result<Tensor> {
        let s = self.sae(out)?;
        let x = inputs[out].to_dtype(DType::F32)?;
        let b = s.weights().b_dec.to_dtype(DType::F32)?;
        let mut y = x.zeros_like()?.broadcast_add(&b)?;
        if let Some(ws) = &s.weights().w_skip {
            y = (y + x.matmul(&ws.to_dtype(DType::F32)?.t()?)?)?;
        }
        Ok(y)
    }

    fn skip(&self, out: usize) -> Option<&Tensor> {
        self.saes.get(out).and_then(|s| s.weights().w_skip.as_ref())
    }
}
