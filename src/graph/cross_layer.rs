//! A cross-layer transcoder (circuit-tracer's CLT, or Gemma Scope 2's) as the graph's
//! [`Transcoders`]: layer l's features read layer l's input and write every layer l..n, so a
//! feature's source vector is one decoder row per layer it writes, each scaled by its
//! activation; layer l's error is `mlp_out_l − (Σ_{s ≤ l} acts_s · W_dec[s→l] + b_dec_l +
//! skip_l)`, as circuit-tracer's `compute_attribution_components` defines it (BOS activations
//! zeroed before the sum). Gradients flow through the skip path `x_l @ W_skip_l` of the layer
//! it writes (circuit-tracer's `configure_skip_connection`).

use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::graph::transcoders::{FeatureInput, Transcoders};
use crate::sae::format::circuit_tracer::CrossLayerTranscoder;

/// A cross-layer transcoder ready for attribution graphs.
#[derive(Debug, Clone)]
pub struct CrossLayer {
    clt: CrossLayerTranscoder,
    inputs: Vec<FeatureInput>,
    /// Per layer: the skip matrix transposed, so that skip = x · Mᵀ as [`Transcoders::skip`]
    /// has it (the file's `x @ W_skip`).
    skip_t: Option<Vec<Tensor>>,
}

impl CrossLayer {
    /// Wraps a loaded CLT; its input hooks must be one of those [`FeatureInput`] knows and its
    /// output hooks `blocks.L.hook_mlp_out`.
    pub fn new(clt: CrossLayerTranscoder) -> Result<CrossLayer> {
        let n = clt.n_layers();
        let mut inputs = Vec::with_capacity(n);
        let mut skip_t = Vec::new();
        for l in 0..n {
            inputs.push(FeatureInput::parse(&clt.input_hook(l), l)?);
            let out = format!("blocks.{l}.hook_mlp_out");
            if clt.output_hook(l) != out {
                return Err(Error::Invalid(format!(
                    "the cross-layer transcoder's layer {l} writes `{}`; an attribution graph \
                     needs `{out}`",
                    clt.output_hook(l)
                )));
            }
            if let Some(w) = clt.w_skip(l)? {
                skip_t.push(w.to_dtype(DType::F32)?.t()?.contiguous()?);
            }
        }
        let skip_t = if skip_t.is_empty() {
            None
        } else {
            Some(skip_t)
        };
        Ok(CrossLayer {
            clt,
            inputs,
            skip_t,
        })
    }

    /// Reads a CLT folder in circuit-tracer's layout ([`CrossLayerTranscoder::load`]).
    pub fn load(dir: &Path) -> Result<CrossLayer> {
        CrossLayer::new(CrossLayerTranscoder::load(dir)?)
    }

    /// The transcoder.
    pub fn clt(&self) -> &CrossLayerTranscoder {
        &self.clt
    }
}

impl Transcoders for CrossLayer {
    fn n_layers(&self) -> usize {
        self.clt.n_layers()
    }

    fn d_sae(&self, _layer: usize) -> usize {
        self.clt.d_transcoder()
    }

    fn input(&self, layer: usize) -> FeatureInput {
        self.inputs[layer]
    }

    fn encode(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.clt.encode(layer, x)
    }

    fn encode_pre(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.clt.encode_pre(layer, x)
    }

    fn encoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Tensor> {
        let w = self.clt.w_enc(layer)?;
        let ids = Tensor::new(feats, w.device())?;
        Ok(w.index_select(&ids, 1)?.t()?.contiguous()?)
    }

    fn decoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Vec<(usize, Tensor)>> {
        // Refuses a layer out of range, naming the CLT's layers.
        self.clt.w_enc(layer)?;
        let d = self.clt.d_model();
        (layer..self.clt.n_layers())
            .map(|out| {
                // A view into the source layer's [d_transcoder, n − layer, d_model] block:
                // rows one by one rather than a copy of the whole [d_transcoder, d_model] slab.
                let dec = self.clt.decoder(layer, out)?;
                if feats.is_empty() {
                    return Ok((out, Tensor::zeros((0, d), DType::F32, dec.device())?));
                }
                let rows = feats
                    .iter()
                    .map(|&f| dec.get(f as usize))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok((out, Tensor::stack(&rows, 0)?.to_dtype(DType::F32)?))
            })
            .collect()
    }

    fn output_bias(&self, out: usize, inputs: &[Tensor]) -> Result<Tensor> {
        let b_dec = self.clt.b_dec(out)?;
        let x = inputs.get(out).ok_or_else(|| {
            Error::Invalid(format!(
                "layer {out}'s output needs its input; {} given",
                inputs.len()
            ))
        })?;
        let x = x.to_dtype(DType::F32)?;
        let y = x.zeros_like()?.broadcast_add(b_dec)?;
        Ok(match self.clt.skip(out, &x)? {
            Some(s) => (y + s)?,
            None => y,
        })
    }

    fn skip(&self, out: usize) -> Option<&Tensor> {
        self.skip_t.as_ref().and_then(|s| s.get(out))
    }
}
