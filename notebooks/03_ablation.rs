// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 03 · Ablation: do the translation heads matter?
//
// The original study ablated its heads and saw little change. Two things were missing: a metric
// that measures translation, and a control. We use the teacher-forced log-probability of the
// reference translation given the source, over a dataset, and compare the found heads with as
// many random heads, drawn many times.

// %%
let model = HookedTransformer::gemma3_270m()?;
let (pairs, _) = filter_pairs(&model, &load_pairs("../data", "en", "fr")?, "en", "fr")?;
let lp = continuation_logprob(&model, "EN: I like green apples. FR:", " J'aime les pommes vertes.")?;
format!("log p(translation | source) = {:.3} over {} tokens: {:?}", lp.total, lp.tokens.len(), lp.tokens)

// %% [markdown]
// ## Three kinds of ablation on one prompt, for the head from notebook 00 (5.2)

// %%
let prompts: Vec<String> = pairs.iter().take(16).map(|p| mechinterp::translation::prompt("en", "fr", p)).collect();
let dataset = model.cache_activations(&model.to_tokens_batch(&prompts)?, |n: &str| n.ends_with("hook_z"))?;
{
    let toks = model.to_tokens("EN: I like green apples. FR: J'aime les pommes")?;
    let (vertes, rouges) = (model.token_id(" vertes")?, model.token_id(" rouges")?);
    let head = [Component::Head(5, 2)];
    let ld = |l: &Logits| logit_diff(l, vertes, rouges, None);
    format!("logit diff vertes − rouges: clean {:.3} | zero {:.3} | mean {:.3} | resample {:.3}",
        ld(&model.forward(&toks)?)?, ld(&ablate(&model, &toks, &head, Ablation::Zero)?)?,
        ld(&ablate(&model, &toks, &head, Ablation::MeanPooled(&dataset))?)?, ld(&ablate(&model, &toks, &head, Ablation::Resample(&dataset, 7))?)?)
}

// %% [markdown]
// ## The original's experiment, redone
//
// The heads: the 6 with the largest translation − random difference on EN→FR (from the same
// scoring as notebook 01, on the first 80 pairs). The check ablates them on 16 **held-out** pairs
// (pairs 80 on, never used to choose the heads): mean ablation of `hook_z` (the dataset's mean
// over every position but BOS) and resample ablation (another prompt's `hook_z`, its source
// tokens on source positions and its target tokens on target positions). The control: random
// head sets with the **same number of heads in each layer** as the found set, so that a layer's
// overall importance cannot pass for the heads'.

// %%
let hs = score_heads(&model, &pairs.iter().take(80).cloned().collect::<Vec<_>>(), "en", "fr", &ScoreOptions { quiet: true, ..Default::default() })?;
let found: Vec<(usize, usize)> = hs.heads_above(f32::MIN).iter().take(6).map(|&(l, h, _)| (l, h)).collect();
let opts = mechinterp::translation::CausalOptions { pairs: 16, quiet: true, ..Default::default() };
let check = mechinterp::translation::ablation_check(&model, &pairs[80..], "en", "fr", &found, "top 6 by difference", &opts)?;
for e in &check.effects {
    let m = e.random.iter().sum::<f32>() / e.random.len() as f32;
    println!("{:>8}: Δ log-prob/token {:+.3} for {:?} vs {:+.3} for layer-matched random heads; z = {:.1}, empirical p = {:.3} (resolution {:.3})", e.mode, e.found, check.heads, m, e.z, e.p, e.p_resolution);
}

// %% [markdown]
// Each head on its own (mean ablation), with a bootstrap interval over the pairs:

// %%
check.per_head.iter().map(|e| format!("head {}.{}: Δ log-prob/token {:+.3} [{:+.3}, {:+.3}]", e.layer, e.head, e.effect, e.ci_low, e.ci_high)).collect::<Vec<_>>()

// %% [markdown]
// The random sets' effects and the found heads' effect (mean ablation):

// %%
{
    let e = &check.effects[0];
    let mut bars: Vec<(String, f32)> = e.random.iter().enumerate().map(|(i, &v)| (format!("random {i}"), v)).collect();
    bars.insert(0, ("found heads".into(), e.found));
    BarChart::new(bars).labels("Δ mean log-prob per target token (mean ablation)", "head set", "Δ log-prob")
}

// %%
{
    let e = &check.effects[0];
    let r = &check.effects[1];
    format!("Mean-ablating heads {:?} changes the log-probability per target token by {:+.3} (random sets: {:+.3} to {:+.3}); resample ablation: {:+.3}. Baseline {:.3}.",
        check.heads, e.found, e.random.iter().cloned().fold(f32::MAX, f32::min), e.random.iter().cloned().fold(f32::MIN, f32::max), r.found, check.baseline)
}

// %% [markdown]
// ## What we learned
//
// - Mean-ablating the six top heads together lowers the log-probability of the reference
//   translation on held-out pairs far more than any of the layer-matched random sets (the
//   summary cell above has the numbers); resample ablation agrees.
// - The empirical p is the smallest its number of draws can give (its resolution is printed with it); the
//   z-score says how far outside the random sets' range the effect lies. The study's "ablation
//   did little" came from its metric and the lack of a control, not from the heads.
// - Alone, most of the six heads move the log-probability little, and only a few have an interval
//   that excludes zero: the effect is a joint one, which is why the set, not each head, is tested
//   against random sets.
// - Zeroing one head (5.2) on one prompt changes little (the probabilities printed above):
//   single-head, single-prompt ablations are the wrong test for a distributed mechanism.
