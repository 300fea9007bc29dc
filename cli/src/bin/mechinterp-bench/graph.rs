//! The attribution-graph benchmark (issue 25, item 6): circuit-tracer's graph (`attribute`,
//! then `prune` to 0.8 / 0.98) of the default model on a 20- and a 30-token prompt with the
//! fixture transcoders (tests/fixtures/graph/transcoders, read by `load_transcoders`), and
//! the process's peak memory during each: VmHWM of /proc/self/status, reset to the current
//! RSS (`echo 5 > /proc/self/clear_refs`) before the prompt's runs, so it is the most the
//! process held at once while building that graph, weights included.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mechinterp::graph::{attribute, load_transcoders, prune, AttributionOptions, Transcoders};
use mechinterp::model::HookedTransformer;
use serde_json::{json, Value};

use crate::timing::{Memory, Timing};

/// scripts/circuit_tracer_bench.py's prompt: 20 tokens with BOS.
pub const PROMPT_20: &str =
    "English: I like green apples and red cherries.\nFrench: J'aime les pommes vertes";
/// A longer one, cut to 30 tokens with BOS.
pub const PROMPT_30: &str = "English: I like green apples and red cherries, and my little sister likes yellow bananas a lot.\nFrench: J'aime les pommes vertes";

/// The prompts timed: (tokens wanted, text).
pub const PROMPTS: [(usize, &str); 2] = [(20, PROMPT_20), (30, PROMPT_30)];

/// The fixture transcoders in this source tree (the benchmark is a developer's tool).
pub fn default_transcoders() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests/fixtures/graph/transcoders")
}

/// One prompt's graph, ours.
#[derive(Debug, Clone)]
pub struct GraphRun {
    /// The prompt's ids (BOS first), as both sides are given them.
    pub tokens: Vec<u32>,
    /// Median seconds of `attribute` alone.
    pub attribute_s: f64,
    /// Median seconds of `attribute` + `prune`.
    pub total_s: f64,
    /// RSS before the prompt's runs, MB.
    pub rss_before_mb: u64,
    /// VmHWM over the prompt's runs, MB.
    pub peak_mb: u64,
    /// The process's VmHWM just before it was reset for this prompt, MB.
    pub hwm_before_mb: u64,
    /// Active features, nodes and logit targets of the graph.
    pub n_features: usize,
    /// Nodes.
    pub n_nodes: usize,
    /// Logit targets.
    pub n_logits: usize,
}

impl GraphRun {
    /// The JSON object of this run.
    pub fn to_json(&self) -> Value {
        json!({
            "n_tokens": self.tokens.len(), "tokens": self.tokens,
            "attribute_s": self.attribute_s, "graph_s": self.total_s,
            "rss_before_mb": self.rss_before_mb, "peak_rss_mb": self.peak_mb,
            "n_features": self.n_features, "n_nodes": self.n_nodes, "n_logits": self.n_logits,
        })
    }
}

/// Resets the process's VmHWM to its current RSS (Linux); false where that is not allowed.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Times both prompts' graphs (`repeats` runs each after a warm-up, at most 3).
pub fn graphs(
    model: &HookedTransformer,
    repeats: usize,
    transcoders: &Path,
    out: &mut Vec<Timing>,
) -> Result<Vec<GraphRun>> {
    let tc = load_transcoders(transcoders).with_context(|| {
        format!(
            "reading {} (pass --graph-transcoders DIR; the benchmark uses \
             tests/fixtures/graph/transcoders of a source checkout)",
            transcoders.display()
        )
    })?;
    if tc.n_layers() != model.cfg().n_layers {
        bail!(
            "{} holds {} transcoders, the model has {} layers: the graph set is for the \
             default model (or pass --graph-transcoders for this one)",
            transcoders.display(),
            tc.n_layers(),
            model.cfg().n_layers
        );
    }
    let opts = AttributionOptions::default();
    let mut runs = Vec::new();
    for (want, text) in PROMPTS {
        let mut toks = model.encode(text)?;
        toks.truncate(want);
        let hwm_before = Memory::now().peak_mb;
        let reset = reset_peak();
        let before = Memory::now();
        let mut last = None;
        let mut attr = Vec::new();
        let mut total = Vec::new();
        for i in 0..=repeats.clamp(1, 3) {
            let t0 = Instant::now();
            let g = attribute(model, &toks, &tc, &opts)?;
            let ta = t0.elapsed().as_secs_f64();
            prune(&g, 0.8, 0.98)?;
            let tt = t0.elapsed().as_secs_f64();
            // The first run is the warm-up.
            if i > 0 {
                attr.push(ta);
                total.push(tt);
            }
            last = Some(g);
        }
        let g = last.context("no graph was built")?;
        let peak = Memory::now().peak_mb;
        let run = GraphRun {
            tokens: toks.clone(),
            attribute_s: mechinterp::stats::median(&attr),
            total_s: mechinterp::stats::median(&total),
            rss_before_mb: before.rss_mb,
            peak_mb: if reset { peak } else { 0 },
            hwm_before_mb: hwm_before,
            n_features: g.selected_features.len(),
            n_nodes: g.n_nodes(),
            n_logits: g.logit_tokens.len(),
        };
        out.push(Timing {
            name: format!("graph_{}_tokens", toks.len()),
            seconds: total,
            tokens: toks.len() as f64,
            flops: 0.0,
            note: format!(
                "attribution graph (attribute + prune 0.8/0.98): {} features, {} nodes, {} logits; attribute alone {:.2} s; peak RSS {} MB (VmHWM reset before the prompt's runs; {} MB before)",
                run.n_features,
                run.n_nodes,
                run.n_logits,
                run.attribute_s,
                run.peak_mb,
                run.rss_before_mb
            ),
        });
        runs.push(run);
    }
    Ok(runs)
}

/// The side-by-side section: ours and circuit-tracer's (when it ran) per prompt.
pub fn side_by_side(ours: &[GraphRun], theirs: Option<&Value>) -> (String, Value) {
    let mut s = String::from("\nattribution graphs (attribute + prune; peak RSS = VmHWM reset before each prompt, whole process):\n");
    let ct_runs = theirs.and_then(|t| t["runs"].as_array());
    if let Some(t) = theirs {
        s.push_str(&format!(
            "circuit-tracer {} (nnsight backend, torch {}, batch_size {}, {} threads, CPU f32; model load {:.1} s, warm-up {:.1} s)\n",
            t["versions"]["circuit-tracer"].as_str().unwrap_or("?"),
            t["versions"]["torch"].as_str().unwrap_or("?"),
            t["batch_size"],
            t["threads"],
            t["load_seconds"].as_f64().unwrap_or(f64::NAN),
            t["warm_up_seconds"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    s.push_str(&format!(
        "{:<8} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "tokens",
        "feats",
        "nodes",
        "ours s",
        "theirs s",
        "ours/thrs",
        "ours MB",
        "theirs MB",
        "ours/thrs"
    ));
    let mut rows = Vec::new();
    for (i, o) in ours.iter().enumerate() {
        let t = ct_runs.and_then(|r| r.get(i));
        let ts = t.and_then(|t| t["graph_seconds"].as_f64());
        let tm = t
            .and_then(|t| t["attribute_peak_rss_bytes"].as_f64())
            .map(|b| b / 1048576.0);
        let fmt = |x: Option<f64>, p: usize| x.map_or("-".into(), |x| format!("{x:.p$}"));
        s.push_str(&format!(
            "{:<8} {:>6} {:>6} {:>10.2} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            o.tokens.len(),
            o.n_features,
            o.n_nodes,
            o.total_s,
            fmt(ts, 2),
            fmt(ts.map(|t| o.total_s / t), 3),
            o.peak_mb,
            fmt(tm, 0),
            fmt(tm.map(|m| o.peak_mb as f64 / m), 3),
        ));
        if let Some(t) = t {
            let same_tokens = t["tokens"].as_array().is_some_and(|v| {
                v.iter()
                    .map(|x| x.as_u64().unwrap_or(u64::MAX))
                    .eq(o.tokens.iter().map(|&i| i as u64))
            });
            let same_nodes = t["n_nodes"].as_u64() == Some(o.n_nodes as u64);
            if !same_tokens || !same_nodes {
                s.push_str(&format!(
                    "  (not the same graph: same tokens {same_tokens}, nodes {} vs ours {})\n",
                    t["n_nodes"], o.n_nodes
                ));
            }
        }
        let mut j = o.to_json();
        if let Some(t) = t {
            j["circuit_tracer"] = t.clone();
            if let Some(ts) = ts {
                j["ours_over_circuit_tracer"] = json!(o.total_s / ts);
            }
        }
        rows.push(j);
    }
    if let Some(e) = theirs.and_then(|t| t["skipped"].as_str()) {
        s.push_str(&format!("circuit-tracer skipped: {e}\n"));
    }
    (s, json!(rows))
}
