//! The translation benchmark: translation and random-control scores of every head.

use anyhow::Result;
use mechinterp::model::HookedTransformer;
use mechinterp::translation::{prompt, score_heads, ScoreOptions, SentencePair};

use crate::flops::block_flops;
use crate::timing::{time, Timing};

/// Translation and random-control scores of every head over `n_pairs` EN→FR pairs, reported
/// per 100 pairs.
pub fn translation(
    model: &HookedTransformer,
    repeats: usize,
    pairs: &[SentencePair],
    n_pairs: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let pairs: Vec<SentencePair> = pairs.iter().take(n_pairs.max(1)).cloned().collect();
    let opts = ScoreOptions {
        quiet: true,
        ..Default::default()
    };
    let ntok: usize = pairs
        .iter()
        .map(|p| {
            model
                .to_tokens(&prompt("en", "fr", p))
                .map(|t| t.dim(1).unwrap_or(0))
        })
        .sum::<mechinterp::Result<usize>>()?;
    let n = pairs.len();
    let scale = 100.0 / n as f64;
    let secs = time(repeats.clamp(1, 3), || {
        score_heads(model, &pairs, "en", "fr", &opts)
    })?;
    let avg = ntok / n;
    out.push(Timing {
        name: "translation_scores".into(),
        seconds: secs.iter().map(|t| t * scale).collect(),
        tokens: 2.0 * ntok as f64 * scale,
        flops: 2.0 * block_flops(cfg, avg, 100, 0),
        note: if n >= 100 {
            format!("{n} pairs: translation and random prompts, patterns only (no logits)")
        } else {
            format!("100 pairs, scaled from {n} timed: translation and random prompts, patterns only (no logits)")
        },
    });
    Ok(())
}
