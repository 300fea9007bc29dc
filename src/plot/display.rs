//! Pictures of the toolkit's results (tables, patching, attribution, the lens, translation
//! scores): each result type's figure and its `evcxr_display` live here, so ending a notebook
//! cell with the value shows the plot while the result types themselves know nothing of SVG.

use super::{display_result, BarChart, Colormap, Figure, Heatmap, LinePlot, Panels, ScatterPlot};
use crate::error::{Error, Result};
use crate::lens::{Dla, LogitLens};
use crate::patching::{Agreement, Attribution, PatchResult};
use crate::table::{Axis, Table};
use crate::translation::{DirectionResult, HeadScores};

impl Table {
    /// A heatmap of a 2-D table (a 3-D one has its first two axes merged into rows).
    pub fn heatmap(&self) -> Result<Heatmap> {
        match self.axes.len() {
            2 => Heatmap::from_table(self),
            3 => {
                let (a, b) = (&self.axes[0], &self.axes[1]);
                let rows: Vec<String> = a
                    .labels
                    .iter()
                    .flat_map(|x| b.labels.iter().map(move |y| format!("{x}.{y}")))
                    .collect();
                let mut h = Heatmap::new(
                    self.values.clone(),
                    Axis::labelled(&format!("{}.{}", a.name, b.name), rows),
                    self.axes[2].clone(),
                )?;
                h.title = self.title.clone();
                Ok(h)
            }
            n => Err(Error::Shape(format!(
                "a heatmap needs a 2-D or 3-D table, not {n}-D"
            ))),
        }
    }

    /// One line per column over the rows (2-D tables).
    pub fn lines(&self) -> Result<LinePlot> {
        LinePlot::from_table(self)
    }

    /// Bars (1-D tables).
    pub fn bars(&self) -> Result<BarChart> {
        BarChart::from_table(self)
    }

    /// The table's natural picture: bars for 1-D, a heatmap otherwise.
    pub fn render(&self) -> Result<Figure> {
        if self.axes.len() == 1 {
            self.bars()?.render()
        } else {
            self.heatmap()?.render()
        }
    }

    /// Shows the table inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}

impl PatchResult {
    /// A heatmap centred on 0 of the patch's effect: denoising shows the normalized table
    /// (1 = clean behaviour restored), noising the damage, 1 − normalized (0 = no effect), so
    /// the few components that matter stand out either way. The title says which.
    pub fn heatmap(&self) -> Result<Heatmap> {
        let (table, label) = self.effect();
        let mut h = table.heatmap()?.cmap(Colormap::RdBu).value_label(label);
        h.title = format!(
            "{} {} ({}, {label}): clean {:.3}, corrupted {:.3}",
            self.what,
            self.metric,
            self.direction.name(),
            self.clean_value,
            self.corrupted_value
        );
        Ok(h)
    }

    /// Renders [`PatchResult::heatmap`].
    pub fn render(&self) -> Result<Figure> {
        self.heatmap()?.render()
    }

    /// Shows the result inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}

impl Attribution {
    /// The per-head estimates as a heatmap.
    pub fn render(&self) -> Result<Figure> {
        self.head_out
            .heatmap()?
            .value_label("Δ metric (estimate)")
            .render()
    }

    /// Shows the per-head estimates inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}

impl Agreement {
    /// Attribution estimate against the actual change, with y = x.
    pub fn scatter(&self) -> ScatterPlot {
        ScatterPlot::new(self.points.clone()).labels(
            &format!(
                "attribution vs activation patching (pearson {:.3})",
                self.pearson
            ),
            "attribution estimate",
            "activation patching change",
        )
    }

    /// Shows the scatter plot inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.scatter().render())
    }
}

impl Dla {
    /// The components as bars.
    pub fn render(&self) -> Result<Figure> {
        self.components.bars()?.render()
    }

    /// Shows the components inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}

impl LogitLens {
    /// A [layer × position] heatmap of the top token's probability, the token on hover.
    pub fn heatmap(&self) -> Result<Heatmap> {
        let s = self.n_positions();
        let l = self.layer_labels.len();
        let mut vals = vec![0f32; l * s];
        let mut notes = vec![String::new(); l * s];
        for pos in 0..s {
            for (layer, row) in self.top_k(pos, 1)?.into_iter().enumerate() {
                if let Some((tok, p)) = row.into_iter().next() {
                    vals[layer * s + pos] = p;
                    notes[layer * s + pos] = format!("top token {tok:?}");
                }
            }
        }
        let positions: Vec<String> = self.str_tokens.clone();
        let mut h = Heatmap::new(
            vals,
            Axis::labelled("layer", self.layer_labels.clone()),
            Axis::labelled("position", positions),
        )?
        .cmap(Colormap::Viridis)
        .range(0.0, 1.0)
        .value_label("top-1 prob")
        .title("logit lens: top token probability");
        h.notes = Some(notes);
        Ok(h)
    }

    /// Renders [`LogitLens::heatmap`].
    pub fn render(&self) -> Result<Figure> {
        self.heatmap()?.render()
    }

    /// Shows the lens inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.render())
    }
}

impl HeadScores {
    /// The Translation | Random | Diff figure, one shared colour scale.
    pub fn panels(&self, title: &str) -> Result<Panels> {
        Ok(Panels::new(vec![
            self.translation.heatmap()?.title("Translation"),
            self.random.heatmap()?.title("Random"),
            self.diff.heatmap()?.title("Diff"),
        ])
        .title(title))
    }

    /// Shows the three panels inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.panels(&self.diff.title).and_then(|p| p.render()));
    }
}

impl DirectionResult {
    /// The Translation | Random | Diff figure, titled with the direction.
    pub fn panels(&self) -> Result<Panels> {
        self.scores.panels(&format!(
            "{}→{}",
            self.src.to_uppercase(),
            self.tgt.to_uppercase()
        ))
    }

    /// Shows the three panels inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        display_result(self.panels().and_then(|p| p.render()));
    }
}
