//! Attribution graphs with a cross-layer transcoder (issue 25, item 1): a random CLT written in
//! circuit-tracer's layout (ReLU) or Gemma Scope 2's (JumpReLU with an affine skip path) and
//! read by the real loaders. Every edge must be an exact direct effect in the frozen
//! replacement model: with attention patterns, norm scales and every MLP output frozen (the
//! CLT's output plus the error; skip paths live, as in circuit-tracer), adding an error node's
//! vector once more, or doubling a feature's activation (which moves every layer it writes),
//! changes every later feature's pre-activation and every demeaned logit by exactly that
//! node's adjacency column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use mechinterp::graph::{attribute, AttributionOptions, CrossLayer, Frozen, Graph, Transcoders};
use mechinterp::prelude::*;
use mechinterp::sae::format::circuit_tracer::CrossLayerTranscoder;

use crate::graph::{check_columns, max_abs};

fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    let mut rng = mechinterp::stats::Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.gaussian() * scale) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mechinterp-clt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn save(path: &Path, tensors: Vec<(String, Tensor)>) {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// Each layer's `mlp.hook_in` on the prompt, [s, d].
fn mlp_inputs(m: &HookedTransformer, toks: &[u32]) -> Vec<Tensor> {
    let t = Tensor::new(toks, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let filter = |n: &str| n.ends_with("mlp.hook_in");
    let out = m.pass(&t).cache(&filter).no_logits().run().unwrap();
    (0..m.cfg().n_layers)
        .map(|l| {
            out.cache
                .get(&format!("blocks.{l}.mlp.hook_in"))
                .unwrap()
                .i(0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        })
        .collect()
}

/// The root-mean-square pre-activation `x · w` over the prompt (BOS left out).
fn rms_pre(x: &Tensor, w: &Tensor) -> f32 {
    let s = x.dim(0).unwrap();
    let pre = x.narrow(0, 1, s - 1).unwrap().matmul(w).unwrap();
    pre.sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// A random CLT in circuit-tracer's layout (`W_enc_i`, `W_dec_i` [f, n − i, d], ReLU, encoder
/// bias `−z` root-mean-square pre-activations so that few fire), loaded by its loader.
fn circuit_tracer_clt(m: &HookedTransformer, toks: &[u32], f: usize, z: f32) -> CrossLayer {
    let (n, d) = (m.cfg().n_layers, m.cfg().d_model);
    let xs = mlp_inputs(m, toks);
    let dir = temp_dir("ct");
    std::fs::write(
        dir.join("config.yaml"),
        "model_kind: cross_layer_transcoder\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n",
    )
    .unwrap();
    let s = 1.0 / (d as f64).sqrt();
    for (i, x) in xs.iter().enumerate() {
        let w = randn(100 + i as u64, &[d, f], s);
        let b = -z * rms_pre(x, &w);
        save(
            &dir.join(format!("W_enc_{i}.safetensors")),
            vec![
                (format!("W_enc_{i}"), w.t().unwrap().contiguous().unwrap()),
                (
                    format!("b_enc_{i}"),
                    (randn(200 + i as u64, &[f], 0.1 * b.abs() as f64) + b as f64).unwrap(),
                ),
                (format!("b_dec_{i}"), randn(300 + i as u64, &[d], 0.1)),
            ],
        );
        save(
            &dir.join(format!("W_dec_{i}.safetensors")),
            vec![(
                format!("W_dec_{i}"),
                randn(400 + i as u64, &[f, n - i, d], s),
            )],
        );
    }
    let clt = CrossLayer::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    clt
}

/// A random CLT in Gemma Scope 2's layout (`w_enc` [d, f], `w_dec` [f, n, d], JumpReLU
/// thresholds `z` root-mean-square pre-activations, an affine skip connection).
fn gemma_scope_clt(m: &HookedTransformer, toks: &[u32], f: usize, z: f32) -> CrossLayer {
    let (n, d) = (m.cfg().n_layers, m.cfg().d_model);
    let xs = mlp_inputs(m, toks);
    let dir = temp_dir("gs2");
    let s = 1.0 / (d as f64).sqrt();
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let w = randn(500 + i as u64, &[d, f], s);
            let th = z * rms_pre(&xs[i], &w);
            let p = dir.join(format!("layer_{i}.safetensors"));
            save(
                &p,
                vec![
                    ("w_enc".into(), w),
                    ("b_enc".into(), randn(600 + i as u64, &[f], 0.1 * th as f64)),
                    ("w_dec".into(), randn(700 + i as u64, &[f, n, d], s)),
                    ("b_dec".into(), randn(800 + i as u64, &[d], 0.1)),
                    (
                        "threshold".into(),
                        Tensor::full(th, f, &Device::Cpu).unwrap(),
                    ),
                    (
                        "affine_skip_connection".into(),
                        randn(900 + i as u64, &[d, d], 0.3 * s),
                    ),
                ],
            );
            p
        })
        .collect();
    let clt = CrossLayer::new(CrossLayerTranscoder::load_gemma_scope_2(&files).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    clt
}

/// Checks the source columns `sources` (features, then errors) of `g` against the frozen
/// replacement model's response, `batch` perturbed runs at a time; returns the worst error
/// relative to each column's largest entry.
fn perturbation_check(
    m: &HookedTransformer,
    tc: &CrossLayer,
    g: &Graph,
    sources: &[usize],
    batch: usize,
) -> f32 {
    let cfg = m.cfg();
    let (n, s) = (cfg.n_layers, g.n_pos());
    let frozen = Frozen::run(m, &g.input_tokens, tc).unwrap();
    let clean_out: Vec<Tensor> = (0..n).map(|l| frozen.mlp_out(l).unwrap()).collect();
    let inputs: Vec<Tensor> = (0..n).map(|l| frozen.input(tc, l).unwrap()).collect();
    // The CLT's output at every layer, from every layer's clean input.
    let recon = tc.clt().forward(&inputs).unwrap();
    let n_feat = g.selected_features.len();
    // What each source adds to the MLP outputs when perturbed (its vectors once more), as
    // (layer, position, vector): a feature writes its own layer and every later one.
    let delta = |src: usize| -> Vec<(usize, usize, Tensor)> {
        if src < n_feat {
            let [l, p, f] = g.active_features[g.selected_features[src] as usize];
            let a = g.activation_values[g.selected_features[src] as usize] as f64;
            (l as usize..n)
                .map(|out| {
                    let row = tc
                        .clt()
                        .decoder(l as usize, out)
                        .unwrap()
                        .get(f as usize)
                        .unwrap();
                    (out, p as usize, (row * a).unwrap())
                })
                .collect()
        } else {
            let (l, p) = ((src - n_feat) / s, (src - n_feat) % s);
            let err = (&clean_out[l] - &recon[l]).unwrap().get(p).unwrap();
            // circuit-tracer zeroes the BOS position's error node.
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

fn tiny(arch: &str) -> HookedTransformer {
    let dir = crate::common::repo().join(format!("tests/fixtures/models/{arch}"));
    HookedTransformer::from_local_dir(dir).unwrap()
}

fn tiny_tokens(m: &HookedTransformer) -> Vec<u32> {
    [m.cfg().bos_token_id, 17, 42, 99, 250, 7, 300]
        .iter()
        .map(|&t| t.min(m.cfg().d_vocab as u32 - 1))
        .collect()
}

fn check(arch: &str, gemma_scope: bool) {
    let m = tiny(arch);
    let toks = tiny_tokens(&m);
    let tc = if gemma_scope {
        gemma_scope_clt(&m, &toks, 32, 1.0)
    } else {
        circuit_tracer_clt(&m, &toks, 32, 1.0)
    };
    assert_eq!(tc.skip(0).is_some(), gemma_scope);
    let g = attribute(&m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let n_feat = g.selected_features.len();
    assert!(n_feat > 20, "{arch}: only {n_feat} active features");
    assert!(g.active_features.iter().all(|a| a[1] != 0));
    // A later layer's feature row carries a column for an earlier layer's feature at its
    // position or before: reached through the decoders into every layer in between.
    let sources: Vec<usize> = (0..g.token_node(0)).collect();
    let worst = perturbation_check(&m, &tc, &g, &sources, 64);
    eprintln!(
        "{arch} ({}): {n_feat} features, worst relative error {worst:.2e}",
        if gemma_scope {
            "Gemma Scope 2 layout, JumpReLU, skip"
        } else {
            "circuit-tracer layout, ReLU"
        }
    );
}

#[test]
fn clt_graph_edges_are_direct_effects_gemma3() {
    check("gemma3", false);
}

#[test]
fn clt_graph_edges_are_direct_effects_gemma3_skip() {
    check("gemma3", true);
}

#[test]
fn clt_graph_edges_are_direct_effects_gemma2_softcaps() {
    check("gemma2", true);
}

#[test]
fn clt_graph_edges_are_direct_effects_llama() {
    check("llama", false);
}

#[test]
fn clt_graph_edges_are_direct_effects_qwen3() {
    check("qwen3", true);
}

/// The default model with a random CLT (Gemma Scope 2 layout: JumpReLU and skip paths): a
/// spread of feature columns and every layer's error at the last two positions.
#[test]
fn clt_graph_edges_are_direct_effects_default_model() {
    let m = crate::common::gemma();
    let toks = m.encode("The capital of France is").unwrap();
    let tc = gemma_scope_clt(m, &toks, 32, 1.5);
    let t0 = std::time::Instant::now();
    let g = attribute(m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let n_feat = g.selected_features.len();
    eprintln!(
        "default model, CLT: {} tokens, {n_feat} features, {:.2}s",
        toks.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(n_feat > 50, "only {n_feat} active features");
    let mut sources: Vec<usize> = (0..n_feat).step_by((n_feat / 24).max(1)).collect();
    let s = toks.len();
    for l in 0..m.cfg().n_layers {
        sources.push(g.error_node(l, s - 1));
        sources.push(g.error_node(l, s - 2));
    }
    let worst = perturbation_check(m, &tc, &g, &sources, 16);
    eprintln!("default model, CLT: worst relative error {worst:.2e}");
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Our graph against circuit-tracer 0.5.0's own for the same CLT (tests/fixtures/graph/clt/,
/// made by scripts/make_clt_fixture.py on this tiny model): the same active features, logit
/// targets and adjacency matrix (within 1e-4 of its largest entry).
fn matches_circuit_tracer(name: &str, tc: &CrossLayer) {
    let dir = crate::common::repo().join("tests/fixtures/graph/clt");
    let r = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap();
    let m = tiny("gemma3");
    let toks: Vec<u32> = ints(&r["input_tokens"]).iter().map(|&x| x as u32).collect();
    let g = attribute(&m, &toks, tc, &AttributionOptions::default()).unwrap();
    let active: Vec<i64> = g.active_features.iter().flatten().copied().collect();
    assert_eq!(
        active,
        ints(&r["active_features"]),
        "{name}: active features"
    );
    assert_eq!(g.selected_features, ints(&r["selected_features"]));
    let logits: Vec<i64> = g.logit_tokens.iter().map(|&x| x as i64).collect();
    assert_eq!(logits, ints(&r["logit_tokens"]), "{name}: logit targets");
    for (a, b) in g
        .activation_values
        .iter()
        .zip(floats(&r["activation_values"]))
    {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{name}: activation {a} vs {b}"
        );
    }
    let theirs = floats(&r["adjacency_matrix"]);
    assert_eq!(g.adjacency.len(), theirs.len(), "{name}: node count");
    let top = max_abs(&theirs);
    let worst = g
        .adjacency
        .iter()
        .zip(&theirs)
        .fold(0f32, |w, (a, b)| w.max((a - b).abs()));
    eprintln!(
        "{name}: {} nodes, {} features; adjacency worst |Δ| {worst:.2e} of max {top:.2e}",
        g.n_nodes(),
        g.selected_features.len()
    );
    assert!(
        worst <= 1e-4 * top,
        "{name}: adjacency differs by {worst} (largest entry {top})"
    );
}

#[test]
fn clt_graph_matches_circuit_tracer() {
    let dir = crate::common::repo().join("tests/fixtures/graph/clt/ct");
    let tc = CrossLayer::load(&dir).unwrap();
    assert!(tc.skip(0).is_none());
    matches_circuit_tracer("ct", &tc);
}

#[test]
fn clt_graph_matches_circuit_tracer_gemma_scope_skip() {
    let dir = crate::common::repo().join("tests/fixtures/graph/clt/gs2");
    let files: Vec<PathBuf> = (0..6)
        .map(|i| dir.join(format!("layer_{i}.safetensors")))
        .collect();
    let tc = CrossLayer::new(CrossLayerTranscoder::load_gemma_scope_2(&files).unwrap()).unwrap();
    assert!(tc.skip(0).is_some());
    matches_circuit_tracer("gs2", &tc);
}
