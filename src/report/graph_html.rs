//! An attribution graph as one offline page (`mechinterp graph` writes `graph.html`): the pruned
//! graph laid out by layer (rows: embeddings at the bottom, then layers, logits at the top) and
//! position (columns, the prompt's tokens along the bottom), edges coloured by sign with width
//! by their share of the target's input; hover a node for its label, activation and influence,
//! click it to pin it and light up its strongest paths down to the tokens and up to the logits;
//! a feature's top activating contexts show beside it when dashboards are given. CSS, script
//! and data are inline and nothing is fetched, so the file opens anywhere.
//!
//! [`GraphView`] (which nodes and edges are drawn, and where) is shared with the static picture
//! for notebooks, so both show the same layout.
//!
//! The page reads `#pin=NODE_ID` (a circuit-tracer node id, as in `graph.json`) on load and
//! clicks that node, so a headless browser can check that a click answers: the pinned node gets
//! the class `pinned` and the drawing `data-highlighted-edges`.

use super::dashboard_html::escape;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::graph::{Graph, PruneResult};
use crate::sae::dashboard::Dashboards;

/// Width of the row labels on the left.
const LEFT: f32 = 64.0;
/// Space above the logit row, for its rotated labels.
const TOP: f32 = 96.0;
/// Space below the embedding row, for the prompt's tokens.
const BOTTOM: f32 = 64.0;
/// Horizontal step between nodes of one cell.
const DX: f32 = 13.0;
/// Horizontal step between logit nodes.
const DX_LOGIT: f32 = 40.0;
/// Nodes per line in a cell before it wraps onto another line.
const PER_LINE: usize = 16;
/// Vertical step between the lines of a wrapped cell.
const DY_LINE: f32 = 11.0;
/// Height of a row with one line of nodes.
const ROW: f32 = 34.0;
/// Narrowest column.
const MIN_COL: f32 = 72.0;

/// What a drawn node is: the page's own kind, with serde names for its script (a graph node itself is [`crate::graph::NodeKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewKind {
    /// A transcoder feature.
    Feature,
    /// A layer's reconstruction error at a position.
    Error,
    /// An input token's embedding.
    Token,
    /// A logit target.
    Logit,
}

/// A node as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct ViewNode {
    /// Its index in the graph's node order.
    pub node: usize,
    /// circuit-tracer's node id, as in `graph.json`.
    pub id: String,
    /// What it is.
    pub kind: ViewKind,
    /// Its row: 0 the embeddings, `l + 1` layer `l`, `n_layers + 1` the logits.
    pub row: usize,
    /// Its position in the prompt.
    pub pos: usize,
    /// The feature's index in its layer's transcoder (features only).
    pub feature: Option<usize>,
    /// A short label: `L{layer}/F{feature}@{pos}`, `err L{layer}@{pos}`, the token.
    pub label: String,
    /// The feature's activation (features only).
    pub activation: Option<f32>,
    /// circuit-tracer's cumulative influence score (smaller: more influential; 1 for logits).
    pub influence: f32,
    /// The logit's probability (logits only).
    pub prob: Option<f32>,
    /// The token it stands for (tokens and logits).
    pub token: Option<String>,
    /// Centre, in pixels.
    pub x: f32,
    /// Centre, in pixels.
    pub y: f32,
}

/// An edge as drawn: `weight` is the direct effect of `source` on `target` (indices into
/// [`GraphView::nodes`]); `share` is |weight| over the sum of |weights| into the target in the
/// unpruned graph (what pruning ranks by).
#[derive(Debug, Clone, Serialize)]
pub struct ViewEdge {
    /// Source, an index into the view's nodes.
    pub source: usize,
    /// Target, an index into the view's nodes.
    pub target: usize,
    /// The adjacency entry.
    pub weight: f32,
    /// Its share of the target's input.
    pub share: f32,
}

/// The pruned graph laid out: the nodes and edges `graph.json` holds, with positions.
#[derive(Debug, Clone, Serialize)]
pub struct GraphView {
    /// Kept nodes: features and errors with a kept edge, every token and every logit.
    pub nodes: Vec<ViewNode>,
    /// Kept edges between them.
    pub edges: Vec<ViewEdge>,
    /// Drawing width, in pixels.
    pub width: f32,
    /// Drawing height, in pixels.
    pub height: f32,
    /// Each row's centre line (index: row).
    pub row_y: Vec<f32>,
    /// Each row's height.
    pub row_h: Vec<f32>,
    /// Each row's label (`emb`, `L0`…, `logit`).
    pub row_labels: Vec<String>,
    /// Each position's column: (left edge, width).
    pub columns: Vec<(f32, f32)>,
    /// The prompt's tokens.
    pub tokens: Vec<String>,
}

/// A token made visible: newlines and tabs as arrows, an empty one as ∅.
pub fn show_token(t: &str) -> String {
    if t.is_empty() {
        return "∅".into();
    }
    t.replace('\n', "↵").replace('\t', "→")
}

impl GraphView {
    /// The view of `graph` pruned as `pruned` says (both from [`crate::graph::prune`]).
    pub fn new(graph: &Graph, pruned: &PruneResult) -> Result<GraphView> {
        let n = graph.n_nodes();
        if pruned.node_mask.len() != n || pruned.edge_mask.len() != n * n {
            return Err(Error::Shape(format!(
                "the pruning result is for a graph of {} nodes, this graph has {n}: prune this graph",
                pruned.node_mask.len()
            )));
        }
        let n_feat = graph.selected_features.len();
        let (s, nl) = (graph.n_pos(), graph.n_layers);
        let token_start = n_feat + nl * s;
        let logit_start = token_start + s;
        let kept = kept_nodes(graph, pruned);
        let mut nodes: Vec<ViewNode> = Vec::new();
        let mut index = vec![usize::MAX; n];
        for i in (0..n).filter(|&i| kept[i]) {
            index[i] = nodes.len();
            nodes.push(describe(graph, pruned, i, n_feat, token_start, logit_start));
        }
        let mut edges = Vec::new();
        for dst in (0..n).filter(|&i| kept[i]) {
            let row = &graph.adjacency[dst * n..(dst + 1) * n];
            let total: f32 = row.iter().map(|x| x.abs()).sum::<f32>().max(1e-10);
            for src in (0..n).filter(|&j| kept[j] && pruned.edge_mask[dst * n + j]) {
                edges.push(ViewEdge {
                    source: index[src],
                    target: index[dst],
                    weight: row[src],
                    share: row[src].abs() / total,
                });
            }
        }
        let mut v = GraphView {
            nodes,
            edges,
            width: 0.0,
            height: 0.0,
            row_y: Vec::new(),
            row_h: Vec::new(),
            row_labels: std::iter::once("emb".to_string())
                .chain((0..nl).map(|l| format!("L{l}")))
                .chain(std::iter::once("logit".to_string()))
                .collect(),
            columns: Vec::new(),
            tokens: graph.input_token_strs.clone(),
        };
        v.layout(nl + 2, s);
        Ok(v)
    }

    /// Places the nodes: each (row, position) cell's nodes side by side, most influential
    /// first, wrapping onto more lines when there are many; columns as wide as their widest
    /// cell, rows as tall as their most wrapped cell.
    fn layout(&mut self, n_rows: usize, s: usize) {
        let mut cells: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (i, nd) in self.nodes.iter().enumerate() {
            cells.entry((nd.row, nd.pos)).or_default().push(i);
        }
        let logit_row = n_rows - 1;
        let step = |row: usize| if row == logit_row { DX_LOGIT } else { DX };
        let per_line = |row: usize| {
            if row == logit_row {
                usize::MAX
            } else {
                PER_LINE
            }
        };
        let mut col_w = vec![MIN_COL; s];
        let mut lines = vec![1usize; n_rows];
        for (&(row, pos), members) in &cells {
            let across = members.len().min(per_line(row));
            col_w[pos] = col_w[pos].max(across as f32 * step(row) + 16.0);
            lines[row] = lines[row].max(members.len().div_ceil(per_line(row)));
        }
        let mut x = LEFT;
        self.columns = col_w
            .iter()
            .map(|&w| {
                let c = (x, w);
                x += w;
                c
            })
            .collect();
        // Room on the right for the last logits' slanted labels.
        self.width = x + 80.0;
        // Rows from the top: logits first, embeddings last.
        let mut y = TOP;
        let mut row_y = vec![0f32; n_rows];
        let row_h: Vec<f32> = lines
            .iter()
            .map(|&l| ROW + (l - 1) as f32 * DY_LINE)
            .collect();
        for row in (0..n_rows).rev() {
            row_y[row] = y + row_h[row] / 2.0;
            y += row_h[row];
        }
        self.height = y + BOTTOM;
        self.row_y = row_y;
        self.row_h = row_h;
        for (&(row, pos), members) in &mut cells {
            let nodes = &self.nodes;
            members.sort_by(|&a, &b| {
                let key = |i: usize| (nodes[i].kind == ViewKind::Error, nodes[i].influence);
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
            });
            let (left, w) = self.columns[pos];
            let pl = per_line(row);
            let n_lines = members.len().div_ceil(pl);
            for (k, &i) in members.iter().enumerate() {
                let (line, at) = (k / pl, k % pl);
                let in_line = (members.len() - line * pl).min(pl);
                let x0 = left + w / 2.0 - (in_line as f32 - 1.0) * step(row) / 2.0;
                let y0 = self.row_y[row] - (n_lines as f32 - 1.0) * DY_LINE / 2.0;
                self.nodes[i].x = x0 + at as f32 * step(row);
                self.nodes[i].y = y0 + line as f32 * DY_LINE;
            }
        }
    }

    /// Number of nodes of each kind: (features, errors, tokens, logits).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let c = |k: ViewKind| self.nodes.iter().filter(|n| n.kind == k).count();
        (
            c(ViewKind::Feature),
            c(ViewKind::Error),
            c(ViewKind::Token),
            c(ViewKind::Logit),
        )
    }
}

/// The nodes `graph.json` keeps: in the node mask and on a kept edge, or a token or logit.
fn kept_nodes(g: &Graph, pr: &PruneResult) -> Vec<bool> {
    let n = g.n_nodes();
    let first_token = g.selected_features.len() + g.n_layers * g.n_pos();
    let mut linked = vec![false; n];
    for dst in (0..n).filter(|&i| pr.node_mask[i]) {
        for src in (0..n).filter(|&j| pr.node_mask[j] && pr.edge_mask[dst * n + j]) {
            linked[src] = true;
            linked[dst] = true;
        }
    }
    (0..n)
        .map(|i| i >= first_token || (pr.node_mask[i] && linked[i]))
        .collect()
}

/// Node `i`'s description, without its position on the page.
fn describe(
    g: &Graph,
    pr: &PruneResult,
    i: usize,
    n_feat: usize,
    token_start: usize,
    logit_start: usize,
) -> ViewNode {
    let s = g.n_pos();
    let mut v = ViewNode {
        node: i,
        id: String::new(),
        kind: ViewKind::Feature,
        row: 0,
        pos: 0,
        feature: None,
        label: String::new(),
        activation: None,
        influence: pr.cumulative_scores[i],
        prob: None,
        token: None,
        x: 0.0,
        y: 0.0,
    };
    if i < n_feat {
        let a = g.selected_features[i] as usize;
        let [l, p, f] = g.active_features[a];
        v.id = format!("{l}_{f}_{p}");
        v.row = l as usize + 1;
        v.pos = p as usize;
        v.feature = Some(f as usize);
        v.label = format!("L{l}/F{f}@{p}");
        v.activation = Some(g.activation_values[a]);
    } else if i < token_start {
        let (l, p) = ((i - n_feat) / s, (i - n_feat) % s);
        v.kind = ViewKind::Error;
        v.id = format!("0_{l}_{p}");
        v.row = l + 1;
        v.pos = p;
        v.label = format!("err L{l}@{p}");
    } else if i < logit_start {
        let p = i - token_start;
        let tok = g.input_token_strs.get(p).cloned().unwrap_or_default();
        v.kind = ViewKind::Token;
        v.id = format!("E_{}_{p}", g.input_tokens[p]);
        v.pos = p;
        v.label = format!("{}@{p}", show_token(&tok));
        v.token = Some(tok);
    } else {
        let k = i - logit_start;
        let tok = g.logit_token_strs.get(k).cloned().unwrap_or_default();
        let p = g.logit_probabilities[k];
        v.kind = ViewKind::Logit;
        v.id = format!("{}_{}_{}", g.n_layers + 1, g.logit_tokens[k], s - 1);
        v.row = g.n_layers + 1;
        v.pos = s - 1;
        v.label = format!("{} (p={p:.3})", show_token(&tok));
        v.prob = Some(p);
        v.token = Some(tok);
        v.influence = 1.0;
    }
    v
}

/// The page for a graph and its pruning, with optional feature dashboards and header lines.
#[derive(Debug, Clone)]
pub struct GraphPage<'a> {
    graph: &'a Graph,
    view: Layout<'a>,
    title: String,
    notes: Vec<String>,
    dashboards: BTreeMap<usize, &'a Dashboards>,
}

/// What the page draws: a view to lay out from the pruning, or one already laid out.
#[derive(Debug, Clone, Copy)]
enum Layout<'a> {
    Pruned(&'a PruneResult),
    View(&'a GraphView),
}

impl<'a> GraphPage<'a> {
    /// A page for `graph` pruned as `pruned` says.
    pub fn new(graph: &'a Graph, pruned: &'a PruneResult) -> GraphPage<'a> {
        GraphPage {
            graph,
            view: Layout::Pruned(pruned),
            title: "Attribution graph".into(),
            notes: Vec::new(),
            dashboards: BTreeMap::new(),
        }
    }

    /// A page drawing `view`, a [`GraphView`] of `graph` already made (so that a caller who
    /// needs the view too lays it out once).
    pub fn from_view(graph: &'a Graph, view: &'a GraphView) -> GraphPage<'a> {
        GraphPage {
            graph,
            view: Layout::View(view),
            title: "Attribution graph".into(),
            notes: Vec::new(),
            dashboards: BTreeMap::new(),
        }
    }

    /// The page's heading.
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_string();
        self
    }

    /// A line of text under the heading (scores, thresholds, timing).
    pub fn note(mut self, line: &str) -> Self {
        self.notes.push(line.to_string());
        self
    }

    /// Dashboards of layer `layer`'s transcoder: its features' top contexts show when they are
    /// hovered or pinned.
    pub fn dashboards(mut self, layer: usize, d: &'a Dashboards) -> Self {
        self.dashboards.insert(layer, d);
        self
    }

    /// The page as HTML text.
    pub fn html(&self) -> Result<String> {
        let laid_out;
        let view = match self.view {
            Layout::View(v) => v,
            Layout::Pruned(p) => {
                laid_out = GraphView::new(self.graph, p)?;
                &laid_out
            }
        };
        let mut features = serde_json::Map::new();
        for (i, nd) in view.nodes.iter().enumerate() {
            let (Some(f), ViewKind::Feature) = (nd.feature, nd.kind) else {
                continue;
            };
            let Some(d) = self.dashboards.get(&(nd.row - 1)).and_then(|d| d.get(f)) else {
                continue;
            };
            features.insert(
                i.to_string(),
                json!({
                    "density": d.density,
                    "max": d.max_act,
                    "top": d.top.iter().take(6).map(|c| json!({
                        "act": c.act, "centre": c.centre, "tokens": c.tokens, "acts": c.acts,
                    })).collect::<Vec<_>>(),
                    "boosted": d.boosted.iter().take(6).map(|e| (&e.token, e.value)).collect::<Vec<_>>(),
                }),
            );
        }
        let (nf, ne, nt, nlg) = view.counts();
        // Edges as [source, target, weight, share] rows: a big graph has tens of thousands.
        let edges: Vec<[f32; 4]> = view
            .edges
            .iter()
            .map(|e| [e.source as f32, e.target as f32, e.weight, e.share])
            .collect();
        let mut view_json = serde_json::to_value(view)
            .map_err(|e| Error::Invalid(format!("could not write the graph page's data: {e}")))?;
        view_json["edges"] = json!(edges);
        let data = json!({
            "view": view_json,
            "features": features,
            "prompt": self.graph.input_string,
        });
        // In a script element "</script>" or "<!--" would end or change it; JSON strings may
        // hold any character escaped, so no '<' is left.
        let data = data.to_string().replace('<', "\\u003c");
        let mut notes = String::new();
        for l in &self.notes {
            let _ = write!(notes, "<div class=\"note\">{}</div>", escape(l));
        }
        let summary = format!(
            "{nf} features, {ne} error nodes, {nt} tokens, {nlg} logits; {} edges (pruned graph)",
            view.edges.len()
        );
        let title = escape(&self.title);
        let prompt = escape(&show_token(&self.graph.input_string));
        let dash = if self.dashboards.is_empty() {
            "no dashboards (run with --dashboards to see each feature's top contexts)"
        } else {
            "features show their top activating contexts"
        };
        Ok(format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header><h1>{title}</h1><div class=\"prompt\"><code>{prompt}</code></div>{notes}<div class=\"note\">{summary}; {dash}</div>{LEGEND}</header>\n<main><div id=\"canvas\"></div><aside id=\"panel\"><div id=\"pinned\"><p class=\"hint\">Hover a node for its label; click it to pin it and light up its strongest paths (click it again, the background or press Esc to unpin).</p></div></aside></main>\n<div id=\"tip\"></div>\n<script type=\"application/json\" id=\"graph-data\">{data}</script>\n<script>{JS}</script>\n</body>\n</html>\n"
        ))
    }

    /// Writes [`GraphPage::html`] to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let p = path.as_ref();
        std::fs::write(p, self.html()?)
            .map_err(|e| Error::io(format!("writing the graph page {}", p.display()), e))
    }
}

const LEGEND: &str = r#"<div class="legend"><span><i class="sw feat"></i>feature</span><span><i class="sw err"></i>error</span><span><i class="sw tok"></i>token</span><span><i class="sw logit"></i>logit</span><span><i class="ln pos"></i>positive edge</span><span><i class="ln neg"></i>negative edge</span><span>width: share of the target's input</span><label>edges <select id="edges"><option value="all">all</option></select></label><label>zoom <select id="zoom"><option value="fit">fit width</option><option value="0.5">50%</option><option value="0.75">75%</option><option value="1" selected="selected">100%</option><option value="1.5">150%</option></select></label></div>"#;

const CSS: &str = r#"
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #222; background: #fafafa; }
header { padding: 10px 18px 6px; border-bottom: 1px solid #ddd; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; }
.prompt code { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f2f2f2; padding: 1px 4px; border-radius: 3px; white-space: pre-wrap; }
.note { color: #555; margin-top: 3px; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; align-items: center; margin-top: 6px; color: #444; }
.legend .sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; border: 1px solid #555; }
.legend .sw.feat { background: #f3b562; border-radius: 50%; }
.legend .sw.err { background: #bbb; }
.legend .sw.tok { background: #dbe8f5; }
.legend .sw.logit { background: #a8dba8; }
.legend .ln { display: inline-block; width: 22px; height: 3px; margin-right: 4px; vertical-align: 3px; }
.legend .ln.pos { background: #2166ac; }
.legend .ln.neg { background: #d6604d; }
main { display: flex; align-items: flex-start; }
#canvas { flex: 1 1 auto; overflow: auto; max-height: calc(100vh - 120px); background: #fff; }
#panel { flex: 0 0 360px; max-height: calc(100vh - 120px); overflow: auto; padding: 8px 12px; border-left: 1px solid #ddd; background: #fff; box-sizing: border-box; }
#panel h2 { font-size: 15px; margin: 2px 0 4px; }
#panel h3 { font-size: 13px; margin: 10px 0 3px; color: #333; }
#panel .hint, #panel .muted { color: #777; }
#panel .row { display: flex; justify-content: space-between; gap: 8px; cursor: pointer; padding: 1px 2px; border-radius: 3px; }
#panel .row:hover { background: #eef3fa; }
#panel .w.pos { color: #2166ac; } #panel .w.neg { color: #b2382a; }
.ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; line-height: 1.8; white-space: nowrap; overflow-x: auto; border-bottom: 1px solid #f0f0f0; }
.ctx .v { display: inline-block; min-width: 3.6em; color: #555; text-align: right; margin-right: 6px; }
.ctx .t { white-space: pre; border-radius: 2px; }
.ctx .t.max { outline: 1.5px solid #a04a00; }
#tip { position: fixed; pointer-events: none; background: rgba(30,30,30,0.92); color: #fff; padding: 5px 8px; border-radius: 4px; font-size: 12px; display: none; max-width: 360px; z-index: 5; white-space: pre-line; }
svg.graph { display: block; }
svg.graph .rowlabel { font-size: 11px; fill: #666; }
svg.graph .band { fill: #f6f6f6; }
svg.graph .toklabel { font-size: 12px; fill: #222; font-family: ui-monospace, Menlo, Consolas, monospace; }
svg.graph .logitlabel { font-size: 11px; fill: #222; }
svg.graph .edge { fill: none; }
svg.graph .node { cursor: pointer; }
svg.graph .node .shape { stroke: #555; stroke-width: 0.8; }
svg.graph .node.feature .shape { fill: #f3b562; }
svg.graph .node.error .shape { fill: #bbb; }
svg.graph .node.token .shape { fill: #dbe8f5; }
svg.graph .node.logit .shape { fill: #a8dba8; }
svg.graph .node:hover .shape { stroke: #000; stroke-width: 2; }
svg.graph .edge.weak { display: none; }
svg.graph .edge.weak.hl { display: inline; }
svg.graph.focus .edge { opacity: 0.03 !important; }
svg.graph.focus .edge.hl { opacity: 0.9 !important; }
svg.graph.focus .node { opacity: 0.25; }
svg.graph.focus .node.onpath, svg.graph.focus .node.pinned { opacity: 1; }
svg.graph .node.pinned .shape { stroke: #000; stroke-width: 2.5; }
"#;

const JS: &str = r##"
(function() {
  "use strict";
  const D = JSON.parse(document.getElementById("graph-data").textContent);
  const V = D.view, N = V.nodes;
  const E = V.edges.map(r => ({ source: r[0], target: r[1], weight: r[2], share: r[3] }));
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, parent) => {
    const el = document.createElementNS(NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  };
  const show = t => (t === "" ? "\u2205" : t.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192"));
  const fmt = v => (v === null || v === undefined) ? "\u2013"
    : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)) ? v.toExponential(2) : v.toFixed(3);
  const svg = mk("svg", { width: V.width, height: V.height, viewBox: "0 0 " + V.width + " " + V.height, "class": "graph" });
  document.getElementById("canvas").appendChild(svg);
  const grid = mk("g", { "class": "grid" }, svg);
  V.row_y.forEach((y, r) => {
    if (r % 2 === 1) mk("rect", { x: 0, y: y - V.row_h[r] / 2, width: V.width, height: V.row_h[r], "class": "band" }, grid);
    const t = mk("text", { x: 8, y: y + 4, "class": "rowlabel" }, grid);
    t.textContent = V.row_labels[r];
  });
  const maxChars = w => Math.max(3, Math.floor((w - 6) / 7.2));
  V.columns.forEach((c, p) => {
    const t = mk("text", { x: c[0] + c[1] / 2, y: V.row_y[0] + 36, "text-anchor": "middle", "class": "toklabel" }, grid);
    let s = show(V.tokens[p] || "");
    if (s.length > maxChars(c[1])) s = s.slice(0, maxChars(c[1]) - 1) + "\u2026";
    t.textContent = s;
    const q = mk("text", { x: c[0] + c[1] / 2, y: V.row_y[0] + 50, "text-anchor": "middle", "class": "rowlabel" }, grid);
    q.textContent = p;
  });
  const inE = N.map(() => []), outE = N.map(() => []);
  const edgeG = mk("g", { "class": "edges" }, svg);
  E.forEach((e, k) => { inE[e.target].push(k); outE[e.source].push(k); });
  // Weakest first, so that the strong edges are drawn on top.
  const edgeEls = new Array(E.length);
  E.map((e, k) => k).sort((a, b) => E[a].share - E[b].share).forEach(k => {
    const e = E[k], a = N[e.source], b = N[e.target], my = (a.y + b.y) / 2;
    const s = Math.sqrt(e.share);
    edgeEls[k] = mk("path", {
      d: "M" + a.x + " " + a.y + " C" + a.x + " " + my + " " + b.x + " " + my + " " + b.x + " " + b.y,
      stroke: e.weight >= 0 ? "#2166ac" : "#d6604d",
      "stroke-width": (0.4 + 3.6 * s).toFixed(2),
      opacity: Math.min(0.85, Math.max(0.04, 0.9 * s)).toFixed(3),
      "class": "edge"
    }, edgeG);
  });
  const nodeG = mk("g", { "class": "nodes" }, svg);
  const nodeEls = N.map((n, i) => {
    const g = mk("g", { "class": "node " + n.kind, "data-id": n.id, "data-i": i }, nodeG);
    if (n.kind === "feature") mk("circle", { cx: n.x, cy: n.y, r: 4.5, "class": "shape" }, g);
    else if (n.kind === "error") mk("rect", { x: n.x - 3.5, y: n.y - 3.5, width: 7, height: 7, "class": "shape" }, g);
    else if (n.kind === "token") mk("rect", { x: n.x - 9, y: n.y - 6, width: 18, height: 12, rx: 3, "class": "shape" }, g);
    else {
      mk("rect", { x: n.x - 8, y: n.y - 6, width: 16, height: 12, rx: 3, "class": "shape" }, g);
      const t = mk("text", { x: n.x, y: n.y - 10, transform: "rotate(-35 " + n.x + " " + (n.y - 10) + ")", "class": "logitlabel" }, g);
      let s = show(n.token || "");
      if (s.length > 14) s = s.slice(0, 13) + "\u2026";
      t.textContent = s + " " + (n.prob * 100).toFixed(1) + "%";
    }
    g.addEventListener("mouseenter", ev => tipShow(i, ev));
    g.addEventListener("mousemove", ev => tipMove(ev));
    g.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    g.addEventListener("click", ev => { ev.stopPropagation(); pin(i); });
    return g;
  });
  svg.dataset.nodes = String(nodeEls.length);
  svg.dataset.edges = String(edgeEls.length);
  // Thousands of faint edges hide the strong ones: only the strongest are drawn until a node
  // is pinned (its paths are always drawn).
  const byShare = E.map((e, k) => k).sort((a, b) => E[b].share - E[a].share);
  const edgeSel = document.getElementById("edges");
  function limitEdges() {
    const k = edgeSel.value === "all" ? E.length : Number(edgeSel.value);
    byShare.forEach((e, r) => edgeEls[e].classList.toggle("weak", r >= k));
    svg.dataset.edgesShown = String(Math.min(k, E.length));
  }
  [500, 1500, 5000].forEach(k => {
    if (k < E.length) {
      const o = document.createElement("option"); o.value = String(k); o.textContent = "strongest " + k;
      edgeSel.insertBefore(o, edgeSel.lastChild);
    }
  });
  edgeSel.value = E.length > 1500 ? "1500" : "all";
  edgeSel.addEventListener("change", limitEdges);
  limitEdges();

  const tip = document.getElementById("tip");
  function describe(i, withLabel) {
    const n = N[i];
    const lines = withLabel ? [n.label] : [];
    if (n.kind === "feature") lines.push("activation " + fmt(n.activation));
    if (n.kind === "logit") lines.push("probability " + fmt(n.prob));
    if (n.kind === "token") lines.push("token " + JSON.stringify(n.token));
    if (n.kind !== "logit") lines.push("influence (cumulative) " + fmt(n.influence));
    lines.push(inE[i].length + " inputs, " + outE[i].length + " outputs drawn");
    return lines.join("\n");
  }
  function tipShow(i, ev) { tip.textContent = describe(i, true); tip.style.display = "block"; tipMove(ev); }
  function tipMove(ev) { tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 10) + "px"; }

  // From node i, follow each node's `k` strongest edges (by share of the target's input) in
  // one direction, transitively: down to the tokens or up to the logits.
  function trace(i, lists, other, k, hl, on) {
    const seen = new Set([i]), queue = [i];
    while (queue.length) {
      const u = queue.shift();
      const best = lists[u].slice().sort((a, b) => E[b].share - E[a].share).slice(0, k);
      for (const e of best) {
        hl.add(e);
        const v = other(E[e]);
        on.add(v);
        if (!seen.has(v)) { seen.add(v); queue.push(v); }
      }
    }
  }
  const panel = document.getElementById("pinned");
  const hint = panel.innerHTML;
  let pinned = null;
  function clear() {
    svg.classList.remove("focus");
    nodeEls.forEach(g => g.classList.remove("pinned", "onpath"));
    edgeEls.forEach(p => p.classList.remove("hl"));
    delete svg.dataset.pinned;
    svg.dataset.highlightedEdges = "0";
  }
  function pin(i) {
    clear();
    if (pinned === i) { pinned = null; panel.innerHTML = hint; return; }
    pinned = i;
    const hl = new Set(), on = new Set();
    trace(i, inE, e => e.source, 3, hl, on);
    trace(i, outE, e => e.target, 3, hl, on);
    hl.forEach(e => edgeEls[e].classList.add("hl"));
    on.forEach(v => nodeEls[v].classList.add("onpath"));
    nodeEls[i].classList.add("pinned");
    svg.classList.add("focus");
    svg.dataset.pinned = N[i].id;
    svg.dataset.highlightedEdges = String(hl.size);
    details(i, hl.size);
  }
  function edgeList(title, list, other) {
    const h = document.createElement("div");
    const t = document.createElement("h3");
    t.textContent = title + " (" + list.length + ")";
    h.appendChild(t);
    list.slice().sort((a, b) => Math.abs(E[b].weight) - Math.abs(E[a].weight)).slice(0, 12).forEach(e => {
      const j = other(E[e]);
      const r = document.createElement("div");
      r.className = "row";
      const a = document.createElement("span"); a.textContent = N[j].label;
      const w = document.createElement("span");
      w.className = "w " + (E[e].weight >= 0 ? "pos" : "neg");
      w.textContent = fmt(E[e].weight) + " (" + (100 * E[e].share).toFixed(1) + "%)";
      r.appendChild(a); r.appendChild(w);
      r.addEventListener("click", () => pin(j));
      h.appendChild(r);
    });
    return h;
  }
  function contexts(i) {
    const f = D.features[String(i)];
    const box = document.createElement("div");
    if (!f) {
      if (N[i].kind === "feature") {
        const p = document.createElement("p"); p.className = "muted";
        p.textContent = "No dashboard for this feature (run with --dashboards).";
        box.appendChild(p);
      }
      return box;
    }
    const h = document.createElement("h3");
    h.textContent = "Top activations (density " + (100 * f.density).toPrecision(3) + "%, max " + fmt(f.max) + ")";
    box.appendChild(h);
    if (!f.top.length) { const p = document.createElement("p"); p.className = "muted"; p.textContent = "It never fired on the dashboard corpus."; box.appendChild(p); }
    f.top.forEach(c => {
      const d = document.createElement("div"); d.className = "ctx";
      const v = document.createElement("span"); v.className = "v"; v.textContent = fmt(c.act); d.appendChild(v);
      c.tokens.forEach((t, j) => {
        const s = document.createElement("span");
        s.className = j === c.centre ? "t max" : "t";
        const a = f.max > 0 ? Math.max(0, Math.min(1, c.acts[j] / f.max)) : 0;
        if (a > 0) s.style.background = "rgba(255,140,0," + a.toFixed(3) + ")";
        s.textContent = show(t); s.title = fmt(c.acts[j]);
        d.appendChild(s);
      });
      box.appendChild(d);
    });
    if (f.boosted.length) {
      const b = document.createElement("div"); b.className = "muted";
      b.textContent = "boosts: " + f.boosted.map(x => JSON.stringify(x[0]) + " " + fmt(x[1])).join(", ");
      box.appendChild(b);
    }
    return box;
  }
  function details(i, nh) {
    panel.innerHTML = "";
    const h = document.createElement("h2"); h.textContent = N[i].label; panel.appendChild(h);
    const d = document.createElement("div"); d.className = "muted"; d.textContent = describe(i, false); d.style.whiteSpace = "pre-line";
    panel.appendChild(d);
    const s = document.createElement("div"); s.className = "muted";
    s.textContent = nh + " edges on its strongest paths (3 per node, down to the tokens and up to the logits)";
    panel.appendChild(s);
    panel.appendChild(contexts(i));
    panel.appendChild(edgeList("Strongest inputs", inE[i], e => e.source));
    panel.appendChild(edgeList("Strongest outputs", outE[i], e => e.target));
  }
  svg.addEventListener("click", () => { if (pinned !== null) pin(pinned); });
  document.addEventListener("keydown", ev => { if (ev.key === "Escape" && pinned !== null) pin(pinned); });
  document.getElementById("zoom").addEventListener("change", ev => {
    const box = document.getElementById("canvas");
    const z = ev.target.value === "fit" ? (box.clientWidth - 4) / V.width : Number(ev.target.value);
    svg.setAttribute("width", V.width * z); svg.setAttribute("height", V.height * z);
  });
  clear();
  const m = location.hash.match(/^#pin=(.+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    const el = nodeEls.find(g => g.dataset.id === id);
    if (el) el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    else document.body.dataset.pinError = "no node " + id;
  }
})();
"##;
