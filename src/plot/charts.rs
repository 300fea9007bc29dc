//! Line, scatter and bar charts.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{append_overlay, draw_err, esc, fmt_value, tick_label, Figure};
use crate::error::{Error, Result};
use crate::table::Table;

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
}

impl LinePlot {
    /// Lines over `x`.
    pub fn new(x: Vec<String>) -> Self {
        LinePlot {
            title: String::new(),
            x,
            series: Vec::new(),
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
            let root = SVGBackend::with_string(&mut svg, (760, 440)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let xmax = (n.max(2) - 1) as f64;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(48)
                .y_label_area_size(64)
                .build_cartesian_2d(-0.3f64..xmax + 0.3, lo..hi)
                .map_err(draw_err)?;
            let labels = self.x.clone();
            // Every label when they fit, else every k-th.
            let widest = labels
                .iter()
                .map(|l| super::text_width(&tick_label(l), 12.0))
                .fold(1.0, f64::max);
            let every = ((widest + 6.0) * n as f64 / 640.0).ceil().max(1.0) as usize;
            let fmt = move |v: &f64| {
                let i = v.round();
                if (v - i).abs() < 1e-6
                    && i >= 0.0
                    && (i as usize) < labels.len()
                    && (i as usize).is_multiple_of(every)
                {
                    tick_label(&labels[i as usize])
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .x_desc(&self.xlabel)
                .y_desc(&self.ylabel)
                .x_labels(n.min(20))
                .x_label_formatter(&fmt)
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(draw_err)?;
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
                    .map_err(draw_err)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
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
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(draw_err)?;
            root.present().map_err(draw_err)?;
        }
        Ok(Figure::new(append_overlay(svg, &overlay)))
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
        }
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
            let root = SVGBackend::with_string(&mut svg, (560, 520)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(&self.xlabel)
                .y_desc(&self.ylabel)
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
}

impl BarChart {
    /// A bar chart of labelled values.
    pub fn new(bars: Vec<(String, f32)>) -> Self {
        BarChart {
            title: String::new(),
            bars,
            xlabel: String::new(),
            ylabel: String::new(),
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
        let rotate = self
            .bars
            .iter()
            .any(|b| super::text_width(&tick_label(&b.0), 12.0) > 26.0);
        let mut svg = String::new();
        let mut overlay = String::from("<g class=\"bars\">");
        {
            let root = SVGBackend::with_string(&mut svg, (width, 440)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let labels: Vec<String> = self.bars.iter().map(|b| tick_label(&b.0)).collect();
            let fmt = move |v: &f64| {
                let i = (v - 0.5).round();
                if (v - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            };
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(if rotate { 130 } else { 44 })
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..n as f64, lo..hi)
                .map_err(draw_err)?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(&self.xlabel)
                .y_desc(&self.ylabel)
                .axis_desc_style(("sans-serif", 14))
                .disable_x_mesh()
                .x_labels(n * 2 + 1)
                .x_label_formatter(&fmt)
                .light_line_style(TRANSPARENT);
            if rotate {
                mesh.x_label_style(
                    ("sans-serif", 12)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                );
            }
            mesh.draw().map_err(draw_err)?;
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
