// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 01 · Translation heads, step by step
//
// The original study: in a prompt `EN: {source} FR: {translation}`, a *translation head*
// attends from each French token to the English token it translates. Its score is the average
// attention on the "diagonal" between the two sentences, compared with a **random control**
// in which the French sentence is the translation of *another* English sentence of similar
// length. We reproduce it exactly, then add what it lacked: uncertainty and significance.

// %%
let model = HookedTransformer::gemma3_270m()?;
let pairs = load_pairs("../data", "en", "fr")?;
let (kept, report) = filter_pairs(&model, &pairs, "en", "fr")?;
format!("{} pairs read, {} kept by the original filter (dropped: {} for characters, {} for word count, {} for a length gap)",
        pairs.len(), kept.len(), report.bad_chars, report.word_count, report.length_gap)

// %% [markdown]
// ## One sentence by hand
//
// The prompt, the position t of the " FR" tag, and the crop `pattern[t:, 1:t]`: rows from the
// tag to the end, columns from after BOS to before the tag. Row 0 (" FR") faces column 0 ("EN"),
// row 1 (":") faces ":", and the sentences face each other from there. The score is the mean of
// the main diagonal and the ±1 diagonals, each averaged separately.

// %%
let p = mechinterp::translation::prompt("en", "fr", &kept[0]);
let ids = model.to_tokens(&p)?.squeeze(0)?.to_vec1::<u32>()?;
let t = mechinterp::translation::locate_target(&ids, model.token_id(" FR")?, 3).unwrap_or(0);
let (_, one) = model.run_with_cache(&model.to_tokens(&p)?)?;
let pattern: Vec<Vec<f32>> = one.head_pattern(9, 3)?.to_vec2()?;
format!("{p:?}\nt = {t}; head 9.3 scores {:.4}", mechinterp::translation::score_pattern(&pattern, t, 1))

// %% [markdown]
// ## The whole dataset, and the control
//
// `score_heads` does the above for every pair and every head, builds the random control (pairs
// sorted by target length, neighbours swap targets), and subtracts. We use the first 80 pairs of
// each direction to keep the notebook quick; `mechinterp translation-heads` runs them all.

// %%
let opts = ScoreOptions { quiet: true, ..Default::default() };
let dirs = [("en","fr"),("en","de"),("en","es"),("en","ja"),("en","ar"),("en","zh"),
            ("fr","en"),("de","en"),("ja","en"),("zh","en"),("zh","fr"),("zh","de")];
let mut scores: Vec<(String, HeadScores)> = Vec::new();
for (s, t) in dirs {
    let (ps, _) = filter_pairs(&model, &load_pairs("../data", s, t)?, s, t)?;
    let ps: Vec<SentencePair> = ps.into_iter().take(80).collect();
    scores.push((format!("{s}-{t}"), score_heads(&model, &ps, s, t, &opts)?));
}
scores.iter().map(|(d, h)| format!("{d}: best head diff {:.3}", h.diff.values.iter().cloned().fold(f32::MIN, f32::max))).collect::<Vec<_>>()

// %% [markdown]
// **EN→FR**: Translation | Random | Diff on one colour scale.

// %%
scores[0].1.panels("EN→FR")?

// %% [markdown]
// **EN→DE**

// %%
scores[1].1.panels("EN→DE")?

// %% [markdown]
// **EN→ES**

// %%
scores[2].1.panels("EN→ES")?

// %% [markdown]
// **EN→JA**

// %%
scores[3].1.panels("EN→JA")?

// %% [markdown]
// **EN→AR**

// %%
scores[4].1.panels("EN→AR")?

// %% [markdown]
// **EN→ZH**

// %%
scores[5].1.panels("EN→ZH")?

// %% [markdown]
// The reverse directions and the Chinese pivot, as differences only, on one shared scale:

// %%
let diffs: Vec<Heatmap> = scores[6..].iter().map(|(d, h)| Ok(h.diff.heatmap()?.title(d.as_str()))).collect::<Result<_>>()?;

// %%
Panels::new(diffs.clone()).per_row(6).title("translation − random: X→EN and ZH→X")

// %% [markdown]
// ## Which heads? Thresholds against a false-discovery rate
//
// The original picked a threshold by eye (0.04 for Gemma 2, 0.075 for Qwen2.5). Instead we test
// every head: a one-sided permutation test of translation against random (label
// shuffles), Benjamini–Hochberg over all 72 heads, and bootstrap intervals.

// %%
use mechinterp::translation::{head_stats, HeadStats};
let stats: Vec<HeadStats> = scores.iter().map(|(_, h)| head_stats(&h.per_pair_translation, &h.per_pair_random, 1000, 10000, 0.95, 7)).collect();
for ((d, h), s) in scores.iter().zip(&stats) {
    let n_fdr = (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count();
    let at = |th: f32| h.heads_above(th).iter().map(|(l, k, _)| format!("{l}.{k}")).collect::<Vec<_>>().join(" ");
    println!("{d}: {n_fdr:>2} heads at FDR 5%; above 0.04: [{}]; above 0.075: [{}]", at(0.04), at(0.075));
}

// %% [markdown]
// The strongest heads of EN→FR with their intervals:

// %%
{
    let s = &stats[0];
    let mut idx: Vec<usize> = (0..s.diff.len()).collect();
    idx.sort_by(|&a, &b| s.diff[b].total_cmp(&s.diff[a]));
    idx.iter().take(6).map(|&i| format!("head {}.{}: {:+.4} [{:+.4}, {:+.4}], q = {:.4}", i / 4, i % 4, s.diff[i], s.ci_low[i], s.ci_high[i], s.q[i])).collect::<Vec<_>>()
}

// %% [markdown]
// ## The referee's version: paired, found on one half, confirmed on the other
//
// Every random prompt shares its source sentence with one translation prompt, so the design is
// paired: per source sentence, translation − random. The pooled test above ignores that (it
// resamples the two groups separately and shuffles labels over all prompts) and chooses and
// reports heads on the same sentences. `select_heads` finds heads on a seeded half of the sources
// (a sign-flip permutation test per head, Benjamini–Hochberg at 5%, and a paired difference of
// at least `SelectOptions::min_effect`) and confirms them when their bootstrap interval on the other half lies above
// zero. This is what the main command reports as translation heads.

// %%
use mechinterp::translation::{select_heads, SelectOptions};
let nh = model.cfg().n_heads;
let selections: Vec<_> = scores.iter().map(|(_, h)| select_heads(&h.paired_differences(), nh, &SelectOptions::default())).collect();
for ((d, _), (sel, s)) in scores.iter().zip(selections.iter().zip(&stats)) {
    let pooled = (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count();
    let conf: Vec<String> = sel.confirmed.iter().take(6).map(|f| format!("{}.{}", f.layer, f.head)).collect();
    println!("{d}: pooled FDR {pooled:>2} | paired: {:>2} found on {} sources, {:>2} confirmed on {} held out: {}",
        sel.found.len(), sel.discovery.len(), sel.confirmed.len(), sel.confirmation.len(), conf.join(" "));
}

// %% [markdown]
// ## Overlap across languages
//
// How many of the top-8 heads (by difference) two directions share:

// %%
let top8: Vec<Vec<usize>> = stats.iter().map(|s| { let mut i: Vec<usize> = (0..s.diff.len()).collect(); i.sort_by(|&a, &b| s.diff[b].total_cmp(&s.diff[a])); i.truncate(8); i }).collect();
let names: Vec<String> = scores.iter().map(|(d, _)| d.clone()).collect();
let vals: Vec<f32> = top8.iter().flat_map(|a| top8.iter().map(move |b| a.iter().filter(|x| b.contains(x)).count() as f32)).collect();
let overlap = Table::from_values("shared top-8 heads", vec![Axis::labelled("direction", names.clone()), Axis::labelled("direction ", names)], vals)?;

// %%
overlap.heatmap()?.cmap(Colormap::Viridis)

// %%
let mut count = std::collections::BTreeMap::new();
for t in &top8 { for &i in t { *count.entry(i).or_insert(0) += 1; } }
let mut common: Vec<(usize, i32)> = count.into_iter().collect();
common.sort_by_key(|c| -c.1);
common.iter().take(6).map(|(i, n)| format!("head {}.{} is in the top 8 of {n}/{} directions", i / 4, i % 4, top8.len())).collect::<Vec<_>>()

// %%
{
    let n_fdr: Vec<usize> = stats.iter().map(|s| (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count()).collect();
    let best = &common[0];
    format!("Across {} directions, {} to {} heads pass FDR 5%; head {}.{} is in the top 8 of {} of them; the largest EN→FR difference is {:.3}.",
        n_fdr.len(), n_fdr.iter().min().unwrap_or(&0), n_fdr.iter().max().unwrap_or(&0), best.0 / 4, best.0 % 4, best.1, stats[0].diff.iter().cloned().fold(f32::MIN, f32::max))
}

// %% [markdown]
// ## What we learned
//
// - The diagonal score singles out the same few middle-layer heads in every direction: 5.2, 5.3,
//   7.0, 9.3 and 11.2 are in the top 8 of all 12 directions, and 10.2 of 11; the largest EN→FR
//   difference is 0.084 (head 5.3, with the interval printed above).
// - With 80 pairs per direction, 29 to 37 of the 72 heads beat the random control at a 5%
//   false-discovery rate: attention to the aligned source position is a graded property shared
//   by many heads, not a yes/no one. The original's fixed thresholds pick 1–9 heads (0.04) or
//   0–2 (0.075) and depend on the language pair more than on the heads.
// - The paired analysis keeps a short list: 8 to 14 heads per direction are found on one half of
//   the sources and every one of them replicates on the other, where the pooled test lists 29 to
//   37. The effect floor and the held-out half, not the p-values, make the difference.
// - EN→JA (0.062) and EN→ZH (0.065) give smaller differences than EN→FR, EN→DE and EN→ES
//   (0.083–0.088), and JA→EN has the smallest of all (0.043), as expected when word order differs
//   and the diagonal is a worse proxy for alignment. Whether the heads *matter* is notebook 03's
//   question.
