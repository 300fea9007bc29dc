//! The logit lens, the decomposition of the residual stream, and direct logit attribution.
//!
//! What is exact and what is frozen, for RMSNorm models with Gemma's post-norms:
//! - The **logit lens** normalises each accumulated residual stream with its own RMS and the
//!   final norm's weight, then unembeds (and soft-caps, where the model does): at the last
//!   layer it reproduces the model's logits.
//! - The **decomposition** `resid_post(final) = embed + Σ_l (attn_out_l + mlp_out_l)` is exact:
//!   `hook_attn_out` / `hook_mlp_out` are what the blocks add.
//! - **Direct logit attribution** is linear only with the final norm's scale frozen from the
//!   clean run (TransformerLens's `apply_ln_to_stack`): component c contributes
//!   `(c / rms_final) ⊙ w_final · (W_U[correct] − W_U[incorrect])`, and the contributions sum
//!   to the pre-soft-cap logit difference. Per head, Gemma's post-attention norm also has its
//!   scale frozen: head h contributes `(result_h / rms_post) ⊙ w_post` to attn_out, and the
//!   heads sum to attn_out. A final soft-cap (Gemma 2) is not linear: DLA explains the logit
//!   difference before it.

use candle_core::{DType, IndexOp, Tensor, D};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::logits::row_positions;
use crate::model::transformer::select_positions;
use crate::model::{HookedTransformer, Matrix};
use crate::table::{Axis, Table};

/// The accumulated residual stream of one prompt at every layer, ready to unembed.
pub struct LogitLens {
    model: HookedTransformer,
    /// Final-normed residuals [n_layers + 1, s, d] (f32).
    normed: Tensor,
    /// `0_pre`, …, `{L-1}_pre`, `final_post`.
    pub layer_labels: Vec<String>,
    /// The prompt's tokens as strings.
    pub str_tokens: Vec<String>,
}

impl LogitLens {
    /// Runs `text` and prepares the lens.
    pub fn new(model: &HookedTransformer, text: &str) -> Result<Self> {
        let toks = model.to_tokens(text)?;
        let strs = model.to_str_tokens(text)?;
        Self::from_tokens(model, &toks, strs)
    }

    /// Runs token ids [1, s] and prepares the lens.
    pub fn from_tokens(
        model: &HookedTransformer,
        tokens: &Tensor,
        str_tokens: Vec<String>,
    ) -> Result<Self> {
        let cfg = model.cfg();
        if tokens.rank() == 2 && tokens.dim(0)? != 1 {
            return Err(Error::Invalid(format!(
                "the logit lens reads one prompt, [1, s]; got a batch of {} (make one lens per prompt)",
                tokens.dim(0)?
            )));
        }
        let (_, cache) = model.run_with_cache_filtered(tokens, |n: &str| {
            n.ends_with("hook_resid_pre") || n.ends_with("hook_resid_post")
        })?;
        let mut stream = Vec::with_capacity(cfg.n_layers + 1);
        for l in 0..cfg.n_layers {
            stream.push(cache.get(&HookPoint::ResidPre(l).name())?.i(0)?);
        }
        stream.push(
            cache
                .get(&HookPoint::ResidPost(cfg.n_layers - 1).name())?
                .i(0)?,
        );
        let x = Tensor::stack(&stream, 0)?.to_dtype(DType::F32)?;
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + cfg.rms_norm_eps)?.sqrt()?;
        let normed = x
            .broadcast_div(&rms)?
            .broadcast_mul(&model.weights().ln_final.to_dtype(DType::F32)?)?;
        let mut layer_labels: Vec<String> = (0..cfg.n_layers).map(|l| format!("{l}_pre")).collect();
        layer_labels.push("final_post".into());
        Ok(LogitLens {
            model: model.clone(),
            normed,
            layer_labels,
            str_tokens,
        })
    }

    /// Number of positions.
    pub fn n_positions(&self) -> usize {
        self.str_tokens.len()
    }

    fn check_pos(&self, pos: usize) -> Result<()> {
        if pos >= self.n_positions() {
            return Err(Error::Invalid(format!(
                "position {pos} is out of range for {} tokens",
                self.n_positions()
            )));
        }
        Ok(())
    }

    /// Lens logits at a position for every layer, [n_layers + 1, d_vocab].
    pub fn logits_at(&self, pos: usize) -> Result<Tensor> {
        self.check_pos(pos)?;
        let x = self.normed.i((.., pos))?.to_dtype(DType::F32)?;
        // The forward pass's own unembedding (so a streamed model gives the same bits); a
        // half-precision one is widened so that the lens computes in f32.
        let logits = match self.model.unembed() {
            Matrix::Dense(u) if u.dtype() != DType::F32 => {
                x.matmul(&u.to_dtype(DType::F32)?.t()?)?
            }
            unembed => unembed.linear(&x, None)?,
        };
        Ok(match self.model.cfg().final_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    /// Probability of each token at each layer at `pos`, [layer][token].
    pub fn probs(&self, pos: usize, tokens: &[u32]) -> Result<Table> {
        let p = candle_nn::ops::softmax(&self.logits_at(pos)?, D::Minus1)?;
        self.pick(p, pos, tokens, "probability")
    }

    /// Logit of each token at each layer at `pos`, [layer][token].
    pub fn logits_of(&self, pos: usize, tokens: &[u32]) -> Result<Table> {
        let l = self.logits_at(pos)?;
        self.pick(l, pos, tokens, "logit")
    }

    fn pick(&self, t: Tensor, pos: usize, tokens: &[u32], what: &str) -> Result<Table> {
        let tok = self.model.tokenizer().ok();
        let labels = tokens
            .iter()
            .map(|&i| tok.map_or_else(|| i.to_string(), |t| t.token_str(i)))
            .collect();
        let idx = Tensor::new(tokens, t.device())?;
        let v = t.index_select(&idx, 1)?.flatten_all()?.to_vec1::<f32>()?;
        Table::from_values(
            format!(
                "logit lens: {what} at position {pos} ({:?})",
                self.str_tokens[pos]
            ),
            vec![
                Axis::labelled("layer", self.layer_labels.clone()),
                Axis::labelled("token", labels),
            ],
            v,
        )
    }

    /// The k most likely tokens at each layer at `pos`, with probabilities.
    pub fn top_k(&self, pos: usize, k: usize) -> Result<Vec<Vec<(String, f32)>>> {
        let p = candle_nn::ops::softmax(&self.logits_at(pos)?, D::Minus1)?.to_vec2::<f32>()?;
        let tok = self.model.tokenizer()?;
        Ok(p.iter()
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                let k = k.min(row.len());
                idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| row[b].total_cmp(&row[a]));
                idx.truncate(k);
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                idx.into_iter()
                    .map(|i| (tok.token_str(i as u32), row[i]))
                    .collect()
            })
            .collect())
    }

    /// The rank (0 = top) of `token` at each layer at `pos`.
    pub fn rank_of(&self, pos: usize, token: u32) -> Result<Vec<usize>> {
        let l = self.logits_at(pos)?.to_vec2::<f32>()?;
        Ok(l.iter()
            .map(|row| {
                let x = row[token as usize];
                row.iter().filter(|&&y| y > x).count()
            })
            .collect())
    }
}

/// The residual stream's additive parts at the final layer: `embed`, then each layer's
/// `attn_out` and `mlp_out`, as (labels, [n_components, b, s, d]). They sum to the last
/// `hook_resid_post`.
pub fn decompose_resid(
    model: &HookedTransformer,
    cache: &ActivationCache,
) -> Result<(Vec<String>, Tensor)> {
    let n = model.cfg().n_layers;
    let mut labels = vec!["embed".to_string()];
    let mut parts = vec![cache.get("hook_embed")?];
    for l in 0..n {
        labels.push(format!("{l}_attn_out"));
        parts.push(cache.get(&HookPoint::AttnOut(l).name())?);
        labels.push(format!("{l}_mlp_out"));
        parts.push(cache.get(&HookPoint::MlpOut(l).name())?);
    }
    Ok((labels, Tensor::stack(&parts, 0)?))
}

/// Each head's contribution to `hook_attn_out` at layer `l`, [b, s, n_heads, d]: the head's
/// output through its slice of W_O and, for post-norm models (Gemma), through the
/// post-attention norm with its scale frozen from this run. They sum to `hook_attn_out`
/// (minus any output bias).
pub fn head_contributions(
    model: &HookedTransformer,
    cache: &ActivationCache,
    l: usize,
) -> Result<Tensor> {
    let cfg = model.cfg();
    let (n, h, d) = (cfg.n_heads, cfg.d_head, cfg.d_model);
    let z = cache.get(&HookPoint::Z(l).name())?.to_dtype(DType::F32)?;
    let (b, s, _, _) = z.dims4()?;
    let wo = model.weights().blocks[l]
        .w_o
        .dense()?
        .to_dtype(DType::F32)?
        .reshape((d, n, h))?
        .permute((1, 2, 0))?
        .contiguous()?;
    let result = z
        .permute((2, 0, 1, 3))?
        .reshape((n, b * s, h))?
        .matmul(&wo)?
        .reshape((n, b, s, d))?
        .permute((1, 2, 0, 3))?; // [b, s, n, d]
    Ok(match &model.weights().blocks[l].ln1_post {
        Some(w) => {
            let summed = result.sum_keepdim(2)?;
            let rms = (summed.sqr()?.mean_keepdim(D::Minus1)? + cfg.rms_norm_eps)?.sqrt()?;
            result
                .broadcast_div(&rms)?
                .broadcast_mul(&w.to_dtype(DType::F32)?)?
        }
        None => result.contiguous()?,
    })
}

/// Direct logit attribution along `W_U[correct] − W_U[incorrect]` at `pos`, averaged over
/// the batch rows of the cache (which must hold every hook point, as `run_with_cache` does).
#[derive(Debug, Clone)]
pub struct Dla {
    /// Per component: embed, each layer's attn_out and mlp_out.
    pub components: Table,
    /// Per head, [layer][head].
    pub heads: Table,
    /// The logit difference the components add up to (before any final soft-cap).
    pub logit_diff: f32,
}

/// Direct logit attribution (see the module docs for what is frozen).
pub fn direct_logit_attribution(
    model: &HookedTransformer,
    cache: &ActivationCache,
    correct: u32,
    incorrect: u32,
    pos: Option<usize>,
) -> Result<Dla> {
    let cfg = model.cfg();
    let w = model.weights();
    for t in [correct, incorrect] {
        if t as usize >= cfg.d_vocab {
            return Err(Error::Invalid(format!(
                "token id {t} is out of range for a vocabulary of {}",
                cfg.d_vocab
            )));
        }
    }
    let pair = model
        .unembed()
        .rows(&Tensor::new(&[correct, incorrect], model.device())?)?
        .to_dtype(DType::F32)?;
    let u = (pair.i(0)? - pair.i(1)?)?;
    // Direction in the residual stream: u ⊙ w_final / rms_final (per row), at pos.
    let scale = cache.get("ln_final.hook_scale")?.to_dtype(DType::F32)?; // [b, s, 1]
    let (b, s, _) = scale.dims3()?;
    // Each row at `pos`, or its own last real token; padding is refused.
    let lengths = match cache.seq_lengths() {
        l if l.len() == b => l.to_vec(),
        _ => vec![s; b],
    };
    let rows = row_positions(&lengths, s, pos)?;
    let p = rows[0];
    let label = match pos {
        Some(p) => format!("position {p}"),
        None if rows.iter().all(|&r| r == p) => format!("position {p}"),
        None => "each prompt's last token".to_string(),
    };
    let dir = (u * w.ln_final.to_dtype(DType::F32)?)?; // [d]
    let inv = select_positions(&scale, &rows)?.squeeze(1)?.recip()?; // [b, 1]
    let project = |x: &Tensor| -> Result<f32> {
        // x: [b, s, d] -> mean over b of (x[b, row b's position] · dir) / rms.
        let at = select_positions(&x.to_dtype(DType::F32)?, &rows)?.squeeze(1)?; // [b, d]
        let dot = at.broadcast_mul(&dir)?.sum_keepdim(1)?; // [b, 1]
        Ok(dot.mul(&inv)?.mean_all()?.to_scalar::<f32>()?)
    };
    let (labels, parts) = decompose_resid(model, cache)?;
    let vals = (0..labels.len())
        .map(|i| project(&parts.i(i)?))
        .collect::<Result<Vec<_>>>()?;
    let total = project(&cache.get(&HookPoint::ResidPost(cfg.n_layers - 1).name())?)?;
    let name = |t: u32| {
        model
            .tokenizer()
            .map_or_else(|_| t.to_string(), |k| format!("{:?}", k.token_str(t)))
    };
    let what = format!("{} - {}", name(correct), name(incorrect));
    let components = Table::from_values(
        format!("direct logit attribution ({what}) at {label}"),
        vec![Axis::labelled("component", labels)],
        vals,
    )?;
    let mut heads = Table::new(
        format!("direct logit attribution per head ({what}) at {label}"),
        vec![
            Axis::numbered("layer", cfg.n_layers),
            Axis::numbered("head", cfg.n_heads),
        ],
    );
    for l in 0..cfg.n_layers {
        let hc = head_contributions(model, cache, l)?; // [b, s, n, d]
        for h in 0..cfg.n_heads {
            heads.set(&[l, h], project(&hc.i((.., .., h))?)?)?;
        }
    }
    Ok(Dla {
        components,
        heads,
        logit_diff: total,
    })
}
