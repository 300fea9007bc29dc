//! Held-out evaluation of an SAE or transcoder: explained variance on ordinary tokens and on
//! all tokens (with the massive-activation rule said), L0, dead latents over many tokens, and
//! the CE loss recovered when it is spliced into the model (clean vs spliced vs zero-ablated).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use super::store::{special_ids, ActivationStore, MassiveRule, Packer, StoreOptions};
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::sae::{Sae, SaeHook};

/// What to evaluate on and how much.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Held-out documents.
    pub texts: Vec<String>,
    /// Tokens (special ones included) for explained variance, L0 and dead latents; 100 000 by
    /// default.
    pub tokens: usize,
    /// Tokens (targets) for the CE losses (each costs three full forward passes with logits);
    /// 0 skips them.
    pub ce_tokens: usize,
    /// Tokens per context, BOS included.
    pub context_size: usize,
    /// Contexts per forward pass for the activation statistics.
    pub contexts_per_forward: usize,
    /// Rule telling massive tokens apart.
    pub massive: MassiveRule,
    /// Print nothing while it runs.
    pub quiet: bool,
}

impl EvalOptions {
    /// 100 000 tokens for the statistics, 2 048 for CE, contexts of 128.
    pub fn new(texts: Vec<String>) -> EvalOptions {
        EvalOptions {
            texts,
            tokens: 100_000,
            ce_tokens: 2048,
            context_size: 128,
            contexts_per_forward: 16,
            massive: MassiveRule::default(),
            quiet: false,
        }
    }
}

/// Cross-entropy (nats per token) with and without the SAE in the model.
#[derive(Debug, Clone, Serialize)]
pub struct CeReport {
    /// Predicted tokens scored (special targets left out).
    pub tokens: usize,
    /// The model alone.
    pub clean: f64,
    /// The SAE's output replacing its hook at every position (SAELens's figure).
    pub spliced: f64,
    /// The SAE's output replacing its hook at ordinary positions only (special and massive
    /// tokens keep their activation).
    pub spliced_ordinary: f64,
    /// The hook zero-ablated at every position.
    pub zero_ablated: f64,
    /// (zero − spliced) / (zero − clean).
    pub recovered: f64,
    /// The same with the ordinary-only splice.
    pub recovered_ordinary: f64,
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The hook read (and written, for transcoders).
    pub hook: String,
    /// The hook written.
    pub hook_out: String,
    /// Tokens evaluated, special ones (BOS, separators) included.
    pub tokens: usize,
    /// Ordinary tokens: neither special nor massive.
    pub ordinary_tokens: usize,
    /// Special tokens (BOS, document separators).
    pub special_tokens: usize,
    /// Special tokens that are also massive by the rule (BOS usually is).
    pub special_massive_tokens: usize,
    /// Non-special tokens that are massive by the rule.
    pub massive_tokens: usize,
    /// The rule, in words.
    pub massive_rule: String,
    /// Share of the total variance (about the mean of all tokens) that the tokens which are
    /// not ordinary (special or massive) hold.
    pub excluded_variance_share: f64,
    /// 1 − SSE/SST over ordinary tokens.
    pub explained_variance_ordinary: f64,
    /// 1 − SSE/SST over all tokens, special and massive ones included (where those hold most of
    /// the variance, this says little about the ordinary tokens).
    pub explained_variance_all: f64,
    /// Mean squared error per element, ordinary tokens.
    pub mse_ordinary: f64,
    /// Mean number of active latents per ordinary token.
    pub l0_ordinary: f64,
    /// Mean number of active latents per token, all tokens.
    pub l0_all: f64,
    /// Latents that never fired on any of the tokens.
    pub dead_latents: usize,
    /// dead_latents / d_sae.
    pub dead_fraction: f64,
    /// Number of latents.
    pub d_sae: usize,
    /// CE losses, when asked for.
    pub ce: Option<CeReport>,
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = if self.hook == self.hook_out {
            self.hook.clone()
        } else {
            format!("{} → {}", self.hook, self.hook_out)
        };
        let pc = |n: usize| 100.0 * n as f64 / self.tokens.max(1) as f64;
        writeln!(
            f,
            "held-out evaluation at {io} over {} tokens ({} ordinary)",
            self.tokens, self.ordinary_tokens
        )?;
        writeln!(f, "  {}", self.massive_rule)?;
        writeln!(
            f,
            "  not ordinary: {} special tokens ({:.2}%; {} of them massive) and {} other massive tokens ({:.2}%), holding {:.1}% of the variance",
            self.special_tokens,
            pc(self.special_tokens),
            self.special_massive_tokens,
            self.massive_tokens,
            pc(self.massive_tokens),
            100.0 * self.excluded_variance_share
        )?;
        writeln!(
            f,
            "  explained variance: {:.4} on ordinary tokens, {:.4} on all tokens",
            self.explained_variance_ordinary, self.explained_variance_all
        )?;
        writeln!(
            f,
            "  L0: {:.1} (ordinary), {:.1} (all); dead latents: {} of {} ({:.2}%)",
            self.l0_ordinary,
            self.l0_all,
            self.dead_latents,
            self.d_sae,
            100.0 * self.dead_fraction
        )?;
        if let Some(ce) = &self.ce {
            writeln!(
                f,
                "  CE over {} tokens: clean {:.4}, spliced {:.4}, zero-ablated {:.4}: recovered {:.4}",
                ce.tokens, ce.clean, ce.spliced, ce.zero_ablated, ce.recovered
            )?;
            writeln!(
                f,
                "  spliced at ordinary tokens only: CE {:.4}, recovered {:.4}",
                ce.spliced_ordinary, ce.recovered_ordinary
            )?;
        }
        Ok(())
    }
}

/// Sums that give a set of rows' variance and error without keeping the rows.
#[derive(Debug, Clone)]
pub(super) struct Moments {
    pub(super) n: usize,
    sum: Vec<f64>,
    sq: f64,
    pub(super) sse: f64,
    pub(super) l0: f64,
}

impl Moments {
    pub(super) fn new(d: usize) -> Moments {
        Moments {
            n: 0,
            sum: vec![0.0; d],
            sq: 0.0,
            sse: 0.0,
            l0: 0.0,
        }
    }

    pub(super) fn add(&mut self, y: &[f32], err: f64, l0: f64) {
        self.n += 1;
        for (s, &v) in self.sum.iter_mut().zip(y) {
            *s += v as f64;
            self.sq += (v as f64) * (v as f64);
        }
        self.sse += err;
        self.l0 += l0;
    }

    pub(super) fn merged(&self, o: &Moments) -> Moments {
        Moments {
            n: self.n + o.n,
            sum: self.sum.iter().zip(&o.sum).map(|(a, b)| a + b).collect(),
            sq: self.sq + o.sq,
            sse: self.sse + o.sse,
            l0: self.l0 + o.l0,
        }
    }

    /// Σ‖y − c‖² about a centre c.
    pub(super) fn sst_about(&self, c: &[f64]) -> f64 {
        let dot: f64 = self.sum.iter().zip(c).map(|(s, m)| s * m).sum();
        let cc: f64 = c.iter().map(|m| m * m).sum();
        self.sq - 2.0 * dot + self.n as f64 * cc
    }

    pub(super) fn mean(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    pub(super) fn explained_variance(&self) -> f64 {
        1.0 - self.sse / self.sst_about(&self.mean()).max(f64::MIN_POSITIVE)
    }
}

/// Evaluates `sae` on held-out text: the statistics over `opts.tokens` tokens, then the CE
/// losses over `opts.ce_tokens`.
pub fn evaluate(model: &HookedTransformer, sae: &Sae, opts: &EvalOptions) -> Result<EvalReport> {
    let transcoder = sae.hook_name() != sae.hook_name_out();
    let mut so = StoreOptions::new(sae.hook_name());
    so.hook_out = transcoder.then(|| sae.hook_name_out().to_string());
    so.context_size = opts.context_size;
    so.contexts_per_forward = opts.contexts_per_forward;
    so.massive = opts.massive.clone();
    so.keep_special = true;
    let mut store = ActivationStore::new(model, opts.texts.clone(), so)?;
    let (d_in, d_out, d_sae) = (store.d_in(), store.d_out(), sae.d_sae());
    if (d_in, d_out) != (sae.d_in(), sae.d_out()) {
        return Err(Error::Invalid(format!(
            "this SAE reads {} wide vectors at `{}` and writes {} at `{}`, but the model's widths there are {d_in} and {d_out}",
            sae.d_in(),
            sae.hook_name(),
            sae.d_out(),
            sae.hook_name_out()
        )));
    }
    let mut ordinary = Moments::new(d_out);
    let mut other = Moments::new(d_out);
    let (mut n_special, mut n_special_massive, mut n_massive) = (0, 0, 0);
    let mut fired = vec![false; d_sae];
    let mut progress = Progress::new("evaluating", opts.tokens, opts.quiet);
    let mut seen = 0;
    while seen < opts.tokens {
        let (c, flags) = store.next_classified()?;
        let rows = c.rows().min(opts.tokens - seen);
        for start in (0..rows).step_by(4096) {
            let n = 4096.min(rows - start);
            let x = Tensor::from_slice(
                &c.x[start * d_in..(start + n) * d_in],
                (n, d_in),
                sae.device(),
            )?;
            let y = match &c.y {
                Some(y) => &y[start * d_out..(start + n) * d_out],
                None => &c.x[start * d_in..(start + n) * d_in],
            };
            let (out, acts) = output_and_latents(sae, &x)?;
            let active = acts.gt(0f32)?;
            let l0 = active.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?;
            for (j, any) in active.max(0)?.to_vec1::<u8>()?.into_iter().enumerate() {
                fired[j] |= any > 0;
            }
            let yt = Tensor::from_slice(y, (n, d_out), &Device::Cpu)?;
            let err = (out.to_device(&Device::Cpu)? - &yt)?
                .sqr()?
                .sum(1)?
                .to_vec1::<f32>()?;
            for i in 0..n {
                let (sp, ma) = (c.special[start + i], flags[start + i]);
                n_special += usize::from(sp);
                n_special_massive += usize::from(sp && ma);
                n_massive += usize::from(ma && !sp);
                let m = if sp || ma { &mut other } else { &mut ordinary };
                m.add(&y[i * d_out..(i + 1) * d_out], err[i] as f64, l0[i] as f64);
            }
        }
        seen += rows;
        progress.inc(rows);
    }
    progress.finish();
    let all = ordinary.merged(&other);
    let mean_all = all.mean();
    let sst_all = all.sst_about(&mean_all);
    let dead = fired.iter().filter(|f| !**f).count();
    let median = store.stats().median_norm;
    let ce = if opts.ce_tokens > 0 {
        Some(ce_losses(
            model,
            sae,
            opts,
            median.unwrap_or(f32::INFINITY),
        )?)
    } else {
        None
    };
    Ok(EvalReport {
        hook: sae.hook_name().into(),
        hook_out: sae.hook_name_out().into(),
        tokens: all.n,
        ordinary_tokens: ordinary.n,
        special_tokens: n_special,
        special_massive_tokens: n_special_massive,
        massive_tokens: n_massive,
        massive_rule: opts.massive.describe(median),
        excluded_variance_share: other.sst_about(&mean_all) / sst_all.max(f64::MIN_POSITIVE),
        explained_variance_ordinary: ordinary.explained_variance(),
        explained_variance_all: all.explained_variance(),
        mse_ordinary: ordinary.sse / (ordinary.n.max(1) * d_out) as f64,
        l0_ordinary: ordinary.l0 / ordinary.n.max(1) as f64,
        l0_all: all.l0 / all.n.max(1) as f64,
        dead_latents: dead,
        dead_fraction: dead as f64 / d_sae as f64,
        d_sae,
        ce,
    })
}

/// Summed next-token CE of logits [b, s, v] against the tokens [b, s] they were run on, over
/// the targets that are not special tokens: (sum of −log p, count).
fn ce_sum(
    logits: &Tensor,
    ids: &[u32],
    b: usize,
    s: usize,
    special: &HashSet<u32>,
) -> Result<(f64, usize)> {
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, s - 1)?, D::Minus1)?;
    let mut tgt = Vec::with_capacity(b * (s - 1));
    let mut keep = Vec::with_capacity(b * (s - 1));
    for r in 0..b {
        for p in 1..s {
            let t = ids[r * s + p];
            tgt.push(t);
            keep.push(if special.contains(&t) { 0f32 } else { 1f32 });
        }
    }
    let idx = Tensor::from_vec(tgt, (b, s - 1, 1), logits.device())?;
    let got = lp.gather(&idx, 2)?.squeeze(2)?.to_device(&Device::Cpu)?;
    let k = Tensor::from_vec(keep.clone(), (b, s - 1), &Device::Cpu)?;
    let total = (got * k)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((-total, keep.iter().filter(|&&v| v > 0.0).count()))
}

/// Clean, spliced (everywhere and at ordinary tokens only) and zero-ablated CE.
fn ce_losses(
    model: &HookedTransformer,
    sae: &Sae,
    opts: &EvalOptions,
    median: f32,
) -> Result<CeReport> {
    let s = opts.context_size;
    let tok = model.tokenizer()?;
    let special = special_ids(model)?;
    let bos = tok.prepended_id().unwrap_or(model.cfg().bos_token_id);
    let mut packer = Packer::new(opts.texts.clone(), s, bos)?;
    let n_layers = model.cfg().n_layers;
    let p_in = HookPoint::parse_for(sae.hook_name(), n_layers)?;
    let p_out = HookPoint::parse_for(sae.hook_name_out(), n_layers)?;
    let transcoder = p_in != p_out;
    // Two contexts per forward: their logits over Gemma's 262k vocabulary are already 270 MB.
    let b = 2;
    let mut sums = [0f64; 4];
    let mut count = 0usize;
    // SAELens's figure splices the SAE in at every position, as Hooks::sae does.
    let everywhere = model.with_hooks(&Hooks::new().sae(sae)?);
    let mut progress = Progress::new("CE losses", opts.ce_tokens, opts.quiet);
    while count < opts.ce_tokens {
        let mut ids = Vec::with_capacity(b * s);
        for _ in 0..b {
            ids.extend(packer.next_context(tok)?);
        }
        let toks = Tensor::from_vec(ids.clone(), (b, s), model.device())?;
        // Positions whose activation the ordinary-only splice replaces: non-special tokens.
        let ordinary_pos: Vec<u8> = ids.iter().map(|t| u8::from(!special.contains(t))).collect();
        let mut n = 0;
        for (i, sum) in sums.iter_mut().enumerate() {
            let input: RefCell<Option<Tensor>> = RefCell::new(None);
            let grab = |x: &Tensor, _: &HookContext| -> Result<Tensor> {
                *input.borrow_mut() = Some(x.clone());
                Ok(x.clone())
            };
            let replace = |x: &Tensor, _: &HookContext| -> Result<Tensor> {
                let src = if transcoder {
                    input.borrow().clone().ok_or_else(|| {
                        Error::Invalid(format!("`{}` ran before `{}`", p_out, p_in))
                    })?
                } else {
                    x.clone()
                };
                spliced_ordinary(sae, &src, x, &ordinary_pos, median, &opts.massive)
            };
            let zero = |x: &Tensor, _: &HookContext| -> Result<Tensor> { Ok(x.zeros_like()?) };
            let pass = match i {
                0 => model.pass(&toks),
                1 => everywhere.pass(&toks),
                3 => model.pass(&toks).hook(p_out, &zero),
                _ if transcoder => model.pass(&toks).hook(p_in, &grab).hook(p_out, &replace),
                _ => model.pass(&toks).hook(p_out, &replace),
            };
            let (tot, k) = ce_sum(&pass.run()?.logits, &ids, b, s, &special)?;
            *sum += tot;
            n = k;
        }
        count += n;
        progress.inc(n);
    }
    progress.finish();
    let [clean, spliced, spliced_ordinary, zero] = sums.map(|v| v / count.max(1) as f64);
    let rec = |x: f64| (zero - x) / (zero - clean);
    Ok(CeReport {
        tokens: count,
        clean,
        spliced,
        spliced_ordinary,
        zero_ablated: zero,
        recovered: rec(spliced),
        recovered_ordinary: rec(spliced_ordinary),
    })
}

/// The SAE's output for `src` [b, s, d_in] in place of `x` [b, s, d_out] at the ordinary
/// positions only: not special (`pos` is 0 there) and not massive by the rule.
fn spliced_ordinary(
    sae: &Sae,
    src: &Tensor,
    x: &Tensor,
    pos: &[u8],
    median: f32,
    rule: &MassiveRule,
) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let flat = src.reshape((b * s, src.dim(2)?))?;
    let out = sae
        .forward(&flat.to_device(sae.device())?)?
        .to_device(x.device())?
        .to_dtype(x.dtype())?
        .reshape((b, s, d))?;
    let norms = x
        .to_dtype(DType::F32)?
        .sqr()?
        .sum(2)?
        .sqrt()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let keep: Vec<u8> = pos
        .iter()
        .zip(&norms)
        .map(|(&p, &n)| u8::from(p > 0 && !rule.is_massive(n, median)))
        .collect();
    let m = Tensor::from_vec(keep, (b, s, 1), x.device())?.broadcast_as((b, s, d))?;
    Ok(m.where_cond(&out, x)?)
}

/// The SAE's output for `x` and its latent activations (`hook_sae_acts_post`), in one pass.
pub(super) fn output_and_latents(sae: &Sae, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut acts = None;
    let out = sae.run_hooked(x, false, &mut |h, t| {
        if h == SaeHook::ActsPost {
            acts = Some(t.clone());
        }
        Ok(t)
    })?;
    let acts = acts.ok_or_else(|| Error::Invalid("the SAE gave no latents".into()))?;
    Ok((out, acts))
}
