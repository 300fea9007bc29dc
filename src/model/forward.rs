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

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::attention::{attention_scores, blocked_attention, repeat_kv, softmax_f32};
use crate::model::config::{Activation, Config};
use crate::model::kv_cache::KvCache;
use crate::model::masks::{Mask, BLOCKED_ATTENTION_FROM};
use crate::model::matrix::Matrix;
use crate::model::ops;
use crate::model::rope::{apply_rope, Rope};
use crate::model::run::Run;
use crate::model::transformer::{
    select_positions, select_spans, BlockWeights, HookedTransformer, LogitRows, Start,
};

/// Where a forward pass enters the blocks: the first layer, the residual entering it, the rows
/// that join the batch at later layers, and the KV cache it extends.
struct Entry<'t> {
    first: usize,
    resid: Tensor,
    pending: Vec<(usize, Tensor)>,
    kv: Option<&'t mut KvCache>,
}

/// A layer's queries, keys and values [b, s, heads, h], after the q/k norms and RoPE.
struct Qkv {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The RoPE tables and masks of one pass, one per distinct layer setting.
struct LayerTables {
    ropes: Vec<Rope>,
    masks: Vec<Mask>,
}

impl LayerTables {
    /// Tables for `s` new positions. Continuing a cache, each row's new slots sit at its own
    /// positions (after its left padding) and see the cached keys.
    fn new(cfg: &Config, s: usize, kv: Option<&KvCache>, device: &Device) -> Result<Self> {
        let (ropes, masks) = match kv {
            None => (
                Rope::tables(cfg, s, device)?,
                Mask::for_layers(cfg, s, device),
            ),
            Some(kv) => {
                let pos = kv.position_ids(s, device)?;
                let ropes = Rope::tables(cfg, kv.len() + s, device)?
                    .iter()
                    .map(|r| r.at_positions(&pos))
                    .collect::<Result<Vec<_>>>()?;
                let masks = Mask::for_layers_cached(cfg, kv.len(), s, kv.pad(), device);
                (ropes, masks)
            }
        };
        Ok(LayerTables { ropes, masks })
    }

    /// Layer `l`'s RoPE table and mask.
    fn for_layer(&self, cfg: &Config, l: usize) -> Result<(&Rope, &Mask)> {
        let lc = &cfg.layers[l];
        let rope = self
            .ropes
            .iter()
            .find(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
            .ok_or_else(|| Error::Load(format!("no RoPE table for layer {l}")))?;
        let mask = self
            .masks
            .iter()
            .find(|m| m.window == lc.sliding_window)
            .ok_or_else(|| Error::Load(format!("no mask for layer {l}")))?;
        Ok((rope, mask))
    }
}

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
        if self.check_finite {
            run.check_finite(true);
        }
        let entry = self.enter(start, run)?;
        let (_, s, _) = entry.resid.dims3()?;
        let tables = LayerTables::new(&self.cfg, s, entry.kv.as_deref(), &self.device)?;
        let resid = self.run_blocks(entry, &tables, s, run)?;
        if run.stop_after().is_some() {
            let b = resid.dim(0)?;
            return Ok(Tensor::zeros(
                (b, 0, self.cfg.d_vocab),
                DType::F32,
                &self.device,
            )?);
        }
        self.final_logits(&resid, s, logits, run)
    }

    /// Checks where the pass starts and computes the residual entering its first block.
    fn enter<'t>(&self, start: Start<'t>, run: &mut Run) -> Result<Entry<'t>> {
        let entry = |first, resid| Entry {
            first,
            resid,
            pending: Vec::new(),
            kv: None,
        };
        Ok(match start {
            Start::Tokens(tokens) => entry(0, self.embed(tokens, run)?),
            Start::Continue { tokens, kv } => {
                self.check_continue(tokens, kv)?;
                run.set_offset(kv.len());
                Entry {
                    kv: Some(kv),
                    ..entry(0, self.embed(tokens, run)?)
                }
            }
            Start::Resid { layer, resid } => {
                self.check_resid(layer, &resid)?;
                entry(layer, resid)
            }
            Start::Waves(mut waves) => {
                self.check_waves(&waves)?;
                let pending = waves.split_off(1);
                let (layer, resid) = waves.remove(0);
                Entry {
                    pending,
                    ..entry(layer, resid)
                }
            }
        })
    }

    /// Ids [b, s] can continue `cache`: one row each, and room left in the context.
    fn check_continue(&self, tokens: &Tensor, cache: &KvCache) -> Result<()> {
        let cfg = &self.cfg;
        let (b, s) = self.check_tokens(tokens)?.dims2()?;
        if b != cache.batch() || cache.len() + s > cfg.max_position {
            return Err(Error::Invalid(format!(
                "cannot continue a KV cache of {} rows and {} slots with ids of shape [{b}, {s}] (context {})",
                cache.batch(),
                cache.len(),
                cfg.max_position
            )));
        }
        Ok(())
    }

    /// A residual [b, s, d_model] can enter layer `layer` (n_layers: none left to run).
    fn check_resid(&self, layer: usize, resid: &Tensor) -> Result<()> {
        let cfg = &self.cfg;
        if layer > cfg.n_layers || resid.rank() != 3 || resid.dim(2)? != cfg.d_model {
            return Err(Error::Shape(format!(
                "cannot start layer {layer} from a residual of shape {:?} (model: {} layers, d_model {})",
                resid.dims(),
                cfg.n_layers,
                cfg.d_model
            )));
        }
        Ok(())
    }

    /// Waves enter increasing layers, all with residuals of one [_, s, d_model] shape.
    fn check_waves(&self, waves: &[(usize, Tensor)]) -> Result<()> {
        let cfg = &self.cfg;
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
        Ok(())
    }

    /// Runs the blocks from the entry's first layer, joining the waiting rows at their layers,
    /// and extends the KV cache by the `s` new positions.
    fn run_blocks(
        &self,
        entry: Entry,
        tables: &LayerTables,
        s: usize,
        run: &mut Run,
    ) -> Result<Tensor> {
        let Entry {
            first,
            mut resid,
            mut pending,
            mut kv,
        } = entry;
        for (l, blk) in self.w.blocks.iter().enumerate().skip(first) {
            let (rope, mask) = tables.for_layer(&self.cfg, l)?;
            if pending.first().is_some_and(|(pl, _)| *pl == l) {
                let (_, joining) = pending.remove(0);
                resid = Tensor::cat(&[&resid, &joining], 0)?;
            }
            resid = self.block(l, blk, resid, rope, mask, kv.as_deref_mut(), run)?;
            if run.stop_after() == Some(l) {
                break;
            }
        }
        if let Some(kv) = kv {
            kv.advance(s);
        }
        Ok(resid)
    }

    /// The final norm of the residual [b, s, d], then the unembedding of only the rows asked
    /// for (softcapped where the architecture caps them), in f32.
    fn final_logits(
        &self,
        resid: &Tensor,
        s: usize,
        logits: LogitRows,
        run: &mut Run,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let b = resid.dim(0)?;
        let normed = self.rms_norm(
            resid,
            &self.w.ln_final,
            (HookPoint::LnFinalScale, HookPoint::LnFinalNormalized),
            run,
        )?;
        let Some((normed, rows)) = select_logit_rows(normed, s, logits)? else {
            return Ok(Tensor::zeros(
                (b, 0, cfg.d_vocab),
                DType::F32,
                &self.device,
            )?);
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
        let (b, s, d) = x.dims3()?;
        let qkv = self.rotated_qkv(l, w, x, rope, run)?;
        let z = self.attend(l, qkv, s, mask, kv, run)?;
        let attn = self.heads_out(l, w, &z, (b, s, d), run)?;
        // The output bias belongs to no head: it is added after the heads are summed.
        Ok(match &w.b_o {
            Some(bias) => attn.broadcast_add(bias)?,
            None => attn,
        })
    }

    /// Layer `l`'s queries, keys and values [b, s, heads, h] of x [b, s, d]: projected,
    /// q/k-normed where the architecture norms them, and q and k rotated.
    fn rotated_qkv(
        &self,
        l: usize,
        w: &BlockWeights,
        x: &Tensor,
        rope: &Rope,
        run: &mut Run,
    ) -> Result<Qkv> {
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
        let (q, kk) = match (&w.q_norm, &w.k_norm) {
            (Some(qn), Some(kn)) => (
                self.head_norm(
                    &q,
                    qn,
                    (b, s, n, h),
                    (P::QNormScale(l), P::QNormNormalized(l)),
                    run,
                )?,
                self.head_norm(
                    &kk,
                    kn,
                    (b, s, k, h),
                    (P::KNormScale(l), P::KNormNormalized(l)),
                    run,
                )?,
            ),
            _ => (q, kk),
        };
        let q = run.at(P::RotQ(l), apply_rope(&q, rope)?)?;
        let kk = run.at(P::RotK(l), apply_rope(&kk, rope)?)?;
        Ok(Qkv { q, k: kk, v })
    }

    /// A q or k norm of t [b, s, heads, h]. TransformerLens applies the q/k norms (and hooks
    /// them) on [b·s·heads, h].
    fn head_norm(
        &self,
        t: &Tensor,
        norm: &Tensor,
        (b, s, heads, h): (usize, usize, usize, usize),
        points: (HookPoint, HookPoint),
        run: &mut Run,
    ) -> Result<Tensor> {
        Ok(self
            .rms_norm(&t.reshape((b * s * heads, h))?, norm, points, run)?
            .reshape((b, s, heads, h))?)
    }

    /// Layer `l`'s per-head attention output z [b, s, n, h] over `s` new positions: the
    /// queries attend to the keys (the cached ones too, when continuing a cache).
    fn attend(
        &self,
        l: usize,
        qkv: Qkv,
        s: usize,
        mask: &Mask,
        kv: Option<&mut KvCache>,
        run: &mut Run,
    ) -> Result<Tensor> {
        use HookPoint as P;
        let cfg = &self.cfg;
        let (n, k) = (cfg.n_heads, cfg.n_kv_heads);
        // [b, heads, s, h]; each kv head serves n/k consecutive query heads.
        let qh = qkv.q.transpose(1, 2)?.contiguous()?;
        let (kt, vt) = (qkv.k.transpose(1, 2)?, qkv.v.transpose(1, 2)?);
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
        run.at(P::Z(l), z)
    }

    /// Layer `l`'s output projection of z [b, s, n, h] to [b, s, d], without its bias; summed
    /// from the per-head `hook_result` where a hook replaced it.
    fn heads_out(
        &self,
        l: usize,
        w: &BlockWeights,
        z: &Tensor,
        (b, s, d): (usize, usize, usize),
        run: &mut Run,
    ) -> Result<Tensor> {
        let (n, h) = (self.cfg.n_heads, self.cfg.d_head);
        let attn = linear(&z.reshape((b * s, n * h))?, &w.w_o, None)?.reshape((b, s, d))?;
        if !run.wants(HookPoint::Result(l)) {
            return Ok(attn);
        }
        let result = self.head_results(w, z, (b, s, d))?;
        let id = result.id();
        let result = run.at(HookPoint::Result(l), result)?;
        // Hooks that only read keep the fused sum, so reading never changes the logits.
        Ok(if result.id() == id {
            attn
        } else {
            result.sum(2)?
        })
    }

    /// Per-head outputs [b, s, n, d] of z [b, s, n, h]:
    /// result[b,s,i,:] = W_O[:, i*h..(i+1)*h] z[b,s,i,:].
    fn head_results(
        &self,
        w: &BlockWeights,
        z: &Tensor,
        (b, s, d): (usize, usize, usize),
    ) -> Result<Tensor> {
        let (n, h) = (self.cfg.n_heads, self.cfg.d_head);
        let zh = z.permute((2, 0, 1, 3))?.reshape((n, b * s, h))?;
        // [n, h, d] as a strided view: gemm takes the strides, a copy of W_O per layer
        // cost more than the product. (Quantised W_O is dequantised for it: exact in
        // stream mode; in quantized mode the heads then sum to the dequantised product.)
        let wo = w.w_o.dense()?.reshape((d, n, h))?.permute((1, 2, 0))?;
        Ok(zh
            .matmul(&wo)?
            .reshape((n, b, s, d))?
            .permute((1, 2, 0, 3))?
            .contiguous()?)
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

/// The normed residual's rows whose logits are asked for, and how many per batch row; `None`
/// when none are.
fn select_logit_rows(
    normed: Tensor,
    s: usize,
    logits: LogitRows,
) -> Result<Option<(Tensor, usize)>> {
    Ok(Some(match logits {
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
        LogitRows::None => return Ok(None),
    }))
}
