//! The one forward pass every architecture runs, read top to bottom, with a hook point at every
//! named activation: embed (or start from a residual stream, or a wavefront of them, or continue
//! a KV cache), then per block attention and MLP, then the final norm and only the logits asked
//! for.
//!
//! The pass is batch-first and uses only ops that candle can differentiate (no fused softmax,
//! RMSNorm or RoPE), so the same code serves attribution patching.
//!
//! Gemma's post-attention and post-MLP norms sit between the heads and the residual stream:
//! `hook_attn_out` / `hook_mlp_out` are after them (what is added to the residual), while the
//! per-head `hook_result` is before them, so for Gemma the heads' results do not sum to
//! `hook_attn_out`.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::attention::{attention_scores, blocked_attention, repeat_kv, softmax_f32};
use crate::model::config::Activation;
use crate::model::kv_cache::KvCache;
use crate::model::masks::{Mask, BLOCKED_ATTENTION_FROM};
use crate::model::matrix::Matrix;
use crate::model::ops;
use crate::model::rope::{apply_rope, Rope};
use crate::model::run::Run;
use crate::model::transformer::{
    select_positions, select_spans, BlockWeights, HookedTransformer, LogitRows, Start,
};

impl HookedTransformer {
    /// The forward pass. It starts from token ids, or from a residual stream entering a
    /// layer (sweeps reuse the unpatched prefix this way), and computes only the logits asked
    /// for: at this model size the unembedding costs more than all the blocks together.
    pub(crate) fn forward_inner(
        &self,
        start: Start,
        run: &mut Run,
        logits: LogitRows,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        if self.check_finite {
            run.check_finite(true);
        }
        let mut pending: Vec<(usize, Tensor)> = Vec::new();
        let mut kv = None;
        let (first, mut resid) = match start {
            Start::Tokens(tokens) => (0, self.embed(tokens, run)?),
            Start::Continue { tokens, kv: cache } => {
                let (b, s) = self.check_tokens(tokens)?.dims2()?;
                if b != cache.batch() || cache.len() + s > cfg.max_position {
                    return Err(Error::Invalid(format!(
                        "cannot continue a KV cache of {} rows and {} slots with ids of shape [{b}, {s}] (context {})",
                        cache.batch(),
                        cache.len(),
                        cfg.max_position
                    )));
                }
                run.set_offset(cache.len());
                kv = Some(cache);
                (0, self.embed(tokens, run)?)
            }
            Start::Resid { layer, resid } => {
                if layer > cfg.n_layers || resid.rank() != 3 || resid.dim(2)? != cfg.d_model {
                    return Err(Error::Shape(format!(
                        "cannot start layer {layer} from a residual of shape {:?} (model: {} layers, d_model {})",
                        resid.dims(),
                        cfg.n_layers,
                        cfg.d_model
                    )));
                }
                (layer, resid)
            }
            Start::Waves(mut waves) => {
                let ok = !waves.is_empty()
                    && waves.windows(2).all(|w| w[0].0 < w[1].0)
                    && waves.iter().all(|(l, r)| {
                        *l < cfg.n_layers
                            && r.rank() == 3
                            && r.dims()[1..] == waves[0].1.dims()[1..]
                            && r.dim(2).is_ok_and(|d| d == cfg.d_model)
                    });
                if !ok {
                    return Err(Error::Shape(
                        "waves must enter increasing layers with residuals of one [_, s, d_model] shape"
                            .into(),
                    ));
                }
                pending = waves.split_off(1);
                let (layer, resid) = waves.remove(0);
                (layer, resid)
            }
        };
        let (_, s, _) = resid.dims3()?;

        // Continuing a cache, each row's new slots sit at its own positions (after its left
        // padding) and see the cached keys.
        let (ropes, masks) = match &kv {
            None => (
                Rope::tables(cfg, s, &self.device)?,
                Mask::for_layers(cfg, s, &self.device),
            ),
            Some(kv) => {
                let pos = kv.position_ids(s, &self.device)?;
                let ropes = Rope::tables(cfg, kv.len() + s, &self.device)?
                    .iter()
                    .map(|r| r.at_positions(&pos))
                    .collect::<Result<Vec<_>>>()?;
                let masks = Mask::for_layers_cached(cfg, kv.len(), s, kv.pad(), &self.device);
                (ropes, masks)
            }
        };
        for (l, blk) in self.w.blocks.iter().enumerate().skip(first) {
            let lc = &cfg.layers[l];
            let rope = ropes
                .iter()
                .find(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
                .ok_or_else(|| Error::Load(format!("no RoPE table for layer {l}")))?;
            let mask = masks
                .iter()
                .find(|m| m.window == lc.sliding_window)
                .ok_or_else(|| Error::Load(format!("no mask for layer {l}")))?;
            if pending.first().is_some_and(|(pl, _)| *pl == l) {
                let (_, joining) = pending.remove(0);
                resid = Tensor::cat(&[&resid, &joining], 0)?;
            }
            resid = self.block(l, blk, resid, rope, mask, kv.as_deref_mut(), run)?;
        }
        if let Some(kv) = kv {
            kv.advance(s);
        }
        let b = resid.dim(0)?;

        let (scale, normed) = rms_norm(&resid, &self.w.ln_final, cfg.rms_norm_eps)?;
        run.at(HookPoint::LnFinalScale, scale)?;
        let normed = run.at(HookPoint::LnFinalNormalized, normed)?;
        let (normed, rows) = match logits {
            LogitRows::All => (normed, s),
            LogitRows::At(pos) => (select_positions(&normed, pos)?, 1),
            LogitRows::Spans(spans) => {
                let x = select_spans(&normed, spans)?;
                let rows = x.dim(1)?;
                (x, rows)
            }
            LogitRows::From(p) if p < s => (normed.narrow(1, p, s - p)?, s - p),
            LogitRows::From(p) => {
                return Err(Error::Invalid(format!(
                    "logits from position {p}, but there are {s} positions"
                )))
            }
            LogitRows::None => {
                return Ok(Tensor::zeros(
                    (b, 0, cfg.d_vocab),
                    DType::F32,
                    &self.device,
                )?)
            }
        };
        let logits = linear(
            &normed.reshape((b * rows, cfg.d_model))?,
            self.unembed(),
            None,
        )?
        .reshape((b, rows, cfg.d_vocab))?;
        let logits = match cfg.final_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Token embeddings [b, s, d], scaled where the architecture scales them.
    fn embed(&self, tokens: &Tensor, run: &mut Run) -> Result<Tensor> {
        let cfg = &self.cfg;
        let tokens = self.check_tokens(tokens)?;
        let (b, s) = tokens.dims2()?;
        let x = self.w.embed.rows(&tokens)?.reshape((b, s, cfg.d_model))?;
        // HF multiplies by the scale rounded to the activation dtype; so do we.
        let x = match cfg.embed_scale {
            Some(scale) => {
                x.broadcast_mul(&Tensor::new(scale as f32, &self.device)?.to_dtype(x.dtype())?)?
            }
            None => x,
        };
        run.at(HookPoint::Embed, x)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        l: usize,
        w: &BlockWeights,
        resid_pre: Tensor,
        rope: &Rope,
        mask: &Mask,
        kv: Option<&mut KvCache>,
        run: &mut Run,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, s, d) = resid_pre.dims3()?;
        let (n, k, h) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let resid_pre = run.at(HookPoint::ResidPre(l), resid_pre)?;

        // Attention.
        let (scale, x) = rms_norm(&resid_pre, &w.ln1, cfg.rms_norm_eps)?;
        run.at(HookPoint::Ln1Scale(l), scale)?;
        let x = run.at(HookPoint::Ln1Normalized(l), x)?;
        let x2 = x.reshape((b * s, d))?;
        let qkv = linear(&x2, &self.qkv[l], None)?;
        let part =
            |from: usize, len: usize, bias: Option<&Tensor>, heads: usize| -> Result<Tensor> {
                let y = qkv.narrow(1, from, len)?;
                let y = match bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                };
                Ok(y.reshape((b, s, heads, h))?)
            };
        let q = part(0, n * h, w.b_q.as_ref(), n)?;
        let kk = part(n * h, k * h, w.b_k.as_ref(), k)?;
        let v = part((n + k) * h, k * h, w.b_v.as_ref(), k)?;
        let (q, kk) = match (&w.q_norm, &w.k_norm) {
            (Some(qn), Some(kn)) => (
                rms_norm(&q, qn, cfg.rms_norm_eps)?.1,
                rms_norm(&kk, kn, cfg.rms_norm_eps)?.1,
            ),
            _ => (q, kk),
        };
        let q = run.at(HookPoint::Q(l), q)?;
        let kk = run.at(HookPoint::K(l), kk)?;
        let v = run.at(HookPoint::V(l), v)?;
        let q = run.at(HookPoint::RotQ(l), apply_rope(&q, rope)?)?;
        let kk = run.at(HookPoint::RotK(l), apply_rope(&kk, rope)?)?;

        // [b, heads, s, h]; each kv head serves n/k consecutive query heads.
        let qh = q.transpose(1, 2)?.contiguous()?;
        let (kt, vt) = (kk.transpose(1, 2)?, v.transpose(1, 2)?);
        // Continuing a cache, the queries see every cached key as well as the new ones.
        let (kt, vt) = match kv {
            Some(kv) => kv.append(l, &kt, &vt)?,
            None => (kt, vt),
        };
        let kh = repeat_kv(&kt, n / k)?;
        let vh = repeat_kv(&vt, n / k)?;
        let seen = run.wants(HookPoint::AttnScores(l)) || run.wants(HookPoint::Pattern(l));
        let z = if s >= BLOCKED_ATTENTION_FROM && !seen && mask.blockable() {
            blocked_attention(cfg, &qh, &kh, &vh, mask)?
        } else {
            let scores = attention_scores(cfg, &qh, &kh, mask.full()?)?;
            let scores = run.at(HookPoint::AttnScores(l), scores)?;
            let pattern = softmax_f32(&scores)?;
            let pattern = run.at(HookPoint::Pattern(l), pattern)?;
            pattern.matmul(&vh)?
        };
        let z = z.transpose(1, 2)?.contiguous()?; // [b, s, n, h]
        let z = run.at(HookPoint::Z(l), z)?;
        let attn = linear(&z.reshape((b * s, n * h))?, &w.w_o, None)?.reshape((b, s, d))?;
        let attn = if run.wants(HookPoint::Result(l)) {
            // Per-head outputs: result[b,s,i,:] = W_O[:, i*h..(i+1)*h] z[b,s,i,:].
            let zh = z.permute((2, 0, 1, 3))?.reshape((n, b * s, h))?;
            // [n, h, d] as a strided view: gemm takes the strides, a copy of W_O per layer
            // cost more than the product. (Quantised W_O is dequantised for it: exact in
            // stream mode; in quantized mode the heads then sum to the dequantised product.)
            let wo = w.w_o.dense()?.reshape((d, n, h))?.permute((1, 2, 0))?;
            let result = zh
                .matmul(&wo)?
                .reshape((n, b, s, d))?
                .permute((1, 2, 0, 3))?
                .contiguous()?;
            let id = result.id();
            let result = run.at(HookPoint::Result(l), result)?;
            // Hooks that only read keep the fused sum, so reading never changes the logits.
            if result.id() == id {
                attn
            } else {
                result.sum(2)?
            }
        } else {
            attn
        };
        // The output bias belongs to no head: it is added after the heads are summed.
        let attn = match &w.b_o {
            Some(bias) => attn.broadcast_add(bias)?,
            None => attn,
        };
        let attn = match &w.ln1_post {
            Some(wn) => rms_norm(&attn, wn, cfg.rms_norm_eps)?.1,
            None => attn,
        };
        let attn_out = run.at(HookPoint::AttnOut(l), attn)?;
        let resid_mid = run.at(HookPoint::ResidMid(l), (&resid_pre + &attn_out)?)?;

        // MLP.
        let (scale, x) = rms_norm(&resid_mid, &w.ln2, cfg.rms_norm_eps)?;
        run.at(HookPoint::Ln2Scale(l), scale)?;
        let x = run.at(HookPoint::Ln2Normalized(l), x)?;
        let x2 = x.reshape((b * s, d))?;
        let gate = linear(&x2, &w.w_gate, None)?.reshape((b, s, cfg.d_mlp))?;
        let gate = run.at(HookPoint::MlpPre(l), gate)?;
        let up = linear(&x2, &w.w_up, None)?.reshape((b, s, cfg.d_mlp))?;
        let up = run.at(HookPoint::MlpPreLinear(l), up)?;
        let act = match cfg.activation {
            Activation::GeluTanh => ops::gelu_tanh(&gate)?,
            Activation::GeluErf => gate.gelu_erf()?,
            Activation::Silu => gate.silu()?,
        };
        let post = run.at(HookPoint::MlpPost(l), (act * up)?)?;
        let mlp =
            linear(&post.reshape((b * s, cfg.d_mlp))?, &w.w_down, None)?.reshape((b, s, d))?;
        let mlp = match &w.ln2_post {
            Some(wn) => rms_norm(&mlp, wn, cfg.rms_norm_eps)?.1,
            None => mlp,
        };
        let mlp_out = run.at(HookPoint::MlpOut(l), mlp)?;
        run.at(HookPoint::ResidPost(l), (&resid_mid + &mlp_out)?)
    }
}

/// x [.., in] @ w[out, in]^T (+ b); the backward skips the weight's gradient.
fn linear(x: &Tensor, w: &Matrix, b: Option<&Tensor>) -> Result<Tensor> {
    w.linear(x, b)
}

/// RMSNorm over the last dim, computed in f32: returns (rms [.., 1], x / rms * w).
/// The scale is TransformerLens's `hook_scale`.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let rms = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    let y = xf
        .broadcast_div(&rms)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dtype)?;
    Ok((rms.to_dtype(dtype)?, y))
}
