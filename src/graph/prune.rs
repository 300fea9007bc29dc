//! circuit-tracer's `graph.py` on our dense adjacency: `normalize_matrix`, the influence sums
//! `w·A + w·A² + …`, `prune_graph` (nodes to cumulative influence 0.8, edges to 0.98, then
//! nodes without outgoing or incoming edges removed until none is left), its
//! `compute_graph_scores` (replacement and completeness) and the partial influences that rank
//! features for `max_feature_nodes`.

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Rows of |A| divided by their sums (clamped below at `eps`), n × n row-major.
fn normalize(a: &[f32], n_cols: usize, eps: f32) -> Vec<f32> {
    let mut out: Vec<f32> = a.iter().map(|x| x.abs()).collect();
    for row in out.chunks_mut(n_cols) {
        let s: f32 = row.iter().sum::<f32>().max(eps);
        row.iter_mut().for_each(|x| *x /= s);
    }
    out
}

/// `v · A` for A [rows, n_cols] row-major.
fn vec_mat(v: &[f32], a: &[f32], n_cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; n_cols];
    for (i, &w) in v.iter().enumerate() {
        if w != 0.0 {
            let row = &a[i * n_cols..(i + 1) * n_cols];
            out.iter_mut().zip(row).for_each(|(o, x)| *o += w * x);
        }
    }
    out
}

/// circuit-tracer's `compute_influence`: Σ_{k≥1} w·Aᵏ (A nilpotent, as a DAG's is).
fn influence(a: &[f32], n: usize, w: &[f32]) -> Result<Vec<f32>> {
    let mut cur = vec_mat(w, a, n);
    let mut total = cur.clone();
    let mut it = 0;
    while cur.iter().any(|&x| x != 0.0) {
        if it >= 1000 {
            return Err(Error::Invalid(
                "influence did not converge after 1000 iterations (the graph has a cycle)".into(),
            ));
        }
        cur = vec_mat(&cur, a, n);
        total.iter_mut().zip(&cur).for_each(|(t, c)| *t += c);
        it += 1;
    }
    Ok(total)
}

/// circuit-tracer's `find_threshold`: the score at which the largest scores reach `threshold`
/// of the total.
fn find_threshold(scores: &[f32], threshold: f32) -> f32 {
    let mut sorted: Vec<f32> = scores.iter().copied().filter(|&x| x != 0.0).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().map(|&x| x as f64).sum();
    let mut cum = 0f64;
    for &x in &sorted {
        cum += x as f64;
        if (cum / total) as f32 >= threshold {
            return x;
        }
    }
    // Past the non-zero scores: torch's sorted tail is zeros (or the last score when none is).
    if sorted.len() == scores.len() {
        sorted.last().copied().unwrap_or(0.0)
    } else {
        0.0
    }
}

/// What [`prune`] keeps.
#[derive(Debug, Clone)]
pub struct PruneResult {
    /// Per node, whether it is kept.
    pub node_mask: Vec<bool>,
    /// Per edge [target × source], whether it is kept (n × n row-major).
    pub edge_mask: Vec<bool>,
    /// Per node, the cumulative share of influence up to and including it (by influence).
    pub cumulative_scores: Vec<f32>,
}

fn logit_weights(g: &Graph) -> Vec<f32> {
    let n = g.n_nodes();
    let mut w = vec![0f32; n];
    let k = g.logit_probabilities.len();
    w[n - k..].copy_from_slice(&g.logit_probabilities);
    w
}

/// circuit-tracer's `prune_graph` (its defaults: 0.8 and 0.98).
pub fn prune(g: &Graph, node_threshold: f32, edge_threshold: f32) -> Result<PruneResult> {
    for (name, t) in [
        ("node_threshold", node_threshold),
        ("edge_threshold", edge_threshold),
    ] {
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::Invalid(format!(
                "{name} must be between 0.0 and 1.0, got {t}"
            )));
        }
    }
    let n = g.n_nodes();
    let n_tokens = g.input_tokens.len();
    let n_logits = g.logit_tokens.len();
    let n_features = g.selected_features.len();
    let w = logit_weights(g);
    let node_infl = influence(&normalize(&g.adjacency, n, 1e-10), n, &w)?;
    let th = find_threshold(&node_infl, node_threshold);
    let mut node_mask: Vec<bool> = node_infl.iter().map(|&x| x >= th).collect();
    node_mask[n - n_logits - n_tokens..]
        .iter_mut()
        .for_each(|m| *m = true);

    let mut pruned = g.adjacency.clone();
    for (i, row) in pruned.chunks_mut(n).enumerate() {
        if !node_mask[i] {
            row.iter_mut().for_each(|x| *x = 0.0);
        } else {
            row.iter_mut()
                .zip(&node_mask)
                .filter(|(_, &m)| !m)
                .for_each(|(x, _)| *x = 0.0);
        }
    }
    let norm = normalize(&pruned, n, 1e-10);
    drop(pruned);
    let mut infl = influence(&norm, n, &w)?;
    infl.iter_mut().zip(&w).for_each(|(i, w)| *i += w);
    let scores: Vec<f32> = norm
        .chunks(n)
        .zip(&infl)
        .flat_map(|(row, &f)| row.iter().map(move |x| x * f))
        .collect();
    drop(norm);
    let eth = find_threshold(&scores, edge_threshold);
    let mut edge_mask: Vec<bool> = scores.iter().map(|&x| x >= eth).collect();
    drop(scores);

    let keep_edges = |node_mask: &mut Vec<bool>, edge_mask: &[bool]| {
        let end = n - n_logits - n_tokens;
        // Feature and error nodes need an outgoing edge (a column entry).
        let mut has_out = vec![false; n];
        for row in edge_mask.chunks(n) {
            for (j, &e) in row[..end].iter().enumerate() {
                has_out[j] |= e;
            }
        }
        for j in 0..end {
            node_mask[j] &= has_out[j];
        }
        // Feature nodes need an incoming edge (a row entry).
        for i in 0..n_features {
            node_mask[i] &= edge_mask[i * n..(i + 1) * n].iter().any(|&e| e);
        }
    };
    let mut old = node_mask.clone();
    keep_edges(&mut node_mask, &edge_mask);
    while node_mask != old {
        old.clone_from(&node_mask);
        for i in 0..n {
            for j in 0..n {
                if !node_mask[i] || !node_mask[j] {
                    edge_mask[i * n + j] = false;
                }
            }
        }
        keep_edges(&mut node_mask, &edge_mask);
    }

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| node_infl[b].total_cmp(&node_infl[a]));
    let total: f64 = node_infl.iter().map(|&x| x as f64).sum();
    let mut cum = 0f64;
    let mut cumulative_scores = vec![0f32; n];
    for &i in &order {
        cum += node_infl[i] as f64;
        cumulative_scores[i] = (cum / total) as f32;
    }
    Ok(PruneResult {
        node_mask,
        edge_mask,
        cumulative_scores,
    })
}

/// circuit-tracer's `compute_graph_scores`: (replacement score, completeness score).
pub fn graph_scores(g: &Graph) -> Result<(f32, f32)> {
    let n = g.n_nodes();
    let n_features = g.selected_features.len();
    let n_tokens = g.input_tokens.len();
    let error_start = n_features;
    let error_end = error_start + n_tokens * g.n_layers;
    let token_end = error_end + n_tokens;
    let w = logit_weights(g);
    let norm = normalize(&g.adjacency, n, 1e-10);
    let infl = influence(&norm, n, &w)?;
    let token: f32 = infl[error_end..token_end].iter().sum();
    let error: f32 = infl[error_start..error_end].iter().sum();
    let replacement = token / (token + error);
    let (mut num, mut den) = (0f32, 0f32);
    for (i, row) in norm.chunks(n).enumerate() {
        let non_error = 1.0 - row[error_start..error_end].iter().sum::<f32>();
        let out = infl[i] + w[i];
        num += non_error * out;
        den += out;
    }
    Ok((replacement, num / den))
}

/// circuit-tracer's `compute_partial_influences`: the influence of every node (`n_nodes`
/// columns; `rows` has `n_cols` ≤ n_nodes of them, the rest zero) on the logits, through the
/// rows computed so far (`row_node[r]` is row r's node; the logits are the last nodes).
pub fn partial_influences(
    rows: &[f32],
    n_cols: usize,
    logit_p: &[f32],
    row_node: &[usize],
    n_nodes: usize,
) -> Result<Vec<f32>> {
    let norm = normalize(rows, n_cols, 1e-8);
    let mut infl = vec![0f32; n_nodes];
    let mut prod = vec![0f32; n_nodes];
    prod[n_nodes - logit_p.len()..].copy_from_slice(logit_p);
    for _ in 0..128 {
        let w: Vec<f32> = row_node.iter().map(|&i| prod[i]).collect();
        let next = vec_mat(&w, &norm, n_cols);
        prod.iter_mut().for_each(|x| *x = 0.0);
        prod[..n_cols].copy_from_slice(&next);
        if prod.iter().all(|&x| x == 0.0) {
            return Ok(infl);
        }
        infl.iter_mut().zip(&prod).for_each(|(i, p)| *i += p);
    }
    Err(Error::Invalid(
        "partial influences did not converge in 128 iterations".into(),
    ))
}
