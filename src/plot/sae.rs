//! Feature dashboards drawn: per latent its top activating contexts with each token's
//! activation as a background (hover for the value), the histogram of its non-zero
//! activations as SVG, and the output tokens its decoder direction boosts and suppresses. One
//! HTML fragment with its CSS scoped to `.mi-sae`, no script and no network, so that it shows
//! inline in a notebook and inside the offline page that `report` writes alike.

use crate::report::graph_html::show_token;
use std::fmt::Write as _;

use plotters::prelude::*;

use super::{append_overlay, draw_err, esc, fmt_tick, fmt_value, Figure};
use crate::error::Result;
use crate::sae::dashboard::{Dashboard, Dashboards, Histogram, TokenEffect, TopContext};

/// The histogram's canvas.
const HIST_SIZE: (u32, u32) = (360, 190);

const CSS: &str = r#"<style>
.mi-sae { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #222; max-width: 1180px; }
.mi-sae .summary { color: #444; margin: 4px 0 8px; }
.mi-sae .nav a { margin-right: 10px; color: #1f5fa8; text-decoration: none; }
.mi-sae .latent { border: 1px solid #d8d8d8; border-radius: 6px; padding: 10px 14px; margin: 12px 0; background: #fff; }
.mi-sae .latent h3 { margin: 0 0 2px; font-size: 16px; }
.mi-sae .stats { color: #555; margin-bottom: 8px; }
.mi-sae .cols { display: flex; gap: 20px; flex-wrap: wrap; align-items: flex-start; }
.mi-sae .left { flex: 0 0 360px; }
.mi-sae .right { flex: 1 1 520px; min-width: 0; }
.mi-sae h4 { margin: 6px 0 4px; font-size: 13px; color: #333; }
.mi-sae table.logits { border-collapse: collapse; width: 100%; font-size: 12px; }
.mi-sae table.logits th { text-align: left; font-weight: 600; padding: 2px 6px; }
.mi-sae table.logits td { padding: 1px 6px; }
.mi-sae table.logits td.tok { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre; max-width: 110px; overflow: hidden; text-overflow: ellipsis; }
.mi-sae table.logits td.val { text-align: right; color: #444; font-variant-numeric: tabular-nums; }
.mi-sae .ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; line-height: 1.95; border-bottom: 1px solid #f0f0f0; white-space: nowrap; overflow-x: auto; }
.mi-sae .ctx .v { display: inline-block; min-width: 4.6em; color: #555; text-align: right; margin-right: 10px; font-variant-numeric: tabular-nums; }
.mi-sae .t { white-space: pre; border-radius: 2px; padding: 1px 0; }
.mi-sae .t.max { outline: 1.5px solid #a04a00; font-weight: 600; }
.mi-sae .note { color: #777; font-style: italic; }
.mi-sae .foot { color: #666; font-size: 12px; margin-top: 6px; }
</style>"#;

impl Histogram {
    /// The histogram as an SVG bar chart of counts over activation, each bar's range and
    /// count on hover.
    pub fn render(&self, title: &str) -> Result<Figure> {
        let mut svg = String::new();
        let mut overlay = String::from("<g class=\"bins\">");
        {
            let root = SVGBackend::with_string(&mut svg, HIST_SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let (lo, hi) = match (self.edges.first(), self.edges.last()) {
                // One distinct value: a range around it, so the ticks say where it is.
                (Some(&a), Some(&b)) if ((b - a) as f64) < 1e-2 * (a as f64).abs().max(1e-3) => {
                    let pad = 0.1 * (a as f64).abs().max(1e-2);
                    (a as f64 - pad, b as f64 + pad)
                }
                (Some(&a), Some(&b)) => (a as f64, b as f64),
                _ => (0.0, 1.0),
            };
            let top = self.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.08;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 13))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(48)
                .build_cartesian_2d(lo..hi, 0f64..top)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("activation")
                .y_desc("count")
                .axis_desc_style(("sans-serif", 12))
                .label_style(("sans-serif", 11))
                .x_labels(5)
                .y_labels(4)
                .x_label_formatter(&|v| fmt_tick(*v as f32))
                // Counts are whole: a tick between two integers would repeat a label.
                .y_label_formatter(&|v| {
                    if (v - v.round()).abs() < 1e-6 {
                        format!("{}", v.round() as i64)
                    } else {
                        String::new()
                    }
                })
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(draw_err)?;
            for (i, &c) in self.counts.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let (a, b) = (self.edges[i] as f64, self.edges[i + 1] as f64);
                let (x0, y0) = chart.backend_coord(&(a, c as f64));
                let (x1, y1) = chart.backend_coord(&(b, 0.0));
                let _ = write!(
                    overlay,
                    "<rect class=\"bin\" x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"#e07b00\" stroke=\"#fff\" stroke-width=\"0.5\"><title>{} to {}: {c}</title></rect>",
                    (x1 - x0).max(1),
                    (y1 - y0).max(1),
                    fmt_value(a as f32),
                    fmt_value(b as f32)
                );
            }
            root.present().map_err(draw_err)?;
        }
        overlay.push_str("</g>");
        Ok(Figure::new(append_overlay(svg, &overlay)))
    }
}

impl Dashboard {
    /// The histogram of non-zero activations, titled with the density.
    pub fn histogram_figure(&self) -> Result<Figure> {
        self.histogram.render(&format!(
            "non-zero activations (density {})",
            fmt_density(self.density)
        ))
    }

    /// The latent's card: an HTML fragment that needs [`Dashboards::html`]'s CSS (or
    /// [`Dashboard::html`]'s, which includes it).
    pub fn card(&self) -> Result<String> {
        let mut h = String::new();
        let l = self.latent;
        let _ = write!(
            h,
            "<section class=\"latent\" id=\"mi-sae-latent-{l}\" data-latent=\"{l}\"><h3>Latent {l}</h3><div class=\"stats\">density {} ({} of {} tokens) · max {} · mean when firing {}</div><div class=\"cols\"><div class=\"left\">",
            fmt_density(self.density),
            self.n_firing,
            self.n_tokens,
            fmt_tick(self.max_act),
            fmt_tick(self.mean_act)
        );
        if self.n_firing == 0 {
            h.push_str("<p class=\"note\">It never fired on this corpus: no histogram.</p>");
        } else {
            h.push_str(self.histogram_figure()?.svg());
        }
        h.push_str(&logits_table(self));
        h.push_str("</div><div class=\"right\"><h4>Top activations</h4>");
        if self.top.is_empty() {
            h.push_str("<p class=\"note\">No context: the latent never fired.</p>");
        }
        for c in &self.top {
            h.push_str(&context_line(c, self.max_act));
        }
        h.push_str("</div></div></section>");
        Ok(h)
    }

    /// The card with its CSS, on its own.
    pub fn html(&self) -> Result<String> {
        Ok(format!("<div class=\"mi-sae\">{CSS}{}</div>", self.card()?))
    }

    /// Shows the dashboard inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        show_html(self.html());
    }
}

impl Dashboards {
    /// Every latent's card with a summary, links to each and how the numbers were computed:
    /// one self-contained HTML fragment (inline CSS and SVG, no script, no network).
    pub fn html(&self) -> Result<String> {
        let mut h = format!("<div class=\"mi-sae\">{CSS}");
        let _ = write!(
            h,
            "<div class=\"summary\">SAE at <code>{}</code> ({}, {} latents) · {} tokens from {} texts, BOS left out</div><div class=\"nav\">",
            esc(&self.hook_name),
            esc(&self.architecture),
            self.d_sae,
            self.n_tokens,
            self.n_texts
        );
        for d in &self.dashboards {
            let _ = write!(h, "<a href=\"#mi-sae-latent-{0}\">latent {0}</a>", d.latent);
        }
        h.push_str("</div>");
        for d in &self.dashboards {
            h.push_str(&d.card()?);
        }
        let _ = write!(
            h,
            "<div class=\"foot\">Density: the fraction of tokens where the latent is non-zero. Highlight: each token's activation over the latent's largest. Output tokens: {}.</div></div>",
            esc(&self.logits_rule)
        );
        Ok(h)
    }

    /// Shows every dashboard inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        show_html(self.html());
    }
}

/// Prints HTML for evcxr, or the error where it would have been.
fn show_html(r: Result<String>) {
    match r {
        Ok(h) => println!("EVCXR_BEGIN_CONTENT text/html\n{h}\nEVCXR_END_CONTENT"),
        Err(e) => println!("(could not draw: {e})"),
    }
}

/// A density as a percentage with enough digits to tell rare latents apart.
fn fmt_density(d: f64) -> String {
    let p = d * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 0.01 {
        format!("{p:.2e}%")
    } else if p < 1.0 {
        format!("{p:.3}%")
    } else {
        format!("{p:.1}%")
    }
}

/// One top context: its activation, then its tokens with the latent's activation as a
/// background, the maximum outlined.
fn context_line(c: &TopContext, max_act: f32) -> String {
    let mut h = format!(
        "<div class=\"ctx\" data-position=\"{}\" data-text=\"{}\"><span class=\"v\">{}</span>",
        c.position,
        c.text,
        fmt_tick(c.act)
    );
    for (i, (t, &a)) in c.tokens.iter().zip(&c.acts).enumerate() {
        let alpha = if max_act > 0.0 && a > 0.0 {
            (a / max_act).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let style = if alpha > 0.0 {
            format!(" style=\"background: rgba(255, 140, 0, {alpha:.3})\"")
        } else {
            String::new()
        };
        let class = if i == c.centre { "t max" } else { "t" };
        let _ = write!(
            h,
            "<span class=\"{class}\"{style} title=\"{}: {}\">{}</span>",
            esc(&format!("{t:?}")),
            fmt_value(a),
            esc(&show_token(t))
        );
    }
    h.push_str("</div>");
    h
}

/// The boosted and suppressed output tokens side by side, each cell shaded by its size.
fn logits_table(d: &Dashboard) -> String {
    if let Some(note) = &d.logits_note {
        return format!("<h4>Output tokens</h4><p class=\"note\">{}</p>", esc(note));
    }
    let scale = d
        .boosted
        .iter()
        .chain(&d.suppressed)
        .map(|e| e.value.abs())
        .fold(0f32, f32::max);
    let cell = |e: Option<&TokenEffect>, rgb: &str| match e {
        None => "<td></td><td></td>".to_string(),
        Some(e) => {
            let a = if scale > 0.0 {
                (e.value.abs() / scale).clamp(0.0, 1.0) * 0.6
            } else {
                0.0
            };
            format!(
                "<td class=\"tok\" style=\"background: rgba({rgb}, {a:.3})\" title=\"id {}\">{}</td><td class=\"val\">{}</td>",
                e.id,
                esc(&show_token(&e.token)),
                fmt_tick(e.value)
            )
        }
    };
    let mut h = String::from(
        "<h4>Output tokens</h4><table class=\"logits\"><tr><th colspan=\"2\">suppressed</th><th colspan=\"2\">boosted</th></tr>",
    );
    for i in 0..d.boosted.len().max(d.suppressed.len()) {
        let _ = write!(
            h,
            "<tr>{}{}</tr>",
            cell(d.suppressed.get(i), "214, 39, 40"),
            cell(d.boosted.get(i), "31, 119, 180")
        );
    }
    h.push_str("</table>");
    h
}
