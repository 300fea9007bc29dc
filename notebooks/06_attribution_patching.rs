// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 06 · Attribution patching
//
// Activation patching needs one forward pass per entry. Attribution patching estimates all of
// them at once from a forward and a backward pass: Δmetric ≈ (clean − corrupted activation) ·
// ∂metric/∂activation, taken on the corrupted run for denoising. It is a linear approximation:
// good for small changes, wrong where the model is far from linear.

// %%
let model = HookedTransformer::gemma3_270m()?;
let clean = "EN: I like green apples. FR: J'aime les pommes";
let corrupt = "EN: I like red apples. FR: J'aime les pommes";
let p = Patcher::new(&model, clean, corrupt, LogitDiff::from_strs(&model, " vertes", " rouges")?)?.quiet(true);
let attr = p.attribution(Direction::Denoise)?;
let heads = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
println!("{} heads, each patched alone and estimated by attribution", model.cfg().n_layers * model.cfg().n_heads);

// %%
// A cell of its own: evcxr draws a cell's value, rather than printing it as a Debug dump, only
// in some cells; alone it is drawn.
attr.agreement(&heads)?

// %% [markdown]
// The same comparison for the residual stream, position by position:

// %%
let resid = p.activation(PatchTarget::ResidPre, Direction::Denoise)?;
attr.agreement(&resid)?

// %% [markdown]
// ## When the estimate fails
//
// The worst-estimated entries of the residual stream:

// %%
let a = attr.agreement(&resid)?;
let mut pts = a.points.clone();
pts.sort_by(|x, y| (y.1 - y.2).abs().total_cmp(&(x.1 - x.2).abs()));
pts.iter().take(5).map(|(l, e, v)| format!("{l}: estimate {e:+.3}, actual {v:+.3}")).collect::<Vec<_>>()

// %%
format!("Pearson correlation of estimate and actual change: {:.3} for head outputs, {:.3} for residual positions; the worst residual entry is off by {:.3}.",
    attr.agreement(&heads)?.pearson, a.pearson, (pts[0].1 - pts[0].2).abs())

// %% [markdown]
// ## What we learned
//
// - For head outputs the estimate tracks activation patching closely (Pearson 0.993 over 72
//   heads).
// - For the residual stream the correlation drops to 0.935, and the worst entries are all at the
//   " green" position in layers 4–8, where the estimate is about half the real effect (the table above):
//   swapping the word is no small perturbation, and the linear estimate saturates.
// - Use attribution patching to rank candidates in one pass, then confirm them with activation
//   patching.
