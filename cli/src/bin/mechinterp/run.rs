//! `mechinterp run`: the top-k next tokens for a prompt, with probabilities.

use std::io::Write;

use anyhow::Result;
use mechinterp::prelude::*;

use mechinterp_cli::args::PromptArgs;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PromptArgs,
    /// How many tokens to show.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
}

/// Runs the prompt once and prints the most likely next tokens.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let m = a.p.model.load()?;
    let toks = m.to_tokens(&a.p.prompt)?;
    let s = toks.dim(1)?;
    let t0 = std::time::Instant::now();
    let logits = m.forward(&toks)?;
    let dt = t0.elapsed();
    let last = logits.i((0, s - 1))?;
    let probs = candle_nn::ops::softmax(&last, D::Minus1)?.to_vec1::<f32>()?;
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let tok = m.tokenizer()?;
    writeln!(
        out,
        "prompt: {:?} ({s} tokens, forward {:.3} s)",
        a.p.prompt,
        dt.as_secs_f64()
    )?;
    writeln!(out, "{:>4}  {:>8}  {:>7}  token", "rank", "id", "prob")?;
    for (r, &i) in idx.iter().take(a.top_k).enumerate() {
        writeln!(
            out,
            "{:>4}  {:>8}  {:>7.4}  {:?}",
            r + 1,
            i,
            probs[i],
            tok.token_str(i as u32)
        )?;
    }
    Ok(())
}
