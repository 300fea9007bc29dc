//! The main job written to disk: per direction a folder with `scores.json` and figures, and
//! one `report.md` over all directions. The numbers come from `translation::analyse_direction`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::translation::{analyse_direction, DirectionResult, RunOptions};

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
    let result = analyse_direction(model, src, tgt, opts)?;
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
