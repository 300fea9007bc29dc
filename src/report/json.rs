//! A direction's `scores.json`: the result's types serialised by serde, with each
//! [layers × heads] vector nested as rows of heads (non-finite values become `null`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::translation::causal::CausalResult;
use crate::translation::data::FilterReport;
use crate::translation::stage::Skipped;
use crate::translation::stats::{FoundHead, HeadSelection, HeadStats};
use crate::translation::{DirectionResult, FormatCheck, Method, RunOptions};

/// A [layers × heads] vector as rows of `n_heads`.
type Grid = Vec<Vec<f32>>;

fn grid(n_heads: usize, v: &[f32]) -> Grid {
    v.chunks(n_heads).map(<[f32]>::to_vec).collect()
}

/// The whole file.
#[derive(Serialize)]
struct Scores<'a> {
    direction: String,
    model: &'a str,
    n_pairs: usize,
    filter: &'a FilterReport,
    options: Options,
    random_control: RandomControl,
    statistics: &'static str,
    translation: Grid,
    random: Grid,
    diff: Grid,
    ci_low: Grid,
    ci_high: Grid,
    ci_level: f32,
    p: Grid,
    q: Grid,
    paired: Option<Paired<'a>>,
    heads: Heads<'a>,
    aligned: Aligned,
    causal: &'a Option<CausalResult>,
    causal_pairs: &'a str,
    second_format: &'a Option<FormatCheck>,
    errors: &'a [String],
    skipped: &'a [Skipped],
    complete: bool,
    path_patching: Option<PathPatching>,
    seconds: f64,
}

/// The run's options that shape the numbers.
#[derive(Serialize)]
struct Options {
    bandwidth: usize,
    fdr: f32,
    n_boot: usize,
    n_perm: usize,
    seed: u64,
    method: String,
    min_effect: f32,
    split: f32,
}

#[derive(Serialize)]
struct RandomControl {
    clean: bool,
    repairings: usize,
}

/// Per-head statistics as grids.
#[derive(Serialize)]
struct Stats {
    diff: Grid,
    ci_low: Grid,
    ci_high: Grid,
    p: Grid,
    q: Grid,
}

impl Stats {
    fn new(n_heads: usize, s: &HeadStats) -> Self {
        Stats {
            diff: grid(n_heads, &s.diff),
            ci_low: grid(n_heads, &s.ci_low),
            ci_high: grid(n_heads, &s.ci_high),
            p: grid(n_heads, &s.p),
            q: grid(n_heads, &s.q),
        }
    }
}

/// The paired analysis: which sources were where, and each half's per-head statistics.
#[derive(Serialize)]
struct Paired<'a> {
    discovery_sources: &'a [usize],
    confirmation_sources: &'a [usize],
    all: Stats,
    discovery: Stats,
    confirmation: Option<Stats>,
    min_effect: f32,
    fdr: f32,
    #[serde(rename = "expected_false_among_found")]
    expected_false: f32,
}

impl<'a> Paired<'a> {
    fn new(n_heads: usize, sel: &'a HeadSelection) -> Self {
        Paired {
            discovery_sources: &sel.discovery,
            confirmation_sources: &sel.confirmation,
            all: Stats::new(n_heads, &sel.all_stats),
            discovery: Stats::new(n_heads, &sel.discovery_stats),
            confirmation: sel
                .confirmation_stats
                .as_ref()
                .map(|s| Stats::new(n_heads, s)),
            min_effect: sel.min_effect,
            fdr: sel.fdr,
            expected_false: sel.expected_false,
        }
    }
}

/// A head with its difference.
#[derive(Serialize)]
struct Head {
    layer: usize,
    head: usize,
    diff: f32,
}

fn head_list(v: &[(usize, usize, f32)]) -> Vec<Head> {
    v.iter()
        .map(|&(layer, head, diff)| Head { layer, head, diff })
        .collect()
}

/// A confirmed head with its held-out effect.
#[derive(Serialize)]
struct Confirmed {
    layer: usize,
    head: usize,
    diff: f32,
    ci_low: f32,
    ci_high: f32,
}

impl From<&FoundHead> for Confirmed {
    fn from(f: &FoundHead) -> Self {
        Confirmed {
            layer: f.layer,
            head: f.head,
            diff: f.diff,
            ci_low: f.ci_low,
            ci_high: f.ci_high,
        }
    }
}

/// The head lists: confirmed and found (paired method), FDR and each threshold's (original).
#[derive(Serialize)]
struct Heads<'a> {
    confirmed: Option<Vec<Confirmed>>,
    found: Option<&'a [FoundHead]>,
    fdr: Vec<Head>,
    thresholds: BTreeMap<String, Vec<Head>>,
}

#[derive(Serialize)]
struct Aligned {
    translation: Grid,
    random: Grid,
    diff: Grid,
    identical_share: f32,
    alignment: &'static str,
    anchor_agreement: f32,
    spearman_vs_diagonal: f32,
}

#[derive(Serialize)]
struct PathPatching {
    importance: Grid,
    spearman_vs_attention: f32,
    top10_overlap: usize,
    n_pairs: usize,
}

const STATISTICS: &str = "ci_low, ci_high, p and q are the original pooled statistics (each group resampled on its own; labels permuted over all 2n prompts); `paired` holds the per-source ones";

const ALIGNMENT: &str = "IBM Model 1 with a diagonal prior (EM on this direction's token pairs) plus identical-token anchors; no attention head involved";

/// `scores.json` of one direction, as pretty-printed text.
pub fn scores_json(n_heads: usize, r: &DirectionResult, opts: &RunOptions) -> Result<String> {
    let g = |v: &[f32]| grid(n_heads, v);
    let sel = r.selection.as_ref();
    let scores = Scores {
        direction: format!("{}-{}", r.src, r.tgt),
        model: &opts.model_name,
        n_pairs: r.n_pairs,
        filter: &r.filter,
        options: Options {
            bandwidth: opts.score.bandwidth,
            fdr: opts.fdr,
            n_boot: opts.n_boot,
            n_perm: opts.n_perm,
            seed: opts.seed,
            method: format!("{:?}", opts.method).to_lowercase(),
            min_effect: opts.min_effect,
            split: opts.split,
        },
        random_control: RandomControl {
            clean: r.scores.repairings > 0 || opts.method == Method::Paired,
            repairings: r.scores.repairings,
        },
        statistics: STATISTICS,
        translation: g(&r.scores.translation.values),
        random: g(&r.scores.random.values),
        diff: g(&r.scores.diff.values),
        ci_low: g(&r.stats.ci_low),
        ci_high: g(&r.stats.ci_high),
        ci_level: r.stats.level,
        p: g(&r.stats.p),
        q: g(&r.stats.q),
        paired: sel.map(|s| Paired::new(n_heads, s)),
        heads: Heads {
            confirmed: sel.map(|s| s.confirmed.iter().map(Confirmed::from).collect()),
            found: sel.map(|s| s.found.as_slice()),
            fdr: head_list(&r.fdr_heads),
            thresholds: r
                .threshold_heads
                .iter()
                .map(|(t, v)| (t.to_string(), head_list(v)))
                .collect(),
        },
        aligned: Aligned {
            translation: g(&r.aligned.translation.values),
            random: g(&r.aligned.random.values),
            diff: g(&r.aligned.diff.values),
            identical_share: r.aligned.identical_share,
            alignment: ALIGNMENT,
            anchor_agreement: r.aligned.anchor_agreement,
            spearman_vs_diagonal: r.aligned.spearman_vs_diagonal,
        },
        causal: &r.causal,
        causal_pairs: &r.causal_pairs_note,
        second_format: &r.format_check,
        errors: &r.errors,
        skipped: &r.skipped,
        complete: r.complete(),
        path_patching: r.path.as_ref().map(|p| PathPatching {
            importance: g(&p.importance.values),
            spearman_vs_attention: p.spearman_vs_attention,
            top10_overlap: p.top10_overlap,
            n_pairs: p.n_pairs,
        }),
        seconds: r.seconds,
    };
    // Through a `Value`, whose map sorts the keys, as the file has always been written.
    let v = serde_json::to_value(&scores).map_err(|e| Error::Invalid(e.to_string()))?;
    serde_json::to_string_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))
}
