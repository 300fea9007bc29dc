//! `mechinterp-bench`: time the library's main operations on one model, optionally beside
//! HF transformers and TransformerLens in the same run. Numbers, never assertions. A binary of
//! its own, for developers: the `mechinterp` binary users run carries none of it.

mod compare;
mod flops;
mod forward;
mod generation;
mod patching;
mod python;
mod report;
mod sae;
mod sets;
mod timing;
mod translation;
mod weights;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mechinterp::translation::{load_pairs, shipped_data_dir};
use mechinterp_cli::args::{write_json, ModelArgs};

use python::Baseline;
use timing::Memory;

/// Benchmark a model: forward, cache, patching, attribution, generation, translation scores.
#[derive(Parser)]
#[command(name = "mechinterp-bench", version)]
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
    /// Which operations: `full`; `weights` (forward, head sweep, attribution, translation
    /// scores: what depends on how the weights are held); `scale` (forward and translation
    /// scores, for big models).
    #[arg(long, value_enum, default_value = "full")]
    set: sets::Set,
    /// Translation pairs to time (the time is reported per 100, scaled when fewer).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Compare ways of holding a GGUF file's weights, e.g. `f32,stream,quantized`: each is
    /// benchmarked in its own process (load time, peak RSS, the `weights` set), then, when f32
    /// is among them, the others' deviation from it is measured on real prompts.
    #[arg(long, value_delimiter = ',')]
    compare_weights: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse(), &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmarks, prints the table and the same-run ratios, writes JSON.
fn run(a: Args, out: &mut impl Write) -> Result<()> {
    if !a.compare_weights.is_empty() {
        return weights::compare(&a, out);
    }
    // Everything the baseline needs is checked before minutes of benchmarks.
    let baseline = checked_baseline(&a)?;
    let t0 = std::time::Instant::now();
    let m = a.model.load()?;
    let load_s = t0.elapsed().as_secs_f64();
    let loaded = Memory::now();
    let pairs = load_pairs(shipped_data_dir(), "en", "fr")?;
    let (timings, peak) = sets::run(&m, a.repeats, &pairs, a.set, a.pairs)?;
    let (table, mut j) = report::report(&timings, peak);
    let end = Memory::now();
    let memory = format!(
        "weights held as {} ({} MB); load {load_s:.2} s; RSS after load {} MB (peak {} MB), peak over the run {} MB\n\n",
        m.weight_mode().name(),
        m.weight_bytes() >> 20,
        loaded.rss_mb,
        loaded.peak_mb,
        end.peak_mb
    );
    write!(out, "{memory}{table}")?;
    j["load_s"] = serde_json::json!(load_s);
    j["weight_mode"] = serde_json::json!(m.weight_mode().name());
    j["weight_mb"] = serde_json::json!(m.weight_bytes() >> 20);
    j["rss_after_load_mb"] = serde_json::json!(loaded.rss_mb);
    j["peak_rss_after_load_mb"] = serde_json::json!(loaded.peak_mb);
    j["peak_rss_mb"] = serde_json::json!(end.peak_mb);
    out.flush()?;
    let raw = match &baseline {
        Some(b) => Some(python::python_baseline(b)?),
        None => None,
    };
    let (text, ratios) = compare::compare(&m, &timings, raw.as_ref())?;
    write!(out, "{text}")?;
    if let Some(raw) = raw {
        j["baseline"] = raw;
    }
    j["ratios"] = ratios;
    write_json(&a.json, &j)
}

/// The Python baseline `--baseline-python` asks for, checked: a GGUF model both sides can load
/// and a Python that can import what the baseline needs.
fn checked_baseline(a: &Args) -> Result<Option<Baseline>> {
    let Some(python) = &a.baseline_python else {
        return Ok(None);
    };
    let gguf = match a.model.model.as_str() {
        "gemma3-270m" => mechinterp::fetch::default_model_path(),
        p if p.ends_with(".gguf") => p.into(),
        p => anyhow::bail!(
            "the Python baseline loads a GGUF file; {p} is not one (use the default model or a .gguf)"
        ),
    };
    python::check_baseline_python(python)?;
    Ok(Some(Baseline {
        python: python.clone(),
        gguf,
        repeats: a.repeats,
        skip_sweep: a.baseline_skip_sweep,
    }))
}
