//! `mechinterp translation-heads`: the main job. Scores, random control, statistics, causal
//! check and the report, for every direction asked for.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::translation::{parse_direction, shipped_data_dir, CausalOptions, RunOptions};

use mechinterp_cli::args::ModelArgs;

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
    /// How heads are chosen: `paired` (per-source differences, found on one half, confirmed
    /// on the other) or `original` (the study's pooled statistics and random pairing, exactly).
    #[arg(long, default_value = "paired", value_parser = ["paired", "original"])]
    method: String,
    /// The smallest paired difference in mean diagonal attention that counts as an effect.
    #[arg(long, default_value_t = 0.02)]
    min_effect: f32,
    /// Share of sources held out to confirm the heads found on the rest; 0 turns the split off
    /// (for small data sets; nothing is then confirmed).
    #[arg(long, default_value_t = 0.5)]
    split: f32,
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
    // Checked before minutes of model loading.
    let method = a.method.parse()?;
    anyhow::ensure!(
        (0.0..1.0).contains(&a.split),
        "--split {} must be in [0, 1): the share of sources held out for confirmation",
        a.split
    );
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
    opts.method = method;
    opts.split = a.split;
    opts.min_effect = a.min_effect;
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
        let (what, heads): (&str, Vec<String>) = match &r.selection {
            Some(sel) => (
                "confirmed translation heads",
                sel.confirmed
                    .iter()
                    .take(8)
                    .map(|f| format!("{}.{} ({:+.3})", f.layer, f.head, f.diff))
                    .collect(),
            ),
            None => (
                "heads at FDR (original)",
                r.fdr_heads
                    .iter()
                    .take(8)
                    .map(|(l, h, d)| format!("{l}.{h} ({d:+.3})"))
                    .collect(),
            ),
        };
        writeln!(
            out,
            "{}→{}: {} pairs; {what}: {}{}",
            r.src,
            r.tgt,
            r.n_pairs,
            if heads.is_empty() {
                "none".to_string()
            } else {
                heads.join(", ")
            },
            if r.complete() {
                ""
            } else {
                " (INCOMPLETE: see the report)"
            }
        )?;
    }
    writeln!(
        out,
        "report: {} ({:.0} s)",
        report.display(),
        t0.elapsed().as_secs_f64()
    )?;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.complete())
        .map(|r| format!("{}→{}", r.src, r.tgt))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "the run is incomplete: stages failed for {} (causes in the report and above)",
        failed.join(", ")
    );
    Ok(())
}
