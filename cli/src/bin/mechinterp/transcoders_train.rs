//! `mechinterp transcoders train`: a transcoder for every layer of the model in one streaming
//! pass over the corpus, written as SAELens folders and in circuit-tracer's per-layer format,
//! and evaluated on held-out text (per layer, and the replacement model as a whole).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::sae::train::{
    parse_set_arch, train_transcoders, MassiveRule, TranscoderSetOptions,
};

use mechinterp_cli::args::ModelArgs;

/// Arguments of `transcoders train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The folder to write: layer_L.safetensors + config.yaml (circuit-tracer),
    /// saelens/layer_L/ (SAELens), training.json, eval.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Starting settings: quick (1 024 latents, k 32, 30 000 tokens; CI and the notebook) or
    /// full (2 048 latents, k 32, 250 000 tokens); the flags below override them.
    #[arg(long, default_value = "quick", value_parser = ["quick", "full"])]
    pub recipe: String,
    /// What to train: batchtopk (saved as JumpReLU with the learned threshold), transcoder or
    /// skip_transcoder (ReLU, L1 penalty).
    #[arg(long, value_parser = ["batchtopk", "transcoder", "skip_transcoder"])]
    pub arch: Option<String>,
    /// Latents per layer.
    #[arg(long)]
    pub d_sae: Option<usize>,
    /// BatchTopK: mean active latents per token.
    #[arg(long)]
    pub k: Option<usize>,
    /// Training tokens per layer (special and massive-activation tokens are not counted).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// A text, TSV or JSONL file or a folder of them (default: the shipped corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Adam's learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// L1 coefficient of the ReLU transcoders.
    #[arg(long)]
    pub l1_coefficient: Option<f64>,
    /// Seed of the corpus order, the shuffles and the initialisation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Contexts per forward pass of the model.
    #[arg(long)]
    pub contexts_per_forward: Option<usize>,
    /// Batches in each layer's shuffle buffer (about 24 MB per batch for Gemma 3 270M).
    #[arg(long)]
    pub buffer_batches: Option<usize>,
    /// Save every layer's trainer in OUT/checkpoints/step_N/layer_L every this many steps.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Train on massive-activation tokens too (by default they are left out).
    #[arg(long)]
    pub keep_massive: bool,
    /// Held-out tokens for the per-layer evaluation (0 skips the evaluation).
    #[arg(long)]
    pub eval_tokens: Option<usize>,
    /// Held-out positions for the replacement model's top-1 agreement and KL (0 skips it).
    #[arg(long)]
    pub eval_replacement_tokens: Option<usize>,
    /// Print only the summary.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Trains the set, writes it, prints the summary and the evaluation table.
pub fn run(a: TrainArgs, out: &mut impl Write) -> Result<()> {
    let mut o = match a.recipe.as_str() {
        "full" => TranscoderSetOptions::full(a.out),
        _ => TranscoderSetOptions::quick(a.out),
    };
    if let Some(s) = &a.arch {
        o.arch = parse_set_arch(s)?;
        if s != "batchtopk" {
            o.k = None;
        }
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f { o.$f = v; })* };
    }
    set!(
        d_sae,
        tokens,
        lr,
        seed,
        contexts_per_forward,
        buffer_batches,
        eval_tokens,
        eval_replacement_tokens
    );
    if a.k.is_some() {
        o.k = a.k;
    }
    o.corpus = a.corpus;
    o.l1_coefficient = a.l1_coefficient;
    o.checkpoint_every = a.checkpoint_every;
    o.massive = MassiveRule {
        keep: a.keep_massive,
        ..MassiveRule::default()
    };
    o.quiet = a.quiet;
    let m = a.model.load()?;
    let r = train_transcoders(&m, &o)?;
    write!(out, "{r}")?;
    Ok(())
}
