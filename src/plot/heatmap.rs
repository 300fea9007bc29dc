//! Heatmaps: one panel or several side by side with one colour scale, and attention patterns.

use std::fmt::Write as _;

use candle_core::{DType, Tensor};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    append_overlay, draw_err, esc, fmt_tick, fmt_value, text_width, tick_label, Colormap, Figure,
};
use crate::error::{Error, Result};
use crate::table::{Axis, Table};

const TICK: f64 = 12.0;
const LABEL: f64 = 14.0;
const TITLE: f64 = 16.0;
const ANNOTATION: f64 = 11.0;

/// A 2-D heatmap with labelled axes, a colour bar and the value of each cell on hover.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Panel title.
    pub title: String,
    /// Values, row-major [rows × cols]; NaN cells stay blank.
    pub values: Vec<f32>,
    /// Rows (drawn top to bottom).
    pub rows: Axis,
    /// Columns (drawn left to right).
    pub cols: Axis,
    /// Colour map.
    pub cmap: Colormap,
    /// Lower end of the colour scale (default: data minimum, or −max|v| for diverging maps).
    pub vmin: Option<f32>,
    /// Upper end of the colour scale.
    pub vmax: Option<f32>,
    /// Label of the colour bar.
    pub value_label: String,
    /// Cell size in pixels (width, height); `None` picks one from the data's shape.
    pub cell: Option<(u32, u32)>,
    /// Extra hover text per cell (row-major), e.g. the top token of a logit-lens cell.
    pub notes: Option<Vec<String>>,
    /// Text printed in each cell, as papers show small grids.
    pub annotate: Option<Annotation>,
}

/// What a heatmap prints in its cells (in black or white, whichever reads on the cell).
#[derive(Debug, Clone, PartialEq)]
pub enum Annotation {
    /// Each cell's value with this many decimals.
    Values(usize),
    /// One string per cell, row-major (e.g. the top token of a logit-lens cell).
    Text(Vec<String>),
}

impl Heatmap {
    /// A heatmap of `values` ([rows × cols], row-major).
    pub fn new(values: Vec<f32>, rows: Axis, cols: Axis) -> Result<Self> {
        if values.len() != rows.len() * cols.len() || values.is_empty() {
            return Err(Error::Shape(format!(
                "heatmap: {} values for {} rows × {} columns",
                values.len(),
                rows.len(),
                cols.len()
            )));
        }
        Ok(Heatmap {
            title: String::new(),
            values,
            rows,
            cols,
            cmap: Colormap::RdBu,
            vmin: None,
            vmax: None,
            value_label: String::new(),
            cell: None,
            notes: None,
            annotate: None,
        })
    }

    /// A heatmap of a 2-D table, with its axes as tick labels.
    pub fn from_table(t: &Table) -> Result<Self> {
        if t.axes.len() != 2 {
            return Err(Error::Shape(format!(
                "a heatmap needs a 2-D table; this one has axes {:?}",
                t.shape()
            )));
        }
        let mut h = Heatmap::new(t.values.clone(), t.axes[0].clone(), t.axes[1].clone())?;
        h.title = t.title.clone();
        Ok(h)
    }

    /// A heatmap of a 2-D tensor, rows and columns numbered.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let t = t.squeeze_dims_keep_2()?;
        let (r, c) = t.dims2()?;
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Heatmap::new(v, Axis::numbered("row", r), Axis::numbered("column", c))
    }

    /// Sets the title.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = t.into();
        self
    }

    /// Sets the colour map.
    pub fn cmap(mut self, c: Colormap) -> Self {
        self.cmap = c;
        self
    }

    /// Fixes the colour scale.
    pub fn range(mut self, vmin: f32, vmax: f32) -> Self {
        self.vmin = Some(vmin);
        self.vmax = Some(vmax);
        self
    }

    /// Sets the colour bar's label.
    pub fn value_label(mut self, l: impl Into<String>) -> Self {
        self.value_label = l.into();
        self
    }

    /// Prints each cell's value with `decimals` decimals.
    pub fn annotate_values(mut self, decimals: usize) -> Self {
        self.annotate = Some(Annotation::Values(decimals));
        self
    }

    /// Prints one string per cell (row-major); an error unless there is one per cell.
    pub fn annotate_text(mut self, text: Vec<String>) -> Result<Self> {
        if text.len() != self.values.len() {
            return Err(Error::Shape(format!(
                "annotate_text: {} strings for {} cells",
                text.len(),
                self.values.len()
            )));
        }
        self.annotate = Some(Annotation::Text(text));
        Ok(self)
    }

    /// The text printed in cell `i`, if any.
    fn cell_text(&self, i: usize) -> Option<String> {
        match &self.annotate {
            None => None,
            Some(Annotation::Values(d)) => {
                let v = self.values[i];
                v.is_finite().then(|| format!("{v:.d$}", d = *d))
            }
            Some(Annotation::Text(t)) => t.get(i).map(|s| tick_label(s)),
        }
    }

    /// The widest annotation, in pixels at the annotation font.
    fn widest_annotation(&self) -> f64 {
        (0..self.values.len())
            .filter_map(|i| self.cell_text(i))
            .map(|t| text_width(&t, ANNOTATION))
            .fold(0.0, f64::max)
    }

    /// Renames the axes (x = columns, y = rows).
    pub fn axis_names(mut self, x: &str, y: &str) -> Self {
        self.cols.name = x.into();
        self.rows.name = y.into();
        self
    }

    /// The colour scale this panel would use alone.
    fn auto_range(&self) -> (f32, f32) {
        let finite = self.values.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let (lo, hi) = if self.cmap.diverging() {
            let m = lo.abs().max(hi.abs()).max(1e-12);
            (-m, m)
        } else {
            (lo, hi)
        };
        (self.vmin.unwrap_or(lo), self.vmax.unwrap_or(hi))
    }

    /// Renders the heatmap as one SVG figure.
    pub fn render(&self) -> Result<Figure> {
        Panels::new(vec![self.clone()]).render()
    }

    /// Shows the heatmap inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        super::display_result(self.render())
    }
}

trait Squeeze2 {
    fn squeeze_dims_keep_2(&self) -> Result<Tensor>;
}

impl Squeeze2 for Tensor {
    /// Drops leading size-1 dims until the tensor is 2-D.
    fn squeeze_dims_keep_2(&self) -> Result<Tensor> {
        let mut t = self.clone();
        while t.rank() > 2 && t.dim(0)? == 1 {
            t = t.squeeze(0)?;
        }
        if t.rank() != 2 {
            return Err(Error::Shape(format!(
                "a heatmap needs a 2-D tensor, got shape {:?}",
                self.dims()
            )));
        }
        Ok(t)
    }
}

/// Several heatmaps in a grid with one shared colour scale and one colour bar: the
/// "Translation | Random | Diff" figure, or a grid of attention heads.
#[derive(Debug, Clone)]
pub struct Panels {
    /// The panels, left to right, then top to bottom.
    pub panels: Vec<Heatmap>,
    /// Panels per row.
    pub per_row: usize,
    /// Figure title.
    pub title: String,
    /// One colour scale for all panels (default) or each its own (no colour bar then).
    pub shared_scale: bool,
}

impl Panels {
    /// Panels side by side.
    pub fn new(panels: Vec<Heatmap>) -> Self {
        let n = panels.len().max(1);
        Panels {
            panels,
            per_row: n,
            title: String::new(),
            shared_scale: true,
        }
    }

    /// Sets the figure title.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = t.into();
        self
    }

    /// Sets panels per row.
    pub fn per_row(mut self, n: usize) -> Self {
        self.per_row = n.max(1);
        self
    }

    /// The shared colour scale: the union of the panels' ranges (symmetric for diverging maps).
    fn shared_range(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for p in &self.panels {
            let (a, b) = p.auto_range();
            lo = lo.min(a);
            hi = hi.max(b);
        }
        if self
            .panels
            .first()
            .is_some_and(|p| p.cmap.diverging() && p.vmin.is_none())
        {
            let m = lo.abs().max(hi.abs());
            (-m, m)
        } else {
            (lo, hi)
        }
    }

    /// Renders all panels as one SVG.
    pub fn render(&self) -> Result<Figure> {
        let first = self
            .panels
            .first()
            .ok_or_else(|| Error::Invalid("no panels to draw".into()))?;
        let lay = self.layout(first);
        let mut svg = String::new();
        let mut overlay = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (lay.width, lay.height)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            super::draw_title(
                &root,
                &lay.fig_title,
                lay.width as f64 / 2.0,
                8.0,
                TITLE + 2.0,
            )?;
            for (k, p) in self.panels.iter().enumerate() {
                self.draw_panel(&root, &mut overlay, k, p, &lay)?;
            }
            if self.shared_scale {
                draw_colour_bar(&root, first, &lay)?;
            }
            root.present().map_err(draw_err)?;
        }
        Ok(Figure::new(append_overlay(svg, &overlay)))
    }

    /// Where everything goes: cells, labels, titles, panels, the colour bar, the figure.
    fn layout(&self, first: &Heatmap) -> Layout {
        let per_row = self.per_row.min(self.panels.len()).max(1);
        let n_rows = self.panels.len().div_ceil(per_row);
        // Cell size from the largest panel so panels line up.
        let max_rows = self.panels.iter().map(|p| p.rows.len()).max().unwrap_or(1);
        let max_cols = self.panels.iter().map(|p| p.cols.len()).max().unwrap_or(1);
        let (cw, ch) = self.cell_size(first, per_row, max_rows, max_cols);
        let (x_rotate, x_lab_h, y_lab_w) = self.tick_space(cw);
        let left = y_lab_w + LABEL + 10.0;
        // Panel titles wrap to the panel (at least 260 px wide, which a long title widens to).
        let grid_w = left + max_cols as f64 * cw;
        let titles = self.panel_titles(grid_w.max(260.0));
        let title_lines = titles.iter().map(Vec::len).max().unwrap_or(0);
        let panel_w = (grid_w + 16.0).max(
            titles
                .iter()
                .map(|t| super::widest(t, TITLE) + 16.0)
                .fold(0.0, f64::max),
        );
        let top = title_lines as f64 * TITLE * 1.25 + 14.0;
        let bottom = x_lab_h + LABEL + 12.0;
        let panel_h = top + max_rows as f64 * ch + bottom;
        let shared = self.shared_range();
        let bar_w = if self.shared_scale {
            bar_width(shared, bar_label(first))
        } else {
            0.0
        };
        let mut width = panel_w * per_row as f64 + bar_w + 10.0;
        let fig_title = if self.title.is_empty() {
            Vec::new()
        } else {
            super::wrap(&self.title, (width - 20.0).max(300.0), TITLE + 2.0)
        };
        width = width.max(super::widest(&fig_title, TITLE + 2.0) + 20.0);
        let fig_title_h = if fig_title.is_empty() {
            0.0
        } else {
            fig_title.len() as f64 * (TITLE + 2.0) * 1.25 + 12.0
        };
        // The colour bar is at least 120 px tall, with its label under it.
        let bar_h = (max_rows as f64 * ch).clamp(120.0, 420.0);
        let height = (fig_title_h + panel_h * n_rows as f64 + 6.0)
            .max(fig_title_h + top + bar_h + 8.0 + TICK * 1.25 + 6.0)
            .ceil() as u32;
        Layout {
            per_row,
            cw,
            ch,
            x_rotate,
            x_lab_h,
            left,
            titles,
            panel_w,
            panel_h,
            top,
            shared,
            bar_h,
            fig_title,
            fig_title_h,
            width: width.ceil() as u32,
            height,
        }
    }

    /// Cell width and height: the first panel's own, else from the grid's shape, with room for
    /// annotations where there are any.
    fn cell_size(
        &self,
        first: &Heatmap,
        per_row: usize,
        max_rows: usize,
        max_cols: usize,
    ) -> (f64, f64) {
        // Annotated cells are made wide and tall enough for their text.
        let ann_w = self
            .panels
            .iter()
            .map(|p| p.widest_annotation())
            .fold(0.0, f64::max);
        let annotated = self.panels.iter().any(|p| p.annotate.is_some());
        let (cw, ch) = first.cell.unwrap_or_else(|| {
            let w = ((760.0 / per_row as f64) / max_cols as f64)
                .floor()
                .clamp(5.0, 40.0);
            let h = (440.0 / max_rows as f64).floor().clamp(5.0, 32.0);
            if annotated {
                (
                    w.max((ann_w + 6.0).ceil()) as u32,
                    h.max(ANNOTATION + 6.0) as u32,
                )
            } else {
                (w as u32, h as u32)
            }
        });
        (cw as f64, ch as f64)
    }

    /// Whether column labels turn upright (some is wider than a cell), the height under the
    /// grid they take, and the width the row labels take.
    fn tick_space(&self, cw: f64) -> (bool, f64, f64) {
        let x_rotate = self.panels.iter().any(|p| {
            p.cols
                .labels
                .iter()
                .any(|l| text_width(&tick_label(l), TICK) > cw - 2.0)
        });
        let x_lab_h = self
            .panels
            .iter()
            .flat_map(|p| p.cols.labels.iter())
            .map(|l| {
                if x_rotate {
                    text_width(&tick_label(l), TICK)
                } else {
                    TICK
                }
            })
            .fold(TICK, f64::max)
            + 8.0;
        let y_lab_w = self
            .panels
            .iter()
            .flat_map(|p| p.rows.labels.iter())
            .map(|l| text_width(&tick_label(l), TICK))
            .fold(10.0, f64::max)
            + 8.0;
        (x_rotate, x_lab_h, y_lab_w)
    }

    /// Each panel's title wrapped to `wrap_w`.
    fn panel_titles(&self, wrap_w: f64) -> Vec<Vec<String>> {
        self.panels
            .iter()
            .map(|p| {
                if p.title.is_empty() {
                    Vec::new()
                } else {
                    super::wrap(&p.title, wrap_w - 8.0, TITLE)
                }
            })
            .collect()
    }

    /// Panel `k`: its title, frame, labels, and its cells and annotations into `overlay`.
    fn draw_panel(
        &self,
        root: &Area,
        overlay: &mut String,
        k: usize,
        p: &Heatmap,
        lay: &Layout,
    ) -> Result<()> {
        let range = if self.shared_scale {
            lay.shared
        } else {
            p.auto_range()
        };
        let ox = (k % lay.per_row) as f64 * lay.panel_w;
        let oy = lay.fig_title_h + (k / lay.per_row) as f64 * lay.panel_h;
        let (x0, y0) = (ox + lay.left, oy + lay.top);
        let (r, c) = (p.rows.len(), p.cols.len());
        let (cw, ch) = (lay.cw, lay.ch);
        // Centred over the cells, moved in where it would pass the panel's edge.
        let half = super::widest(&lay.titles[k], TITLE) / 2.0;
        let cx = (x0 + c as f64 * cw / 2.0)
            .min(ox + lay.panel_w - half - 4.0)
            .max(ox + half + 4.0);
        super::draw_title(root, &lay.titles[k], cx, oy + 4.0, TITLE)?;
        // Frame.
        root.draw(&Rectangle::new(
            [
                (x0 as i32 - 1, y0 as i32 - 1),
                (
                    (x0 + c as f64 * cw) as i32 + 1,
                    (y0 + r as f64 * ch) as i32 + 1,
                ),
            ],
            ShapeStyle::from(&RGBColor(200, 200, 200)).stroke_width(1),
        ))
        .map_err(draw_err)?;
        draw_labels(root, p, lay, (ox, x0, y0))?;
        let at = Placed {
            k,
            p,
            x0,
            y0,
            range,
        };
        write_cells(overlay, &at, lay);
        if p.annotate.is_some() {
            write_annotations(overlay, &at, lay);
        }
        Ok(())
    }

    /// Shows the figure inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        super::display_result(self.render())
    }
}

/// The drawing area of an SVG figure.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The geometry of a grid of panels, worked out before anything is drawn.
struct Layout {
    /// Panels per row.
    per_row: usize,
    /// Cell width and height.
    cw: f64,
    ch: f64,
    /// Column labels drawn upright.
    x_rotate: bool,
    /// Height of the column labels.
    x_lab_h: f64,
    /// From a panel's left edge to its cells.
    left: f64,
    /// Each panel's wrapped title.
    titles: Vec<Vec<String>>,
    /// A panel's width and height.
    panel_w: f64,
    panel_h: f64,
    /// From a panel's top edge to its cells.
    top: f64,
    /// The shared colour scale.
    shared: (f32, f32),
    /// The colour bar's height.
    bar_h: f64,
    /// The figure's wrapped title and its height.
    fig_title: Vec<String>,
    fig_title_h: f64,
    /// The figure's size.
    width: u32,
    height: u32,
}

/// A panel placed in the figure: its index, its heatmap, where its cells start and its
/// colour scale.
#[derive(Clone, Copy)]
struct Placed<'a> {
    k: usize,
    p: &'a Heatmap,
    x0: f64,
    y0: f64,
    range: (f32, f32),
}

/// The colour bar's label.
fn bar_label(first: &Heatmap) -> &str {
    if first.value_label.is_empty() {
        "value"
    } else {
        first.value_label.as_str()
    }
}

/// The colour bar's width with its tick values or its label, whichever is wider.
fn bar_width(shared: (f32, f32), label: &str) -> f64 {
    let ticks = (0..5)
        .map(|i| {
            let v = shared.1 - (shared.1 - shared.0) * i as f32 / 4.0;
            text_width(&fmt_tick(v), TICK - 1.0)
        })
        .fold(0.0, f64::max);
    (14.0 + 20.0 + ticks + 8.0).max(14.0 + text_width(label, TICK) + 8.0)
}

/// Where `v` falls on the colour scale `(vmin, vmax)`, 0 to 1 (0.5 on a flat scale).
fn scale_position(v: f32, (vmin, vmax): (f32, f32)) -> f64 {
    if vmax > vmin {
        ((v - vmin) / (vmax - vmin)) as f64
    } else {
        0.5
    }
}

/// A panel's tick labels (every one when there is room, else every k-th) and axis names.
fn draw_labels(
    root: &Area,
    p: &Heatmap,
    lay: &Layout,
    (ox, x0, y0): (f64, f64, f64),
) -> Result<()> {
    let (r, c) = (p.rows.len(), p.cols.len());
    let (cw, ch) = (lay.cw, lay.ch);
    let ystep = ((TICK + 2.0) / ch).ceil().max(1.0) as usize;
    for (i, l) in p.rows.labels.iter().enumerate().step_by(ystep) {
        super::draw_text(
            root,
            &tick_label(l),
            (x0 - 5.0, y0 + (i as f64 + 0.5) * ch),
            TICK,
            Pos::new(HPos::Right, VPos::Center),
            false,
        )?;
    }
    let xstep = if lay.x_rotate {
        ((TICK + 2.0) / cw).ceil().max(1.0) as usize
    } else {
        1
    };
    for (j, l) in p.cols.labels.iter().enumerate().step_by(xstep) {
        let x = x0 + (j as f64 + 0.5) * cw;
        let y = y0 + r as f64 * ch + 5.0;
        let pos = if lay.x_rotate {
            Pos::new(HPos::Right, VPos::Center)
        } else {
            Pos::new(HPos::Center, VPos::Top)
        };
        super::draw_text(root, &tick_label(l), (x, y), TICK, pos, lay.x_rotate)?;
    }
    super::draw_text(
        root,
        &p.cols.name,
        (
            x0 + c as f64 * cw / 2.0,
            y0 + r as f64 * ch + lay.x_lab_h + 6.0,
        ),
        LABEL,
        Pos::new(HPos::Center, VPos::Top),
        false,
    )?;
    super::draw_text(
        root,
        &p.rows.name,
        (ox + 4.0, y0 + r as f64 * ch / 2.0),
        LABEL,
        Pos::new(HPos::Center, VPos::Top),
        true,
    )
}

/// Panel `at.k`'s group of class `class` in the overlay, with `cell`'s markup for every
/// (row, column), row by row.
fn write_group(
    overlay: &mut String,
    class: &str,
    at: &Placed,
    mut cell: impl FnMut(&mut String, usize, usize),
) {
    let _ = write!(overlay, "<g class=\"{class}\" data-panel=\"{}\">", at.k);
    for i in 0..at.p.rows.len() {
        for j in 0..at.p.cols.len() {
            cell(overlay, i, j);
        }
    }
    overlay.push_str("</g>");
}

/// A panel's cells as SVG rectangles, with their value on hover.
fn write_cells(overlay: &mut String, at: &Placed, lay: &Layout) {
    let (p, c, cw, ch) = (at.p, at.p.cols.len(), lay.cw, lay.ch);
    write_group(overlay, "cells", at, |o, i, j| {
        let v = p.values[i * c + j];
        if !v.is_finite() {
            return;
        }
        let t = scale_position(v, at.range);
        let note = p
            .notes
            .as_ref()
            .and_then(|n| n.get(i * c + j))
            .map(|n| format!(" · {}", esc(n)))
            .unwrap_or_default();
        let _ = write!(
            o,
            "<rect class=\"cell\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}, {}: {} = {}{}</title></rect>",
            at.x0 + j as f64 * cw,
            at.y0 + i as f64 * ch,
            cw,
            ch,
            p.cmap.hex(t),
            esc(&p.rows.name),
            esc(&p.rows.labels[i]),
            esc(&p.cols.name),
            esc(&p.cols.labels[j]),
            fmt_value(v),
            note
        );
    });
}

/// A panel's cell texts, in black or white, whichever reads on the cell.
fn write_annotations(overlay: &mut String, at: &Placed, lay: &Layout) {
    let (p, c, cw, ch) = (at.p, at.p.cols.len(), lay.cw, lay.ch);
    write_group(overlay, "annotations", at, |o, i, j| {
        let Some(t) = p.cell_text(i * c + j) else {
            return;
        };
        // Shrunk to fit the cell; left out where even 6 px would not.
        let size = ANNOTATION.min((cw - 3.0) / (text_width(&t, 1.0).max(1e-6)));
        if size < 6.0 {
            return;
        }
        let v = p.values[i * c + j];
        let tt = if v.is_finite() {
            scale_position(v, at.range)
        } else {
            0.0
        };
        let (rr, gg, bb) = p.cmap.rgb(tt);
        let luma = 0.299 * rr as f64 + 0.587 * gg as f64 + 0.114 * bb as f64;
        let fill = if v.is_finite() && luma < 140.0 {
            "#ffffff"
        } else {
            "#000000"
        };
        let _ = write!(
            o,
            "<text class=\"annotation\" x=\"{:.1}\" y=\"{:.1}\" dy=\"0.5ex\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"{size:.1}\" fill=\"{fill}\" pointer-events=\"none\">{}</text>",
            at.x0 + (j as f64 + 0.5) * cw,
            at.y0 + (i as f64 + 0.5) * ch,
            esc(&t)
        );
    });
}

/// The shared colour bar right of the panels, with five ticks and its label under it.
fn draw_colour_bar(root: &Area, first: &Heatmap, lay: &Layout) -> Result<()> {
    let bx = lay.panel_w * lay.per_row as f64 + 14.0;
    let by = lay.fig_title_h + lay.top;
    let bh = lay.bar_h;
    let n = 64;
    for i in 0..n {
        let t = 1.0 - i as f64 / (n - 1) as f64;
        let (rr, gg, bb) = first.cmap.rgb(t);
        let ya = by + bh * i as f64 / n as f64;
        let yb = by + bh * (i + 1) as f64 / n as f64;
        root.draw(&Rectangle::new(
            [
                (bx as i32, ya as i32),
                ((bx + 16.0) as i32, yb.ceil() as i32),
            ],
            RGBColor(rr, gg, bb).filled(),
        ))
        .map_err(draw_err)?;
    }
    root.draw(&Rectangle::new(
        [
            (bx as i32, by as i32),
            ((bx + 16.0) as i32, (by + bh) as i32),
        ],
        ShapeStyle::from(&BLACK).stroke_width(1),
    ))
    .map_err(draw_err)?;
    let shared = lay.shared;
    for i in 0..5 {
        let f = i as f64 / 4.0;
        let v = shared.1 - (shared.1 - shared.0) * f as f32;
        super::draw_text(
            root,
            &fmt_tick(v),
            (bx + 20.0, by + bh * f),
            TICK - 1.0,
            Pos::new(HPos::Left, VPos::Center),
            false,
        )?;
    }
    super::draw_text(
        root,
        bar_label(first),
        (bx, by + bh + 8.0),
        TICK,
        Pos::new(HPos::Left, VPos::Top),
        false,
    )
}

/// One head's attention pattern [query, key]: query tokens down, key tokens across, cells a
/// query cannot see (the future) left blank, on a 0–1 scale.
pub fn attention_pattern(tokens: &[String], pattern: &Tensor) -> Result<Heatmap> {
    let p = pattern.squeeze_dims_keep_2()?;
    let (q, k) = p.dims2()?;
    if q != tokens.len() || k != tokens.len() {
        return Err(Error::Shape(format!(
            "pattern has shape {:?} but there are {} tokens; pass one head's [query, key] pattern",
            p.dims(),
            tokens.len()
        )));
    }
    let mut v = p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    for i in 0..q {
        for j in (i + 1)..k {
            v[i * k + j] = f32::NAN;
        }
    }
    let labels: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t} ({i})"))
        .collect();
    let h = Heatmap::new(
        v,
        Axis::labelled("query", labels.clone()),
        Axis::labelled("key", labels),
    )?
    .cmap(Colormap::Blues)
    .range(0.0, 1.0)
    .value_label("attention");
    Ok(h)
}

/// Several heads' patterns ([n_heads, q, k], or [1, n_heads, q, k] straight from the cache)
/// as a grid of panels titled by `head_names`.
pub fn attention_grid(
    tokens: &[String],
    pattern: &Tensor,
    head_names: &[String],
) -> Result<Panels> {
    let mut p = pattern.clone();
    while p.rank() > 3 && p.dim(0)? == 1 {
        p = p.squeeze(0)?;
    }
    let (n, _, _) = p.dims3().map_err(|_| {
        Error::Shape(format!(
            "attention_grid needs [n_heads, q, k], got {:?}",
            pattern.dims()
        ))
    })?;
    let mut panels = Vec::with_capacity(n);
    for h in 0..n {
        let name = head_names
            .get(h)
            .cloned()
            .unwrap_or_else(|| format!("head {h}"));
        panels.push(attention_pattern(tokens, &p.get(h)?)?.title(name));
    }
    Ok(Panels::new(panels).per_row(4.min(n)))
}
