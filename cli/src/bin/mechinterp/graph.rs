//! `mechinterp graph`: the attribution graph of a prompt with the model's MLPs replaced by
//! transcoders (circuit-tracer's method), written as `graph.json` (circuit-tracer's frontend
//! JSON, pruned), `graph.safetensors` (the unpruned graph under circuit-tracer's field names)
//! and `graph.html` (one offline page to explore it); prints the graph scores, the node and
//! edge counts before and after pruning, and the time each step took.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mechinterp::corpus::{Corpus, Split};
use mechinterp::graph::{
    attribute, graph_scores, load_transcoders, prune, AttributionOptions, Transcoders,
};
use mechinterp::report::graph_html::{GraphPage, GraphView, ViewKind};
use mechinterp::sae::dashboard::{dashboard, DashboardOptions, Dashboards};

use mechinterp_cli::args::PromptArgs;

/// Arguments of `graph`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    prompt: PromptArgs,
    /// The transcoders: a folder in circuit-tracer's per-layer format (config.yaml +
    /// layer_{i}.safetensors), or a folder of one SAELens transcoder folder per layer.
    #[arg(long, value_name = "DIR")]
    transcoders: PathBuf,
    /// Attribute this token's logit instead of the most likely ones (one token, e.g. " Paris");
    /// repeatable. As circuit-tracer's `attribution_targets`: exactly these logit nodes, each
    /// with its own probability.
    #[arg(long, value_name = "TOKEN")]
    target: Vec<String>,
    /// Keep only this many feature nodes, chosen by estimated influence (default: all active).
    #[arg(long, value_name = "N")]
    max_feature_nodes: Option<usize>,
    /// Logit nodes until their cumulative probability reaches this (default 0.95; not with
    /// --target).
    #[arg(long, conflicts_with = "target")]
    desired_logit_prob: Option<f32>,
    /// At most this many logit nodes (default 10; not with --target).
    #[arg(long, conflicts_with = "target")]
    max_n_logits: Option<usize>,
    /// Pruning: keep nodes up to this cumulative influence.
    #[arg(long, default_value_t = 0.8)]
    node_threshold: f32,
    /// Pruning: keep edges up to this cumulative influence.
    #[arg(long, default_value_t = 0.98)]
    edge_threshold: f32,
    /// Show each kept feature's top activating contexts on the page, from a pass over this
    /// text (a .txt, .tsv or .jsonl file or a folder of them); given without a value, the
    /// shipped corpus's held-out text, shuffled with a fixed seed.
    #[arg(long, value_name = "CORPUS", num_args = 0..=1)]
    dashboards: Option<Option<PathBuf>>,
    /// With --dashboards: read at most this many tokens (one pass per layer with kept
    /// features, up to that layer: 1024 tokens take about 4 s per layer on two cores with the
    /// default model).
    #[arg(long, default_value_t = 1024)]
    dashboard_tokens: usize,
    /// Backward targets per pass (memory: targets × positions × d_model floats).
    #[arg(long, default_value_t = 32)]
    chunk: usize,
    /// The folder to write graph.json, graph.safetensors and graph.html into (created).
    #[arg(long)]
    out: PathBuf,
}

/// Builds, prunes and writes the graph.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    if !a.prompt.model.sae.is_empty() {
        bail!("--sae splices an SAE into every pass; a graph replaces the MLPs with --transcoders DIR instead: drop --sae");
    }
    if !(0.0..=1.0).contains(&a.node_threshold) || !(0.0..=1.0).contains(&a.edge_threshold) {
        bail!(
            "--node-threshold ({}) and --edge-threshold ({}) must be between 0 and 1",
            a.node_threshold,
            a.edge_threshold
        );
    }
    // The transcoders first: a wrong folder fails before the model loads.
    let t = Instant::now();
    let tc = load_transcoders(&a.transcoders)?;
    let t_tc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let model = a.prompt.model.load()?;
    let t_model = t.elapsed().as_secs_f64();

    let n_layers = model.cfg().n_layers;
    if tc.n_layers() != n_layers {
        bail!(
            "--transcoders {}: it has transcoders for {} layers, but the model has {n_layers}; a graph needs one per layer",
            a.transcoders.display(),
            tc.n_layers()
        );
    }
    match tc.per_layer() {
        Some(p) => {
            for s in p.saes() {
                s.check_fits(&model)
                    .with_context(|| format!("--transcoders {}", a.transcoders.display()))?;
            }
        }
        None if tc.d_model() != model.cfg().d_model => bail!(
            "--transcoders {}: the cross-layer transcoder reads width {}, but the model's residual stream has width {}: it was made for another model",
            a.transcoders.display(),
            tc.d_model(),
            model.cfg().d_model
        ),
        None => {}
    }

    let tok = model.tokenizer()?;
    let targets = if a.target.is_empty() {
        None
    } else {
        let mut ids = Vec::new();
        for s in &a.target {
            match tok.encode(s, false)?.as_slice() {
                [id] => ids.push(*id),
                [] => bail!("--target {s:?} is no token at all; give one token (e.g. \" Paris\")"),
                many => bail!(
                    "--target {s:?} is {} tokens ({}); a logit node is one token: give a single token",
                    many.len(),
                    many.iter().map(|&t| format!("{:?}", tok.token_str(t))).collect::<Vec<_>>().join(" + ")
                ),
            }
        }
        Some(ids)
    };
    let tokens = model.encode(&a.prompt.prompt)?;
    if tokens.len() < 2 {
        bail!(
            "the prompt {:?} gives {} token(s); a graph needs at least one token after BOS",
            a.prompt.prompt,
            tokens.len()
        );
    }
    let defaults = AttributionOptions::default();
    let opts = AttributionOptions {
        max_feature_nodes: a.max_feature_nodes,
        desired_logit_prob: a.desired_logit_prob.unwrap_or(defaults.desired_logit_prob),
        max_n_logits: a.max_n_logits.unwrap_or(defaults.max_n_logits),
        chunk: a.chunk,
        targets,
        ..defaults
    };
    let t = Instant::now();
    let graph = attribute(&model, &tokens, &tc, &opts)?;
    let t_graph = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (replacement, completeness) = graph_scores(&graph)?;
    let pruned = prune(&graph, a.node_threshold, a.edge_threshold)?;
    let view = GraphView::new(&graph, &pruned)?;
    let t_prune = t.elapsed().as_secs_f64();

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let scan = a
        .transcoders
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| a.transcoders.display().to_string());
    let slug = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "graph".into());
    let t = Instant::now();
    graph.save_safetensors(a.out.join("graph.safetensors"))?;
    graph.write_pruned_json(
        a.out.join("graph.json"),
        &slug,
        &scan,
        &pruned,
        a.node_threshold,
    )?;
    let t_write = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let dashboards = match &a.dashboards {
        None => Vec::new(),
        Some(p) => {
            let Some(per_layer) = tc.per_layer() else {
                bail!(
                    "--dashboards: feature dashboards are made per layer's transcoder; --transcoders {} is a cross-layer transcoder, so leave --dashboards out",
                    a.transcoders.display()
                );
            };
            feature_dashboards(&model, per_layer, &view, p.as_deref(), a.dashboard_tokens)?
        }
    };
    let t_dash = t.elapsed().as_secs_f64();

    let n = graph.n_nodes();
    let n_edges = graph.adjacency.iter().filter(|&&x| x != 0.0).count();
    let (nf, ne, nt, nl) = view.counts();
    let logits: Vec<String> = graph
        .logit_token_strs
        .iter()
        .zip(&graph.logit_probabilities)
        .map(|(t, p)| format!("{t:?} {p:.3}"))
        .collect();
    let mut page = GraphPage::from_view(&graph, &view)
        .title(&format!("Attribution graph: {}", a.prompt.prompt))
        .note(&format!(
            "replacement score {replacement:.4}, completeness {completeness:.4} · logit nodes: {}{}",
            logits.join(", "),
            if a.target.is_empty() { "" } else { " (chosen with --target)" }
        ))
        .note(&format!(
            "transcoders {} · unpruned {n} nodes ({} features), {n_edges} edges · pruned at node threshold {}, edge threshold {}",
            a.transcoders.display(),
            graph.selected_features.len(),
            a.node_threshold,
            a.edge_threshold
        ));
    for (l, d) in &dashboards {
        page = page.dashboards(*l, d);
    }
    let t = Instant::now();
    page.write(a.out.join("graph.html"))?;
    let t_html = t.elapsed().as_secs_f64();

    writeln!(
        out,
        "prompt: {} tokens; logit nodes: {}",
        graph.n_pos(),
        logits.join(", ")
    )?;
    writeln!(
        out,
        "graph scores: replacement {replacement:.4}, completeness {completeness:.4}"
    )?;
    writeln!(
        out,
        "nodes: {n} ({} features, {} errors, {} tokens, {} logits) → {} after pruning ({nf} features, {ne} errors, {nt} tokens, {nl} logits)",
        graph.selected_features.len(),
        graph.n_layers * graph.n_pos(),
        graph.n_pos(),
        graph.logit_tokens.len(),
        view.nodes.len()
    )?;
    writeln!(out, "edges: {n_edges} → {} after pruning", view.edges.len())?;
    writeln!(
        out,
        "time: model {t_model:.2} s, transcoders {t_tc:.2} s, graph {t_graph:.2} s, scores and pruning {t_prune:.2} s, files {t_write:.2} s, dashboards {t_dash:.2} s, page {t_html:.2} s"
    )?;
    writeln!(
        out,
        "wrote {}, {} and {}",
        a.out.join("graph.json").display(),
        a.out.join("graph.safetensors").display(),
        a.out.join("graph.html").display()
    )?;
    Ok(())
}

/// Dashboards of the kept features, one corpus pass per layer that has any (each pass stops
/// after its layer).
fn feature_dashboards(
    model: &mechinterp::prelude::HookedTransformer,
    tc: &mechinterp::graph::PerLayer,
    view: &GraphView,
    corpus: Option<&std::path::Path>,
    tokens: usize,
) -> Result<Vec<(usize, Dashboards)>> {
    let corpus = match corpus {
        // Shuffled so that a token budget samples every language, not the first ones.
        None => Corpus::shipped(Split::HeldOut)?.shuffled(0),
        Some(p) => Corpus::from_path(p).with_context(|| format!("--dashboards {}", p.display()))?,
    };
    let opts = DashboardOptions {
        n_top: 6,
        window: 8,
        n_logits: 6,
        max_tokens: Some(tokens),
        ..DashboardOptions::default()
    };
    let mut by_layer: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for n in view.nodes.iter().filter(|n| n.kind == ViewKind::Feature) {
        if let Some(f) = n.feature {
            by_layer.entry(n.row - 1).or_default().push(f);
        }
    }
    let mut out = Vec::new();
    for (l, mut feats) in by_layer {
        feats.sort_unstable();
        feats.dedup();
        let d = dashboard(model, &tc.saes()[l], &feats, corpus.texts(), &opts)?;
        out.push((l, d));
    }
    Ok(out)
}
