//! Line, scatter and bar charts.

use std::fmt::Write as _;

use plotters::prelude::*;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{append_overlay, draw_err, draw_text, esc, fmt_value, text_width, tick_label, Figure};
use crate::error::{Error, Result};
use crate::table::Table;

const TICK: f64 = 12.0;
const TITLE: f64 = 18.0;
const LABEL: f64 = 14.0;
/// The smallest canvas a chart draws on; smaller sizes are raised to it.
const MIN_SIZE: (u32, u32) = (240, 200);

/// A chart's size: at least [`MIN_SIZE`].
fn clamp_size(size: (u32, u32)) -> (u32, u32) {
    (size.0.max(MIN_SIZE.0), size.1.max(MIN_SIZE.1))
}

/// Width of the plot area of a chart `w` wide (the y label area and margins taken off).
fn plot_width(w: u32) -> f64 {
    w as f64 - 64.0 - 24.0
}

/// A white canvas `size` wide with the title wrapped across its top, grown taller where the
/// title and `below` pixels (labels and a readable plot) need it; and the area under the title.
fn canvas<'a>(
    svg: &'a mut String,
    size: (u32, u32),
    title: &str,
    below: f64,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>> {
    let (w, h) = clamp_size(size);
    let lines = if title.is_empty() {
        Vec::new()
    } else {
        super::wrap(title, w as f64 - 24.0, TITLE)
    };
    let band = if lines.is_empty() {
        0.0
    } else {
        lines.len() as f64 * TITLE * 1.25 + 20.0
    };
    let h = h.max((band + below + 24.0).ceil() as u32);
    let root = SVGBackend::with_string(svg, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    if lines.is_empty() {
        return Ok(root);
    }
    super::draw_title(&root, &lines, w as f64 / 2.0, 8.0, TITLE)?;
    Ok(root.split_vertically(band.ceil() as u32).1)
}

const LEGEND: f64 = 13.0;

/// Legend entries (a line and the series name) laid out in rows `width` wide: each entry's x,
/// its width, and the y of its row's centre.
fn legend_layout(names: &[&str], width: f64) -> Vec<(f64, f64, f64)> {
    let (mut x, mut y) = (0.0, 0.0);
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let w = 24.0 + text_width(n, LEGEND) + 16.0;
        if x > 0.0 && x + w > width {
            x = 0.0;
            y += LEGEND * 1.5;
        }
        out.push((x, w, y));
        x += w;
    }
    out
}

/// A chart's plot area: f64 coordinates on an SVG canvas.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The height of the band that holds a legend laid out by [`legend_layout`].
fn legend_band(legend: &[(f64, f64, f64)]) -> f64 {
    legend.iter().map(|e| e.2).fold(0.0, f64::max) + if legend.is_empty() { 0.0 } else { 24.0 }
}

/// Draws the legend entries (a line in the series colour and its name) on `area`.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    legend: &[(f64, f64, f64)],
    names: &[&str],
) -> Result<()> {
    for (k, (x, _, y)) in legend.iter().enumerate() {
        let (x, y) = (12.0 + x, y + 10.0);
        area.draw(&PathElement::new(
            vec![(x as i32, y as i32), (x as i32 + 18, y as i32)],
            color(k).stroke_width(2),
        ))
        .map_err(draw_err)?;
        draw_text(
            area,
            names[k],
            (x + 24.0, y),
            LEGEND,
            Pos::new(HPos::Left, VPos::Center),
            false,
        )?;
    }
    Ok(())
}

/// The least height a plot area gets.
const MIN_PLOT: f64 = 100.0;

/// How categorical x labels fit under a plot whose categories are `slot` px apart: across when
/// every label fits its slot, else reading upwards and, where even that is too tight, every
/// k-th only.
struct XLabels {
    upwards: bool,
    every: usize,
    height: f64,
    widest: f64,
}

impl XLabels {
    fn layout(labels: &[String], slot: f64) -> Self {
        // plotters renders a font of size s at s / 1.24 px; 0.92 keeps a little slack.
        let widest = labels
            .iter()
            .map(|l| 0.92 * text_width(l, TICK))
            .fold(1.0, f64::max);
        if widest + 6.0 <= slot {
            XLabels {
                upwards: false,
                every: 1,
                height: TICK * 1.25 + 6.0,
                widest,
            }
        } else {
            XLabels {
                upwards: true,
                every: ((TICK * 1.25 + 2.0) / slot.max(1e-6)).ceil().max(1.0) as usize,
                height: widest + 10.0,
                widest,
            }
        }
    }

    /// The label area's height: the labels, and the axis title under them.
    fn area(&self, desc: &str) -> u32 {
        (self.height
            + if desc.is_empty() {
                4.0
            } else {
                LABEL * 1.25 + 10.0
            })
        .ceil() as u32
    }

    /// Draws label i at pixel (x, y), y being the plot's lower edge.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: &[String],
        at: impl Fn(usize) -> (i32, i32),
    ) -> Result<()> {
        // `at` gives canvas pixels; the area draws relative to its own corner.
        let (bx, by) = area.get_base_pixel();
        for (i, l) in labels.iter().enumerate().step_by(self.every) {
            let (x, y) = at(i);
            // Upwards, the label's end touches the axis; across, its top does.
            let pos = if self.upwards {
                Pos::new(HPos::Right, VPos::Center)
            } else {
                Pos::new(HPos::Center, VPos::Top)
            };
            let at = ((x - bx) as f64, (y - by) as f64 + 6.0);
            draw_text(area, l, at, TICK, pos, self.upwards)?;
        }
        Ok(())
    }
}

/// Series colours (Tableau 10).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// (lo, hi) of finite values with 5% padding; a flat range is widened.
fn padded(vals: impl Iterator<Item = f32>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v as f64), b.max(v as f64))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Lines over a categorical x axis (e.g. layers), one per named series, with a legend.
#[derive(Debug, Clone)]
pub struct LinePlot {
    /// Title.
    pub title: String,
    /// x tick labels, one per point.
    pub x: Vec<String>,
    /// (name, values) per series; each has one value per x.
    pub series: Vec<(String, Vec<f32>)>,
    /// x axis title.
    pub xlabel: String,
    /// y axis title.
    pub ylabel: String,
    /// Canvas size in pixels (default 760 × 440).
    pub size: Option<(u32, u32)>,
}

impl LinePlot {
    /// Sets the canvas size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Lines over `x`.
    pub fn new(x: Vec<String>) -> Self {
        LinePlot {
            title: String::new(),
            x,
            series: Vec::new(),
            size: None,
            xlabel: String::new(),
            ylabel: String::new(),
        }
    }

    /// Adds a series.
    pub fn series(mut self, name: impl Into<String>, values: Vec<f32>) -> Result<Self> {
        if values.len() != self.x.len() {
            return Err(Error::Shape(format!(
                "series has {} values for {} x positions",
                values.len(),
                self.x.len()
            )));
        }
        self.series.push((name.into(), values));
        Ok(self)
    }

    /// Sets title and axis titles.
    pub fn labels(mut self, title: &str, xlabel: &str, ylabel: &str) -> Self {
        self.title = title.into();
        self.xlabel = xlabel.into();
        self.ylabel = ylabel.into();
        self
    }

    /// One line per column of a 2-D table (x = its rows), e.g. the logit lens's
    /// [layer][token] probabilities.
    pub fn from_table(t: &Table) -> Result<Self> {
        if t.axes.len() != 2 {
            return Err(Error::Shape(format!(
                "a line plot needs a 2-D table; this one has axes {:?}",
                t.shape()
            )));
        }
        let (r, c) = (t.axes[0].len(), t.axes[1].len());
        let mut p =
            LinePlot::new(t.axes[0].labels.clone()).labels(&t.title, &t.axes[0].name, "value");
        for j in 0..c {
            p = p.series(
                t.axes[1].labels[j].clone(),
                (0..r).map(|i| t.values[i * c + j]).collect(),
            )?;
        }
        Ok(p)
    }

    /// Renders the chart.
    pub fn render(&self) -> Result<Figure> {
        let n = self.x.len().max(1);
        let (lo, hi) = padded(self.series.iter().flat_map(|s| s.1.iter().copied()));
        let mut svg = String::new();
        let mut overlay = String::new();
        {
            let size = clamp_size(self.size.unwrap_or((760, 440)));
            let xmax = (n.max(2) - 1) as f64;
            let labels: Vec<String> = self.x.iter().map(|l| tick_label(l)).collect();
            let xl = XLabels::layout(&labels, plot_width(size.0) / (xmax + 0.6));
            // The legend sits in a band above the plot, where it cannot cover the data.
            let names: Vec<&str> = self.series.iter().map(|s| s.0.as_str()).collect();
            let legend = legend_layout(&names, size.0 as f64 - 24.0);
            let band = legend_band(&legend);
            let root = canvas(
                &mut svg,
                size,
                &self.title,
                xl.area(&self.xlabel) as f64 + MIN_PLOT + band,
            )?;
            let (legend_area, root) = root.split_vertically(band.ceil() as u32);
            draw_legend(&legend_area, &legend, &names)?;
            let mut chart = self.line_chart(&root, &xl, (n, xmax), (lo, hi))?;
            xl.draw(&root, &labels, |i| chart.backend_coord(&(i as f64, lo)))?;
            self.draw_lines(&mut chart, &mut overlay)?;
            root.present().map_err(draw_err)?;
        }
        Ok(Figure::new(append_overlay(svg, &overlay)))
    }

    /// The plot area on `root` for `n` categories (x up to `xmax`) and y in `lo..hi`, with its axes drawn (the
    /// x labels left to `xl`).
    fn line_chart<'a, 'b>(
        &self,
        root: &'a DrawingArea<SVGBackend<'b>, Shift>,
        xl: &XLabels,
        (n, xmax): (usize, f64),
        (lo, hi): (f64, f64),
    ) -> Result<Chart<'a, 'b>> {
        // Margins leave room for half of the first and last labels when they read across.
        let side = if xl.upwards {
            12.0
        } else {
            (xl.widest / 2.0).max(12.0)
        };
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .margin_right(side as u32)
            .x_label_area_size(xl.area(&self.xlabel))
            .y_label_area_size(64)
            .build_cartesian_2d(-0.3f64..xmax + 0.3, lo..hi)
            .map_err(draw_err)?;
        let y_ticks = (chart.plotting_area().dim_in_pixel().1 as usize / 30).clamp(2, 10);
        chart
            .configure_mesh()
            .x_desc(&self.xlabel)
            .y_desc(&self.ylabel)
            .x_labels(n.min(40))
            .x_label_formatter(&|_| String::new())
            .y_labels(y_ticks)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_err)?;
        Ok(chart)
    }

    /// Draws each series' line (its finite values) on `chart`, and its points, with hover
    /// titles, into `overlay`.
    fn draw_lines(&self, chart: &mut Chart<'_, '_>, overlay: &mut String) -> Result<()> {
        for (k, (name, vals)) in self.series.iter().enumerate() {
            let c = color(k);
            let pts: Vec<(f64, f64)> = vals
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as f64, v as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(draw_err)?;
            let _ = write!(
                overlay,
                "<g class=\"points\" data-series=\"{}\">",
                esc(name)
            );
            for (x, y) in pts {
                let (px, py) = chart.backend_coord(&(x, y));
                let _ = write!(
                    overlay,
                    "<circle class=\"point\" cx=\"{px}\" cy=\"{py}\" r=\"3.5\" fill=\"{}\"><title>{}: {} = {}</title></circle>",
                    hex(c),
                    esc(name),
                    esc(&self.x[x as usize]),
                    fmt_value(y as f32)
                );
            }
            overlay.push_str("</g>");
        }
        Ok(())
    }

    /// Shows the chart inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        super::display_result(self.render())
    }
}

/// Labelled points with an optional y = x line, e.g. attribution vs activation patching.
#[derive(Debug, Clone)]
pub struct ScatterPlot {
    /// Title.
    pub title: String,
    /// (label, x, y) per point; the label shows on hover.
    pub points: Vec<(String, f32, f32)>,
    /// x axis title.
    pub xlabel: String,
    /// y axis title.
    pub ylabel: String,
    /// Draw the y = x reference line.
    pub diagonal: bool,
    /// Canvas size in pixels (default 560 × 520).
    pub size: Option<(u32, u32)>,
}

impl ScatterPlot {
    /// A scatter plot of labelled points, with the y = x line.
    pub fn new(points: Vec<(String, f32, f32)>) -> Self {
        ScatterPlot {
            title: String::new(),
            points,
            xlabel: "x".into(),
            ylabel: "y".into(),
            diagonal: true,
            size: None,
        }
    }

    /// Sets the canvas size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Sets title and axis titles.
    pub fn labels(mut self, title: &str, xlabel: &str, ylabel: &str) -> Self {
        self.title = title.into();
        self.xlabel = xlabel.into();
        self.ylabel = ylabel.into();
        self
    }

    /// Renders the chart.
    pub fn render(&self) -> Result<Figure> {
        let (xlo, xhi) = padded(self.points.iter().map(|p| p.1));
        let (ylo, yhi) = padded(self.points.iter().map(|p| p.2));
        let (xlo, xhi, ylo, yhi) = if self.diagonal {
            let (lo, hi) = (xlo.min(ylo), xhi.max(yhi));
            (lo, hi, lo, hi)
        } else {
            (xlo, xhi, ylo, yhi)
        };
        let mut svg = String::new();
        let mut overlay = String::from("<g class=\"points\">");
        {
            let root = canvas(
                &mut svg,
                self.size.unwrap_or((560, 520)),
                &self.title,
                44.0 + MIN_PLOT,
            )?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .margin_right(24)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(draw_err)?;
            // Numeric ticks about 60 px apart, so their labels never touch.
            let (pw, ph) = chart.plotting_area().dim_in_pixel();
            chart
                .configure_mesh()
                .x_desc(&self.xlabel)
                .y_desc(&self.ylabel)
                .x_labels((pw as usize / 60).clamp(2, 10))
                .y_labels((ph as usize / 30).clamp(2, 10))
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(draw_err)?;
            if self.diagonal {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(xlo, xlo), (xhi, xhi)],
                        6,
                        4,
                        RGBColor(150, 150, 150).stroke_width(1),
                    ))
                    .map_err(draw_err)?;
            }
            for (label, x, y) in self
                .points
                .iter()
                .filter(|p| p.1.is_finite() && p.2.is_finite())
            {
                let (px, py) = chart.backend_coord(&(*x as f64, *y as f64));
                let _ = write!(
                    overlay,
                    "<circle class=\"point\" cx=\"{px}\" cy=\"{py}\" r=\"4\" fill=\"{}\" fill-opacity=\"0.75\"><title>{}: ({}, {})</title></circle>",
                    hex(color(0)),
                    esc(label),
                    fmt_value(*x),
                    fmt_value(*y)
                );
            }
            root.present().map_err(draw_err)?;
        }
        overlay.push_str("</g>");
        Ok(Figure::new(append_overlay(svg, &overlay)))
    }

    /// Shows the chart inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        super::display_result(self.render())
    }
}

/// Bars over categories, value on hover.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// (label, value) per bar.
    pub bars: Vec<(String, f32)>,
    /// x axis title.
    pub xlabel: String,
    /// y axis title.
    pub ylabel: String,
    /// Canvas size in pixels (default: 28 px per bar, 420 to 1200 wide, 440 tall).
    pub size: Option<(u32, u32)>,
}

impl BarChart {
    /// Sets the canvas size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// A bar chart of labelled values.
    pub fn new(bars: Vec<(String, f32)>) -> Self {
        BarChart {
            title: String::new(),
            bars,
            xlabel: String::new(),
            ylabel: String::new(),
            size: None,
        }
    }

    /// Sets title and axis titles.
    pub fn labels(mut self, title: &str, xlabel: &str, ylabel: &str) -> Self {
        self.title = title.into();
        self.xlabel = xlabel.into();
        self.ylabel = ylabel.into();
        self
    }

    /// Bars from a 1-D table.
    pub fn from_table(t: &Table) -> Result<Self> {
        if t.axes.len() != 1 {
            return Err(Error::Shape(format!(
                "a bar chart needs a 1-D table; this one has axes {:?}",
                t.shape()
            )));
        }
        Ok(BarChart::new(
            t.axes[0]
                .labels
                .iter()
                .cloned()
                .zip(t.values.iter().copied())
                .collect(),
        )
        .labels(&t.title, &t.axes[0].name, "value"))
    }

    /// Renders the chart.
    pub fn render(&self) -> Result<Figure> {
        let n = self.bars.len().max(1);
        let (lo, hi) = padded(self.bars.iter().map(|b| b.1).chain([0.0]));
        let width = (120 + n * 28).clamp(420, 1200) as u32;
        let mut svg = String::new();
        let mut overlay = String::from("<g class=\"bars\">");
        {
            let size = clamp_size(self.size.unwrap_or((width, 440)));
            let labels: Vec<String> = self.bars.iter().map(|b| tick_label(&b.0)).collect();
            let xl = XLabels::layout(&labels, plot_width(size.0) / n as f64);
            let root = canvas(
                &mut svg,
                size,
                &self.title,
                xl.area(&self.xlabel) as f64 + MIN_PLOT,
            )?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(xl.area(&self.xlabel))
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..n as f64, lo..hi)
                .map_err(draw_err)?;
            let y_ticks = (chart.plotting_area().dim_in_pixel().1 as usize / 30).clamp(2, 10);
            chart
                .configure_mesh()
                .x_desc(&self.xlabel)
                .y_desc(&self.ylabel)
                .axis_desc_style(("sans-serif", 14))
                .disable_x_mesh()
                .x_labels(n * 2 + 1)
                .x_label_formatter(&|_| String::new())
                .y_labels(y_ticks)
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(draw_err)?;
            xl.draw(&root, &labels, |i| {
                chart.backend_coord(&(i as f64 + 0.5, lo))
            })?;
            for (i, (label, v)) in self.bars.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let (x0, y0) = chart.backend_coord(&(i as f64 + 0.15, v.max(0.0) as f64));
                let (x1, y1) = chart.backend_coord(&(i as f64 + 0.85, v.min(0.0) as f64));
                let _ = write!(
                    overlay,
                    "<rect class=\"bar\" x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}: {}</title></rect>",
                    (x1 - x0).max(1),
                    (y1 - y0).max(1),
                    hex(color(if *v >= 0.0 { 0 } else { 3 })),
                    esc(label),
                    fmt_value(*v)
                );
            }
            root.present().map_err(draw_err)?;
        }
        overlay.push_str("</g>");
        Ok(Figure::new(append_overlay(svg, &overlay)))
    }

    /// Shows the chart inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        super::display_result(self.render())
    }
}
