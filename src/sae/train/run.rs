//! The training driver: corpus → activation store → trainer → a SAELens v6 folder (with
//! `sparsity.safetensors`), with progress lines, checkpoints and a held-out evaluation at the
//! end.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::eval::{evaluate, EvalOptions, EvalReport};
use super::store::{ActivationStore, MassiveRule, StoreOptions, StoreStats};
use super::trainer::{BDecInit, StepStats, TrainArch, TrainConfig, Trainer};
use crate::corpus::{Corpus, Split};
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::HookedTransformer;
use crate::sae::Sae;

/// Everything a training run takes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The hook read, e.g. `blocks.6.hook_resid_post` (transcoders: `blocks.6.mlp.hook_in`).
    pub hook: String,
    /// Transcoders: the hook written; by default `blocks.L.hook_mlp_out` of the hook's layer.
    pub hook_out: Option<String>,
    /// What to train.
    pub arch: TrainArch,
    /// Number of latents.
    pub d_sae: usize,
    /// TopK / BatchTopK's k (the trainer's default when unset).
    pub k: Option<usize>,
    /// Training tokens (non-special, after the massive rule).
    pub tokens: usize,
    /// A text, TSV or JSONL file or folder; the shipped multilingual corpus when unset.
    pub corpus: Option<PathBuf>,
    /// Adam's learning rate.
    pub lr: f64,
    /// Linear warm-up steps of the learning rate.
    pub lr_warm_up_steps: usize,
    /// Linear decay steps at the end.
    pub lr_decay_steps: usize,
    /// L1 / L0 coefficient (standard, transcoders, JumpReLU); the trainer's default when unset.
    pub l1_coefficient: Option<f64>,
    /// Scale activations so that ordinary tokens' mean norm is √d while training (SAELens's
    /// `expected_average_only_in`), then fold the scale into the saved weights, which then
    /// read and write raw activations.
    pub normalize: bool,
    /// Rows per step.
    pub batch_size: usize,
    /// Tokens per context, BOS included.
    pub context_size: usize,
    /// Contexts per forward pass of the model.
    pub contexts_per_forward: usize,
    /// Seed of the corpus order, the shuffle and the initialisation.
    pub seed: u64,
    /// The SAELens folder to write.
    pub out: PathBuf,
    /// Save a checkpoint in `out/checkpoints/step_N` every this many steps.
    pub checkpoint_every: Option<usize>,
    /// Print a progress line every this many steps.
    pub log_every: usize,
    /// Keep the activations as safetensors shards here (re-read by later runs).
    pub cache_dir: Option<PathBuf>,
    /// How massive-activation tokens are told apart, and whether they are kept.
    pub massive: MassiveRule,
    /// Held-out tokens for the final evaluation (0 skips it).
    pub eval_tokens: usize,
    /// Held-out tokens for the final CE losses (0 skips them).
    pub eval_ce_tokens: usize,
    /// Print nothing.
    pub quiet: bool,
}

impl TrainOptions {
    /// The quick recipe's settings for `hook`: Adam at 1e-3, batches of 256, contexts of 128,
    /// massive tokens left out, a 100 000-token evaluation at the end.
    pub fn new(
        hook: &str,
        arch: TrainArch,
        d_sae: usize,
        tokens: usize,
        out: impl Into<PathBuf>,
    ) -> TrainOptions {
        TrainOptions {
            hook: hook.into(),
            hook_out: None,
            arch,
            d_sae,
            k: None,
            tokens,
            corpus: None,
            lr: 1e-3,
            lr_warm_up_steps: 0,
            lr_decay_steps: 0,
            l1_coefficient: None,
            normalize: true,
            batch_size: 256,
            context_size: 128,
            contexts_per_forward: 16,
            seed: 0,
            out: out.into(),
            checkpoint_every: None,
            log_every: 50,
            cache_dir: None,
            massive: MassiveRule::default(),
            eval_tokens: 100_000,
            eval_ce_tokens: 2048,
            quiet: false,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// The trained SAE (as saved).
    #[serde(skip)]
    pub sae: Sae,
    /// Where it was written.
    pub out: PathBuf,
    /// Steps taken.
    pub steps: usize,
    /// Tokens trained on.
    pub tokens: usize,
    /// Seconds of training (store and steps; not the evaluation).
    pub seconds: f64,
    /// tokens / seconds.
    pub tokens_per_s: f64,
    /// Seconds in the SAE's steps alone.
    pub step_seconds: f64,
    /// The store's counts (massive tokens dropped…).
    pub store: StoreStats,
    /// The massive-activation rule, in words.
    pub massive_rule: String,
    /// The scale of the inputs while training (1 without normalisation).
    pub input_scale: f64,
    /// The scale of the targets while training.
    pub output_scale: f64,
    /// The last step's statistics (on its training batch).
    pub last_mse: f64,
    /// The last step's L0.
    pub last_l0: f64,
    /// The last step's explained variance.
    pub last_explained_variance: f64,
    /// The last step's dead fraction.
    pub last_dead_fraction: f64,
    /// The held-out evaluation, when run.
    pub eval: Option<EvalReport>,
}

impl fmt::Display for TrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.store;
        writeln!(
            f,
            "trained {} steps on {} tokens in {:.1} s ({:.0} tokens/s; model {:.0} tokens/s, SAE steps {:.1} s)",
            self.steps,
            self.tokens,
            self.seconds,
            self.tokens_per_s,
            s.model_tokens_per_s(),
            self.step_seconds
        )?;
        writeln!(
            f,
            "store: {} contexts, {} special tokens left out, {} massive tokens ({}{}), {} rows from disk",
            s.contexts,
            s.special_left_out,
            s.massive,
            if s.massive_dropped > 0 { "left out" } else { "kept" },
            if s.massive_dropped > 0 || s.massive == 0 { "" } else { " by --keep-massive" },
            s.disk_rows
        )?;
        writeln!(f, "  {}", self.massive_rule)?;
        writeln!(
            f,
            "last step: L0 {:.1}, explained variance {:.4}, dead {:.2}%",
            self.last_l0,
            self.last_explained_variance,
            100.0 * self.last_dead_fraction
        )?;
        writeln!(f, "wrote {}", self.out.display())?;
        if let Some(e) = &self.eval {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The documents of a corpus split, shuffled by `seed`: the shipped corpus's own split when
/// `path` is unset; for a user's corpus (a text, TSV or JSONL file or folder), every 20th
/// document is held out and the rest is for training.
pub fn corpus_texts(path: Option<&Path>, split: Split, seed: u64) -> Result<Vec<String>> {
    let corpus = match path {
        None => Corpus::shipped(split)?,
        Some(p) => {
            let all = Corpus::from_path(p)?;
            let docs = all
                .docs()
                .iter()
                .enumerate()
                .filter(|(i, _)| (i % 20 == 19) == (split == Split::HeldOut))
                .map(|(_, d)| d.clone())
                .collect::<Vec<_>>();
            if docs.is_empty() {
                return Err(Error::Invalid(format!(
                    "the corpus {} has {} documents: too few to hold out every 20th for evaluation; give it at least 20",
                    p.display(),
                    all.len()
                )));
            }
            Corpus::new(docs)
        }
    };
    Ok(corpus.shuffled(seed).texts().map(String::from).collect())
}

/// The hook a transcoder writes by default: `blocks.L.hook_mlp_out` of the hook's layer.
pub fn default_hook_out(hook: &str, n_layers: usize) -> Result<String> {
    let p = HookPoint::parse_for(hook, n_layers)?;
    match p.layer() {
        Some(l) => Ok(HookPoint::MlpOut(l).to_string()),
        None => Err(Error::Invalid(format!(
            "`{hook}` belongs to no layer, so a transcoder has no default output hook: give one with --hook-out"
        ))),
    }
}

/// Trains an SAE or transcoder on `model` as `opts` says, writes the SAELens folder (and
/// `training.json`, `eval.json`) to `opts.out`, and evaluates it on held-out text.
pub fn train(model: &HookedTransformer, opts: &TrainOptions) -> Result<TrainOutcome> {
    let n_layers = model.cfg().n_layers;
    let hook_out = match (&opts.hook_out, opts.arch.is_transcoder()) {
        (Some(h), true) => Some(h.clone()),
        (None, true) => Some(default_hook_out(&opts.hook, n_layers)?),
        (Some(h), false) => {
            return Err(Error::Invalid(format!(
                "--hook-out {h} is for transcoders; a `{}` SAE writes back where it reads",
                opts.arch.name()
            )))
        }
        (None, false) => None,
    };
    if opts.tokens < opts.batch_size {
        return Err(Error::Invalid(format!(
            "{} training tokens is less than one batch of {}; give --tokens ≥ --batch-size",
            opts.tokens, opts.batch_size
        )));
    }
    if opts.out.is_file() {
        return Err(Error::Invalid(format!(
            "the output {} is a file; --out names the folder to write the SAE into",
            opts.out.display()
        )));
    }
    let say = |s: String| {
        if !opts.quiet {
            eprintln!("{s}");
        }
    };
    let texts = corpus_texts(opts.corpus.as_deref(), Split::Train, opts.seed)?;
    let mut so = StoreOptions::new(&opts.hook);
    so.hook_out = hook_out.clone();
    so.context_size = opts.context_size;
    so.contexts_per_forward = opts.contexts_per_forward;
    so.batch_size = opts.batch_size;
    so.seed = opts.seed;
    so.massive = opts.massive.clone();
    so.cache_dir = opts.cache_dir.clone();
    let n_docs = texts.len();
    let mut store = ActivationStore::new(model, texts, so)?;
    let steps = opts.tokens.div_ceil(opts.batch_size);
    let mut cfg = TrainConfig::new(opts.arch, store.d_in(), store.d_out(), opts.d_sae);
    if opts.k.is_some() {
        cfg.k = opts.k;
    }
    if let Some(c) = opts.l1_coefficient {
        cfg.l1_coefficient = c;
        cfg.l0_coefficient = c;
    }
    // The residual stream has a large mean: starting b_dec there (older SAELens's "mean"
    // init) saves the first hundreds of steps of a short run.
    // (Transcoders' b_dec lives in the output space: the trainer starts it at zero.)
    if !opts.arch.is_transcoder() {
        cfg.b_dec_init = BDecInit::Mean;
    }
    // A latent silent for an eighth of a short run counts as dead (and gets the aux-k
    // gradient); SAELens's 1 000 steps would never trigger in the quick recipe's 235.
    cfg.dead_feature_window = cfg.dead_feature_window.min((steps / 8).max(10));
    cfg.lr = opts.lr;
    cfg.total_steps = steps;
    cfg.lr_warm_up_steps = opts.lr_warm_up_steps;
    cfg.lr_decay_steps = opts.lr_decay_steps;
    cfg.seed = opts.seed;
    cfg.hook_name = store.hook().to_string();
    cfg.hook_name_out = store.hook_out().unwrap_or(store.hook()).to_string();
    say(format!(
        "training a {} with {} latents at {}{} on {} tokens ({steps} steps of {}), corpus of {n_docs} documents",
        opts.arch.name(),
        opts.d_sae,
        cfg.hook_name,
        hook_out.as_deref().map_or(String::new(), |h| format!(" → {h}")),
        opts.tokens,
        opts.batch_size
    ));
    let t0 = Instant::now();
    let (x0, y0) = store.next_batch()?;
    let median = store.stats().median_norm;
    say(format!(
        "  {}; massive tokens are {}",
        opts.massive.describe(median),
        if opts.massive.keep {
            "kept (--keep-massive)"
        } else {
            "left out of training"
        }
    ));
    let (c_in, c_out) = if opts.normalize {
        let st = store.stats();
        let scale =
            |d: usize, n: Option<f32>| (d as f64).sqrt() / n.unwrap_or(1.0).max(1e-12) as f64;
        (
            scale(store.d_in(), st.mean_norm_in),
            scale(store.d_out(), st.mean_norm_out),
        )
    } else {
        (1.0, 1.0)
    };
    if opts.normalize {
        say(format!(
            "  activations scaled by {c_in:.4e} (input) and {c_out:.4e} (output) to a mean norm of √d while training; the saved weights read raw activations"
        ));
    }
    let scaled = |(x, y): (Tensor, Option<Tensor>)| -> Result<(Tensor, Option<Tensor>)> {
        Ok((
            x.affine(c_in, 0.0)?,
            y.map(|y| y.affine(c_out, 0.0)).transpose()?,
        ))
    };
    let (x0, y0) = scaled((x0, y0))?;
    let mut trainer = Trainer::new(cfg, &x0, model.device())?;
    let mut first = Some((x0, y0));
    let mut last: Option<StepStats> = None;
    let mut step_seconds = 0.0;
    let ckpt_dir = opts.out.join("checkpoints");
    for step in 0..steps {
        let (x, y) = match first.take() {
            Some(b) => b,
            None => scaled(store.next_batch()?)?,
        };
        let ts = Instant::now();
        let st = trainer.step(&x, y.as_ref())?;
        step_seconds += ts.elapsed().as_secs_f64();
        let done = step + 1;
        if done % opts.log_every.max(1) == 0 || done == steps {
            let el = t0.elapsed().as_secs_f64();
            say(format!(
                "step {done:>6}/{steps}  tokens {:>9}  L0 {:>6.1}  EV {:.4}  dead {:>5.1}%  mse {:.4}  lr {:.2e}  {:.0} tokens/s",
                done * opts.batch_size,
                st.l0,
                st.explained_variance,
                100.0 * st.dead_fraction,
                st.mse,
                st.lr,
                (done * opts.batch_size) as f64 / el.max(1e-9)
            ));
        }
        if let Some(every) = opts.checkpoint_every {
            if every > 0 && done % every == 0 && done < steps {
                let dir = ckpt_dir.join(format!("step_{done}"));
                trainer.save_checkpoint(&dir)?;
                say(format!("  checkpoint {}", dir.display()));
            }
        }
        last = Some(st);
    }
    store.flush()?;
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = steps * opts.batch_size;
    let sae = with_provenance(fold_scales(&trainer.sae()?, c_in, c_out)?, model, opts)?;
    let sparsity = trainer.log_feature_sparsity()?;
    sae.save_with_sparsity(&opts.out, &sparsity)?;
    let last = last.ok_or_else(|| Error::Invalid("no training step ran".into()))?;
    let mut outcome = TrainOutcome {
        sae,
        out: opts.out.clone(),
        steps,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds,
        step_seconds,
        store: store.stats().clone(),
        massive_rule: opts.massive.describe(store.stats().median_norm),
        input_scale: c_in,
        output_scale: c_out,
        last_mse: last.mse,
        last_l0: last.l0,
        last_explained_variance: last.explained_variance,
        last_dead_fraction: last.dead_fraction,
        eval: None,
    };
    write_json(&opts.out.join("training.json"), &outcome)?;
    if opts.eval_tokens > 0 {
        let mut eo = EvalOptions::new(corpus_texts(opts.corpus.as_deref(), Split::HeldOut, 0)?);
        eo.tokens = opts.eval_tokens;
        eo.ce_tokens = opts.eval_ce_tokens;
        eo.context_size = opts.context_size;
        eo.contexts_per_forward = opts.contexts_per_forward;
        eo.massive = opts.massive.clone();
        eo.quiet = opts.quiet;
        let report = evaluate(model, &outcome.sae, &eo)?;
        write_json(&opts.out.join("eval.json"), &report)?;
        outcome.eval = Some(report);
    }
    Ok(outcome)
}

/// An SAE trained on activations scaled by `c_in` (input) and `c_out` (target) as one that
/// reads and writes raw activations: its pre-activations and latents come out divided by
/// `c_out` (ReLU, TopK and JumpReLU are positively homogeneous), so `W_enc` takes
/// `c_in / c_out`, `b_enc`, `b_dec` and the threshold `1 / c_out`, `W_skip` `c_in / c_out`, and
/// `W_dec` (unit rows for TopK) is unchanged.
pub fn fold_scales(sae: &Sae, c_in: f64, c_out: f64) -> Result<Sae> {
    if c_in == 1.0 && c_out == 1.0 {
        return Ok(sae.clone());
    }
    if sae.cfg().apply_b_dec_to_input && c_in != c_out {
        return Err(Error::Invalid(format!(
            "an SAE that subtracts b_dec from its input needs one scale for input and output, not {c_in} and {c_out}"
        )));
    }
    let w = sae.weights();
    let r = c_in / c_out;
    let inv = 1.0 / c_out;
    let scale = |t: &Option<Tensor>, f: f64| -> Result<Option<Tensor>> {
        Ok(t.as_ref().map(|t| t.affine(f, 0.0)).transpose()?)
    };
    let mut nw = w.clone();
    nw.w_enc = w.w_enc.affine(r, 0.0)?;
    nw.b_enc = scale(&w.b_enc, inv)?;
    nw.b_dec = w.b_dec.affine(inv, 0.0)?;
    nw.threshold = scale(&w.threshold, inv)?;
    nw.w_skip = scale(&w.w_skip, r)?;
    if sae.cfg().architecture == crate::sae::Architecture::Gated {
        return Err(Error::Invalid("gated SAEs are not trained here".into()));
    }
    Sae::new(sae.cfg().clone(), nw)
}

/// The SAE with what SAELens records about its training: the model, context size and that
/// special tokens were left out.
fn with_provenance(sae: Sae, model: &HookedTransformer, opts: &TrainOptions) -> Result<Sae> {
    let mut cfg = sae.cfg().clone();
    cfg.model_name = Some(model_name(model));
    cfg.context_size = Some(opts.context_size);
    cfg.exclude_special_tokens = Some(true);
    Sae::new(cfg, sae.weights().clone())
}

/// The model's name as SAELens configs give it.
pub(super) fn model_name(model: &HookedTransformer) -> String {
    let c = model.cfg();
    if c.architecture == "gemma3" && c.n_layers == 18 && c.d_model == 640 {
        "gemma-3-270m".into()
    } else {
        format!("{}-{}l-{}d", c.architecture, c.n_layers, c.d_model)
    }
}

/// Writes pretty JSON to a file.
pub(super) fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Invalid(format!("serialising {}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| Error::Write {
        path: path.into(),
        reason: e.to_string(),
    })
}
