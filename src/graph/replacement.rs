//! The linearised replacement model a graph describes, as hooks to run interventions in: the
//! clean run's attention patterns and norm scales, every MLP output rebuilt from its
//! transcoder's features (only those active in the clean run, each passing its pre-activation
//! through unchanged) plus the frozen reconstruction error. Without an intervention it
//! reproduces the clean run; with one (a vector added to a layer's MLP output, an attention
//! pattern edited) it answers exactly what the graph's [total effects](crate::graph::Graph::total_effects)
//! predict, so a path can be cut at a head and the graph's claims checked.

use std::sync::{Arc, Mutex};

use candle_core::{DType, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::graph::{Frozen, Transcoders};
use crate::hooks::Hooks;

/// One layer's active features, captured so the hooks own everything they use.
struct Layer {
    /// Encoder rows of the active features [k, d].
    enc: Tensor,
    /// Their encoder biases [k].
    b_enc: Tensor,
    /// Which (position, feature) pairs were active in the clean run [s, k].
    mask: Tensor,
    /// (target layer, decoder rows [k, d]) for every layer the features write to.
    dec: Vec<(usize, Tensor)>,
}

impl Layer {
    /// The active features' activations for input `x` [s, d]: pre-activations where the
    /// clean run had the feature on, zero elsewhere.
    fn acts(&self, x: &Tensor) -> Result<Tensor> {
        let pre = x.matmul(&self.enc.t()?)?.broadcast_add(&self.b_enc)?;
        Ok((pre * &self.mask)?)
    }
}

/// Per layer, the live (feature activations [s, k], input [s, d]) once the pass reached it.
type Live = Arc<Mutex<Vec<Option<(Tensor, Tensor)>>>>;

/// The features of every layer active anywhere in the clean run (ascending ids).
fn active(acts: &Tensor) -> Result<Vec<u32>> {
    let any: Vec<f32> = acts.abs()?.max(0)?.to_vec1()?;
    Ok(any
        .iter()
        .enumerate()
        .filter(|(_, &a)| a > 0.0)
        .map(|(i, _)| i as u32)
        .collect())
}

/// Hooks that turn a model into the linearised replacement model of `frozen`'s clean run with
/// `transcoders`; `extra[l]` ([s, d]) is added to layer l's MLP output (an intervention, e.g. a
/// feature's decoder row times minus its activation at one position); `None` adds nothing.
/// Batch 1 only. Compose more edits after it with [`Hooks::then`] (a later hook on the same
/// point sees the frozen value).
pub fn linear_replacement(
    frozen: &Frozen,
    transcoders: &dyn Transcoders,
    extra: Option<&[Tensor]>,
) -> Result<Hooks> {
    let n = transcoders.n_layers();
    if let Some(e) = extra {
        if e.len() != n {
            return Err(Error::Invalid(format!(
                "{} extra MLP-output tensors for {n} layers; give one per layer (zeros where \
                 nothing changes)",
                e.len()
            )));
        }
    }
    let inputs: Vec<Tensor> = (0..n)
        .map(|l| frozen.input(transcoders, l))
        .collect::<Result<_>>()?;
    let mut layers = Vec::with_capacity(n);
    for (l, x) in inputs.iter().enumerate() {
        let acts = transcoders.encode(l, x)?.to_dtype(DType::F32)?;
        let feats = active(&acts)?;
        let s = x.dim(0)?;
        if feats.is_empty() {
            let d = x.dim(1)?;
            layers.push(Layer {
                enc: Tensor::zeros((0, d), DType::F32, x.device())?,
                b_enc: Tensor::zeros(0, DType::F32, x.device())?,
                mask: Tensor::zeros((s, 0), DType::F32, x.device())?,
                dec: vec![],
            });
            continue;
        }
        let idx = Tensor::new(feats.as_slice(), x.device())?;
        let mask = acts.index_select(&idx, 1)?.ne(0f64)?.to_dtype(DType::F32)?;
        // The encoder is affine: its value at zero is its bias.
        let b_enc = transcoders
            .encode_pre(l, &x.zeros_like()?.i(0..1)?)?
            .to_dtype(DType::F32)?
            .i(0)?
            .index_select(&idx, 0)?;
        layers.push(Layer {
            enc: transcoders.encoder_rows(l, &feats)?,
            b_enc,
            mask,
            dec: transcoders.decoder_rows(l, &feats)?,
        });
    }
    let zeros: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let mut bias = Vec::with_capacity(n);
    let mut error = Vec::with_capacity(n);
    let clean_acts: Vec<Tensor> = layers
        .iter()
        .zip(&inputs)
        .map(|(ly, x)| ly.acts(x))
        .collect::<Result<_>>()?;
    for t in 0..n {
        // The decoder bias alone: every input zero removes any skip path.
        let b = transcoders.output_bias(t, &zeros)?.to_dtype(DType::F32)?;
        let mut rec = transcoders.output_bias(t, &inputs)?.to_dtype(DType::F32)?;
        for (src, ly) in layers.iter().enumerate() {
            for (to, rows) in &ly.dec {
                if *to == t {
                    rec = (rec + clean_acts[src].matmul(rows)?)?;
                }
            }
        }
        error.push((frozen.mlp_out(t)? - rec)?);
        bias.push(b);
    }
    let skips: Vec<Option<Tensor>> = (0..n)
        .map(|t| {
            transcoders
                .skip(t)
                .map(|w| w.to_dtype(DType::F32))
                .transpose()
        })
        .collect::<candle_core::Result<_>>()?;
    let layers = Arc::new(layers);
    // The live activations of each layer's features and its live input, set when the
    // pass reaches that layer's input point.
    let live: Live = Arc::new(Mutex::new(vec![None; n]));
    let mut hooks = frozen.hooks(&[])?;
    for l in 0..n {
        let (ly, lv) = (layers.clone(), live.clone());
        let point = transcoders.input(l).point(l).name();
        hooks = hooks.add(&point, move |x, _| {
            if x.dim(0)? != 1 {
                return Err(Error::Invalid(
                    "the linearised replacement model runs one prompt at a time (batch 1)".into(),
                ));
            }
            let x0 = x.i(0)?.to_dtype(DType::F32)?;
            let acts = ly[l].acts(&x0)?;
            lock(&lv)?[l] = Some((acts, x0));
            Ok(x.clone())
        })?;
        let (ly, lv) = (layers.clone(), live.clone());
        let (b, err, skip) = (bias[l].clone(), error[l].clone(), skips[l].clone());
        let add = extra.map(|e| e[l].to_dtype(DType::F32)).transpose()?;
        hooks = hooks.add(&format!("blocks.{l}.hook_mlp_out"), move |x, _| {
            let state = lock(&lv)?;
            let mut out = err.broadcast_add(&b)?;
            for (src, layer) in ly.iter().enumerate().take(l + 1) {
                for (to, rows) in &layer.dec {
                    if *to == l {
                        let (acts, _) = state[src].as_ref().ok_or_else(|| {
                            Error::Invalid(format!(
                                "layer {src}'s transcoder input was not reached before \
                                 blocks.{l}.hook_mlp_out"
                            ))
                        })?;
                        out = (out + acts.matmul(rows)?)?;
                    }
                }
            }
            if let (Some(w), Some((_, x0))) = (&skip, state[l].as_ref()) {
                out = (out + x0.matmul(&w.t()?)?)?;
            }
            if let Some(a) = &add {
                out = (out + a)?;
            }
            Ok(out.unsqueeze(0)?.to_dtype(x.dtype())?)
        })?;
    }
    Ok(hooks)
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| crate::graph::frozen::poisoned())
}
