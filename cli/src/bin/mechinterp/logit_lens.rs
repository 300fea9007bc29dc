//! `mechinterp logit-lens`: top tokens per layer at one position, and given tokens' probabilities.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::prelude::*;
use serde_json::json;

use mechinterp_cli::args::{write_json, PromptArgs};

/// Arguments of `logit-lens`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PromptArgs,
    /// Position to read (default: the last).
    #[arg(long)]
    pos: Option<usize>,
    /// Tokens whose probability to track (each must be one token, e.g. " Paris").
    #[arg(long, num_args = 1..)]
    tokens: Vec<String>,
    /// Top tokens per layer.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Reads the residual stream through the unembedding at every layer.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let m = a.p.model.load()?;
    let lens = LogitLens::new(&m, &a.p.prompt)?;
    let pos = a.pos.unwrap_or(lens.n_positions() - 1);
    let top = lens.top_k(pos, a.top_k)?;
    writeln!(
        out,
        "logit lens at position {pos} ({:?})",
        lens.str_tokens.get(pos).cloned().unwrap_or_default()
    )?;
    for (label, row) in lens.layer_labels.iter().zip(&top) {
        let cells: Vec<String> = row.iter().map(|(t, p)| format!("{t:?} {p:.3}")).collect();
        writeln!(out, "{label:>11}  {}", cells.join("  "))?;
    }
    let mut j = json!({
        "prompt": a.p.prompt,
        "position": pos,
        "str_tokens": lens.str_tokens,
        "layers": lens.layer_labels,
        "top_k": top.iter().map(|r| r.iter().map(|(t, p)| json!({"token": t, "prob": p})).collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    if !a.tokens.is_empty() {
        let ids = a
            .tokens
            .iter()
            .map(|t| mechinterp::metrics::single_token(&m, t))
            .collect::<mechinterp::Result<Vec<_>>>()?;
        let probs = lens.probs(pos, &ids)?;
        write!(out, "{probs}")?;
        j["probs"] = probs.to_json();
    }
    write_json(&a.json, &j)
}
