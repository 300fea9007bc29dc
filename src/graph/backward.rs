//! The backward pass of the frozen replacement model, written out as the linear maps it is.
//! With attention patterns, norm scales and MLP outputs frozen, the residual stream entering a
//! layer reaches the residual leaving it through the identity plus the attention's value/output
//! path: frozen ln1 (scale × weight) → W_V → frozen pattern mixing positions → W_O → frozen
//! post-attention norm. Applying the transposes of these maps to a batch of gradients
//! [n_targets, positions, d_model] layer by layer gives, at every layer's output and at the
//! embeddings, exactly the gradients circuit-tracer's autograd computes, without a graph.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::graph::frozen::Frozen;
use crate::graph::transcoders::{FeatureInput, Transcoders};
use crate::model::HookedTransformer;

/// One layer's frozen linear maps.
struct Layer {
    /// ln1's weight over its frozen scale [s, d].
    ln1: Tensor,
    /// The post-attention norm's weight over its frozen scale [s, d] (Gemma 2/3).
    post1: Option<Tensor>,
    /// The attention pattern transposed, [n_heads, key, query].
    pattern_t: Tensor,
    /// W_O [d_model, n_heads·d_head] (out = z · W_Oᵀ).
    w_o: Tensor,
    /// W_V [n_kv_heads·d_head, d_model] (v = x · W_Vᵀ).
    w_v: Tensor,
    /// d(feature input)/d(resid_mid) per position, as a diagonal [s, d].
    input: Tensor,
    /// The transcoder's skip matrix [d, d] (out = in · W_skipᵀ), when it has one.
    skip: Option<Tensor>,
}

/// The frozen model's backward pass for one prompt.
pub struct Backward {
    layers: Vec<Layer>,
    /// The final norm's weight over its frozen scale at the last position [d].
    pub final_last: Tensor,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    d_model: usize,
}

/// A norm's weight over its frozen scale, [s, d].
fn frozen_norm(weight: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let w = weight.to_dtype(DType::F32)?.unsqueeze(0)?;
    let inv = scale.recip()?.unsqueeze(1)?;
    Ok(inv.broadcast_mul(&w)?)
}

impl Backward {
    /// The maps of `model` frozen at `frozen`'s clean run.
    pub fn new(
        model: &HookedTransformer,
        frozen: &Frozen,
        transcoders: &dyn Transcoders,
    ) -> Result<Backward> {
        let cfg = model.cfg();
        let w = model.weights();
        let s = frozen.n_pos();
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for (l, b) in w.blocks.iter().enumerate() {
            let ln1 = frozen_norm(
                &b.ln1,
                &frozen.scale(&format!("blocks.{l}.ln1.hook_scale"))?,
            )?;
            let post1 = match &b.ln1_post {
                Some(wp) => Some(frozen_norm(
                    wp,
                    &frozen.scale(&format!("blocks.{l}.ln1_post.hook_scale"))?,
                )?),
                None => None,
            };
            let pattern = frozen.get(&format!("blocks.{l}.attn.hook_pattern"))?;
            let pattern_t = pattern.transpose(1, 2)?.contiguous()?;
            let s2 = || frozen.scale(&format!("blocks.{l}.ln2.hook_scale"));
            let input = match transcoders.input(l) {
                FeatureInput::MlpIn => frozen_norm(&b.ln2, &s2()?)?,
                FeatureInput::Ln2Normalized => {
                    let ones = Tensor::ones(cfg.d_model, DType::F32, model.device())?;
                    frozen_norm(&ones, &s2()?)?
                }
                FeatureInput::ResidMid => {
                    Tensor::ones((s, cfg.d_model), DType::F32, model.device())?
                }
            };
            layers.push(Layer {
                ln1,
                post1,
                pattern_t,
                w_o: b.w_o.dense()?.to_dtype(DType::F32)?,
                w_v: b.w_v.dense()?.to_dtype(DType::F32)?,
                input,
                skip: transcoders
                    .skip(l)
                    .map(|t| t.to_dtype(DType::F32))
                    .transpose()?,
            });
        }
        let fin = frozen_norm(&w.ln_final, &frozen.scale("ln_final.hook_scale")?)?;
        Ok(Backward {
            layers,
            final_last: fin.get(s - 1)?,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            d_head: cfg.d_head,
            d_model: cfg.d_model,
        })
    }

    /// Layer `l`'s map from the gradient at its feature input to the gradient at
    /// `hook_resid_mid`, for positions `..sp`: a per-position diagonal [sp, d].
    pub fn input_map(&self, l: usize, sp: usize) -> Result<Tensor> {
        Ok(self.layers[l].input.narrow(0, 0, sp)?)
    }

    /// The gradient at `hook_resid_mid` of layer `l` that reaches it from `hook_resid_post`
    /// through the transcoder's skip path (zero without one), for `g` [t, sp, d].
    pub fn skip(&self, l: usize, g: &Tensor) -> Result<Option<Tensor>> {
        let layer = &self.layers[l];
        let Some(ws) = &layer.skip else {
            return Ok(None);
        };
        let (t, sp, d) = g.dims3()?;
        let gi = g.reshape((t * sp, d))?.matmul(ws)?.reshape((t, sp, d))?;
        Ok(Some(gi.broadcast_mul(&self.input_map(l, sp)?)?))
    }

    /// The gradient at `hook_resid_pre` of layer `l` for the gradient `g` [t, sp, d] at its
    /// `hook_resid_mid` (positions `..sp`; later positions cannot receive any, attention being
    /// causal): g plus its transpose through the frozen attention.
    pub fn through_attention(&self, l: usize, g: &Tensor) -> Result<Tensor> {
        let layer = &self.layers[l];
        let (t, sp, d) = g.dims3()?;
        let (n, k, h) = (self.n_heads, self.n_kv_heads, self.d_head);
        let go = match &layer.post1 {
            Some(c) => g.broadcast_mul(&c.narrow(0, 0, sp)?)?,
            None => g.clone(),
        };
        let gz = go.reshape((t * sp, d))?.matmul(&layer.w_o)?;
        let gz = gz.reshape((t, sp, n, h))?.transpose(1, 2)?.contiguous()?;
        let pt = layer
            .pattern_t
            .narrow(1, 0, sp)?
            .narrow(2, 0, sp)?
            .contiguous()?
            .unsqueeze(0)?;
        // [t, n, key, h]: each key position's value receives what the queries read from it.
        let gv = pt.broadcast_matmul(&gz)?;
        let gv = if n == k {
            gv
        } else {
            gv.reshape((t, k, n / k, sp, h))?.sum(2)?
        };
        let gv = gv.transpose(1, 2)?.contiguous()?.reshape((t * sp, k * h))?;
        let ga = gv.matmul(&layer.w_v)?.reshape((t, sp, self.d_model))?;
        let gx = ga.broadcast_mul(&layer.ln1.narrow(0, 0, sp)?)?;
        Ok((g + gx)?)
    }
}

/// Σ_d a[t, p, d] · b[p, d] → [t, p].
pub fn dot_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.broadcast_mul(&b.unsqueeze(0)?)?.sum(D::Minus1)?)
}
