//! `Graph::total_effects` against `linear_replacement`, the replacement model it linearises:
//! attention patterns, norm scales and reconstruction errors frozen, every transcoder live but
//! with its clean set of active features (so the model is exactly linear in a perturbation).
//! Adding a feature's vector again must move the top logit node's demeaned logit by the
//! feature's total effect.

use candle_core::{DType, Device, Tensor};
use mechinterp::graph::{attribute, linear_replacement, AttributionOptions, Frozen, NodeKind};
use mechinterp::prelude::*;

use crate::graph::{tiny, transcoders};

/// The perturbation's gain: the model is linear in it, so a large one lifts the response
/// above f32 rounding.
const GAIN: f32 = 256.0;

/// The demeaned logits at the last position, in f64 then f32.
fn demeaned_last_logits(m: &HookedTransformer, hooks: &Hooks, toks: &[u32]) -> Vec<f32> {
    let t = Tensor::new(toks, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let out = m
        .with_hooks(hooks)
        .pass(&t)
        .logits_at(&[toks.len() - 1])
        .run()
        .unwrap();
    let x = out
        .logits
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let x = x.broadcast_sub(&x.mean_all().unwrap()).unwrap();
    x.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

#[test]
fn total_effects_match_the_linearised_replacement_model() {
    let m = tiny("gemma3");
    let cfg = m.cfg().clone();
    let toks: Vec<u32> = [cfg.bos_token_id, 17, 42, 99, 250, 7, 300]
        .iter()
        .map(|&t| t.min(cfg.d_vocab as u32 - 1))
        .collect();
    let (n, s, d) = (cfg.n_layers, toks.len(), cfg.d_model);
    let tc = transcoders(&m, &toks, 48, 1.0);
    let g = attribute(&m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let frozen = Frozen::run(&m, &toks, &tc).unwrap();
    let zeros: Vec<Tensor> = (0..n)
        .map(|_| Tensor::zeros((s, d), DType::F32, &Device::Cpu).unwrap())
        .collect();
    // Without an intervention the replacement model is the clean run.
    let plain = demeaned_last_logits(&m, &Hooks::new(), &toks);
    let clean = demeaned_last_logits(&m, &linear_replacement(&frozen, &tc, None).unwrap(), &toks);
    let drift = plain
        .iter()
        .zip(&clean)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        drift < 1e-4,
        "the replacement model drifts from the clean run by {drift}"
    );
    let logit = g.logit_node(0);
    let effects = g.total_effects(logit).unwrap();
    assert_eq!(effects[logit], 1.0);
    let token = g.logit_tokens[0] as usize;
    // Features of the first layers: their effects run through the most paths.
    let mut checked = 0;
    let mut worst = 0f32;
    let scale = effects[..g.selected_features.len()]
        .iter()
        .fold(0f32, |a, &x| a.max(x.abs()));
    for (i, &effect) in effects.iter().enumerate().take(g.selected_features.len()) {
        let NodeKind::Feature {
            layer,
            pos,
            feature,
            activation,
        } = g.node(i).unwrap()
        else {
            panic!("node {i} is not a feature");
        };
        if layer > 2 || checked >= 16 {
            continue;
        }
        let row = tc.saes()[layer].w_dec().get(feature).unwrap();
        let mut extra = zeros.clone();
        extra[layer] = extra[layer]
            .slice_assign(
                &[pos..pos + 1, 0..d],
                &(row * f64::from(activation * GAIN))
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap();
        let now = demeaned_last_logits(
            &m,
            &linear_replacement(&frozen, &tc, Some(&extra)).unwrap(),
            &toks,
        );
        let got = (now[token] - clean[token]) / GAIN;
        let e = (got - effect).abs() / scale;
        worst = worst.max(e);
        assert!(
            e <= 1e-4,
            "{}: total effect {} vs the replacement model's {got} (largest {scale})",
            g.label(i).unwrap(),
            effect
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} early features to check");
    eprintln!("total effects: {checked} features, worst relative error {worst:.2e}");
}
