//! `mechinterp translation-heads`: the main job. Scores, random control, statistics, causal
//! check and the report, for every direction asked for.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::translation::{parse_direction, shipped_data_dir, CausalOptions, RunOptions};

use crate::args::ModelArgs;

/// Arguments of `translation-heads`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Directions, comma-separated (default: every direction the data supports).
    #[arg(long, value_delimiter = ',')]
    pairs: Vec<String>,
    /// Folder of `{src}-{tgt}.tsv` sentence pairs (default: the project's data/).
    #[arg(long)]
    data: Option<PathBuf>,
    /// At most this many pairs per direction (after the filter).
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = "results/translation-heads")]
    out: PathBuf,
    /// False-discovery rate for the head lists.
    #[arg(long, default_value_t = 0.05)]
    fdr: f32,
    /// Permutations for the p-values.
    #[arg(long, default_value_t = 10000)]
    permutations: usize,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Sentence pairs in the ablation check.
    #[arg(long, default_value_t = 12)]
    causal_pairs: usize,
    /// Random head sets in the ablation check.
    #[arg(long, default_value_t = 19)]
    random_draws: usize,
    /// Prompt pairs for path patching.
    #[arg(long, default_value_t = 4)]
    path_pairs: usize,
    /// Skip the ablation check and path patching.
    #[arg(long)]
    no_causal: bool,
    /// Prompts per batched forward.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

/// Runs every direction, writes the report and prints each direction's heads.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let t0 = std::time::Instant::now();
    let m = a.model.load()?;
    let mut opts = RunOptions::new(a.data.unwrap_or_else(shipped_data_dir), a.out);
    if !a.pairs.is_empty() {
        opts.directions = a
            .pairs
            .iter()
            .map(|p| parse_direction(p))
            .collect::<mechinterp::Result<_>>()?;
    }
    opts.limit = a.limit;
    opts.fdr = a.fdr;
    opts.n_perm = a.permutations;
    opts.n_boot = a.bootstrap;
    opts.model_name = a.model.model.clone();
    opts.score.batch = a.batch;
    opts.score.quiet = a.quiet;
    opts.causal = (!a.no_causal).then(|| CausalOptions {
        pairs: a.causal_pairs,
        random_draws: a.random_draws,
        path_pairs: a.path_pairs,
        quiet: a.quiet,
        ..Default::default()
    });
    let (results, report) = mechinterp::report::run(&m, &opts)?;
    for r in &results {
        let heads: Vec<String> = r
            .fdr_heads
            .iter()
            .take(8)
            .map(|(l, h, d)| format!("{l}.{h} ({d:+.3})"))
            .collect();
        writeln!(
            out,
            "{}→{}: {} pairs; heads at FDR {}: {}",
            r.src,
            r.tgt,
            r.n_pairs,
            opts.fdr,
            if heads.is_empty() {
                "none".to_string()
            } else {
                heads.join(", ")
            }
        )?;
    }
    writeln!(
        out,
        "report: {} ({:.0} s)",
        report.display(),
        t0.elapsed().as_secs_f64()
    )?;
    Ok(())
}
