//! `mechinterp sae eval`: an SAE or transcoder's held-out figures on the model: explained
//! variance (ordinary and all tokens), L0, dead latents and the CE loss recovered.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mechinterp::corpus::Split;
use mechinterp::sae::train::run::corpus_texts;
use mechinterp::sae::train::{evaluate, EvalOptions, MassiveRule};
use mechinterp::sae::Sae;

use mechinterp_cli::args::{write_json, ModelArgs};

/// Arguments of `sae eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The SAE's folder (SAELens, Gemma Scope 2 or circuit-tracer).
    #[arg(long)]
    pub sae: PathBuf,
    /// Held-out tokens for explained variance, L0 and dead latents.
    #[arg(long, default_value_t = 100_000)]
    pub tokens: usize,
    /// Held-out tokens for the CE losses (0 skips them; each costs three full forward passes).
    #[arg(long, default_value_t = 2048)]
    pub ce_tokens: usize,
    /// Evaluate on this text, TSV or JSONL file or folder (its held-out part: every 20th
    /// document) instead of the shipped corpus's held-out split.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Tokens per context, BOS included.
    #[arg(long, default_value_t = 128)]
    pub context_size: usize,
    /// A token is massive when its activation's norm is at least this many times the median.
    #[arg(long, default_value_t = 5.0)]
    pub massive_factor: f32,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Loads the SAE and the model, evaluates, prints the report.
pub fn run(a: EvalArgs, out: &mut impl Write) -> Result<()> {
    let sae = Sae::load(&a.sae).with_context(|| format!("loading the SAE {}", a.sae.display()))?;
    let m = a.model.load()?;
    let mut o = EvalOptions::new(corpus_texts(a.corpus.as_deref(), Split::HeldOut, 0)?);
    o.tokens = a.tokens;
    o.ce_tokens = a.ce_tokens;
    o.context_size = a.context_size;
    o.massive = MassiveRule {
        factor: a.massive_factor,
        ..MassiveRule::default()
    };
    let r = evaluate(&m, &sae, &o)?;
    write!(out, "{r}")?;
    write_json(&a.json, &serde_json::to_value(&r)?)
}
