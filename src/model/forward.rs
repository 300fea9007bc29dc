//! The one forward pass every architecture runs, read top to bottom, with a hook point at every
//! named activation: embed (or start from a residual stream, or a wavefront of them, or continue
//! a KV cache), then per block attention and MLP, then the final norm and only the logits asked
//! for.
//!
//! The pass is batch-first and uses only ops that candle can differentiate (no fused softmax,
//! RMSNorm or RoPE), so the same code serves attribution patching.
//!
//! Every hook point means what TransformerLens means by it: a norm's `hook_scale` and
//! `hook_normalized` (`x / scale`) are before its weight, `attn.hook_q` / `hook_k` before the
//! q/k norm (which has its own `attn.q_norm.*` / `attn.k_norm.*` points), and Gemma's
//! post-norms have `ln1_post.*` / `ln2_post.*`. `hook_attn_out` / `hook_mlp_out` are after the
//! post-norms (what is added to the residual), while the per-head `hook_result` is before them,
//! so for Gemma the heads' results do not sum to `hook_attn_out`. `attn.hook_in` and
//! `mlp.hook_in` (circuit-tracer's name) are the sublayers' inputs after the norm's weight.

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

        let normed = self.rms_norm(
            &resid,
            &self.w.ln_final,
            (HookPoint::LnFinalScale, HookPoint::LnFinalNormalized),
            run,
        )?;
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
        let normed = run.at(HookPoint::UnembedIn, normed)?;
        let logits = linear(
            &normed.reshape((b * rows, cfg.d_model))?,
            self.unembed(),
            None,
        )?
        .reshape((b, rows, cfg.d_vocab))?;
        let logits = run.at(HookPoint::UnembedOut, logits)?;
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
        use HookPoint as P;
        let resid_pre = run.at(P::ResidPre(l), resid_pre)?;
        let x = self.rms_norm(
            &resid_pre,
            &w.ln1,
            (P::Ln1Scale(l), P::Ln1Normalized(l)),
            run,
        )?;
        let x = run.at(P::AttnIn(l), x)?;
        let attn = self.attention_inner(l, w, &x, rope, mask, kv, run)?;
        let attn = match &w.ln1_post {
            Some(wn) => self.rms_norm(
                &attn,
                wn,
                (P::Ln1PostScale(l), P::Ln1PostNormalized(l)),
                run,
            )?,
            None => attn,
        };
        let attn_out = run.at(P::AttnOut(l), attn)?;
        let resid_mid = run.at(P::ResidMid(l), (&resid_pre + &attn_out)?)?;

        let mlp_in = run.at(P::MlpInResid(l), resid_mid.clone())?;
        let x = self.rms_norm(&mlp_in, &w.ln2, (P::Ln2Scale(l), P::Ln2Normalized(l)), run)?;
        let x = run.at(P::MlpIn(l), x)?;
        let mlp = self.mlp_inner(l, w, &x, run)?;
        let mlp = match &w.ln2_post {
            Some(wn) => {
                self.rms_norm(&mlp, wn, (P::Ln2PostScale(l), P::Ln2PostNormalized(l)), run)?
            }
            None => mlp,
        };
        let mlp_out = run.at(P::MlpOut(l), mlp)?;
        run.at(P::ResidPost(l), (&resid_mid + &mlp_out)?)
    }

    /// Layer `l`'s attention on its normed input x [b, s, d]: the output projection's result
    /// (bias included), before any post-attention norm.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_inner(
        &self,
        l: usize,
        w: &BlockWeights,
        x: &Tensor,
        rope: &Rope,
        mask: &Mask,
        kv: Option<&mut KvCache>,
        run: &mut Run,
    ) -> Result<Tensor> {
        use HookPoint as P;
        let cfg = &self.cfg;
        let (b, s, d) = x.dims3()?;
        let (n, k, h) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let qkv = linear(&x.reshape((b * s, d))?, &self.qkv[l], None)?;
        let part =
            |from: usize, len: usize, bias: Option<&Tensor>, heads: usize| -> Result<Tensor> {
                let y = qkv.narrow(1, from, len)?;
                let y = match bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                };
                Ok(y.reshape((b, s, heads, h))?)
            };
        let q = run.at(P::Q(l), part(0, n * h, w.b_q.as_ref(), n)?)?;
        let kk = run.at(P::K(l), part(n * h, k * h, w.b_k.as_ref(), k)?)?;
        let v = run.at(P::V(l), part((n + k) * h, k * h, w.b_v.as_ref(), k)?)?;
        // TransformerLens applies the q/k norms (and hooks them) on [b·s·heads, h].
        let (q, kk) = match (&w.q_norm, &w.k_norm) {
            (Some(qn), Some(kn)) => (
                self.rms_norm(
                    &q.reshape((b * s * n, h))?,
                    qn,
                    (P::QNormScale(l), P::QNormNormalized(l)),
                    run,
                )?
                .reshape((b, s, n, h))?,
                self.rms_norm(
                    &kk.reshape((b * s * k, h))?,
                    kn,
                    (P::KNormScale(l), P::KNormNormalized(l)),
                    run,
                )?
                .reshape((b, s, k, h))?,
            ),
            _ => (q, kk),
        };
        let q = run.at(P::RotQ(l), apply_rope(&q, rope)?)?;
        let kk = run.at(P::RotK(l), apply_rope(&kk, rope)?)?;

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
        let seen = run.wants(P::AttnScores(l)) || run.wants(P::Pattern(l));
        let z = if s >= BLOCKED_ATTENTION_FROM && !seen && mask.blockable() {
            blocked_attention(cfg, &qh, &kh, &vh, mask)?
        } else {
            let scores = attention_scores(cfg, &qh, &kh, mask.full()?)?;
            let scores = run.at(P::AttnScores(l), scores)?;
            let pattern = softmax_f32(&scores)?;
            let pattern = run.at(P::Pattern(l), pattern)?;
            pattern.matmul(&vh)?
        };
        let z = z.transpose(1, 2)?.contiguous()?; // [b, s, n, h]
        let z = run.at(P::Z(l), z)?;
        let attn = linear(&z.reshape((b * s, n * h))?, &w.w_o, None)?.reshape((b, s, d))?;
        let attn = if run.wants(P::Result(l)) {
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
            let result = run.at(P::Result(l), result)?;
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
        Ok(match &w.b_o {
            Some(bias) => attn.broadcast_add(bias)?,
            None => attn,
        })
    }

    /// Layer `l`'s MLP on its normed input x [b, s, d], before any post-MLP norm.
    pub(crate) fn mlp_inner(
        &self,
        l: usize,
        w: &BlockWeights,
        x: &Tensor,
        run: &mut Run,
    ) -> Result<Tensor> {
        use HookPoint as P;
        let cfg = &self.cfg;
        let (b, s, d) = x.dims3()?;
        let x2 = x.reshape((b * s, d))?;
        let gate = linear(&x2, &w.w_gate, None)?.reshape((b, s, cfg.d_mlp))?;
        let gate = run.at(P::MlpPre(l), gate)?;
        let up = linear(&x2, &w.w_up, None)?.reshape((b, s, cfg.d_mlp))?;
        let up = run.at(P::MlpPreLinear(l), up)?;
        let act = match cfg.activation {
            Activation::GeluTanh => ops::gelu_tanh(&gate)?,
            Activation::GeluErf => gate.gelu_erf()?,
            Activation::Silu => gate.silu()?,
        };
        let post = run.at(P::MlpPost(l), (act * up)?)?;
        Ok(linear(&post.reshape((b * s, cfg.d_mlp))?, &w.w_down, None)?.reshape((b, s, d))?)
    }

    /// RMSNorm over the last dim, computed in f32, as TransformerLens hooks it: the scale
    /// (`hook_scale`, [.., 1]) and `x / scale` (`hook_normalized`, before the weight) are hook
    /// points whose replacements are used (a frozen scale), then the weight is applied.
    pub(crate) fn rms_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        (scale_at, normalized_at): (HookPoint, HookPoint),
        run: &mut Run,
    ) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let rms = (xf.sqr()?.mean_keepdim(D::Minus1)? + self.cfg.rms_norm_eps)?.sqrt()?;
        // A hook that only reads keeps the f32 value, so reading never changes the result
        // of a half-precision model.
        let rms = keep_unless_replaced(rms, dtype, scale_at, run)?;
        let normalized = keep_unless_replaced(xf.broadcast_div(&rms)?, dtype, normalized_at, run)?;
        Ok(normalized
            .broadcast_mul(&w.to_dtype(DType::F32)?)?
            .to_dtype(dtype)?)
    }
}

/// Runs the hooks at `p` on `x` (f32) shown in the activations' dtype; returns `x` itself when
/// no hook replaced it, else the replacement in f32.
fn keep_unless_replaced(x: Tensor, dtype: DType, p: HookPoint, run: &mut Run) -> Result<Tensor> {
    let shown = x.to_dtype(dtype)?;
    let id = shown.id();
    let hooked = run.at(p, shown)?;
    Ok(if hooked.id() == id {
        x
    } else {
        hooked.to_dtype(DType::F32)?
    })
}

/// x [.., in] @ w[out, in]^T (+ b); the backward skips the weight's gradient.
fn linear(x: &Tensor, w: &Matrix, b: Option<&Tensor>) -> Result<Tensor> {
    w.linear(x, b)
}
