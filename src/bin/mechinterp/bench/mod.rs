//! `mechinterp bench`: time the library's main operations on one model, optionally beside
//! HF transformers and TransformerLens in the same run. Numbers, never assertions.

mod harness;
mod python;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mechinterp::translation::{load_pairs, shipped_data_dir};

use crate::args::{write_json, ModelArgs};
use python::Baseline;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Repeats per operation (after one warm-up).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Write the numbers as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also time HF transformers and TransformerLens in the same run, with this Python
    /// (it needs torch, transformers and gguf; transformer_lens is optional).
    #[arg(long)]
    baseline_python: Option<PathBuf>,
    /// Skip TransformerLens's 72-head sweep in the baseline (it takes minutes).
    #[arg(long)]
    baseline_skip_sweep: bool,
}

/// Runs the benchmarks, prints the table and the same-run ratios, writes JSON.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    // Everything the baseline needs is checked before minutes of benchmarks.
    let baseline = match a.baseline_python {
        Some(python) => {
            let gguf = match a.model.model.as_str() {
                "gemma3-270m" => mechinterp::fetch::default_model_path(),
                p if p.ends_with(".gguf") => p.into(),
                p => anyhow::bail!(
                    "the Python baseline loads a GGUF file; {p} is not one (use the default model or a .gguf)"
                ),
            };
            python::check_baseline_python(&python)?;
            Some(Baseline {
                python,
                gguf,
                repeats: a.repeats,
                skip_sweep: a.baseline_skip_sweep,
            })
        }
        None => None,
    };
    let m = a.model.load()?;
    let pairs = load_pairs(shipped_data_dir(), "en", "fr")?;
    let (timings, peak) = harness::run(&m, a.repeats, &pairs)?;
    let (table, mut j) = harness::report(&timings, peak);
    write!(out, "{table}")?;
    out.flush()?;
    let raw = match &baseline {
        Some(b) => Some(python::python_baseline(b)?),
        None => None,
    };
    let (text, ratios) = harness::compare(&m, &timings, raw.as_ref())?;
    write!(out, "{text}")?;
    if let Some(raw) = raw {
        j["baseline"] = raw;
    }
    j["ratios"] = ratios;
    write_json(&a.json, &j)
}
