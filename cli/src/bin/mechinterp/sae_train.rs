//! `mechinterp sae train`: train an SAE or transcoder on a hook of the model, from a corpus,
//! into a SAELens v6 folder, and evaluate it on held-out text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::sae::train::trainer::TrainArch;
use mechinterp::sae::train::{train, MassiveRule, TrainOptions};

use mechinterp_cli::args::ModelArgs;

/// Arguments of `sae train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The hook to read, e.g. blocks.6.hook_resid_post (transcoders: blocks.6.mlp.hook_in).
    #[arg(long)]
    pub hook: String,
    /// Transcoders: the hook to write (default: blocks.L.hook_mlp_out of the hook's layer).
    #[arg(long)]
    pub hook_out: Option<String>,
    /// What to train.
    #[arg(long, value_parser = ["topk", "batchtopk", "standard", "jumprelu", "transcoder", "skip_transcoder"])]
    pub arch: String,
    /// Number of latents.
    #[arg(long)]
    pub d_sae: usize,
    /// TopK / BatchTopK: active latents per token.
    #[arg(long)]
    pub k: Option<usize>,
    /// Training tokens (BOS, separators and, by default, massive-activation tokens are not
    /// counted: they are left out).
    #[arg(long)]
    pub tokens: usize,
    /// A text, TSV or JSONL file or a folder of them (default: the shipped multilingual
    /// corpus, training split).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// The SAELens folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning-rate warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub lr_warm_up_steps: usize,
    /// Learning-rate linear decay steps at the end.
    #[arg(long, default_value_t = 0)]
    pub lr_decay_steps: usize,
    /// L1 coefficient (standard, transcoders) or L0 coefficient (JumpReLU).
    #[arg(long)]
    pub l1_coefficient: Option<f64>,
    /// Train on raw activations (by default they are scaled to a mean norm of √d while
    /// training, and the scale is folded into the saved weights).
    #[arg(long)]
    pub no_normalize: bool,
    /// Tokens per training step.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Tokens per context, BOS included.
    #[arg(long, default_value_t = 128)]
    pub context_size: usize,
    /// Contexts per forward pass of the model.
    #[arg(long, default_value_t = 16)]
    pub contexts_per_forward: usize,
    /// Seed of the corpus order, the shuffle buffer and the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the activations as safetensors shards in this folder; a later run with the same
    /// model, hook, context size and corpus re-reads them instead of running the model.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Save a checkpoint in OUT/checkpoints/step_N every this many steps.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Print a progress line every this many steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Train on massive-activation tokens too (norm ≥ --massive-factor × the median norm);
    /// by default they are left out.
    #[arg(long)]
    pub keep_massive: bool,
    /// A token is massive when its activation's norm is at least this many times the median.
    #[arg(long, default_value_t = 5.0)]
    pub massive_factor: f32,
    /// Held-out tokens for the final evaluation (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub eval_tokens: usize,
    /// Held-out tokens for the final CE losses (0 skips them).
    #[arg(long, default_value_t = 2048)]
    pub eval_ce_tokens: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Trains, writes the folder, prints the summary and the held-out evaluation.
pub fn run(a: TrainArgs, out: &mut impl Write) -> Result<()> {
    let arch = TrainArch::parse(&a.arch)?;
    if a.massive_factor <= 1.0 {
        anyhow::bail!(
            "--massive-factor {}: a massive token's norm is a multiple (> 1) of the median norm",
            a.massive_factor
        );
    }
    let m = a.model.load()?;
    let mut o = TrainOptions::new(&a.hook, arch, a.d_sae, a.tokens, a.out);
    o.hook_out = a.hook_out;
    o.k = a.k;
    o.corpus = a.corpus;
    o.lr = a.lr;
    o.lr_warm_up_steps = a.lr_warm_up_steps;
    o.lr_decay_steps = a.lr_decay_steps;
    o.l1_coefficient = a.l1_coefficient;
    o.normalize = !a.no_normalize;
    o.batch_size = a.batch_size;
    o.context_size = a.context_size;
    o.contexts_per_forward = a.contexts_per_forward;
    o.seed = a.seed;
    o.cache_dir = a.cache_dir;
    o.checkpoint_every = a.checkpoint_every;
    o.log_every = a.log_every;
    o.massive = MassiveRule {
        factor: a.massive_factor,
        keep: a.keep_massive,
        ..MassiveRule::default()
    };
    o.eval_tokens = a.eval_tokens;
    o.eval_ce_tokens = a.eval_ce_tokens;
    let r = train(&m, &o)?;
    write!(out, "{r}")?;
    Ok(())
}
