// -*- coding: utf-8 -*-
// ---
// jupyter:
//   kernelspec:
//     display_name: Rust (mechinterp)
//     language: rust
//     name: mechinterp
// ---

// %% [markdown]
// # 10 · Attribution graphs: how " vertes" gets its colour
//
// In notebooks 01–05 we found heads that move a source word to the token that translates it,
// and notebook 09 read what they write with a sparse autoencoder. Here we trace one prediction end
// to end with an *attribution graph*, the method of Anthropic's "Circuit Tracing" papers and of
// circuit-tracer. After `English: I like green apples.\nFrench: J'aime les pommes` the model's
// most likely next token is " vertes" (green, feminine plural). We
//
// 1. train a transcoder for every layer (each replaces its layer's MLP: it reads the MLP's
//    input and writes a sparse reconstruction of its output), here with the quick recipe;
// 2. build the graph: with attention patterns, norm scales and the transcoders' errors frozen,
//    the model is linear in its feature activations, and one backward pass per target gives
//    the direct effect of every active feature, error and input token on every feature and
//    logit;
// 3. ask how much of " vertes" runs through features rather than error nodes, which input
//    tokens and features carry "green", and whether the path from " green" crosses to the last
//    position through the translation heads' frozen attention;
// 4. make one intervention the graph suggests, and compare the logit change it predicts with
//    what the model does.
//
// Every number below is printed by a cell; the last cell says what happened, whatever it is.

// %%
use mechinterp::sae::train::{train_transcoders, TranscoderSetOptions};
let model = HookedTransformer::gemma3_270m()?;
let tc_dir = std::env::temp_dir().join("mechinterp-10-transcoders");
// The quick recipe: 18 BatchTopK transcoders of 1 024 latents (k = 32), one streaming pass over
// 30 000 tokens of the shipped corpus, saved as JumpReLU transcoders (SAELens folders and
// circuit-tracer's per-layer files).
let mut tc_opts = TranscoderSetOptions::quick(&tc_dir);
tc_opts.quiet = true;
let trained = train_transcoders(&model, &tc_opts)?;
println!("{trained}");

// %% [markdown]
// Each layer's explained variance of `hook_mlp_out`, L0 and dead fraction are on held-out
// text; the last lines run the *replacement model* (every MLP replaced by its transcoder, no
// error terms) against the model. That is the network the graph describes, minus its errors.
// These transcoders are small and trained briefly, so expect large errors: the graph will say
// how much of the prediction they leave unexplained.

// %%
let tc = PerLayer::new(trained.saes.clone())?;
let prompt = "English: I like green apples.\nFrench: J'aime les pommes";
let toks = model.encode(prompt)?;
let t0 = std::time::Instant::now();
let graph = attribute(&model, &toks, &tc, &AttributionOptions::default())?;
let graph_s = t0.elapsed().as_secs_f64();
println!("{} tokens, {} active features, {} nodes, {} edges in {graph_s:.1} s", toks.len(), graph.selected_features.len(), graph.n_nodes(), graph.adjacency.iter().filter(|&&x| x != 0.0).count());
for (i, (t, p)) in graph.logit_token_strs.iter().zip(&graph.logit_probabilities).enumerate() {
    println!("logit node {i}: {t:?} p = {p:.3}");
}

// %% [markdown]
// ## How much runs through features?
//
// circuit-tracer's two graph scores: the *replacement score* is the share of the logits'
// influence (through all paths, edges taken in absolute value and normalised per target) that
// starts at input tokens rather than at error nodes; the *completeness score* is the share of
// every node's input, weighted by its influence, that does not come straight from an error.
// Then, for the " vertes" logit alone, the share of its direct input (absolute edge weights)
// coming from features, error nodes and tokens.

// %%
let (replacement, completeness) = graph_scores(&graph)?;
println!("replacement score {replacement:.3}, completeness score {completeness:.3}");
let vertes = graph.logit_node(0);
let (mut from_f, mut from_e, mut from_t) = (0f32, 0f32, 0f32);
for j in 0..graph.n_nodes() {
    let w = graph.edge(vertes, j).abs();
    match graph.node(j)? {
        NodeKind::Feature { .. } => from_f += w,
        NodeKind::Error { .. } => from_e += w,
        NodeKind::Token { .. } => from_t += w,
        NodeKind::Logit { .. } => {}
    }
}
let direct_total = from_f + from_e + from_t;
println!("direct input of {:?}: features {:.0}%, errors {:.0}%, tokens {:.0}%", graph.logit_token_strs[0], 100.0 * from_f / direct_total, 100.0 * from_e / direct_total, 100.0 * from_t / direct_total);

// %% [markdown]
// The graph pruned as circuit-tracer prunes it (`prune_graph`: nodes kept until they hold a
// share of the logits' influence, then edges likewise, then nodes left dangling removed), first
// with its default thresholds, then harder for a picture one can read: input tokens along the
// bottom, layers upwards, logits on top; blue edges excite, red ones inhibit.
// `mechinterp graph` writes the same graph as an interactive page (`graph.html`).

// %%
for (node_t, edge_t) in [(0.8f32, 0.98f32), (0.5, 0.9)] {
    let p = prune(&graph, node_t, edge_t)?;
    println!("pruned to {:.0}% of node influence, {:.0}% of edge influence: {} of {} nodes kept", 100.0 * node_t, 100.0 * edge_t, p.node_mask.iter().filter(|&&k| k).count(), graph.n_nodes());
}
GraphPlot::new(&graph, &prune(&graph, 0.5, 0.9)?)?.title("\" vertes\" after \"J'aime les pommes\" (pruned to 50% / 90%)").max_edges(400)

// %% [markdown]
// ## Which tokens and features carry "green"?
//
// The adjacency holds direct effects; the *total effect* of a node on a logit sums every path
// (each through a feature divided by that feature's activation, since edges are from a feature
// at its activation into another's pre-activation). It is what removing the node changes in
// the demeaned logit when every later feature responds linearly. " vertes" competes with
// " rouges" (red), the next most likely colour, so what carries *green* should raise the
// " vertes" − " rouges" difference. (Token columns follow circuit-tracer: the raw embedding row,
// without Gemma's √d_model scale, so only their ranking means something here.)

// %%
let rouges_i = graph.logit_token_strs.iter().position(|t| t == " rouges").expect("\" rouges\" is a logit node");
let rouges = graph.logit_node(rouges_i);
let eff_v = graph.total_effects(vertes)?;
let eff_r = graph.total_effects(rouges)?;
let diff: Vec<f32> = eff_v.iter().zip(&eff_r).map(|(a, b)| a - b).collect();
let mut tok_rank: Vec<usize> = (0..graph.n_pos()).collect();
tok_rank.sort_by(|&a, &b| diff[graph.token_node(b)].total_cmp(&diff[graph.token_node(a)]));
for &p in tok_rank.iter().take(4) {
    println!("token {p} {:?}: total effect on \" vertes\" − \" rouges\" {:+.4}", graph.input_token_strs[p], diff[graph.token_node(p)]);
}
let green_pos = graph.input_token_strs.iter().position(|t| t == " green").expect("\" green\" is in the prompt");
let green_rank = tok_rank.iter().position(|&p| p == green_pos).unwrap() + 1;
println!("\" green\" (position {green_pos}) ranks {green_rank} of {} tokens", graph.n_pos());
let mut green_feats: Vec<usize> = (0..graph.selected_features.len())
    .filter(|&i| matches!(graph.node(i), Ok(NodeKind::Feature { pos, .. }) if pos == green_pos))
    .collect();
green_feats.sort_by(|&a, &b| diff[b].total_cmp(&diff[a]));
println!("{} active features at \" green\"; the five that raise \" vertes\" over \" rouges\" most:", green_feats.len());
for &i in green_feats.iter().take(5) {
    println!("  {:<22} total effect {:+.4} (on \" vertes\" {:+.4})", graph.label(i)?, diff[i], eff_v[i]);
}

// %% [markdown]
// What does the strongest of them respond to? Its top activating contexts on held-out text of
// the shipped corpus (seven languages), from its transcoder's dashboard.

// %%
let top = green_feats[0];
let NodeKind::Feature { layer: top_layer, feature: top_feature, activation: top_act, .. } = graph.node(top)? else { unreachable!() };
let heldout = Corpus::shipped(Split::HeldOut)?;
let dash_texts: Vec<String> = heldout.shuffled(3).texts().take(300).map(|s| s.to_string()).collect();
let top_dash = tc.saes()[top_layer].dashboard(&model, &[top_feature], &dash_texts)?;
top_dash

// %% [markdown]
// ## Does the path cross through the translation heads?
//
// " green" sits at position 5 and the prediction is made at the last position, so whatever it
// contributes must cross positions through attention, whose patterns the graph freezes. In the
// linearised replacement model (the graph's own model, run forwards: frozen patterns, scales and
// errors, each transcoder passing its active features' pre-activations), removing the strongest
// "green" feature changes " vertes" − " rouges" by exactly its total effect. We then cut one
// head at a time, by zeroing its attention *from* every later position *to* " green", and see
// how much of that change is lost: the share of the feature's effect that crosses through that
// head (shares can add up to more than 100% when other paths pull the other way). In
// notebooks 01–05, heads 5.3, 9.3 and 11.2 were confirmed as translation heads, and head 12.3
// moved the answer in activation patching.

// %%
let frozen = Frozen::run(&model, &toks, &tc)?;
let cfg = model.cfg().clone();
let s = toks.len();
let (v_id, r_id) = (graph.logit_tokens[0] as usize, graph.logit_tokens[rouges_i] as usize);
let tt = Tensor::new(toks.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
/// " vertes" − " rouges" at the last position of a run with `hooks`.
fn vr(model: &HookedTransformer, tt: &Tensor, hooks: &Hooks, v: usize, r: usize) -> Result<f32> {
    let s = tt.dim(1)?;
    let out = model.with_hooks(hooks).pass(tt).logits_at(&[s - 1]).run()?;
    let l: Vec<f32> = out.logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(l[v] - l[r])
}
// The feature removed: minus its decoder row times its activation, at its layer and position.
let removal = (tc.saes()[top_layer].w_dec().get(top_feature)?.to_dtype(DType::F32)? * -(top_act as f64))?;
let mut extra: Vec<Tensor> = (0..cfg.n_layers).map(|_| Ok(Tensor::zeros((s, cfg.d_model), DType::F32, &Device::Cpu)?)).collect::<Result<_>>()?;
extra[top_layer] = extra[top_layer].slice_assign(&[green_pos..green_pos + 1, 0..cfg.d_model], &removal.unsqueeze(0)?)?;
let base = linear_replacement(&frozen, &tc, None)?;
let cut = linear_replacement(&frozen, &tc, Some(&extra))?;
let full_change = vr(&model, &tt, &cut, v_id, r_id)? - vr(&model, &tt, &base, v_id, r_id)?;
println!("replacement model: removing {} changes \" vertes\" − \" rouges\" by {full_change:+.4}; the graph's total effect predicts {:+.4}", graph.label(top)?, -diff[top]);
let mut shares: Vec<((usize, usize), f32)> = Vec::new();
for l in top_layer + 1..cfg.n_layers {
    for h in 0..cfg.n_heads {
        let (p, n_heads) = (green_pos, cfg.n_heads);
        let blind = Hooks::new().add(&format!("blocks.{l}.attn.hook_pattern"), move |x, _| {
            // Head h no longer reads " green" from any later query position.
            let mut m = vec![1f32; n_heads * s * s];
            for q in p + 1..s { m[h * s * s + q * s + p] = 0.0; }
            Ok((x * Tensor::from_vec(m, (1, n_heads, s, s), x.device())?.to_dtype(x.dtype())?)?)
        })?;
        let change = vr(&model, &tt, &cut.clone().then(&blind), v_id, r_id)? - vr(&model, &tt, &base.clone().then(&blind), v_id, r_id)?;
        shares.push(((l, h), 1.0 - change / full_change));
    }
}
shares.sort_by(|a, b| b.1.total_cmp(&a.1));
for ((l, h), sh) in shares.iter().take(8) {
    println!("head {l}.{h}: carries {:.0}% of the feature's effect", 100.0 * sh);
}
let translation_heads = [(5usize, 3usize), (9, 3), (11, 2)];
for th in translation_heads {
    match shares.iter().position(|(k, _)| *k == th) {
        Some(r) => println!("translation head {}.{}: rank {} of {} heads after layer {top_layer}, {:.0}%", th.0, th.1, r + 1, shares.len(), 100.0 * shares[r].1),
        None => println!("translation head {}.{}: not after layer {top_layer}, so it cannot carry this feature", th.0, th.1),
    }
}

// %% [markdown]
// ## One intervention: the graph's prediction against the model
//
// Now the real model, with nothing frozen and every MLP its own: we remove the same feature at
// the same position (subtract its decoder row times its activation from layer
// `hook_mlp_out`, which is exactly what zeroing it does with its transcoder spliced in with the
// error term), and compare the change of " vertes" − " rouges" and of the probabilities with the
// graph's prediction.

// %%
let clean_vr = vr(&model, &tt, &Hooks::new(), v_id, r_id)?;
let patch = Tensor::zeros((1, s, cfg.d_model), DType::F32, &Device::Cpu)?.slice_assign(&[0..1, green_pos..green_pos + 1, 0..cfg.d_model], &removal.unsqueeze(0)?.unsqueeze(0)?)?;
let ablate_feature = Hooks::new().add(&format!("blocks.{top_layer}.hook_mlp_out"), move |x, _| Ok((x + patch.to_dtype(x.dtype())?)?))?;
let real_vr = vr(&model, &tt, &ablate_feature, v_id, r_id)?;
/// p(" vertes") and p(" rouges") at the last position of a run with `hooks`.
fn probs(model: &HookedTransformer, tt: &Tensor, hooks: &Hooks, v: usize, r: usize) -> Result<(f32, f32)> {
    let s = tt.dim(1)?;
    let out = model.with_hooks(hooks).pass(tt).logits_at(&[s - 1]).run()?;
    let l: Vec<f32> = out.logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    let z: f64 = l.iter().map(|&x| f64::from(x - m).exp()).sum();
    Ok(((f64::from(l[v] - m).exp() / z) as f32, (f64::from(l[r] - m).exp() / z) as f32))
}
let (pv0, pr0) = probs(&model, &tt, &Hooks::new(), v_id, r_id)?;
let (pv1, pr1) = probs(&model, &tt, &ablate_feature, v_id, r_id)?;
println!("\" vertes\" − \" rouges\": clean {clean_vr:+.3}; the graph predicts {:+.3}, the model moves it {:+.3}", -diff[top], real_vr - clean_vr);
println!("p(\" vertes\") {pv0:.3} → {pv1:.3}, p(\" rouges\") {pr0:.3} → {pr1:.3}");

// %% [markdown]
// ## What happened
//
// The cell below reads the numbers above and says what they show.

// %%
{
let worst_ev = trained.eval.as_ref().map(|e| e.layers.iter().map(|r| r.explained_variance_ordinary).fold(f64::INFINITY, f64::min));
println!("Transcoders: quick recipe, worst layer's explained variance of hook_mlp_out {:.3} (ordinary held-out tokens).", worst_ev.unwrap_or(f64::NAN));
if let Some(r) = trained.eval.as_ref().and_then(|e| e.replacement.as_ref()) {
    println!("With every MLP replaced and no error terms, the model keeps its top-1 token at {:.1}% of held-out positions (KL {:.2} nats/token): the errors carry much of the computation, which the graph scores below measure for this prompt.", 100.0 * r.top1_agreement, r.kl);
}
println!("Graph: {} features, built in {graph_s:.1} s; replacement score {replacement:.3}, completeness {completeness:.3}; {:.0}% of \" vertes\"'s direct input comes from error nodes.", graph.selected_features.len(), 100.0 * from_e / direct_total);
println!("\" green\" ranks {green_rank} of {} input tokens by its total effect on \" vertes\" − \" rouges\".", graph.n_pos());
let top_heads: Vec<String> = shares.iter().filter(|(_, s)| *s >= 0.2).map(|((l, h), s)| format!("{l}.{h} ({:.0}%)", 100.0 * s)).collect();
let th_top: Vec<String> = translation_heads.iter().filter(|th| shares.iter().any(|(k, s)| k == *th && *s >= 0.2)).map(|(l, h)| format!("{l}.{h}")).collect();
println!("Heads carrying at least 20% of the top \" green\" feature's effect to later positions: {}; of the confirmed translation heads: {}.", top_heads.join(", "), if th_top.is_empty() { "none".to_string() } else { th_top.join(", ") });
let predicted = -diff[top];
let actual = real_vr - clean_vr;
println!("Intervention: the graph predicts {predicted:+.3}, the model moves {actual:+.3} ({:.0}% of the prediction{}).", 100.0 * actual / predicted,
    if actual.signum() == predicted.signum() { ", same sign" } else { ", opposite sign" });
}
