// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 02 · The logit lens on translation
//
// The logit lens reads the residual stream after every layer as if it were the last: normalise it
// with the final RMSNorm, unembed, softmax. Here: when does the French word appear, and does the
// English word show up first (the "English-centric latent" question)?

// %%
let model = HookedTransformer::gemma3_270m()?;
let prompt = "English: I like green apples.\nFrench: J'aime les pommes";
let lens = LogitLens::new(&model, prompt)?;
let last = lens.n_positions() - 1;
let ids = [model.token_id(" vertes")?, model.token_id(" green")?, model.token_id(" rouges")?];

// %%
lens.probs(last, &ids)?.lines()?.labels("next-token probability across layers", "layer", "probability")

// %% [markdown]
// The top token at every layer and position (hover for the token):

// %%
lens.heatmap()?

// %% [markdown]
// ## Many words: where does each language appear first?
//
// For a set of one-word translations in the one-shot format, we record the first layer at which
// the French word, and the English word, enters the lens's top 10 at the last position.

// %%
let words = [("green", " vertes", "J'aime les pommes"), ("cat", " chat", "Le"), ("house", " maison", "La"), ("water", " eau", "L'"),
             ("bread", " pain", "Le"), ("dog", " chien", "Le"), ("book", " livre", "Le"), ("sun", " soleil", "Le")];
let mut rows: Vec<(String, Option<usize>, Option<usize>)> = Vec::new();
for (en, fr, prefix) in words {
    let p = format!("English: I see the {en}.\nFrench: {prefix}");
    let lens = LogitLens::new(&model, &p)?;
    let pos = lens.n_positions() - 1;
    let first = |tok: u32| -> Result<Option<usize>> { Ok(lens.rank_of(pos, tok)?.iter().position(|&r| r < 10)) };
    let (fr_id, en_id) = (model.token_id(fr)?, model.token_id(&format!(" {en}"))?);
    rows.push((en.to_string(), first(fr_id)?, first(en_id)?));
}
rows.iter().map(|(w, f, e)| format!("{w:>6}: French in top 10 from layer {f:?}, English from {e:?}")).collect::<Vec<_>>()

// %%
let earlier = rows.iter().filter(|(_, f, e)| match (f, e) { (Some(f), Some(e)) => e < f, (None, Some(_)) => true, _ => false }).count();
format!("the English word reaches the top 10 before the French one in {earlier} of {} cases", rows.len())

// %%
{
    let t = lens.probs(last, &ids)?;
    let layer_of = |k: usize| (0..t.axes[0].len()).find(|&l| t.get(&[l, k]).map_or(false, |p| p > 0.1)).map(|l| t.axes[0].labels[l].clone());
    let max_green = (0..t.axes[0].len()).map(|l| t.get(&[l, 1]).unwrap_or(0.0)).fold(0f32, f32::max);
    format!("« vertes» first exceeds 10% at {:?}; « green» peaks at {:.1}% on the way; the English word leads the French one in {earlier} of {} single-word prompts.", layer_of(0), 100.0 * max_green, rows.len())
}

// %% [markdown]
// ## What we learned
//
// - On "J'aime les pommes …", the English word comes first: " green" peaks at layer 13
//   while " vertes" is still negligible, and " vertes" takes over from layer 15 (the chart
//   above) before the final layer spreads the mass.
// - Over eight one-word prompts the English word enters the top 10 before the French one in 7
//   (usually at layer 12, the French one at 13–18): this 270M model's intermediate layers read
//   as English, as reported for larger models.
// - Caveat: the lens reads every layer through the final norm, which early layers were not
//   trained for; before layer 12 neither word is anywhere near the top.
