//! `report.md`: every direction's numbers in words and tables, then how the directions'
//! heads overlap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::translation::causal::CausalResult;
use crate::translation::stats::HeadSelection;
use crate::translation::{DirectionResult, FormatCheck, Method, RunOptions};

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

/// A value with its interval, signed, to `decimals` places: `+0.120 [+0.050, +0.190]`.
fn interval(value: f32, low: f32, high: f32, decimals: usize) -> String {
    format!("{value:+.decimals$} [{low:+.decimals$}, {high:+.decimals$}]")
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
                "{}.{} ({})",
                f.layer,
                f.head,
                interval(f.diff, f.ci_low, f.ci_high, 3)
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
    write_intro(&mut md, opts, total_seconds);
    if !failed.is_empty() {
        let _ = writeln!(md, "## Failed directions\n\nThis run is incomplete.\n");
        for (d, e) in failed {
            let _ = writeln!(md, "- {d}: {e}");
        }
        let _ = writeln!(md);
    }
    for r in results {
        write_direction(&mut md, r, opts);
    }
    write_overlap(&mut md, results, opts);
    let path = opts.out.join("report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// The title and what the study does, with the run's options.
fn write_intro(md: &mut String, opts: &RunOptions, total_seconds: f64) {
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
}

/// One direction's section.
fn write_direction(md: &mut String, r: &DirectionResult, opts: &RunOptions) {
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
    write_pooled(md, r);
    if let Some(sel) = &r.selection {
        write_selection(md, sel);
    } else {
        let _ = writeln!(
            md,
            "Method `original`: no paired analysis, no held-out half.\n"
        );
    }
    write_head_lists(md, r, opts);
    if let Some(c) = &r.causal {
        write_causal(md, r, c);
    }
    if let Some(f) = &r.format_check {
        write_format_check(md, f);
    }
    if !r.errors.is_empty() {
        let _ = writeln!(md, "- **Incomplete.** These stages failed:");
        for e in &r.errors {
            let _ = writeln!(md, "  - {e}");
        }
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(
            md,
            "- **Skipped** for too little data (not a failure; the direction is complete):"
        );
        for k in &r.skipped {
            let _ = writeln!(md, "  - {k}");
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

/// The five largest pooled differences with their original statistics.
fn write_pooled(md: &mut String, r: &DirectionResult) {
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
}

/// The pooled FDR heads, the random control, the original thresholds and the aligned score.
fn write_head_lists(md: &mut String, r: &DirectionResult, opts: &RunOptions) {
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
}

/// The ablation check: each mode against the random sets, and each head alone.
fn write_causal(md: &mut String, r: &DirectionResult, c: &CausalResult) {
    let h = r.scores.diff.axes[1].len();
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
        let m = e.random_mean();
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
                "{}.{} {}{path}",
                e.layer,
                e.head,
                interval(e.effect, e.ci_low, e.ci_high, 4)
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "  - Each head alone (mean ablation, Δ log-prob with a 95% interval over pairs): {}.",
        each.join("; ")
    );
}

/// The confirmed heads in the second prompt format.
fn write_format_check(md: &mut String, f: &FormatCheck) {
    let each: Vec<String> = f
        .heads
        .iter()
        .enumerate()
        .map(|(k, (l, hh))| {
            format!(
                "{l}.{hh} {}",
                interval(f.diff[k], f.ci_low[k], f.ci_high[k], 4)
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

/// With more than one direction: how many headline heads each pair of directions shares,
/// and the most shared heads.
fn write_overlap(md: &mut String, results: &[DirectionResult], opts: &RunOptions) {
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
}
