//! Held-out evaluation of a transcoder set: per layer, `evaluate`'s figures (explained variance
//! of `mlp_out` on ordinary and on all tokens, L0, dead latents) from one forward pass per batch
//! for all layers; for the whole set, the replacement model (every layer's MLP output replaced
//! by its transcoder's, errors removed) against the clean model: top-1 agreement and
//! KL(clean ‖ replacement) per token.

use std::fmt;

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use super::eval::{EvalReport, Moments};
use super::set_store::forward_layers;
use super::store::{median, special_ids, MassiveRule, Packer};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::sae::{Sae, SpliceOptions};

/// The replacement model against the clean model.
#[derive(Debug, Clone, Serialize)]
pub struct ReplacementReport {
    /// Positions scored: every position of held-out documents but BOS (one document per
    /// context, so BOS stands only at position 0).
    pub positions: usize,
    /// Every layer replaced at every position: share of positions whose top-1 token agrees.
    pub top1_agreement: f64,
    /// Mean KL(clean ‖ replacement) per position, nats.
    pub kl: f64,
    /// The same with position 0 (BOS) left to the model, as circuit-tracer leaves it to the
    /// error nodes: top-1 agreement.
    pub top1_agreement_bos_kept: f64,
    /// KL with position 0 left to the model.
    pub kl_bos_kept: f64,
}

/// What [`evaluate_set`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SetEvalReport {
    /// Per layer, as [`super::evaluate`] reports (no CE).
    pub layers: Vec<EvalReport>,
    /// The replacement model, when asked for.
    pub replacement: Option<ReplacementReport>,
}

impl fmt::Display for SetEvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = self.layers.first() {
            writeln!(
                f,
                "held-out evaluation over {} tokens per layer ({} ordinary at layer 0); {}",
                r.tokens, r.ordinary_tokens, r.massive_rule
            )?;
        }
        writeln!(
            f,
            "layer  EV ordinary  EV all   L0 ordinary  L0 all   dead     massive"
        )?;
        for (l, r) in self.layers.iter().enumerate() {
            writeln!(
                f,
                "{l:>5}  {:>11.4}  {:>6.4}  {:>11.1}  {:>6.1}  {:>6.2}%  {:>7}",
                r.explained_variance_ordinary,
                r.explained_variance_all,
                r.l0_ordinary,
                r.l0_all,
                100.0 * r.dead_fraction,
                r.massive_tokens
            )?;
        }
        let n = self.layers.len().max(1) as f64;
        let mean = |g: fn(&EvalReport) -> f64| self.layers.iter().map(g).sum::<f64>() / n;
        writeln!(
            f,
            " mean  {:>11.4}  {:>6.4}  {:>11.1}  {:>6.1}  {:>6.2}%",
            mean(|r| r.explained_variance_ordinary),
            mean(|r| r.explained_variance_all),
            mean(|r| r.l0_ordinary),
            mean(|r| r.l0_all),
            100.0 * mean(|r| r.dead_fraction)
        )?;
        if let Some(r) = &self.replacement {
            writeln!(
                f,
                "replacement model (all {} layers, errors removed) over {} positions: top-1 agreement {:.1}%, KL(clean ‖ replacement) {:.4} nats/token",
                self.layers.len(),
                r.positions,
                100.0 * r.top1_agreement,
                r.kl
            )?;
            writeln!(
                f,
                "  with BOS (position 0) left to the model: top-1 agreement {:.1}%, KL {:.4}",
                100.0 * r.top1_agreement_bos_kept,
                r.kl_bos_kept
            )?;
        }
        Ok(())
    }
}

/// Evaluates a transcoder set (`saes[l]` reads `blocks.l.mlp.hook_in`) on held-out `texts`:
/// the per-layer statistics over `tokens` tokens (special ones included), the replacement
/// model over `replacement_tokens` positions (0 skips it).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_set(
    model: &HookedTransformer,
    saes: &[Sae],
    texts: &[String],
    tokens: usize,
    replacement_tokens: usize,
    context_size: usize,
    contexts_per_forward: usize,
    massive: &MassiveRule,
    quiet: bool,
) -> Result<SetEvalReport> {
    let n_layers = model.cfg().n_layers;
    if saes.len() != n_layers {
        return Err(Error::Invalid(format!(
            "a transcoder set for this model needs {n_layers} transcoders, got {}",
            saes.len()
        )));
    }
    let d = model.cfg().d_model;
    let special = special_ids(model)?;
    let bos = model
        .tokenizer()?
        .prepended_id()
        .unwrap_or(model.cfg().bos_token_id);
    let mut packer = Packer::new(texts.to_vec(), context_size, bos)?;
    let mut ordinary: Vec<Moments> = (0..n_layers).map(|_| Moments::new(d)).collect();
    let mut other = ordinary.clone();
    let mut counts = vec![(0usize, 0usize, 0usize); n_layers];
    let mut fired: Vec<Vec<bool>> = saes.iter().map(|s| vec![false; s.d_sae()]).collect();
    let mut medians: Option<Vec<f32>> = None;
    let mut progress = Progress::new("evaluating", tokens, quiet);
    let mut seen = 0;
    while seen < tokens {
        let (chunks, _) = forward_layers(model, &mut packer, &special, contexts_per_forward, true)?;
        // The rule's median per layer: the first batch's non-special tokens (evaluate uses
        // the first ones too).
        let med = medians.get_or_insert_with(|| {
            chunks
                .iter()
                .map(|c| {
                    let v: Vec<f32> = c
                        .norms
                        .iter()
                        .zip(&c.special)
                        .filter(|(_, &s)| !s)
                        .map(|(n, _)| *n)
                        .collect();
                    median(&v)
                })
                .collect()
        });
        let rows = chunks[0].rows().min(tokens - seen);
        for (l, c) in chunks.iter().enumerate() {
            let sae = &saes[l];
            let x = Tensor::from_slice(&c.x[..rows * d], (rows, d), sae.device())?;
            let y =
                c.y.as_ref()
                    .ok_or_else(|| Error::Invalid("no targets".into()))?;
            let (out, acts) = super::eval::output_and_latents(sae, &x)?;
            let active = acts.gt(0f32)?;
            let l0 = active.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?;
            for (j, any) in active.max(0)?.to_vec1::<u8>()?.into_iter().enumerate() {
                fired[l][j] |= any > 0;
            }
            let yt = Tensor::from_slice(&y[..rows * d], (rows, d), &Device::Cpu)?;
            let err = (out.to_device(&Device::Cpu)? - &yt)?
                .sqr()?
                .sum(1)?
                .to_vec1::<f32>()?;
            for i in 0..rows {
                let sp = c.special[i];
                let ma = massive.is_massive(c.norms[i], med[l]);
                let k = &mut counts[l];
                k.0 += usize::from(sp);
                k.1 += usize::from(sp && ma);
                k.2 += usize::from(ma && !sp);
                let m = if sp || ma {
                    &mut other[l]
                } else {
                    &mut ordinary[l]
                };
                m.add(&y[i * d..(i + 1) * d], err[i] as f64, l0[i] as f64);
            }
        }
        seen += rows;
        progress.inc(rows);
    }
    progress.finish();
    let med = medians.unwrap_or_default();
    let layers = (0..n_layers)
        .map(|l| {
            let (o, x) = (&ordinary[l], &other[l]);
            let all = o.merged(x);
            let mean_all = all.mean();
            let sst_all = all.sst_about(&mean_all);
            let dead = fired[l].iter().filter(|f| !**f).count();
            let d_sae = saes[l].d_sae();
            EvalReport {
                hook: saes[l].hook_name().into(),
                hook_out: saes[l].hook_name_out().into(),
                tokens: all.n,
                ordinary_tokens: o.n,
                special_tokens: counts[l].0,
                special_massive_tokens: counts[l].1,
                massive_tokens: counts[l].2,
                massive_rule: massive.describe(med.get(l).copied()),
                excluded_variance_share: x.sst_about(&mean_all) / sst_all.max(f64::MIN_POSITIVE),
                explained_variance_ordinary: o.explained_variance(),
                explained_variance_all: all.explained_variance(),
                mse_ordinary: o.sse / (o.n.max(1) * d) as f64,
                l0_ordinary: o.l0 / o.n.max(1) as f64,
                l0_all: all.l0 / all.n.max(1) as f64,
                dead_latents: dead,
                dead_fraction: dead as f64 / d_sae as f64,
                d_sae,
                ce: None,
            }
        })
        .collect();
    let replacement = if replacement_tokens > 0 {
        Some(replacement_model(
            model,
            saes,
            texts,
            replacement_tokens,
            context_size,
            quiet,
        )?)
    } else {
        None
    };
    Ok(SetEvalReport {
        layers,
        replacement,
    })
}

/// Top-1 agreement count and summed KL(clean ‖ other) over the positions `keep` marks.
fn compare(clean: &Tensor, other: &Tensor, keep: &[bool]) -> Result<(usize, f64)> {
    let lc = candle_nn::ops::log_softmax(&clean.to_dtype(DType::F32)?, D::Minus1)?;
    let lo = candle_nn::ops::log_softmax(&other.to_dtype(DType::F32)?, D::Minus1)?;
    let kl = (lc.exp()? * (&lc - &lo)?)?
        .sum(D::Minus1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let a = clean.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
    let b = other.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
    let mut agree = 0;
    let mut sum = 0f64;
    for i in 0..keep.len() {
        if keep[i] {
            agree += usize::from(a[i] == b[i]);
            sum += kl[i] as f64;
        }
    }
    Ok((agree, sum))
}

/// The replacement model (errors removed) against the clean model, one document at a time:
/// BOS and the document's first `context_size − 1` tokens (documents under 8 tokens skipped),
/// so that BOS stands only at position 0, as in a prompt (packed contexts carry BOS separators,
/// which no transcoder was trained on). Gemma's logits are 1 MB per position.
fn replacement_model(
    model: &HookedTransformer,
    saes: &[Sae],
    texts: &[String],
    positions: usize,
    context_size: usize,
    quiet: bool,
) -> Result<ReplacementReport> {
    let tok = model.tokenizer()?;
    let bos = tok.prepended_id().unwrap_or(model.cfg().bos_token_id);
    let mut all = Hooks::new();
    let mut bos_kept = Hooks::new();
    let keep_first = SpliceOptions {
        skip_first_position: true,
        ..Default::default()
    };
    for s in saes {
        all = all.sae(s)?;
        bos_kept = bos_kept.sae_with(s, keep_first)?;
    }
    let (all, bos_kept) = (model.with_hooks(&all), model.with_hooks(&bos_kept));
    let mut progress = Progress::new("replacement model", positions, quiet);
    let (mut n, mut agree, mut kl, mut agree_b, mut kl_b) = (0usize, 0usize, 0f64, 0usize, 0f64);
    let mut docs = texts.iter();
    while n < positions {
        let Some(text) = docs.next() else { break };
        let mut ids = vec![bos];
        ids.extend(
            tok.encode(text, false)?
                .into_iter()
                .take(context_size.max(2) - 1),
        );
        if ids.len() < 8 {
            continue;
        }
        let s = ids.len();
        // Every position but BOS's is scored.
        let keep: Vec<bool> = (0..s).map(|i| i > 0).collect();
        let toks = Tensor::from_vec(ids, (1, s), model.device())?;
        let clean = model.pass(&toks).run()?.logits;
        let (a, k) = compare(&clean, &all.pass(&toks).run()?.logits, &keep)?;
        let (ab, kb) = compare(&clean, &bos_kept.pass(&toks).run()?.logits, &keep)?;
        n += s - 1;
        agree += a;
        kl += k;
        agree_b += ab;
        kl_b += kb;
        progress.inc(s - 1);
    }
    progress.finish();
    let nf = n.max(1) as f64;
    Ok(ReplacementReport {
        positions: n,
        top1_agreement: agree as f64 / nf,
        kl: kl / nf,
        top1_agreement_bos_kept: agree_b as f64 / nf,
        kl_bos_kept: kl_b / nf,
    })
}
