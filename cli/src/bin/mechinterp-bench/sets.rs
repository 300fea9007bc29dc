//! Which operations each benchmark set times (`--set full|weights|scale|sae|graph`), on the
//! benchmark's prompt pair (the graph set on its own prompts).

use std::path::Path;

use anyhow::Result;
use mechinterp::metrics::LogitDiff;
use mechinterp::model::HookedTransformer;
use mechinterp::patching::Patcher;
use mechinterp::translation::SentencePair;

use crate::flops::sgemm_peak;
use crate::graph::GraphRun;
use crate::timing::Timing;
use crate::{forward, generation, graph, patching, sae, translation};

/// The benchmark's prompt pair (40 tokens each on the default model's tokenizer).
pub const CLEAN: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to their small house by the quiet river, John gave a warm drink to";
/// The corrupted prompt.
pub const CORRUPT: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to their small house by the quiet river, Mary gave a warm drink to";

/// Which operations to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Set {
    /// Everything.
    Full,
    /// What differs between ways of holding the weights: the forward, the 72-head sweep,
    /// attribution and translation scores.
    Weights,
    /// For big models: the forward and translation scores only (use `--pairs` to time a few
    /// pairs and scale to 100).
    Scale,
    /// SAE training only: the activation store, one TopK step, training tokens/s.
    Sae,
    /// Attribution graphs only: attribute + prune on 20 and 30 tokens, with peak RSS (and
    /// circuit-tracer beside them with `--baseline-python`).
    Graph,
}

/// Runs the benchmarks; `pairs` are the sentence pairs for translation scoring, of which
/// `n_pairs` are run (the time is reported for 100, scaled when fewer were run); graphs use
/// the transcoder set at `graph_transcoders`. Returns the timings in the report's order, the
/// machine's matmul peak (GFLOP/s) and the graphs' runs.
pub fn run(
    model: &HookedTransformer,
    repeats: usize,
    pairs: &[SentencePair],
    set: Set,
    n_pairs: usize,
    graph_transcoders: &Path,
) -> Result<(Vec<Timing>, f64, Vec<GraphRun>)> {
    let toks = model.to_tokens(CLEAN)?;
    // The prompt is 40 tokens with the default model's tokenizer; another tokenizer may cut it
    // finer, so the scale set times its first 40 tokens.
    let toks = match set {
        Set::Scale => toks.narrow(1, 0, toks.dim(1)?.min(40))?,
        _ => toks,
    };
    let s = toks.dim(1)?;
    let mut out = Vec::new();
    let peak = sgemm_peak(repeats.max(5))?;
    if set == Set::Sae {
        sae::sae_training(model, repeats, &mut out)?;
        return Ok((out, peak, Vec::new()));
    }
    if set == Set::Graph {
        let runs = graph::graphs(model, repeats, graph_transcoders, &mut out)?;
        return Ok((out, peak, runs));
    }
    forward::plain(model, repeats, &toks, &mut out)?;
    if set == Set::Full {
        forward::cache_and_patch(model, repeats, &toks, &mut out)?;
    }
    if set != Set::Scale {
        let metric = LogitDiff::from_strs(model, " Mary", " John")?;
        let p = Patcher::new(model, CLEAN, CORRUPT, metric)?.quiet(true);
        patching::head_sweep(model, &p, repeats, &mut out)?;
        if set == Set::Full {
            patching::naive_sweep(model, &mut out)?;
        }
        patching::attribution(model, &p, repeats, s, &mut out)?;
    }
    if set == Set::Full {
        forward::long_prompt(model, repeats, &mut out)?;
    }
    if set != Set::Scale {
        let rows: &[usize] = if set == Set::Full { &[1, 4] } else { &[1] };
        generation::generation(model, repeats, s, rows, &mut out)?;
    }
    translation::translation(model, repeats, pairs, n_pairs, &mut out)?;
    let mut runs = Vec::new();
    if set == Set::Full {
        sae::sae_training(model, repeats, &mut out)?;
        // An installed binary has no fixture transcoders: the full set goes on without graphs.
        if graph_transcoders.join("config.yaml").is_file() {
            runs = graph::graphs(model, repeats, graph_transcoders, &mut out)?;
        } else {
            eprintln!(
                "graphs skipped: no transcoder set at {} (pass --graph-transcoders)",
                graph_transcoders.display()
            );
        }
    }
    Ok((out, peak, runs))
}
