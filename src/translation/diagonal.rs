//! The diagonal score itself: the mean attention on the main diagonal and its neighbours of
//! each head's cropped pattern, and its mean over prompts as a [layers × heads] table.

use crate::error::Result;
use crate::model::HookedTransformer;
use crate::table::{Axis, Table};
use crate::translation::attend::PromptAttention;

/// Mean of the main diagonal and the ±1…±bandwidth off-diagonals of a [rows × cols]
/// rectangle (row-major), each diagonal averaged on its own first; diagonals that fall
/// outside the rectangle are skipped. NaN when none fits.
pub fn diagonal_score(rect: &[f32], rows: usize, cols: usize, bandwidth: usize) -> f32 {
    let mut means = Vec::new();
    let b = bandwidth as isize;
    for k in -b..=b {
        let (mut sum, mut n) = (0f32, 0usize);
        for i in 0..rows as isize {
            let j = i + k;
            if j >= 0 && (j as usize) < cols {
                sum += rect[i as usize * cols + j as usize];
                n += 1;
            }
        }
        if n > 0 {
            means.push(sum / n as f32);
        }
    }
    if means.is_empty() {
        f32::NAN
    } else {
        means.iter().sum::<f32>() / means.len() as f32
    }
}

/// The original score of one head's full pattern ([s × s], rows = queries): crop
/// `pattern[t.., 1..t]` and take [`diagonal_score`].
pub fn score_pattern(pattern: &[Vec<f32>], t: usize, bandwidth: usize) -> f32 {
    let s = pattern.len();
    if t < 2 || t >= s {
        return f32::NAN;
    }
    let (rows, cols) = (s - t, t - 1);
    let rect: Vec<f32> = (t..s)
        .flat_map(|q| (1..t).map(move |k| pattern[q][k]))
        .collect();
    diagonal_score(&rect, rows, cols, bandwidth)
}

/// Diagonal scores of scored prompts, [prompt][layer × head].
pub fn diagonal_scores(attn: &[PromptAttention], bandwidth: usize) -> Vec<Vec<f32>> {
    attn.iter()
        .map(|a| {
            a.crops
                .iter()
                .map(|c| diagonal_score(c, a.rows, a.cols, bandwidth))
                .collect()
        })
        .collect()
}

/// Mean over prompts, as a [layers × heads] table.
pub fn mean_table(
    model: &HookedTransformer,
    per_prompt: &[Vec<f32>],
    title: &str,
) -> Result<Table> {
    let cfg = model.cfg();
    let n = per_prompt.len().max(1) as f32;
    let mut v = vec![0f32; cfg.n_layers * cfg.n_heads];
    for row in per_prompt {
        for (a, x) in v.iter_mut().zip(row) {
            *a += x / n;
        }
    }
    Table::from_values(
        title,
        vec![
            Axis::numbered("layer", cfg.n_layers),
            Axis::numbered("head", cfg.n_heads),
        ],
        v,
    )
}
