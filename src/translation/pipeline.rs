//! The translation-head study for one direction, computed end to end: which pairs, which
//! options, and every number the report shows. Writing it to disk is `crate::report`'s job.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::table::Table;
use crate::translation::causal::{
    ablation_check, path_ranking, CausalOptions, CausalResult, PathRanking,
};
use crate::translation::data::{filter_pairs, load_pairs, FilterReport};
use crate::translation::score::{
    aligned_scores, score_heads, AlignedScores, HeadScores, ScoreOptions,
};
use crate::translation::stats::{head_stats, HeadStats};

/// Every direction the shipped data supports: EN→X, X→EN and the ZH→X pivot.
pub const DEFAULT_DIRECTIONS: &[&str] = &[
    "en-fr", "en-de", "en-es", "en-ja", "en-ar", "en-zh", "fr-en", "de-en", "es-en", "ja-en",
    "ar-en", "zh-en", "zh-fr", "zh-de",
];

/// Options of the whole run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Directions as (src, tgt) language codes.
    pub directions: Vec<(String, String)>,
    /// Folder of `{src}-{tgt}.tsv` files.
    pub data: PathBuf,
    /// Use at most this many pairs per direction (after the filter).
    pub limit: Option<usize>,
    /// Output folder.
    pub out: PathBuf,
    /// Scoring options.
    pub score: ScoreOptions,
    /// Causal-check options; `None` skips the check and path patching.
    pub causal: Option<CausalOptions>,
    /// False-discovery rate for the head lists.
    pub fdr: f32,
    /// Bootstrap resamples.
    pub n_boot: usize,
    /// Permutations.
    pub n_perm: usize,
    /// The original study's thresholds, printed for comparison.
    pub thresholds: Vec<f32>,
    /// Seed for every random choice.
    pub seed: u64,
    /// Model name for the report.
    pub model_name: String,
}

impl RunOptions {
    /// Defaults: every shipped direction from `data`, written to `out`.
    pub fn new(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunOptions {
            directions: DEFAULT_DIRECTIONS
                .iter()
                .filter_map(|d| parse_direction(d).ok())
                .collect(),
            data: data.into(),
            limit: None,
            out: out.into(),
            score: ScoreOptions::default(),
            causal: Some(CausalOptions::default()),
            fdr: 0.05,
            n_boot: 1000,
            n_perm: 10_000,
            thresholds: vec![0.04, 0.075],
            seed: 7,
            model_name: "gemma3-270m".into(),
        }
    }
}

/// `en-fr` → ("en", "fr").
pub fn parse_direction(s: &str) -> Result<(String, String)> {
    let s = s.trim().to_lowercase();
    match s.split_once(['-', '_']) {
        Some((a, b))
            if !a.is_empty()
                && !b.is_empty()
                && a.chars().all(|c| c.is_ascii_alphabetic())
                && b.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            Ok((a.into(), b.into()))
        }
        _ => Err(Error::Invalid(format!(
            "direction {s:?}: write it as src-tgt, e.g. en-fr"
        ))),
    }
}

/// A head list: (layer, head, translation − random), largest first.
pub type HeadList = Vec<(usize, usize, f32)>;

/// Everything found for one direction.
#[derive(Debug, Clone)]
pub struct DirectionResult {
    /// Source language.
    pub src: String,
    /// Target language.
    pub tgt: String,
    /// What the filter did.
    pub filter: FilterReport,
    /// Pairs scored.
    pub n_pairs: usize,
    /// Mean scores.
    pub scores: HeadScores,
    /// Intervals, p- and q-values.
    pub stats: HeadStats,
    /// Heads significant at the FDR, (layer, head, diff), largest first.
    pub fdr_heads: Vec<(usize, usize, f32)>,
    /// Heads above each original threshold.
    pub threshold_heads: Vec<(f32, HeadList)>,
    /// The alignment-aware variant.
    pub aligned: AlignedScores,
    /// The ablation check.
    pub causal: Option<CausalResult>,
    /// Path patching's ranking.
    pub path: Option<PathRanking>,
    /// Wall time of this direction.
    pub seconds: f64,
}

/// Scores one direction: filtered pairs, head scores, statistics, the alignment-aware
/// variant and (with `opts.causal`) the ablation check and path patching. Writes nothing.
pub fn analyse_direction(
    model: &HookedTransformer,
    src: &str,
    tgt: &str,
    opts: &RunOptions,
) -> Result<DirectionResult> {
    let t0 = Instant::now();
    let all = load_pairs(&opts.data, src, tgt)?;
    let (mut pairs, filter) = filter_pairs(model, &all, src, tgt)?;
    if let Some(n) = opts.limit {
        pairs.truncate(n);
    }
    if pairs.len() < 4 {
        return Err(Error::Invalid(format!(
            "{src}→{tgt}: only {} pairs passed the filter ({filter:?}); need at least 4",
            pairs.len()
        )));
    }
    let scores = score_heads(model, &pairs, src, tgt, &opts.score)?;
    let stats = head_stats(
        &scores.per_pair_translation,
        &scores.per_pair_random,
        opts.n_boot,
        opts.n_perm,
        0.95,
        opts.seed,
    );
    let h = model.cfg().n_heads;
    let mut fdr_heads: Vec<(usize, usize, f32)> = (0..stats.q.len())
        .filter(|&i| stats.q[i] <= opts.fdr && stats.diff[i] > 0.0)
        .map(|i| (i / h, i % h, stats.diff[i]))
        .collect();
    fdr_heads.sort_by(|a, b| b.2.total_cmp(&a.2));
    let threshold_heads = opts
        .thresholds
        .iter()
        .map(|&t| (t, scores.heads_above(t)))
        .collect();
    let aligned = aligned_scores(model, &scores, 3)?;

    let (causal, path) = match &opts.causal {
        None => (None, None),
        Some(co) => {
            let (heads, note) = if fdr_heads.is_empty() {
                let top: Vec<(usize, usize)> = scores
                    .heads_above(f32::NEG_INFINITY)
                    .into_iter()
                    .take(3)
                    .map(|(l, h, _)| (l, h))
                    .collect();
                (
                    top,
                    format!(
                        "no head passed FDR {}; the 3 heads with the largest difference",
                        opts.fdr
                    ),
                )
            } else if fdr_heads.len() > 8 {
                (
                    fdr_heads.iter().take(8).map(|&(l, h, _)| (l, h)).collect(),
                    format!(
                        "the 8 largest of the {} heads significant at FDR {}",
                        fdr_heads.len(),
                        opts.fdr
                    ),
                )
            } else {
                (
                    fdr_heads.iter().map(|&(l, h, _)| (l, h)).collect(),
                    format!(
                        "the {} heads significant at FDR {}",
                        fdr_heads.len(),
                        opts.fdr
                    ),
                )
            };
            let c = ablation_check(model, &pairs, src, tgt, &heads, &note, co)?;
            let p = path_ranking(model, &pairs, src, tgt, &scores.diff, co).ok();
            (Some(c), p)
        }
    };

    let result = DirectionResult {
        src: src.into(),
        tgt: tgt.into(),
        filter,
        n_pairs: pairs.len(),
        scores,
        stats,
        fdr_heads,
        threshold_heads,
        aligned,
        causal,
        path,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(result)
}

impl DirectionResult {
    /// The difference table.
    pub fn diff(&self) -> &Table {
        &self.scores.diff
    }
}
