//! `Table`: a result that knows its axes (layer × head, layer × position…), so the same value
//! prints, plots and serialises to JSON.

use std::fmt;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One axis of a table: a name and a label per index.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// e.g. `layer`, `head`, `kv_head`, `position`.
    pub name: String,
    /// One label per index (layer numbers, token strings…).
    pub labels: Vec<String>,
}

impl Axis {
    /// An axis labelled 0..n.
    pub fn numbered(name: &str, n: usize) -> Self {
        Axis {
            name: name.into(),
            labels: (0..n).map(|i| i.to_string()).collect(),
        }
    }

    /// An axis with the given labels.
    pub fn labelled(name: &str, labels: Vec<String>) -> Self {
        Axis {
            name: name.into(),
            labels,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the axis has no entries.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A dense table of f32 values over named, labelled axes (row-major). NaN marks entries
/// that do not exist (e.g. a sender head after the receiver); JSON writes them as null.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// What the values are, e.g. `logit_diff(" Paris" - " Rome")`.
    pub title: String,
    /// Axes, outermost first.
    pub axes: Vec<Axis>,
    /// Values, row-major over the axes.
    pub values: Vec<f32>,
}

impl Table {
    /// A table filled with NaN.
    pub fn new(title: impl Into<String>, axes: Vec<Axis>) -> Self {
        let n = axes.iter().map(|a| a.len()).product();
        Table {
            title: title.into(),
            axes,
            values: vec![f32::NAN; n],
        }
    }

    /// A table from values, checking their count.
    pub fn from_values(
        title: impl Into<String>,
        axes: Vec<Axis>,
        values: Vec<f32>,
    ) -> Result<Self> {
        let n: usize = axes.iter().map(|a| a.len()).product();
        if n != values.len() {
            return Err(Error::Shape(format!(
                "{} values for axes of sizes {:?}",
                values.len(),
                axes.iter().map(|a| a.len()).collect::<Vec<_>>()
            )));
        }
        Ok(Table {
            title: title.into(),
            axes,
            values,
        })
    }

    /// Sizes of the axes.
    pub fn shape(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.len()).collect()
    }

    fn offset(&self, idx: &[usize]) -> Result<usize> {
        if idx.len() != self.axes.len() {
            return Err(Error::Shape(format!(
                "{} indices for a {}-d table",
                idx.len(),
                self.axes.len()
            )));
        }
        let mut off = 0;
        for (i, (&x, a)) in idx.iter().zip(&self.axes).enumerate() {
            if x >= a.len() {
                return Err(Error::Invalid(format!(
                    "index {x} out of range for axis {i} ({}, size {})",
                    a.name,
                    a.len()
                )));
            }
            off = off * a.len() + x;
        }
        Ok(off)
    }

    /// The value at an index, e.g. `t.get(&[layer, head])?`.
    pub fn get(&self, idx: &[usize]) -> Result<f32> {
        Ok(self.values[self.offset(idx)?])
    }

    /// Sets the value at an index.
    pub fn set(&mut self, idx: &[usize], v: f32) -> Result<()> {
        let o = self.offset(idx)?;
        self.values[o] = v;
        Ok(())
    }

    /// The values as a tensor with the table's shape.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.values.clone(),
            self.shape(),
            &Device::Cpu,
        )?)
    }

    /// A new table with `f` applied to every value.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Table {
        Table {
            title: self.title.clone(),
            axes: self.axes.clone(),
            values: self.values.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Element-wise `self − other` under a new title; the shapes must match.
    pub fn minus(&self, other: &Table, title: impl Into<String>) -> Result<Table> {
        if self.shape() != other.shape() {
            return Err(Error::Shape(format!(
                "cannot subtract a table of shape {:?} from one of shape {:?}",
                other.shape(),
                self.shape()
            )));
        }
        Table::from_values(
            title,
            self.axes.clone(),
            self.values
                .iter()
                .zip(&other.values)
                .map(|(a, b)| a - b)
                .collect(),
        )
    }

    /// The (index, value) of the k largest finite values, largest first.
    pub fn top_k(&self, k: usize) -> Vec<(Vec<usize>, f32)> {
        let mut v: Vec<(usize, f32)> = self
            .values
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.into_iter()
            .take(k)
            .map(|(i, x)| (self.unravel(i), x))
            .collect()
    }

    fn unravel(&self, mut i: usize) -> Vec<usize> {
        let mut idx = vec![0; self.axes.len()];
        for (d, a) in self.axes.iter().enumerate().rev() {
            idx[d] = i % a.len().max(1);
            i /= a.len().max(1);
        }
        idx
    }

    /// Values nested by axis ([layer][head]…), NaN as null.
    pub fn nested_values(&self) -> Value {
        fn nest(vals: &[f32], shape: &[usize]) -> Value {
            if shape.is_empty() {
                return match vals.first() {
                    Some(v) if v.is_finite() => json!(v),
                    _ => Value::Null,
                };
            }
            let step: usize = shape[1..].iter().product();
            Value::Array(
                (0..shape[0])
                    .map(|i| nest(&vals[i * step..(i + 1) * step], &shape[1..]))
                    .collect(),
            )
        }
        nest(&self.values, &self.shape())
    }

    /// JSON: title, axes (names and labels) and nested values.
    pub fn to_json(&self) -> Value {
        json!({
            "title": self.title,
            "axes": self.axes.iter().map(|a| json!({"name": a.name, "labels": a.labels})).collect::<Vec<_>>(),
            "values": self.nested_values(),
        })
    }
}

impl fmt::Display for Table {
    /// A 2-D table prints as a grid; others as `index: value` lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        if self.axes.len() == 2 {
            let (r, c) = (&self.axes[0], &self.axes[1]);
            let w = c
                .labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(1)
                .clamp(7, 12);
            let rw = r
                .labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(1)
                .clamp(5, 16);
            write!(
                f,
                "{:>rw$}",
                format!("{}\\{}", r.name, c.name)
                    .chars()
                    .take(rw)
                    .collect::<String>()
            )?;
            for l in &c.labels {
                write!(f, " {:>w$}", l.chars().take(w).collect::<String>())?;
            }
            writeln!(f)?;
            for (i, rl) in r.labels.iter().enumerate() {
                write!(f, "{:>rw$}", rl.chars().take(rw).collect::<String>())?;
                for j in 0..c.len() {
                    let v = self.values[i * c.len() + j];
                    if v.is_finite() {
                        write!(f, " {v:>w$.4}")?;
                    } else {
                        write!(f, " {:>w$}", "-")?;
                    }
                }
                writeln!(f)?;
            }
            Ok(())
        } else {
            for (i, v) in self.values.iter().enumerate() {
                let idx = self.unravel(i);
                let labels: Vec<String> = idx
                    .iter()
                    .zip(&self.axes)
                    .map(|(&x, a)| format!("{}={}", a.name, a.labels[x]))
                    .collect();
                writeln!(f, "{}: {v:.4}", labels.join(", "))?;
            }
            Ok(())
        }
    }
}
