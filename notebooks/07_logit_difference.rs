// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 07 · Logit difference, and why to swap
//
// A logit difference logit(A) − logit(B) measures a preference, but part of it is the model's
// **prior** for A over B whatever the prompt says. Pair each prompt with one whose answers are
// reversed ("Eiffel Tower → Paris vs Rome", "Colosseum → Rome vs Paris") and average
// LD(prompt 1: Paris − Rome) with LD(prompt 2: Rome − Paris): the prior adds to one term and
// subtracts from the other, so it cancels.

// %%
let model = HookedTransformer::gemma3_270m()?;
let (paris, rome) = (model.token_id(" Paris")?, model.token_id(" Rome")?);
let eiffel = model.forward(&model.to_tokens("The Eiffel Tower is in the city of")?)?;
let colosseum = model.forward(&model.to_tokens("The Colosseum is in the city of")?)?;
let a = logit_diff(&eiffel, paris, rome, None)?;
let b = logit_diff(&colosseum, rome, paris, None)?;
format!("Eiffel: Paris − Rome = {a:.3}; Colosseum: Rome − Paris = {b:.3}; swap-averaged = {:.3}; prior for Paris over Rome ≈ {:.3}",
        swap_averaged_logit_diff(&eiffel, &colosseum, paris, rome, None)?, (a - b) / 2.0)

// %% [markdown]
// ## A dataset, not one pair
//
// One pair shows the idea; it cannot say how large the prior is in general, or how often it
// matters. So we build many reversed pairs. Each prompt asks for the French of an adjective in
// front of a feminine plural noun (`English: I like green apples.` / `French: J'aime les pommes`),
// where the answer is the adjective's French form (" vertes"). For two adjectives a and b and one
// noun, the prompt with a gives LD(a) = logit(a) − logit(b), the prompt with b gives
// LD(b) = logit(b) − logit(a); their mean is the swap-averaged effect of the prompt, and half
// their difference is the **prior** for a over b. Adjectives whose French form is not one token
// are left out (the cell says which). One batched forward pass per noun gives every pair.

// %%
let adjectives = [("green", "vertes"), ("red", "rouges"), ("yellow", "jaunes"), ("black", "noires"), ("white", "blanches"),
                  ("blue", "bleues"), ("big", "grandes"), ("small", "petites"), ("beautiful", "belles"), ("new", "nouvelles"), ("old", "vieilles")];
let nouns = [("apples", "pommes"), ("cars", "voitures"), ("houses", "maisons"), ("flowers", "fleurs"), ("chairs", "chaises"), ("doors", "portes")];
let (kept, dropped): (Vec<(&str, &str)>, Vec<(&str, &str)>) = adjectives.iter().copied().partition(|(_, fr)| model.token_id(&format!(" {fr}")).is_ok());
let ids: Vec<u32> = kept.iter().map(|(_, fr)| model.token_id(&format!(" {fr}"))).collect::<Result<_>>()?;
let k = kept.len();
// lg[noun][prompt adjective][answer adjective]: the answer's logit at the prompt's last token.
let mut lg: Vec<Vec<Vec<f32>>> = Vec::new();
for (en, fr) in &nouns {
    let prompts: Vec<String> = kept.iter().map(|(a, _)| format!("English: I like {a} {en}.\nFrench: J'aime les {fr}")).collect();
    let logits = model.forward(&model.to_tokens_batch(&prompts)?)?;
    let mut rows = Vec::new();
    for (r, &len) in logits.lengths().iter().enumerate() {
        let last = logits.i((r, len - 1))?.to_vec1::<f32>()?;
        rows.push(ids.iter().map(|&i| last[i as usize]).collect::<Vec<f32>>());
    }
    lg.push(rows);
}
println!("{k} adjectives with a one-token French form (left out: {:?}), {} nouns", dropped.iter().map(|a| a.1).collect::<Vec<_>>(), nouns.len());

// %%
// Per unordered adjective pair, averaged over the nouns; the bootstrap resamples pairs.
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
};

// %%
use mechinterp::stats::bootstrap_interval;
let (s, slo, shi) = bootstrap_interval(&swap, |v| v.iter().sum::<f32>() / v.len() as f32, 2000, 0.95, 1);
let (p, plo, phi) = bootstrap_interval(&prior, |v| v.iter().map(|x| x.abs()).sum::<f32>() / v.len() as f32, 2000, 0.95, 2);
let bigger = swap.iter().zip(&prior).filter(|(s, p)| p.abs() > s.abs()).count();
println!("{} adjective pairs × {} nouns = {prompt_pairs} prompt pairs", swap.len(), nouns.len());
println!("swap-averaged logit difference: {s:.2}, 95% bootstrap interval [{slo:.2}, {shi:.2}]");
println!("size of the prior, mean |prior|: {p:.2}, 95% bootstrap interval [{plo:.2}, {phi:.2}] ({:.0}% of the effect)", 100.0 * p / s);
println!("adjective pairs whose prior is larger than their effect: {bigger} of {}", swap.len());
println!("prompt pairs where the plain logit difference points the wrong way on one of the two prompts: {wrong_way} of {prompt_pairs}");
for w in word_prior.iter_mut() { *w /= (k - 1) as f32; };

// %%
// In a block: evcxr shows a cell's value with its `evcxr_display` only when the value does not
// consume a variable of the cell.
{
    let mut bars: Vec<(String, f32)> = kept.iter().map(|(_, fr)| format!(" {fr}")).zip(word_prior.iter().copied()).collect();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1));
    BarChart::new(bars).labels("Prior of each answer: mean prior over the other adjectives", "answer", "logits")
}

// %% [markdown]
// ## What we learned
//
// - On one pair, the model prefers " Rome" to " Paris" whatever the prompt (the prior printed in
//   the first cell), so each prompt's plain logit difference misstates what the prompt
//   contributes; the swap average cancels the prior.
// - Over the adjective dataset the cells above give the typical prior, with its interval, next to
//   the swap-averaged effect, and count the pairs where a plain logit difference on one prompt
//   alone would point the wrong way. The bar chart shows which answers the model favours
//   regardless of the prompt: the green/red pair of notebooks 04–06 has an asymmetric baseline
//   for that reason.
// - Report swap-averaged logit differences, and the prior beside them, whenever answers can be
//   exchanged.
