use candle_core::{DType, IndexOp, Tensor};
use mechinterp::graph::{
    attribute, graph_scores, linear_replacement, prune, AttributionOptions, Frozen, NodeKind,
    PerLayer,
};
use mechinterp::prelude::*;
use std::time::Instant;

fn main() -> Result<()> {
    let model = HookedTransformer::gemma3_270m()?;
    let dir = std::env::args().nth(1).unwrap();
    let saes =
        mechinterp::sae::format::circuit_tracer::load_transcoder_set(std::path::Path::new(&dir))?;
    let tc = PerLayer::new(saes)?;
    let prompt = "English: I like green apples.\nFrench: J'aime les pommes";
    let toks = model.encode(prompt)?;
    let t0 = Instant::now();
    let graph = attribute(&model, &toks, &tc, &AttributionOptions::default())?;
    println!(
        "{} nodes ({} features) in {:.1}s",
        graph.n_nodes(),
        graph.selected_features.len(),
        t0.elapsed().as_secs_f64()
    );
    for (i, (t, p)) in graph
        .logit_token_strs
        .iter()
        .zip(&graph.logit_probabilities)
        .enumerate()
    {
        println!("logit {i}: {t:?} {p:.3}");
    }
    let (rep, comp) = graph_scores(&graph)?;
    println!("replacement {rep:.3} completeness {comp:.3}");
    let pr = prune(&graph, 0.8, 0.98)?;
    println!(
        "pruned nodes {}",
        pr.node_mask.iter().filter(|&&b| b).count()
    );
    let vertes = graph.logit_node(0);
    let rouges = graph.logit_node(1);
    let ev = graph.total_effects(vertes)?;
    let er = graph.total_effects(rouges)?;
    let diff: Vec<f32> = ev.iter().zip(&er).map(|(a, b)| a - b).collect();
    // direct shares
    let n = graph.n_nodes();
    let (mut f, mut e, mut t) = (0f32, 0f32, 0f32);
    for j in 0..n {
        let w = graph.edge(vertes, j).abs();
        match graph.node(j)? {
            NodeKind::Feature { .. } => f += w,
            NodeKind::Error { .. } => e += w,
            NodeKind::Token { .. } => t += w,
            _ => {}
        }
    }
    let tot = f + e + t;
    println!(
        "direct into vertes: features {:.2} errors {:.2} tokens {:.2}",
        f / tot,
        e / tot,
        t / tot
    );
    let mut tokrank: Vec<(usize, f32)> = (0..graph.n_pos())
        .map(|p| (p, ev[graph.token_node(p)]))
        .collect();
    tokrank.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    for (p, v) in tokrank.iter().take(5) {
        println!(
            "token {p} {:?}: {v:.3} (diff {:.3})",
            graph.input_token_strs[*p],
            diff[graph.token_node(*p)]
        );
    }
    let green = 5usize;
    let mut feats: Vec<(usize, f32)> = (0..graph.selected_features.len())
        .filter(|&i| matches!(graph.node(i), Ok(NodeKind::Feature{pos, ..}) if pos == green))
        .map(|i| (i, diff[i]))
        .collect();
    feats.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (i, v) in feats.iter().take(5) {
        println!("{} diff {v:.3} vertes {:.3}", graph.label(*i)?, ev[*i]);
    }
    let (top, _) = feats[0];
    let NodeKind::Feature {
        layer,
        pos,
        feature,
        activation,
    } = graph.node(top)?
    else {
        panic!()
    };
    let frozen = Frozen::run(&model, &toks, &tc)?;
    let cfg = model.cfg().clone();
    let s = toks.len();
    let mut extra: Vec<Tensor> = (0..cfg.n_layers)
        .map(|_| Tensor::zeros((s, cfg.d_model), DType::F32, model.device()))
        .collect::<candle_core::Result<_>>()?;
    let row = tc.saes()[layer]
        .w_dec()
        .get(feature)?
        .to_dtype(DType::F32)?;
    extra[layer] = extra[layer].slice_assign(
        &[pos..pos + 1, 0..cfg.d_model],
        &(row * (-activation as f64))?.unsqueeze(0)?,
    )?;
    let tt = Tensor::new(toks.as_slice(), model.device())?.unsqueeze(0)?;
    let ld = |hooks: &Hooks| -> Result<f32> {
        let out = model
            .with_hooks(hooks)
            .pass(&tt)
            .logits_at(&[s - 1])
            .run()?;
        let l: Vec<f32> = out.logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        Ok(l[graph.logit_tokens[0] as usize] - l[graph.logit_tokens[1] as usize])
    };
    let base = linear_replacement(&frozen, &tc, None)?;
    let cut = linear_replacement(&frozen, &tc, Some(&extra))?;
    let d0 = ld(&cut)? - ld(&base)?;
    println!(
        "replacement: removing {} changes diff by {d0:.4}; graph predicts {:.4}",
        graph.label(top)?,
        -diff[top]
    );
    let t1 = Instant::now();
    let mut heads = vec![];
    for l in layer + 1..cfg.n_layers {
        for h in 0..cfg.n_heads {
            let edit =
                Hooks::new().add(&format!("blocks.{l}.attn.hook_pattern"), move |x, _| {
                    let mut m = vec![1f32; s * s];
                    for q in pos + 1..s {
                        m[q * s + pos] = 0.0;
                    }
                    let mut full = vec![1f32; x.dims()[1] * s * s];
                    full[h * s * s..(h + 1) * s * s].copy_from_slice(&m);
                    let mk = Tensor::from_vec(full, (1, x.dims()[1], s, s), x.device())?
                        .to_dtype(x.dtype())?;
                    Ok((x * mk)?)
                })?;
            let dh = ld(&cut.clone().then(&edit))? - ld(&base.clone().then(&edit))?;
            heads.push((l, h, 1.0 - dh / d0));
        }
    }
    heads.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("heads in {:.1}s", t1.elapsed().as_secs_f64());
    for (l, h, sh) in heads.iter().take(8) {
        println!("head {l}.{h}: share {sh:.3}");
    }
    // real model
    let clean = ld(&Hooks::new())?;
    let rm = Tensor::zeros((1, s, cfg.d_model), DType::F32, model.device())?.slice_assign(
        &[0..1, pos..pos + 1, 0..cfg.d_model],
        &extra[layer].i(pos..pos + 1)?.unsqueeze(0)?,
    )?;
    let real = Hooks::new().add(&format!("blocks.{layer}.hook_mlp_out"), move |x, _| {
        Ok((x + rm.to_dtype(x.dtype())?)?)
    })?;
    println!("real: {:.4}", ld(&real)? - clean);
    Ok(())
}
