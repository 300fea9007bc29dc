//! Attribution graphs (issue 25): every edge is an exact direct effect in the frozen
//! replacement model. With attention patterns, norm scales and every MLP output frozen (the
//! transcoders' output plus the error), adding an error node's vector once more, or doubling a
//! feature's activation, changes every later feature's pre-activation and every demeaned logit
//! by exactly that node's adjacency column; on a tiny model of every architecture and on the
//! default model. Also: node order and counts, pruning, graph scores, and both exports.

use candle_core::{DType, Device, IndexOp, Tensor};
use mechinterp::graph::{
    attribute, graph_scores, prune, AttributionOptions, Frozen, Graph, PerLayer, Transcoders,
};
use mechinterp::prelude::*;
use mechinterp::sae::{Architecture, Format, Normalization, Sae, SaeConfig, SaeWeights};

pub(crate) fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    let mut rng = mechinterp::stats::Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.gaussian() * scale) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random transcoder for layer `l` reading `mlp.hook_in`, writing `hook_mlp_out`, whose
/// encoder bias is `bias` (negative: sparse).
fn transcoder(l: usize, d: usize, d_sae: usize, seed: u64, bias: &Tensor) -> Sae {
    let cfg = SaeConfig {
        architecture: Architecture::Transcoder,
        d_in: d,
        d_sae,
        d_out: d,
        hook_name: format!("blocks.{l}.mlp.hook_in"),
        hook_name_out: format!("blocks.{l}.hook_mlp_out"),
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: false,
        model_name: None,
        context_size: None,
        exclude_special_tokens: None,
        format: Format::InMemory,
        metadata: serde_json::json!({}),
    };
    let s = 1.0 / (d as f64).sqrt();
    let w = SaeWeights {
        w_enc: randn(seed, &[d, d_sae], s),
        b_enc: Some(bias.clone()),
        w_dec: randn(seed + 2, &[d_sae, d], s),
        b_dec: randn(seed + 3, &[d], 0.1),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    Sae::new(cfg, w).unwrap()
}

/// One transcoder per layer; each encoder bias is set from the prompt's own pre-activations
/// so that about `frac` of (position, feature) pairs fire.
pub(crate) fn transcoders(m: &HookedTransformer, toks: &[u32], d_sae: usize, z: f64) -> PerLayer {
    let t = Tensor::new(toks, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let filter = |n: &str| n.ends_with("mlp.hook_in");
    let out = m.pass(&t).cache(&filter).no_logits().run().unwrap();
    let d = m.cfg().d_model;
    let saes = (0..m.cfg().n_layers)
        .map(|l| {
            let x = out
                .cache
                .get(&format!("blocks.{l}.mlp.hook_in"))
                .unwrap()
                .i(0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let seed = 1000 + 10 * l as u64;
            let w = randn(seed, &[d, d_sae], 1.0 / (d as f64).sqrt());
            let pre = x.matmul(&w).unwrap();
            let std = pre.sqr().unwrap().mean_all().unwrap().sqrt().unwrap();
            let b = (std.to_scalar::<f32>().unwrap() as f64) * -z;
            let bias = Tensor::full(b as f32, d_sae, &Device::Cpu).unwrap();
            transcoder(l, d, d_sae, seed, &bias)
        })
        .collect();
    PerLayer::new(saes).unwrap()
}

/// How many times its vector a perturbed node adds: the frozen model is linear, and a large
/// (power-of-two) gain lifts the response far above f32 rounding in the differences.
pub(crate) const GAIN: f64 = 1024.0;

/// The largest |x| of a slice.
pub(crate) fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, &x| a.max(x.abs()))
}

/// Checks the source columns `sources` (features, then errors) of a per-layer set's graph `g`
/// against the frozen replacement model's response ([`check_columns`]).
fn perturbation_check(
    m: &HookedTransformer,
    tc: &PerLayer,
    g: &Graph,
    sources: &[usize],
    batch: usize,
) -> f32 {
    let cfg = m.cfg();
    let (n, s) = (cfg.n_layers, g.n_pos());
    let frozen = Frozen::run(m, &g.input_tokens, tc).unwrap();
    let clean_out: Vec<Tensor> = (0..n).map(|l| frozen.mlp_out(l).unwrap()).collect();
    let inputs: Vec<Tensor> = (0..n).map(|l| frozen.input(tc, l).unwrap()).collect();
    let n_feat = g.selected_features.len();
    // What each source adds to its layer's MLP output when perturbed (its vector once more).
    let delta = |src: usize| -> Vec<(usize, usize, Tensor)> {
        if src < n_feat {
            let [l, p, f] = g.active_features[g.selected_features[src] as usize];
            let a = g.activation_values[g.selected_features[src] as usize];
            let row = tc.saes()[l as usize].w_dec().get(f as usize).unwrap();
            vec![(l as usize, p as usize, (row * a as f64).unwrap())]
        } else {
            let (l, p) = ((src - n_feat) / s, (src - n_feat) % s);
            // circuit-tracer zeroes the BOS position's error node.
            let rec = tc.saes()[l].forward(&inputs[l]).unwrap();
            let err = (&clean_out[l] - rec).unwrap().get(p).unwrap();
            let err = if p == 0 {
                err.zeros_like().unwrap()
            } else {
                err
            };
            vec![(l, p, err)]
        }
    };
    check_columns(m, tc, g, sources, batch, &delta)
}

/// Checks the source columns `sources` of `g` against the frozen replacement model's response,
/// `batch` perturbed runs at a time: `delta(src)` is what the source adds to the MLP outputs
/// when perturbed (its vectors once more), as (layer, position, vector) triples. Returns the
/// worst error relative to each column's largest entry.
pub(crate) fn check_columns(
    m: &HookedTransformer,
    tc: &dyn Transcoders,
    g: &Graph,
    sources: &[usize],
    batch: usize,
    delta: &dyn Fn(usize) -> Vec<(usize, usize, Tensor)>,
) -> f32 {
    let cfg = m.cfg();
    let (n, s, d) = (cfg.n_layers, g.n_pos(), cfg.d_model);
    let frozen = Frozen::run(m, &g.input_tokens, tc).unwrap();
    let clean_out: Vec<Tensor> = (0..n).map(|l| frozen.mlp_out(l).unwrap()).collect();
    let inputs: Vec<Tensor> = (0..n).map(|l| frozen.input(tc, l).unwrap()).collect();
    let n_feat = g.selected_features.len();
    let toks = Tensor::new(g.input_tokens.as_slice(), &Device::Cpu).unwrap();
    let pre_clean: Vec<Vec<Vec<f32>>> = (0..n)
        .map(|l| tc.encode_pre(l, &inputs[l]).unwrap().to_vec2().unwrap())
        .collect();
    let demean = |x: Tensor| -> Tensor {
        let x = x.to_dtype(DType::F64).unwrap();
        x.broadcast_sub(&x.mean_keepdim(1).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let cache_names = |name: &str| name.ends_with("mlp.hook_in") || name == "unembed.hook_out";
    let logit_clean = {
        let hooks = frozen.replacement_hooks(&clean_out, tc).unwrap();
        let out = m
            .with_hooks(&hooks)
            .pass(&toks.unsqueeze(0).unwrap())
            .cache(&cache_names)
            .logits_at(&[s - 1])
            .run()
            .unwrap();
        out.cache
            .get("unembed.hook_out")
            .unwrap()
            .i((.., 0))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let mut worst = 0f32;
    let top = max_abs(&g.adjacency);
    for chunk in sources.chunks(batch) {
        let b = chunk.len();
        let deltas: Vec<Vec<(usize, usize, Tensor)>> = chunk.iter().map(|&c| delta(c)).collect();
        let outs: Vec<Tensor> = (0..n)
            .map(|l| {
                let rows: Vec<Tensor> = deltas
                    .iter()
                    .map(|ds| {
                        let mut t = clean_out[l].clone();
                        for (dl, p, v) in ds {
                            if *dl == l {
                                let add = Tensor::zeros((s, d), DType::F32, &Device::Cpu)
                                    .unwrap()
                                    .slice_assign(&[*p..*p + 1, 0..d], &v.unsqueeze(0).unwrap())
                                    .unwrap();
                                t = (t + (add * GAIN).unwrap()).unwrap();
                            }
                        }
                        t
                    })
                    .collect();
                Tensor::stack(&rows, 0).unwrap()
            })
            .collect();
        let hooks = frozen.replacement_hooks(&outs, tc).unwrap();
        let tb = toks.unsqueeze(0).unwrap().repeat((b, 1)).unwrap();
        let last = vec![s - 1; b];
        let out = m
            .with_hooks(&hooks)
            .pass(&tb)
            .cache(&cache_names)
            .logits_at(&last)
            .run()
            .unwrap();
        let logits = out
            .cache
            .get("unembed.hook_out")
            .unwrap()
            .i((.., 0))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let dlogit: Vec<Vec<f32>> = demean(logits.broadcast_sub(&logit_clean).unwrap())
            .to_vec2()
            .unwrap();
        let pre_now: Vec<Vec<Vec<Vec<f32>>>> = (0..n)
            .map(|l| {
                let x = out
                    .cache
                    .get(&format!("blocks.{l}.mlp.hook_in"))
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap();
                (0..b)
                    .map(|i| {
                        tc.encode_pre(l, &x.i(i).unwrap())
                            .unwrap()
                            .to_vec2()
                            .unwrap()
                    })
                    .collect()
            })
            .collect();
        for (i, &src) in chunk.iter().enumerate() {
            let nn = g.n_nodes();
            let col: Vec<f32> = (0..nn).map(|t| g.edge(t, src)).collect();
            let scale = max_abs(&col).max(1e-3 * top).max(1e-4);
            let mut got = vec![0f32; nn];
            for (t, slot) in got.iter_mut().enumerate().take(n_feat) {
                let [l, p, f] = g.active_features[g.selected_features[t] as usize];
                let (l, p, f) = (l as usize, p as usize, f as usize);
                *slot = (pre_now[l][i][p][f] - pre_clean[l][p][f]) / GAIN as f32;
            }
            for (k, &tok) in g.logit_tokens.iter().enumerate() {
                got[g.logit_node(k)] = dlogit[i][tok as usize] / GAIN as f32;
            }
            for t in 0..nn {
                let e = (got[t] - col[t]).abs() / scale;
                worst = worst.max(e);
                assert!(
                    e <= 1e-4,
                    "source {src}, target {t}: perturbation {} vs adjacency {} (column max {scale})",
                    got[t],
                    col[t]
                );
            }
        }
    }
    worst
}

pub(crate) fn tiny(arch: &str) -> HookedTransformer {
    let dir = crate::common::repo().join(format!("tests/fixtures/models/{arch}"));
    HookedTransformer::from_local_dir(dir).unwrap()
}

fn tiny_check(arch: &str) {
    let m = tiny(arch);
    let toks: Vec<u32> = [m.cfg().bos_token_id, 17, 42, 99, 250, 7, 300]
        .iter()
        .map(|&t| t.min(m.cfg().d_vocab as u32 - 1))
        .collect();
    let tc = transcoders(&m, &toks, 48, 1.0);
    let g = attribute(&m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let n_feat = g.selected_features.len();
    assert!(n_feat > 20, "{arch}: only {n_feat} active features");
    assert!(!g.logit_tokens.is_empty() && g.logit_tokens.len() <= 10);
    assert_eq!(
        g.n_nodes(),
        n_feat + (m.cfg().n_layers + 1) * toks.len() + g.logit_tokens.len()
    );
    // No feature is active at BOS.
    assert!(g.active_features.iter().all(|a| a[1] != 0));
    let sources: Vec<usize> = (0..g.token_node(0)).collect();
    let worst = perturbation_check(&m, &tc, &g, &sources, 64);
    eprintln!("{arch}: {n_feat} features, worst relative error {worst:.2e}");
}

#[test]
fn graph_edges_are_direct_effects_gemma3() {
    tiny_check("gemma3");
}

#[test]
fn graph_edges_are_direct_effects_gemma2_softcaps() {
    tiny_check("gemma2");
}

#[test]
fn graph_edges_are_direct_effects_llama() {
    tiny_check("llama");
}

#[test]
fn graph_edges_are_direct_effects_qwen2() {
    tiny_check("qwen2");
}

#[test]
fn graph_edges_are_direct_effects_qwen3() {
    tiny_check("qwen3");
}

#[test]
fn graph_edges_are_direct_effects_default_model() {
    let m = crate::common::gemma();
    let toks = m.encode("The capital of France is").unwrap();
    let tc = transcoders(m, &toks, 256, 2.0);
    let t0 = std::time::Instant::now();
    let g = attribute(m, &toks, &tc, &AttributionOptions::default()).unwrap();
    eprintln!(
        "default model: {} tokens, {} features, {:.2}s",
        toks.len(),
        g.selected_features.len(),
        t0.elapsed().as_secs_f64()
    );
    let n_feat = g.selected_features.len();
    assert!(n_feat > 50);
    // A spread of feature sources and every layer's error at the last two positions.
    let mut sources: Vec<usize> = (0..n_feat).step_by((n_feat / 24).max(1)).collect();
    let s = toks.len();
    for l in 0..m.cfg().n_layers {
        sources.push(g.error_node(l, s - 1));
        sources.push(g.error_node(l, s - 2));
    }
    let worst = perturbation_check(m, &tc, &g, &sources, 16);
    eprintln!("default model: worst relative error {worst:.2e}");
}

#[test]
fn graph_prunes_scores_and_exports() {
    let m = tiny("gemma3");
    let toks: Vec<u32> = vec![m.cfg().bos_token_id, 17, 42, 99, 250, 7];
    let tc = transcoders(&m, &toks, 48, 1.0);
    let g = attribute(&m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let n = g.n_nodes();
    let pr = prune(&g, 0.8, 0.98).unwrap();
    // Tokens and logits are always kept.
    assert!((g.token_node(0)..n).all(|i| pr.node_mask[i]));
    assert!(pr.node_mask.iter().filter(|&&k| k).count() < n);
    let (rep, comp) = graph_scores(&g).unwrap();
    assert!(
        (0.0..=1.0).contains(&rep) && (0.0..=1.0).contains(&comp),
        "{rep} {comp}"
    );

    // The feature selection keeps the requested number, ranked by influence.
    let opts = AttributionOptions {
        max_feature_nodes: Some(10),
        batch_size: 4,
        update_interval: 1,
        ..Default::default()
    };
    let small = attribute(&m, &toks, &tc, &opts).unwrap();
    assert_eq!(small.selected_features.len(), 10);
    // Its rows are the full graph's rows for those features, restricted to their columns.
    for (i, &a) in small.selected_features.iter().enumerate() {
        for (j, &b) in small.selected_features.iter().enumerate() {
            let full = g.edge(a as usize, b as usize);
            assert!((small.edge(i, j) - full).abs() <= 1e-5 * (1.0 + full.abs()));
        }
    }

    let dir = std::env::temp_dir().join(format!("mechinterp-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("graph.safetensors");
    g.save_safetensors(&path).unwrap();
    let back = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back["adjacency_matrix"].dims(), &[n, n]);
    assert_eq!(
        back["active_features"].dims(),
        &[g.active_features.len(), 3]
    );
    for k in [
        "selected_features",
        "activation_values",
        "logit_tokens",
        "logit_probabilities",
        "input_tokens",
    ] {
        assert!(back.contains_key(k), "{k}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&g.to_json("tiny", "random", 0.8, 0.98).unwrap()).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    let links = json["links"].as_array().unwrap();
    assert_eq!(
        json["metadata"]["prompt_tokens"].as_array().unwrap().len(),
        toks.len()
    );
    assert!(nodes
        .iter()
        .any(|n| n["feature_type"] == "logit" && n["is_target_logit"] == true));
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n["feature_type"] == "embedding")
            .count(),
        toks.len()
    );
    assert!(!links.is_empty() && links[0]["weight"].is_number());
    let ids: std::collections::HashSet<&str> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert!(links
        .iter()
        .all(|l| ids.contains(l["source"].as_str().unwrap())
            && ids.contains(l["target"].as_str().unwrap())));
    std::fs::remove_dir_all(&dir).ok();
}

/// Timing of the default model's graph on 20- and 30-token prompts (BOS included) with the
/// circuit-tracer fixtures' transcoders (64 features per layer); run by hand with `--ignored`.
#[test]
#[ignore]
fn graph_timing_default_model() {
    let m = crate::common::gemma();
    let tc = crate::graph_ct::transcoders(m.cfg().n_layers);
    for (want, text) in [
        (20, "English: I like green apples and red cherries.\nFrench: J'aime les pommes vertes"),
        (30, "English: I like green apples and red cherries, and my little sister likes yellow bananas a lot.\nFrench: J'aime les pommes vertes"),
    ] {
        let mut toks = m.encode(text).unwrap();
        toks.truncate(want);
        let t0 = std::time::Instant::now();
        let g = attribute(m, &toks, &tc, &AttributionOptions::default()).unwrap();
        let t1 = t0.elapsed().as_secs_f64();
        let _ = prune(&g, 0.8, 0.98).unwrap();
        let t2 = t0.elapsed().as_secs_f64();
        eprintln!(
            "{} tokens, {} features, {} nodes: graph {t1:.2}s, pruned {t2:.2}s",
            toks.len(),
            g.selected_features.len(),
            g.n_nodes()
        );
    }
}
