//! `mechinterp cache`: run a prompt and write the logits and its activations to safetensors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use mechinterp_cli::args::PromptArgs;

/// Arguments of `cache`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PromptArgs,
    /// Keep only hook names matching this regular expression.
    #[arg(long)]
    filter: Option<String>,
    /// Output file (.safetensors).
    #[arg(long = "out")]
    out_file: PathBuf,
}

/// Caches the (filtered) activations and writes them with the logits and tokens.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let re = a
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--filter is not a valid regular expression")?;
    let m = a.p.model.load()?;
    let toks = m.to_tokens(&a.p.prompt)?;
    let (logits, cache) =
        m.run_with_cache_filtered(&toks, |n: &str| re.as_ref().is_none_or(|r| r.is_match(n)))?;
    if cache.is_empty() {
        anyhow::bail!(
            "--filter {:?} matches no hook point; run `mechinterp hooks` to list them",
            a.filter.unwrap_or_default()
        );
    }
    cache.save_safetensors(&a.out_file, &[("logits", &logits), ("tokens", &toks)])?;
    writeln!(
        out,
        "wrote {} activations + logits + tokens ({:.1} MiB) to {}",
        cache.len(),
        cache.size_bytes() as f64 / 1048576.0,
        a.out_file.display()
    )?;
    Ok(())
}
