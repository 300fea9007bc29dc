//! `mechinterp generate`: continue a prompt with the KV cache, greedy or sampled.

use std::io::Write;

use anyhow::Result;
use mechinterp::prelude::*;

use mechinterp_cli::args::PromptArgs;

/// Arguments of `generate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PromptArgs,
    /// At most this many new tokens.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sample at this temperature (omit for greedy decoding).
    #[arg(long)]
    temperature: Option<f64>,
    /// With --temperature: keep only the k most likely tokens.
    #[arg(long, requires = "temperature")]
    top_k: Option<usize>,
    /// With --temperature: keep the most likely tokens up to this total probability.
    #[arg(long, requires = "temperature")]
    top_p: Option<f64>,
    /// With --temperature: the sampling seed.
    #[arg(long, default_value_t = 0, requires = "temperature")]
    seed: u64,
    /// Stop once the output contains this string (repeatable), e.g. --stop $'\n'.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

/// Prints the continuation, then one line with the count, the reason it stopped and the speed.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let m = a.p.model.load()?;
    let sampling = match a.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
    };
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        stop: a.stop,
        stop_at_eos: !a.ignore_eos,
        keep_logits: false,
    };
    let t0 = std::time::Instant::now();
    let g = m.generate(&a.p.prompt, &opts)?;
    let dt = t0.elapsed().as_secs_f64();
    writeln!(out, "{}{}", a.p.prompt, g.text)?;
    let mean_lp = g.logprobs.iter().sum::<f32>() / g.logprobs.len().max(1) as f32;
    writeln!(
        out,
        "[{} prompt tokens, {} new, stopped: {:?}, mean log-prob {mean_lp:.3}, {:.2} s, {:.1} tokens/s]",
        g.prompt.len(),
        g.tokens.len(),
        g.stop,
        dt,
        g.tokens.len() as f64 / dt
    )?;
    Ok(())
}
