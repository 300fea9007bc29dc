//! Training a transcoder for every layer in one streaming pass: one forward pass per batch of
//! contexts ([`SetStore`]) feeds one trainer per layer in lockstep; each transcoder reads
//! `blocks.L.mlp.hook_in` and writes `blocks.L.hook_mlp_out`. The default is BatchTopK trained
//! with the CPU fast sparse step and saved as a JumpReLU transcoder with the learned global
//! threshold, which both SAELens (`jumprelu_transcoder`) and circuit-tracer's per-layer format
//! hold exactly. The set is written as one SAELens folder per layer (`saelens/layer_L/`) and in
//! circuit-tracer's per-layer format (`layer_L.safetensors` + `config.yaml`), then evaluated on
//! held-out text ([`evaluate_set`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::run::{corpus_texts, fold_scales, model_name, write_json};
use super::set_eval::{evaluate_set, SetEvalReport};
use super::set_store::{set_hook_in, set_hook_out, SetStore, SetStoreStats};
use super::store::MassiveRule;
use super::trainer::{StepStats, TrainArch, TrainConfig, Trainer};
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::sae::format::circuit_tracer::save_transcoder_set;
use crate::sae::Sae;

/// The architectures a transcoder set trains (`--arch`).
pub const SET_ARCHS: [(&str, TrainArch); 3] = [
    ("batchtopk", TrainArch::BatchTopKTranscoder),
    ("transcoder", TrainArch::Transcoder),
    ("skip_transcoder", TrainArch::SkipTranscoder),
];

/// The set architecture named `s`, or an error naming the ones there are.
pub fn parse_set_arch(s: &str) -> Result<TrainArch> {
    SET_ARCHS
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "`{s}` is not an architecture a transcoder set trains: use batchtopk (saved as JumpReLU), transcoder or skip_transcoder (ReLU); circuit-tracer's per-layer format holds only ReLU and JumpReLU transcoders"
            ))
        })
}

/// Everything a transcoder-set run takes.
#[derive(Debug, Clone)]
pub struct TranscoderSetOptions {
    /// What to train: [`TrainArch::BatchTopKTranscoder`], `Transcoder` or `SkipTranscoder`.
    pub arch: TrainArch,
    /// Latents per layer.
    pub d_sae: usize,
    /// BatchTopK's mean active latents per token.
    pub k: Option<usize>,
    /// Training tokens per layer (non-special, after the massive rule).
    pub tokens: usize,
    /// A text, TSV or JSONL file or folder; the shipped corpus when unset.
    pub corpus: Option<PathBuf>,
    /// Adam's learning rate.
    pub lr: f64,
    /// Linear warm-up steps of the learning rate.
    pub lr_warm_up_steps: usize,
    /// Linear decay steps at the end.
    pub lr_decay_steps: usize,
    /// L1 coefficient of the ReLU transcoders (the trainer's default when unset).
    pub l1_coefficient: Option<f64>,
    /// Scale inputs and targets to a mean norm of √d while training; folded into the saved
    /// weights, which read and write raw activations (no input normalisation).
    pub normalize: bool,
    /// Rows per step.
    pub batch_size: usize,
    /// Tokens per context, BOS included.
    pub context_size: usize,
    /// Contexts per forward pass.
    pub contexts_per_forward: usize,
    /// Batches each layer's shuffle buffer holds (92 KB per token for 18 layers of Gemma 3
    /// 270M; 16 batches of 256 are ~0.4 GB, plus up to half that handed out).
    pub buffer_batches: usize,
    /// Seed of the corpus order, the shuffles and the initialisation (layer L adds L).
    pub seed: u64,
    /// The folder to write.
    pub out: PathBuf,
    /// Save every layer's trainer in `out/checkpoints/step_N/layer_L` every this many steps.
    pub checkpoint_every: Option<usize>,
    /// Print a progress line every this many steps.
    pub log_every: usize,
    /// Massive-activation rule (per layer, on the target).
    pub massive: MassiveRule,
    /// Held-out tokens for the per-layer statistics (0 skips the evaluation).
    pub eval_tokens: usize,
    /// Held-out positions for the replacement model (0 skips it).
    pub eval_replacement_tokens: usize,
    /// Print nothing.
    pub quiet: bool,
}

impl TranscoderSetOptions {
    /// The quick recipe (CI and the notebook): BatchTopK, 1 024 latents, k 32, 30 000 tokens.
    pub fn quick(out: impl Into<PathBuf>) -> TranscoderSetOptions {
        TranscoderSetOptions {
            arch: TrainArch::BatchTopKTranscoder,
            d_sae: 1024,
            k: Some(32),
            tokens: 30_000,
            corpus: None,
            lr: 2e-3,
            lr_warm_up_steps: 0,
            lr_decay_steps: 30,
            l1_coefficient: None,
            normalize: true,
            batch_size: 256,
            context_size: 128,
            contexts_per_forward: 16,
            buffer_batches: 16,
            seed: 0,
            out: out.into(),
            checkpoint_every: None,
            log_every: 25,
            massive: MassiveRule::default(),
            eval_tokens: 8192,
            eval_replacement_tokens: 1024,
            quiet: false,
        }
    }

    /// The full recipe: 2 048 latents, k 32, 250 000 tokens, a longer evaluation.
    pub fn full(out: impl Into<PathBuf>) -> TranscoderSetOptions {
        TranscoderSetOptions {
            d_sae: 2048,
            tokens: 250_000,
            lr: 1e-3,
            lr_decay_steps: 200,
            eval_tokens: 32_768,
            eval_replacement_tokens: 4096,
            log_every: 50,
            ..TranscoderSetOptions::quick(out)
        }
    }
}

/// What one layer's training did.
#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    /// The layer.
    pub layer: usize,
    /// The input scale while training.
    pub input_scale: f64,
    /// The target scale while training.
    pub output_scale: f64,
    /// BatchTopK's learned threshold (in training units; 0 otherwise).
    pub threshold: f64,
    /// The last step's L0.
    pub last_l0: f64,
    /// The last step's explained variance.
    pub last_explained_variance: f64,
    /// The last step's dead fraction.
    pub last_dead_fraction: f64,
}

/// What a transcoder-set run did.
#[derive(Debug, Clone, Serialize)]
pub struct TranscoderSetOutcome {
    /// The trained transcoders, layer by layer (as saved).
    #[serde(skip)]
    pub saes: Vec<Sae>,
    /// Where they were written.
    pub out: PathBuf,
    /// What was trained.
    pub arch: String,
    /// Steps per layer.
    pub steps: usize,
    /// Tokens per layer.
    pub tokens: usize,
    /// Seconds of training (forward passes and steps).
    pub seconds: f64,
    /// Seconds in the forward passes.
    pub model_seconds: f64,
    /// Seconds in the trainers' steps (all layers).
    pub step_seconds: f64,
    /// tokens / seconds.
    pub tokens_per_s: f64,
    /// The store's counts.
    pub store: SetStoreStats,
    /// Per layer.
    pub layers: Vec<LayerOutcome>,
    /// The held-out evaluation, when run.
    pub eval: Option<SetEvalReport>,
}

impl fmt::Display for TranscoderSetOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.store;
        writeln!(
            f,
            "trained {} {} transcoders, {} steps on {} tokens each, in {:.1} s ({:.0} tokens/s; forward passes {:.1} s at {:.0} tokens/s, steps {:.1} s)",
            self.layers.len(),
            self.arch,
            self.steps,
            self.tokens,
            self.seconds,
            self.tokens_per_s,
            self.model_seconds,
            s.model_tokens_per_s(),
            self.step_seconds
        )?;
        let massive: usize = s.layers.iter().map(|l| l.massive).sum();
        writeln!(
            f,
            "store: {} contexts in {} forward passes, {} special tokens left out, {} massive (layer, token) pairs",
            s.contexts, s.forwards, s.special_left_out, massive
        )?;
        writeln!(f, "wrote {}", self.out.display())?;
        if let Some(e) = &self.eval {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Trains a transcoder for every layer of `model` as `opts` says, writes them (SAELens folders
/// and circuit-tracer's per-layer format) to `opts.out` with `training.json` and `eval.json`,
/// and evaluates them on held-out text.
pub fn train_transcoders(
    model: &HookedTransformer,
    opts: &TranscoderSetOptions,
) -> Result<TranscoderSetOutcome> {
    if !SET_ARCHS.iter().any(|(_, a)| *a == opts.arch) {
        return Err(Error::Invalid(format!(
            "a transcoder set trains batchtopk, transcoder or skip_transcoder, not `{}`",
            opts.arch.name()
        )));
    }
    if opts.arch != TrainArch::BatchTopKTranscoder && opts.k.is_some() {
        return Err(Error::Invalid(format!(
            "k is for batchtopk; a `{}` set has no k: leave --k unset",
            opts.arch.name()
        )));
    }
    if opts.d_sae == 0 || opts.k == Some(0) || opts.k.is_some_and(|k| k > opts.d_sae) {
        return Err(Error::Invalid(format!(
            "--d-sae {} with k {:?}: a transcoder needs at least one latent, and k between 1 and d_sae",
            opts.d_sae, opts.k
        )));
    }
    if opts.tokens < opts.batch_size {
        return Err(Error::Invalid(format!(
            "{} training tokens is less than one batch of {}; give --tokens ≥ the batch size",
            opts.tokens, opts.batch_size
        )));
    }
    if opts.out.is_file() {
        return Err(Error::Invalid(format!(
            "the output {} is a file; --out names the folder to write the transcoders into",
            opts.out.display()
        )));
    }
    let say = |s: String| {
        if !opts.quiet {
            eprintln!("{s}");
        }
    };
    let n_layers = model.cfg().n_layers;
    let d = model.cfg().d_model;
    let texts = corpus_texts(opts.corpus.as_deref(), Split::Train, opts.seed)?;
    let n_docs = texts.len();
    let steps = opts.tokens.div_ceil(opts.batch_size);
    say(format!(
        "training {n_layers} {} transcoders (mlp.hook_in → hook_mlp_out) with {} latents on {} tokens ({steps} steps of {}), corpus of {n_docs} documents",
        opts.arch.name(),
        opts.d_sae,
        opts.tokens,
        opts.batch_size
    ));
    let t0 = Instant::now();
    let mut store = SetStore::new(
        model,
        texts,
        opts.context_size,
        opts.contexts_per_forward,
        opts.batch_size,
        opts.buffer_batches,
        opts.seed,
        opts.massive.clone(),
    )?;
    say(format!(
        "  {} per layer, on hook_mlp_out; massive tokens are {}",
        opts.massive.describe(None),
        if opts.massive.keep {
            "kept"
        } else {
            "left out of training"
        }
    ));
    let scales: Vec<(f64, f64)> = store
        .stats()
        .layers
        .iter()
        .map(|s| {
            if opts.normalize {
                let c = |n: f32| (d as f64).sqrt() / (n as f64).max(1e-12);
                (c(s.mean_norm_in), c(s.mean_norm_out))
            } else {
                (1.0, 1.0)
            }
        })
        .collect();
    let empty = Tensor::zeros((0, d), DType::F32, model.device())?;
    let mut trainers = (0..n_layers)
        .map(|l| {
            let mut cfg = TrainConfig::new(opts.arch, d, d, opts.d_sae);
            if opts.arch == TrainArch::BatchTopKTranscoder {
                cfg.k = opts.k.or(cfg.k);
            }
            if let Some(c) = opts.l1_coefficient {
                cfg.l1_coefficient = c;
            }
            cfg.dead_feature_window = cfg.dead_feature_window.min((steps / 8).max(10));
            // The saved threshold is a running mean of each batch's smallest kept activation
            // starting at 0: SAELens's rate (0.01) leaves it a fifth short after 160 steps, so
            // a short run averages over its last tenth or so instead.
            cfg.topk_threshold_lr = (10.0 / steps as f64).clamp(0.01, 0.1);
            cfg.lr = opts.lr;
            cfg.total_steps = steps;
            cfg.lr_warm_up_steps = opts.lr_warm_up_steps;
            cfg.lr_decay_steps = opts
                .lr_decay_steps
                .min(steps - opts.lr_warm_up_steps.min(steps));
            cfg.seed = opts.seed.wrapping_add(l as u64);
            cfg.hook_name = set_hook_in(l);
            cfg.hook_name_out = set_hook_out(l);
            Trainer::new(cfg, &empty, model.device())
        })
        .collect::<Result<Vec<_>>>()?;
    let mut last: Vec<Option<StepStats>> = vec![None; n_layers];
    let mut step_seconds = 0.0;
    for step in 0..steps {
        for (l, t) in trainers.iter_mut().enumerate() {
            let (x, y) = store.next_batch(l)?;
            let (ci, co) = scales[l];
            let (x, y) = (x.affine(ci, 0.0)?, y.affine(co, 0.0)?);
            let ts = Instant::now();
            last[l] = Some(t.step(&x, Some(&y))?);
            step_seconds += ts.elapsed().as_secs_f64();
        }
        let done = step + 1;
        if done % opts.log_every.max(1) == 0 || done == steps {
            let st: Vec<&StepStats> = last.iter().flatten().collect();
            let n = st.len().max(1) as f64;
            let ev_min = st
                .iter()
                .map(|s| s.explained_variance)
                .fold(f64::INFINITY, f64::min);
            let el = t0.elapsed().as_secs_f64();
            say(format!(
                "step {done:>6}/{steps}  tokens {:>9}  mean L0 {:>6.1}  mean EV {:.4} (min {ev_min:.4})  mean dead {:>5.1}%  {:.0} tokens/s (forward {:.0} s, steps {step_seconds:.0} s)",
                done * opts.batch_size,
                st.iter().map(|s| s.l0).sum::<f64>() / n,
                st.iter().map(|s| s.explained_variance).sum::<f64>() / n,
                100.0 * st.iter().map(|s| s.dead_fraction).sum::<f64>() / n,
                (done * opts.batch_size) as f64 / el.max(1e-9),
                store.stats().model_seconds
            ));
        }
        if let Some(every) = opts.checkpoint_every {
            if every > 0 && done % every == 0 && done < steps {
                let dir = opts.out.join("checkpoints").join(format!("step_{done}"));
                for (l, t) in trainers.iter().enumerate() {
                    t.save_checkpoint(&dir.join(format!("layer_{l}")))?;
                }
                say(format!("  checkpoint {}", dir.display()));
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let name = model_name(model);
    let mut saes = Vec::with_capacity(n_layers);
    let mut layers = Vec::with_capacity(n_layers);
    for (l, t) in trainers.iter().enumerate() {
        let (ci, co) = scales[l];
        let sae = fold_scales(&t.sae()?, ci, co)?;
        let mut cfg = sae.cfg().clone();
        cfg.model_name = Some(name.clone());
        cfg.context_size = Some(opts.context_size);
        cfg.exclude_special_tokens = Some(true);
        let sae = Sae::new(cfg, sae.weights().clone())?;
        sae.save_with_sparsity(
            opts.out.join("saelens").join(format!("layer_{l}")),
            &t.log_feature_sparsity()?,
        )?;
        let st = last[l]
            .clone()
            .ok_or_else(|| Error::Invalid("no training step ran".into()))?;
        layers.push(LayerOutcome {
            layer: l,
            input_scale: ci,
            output_scale: co,
            threshold: t.topk_threshold(),
            last_l0: st.l0,
            last_explained_variance: st.explained_variance,
            last_dead_fraction: st.dead_fraction,
        });
        saes.push(sae);
    }
    let ct_name = if name == "gemma-3-270m" {
        "google/gemma-3-270m".to_string()
    } else {
        name
    };
    save_transcoder_set(&opts.out, &saes, &ct_name)?;
    let tokens = steps * opts.batch_size;
    let mut outcome = TranscoderSetOutcome {
        saes,
        out: opts.out.clone(),
        arch: opts.arch.name().into(),
        steps,
        tokens,
        seconds,
        model_seconds: store.stats().model_seconds,
        step_seconds,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        store: store.stats().clone(),
        layers,
        eval: None,
    };
    drop(store);
    write_json(&opts.out.join("training.json"), &outcome)?;
    if opts.eval_tokens > 0 {
        let held = corpus_texts(opts.corpus.as_deref(), Split::HeldOut, 0)?;
        let report = evaluate_set(
            model,
            &outcome.saes,
            &held,
            opts.eval_tokens,
            opts.eval_replacement_tokens,
            opts.context_size,
            opts.contexts_per_forward,
            &opts.massive,
            opts.quiet,
        )?;
        write_json(&opts.out.join("eval.json"), &report)?;
        outcome.eval = Some(report);
    }
    Ok(outcome)
}
