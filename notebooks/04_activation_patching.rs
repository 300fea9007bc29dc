// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 04 · Activation patching
//
// A clean and a corrupted prompt that differ in one source word: the model should translate
// "green" in the clean one and "red" in the corrupted one. The metric is
// logit(" vertes") − logit(" rouges") at the last position. **Denoising** patches clean activations
// into the corrupted run (what restores the answer?); **noising** patches corrupted activations
// into the clean run (what breaks it?).

// %%
let model = HookedTransformer::gemma3_270m()?;
let clean = "EN: I like green apples. FR: J'aime les pommes";
let corrupt = "EN: I like red apples. FR: J'aime les pommes";
let p = Patcher::new(&model, clean, corrupt, LogitDiff::from_strs(&model, " vertes", " rouges")?)?.quiet(true);
format!("clean {:.3}, corrupted {:.3}", p.clean_value(), p.corrupted_value())

// %% [markdown]
// The residual stream by layer × position, denoising (1 = the clean answer restored):

// %%
p.activation(PatchTarget::ResidPre, Direction::Denoise)?

// %% [markdown]
// Each head's output, denoising and noising:

// %%
let heads_denoise = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
heads_denoise

// %% [markdown]
// The same grid can print its values, as papers show small head grids:

// %%
let heads_noise = p.activation(PatchTarget::HeadOut, Direction::Noise)?;
heads_noise.heatmap()?.annotate_values(2)

// %% [markdown]
// Keys and values are patched per **kv head**: this model has one, so patching it changes the
// keys of all 4 query heads of a layer at once.

// %%
p.activation(PatchTarget::HeadV, Direction::Denoise)?

// %%
let top = heads_denoise.normalized().top_k(4);
top.iter().map(|(i, v)| format!("head {}.{}: restores {:.0}% of the gap", i[0], i[1], 100.0 * v)).collect::<Vec<_>>()

// %%
{
    let n = heads_noise.normalized();
    let worst = n.values.iter().cloned().fold(f32::MAX, f32::min);
    format!("Denoising: the best single head restores {:.0}% of the gap; noising: the most damaging single head leaves {:.0}% of the clean logit difference.", 100.0 * top[0].1, 100.0 * worst)
}

// %% [markdown]
// ## What we learned
//
// - The colour lives at the " green" / " red" position in the residual stream through the early
//   and middle layers and moves to the final position around layers 11–12.
// - The heads that move it are late: 11.2 alone restores 52% of the gap when denoised, 12.3
//   48%, 11.1 30%, 12.1 27%. Noising any single head leaves at least 56% of the clean logit
//   difference, so the clean run has some redundancy.
// - Heads 11.2 and 12.3 are also among the diagonal-score heads of notebook 01 (11.2 is in the
//   top 8 of every direction): the attention score and the causal role agree here.
