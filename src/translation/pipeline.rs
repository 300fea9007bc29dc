//! The translation-head study for one direction, computed end to end: which pairs, which
//! options, and every number the report shows. Writing it to disk is `crate::report`'s job.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::table::Table;
use crate::translation::causal::{
    try_ablation_check, try_path_ranking, CausalOptions, CausalResult, PathRanking,
};
use crate::translation::data::{filter_pairs, load_pairs, FilterReport, SentencePair};
use crate::translation::pairing::mixed_pair;
use crate::translation::score::{
    aligned_scores, name_format_scores, score_heads, AlignedScores, HeadScores, ScoreOptions,
};
use crate::translation::stage::{Shortfall, Skipped};
use crate::translation::stats::{
    head_stats, paired_stats, select_heads, HeadSelection, HeadStats, SelectOptions,
};

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
    /// Which statistics choose the heads.
    pub method: Method,
    /// The smallest paired difference that counts as an effect (paired method).
    pub min_effect: f32,
    /// Share of sources held out for confirmation (paired method); 0 turns the split off.
    pub split: f32,
}

/// How heads are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Per-source differences: found on one half (sign-flip test, FDR, minimum effect),
    /// confirmed on the other (interval above zero); causal checks on the held-out half.
    Paired,
    /// The original study's pooled statistics and random control, bit-exact, no split.
    Original,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paired" => Ok(Method::Paired),
            "original" => Ok(Method::Original),
            _ => Err(Error::Invalid(format!(
                "method {s:?}: use `paired` (the default) or `original`"
            ))),
        }
    }
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
            method: Method::Paired,
            min_effect: 0.02,
            split: 0.5,
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
    /// The original pooled statistics: intervals, p- and q-values.
    pub stats: HeadStats,
    /// Heads significant at the FDR by the pooled statistics, (layer, head, diff), largest first.
    pub fdr_heads: Vec<(usize, usize, f32)>,
    /// The paired analysis: discovery, confirmation, confirmed heads (`None` with
    /// `Method::Original`).
    pub selection: Option<HeadSelection>,
    /// Which pairs the causal checks used, in words.
    pub causal_pairs_note: String,
    /// Heads above each original threshold.
    pub threshold_heads: Vec<(f32, HeadList)>,
    /// The alignment-aware variant.
    pub aligned: AlignedScores,
    /// The ablation check.
    pub causal: Option<CausalResult>,
    /// Path patching's ranking.
    pub path: Option<PathRanking>,
    /// The confirmed heads rescored in the second prompt format.
    pub format_check: Option<FormatCheck>,
    /// Stages that failed, with their causes (the result is then incomplete).
    pub errors: Vec<String>,
    /// Stages skipped for too little data (the result is still complete).
    pub skipped: Vec<Skipped>,
    /// Wall time of this direction.
    pub seconds: f64,
}

/// Scores one direction: filtered pairs, head scores, statistics, the alignment-aware
/// variant and (with `opts.causal`) the ablation check and path patching. Writes nothing.
/// A stage with too little data is skipped (`skipped`), one that fails is recorded in
/// `errors`; neither stops the others.
pub fn analyse_direction(
    model: &HookedTransformer,
    src: &str,
    tgt: &str,
    opts: &RunOptions,
) -> Result<DirectionResult> {
    let t0 = Instant::now();
    let (pairs, filter) = direction_pairs(model, src, tgt, opts)?;
    let mut score_opts = opts.score.clone();
    if opts.method == Method::Original {
        score_opts.clean_control = false;
    }
    let scores = score_heads(model, &pairs, src, tgt, &score_opts)?;
    let stats = head_stats(
        &scores.per_pair_translation,
        &scores.per_pair_random,
        opts.n_boot,
        opts.n_perm,
        0.95,
        opts.seed,
    );
    let h = model.cfg().n_heads;
    let fdr_heads = fdr_heads(&stats, h, opts.fdr);
    let threshold_heads = opts
        .thresholds
        .iter()
        .map(|&t| (t, scores.heads_above(t)))
        .collect();
    let aligned = aligned_scores(model, &scores)?;
    let selection = (opts.method == Method::Paired).then(|| paired_selection(&scores, h, opts));
    let mut stages = Stages::default();
    let found = Found {
        pairs: &pairs,
        scores: &scores,
        fdr_heads: &fdr_heads,
        selection: selection.as_ref(),
    };
    let (causal, path, causal_pairs_note) =
        causal_stages(model, &found, (src, tgt), opts, &mut stages);
    let format = second_format(model, &found, (src, tgt), opts, &mut stages);
    for e in &stages.errors {
        eprintln!("{src}→{tgt}: {e}");
    }
    for k in &stages.skipped {
        eprintln!("{src}→{tgt}: {k}");
    }
    Ok(DirectionResult {
        src: src.into(),
        tgt: tgt.into(),
        filter,
        n_pairs: pairs.len(),
        scores,
        stats,
        fdr_heads,
        selection,
        causal_pairs_note,
        threshold_heads,
        aligned,
        causal,
        path,
        format_check: format,
        errors: stages.errors,
        skipped: stages.skipped,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The direction's filtered pairs (at most `opts.limit`), refused below 4.
fn direction_pairs(
    model: &HookedTransformer,
    src: &str,
    tgt: &str,
    opts: &RunOptions,
) -> Result<(Vec<SentencePair>, FilterReport)> {
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
    Ok((pairs, filter))
}

/// The paired analysis: heads found on the discovery half, confirmed on the held-out one.
fn paired_selection(scores: &HeadScores, n_heads: usize, opts: &RunOptions) -> HeadSelection {
    select_heads(
        &scores.paired_differences(),
        n_heads,
        &SelectOptions {
            fdr: opts.fdr,
            min_effect: opts.min_effect,
            split: opts.split,
            n_boot: opts.n_boot,
            n_perm: opts.n_perm,
            level: 0.95,
            seed: opts.seed,
        },
    )
}

/// What the scoring found, which the later stages check.
struct Found<'a> {
    pairs: &'a [SentencePair],
    scores: &'a HeadScores,
    fdr_heads: &'a [(usize, usize, f32)],
    selection: Option<&'a HeadSelection>,
}

/// Heads significant at `fdr` by the pooled statistics, (layer, head, diff), largest first.
fn fdr_heads(stats: &HeadStats, n_heads: usize, fdr: f32) -> HeadList {
    let mut v: HeadList = (0..stats.q.len())
        .filter(|&i| stats.q[i] <= fdr && stats.diff[i] > 0.0)
        .map(|i| (i / n_heads, i % n_heads, stats.diff[i]))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

/// What became of the optional stages: failures and skips, each in words.
#[derive(Default)]
struct Stages {
    errors: Vec<String>,
    skipped: Vec<Skipped>,
}

impl Stages {
    /// The stage's result; its failure or its shortfall is recorded instead.
    fn record<T>(
        &mut self,
        stage: &str,
        r: Result<std::result::Result<T, Shortfall>>,
    ) -> Option<T> {
        match r {
            Ok(Ok(v)) => Some(v),
            Ok(Err(s)) => {
                self.skipped.push(Skipped::new(stage, s));
                None
            }
            Err(e) => {
                self.errors.push(format!("{stage}: {e}"));
                None
            }
        }
    }
}

/// The ablation check and path patching (with `opts.causal`), on the held-out pairs when
/// there are any, and which pairs those were in words.
fn causal_stages(
    model: &HookedTransformer,
    f: &Found,
    (src, tgt): (&str, &str),
    opts: &RunOptions,
    stages: &mut Stages,
) -> (Option<CausalResult>, Option<PathRanking>, String) {
    let (heads, note) = causal_heads(f.scores, f.fdr_heads, f.selection, opts.fdr);
    let (causal_pairs, causal_pairs_note): (Vec<SentencePair>, String) = match f.selection {
        Some(sel) if !sel.confirmation.is_empty() => (
            sel.confirmation
                .iter()
                .map(|&i| f.pairs[i].clone())
                .collect(),
            format!("the {} held-out pairs", sel.confirmation.len()),
        ),
        _ => (f.pairs.to_vec(), "every pair (no held-out half)".into()),
    };
    let Some(co) = &opts.causal else {
        return (None, None, causal_pairs_note);
    };
    let c = stages.record(
        "ablation check",
        try_ablation_check(model, &causal_pairs, src, tgt, &heads, &note, co),
    );
    let p = stages.record(
        "path patching",
        try_path_ranking(model, &causal_pairs, src, tgt, &f.scores.diff, co),
    );
    (c, p, causal_pairs_note)
}

/// The second prompt format's check of the confirmed heads (else the found ones), on the
/// held-out sources (else the discovery ones); `None` with no found head.
fn second_format(
    model: &HookedTransformer,
    f: &Found,
    (src, tgt): (&str, &str),
    opts: &RunOptions,
    stages: &mut Stages,
) -> Option<FormatCheck> {
    let sel = f.selection.filter(|sel| !sel.found.is_empty())?;
    let list = if sel.confirmed.is_empty() {
        &sel.found
    } else {
        &sel.confirmed
    };
    let heads: Vec<(usize, usize)> = list.iter().map(|f| (f.layer, f.head)).collect();
    let idx: Vec<usize> = if sel.confirmation.is_empty() {
        sel.discovery.clone()
    } else {
        sel.confirmation.clone()
    };
    stages.record(
        "second prompt format",
        format_check(model, f.pairs, f.scores, &idx, &heads, src, tgt, opts).map(Ok),
    )
}

/// The heads that matter rescored with a second prompt format (`English: …\nFrench: …`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FormatCheck {
    /// The format, as a template.
    pub format: String,
    /// Pairs rescored (the held-out ones when there are).
    pub n_pairs: usize,
    /// The heads checked (confirmed, else found), (layer, head).
    pub heads: Vec<(usize, usize)>,
    /// Their paired difference in the second format, with a 95% interval.
    pub diff: Vec<f32>,
    /// Lower ends.
    pub ci_low: Vec<f32>,
    /// Upper ends.
    pub ci_high: Vec<f32>,
    /// How many of `heads` still have an interval above zero.
    pub survivors: usize,
}

/// Rescores `heads` on `idx` (indices into `pairs`) in the second prompt format: translation
/// and the same random pairing, paired per source.
#[allow(clippy::too_many_arguments)]
fn format_check(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    scores: &HeadScores,
    idx: &[usize],
    heads: &[(usize, usize)],
    src: &str,
    tgt: &str,
    opts: &RunOptions,
) -> Result<FormatCheck> {
    let nh = model.cfg().n_heads;
    let chosen: Vec<SentencePair> = idx.iter().map(|&i| pairs[i].clone()).collect();
    let random = idx
        .iter()
        .map(|&i| {
            let &(s, t) = scores
                .random_pairing
                .iter()
                .find(|(s, _)| *s == i)
                .ok_or_else(|| Error::Invalid(format!("source {i} has no random prompt")))?;
            Ok(mixed_pair(pairs, s, t))
        })
        .collect::<Result<Vec<_>>>()?;
    let t = name_format_scores(model, &chosen, src, tgt, &opts.score)?;
    let r = name_format_scores(model, &random, src, tgt, &opts.score)?;
    let d: Vec<Vec<f32>> = t
        .iter()
        .zip(&r)
        .map(|(a, b)| {
            heads
                .iter()
                .map(|&(l, h)| a[l * nh + h] - b[l * nh + h])
                .collect()
        })
        .collect();
    let st = paired_stats(&d, opts.n_boot, 0, 0.95, opts.seed);
    let survivors = st.ci_low.iter().filter(|&&x| x > 0.0).count();
    Ok(FormatCheck {
        format: "{Source}: {src}\\n{Target}: {tgt}".into(),
        n_pairs: idx.len(),
        heads: heads.to_vec(),
        diff: st.diff,
        ci_low: st.ci_low,
        ci_high: st.ci_high,
        survivors,
    })
}

/// The heads the causal checks ablate, and where they came from: the confirmed heads (paired
/// method) or the FDR heads (original), at most 8; failing those, the largest differences.
fn causal_heads(
    scores: &HeadScores,
    fdr_heads: &[(usize, usize, f32)],
    selection: Option<&HeadSelection>,
    fdr: f32,
) -> (Vec<(usize, usize)>, String) {
    let (list, what): (Vec<(usize, usize)>, String) = match selection {
        Some(sel) if !sel.confirmed.is_empty() => (
            sel.confirmed.iter().map(|f| (f.layer, f.head)).collect(),
            "confirmed on held-out pairs".into(),
        ),
        Some(sel) if !sel.found.is_empty() => (
            sel.found.iter().map(|f| (f.layer, f.head)).collect(),
            if sel.confirmation.is_empty() {
                format!("found at FDR {fdr} with no held-out half")
            } else {
                format!("found at FDR {fdr}, none replicated")
            },
        ),
        Some(_) => (Vec::new(), String::new()),
        None => (
            fdr_heads.iter().map(|&(l, h, _)| (l, h)).collect(),
            format!("significant at FDR {fdr} (pooled, original)"),
        ),
    };
    if list.is_empty() {
        let top = scores
            .heads_above(f32::NEG_INFINITY)
            .into_iter()
            .take(3)
            .map(|(l, h, _)| (l, h))
            .collect();
        return (
            top,
            format!("no head qualified at FDR {fdr}; the 3 heads with the largest difference"),
        );
    }
    let n = list.len();
    if n > 8 {
        (
            list.into_iter().take(8).collect(),
            format!("the 8 largest of the {n} heads {what}"),
        )
    } else {
        (list, format!("the {n} heads {what}"))
    }
}

impl DirectionResult {
    /// Whether no stage failed (a stage skipped for too little data is no failure).
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
    }

    /// The difference table.
    pub fn diff(&self) -> &Table {
        &self.scores.diff
    }
}
