//! The main job: translation-head discovery for several directions, with statistics, the
//! causal check and path patching, written as figures, `scores.json` and `report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::plot::Panels;
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

fn head_list(v: &[(usize, usize, f32)]) -> Value {
    Value::Array(
        v.iter()
            .map(|&(l, h, d)| json!({"layer": l, "head": h, "diff": d}))
            .collect(),
    )
}

fn nested(model: &HookedTransformer, v: &[f32]) -> Value {
    let h = model.cfg().n_heads;
    Value::Array(
        v.chunks(h)
            .map(|r| {
                Value::Array(
                    r.iter()
                        .map(|&x| if x.is_finite() { json!(x) } else { Value::Null })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// Runs one direction and writes its folder.
pub fn run_direction(
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
    write_direction(model, &result, opts)?;
    Ok(result)
}

fn write_direction(
    model: &HookedTransformer,
    r: &DirectionResult,
    opts: &RunOptions,
) -> Result<()> {
    let dir = opts.out.join(format!("{}-{}", r.src, r.tgt));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let title = format!(
        "{}→{}: attention on the diagonal ({} pairs)",
        r.src.to_uppercase(),
        r.tgt.to_uppercase(),
        r.n_pairs
    );
    let panels = r.scores.panels(&title)?;
    panels.render()?.save_svg(dir.join("heatmap.svg"))?;
    if let Some(p) = &r.path {
        p.importance
            .heatmap()?
            .title("path patching to logits (normalised drop)")
            .render()?
            .save_svg(dir.join("path_patching.svg"))?;
    }
    let j = json!({
        "direction": format!("{}-{}", r.src, r.tgt),
        "model": opts.model_name,
        "n_pairs": r.n_pairs,
        "filter": r.filter,
        "options": {"bandwidth": opts.score.bandwidth, "fdr": opts.fdr, "n_boot": opts.n_boot, "n_perm": opts.n_perm, "seed": opts.seed},
        "translation": nested(model, &r.scores.translation.values),
        "random": nested(model, &r.scores.random.values),
        "diff": nested(model, &r.scores.diff.values),
        "ci_low": nested(model, &r.stats.ci_low),
        "ci_high": nested(model, &r.stats.ci_high),
        "ci_level": r.stats.level,
        "p": nested(model, &r.stats.p),
        "q": nested(model, &r.stats.q),
        "heads": {
            "fdr": head_list(&r.fdr_heads),
            "thresholds": r.threshold_heads.iter().map(|(t, v)| (t.to_string(), head_list(v))).collect::<BTreeMap<_, _>>(),
        },
        "aligned": {
            "translation": nested(model, &r.aligned.translation.values),
            "random": nested(model, &r.aligned.random.values),
            "diff": nested(model, &r.aligned.diff.values),
            "identical_share": r.aligned.identical_share,
            "spearman_vs_diagonal": r.aligned.spearman_vs_diagonal,
        },
        "causal": r.causal,
        "path_patching": r.path.as_ref().map(|p| json!({
            "importance": nested(model, &p.importance.values),
            "spearman_vs_attention": p.spearman_vs_attention,
            "top10_overlap": p.top10_overlap,
            "n_pairs": p.n_pairs,
        })),
        "seconds": r.seconds,
    });
    std::fs::write(
        dir.join("scores.json"),
        serde_json::to_string_pretty(&j).map_err(|e| Error::Invalid(e.to_string()))?,
    )
    .map_err(|e| Error::io(format!("writing {}", dir.join("scores.json").display()), e))
}

fn fmt_heads(v: &[(usize, usize, f32)], max: usize) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut s: Vec<String> = v
        .iter()
        .take(max)
        .map(|&(l, h, d)| format!("{l}.{h} ({d:+.3})"))
        .collect();
    if v.len() > max {
        s.push(format!("… {} in all", v.len()));
    }
    s.join(", ")
}

/// Writes `report.md` for all directions.
pub fn write_report(
    results: &[DirectionResult],
    opts: &RunOptions,
    total_seconds: f64,
) -> Result<PathBuf> {
    let mut md = String::new();
    let _ = writeln!(md, "# Translation heads: {}\n", opts.model_name);
    let _ = writeln!(
        md,
        "Prompt `\"{{SRC}}: {{src}} {{TGT}}: {{tgt}}\"`; score = attention on the diagonal of `pattern[t:, 1:t]` (bandwidth {}), translation minus the random-pairing control, averaged over sentence pairs. \
Heads are listed at a false-discovery rate of {} (one-sided permutation test, {} permutations, Benjamini–Hochberg over all heads), with {}% bootstrap intervals ({} resamples); the original study's fixed thresholds are listed for comparison. \
Data: `{}`. Total time {:.0} s.\n",
        opts.score.bandwidth,
        opts.fdr,
        opts.n_perm,
        95,
        opts.n_boot,
        opts.data.display(),
        total_seconds
    );
    for r in results {
        let name = format!("{}-{}", r.src, r.tgt);
        let _ = writeln!(
            md,
            "## {} → {}\n",
            r.src.to_uppercase(),
            r.tgt.to_uppercase()
        );
        let _ = writeln!(md, "![{name}]({name}/heatmap.svg)\n");
        let _ = writeln!(
            md,
            "{} pairs scored ({} read; the filter dropped {} for characters, {} for word count, {} for a token-length gap). Scores: [`{name}/scores.json`]({name}/scores.json). {:.0} s.\n",
            r.n_pairs, r.filter.total, r.filter.bad_chars, r.filter.word_count, r.filter.length_gap, r.seconds
        );
        let h = r.scores.diff.axes[1].len();
        let mut top: Vec<usize> = (0..r.stats.diff.len()).collect();
        top.sort_by(|&a, &b| r.stats.diff[b].total_cmp(&r.stats.diff[a]));
        let _ = writeln!(
            md,
            "| head | translation − random | 95% CI | p | q |\n|---|---|---|---|---|"
        );
        for &i in top.iter().take(5) {
            let _ = writeln!(
                md,
                "| {}.{} | {:+.4} | [{:+.4}, {:+.4}] | {:.4} | {:.4} |",
                i / h,
                i % h,
                r.stats.diff[i],
                r.stats.ci_low[i],
                r.stats.ci_high[i],
                r.stats.p[i],
                r.stats.q[i]
            );
        }
        let _ = writeln!(
            md,
            "\n- **Heads at FDR {}:** {}",
            opts.fdr,
            fmt_heads(&r.fdr_heads, 12)
        );
        for (t, v) in &r.threshold_heads {
            let _ = writeln!(md, "- Original threshold {t}: {}", fmt_heads(v, 12));
        }
        let _ = writeln!(
            md,
            "- Alignment-aware score: Spearman {:.3} with the diagonal score across heads; {:.0}% of target tokens aligned by identical tokens, the rest by the model's own attention (cross-fitted halves).",
            r.aligned.spearman_vs_diagonal,
            100.0 * r.aligned.identical_share
        );
        if let Some(c) = &r.causal {
            let heads: Vec<String> = c.heads.iter().map(|(l, h)| format!("{l}.{h}")).collect();
            let _ = writeln!(
                md,
                "- **Causal check** ({} pairs; ablated: {}, {}). Baseline mean log-probability per target token {:.3}.",
                c.n_pairs,
                heads.join(", "),
                c.heads_note,
                c.baseline
            );
            for e in &c.effects {
                let m = e.random.iter().sum::<f32>() / e.random.len().max(1) as f32;
                let _ = writeln!(
                    md,
                    "  - {} ablation: Δ log-prob {:+.4} for these heads vs {:+.4} on average for {} random sets of the same size; z = {:.2}, empirical p = {:.3} (the smallest possible is {:.3}), normal-approximation p = {:.2e}.",
                    e.mode,
                    e.found,
                    m,
                    e.random.len(),
                    e.z,
                    e.p,
                    1.0 / (e.random.len() + 1) as f32,
                    e.p_normal
                );
            }
        }
        if let Some(p) = &r.path {
            let _ = writeln!(
                md,
                "- **Path patching** to the logits, corrupted into clean ({} prompt pairs, [figure]({name}/path_patching.svg)): Spearman {:.3} with the attention score; {} of the attention score's top 10 heads are in path patching's top 10.",
                p.n_pairs, p.spearman_vs_attention, p.top10_overlap
            );
        }
        let _ = writeln!(md);
    }
    // Overlap of FDR head sets across directions.
    if results.len() > 1 {
        let _ = writeln!(
            md,
            "## Overlap across directions\n\nShared heads at FDR {} (diagonal: heads found).\n",
            opts.fdr
        );
        let names: Vec<String> = results
            .iter()
            .map(|r| format!("{}-{}", r.src, r.tgt))
            .collect();
        let _ = writeln!(
            md,
            "| | {} |\n|---|{}",
            names.join(" | "),
            "---|".repeat(names.len())
        );
        for (i, a) in results.iter().enumerate() {
            let sa: Vec<(usize, usize)> = a.fdr_heads.iter().map(|&(l, h, _)| (l, h)).collect();
            let cells: Vec<String> = results
                .iter()
                .map(|b| {
                    b.fdr_heads
                        .iter()
                        .filter(|&&(l, h, _)| sa.contains(&(l, h)))
                        .count()
                        .to_string()
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", names[i], cells.join(" | "));
        }
        let mut count: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for r in results {
            for &(l, h, _) in &r.fdr_heads {
                *count.entry((l, h)).or_default() += 1;
            }
        }
        let mut common: Vec<((usize, usize), usize)> = count.into_iter().collect();
        common.sort_by_key(|c| std::cmp::Reverse(c.1));
        let list: Vec<String> = common
            .iter()
            .take(10)
            .map(|((l, h), n)| format!("{l}.{h} ({n}/{})", results.len()))
            .collect();
        let _ = writeln!(
            md,
            "\nHeads found in the most directions: {}.",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        );
    }
    let path = opts.out.join("report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Runs every direction and writes the report; returns the results and the report's path.
pub fn run(
    model: &HookedTransformer,
    opts: &RunOptions,
) -> Result<(Vec<DirectionResult>, PathBuf)> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::io(format!("creating {}", opts.out.display()), e))?;
    let mut results = Vec::new();
    for (i, (s, t)) in opts.directions.iter().enumerate() {
        if !opts.score.quiet {
            eprintln!("[{}/{}] {s}→{t}", i + 1, opts.directions.len());
        }
        results.push(run_direction(model, s, t, opts)?);
    }
    let p = write_report(&results, opts, t0.elapsed().as_secs_f64())?;
    Ok((results, p))
}

/// The project's own data folder (`data/` at the crate root).
pub fn shipped_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

impl DirectionResult {
    /// The Translation | Random | Diff figure.
    pub fn panels(&self) -> Result<Panels> {
        self.scores.panels(&format!(
            "{}→{}",
            self.src.to_uppercase(),
            self.tgt.to_uppercase()
        ))
    }

    /// Shows the three panels inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        crate::plot::display_result(self.panels().and_then(|p| p.render()));
    }

    /// The difference table.
    pub fn diff(&self) -> &Table {
        &self.scores.diff
    }
}
