//! The main job written to disk: per direction a folder with `scores.json` and figures, and
//! one `report.md` over all directions. The numbers come from `translation::analyse_direction`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::translation::stats::{FoundHead, HeadSelection, HeadStats};
use crate::translation::{analyse_direction, DirectionResult, Method, RunOptions};

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

/// `heads.confirmed`: `{layer, head, diff, ci_low, ci_high}` with the held-out effect.
fn confirmed_list(v: &[FoundHead]) -> Value {
    Value::Array(
        v.iter()
            .map(|f| json!({"layer": f.layer, "head": f.head, "diff": f.diff, "ci_low": f.ci_low, "ci_high": f.ci_high}))
            .collect(),
    )
}

/// The paired analysis: which sources were where, and each half's per-head statistics.
fn paired_json(model: &HookedTransformer, sel: &HeadSelection) -> Value {
    let stats = |s: &HeadStats| {
        json!({
            "diff": nested(model, &s.diff),
            "ci_low": nested(model, &s.ci_low),
            "ci_high": nested(model, &s.ci_high),
            "p": nested(model, &s.p),
            "q": nested(model, &s.q),
        })
    };
    json!({
        "discovery_sources": sel.discovery,
        "confirmation_sources": sel.confirmation,
        "all": stats(&sel.all_stats),
        "discovery": stats(&sel.discovery_stats),
        "confirmation": sel.confirmation_stats.as_ref().map(stats),
        "min_effect": sel.min_effect,
        "fdr": sel.fdr,
        "expected_false_among_found": sel.expected_false,
    })
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
        "options": {"bandwidth": opts.score.bandwidth, "fdr": opts.fdr, "n_boot": opts.n_boot, "n_perm": opts.n_perm, "seed": opts.seed, "method": format!("{:?}", opts.method).to_lowercase(), "min_effect": opts.min_effect, "split": opts.split},
        "random_control": {"clean": r.scores.repairings > 0 || opts.method == Method::Paired, "repairings": r.scores.repairings},
        "statistics": "ci_low, ci_high, p and q are the original pooled statistics (each group resampled on its own; labels permuted over all 2n prompts); `paired` holds the per-source ones",
        "translation": nested(model, &r.scores.translation.values),
        "random": nested(model, &r.scores.random.values),
        "diff": nested(model, &r.scores.diff.values),
        "ci_low": nested(model, &r.stats.ci_low),
        "ci_high": nested(model, &r.stats.ci_high),
        "ci_level": r.stats.level,
        "p": nested(model, &r.stats.p),
        "q": nested(model, &r.stats.q),
        "paired": r.selection.as_ref().map(|sel| paired_json(model, sel)),
        "heads": {
            "confirmed": r.selection.as_ref().map(|sel| confirmed_list(&sel.confirmed)),
            "found": r.selection.as_ref().map(|sel| json!(sel.found)),
            "fdr": head_list(&r.fdr_heads),
            "thresholds": r.threshold_heads.iter().map(|(t, v)| (t.to_string(), head_list(v))).collect::<BTreeMap<_, _>>(),
        },
        "aligned": {
            "translation": nested(model, &r.aligned.translation.values),
            "random": nested(model, &r.aligned.random.values),
            "diff": nested(model, &r.aligned.diff.values),
            "identical_share": r.aligned.identical_share,
            "alignment": "IBM Model 1 with a diagonal prior (EM on this direction's token pairs) plus identical-token anchors; no attention head involved",
            "anchor_agreement": r.aligned.anchor_agreement,
            "spearman_vs_diagonal": r.aligned.spearman_vs_diagonal,
        },
        "causal": r.causal,
        "causal_pairs": r.causal_pairs_note,
        "second_format": r.format_check,
        "errors": r.errors,
        "complete": r.complete(),
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

/// A direction's head list: the confirmed heads (held-out difference) with the paired
/// method, the pooled FDR heads with the original one.
fn headline(r: &DirectionResult) -> Vec<(usize, usize, f32)> {
    match &r.selection {
        Some(sel) => sel
            .confirmed
            .iter()
            .map(|f| (f.layer, f.head, f.diff))
            .collect(),
        None => r.fdr_heads.clone(),
    }
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

/// The paired analysis in words: the confirmed heads, then every found head's held-out effect.
fn write_selection(md: &mut String, sel: &HeadSelection) {
    let split = if sel.confirmation.is_empty() {
        format!(
            "found on all {} sources, no held-out half (`--split 0`): nothing is confirmed",
            sel.discovery.len()
        )
    } else {
        format!(
            "found on {} sources, confirmed on {} held-out sources",
            sel.discovery.len(),
            sel.confirmation.len()
        )
    };
    let confirmed: Vec<String> = sel
        .confirmed
        .iter()
        .map(|f| {
            format!(
                "{}.{} ({:+.3} [{:+.3}, {:+.3}])",
                f.layer, f.head, f.diff, f.ci_low, f.ci_high
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "- **Translation heads** (paired per source: sign-flip test, FDR {}, effect ≥ {}; {split}): {}",
        sel.fdr,
        sel.min_effect,
        if confirmed.is_empty() { "none".into() } else { confirmed.join(", ") }
    );
    if sel.found.is_empty() {
        let _ = writeln!(md, "- No head passed the discovery half.\n");
        return;
    }
    let _ = writeln!(
        md,
        "- {} head(s) found on the discovery half; at FDR {} about {:.1} of them could be false discoveries.\n\n| head | discovery diff | q | held-out diff | 95% CI | replicated |\n|---|---|---|---|---|---|",
        sel.found.len(),
        sel.fdr,
        sel.expected_false
    );
    for f in &sel.found {
        let _ = writeln!(
            md,
            "| {}.{} | {:+.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {} |",
            f.layer,
            f.head,
            f.discovery_diff,
            f.discovery_q,
            f.diff,
            f.ci_low,
            f.ci_high,
            if sel.confirmation.is_empty() {
                "—"
            } else if f.replicated {
                "yes"
            } else {
                "no"
            }
        );
    }
    let _ = writeln!(md);
}

/// Writes `report.md` for all directions.
pub fn write_report(
    results: &[DirectionResult],
    failed: &[(String, String)],
    opts: &RunOptions,
    total_seconds: f64,
) -> Result<PathBuf> {
    let mut md = String::new();
    let _ = writeln!(md, "# Translation heads: {}\n", opts.model_name);
    let _ = writeln!(
        md,
        "Prompt `\"{{SRC}}: {{src}} {{TGT}}: {{tgt}}\"`; score = attention on the diagonal of `pattern[t:, 1:t]` (bandwidth {}), translation minus the random-pairing control (the same source with another sentence's target). \
**Translation heads** (method `{}`): per source sentence, translation − random; heads are found on a seeded {} of the sources (one-sided sign-flip test, {} permutations, Benjamini–Hochberg at FDR {} over all heads, and a paired difference of at least {}) and confirmed when their {}% bootstrap interval ({} resamples of sources) on the held-out sources lies above zero. The causal checks use the held-out sources only. \
The original study's pooled statistics and fixed thresholds are kept beside them, labelled. \
Data: `{}`. Total time {:.0} s.\n",
        opts.score.bandwidth,
        format!("{:?}", opts.method).to_lowercase(),
        if opts.split > 0.0 { format!("{:.0}%", 100.0 * (1.0 - opts.split)) } else { "100% (no split)".into() },
        opts.n_perm,
        opts.fdr,
        opts.min_effect,
        95,
        opts.n_boot,
        opts.data.display(),
        total_seconds
    );
    if !failed.is_empty() {
        let _ = writeln!(md, "## Failed directions\n\nThis run is incomplete.\n");
        for (d, e) in failed {
            let _ = writeln!(md, "- {d}: {e}");
        }
        let _ = writeln!(md);
    }
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
            "Largest pooled differences (the original statistics):\n\n| head | translation − random | 95% CI | p | q |\n|---|---|---|---|---|"
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
        let _ = writeln!(md);
        if let Some(sel) = &r.selection {
            write_selection(&mut md, sel);
        } else {
            let _ = writeln!(
                md,
                "Method `original`: no paired analysis, no held-out half.\n"
            );
        }
        let _ = writeln!(
            md,
            "- Heads at FDR {} by the original pooled statistics (each group resampled on its own; labels permuted over all {} prompts; the table above): {}",
            opts.fdr,
            2 * r.n_pairs,
            fmt_heads(&r.fdr_heads, 12)
        );
        let _ = writeln!(
            md,
            "- Random control: {} prompt(s) re-paired because source and target could have been a translation{}.",
            r.scores.repairings,
            if opts.method == Method::Original { " (original pairing kept, as the study made it)" } else { "" }
        );
        for (t, v) in &r.threshold_heads {
            let _ = writeln!(md, "- Original threshold {t}: {}", fmt_heads(v, 12));
        }
        let _ = writeln!(
            md,
            "- Alignment-aware score (a model-free alignment: IBM Model 1 with a diagonal prior, trained by EM on this direction's pairs, plus identical-token anchors): Spearman {:.3} with the diagonal score across heads; {:.0}% of target tokens aligned by identical tokens, the rest by Model 1, which on its own agrees with the identical anchors for {:.0}% of the tokens that have one.",
            r.aligned.spearman_vs_diagonal,
            100.0 * r.aligned.identical_share,
            100.0 * r.aligned.anchor_agreement
        );
        if let Some(c) = &r.causal {
            let heads: Vec<String> = c.heads.iter().map(|(l, h)| format!("{l}.{h}")).collect();
            let _ = writeln!(
                md,
                "- **Causal check** ({} pairs from {}; ablated: {}, {}). Baseline mean log-probability per target token {:.3}.",
                c.n_pairs,
                r.causal_pairs_note,
                heads.join(", "),
                c.heads_note,
                c.baseline
            );
            for e in &c.effects {
                let m = e.random.iter().sum::<f32>() / e.random.len().max(1) as f32;
                let _ = writeln!(
                    md,
                    "  - {} ablation: Δ log-prob {:+.4} for these heads vs {:+.4} on average for {} random sets with the same heads per layer; z = {:.2}, empirical p = {:.3} (resolution {:.3}), normal-approximation p = {:.2e}{}.",
                    e.mode,
                    e.found,
                    m,
                    e.random.len(),
                    e.z,
                    e.p,
                    e.p_resolution,
                    e.p_normal,
                    if e.fallbacks > 0 {
                        format!("; {} prompt(s) had no donor aligned by role and were mean-ablated", e.fallbacks)
                    } else {
                        String::new()
                    }
                );
            }
            let each: Vec<String> = c
                .per_head
                .iter()
                .map(|e| {
                    let path = r.path.as_ref().map_or(String::new(), |p| {
                        let v = p.importance.values[e.layer * h + e.head];
                        format!(", path patching {v:+.3}")
                    });
                    format!(
                        "{}.{} {:+.4} [{:+.4}, {:+.4}]{path}",
                        e.layer, e.head, e.effect, e.ci_low, e.ci_high
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "  - Each head alone (mean ablation, Δ log-prob with a 95% interval over pairs): {}.",
                each.join("; ")
            );
        }
        if let Some(f) = &r.format_check {
            let each: Vec<String> = f
                .heads
                .iter()
                .enumerate()
                .map(|(k, (l, hh))| {
                    format!(
                        "{l}.{hh} {:+.4} [{:+.4}, {:+.4}]",
                        f.diff[k], f.ci_low[k], f.ci_high[k]
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "- **Second prompt format** (`{}`, {} pairs): {} of {} heads keep an interval above zero: {}.",
                f.format,
                f.n_pairs,
                f.survivors,
                f.heads.len(),
                each.join("; ")
            );
        }
        if !r.errors.is_empty() {
            let _ = writeln!(md, "- **Incomplete.** These stages failed:");
            for e in &r.errors {
                let _ = writeln!(md, "  - {e}");
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
            "## Overlap across directions\n\nShared {} (diagonal: heads per direction).\n",
            if opts.method == Method::Paired {
                "confirmed translation heads".to_string()
            } else {
                format!("heads at FDR {} (pooled, original)", opts.fdr)
            }
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
            let sa: Vec<(usize, usize)> = headline(a).iter().map(|&(l, h, _)| (l, h)).collect();
            let cells: Vec<String> = results
                .iter()
                .map(|b| {
                    headline(b)
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
            for &(l, h, _) in &headline(r) {
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
    let mut failed = Vec::new();
    for (i, (s, t)) in opts.directions.iter().enumerate() {
        if !opts.score.quiet {
            eprintln!("[{}/{}] {s}→{t}", i + 1, opts.directions.len());
        }
        // One direction's failure is reported, not allowed to hide the others' results.
        match run_direction(model, s, t, opts) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{s}→{t} failed: {e}");
                failed.push((format!("{s}→{t}"), e.to_string()));
            }
        }
    }
    let p = write_report(&results, &failed, opts, t0.elapsed().as_secs_f64())?;
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(d, _)| d.as_str()).collect();
        return Err(Error::Invalid(format!(
            "{} of {} directions failed ({}); the causes are above and in {}",
            failed.len(),
            opts.directions.len(),
            names.join(", "),
            p.display()
        )));
    }
    Ok((results, p))
}
