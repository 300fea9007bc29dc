//! A pruned attribution graph as a static SVG, for notebooks: the layout of the offline page
//! (`report::graph_html`), rows by layer (embeddings at the bottom, logits at the top) and
//! columns by position, edges blue (positive) or red (negative) with width by their share of
//! the target's input, each node's label and activation on hover.
//!
//! ```no_run
//! # use mechinterp::graph::{prune, Graph};
//! # use mechinterp::plot::GraphPlot;
//! # fn f(graph: &Graph) -> mechinterp::error::Result<()> {
//! let pruned = prune(graph, 0.8, 0.98)?;
//! GraphPlot::new(graph, &pruned)?.title("The capital of France is").evcxr_display();
//! # Ok(()) }
//! ```

use std::fmt::Write as _;

use super::{display_result, esc, fmt_value, Figure};
use crate::error::Result;
use crate::graph::{Graph, PruneResult};
use crate::report::graph_html::{show_token, GraphView, ViewKind};

/// A pruned graph ready to draw.
#[derive(Debug, Clone)]
pub struct GraphPlot {
    view: GraphView,
    title: String,
    max_edges: usize,
}

/// Height of the title line.
const TITLE_H: f32 = 24.0;

impl GraphPlot {
    /// The drawing of `graph` pruned as `pruned` says ([`crate::graph::prune`]).
    pub fn new(graph: &Graph, pruned: &PruneResult) -> Result<GraphPlot> {
        Ok(GraphPlot {
            view: GraphView::new(graph, pruned)?,
            title: String::new(),
            max_edges: 1500,
        })
    }

    /// Draw only the `n` strongest edges (by share of their target's input; 1500 unless set):
    /// thousands of faint edges hide the strong ones and make a heavy notebook cell.
    pub fn max_edges(mut self, n: usize) -> Self {
        self.max_edges = n;
        self
    }

    /// A title above the graph.
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_string();
        self
    }

    /// The laid-out nodes and edges.
    pub fn view(&self) -> &GraphView {
        &self.view
    }

    /// The SVG figure.
    pub fn render(&self) -> Result<Figure> {
        let v = &self.view;
        let dy = if self.title.is_empty() { 0.0 } else { TITLE_H };
        let (w, h) = (v.width, v.height + dy);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
        );
        if !self.title.is_empty() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="17" text-anchor="middle" font-size="14">{}</text>"#,
                w / 2.0,
                esc(&self.title)
            );
        }
        let _ = write!(s, r#"<g transform="translate(0 {dy})">"#);
        for (r, (&y, &rh)) in v.row_y.iter().zip(&v.row_h).enumerate() {
            if r % 2 == 1 {
                let _ = write!(
                    s,
                    "<rect x=\"0\" y=\"{:.1}\" width=\"{w:.0}\" height=\"{rh:.1}\" fill=\"#f6f6f6\"/>",
                    y - rh / 2.0
                );
            }
            let _ = write!(
                s,
                "<text x=\"8\" y=\"{:.1}\" font-size=\"11\" fill=\"#666\">{}</text>",
                y + 4.0,
                esc(&v.row_labels[r])
            );
        }
        let y0 = v.row_y.first().copied().unwrap_or(0.0);
        for (p, &(left, cw)) in v.columns.iter().enumerate() {
            let max = ((cw - 6.0) / 7.2).max(3.0) as usize;
            let tok = show_token(v.tokens.get(p).map_or("", String::as_str));
            let tok = if tok.chars().count() > max {
                format!("{}…", tok.chars().take(max - 1).collect::<String>())
            } else {
                tok
            };
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" font-family=\"monospace\">{}</text>",
                left + cw / 2.0,
                y0 + 36.0,
                esc(&tok)
            );
        }
        s.push_str("<g class=\"edges\" fill=\"none\">");
        let mut order: Vec<usize> = (0..v.edges.len()).collect();
        order.sort_by(|&a, &b| v.edges[b].share.total_cmp(&v.edges[a].share));
        order.truncate(self.max_edges);
        // Weakest first, so that the strong edges are drawn on top.
        for e in order.iter().rev().map(|&i| &v.edges[i]) {
            let (a, b) = (&v.nodes[e.source], &v.nodes[e.target]);
            let my = (a.y + b.y) / 2.0;
            let k = e.share.sqrt();
            let _ = write!(
                s,
                "<path d=\"M{:.1} {:.1} C{:.1} {my:.1} {:.1} {my:.1} {:.1} {:.1}\" stroke=\"{}\" stroke-width=\"{:.2}\" opacity=\"{:.3}\"/>",
                a.x,
                a.y,
                a.x,
                b.x,
                b.x,
                b.y,
                if e.weight >= 0.0 { "#2166ac" } else { "#d6604d" },
                0.4 + 3.6 * k,
                (0.9 * k).clamp(0.04, 0.85)
            );
        }
        s.push_str("</g><g class=\"nodes\" stroke=\"#555\" stroke-width=\"0.8\">");
        for n in &v.nodes {
            let mut hover = n.label.clone();
            if let Some(a) = n.activation {
                let _ = write!(hover, ", activation {}", fmt_value(a));
            }
            if n.kind != ViewKind::Logit {
                let _ = write!(hover, ", influence (cumulative) {}", fmt_value(n.influence));
            }
            let title = format!("<title>{}</title>", esc(&hover));
            let (x, y) = (n.x, n.y);
            let _ = match n.kind {
                ViewKind::Feature => write!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"#f3b562\">{title}</circle>"
                ),
                ViewKind::Error => write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\" fill=\"#bbb\">{title}</rect>",
                    x - 3.5,
                    y - 3.5
                ),
                ViewKind::Token => write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"18\" height=\"12\" rx=\"3\" fill=\"#dbe8f5\">{title}</rect>",
                    x - 9.0,
                    y - 6.0
                ),
                ViewKind::Logit => {
                    let tok = show_token(n.token.as_deref().unwrap_or(""));
                    let tok = if tok.chars().count() > 14 {
                        format!("{}…", tok.chars().take(13).collect::<String>())
                    } else {
                        tok
                    };
                    write!(
                        s,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"16\" height=\"12\" rx=\"3\" fill=\"#a8dba8\">{title}</rect><text x=\"{x:.1}\" y=\"{:.1}\" transform=\"rotate(-35 {x:.1} {:.1})\" font-size=\"11\" stroke=\"none\" fill=\"#222\">{} {:.1}%</text>",
                        x - 8.0,
                        y - 6.0,
                        y - 10.0,
                        y - 10.0,
                        esc(&tok),
                        n.prob.unwrap_or(0.0) * 100.0
                    )
                }
            };
        }
        s.push_str("</g></g></svg>");
        Ok(Figure::new(s))
    }

    /// Shows the graph inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}
