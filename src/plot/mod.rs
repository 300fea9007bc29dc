//! Plots that render inline in notebooks (evcxr) and save as SVG: heatmaps (one or several
//! panels with a shared colour scale), attention patterns, line, scatter and bar charts, and
//! an offline interactive attention viewer (HTML).
//!
//! Charts draw through plotters' SVG backend; the cells, points and bars that carry hover
//! text are added as SVG elements with a `<title>`, which plotters cannot attach.
//!
//! PNG: [`Figure::save_png`] converts with `rsvg-convert` (Debian's `librsvg2-bin`) when it is
//! installed. We do not rasterise in-process: that needs system fonts (CJK and Arabic labels
//! would silently vanish without them), and any browser or SVG viewer renders the SVG itself.

mod charts;
mod colormap;
mod display;
mod graph;
mod heatmap;
pub mod sae;
mod viewer;

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

pub use charts::{BarChart, LinePlot, ScatterPlot};
pub use colormap::Colormap;
pub use graph::GraphPlot;
pub use heatmap::{attention_grid, attention_pattern, Annotation, Heatmap, Panels};
pub use viewer::{attention_view, attention_view_with, Html};

/// A rendered chart: one SVG document.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    svg: String,
}

impl Figure {
    pub(crate) fn new(svg: String) -> Self {
        Figure { svg }
    }

    /// The SVG text.
    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// Writes the SVG to a file.
    pub fn save_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        let p = path.as_ref();
        std::fs::write(p, &self.svg).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    /// Writes a PNG through `rsvg-convert`; an error says how to install it if it is missing.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write;
        let p = path.as_ref();
        let mut child = std::process::Command::new("rsvg-convert")
            .args(["--format", "png", "--background-color", "white", "--output"])
            .arg(p)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Invalid(format!(
                    "save_png needs `rsvg-convert` ({e}); install it (Debian/Ubuntu: `apt-get install librsvg2-bin`, plus fonts-noto-cjk for CJK labels) or use save_svg"
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.svg.as_bytes())
                .map_err(|e| Error::io("piping SVG to rsvg-convert", e))?;
        }
        let status = child
            .wait()
            .map_err(|e| Error::io("waiting for rsvg-convert", e))?;
        if !status.success() {
            return Err(Error::Invalid(format!("rsvg-convert failed ({status})")));
        }
        Ok(())
    }

    /// Shows the figure inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT image/svg+xml\n{}\nEVCXR_END_CONTENT",
            self.svg
        );
    }
}

/// Shows a rendered figure inline, or the rendering error where the picture would have been.
pub fn display_result(r: Result<Figure>) {
    match r {
        Ok(f) => f.evcxr_display(),
        Err(e) => println!("(could not draw: {e})"),
    }
}

/// Maps plotters' drawing errors into ours.
pub(crate) fn draw_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Invalid(format!("drawing failed: {e}"))
}

/// XML-escapes text for attributes and content.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0; show them as escapes.
            c if (c as u32) < 0x20 && c != '\t' => {
                let _ = write!(o, "\\u{{{:x}}}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// Approximate rendered width of a label in pixels (wide for CJK, as the glyphs are).
pub(crate) fn text_width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| if (c as u32) >= 0x2E80 { 1.0 } else { 0.56 })
        .sum::<f64>()
        * size
}

/// Splits `s` into lines no wider than `max_w` pixels at font `size` (by words; a word longer
/// than a line is cut), so that titles wrap instead of running off the canvas.
pub(crate) fn wrap(s: &str, max_w: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let cand = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if text_width(&cand, size) <= max_w || cur.is_empty() && text_width(word, size) <= max_w {
            cur = cand;
            continue;
        }
        if !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        // A word wider than a line is cut into pieces that fit.
        for c in word.chars() {
            if !cur.is_empty() && text_width(&format!("{cur}{c}"), size) > max_w {
                lines.push(std::mem::take(&mut cur));
            }
            cur.push(c);
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The widest of some lines, in pixels at font `size`.
pub(crate) fn widest(lines: &[String], size: f64) -> f64 {
    lines
        .iter()
        .map(|l| text_width(l, size))
        .fold(0.0, f64::max)
}

/// Draws text at (x, y) with an anchor, optionally rotated to read upwards.
pub(crate) fn draw_text<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    (x, y): (f64, f64),
    size: f64,
    pos: plotters::style::text_anchor::Pos,
    upwards: bool,
) -> Result<()> {
    use plotters::prelude::*;
    let mut style = TextStyle::from(("sans-serif", size).into_font())
        .pos(pos)
        .color(&BLACK);
    if upwards {
        style = style.transform(FontTransform::Rotate270);
    }
    area.draw(&Text::new(s.to_string(), (x as i32, y as i32), style))
        .map_err(draw_err)
}

/// Draws wrapped title lines centred on `cx`, the first line's top at `y`; returns the height
/// they take.
pub(crate) fn draw_title<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    lines: &[String],
    cx: f64,
    y: f64,
    size: f64,
) -> Result<f64> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    for (i, l) in lines.iter().enumerate() {
        draw_text(
            area,
            l,
            (cx, y + i as f64 * size * 1.25),
            size,
            Pos::new(HPos::Center, VPos::Top),
            false,
        )?;
    }
    Ok(lines.len() as f64 * size * 1.25)
}

/// How a token reads as a tick label: visible whitespace, bounded length.
pub(crate) fn tick_label(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| match c {
            '\n' => '↵',
            '\t' => '→',
            c => c,
        })
        .collect();
    let t = if t.chars().count() > 18 {
        format!("{}…", t.chars().take(17).collect::<String>())
    } else {
        t
    };
    if t.trim().is_empty() {
        format!("'{t}'")
    } else {
        t
    }
}

/// Puts extra SVG elements (with hover titles) just before `</svg>`.
pub(crate) fn append_overlay(mut svg: String, overlay: &str) -> String {
    if let Some(i) = svg.rfind("</svg>") {
        svg.insert_str(i, overlay);
    }
    svg
}

/// Formats a colour-bar tick: three significant digits.
pub(crate) fn fmt_tick(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e4).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (2 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// Formats a value for hover text and tick labels.
pub(crate) fn fmt_value(v: f32) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}
