//! Feature dashboards' numbers, as SAEDashboard and Neuronpedia show a latent: its top
//! activating contexts from a pass over a corpus (each token's activation kept for
//! highlighting), a histogram of its non-zero activations with its density, and the output
//! tokens its decoder direction boosts and suppresses through the unembedding. The pictures
//! (notebook display, offline HTML) live under `plot/` and `report/`.
//!
//! The corpus pass stops after the SAE's layer ([`crate::model::Pass::stop_after`]) and never
//! computes logits; BOS is left out, as SAELens's activation store leaves it out (Gemma's BOS
//! carries a massive activation that would dominate every histogram).

use std::collections::BTreeSet;

use candle_core::{DType, Tensor};

use super::{Architecture, Sae, SaeWeights};
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::{HookedTransformer, Matrix};

/// How a dashboard pass reads the corpus and how much it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardOptions {
    /// Top activating contexts per latent.
    pub n_top: usize,
    /// Tokens shown on each side of a context's maximum.
    pub window: usize,
    /// Boosted and suppressed output tokens per latent.
    pub n_logits: usize,
    /// Histogram bins.
    pub n_bins: usize,
    /// Tokens per forward pass (BOS included); longer texts are cut into several contexts,
    /// each starting with BOS.
    pub context_len: usize,
    /// Contexts per forward pass.
    pub batch_size: usize,
    /// Stop after this many tokens (BOS not counted); `None` reads every text.
    pub max_tokens: Option<usize>,
    /// Scale the decoder direction by the final norm's weight before the unembedding, as
    /// TransformerLens's `fold_ln` (its default) folds that weight into `W_U`; see
    /// [`logit_effects`].
    pub fold_final_norm: bool,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            n_top: 10,
            window: 8,
            n_logits: 10,
            n_bins: 40,
            context_len: 128,
            batch_size: 32,
            max_tokens: None,
            fold_final_norm: true,
        }
    }
}

/// One of a latent's top activating contexts: a window of tokens around its maximum.
#[derive(Debug, Clone, PartialEq)]
pub struct TopContext {
    /// Index of the text it came from.
    pub text: usize,
    /// Position of the maximum in that text's tokens (BOS at 0).
    pub position: usize,
    /// The latent's activation there.
    pub act: f32,
    /// The window's token ids.
    pub ids: Vec<u32>,
    /// The window's tokens as strings.
    pub tokens: Vec<String>,
    /// The latent's activation at each token of the window.
    pub acts: Vec<f32>,
    /// Index of the maximum within the window.
    pub centre: usize,
}

/// Counts of a latent's non-zero activations in equal-width bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Bin edges, `counts.len() + 1` of them, from the smallest non-zero activation to the
    /// largest (empty when the latent never fired).
    pub edges: Vec<f32>,
    /// Activations per bin (the last bin includes its upper edge).
    pub counts: Vec<usize>,
}

/// An output token and how much a latent's decoder direction moves its logit.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEffect {
    /// Token id.
    pub id: u32,
    /// The token as a string.
    pub token: String,
    /// Logit change per unit of activation (centred over the vocabulary).
    pub value: f32,
}

/// Everything a dashboard shows about one latent.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// The latent's index.
    pub latent: usize,
    /// Tokens read (BOS left out).
    pub n_tokens: usize,
    /// Tokens where the latent's activation was non-zero.
    pub n_firing: usize,
    /// `n_firing / n_tokens`.
    pub density: f64,
    /// Largest activation seen (0 when it never fired).
    pub max_act: f32,
    /// Mean of the non-zero activations (0 when it never fired).
    pub mean_act: f32,
    /// Top activating contexts, highest first (only where it fired; the same tokens up to
    /// the maximum with the same activation, as a corpus that repeats a sentence has, are
    /// kept once).
    pub top: Vec<TopContext>,
    /// Histogram of the non-zero activations.
    pub histogram: Histogram,
    /// Output tokens whose logits the decoder direction raises most, highest first.
    pub boosted: Vec<TokenEffect>,
    /// Output tokens whose logits it lowers most, lowest first.
    pub suppressed: Vec<TokenEffect>,
    /// Why there are no output tokens, when there are none (e.g. the SAE does not write the
    /// residual width).
    pub logits_note: Option<String>,
}

/// Dashboards for several latents of one SAE, from one corpus pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboards {
    /// The hook the SAE reads.
    pub hook_name: String,
    /// The SAE's architecture (SAELens's name).
    pub architecture: String,
    /// Number of latents of the SAE.
    pub d_sae: usize,
    /// Texts read.
    pub n_texts: usize,
    /// Tokens read (BOS left out).
    pub n_tokens: usize,
    /// How the output tokens were computed, in words.
    pub logits_rule: String,
    /// One per latent asked for, in that order.
    pub dashboards: Vec<Dashboard>,
}

impl Dashboards {
    /// The dashboard of `latent`, if it was asked for.
    pub fn get(&self, latent: usize) -> Option<&Dashboard> {
        self.dashboards.iter().find(|d| d.latent == latent)
    }
}

impl Sae {
    /// Dashboards for `latents` over `texts` (a slice of strings, or `corpus.texts()`), with
    /// [`DashboardOptions::default`]; see [`dashboard`].
    pub fn dashboard(
        &self,
        model: &HookedTransformer,
        latents: &[usize],
        texts: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Dashboards> {
        dashboard(model, self, latents, texts, &DashboardOptions::default())
    }
}

/// One context of the corpus pass: token ids (BOS first where the model prepends it) and
/// where they sit in their text.
struct Chunk {
    text: usize,
    offset: usize,
    ids: Vec<u32>,
}

/// What the pass keeps per latent.
#[derive(Default)]
struct Acc {
    nonzero: Vec<f32>,
    top: Vec<TopContext>,
}

/// Dashboards for `latents` of `sae` over `texts` on `model`: texts are read in order until
/// [`DashboardOptions::max_tokens`], so a capped pass over a corpus sorted by language sees
/// only its first languages (shuffle it first).
pub fn dashboard(
    model: &HookedTransformer,
    sae: &Sae,
    latents: &[usize],
    texts: impl IntoIterator<Item = impl AsRef<str>>,
    opts: &DashboardOptions,
) -> Result<Dashboards> {
    check_request(sae, latents, opts)?;
    let n_layers = model.cfg().n_layers;
    let hook = sae.hook_name().to_string();
    let point = HookPoint::parse_for(&hook, n_layers)?;
    model.check_hook_point(point)?;
    let first = usize::from(model.prepend_bos());
    let (chunks, n_texts) = chunk_texts(model, texts, opts, first)?;
    if n_texts == 0 {
        return Err(Error::Invalid(
            "dashboards need texts to find where the latents fire; the corpus given is empty"
                .into(),
        ));
    }
    let n_tokens: usize = chunks.iter().map(|c| c.ids.len() - first).sum();
    if n_tokens == 0 {
        return Err(Error::Invalid(format!(
            "the {n_texts} texts given for the dashboards hold no tokens besides BOS; pass some text"
        )));
    }
    let mut accs: Vec<Acc> = latents.iter().map(|_| Acc::default()).collect();
    // Similar lengths batched together waste the least on padding.
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.sort_by_key(|&i| chunks[i].ids.len());
    let idx = Tensor::from_vec(
        latents.iter().map(|&l| l as u32).collect::<Vec<u32>>(),
        latents.len(),
        sae.device(),
    )?;
    let narrow = select_latents(sae, &idx)?;
    for batch in order.chunks(opts.batch_size) {
        let rows: Vec<&Chunk> = batch.iter().map(|&i| &chunks[i]).collect();
        let acts = batch_acts(model, sae, narrow.as_ref(), point, &hook, &rows, &idx)?;
        for (chunk, a) in rows.iter().zip(&acts) {
            collect(chunk, a, first, opts, &mut accs);
        }
    }
    let (effects, logits_rule) = logit_effects(model, sae, latents, opts)?;
    let tok = model.tokenizer()?;
    let mut dashboards = Vec::with_capacity(latents.len());
    for ((&latent, acc), eff) in latents.iter().zip(accs).zip(effects) {
        let n_firing = acc.nonzero.len();
        let max_act = acc.nonzero.iter().copied().fold(0f32, f32::max);
        let mean_act = if n_firing == 0 {
            0.0
        } else {
            (acc.nonzero.iter().map(|&v| v as f64).sum::<f64>() / n_firing as f64) as f32
        };
        let top = acc
            .top
            .into_iter()
            .map(|mut c| {
                c.tokens = c.ids.iter().map(|&id| tok.token_str(id)).collect();
                c
            })
            .collect();
        let (boosted, suppressed, logits_note) = match eff {
            Ok((b, s)) => (b, s, None),
            Err(note) => (Vec::new(), Vec::new(), Some(note)),
        };
        dashboards.push(Dashboard {
            latent,
            n_tokens,
            n_firing,
            density: n_firing as f64 / n_tokens as f64,
            max_act,
            mean_act,
            top,
            histogram: histogram(&acc.nonzero, opts.n_bins),
            boosted,
            suppressed,
            logits_note,
        });
    }
    Ok(Dashboards {
        hook_name: hook,
        architecture: sae.cfg().architecture.saelens_name().to_string(),
        d_sae: sae.d_sae(),
        n_texts,
        n_tokens,
        logits_rule,
        dashboards,
    })
}

/// Refuses latents out of range or repeated, and options that cannot work.
fn check_request(sae: &Sae, latents: &[usize], opts: &DashboardOptions) -> Result<()> {
    if latents.is_empty() {
        return Err(Error::Invalid(
            "dashboards need at least one latent; name some, e.g. &[12, 40]".into(),
        ));
    }
    if let Some(&l) = latents.iter().find(|&&l| l >= sae.d_sae()) {
        return Err(Error::Invalid(format!(
            "latent {l} does not exist: this SAE (at `{}`) has {} latents, 0..{}",
            sae.hook_name(),
            sae.d_sae(),
            sae.d_sae()
        )));
    }
    let mut seen = BTreeSet::new();
    if let Some(&l) = latents.iter().find(|&&l| !seen.insert(l)) {
        return Err(Error::Invalid(format!(
            "latent {l} is asked for twice; name each latent once"
        )));
    }
    let bad = |what: &str, v: usize, min: usize| {
        Err(Error::Invalid(format!(
            "DashboardOptions::{what} = {v}; it must be at least {min}"
        )))
    };
    if opts.n_bins == 0 {
        return bad("n_bins", 0, 1);
    }
    if opts.batch_size == 0 {
        return bad("batch_size", 0, 1);
    }
    if opts.context_len < 2 {
        return bad("context_len", opts.context_len, 2);
    }
    if opts.max_tokens == Some(0) {
        return bad("max_tokens", 0, 1);
    }
    Ok(())
}

/// Tokenises the texts into contexts of at most `context_len` tokens, each with BOS first
/// where the model prepends it, stopping at `max_tokens` tokens besides BOS; and how many
/// texts were read.
fn chunk_texts(
    model: &HookedTransformer,
    texts: impl IntoIterator<Item = impl AsRef<str>>,
    opts: &DashboardOptions,
    first: usize,
) -> Result<(Vec<Chunk>, usize)> {
    let body_len = opts.context_len - first;
    let mut budget = opts.max_tokens.unwrap_or(usize::MAX);
    let mut chunks = Vec::new();
    let mut n_texts = 0;
    for (text, t) in texts.into_iter().enumerate() {
        if budget == 0 {
            break;
        }
        n_texts += 1;
        let ids = model.encode(t.as_ref())?;
        let (head, body) = ids.split_at(first.min(ids.len()));
        for (k, piece) in body.chunks(body_len).enumerate() {
            let piece = &piece[..piece.len().min(budget)];
            if piece.is_empty() {
                break;
            }
            budget -= piece.len();
            let mut ids = head.to_vec();
            ids.extend_from_slice(piece);
            chunks.push(Chunk {
                text,
                offset: k * body_len,
                ids,
            });
        }
    }
    Ok((chunks, n_texts))
}

/// The SAE cut down to `idx`'s latents (in that order), whose activations are then the full
/// SAE's at those latents, at a fraction of the cost; `None` for TopK, where a latent's
/// activation depends on every other latent's.
fn select_latents(sae: &Sae, idx: &Tensor) -> Result<Option<Sae>> {
    if sae.cfg().architecture == Architecture::TopK {
        return Ok(None);
    }
    let w = sae.weights();
    let pick = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
        Ok(match t {
            Some(t) => Some(t.index_select(idx, 0)?),
            None => None,
        })
    };
    let weights = SaeWeights {
        w_enc: w.w_enc.index_select(idx, 1)?,
        b_enc: pick(&w.b_enc)?,
        w_dec: w.w_dec.index_select(idx, 0)?,
        b_dec: w.b_dec.clone(),
        threshold: pick(&w.threshold)?,
        b_gate: pick(&w.b_gate)?,
        r_mag: pick(&w.r_mag)?,
        b_mag: pick(&w.b_mag)?,
        w_skip: w.w_skip.clone(),
    };
    let mut cfg = sae.cfg().clone();
    cfg.d_sae = idx.dim(0)?;
    Ok(Some(Sae::new(cfg, weights)?))
}

/// The latents' activations [row][position][latent] for a batch of contexts (padded
/// positions included; the caller reads only each row's real ones), through `narrow` (the
/// SAE cut down to the latents) where there is one.
fn batch_acts(
    model: &HookedTransformer,
    sae: &Sae,
    narrow: Option<&Sae>,
    point: HookPoint,
    hook: &str,
    rows: &[&Chunk],
    idx: &Tensor,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let s = rows.iter().map(|c| c.ids.len()).max().unwrap_or(1);
    let pad = model.cfg().pad_token_id;
    let mut flat = Vec::with_capacity(rows.len() * s);
    for c in rows {
        flat.extend_from_slice(&c.ids);
        flat.extend(std::iter::repeat_n(pad, s - c.ids.len()));
    }
    let toks = Tensor::from_vec(flat, (rows.len(), s), model.device())?;
    let filter = |n: &str| n == hook;
    let mut pass = model.pass(&toks).cache(&filter).no_logits();
    if let Some(l) = point.layer() {
        pass = pass.stop_after(l);
    } else if point == HookPoint::Embed {
        pass = pass.stop_after(0);
    }
    let x = pass.run()?.cache.get(hook)?;
    let (b, s) = (x.dim(0)?, x.dim(1)?);
    let width = x.elem_count() / (b * s).max(1);
    if width != sae.d_in() {
        return Err(Error::Invalid(format!(
            "the SAE reads `{hook}` with d_in = {}, but this model's `{hook}` is {:?} ({width} per position); use an SAE trained on this model",
            sae.d_in(),
            x.dims()
        )));
    }
    // Per-head hooks ([b, s, n, h]) are read flat, as SAELens's hook_z SAEs read them.
    let x = x.reshape((b, s, width))?.to_device(sae.device())?;
    let acts = match narrow {
        Some(n) => n.encode(&x)?,
        None => sae.encode(&x)?.index_select(idx, 2)?,
    };
    Ok(acts.to_dtype(DType::F32)?.to_vec3::<f32>()?)
}

/// Adds one context's activations to each latent's non-zero values and top contexts.
fn collect(
    chunk: &Chunk,
    acts: &[Vec<f32>],
    first: usize,
    opts: &DashboardOptions,
    accs: &mut [Acc],
) {
    let len = chunk.ids.len();
    for (j, acc) in accs.iter_mut().enumerate() {
        for pos in first..len {
            let a = acts[pos][j];
            if a == 0.0 {
                continue;
            }
            acc.nonzero.push(a);
            let full = acc.top.len() >= opts.n_top;
            if opts.n_top == 0 || a <= 0.0 || full && acc.top.last().is_some_and(|c| a <= c.act) {
                continue;
            }
            let lo = pos.saturating_sub(opts.window).max(first);
            let hi = (pos + opts.window + 1).min(len);
            let ids = &chunk.ids[lo..hi];
            // The activation depends only on what precedes it: the same tokens up to the
            // maximum with the same activation are one context (a corpus that repeats a
            // sentence, or sentences that start alike, would otherwise fill the list).
            let left = &chunk.ids[lo..=pos];
            if acc
                .top
                .iter()
                .any(|c| c.ids[..=c.centre] == *left && (c.act - a).abs() <= 1e-5 * a)
            {
                continue;
            }
            let ctx = TopContext {
                text: chunk.text,
                position: chunk.offset + pos,
                act: a,
                ids: ids.to_vec(),
                tokens: Vec::new(),
                acts: (lo..hi).map(|p| acts[p][j]).collect(),
                centre: pos - lo,
            };
            // Highest first; a later equal activation goes after the earlier one.
            let at = acc.top.partition_point(|c| c.act >= a);
            acc.top.insert(at, ctx);
            acc.top.truncate(opts.n_top);
        }
    }
}

/// Equal-width bins from the smallest value to the largest.
pub fn histogram(values: &[f32], n_bins: usize) -> Histogram {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi || n_bins == 0 {
        return Histogram {
            edges: Vec::new(),
            counts: Vec::new(),
        };
    }
    // One value (or all equal) still gets a bin of non-zero width to be drawn in.
    let hi = if hi > lo {
        hi
    } else {
        lo + (lo.abs() * 1e-3).max(1e-6)
    };
    let w = (hi - lo) / n_bins as f32;
    let edges = (0..=n_bins)
        .map(|i| if i == n_bins { hi } else { lo + w * i as f32 })
        .collect();
    let mut counts = vec![0usize; n_bins];
    for v in values.iter().copied().filter(|v| v.is_finite()) {
        let i = (((v - lo) / w) as usize).min(n_bins - 1);
        counts[i] += 1;
    }
    Histogram { edges, counts }
}

/// Per latent, the `n_logits` output tokens whose logits its decoder direction raises most
/// and lowers most (or why there are none), and the rule used, in words.
///
/// As SAEDashboard computes them on a TransformerLens model loaded with `from_pretrained`'s
/// defaults: `W_dec[latent] @ W_U`, where TransformerLens has folded the final norm's weight
/// into `W_U` (`fold_ln`; Gemma's `1 + w`) and centred `W_U` over the vocabulary
/// (`center_unembed`). Centring shifts every token of a latent by the same amount, so it
/// changes the values shown but not the ranking; folding the norm's weight changes both
/// ([`DashboardOptions::fold_final_norm`] turns it off to get the raw `W_dec @ W_U`).
#[allow(clippy::type_complexity)]
pub fn logit_effects(
    model: &HookedTransformer,
    sae: &Sae,
    latents: &[usize],
    opts: &DashboardOptions,
) -> Result<(
    Vec<std::result::Result<(Vec<TokenEffect>, Vec<TokenEffect>), String>>,
    String,
)> {
    let d_model = model.cfg().d_model;
    let rule = if opts.fold_final_norm {
        "W_dec[latent] · diag(final norm weight) · W_U, centred over the vocabulary (SAEDashboard on a TransformerLens model with fold_ln and center_unembed)"
    } else {
        "W_dec[latent] · W_U, centred over the vocabulary (the final norm's weight not folded in)"
    }
    .to_string();
    if sae.d_out() != d_model {
        let note = format!(
            "no output tokens: the SAE writes `{}` of width {}, not the residual stream's {d_model}, so its decoder directions do not go through the unembedding",
            sae.hook_name_out(),
            sae.d_out()
        );
        return Ok((latents.iter().map(|_| Err(note.clone())).collect(), rule));
    }
    let idx = Tensor::from_vec(
        latents.iter().map(|&l| l as u32).collect::<Vec<u32>>(),
        latents.len(),
        sae.device(),
    )?;
    let mut dirs = sae
        .w_dec()
        .index_select(&idx, 0)?
        .to_dtype(DType::F32)?
        .to_device(model.device())?;
    if opts.fold_final_norm {
        dirs = dirs.broadcast_mul(&model.weights().ln_final.to_dtype(DType::F32)?)?;
    }
    // The forward pass's own unembedding; a half-precision one is widened to f32.
    let logits = match model.unembed() {
        Matrix::Dense(u) if u.dtype() != DType::F32 => {
            dirs.matmul(&u.to_dtype(DType::F32)?.t()?)?
        }
        u => u.linear(&dirs, None)?,
    };
    let logits = logits.broadcast_sub(&logits.mean_keepdim(1)?)?;
    let rows = logits.to_vec2::<f32>()?;
    let tok = model.tokenizer()?;
    let n = opts.n_logits;
    let out = rows
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            let effect = |i: usize| TokenEffect {
                id: i as u32,
                token: tok.token_str(i as u32),
                value: row[i],
            };
            let k = n.min(row.len());
            if k == 0 {
                return Ok((Vec::new(), Vec::new()));
            }
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut top: Vec<usize> = order[..k].to_vec();
            top.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order.select_nth_unstable_by(k - 1, |&a, &b| row[a].total_cmp(&row[b]));
            let mut bottom: Vec<usize> = order[..k].to_vec();
            bottom.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
            Ok((
                top.into_iter().map(effect).collect(),
                bottom.into_iter().map(effect).collect(),
            ))
        })
        .collect();
    Ok((out, rule))
}
