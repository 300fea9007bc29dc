//! `mechinterp-bench`: time the library's main operations on one model, optionally beside
//! HF transformers and TransformerLens in the same run. Numbers, never assertions. A binary of
//! its own, for developers: the `mechinterp` binary users run carries none of it.

mod compare;
mod ct;
mod flops;
mod forward;
mod generation;
mod graph;
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
    /// scores, for big models); `sae` (SAE training); `graph` (attribution graphs, with
    /// circuit-tracer 0.5.0 beside them when `--baseline-python` has it).
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
    /// The graph set's transcoders, circuit-tracer's per-layer format (default: the fixture
    /// set of this source tree, tests/fixtures/graph/transcoders).
    #[arg(long)]
    graph_transcoders: Option<PathBuf>,
    /// circuit-tracer's model: the default model as a local HF folder with a transformers-4
    /// config (scripts/make_graph_fixture.py --steps model makes it).
    #[arg(long, default_value = "~/.cache/ct-gemma3-270m")]
    ct_hf_dir: String,
    /// circuit-tracer's `batch_size`. Its default, 512, held 16 GB for the default model's
    /// 20-token graph and took 4× longer than 64 (3.7–4 GB) on 2 cores
    /// (tests/fixtures/graph/README.md), so the bench uses 64 unless told.
    #[arg(long, default_value_t = 64)]
    ct_batch_size: usize,
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
    // Everything the baselines need is checked before minutes of benchmarks.
    let baseline = if a.set == sets::Set::Graph {
        None
    } else {
        checked_baseline(&a)?
    };
    let graph_tc = a
        .graph_transcoders
        .clone()
        .unwrap_or_else(graph::default_transcoders);
    let ct = checked_ct(&a)?;
    let t0 = std::time::Instant::now();
    let m = a.model.load()?;
    let load_s = t0.elapsed().as_secs_f64();
    let loaded = Memory::now();
    let pairs = load_pairs(shipped_data_dir(), "en", "fr")?;
    let (timings, peak, graphs) = sets::run(&m, a.repeats, &pairs, a.set, a.pairs, &graph_tc)?;
    let (table, mut j) = report::report(&timings, peak);
    let mut end = Memory::now();
    // The graph set resets VmHWM per prompt; the run's peak is the most seen before any reset.
    end.peak_mb = graphs
        .iter()
        .map(|g| g.hwm_before_mb.max(g.peak_mb))
        .fold(end.peak_mb, u64::max);
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
    if !graphs.is_empty() {
        let theirs = match ct {
            Some(Ok(b)) => {
                let prompts: Vec<Vec<u32>> = graphs.iter().map(|g| g.tokens.clone()).collect();
                match ct::run(&b, &graph_tc, &prompts) {
                    Ok(v) => Some(v),
                    Err(e) if a.set == sets::Set::Graph => return Err(e),
                    Err(e) => Some(serde_json::json!({ "skipped": format!("{e:#}") })),
                }
            }
            Some(Err(why)) => Some(serde_json::json!({ "skipped": why })),
            None => None,
        };
        let (text, rows) = graph::side_by_side(&graphs, theirs.as_ref());
        write!(out, "{text}")?;
        j["graph"] = rows;
    }
    write_json(&a.json, &j)
}

/// circuit-tracer's baseline for the graph set, when `--baseline-python` is given: Ok when that
/// Python can run it, Err(why not) when it cannot (an error for `--set graph`, a note in the
/// report for `--set full`).
fn checked_ct(a: &Args) -> Result<Option<std::result::Result<ct::CtBaseline, String>>> {
    let Some(python) = &a.baseline_python else {
        return Ok(None);
    };
    if !matches!(a.set, sets::Set::Graph | sets::Set::Full) {
        return Ok(None);
    }
    let hf_dir = match a.ct_hf_dir.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(&a.ct_hf_dir),
    };
    if a.ct_batch_size == 0 {
        anyhow::bail!("--ct-batch-size must be at least 1");
    }
    match ct::why_not(python, &hf_dir) {
        None => Ok(Some(Ok(ct::CtBaseline {
            python: python.clone(),
            hf_dir,
            batch_size: a.ct_batch_size,
        }))),
        Some(why) if a.set == sets::Set::Graph => anyhow::bail!(why),
        Some(why) => Ok(Some(Err(why))),
    }
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
