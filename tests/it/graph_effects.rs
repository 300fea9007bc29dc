//! `Graph::total_effects` against the replacement model it linearises: attention patterns,
//! norm scales and reconstruction errors frozen, every transcoder live but with its clean set
//! of active features (so the model is exactly linear in a perturbation). Scaling one feature's
//! activation must move every logit node's demeaned logit by the feature's total effect.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, IndexOp, Tensor};
use mechinterp::graph::{attribute, AttributionOptions, Frozen, NodeKind, PerLayer};
use mechinterp::prelude::*;

use crate::graph::{tiny, transcoders};

/// The perturbation's gain: the model is linear in it, so a large one lifts the response
/// above f32 rounding.
const GAIN: f32 = 256.0;

/// Hooks for the live, linearised replacement model: frozen scales and patterns; layer l's MLP
/// output = (pre-activations · clean mask) · W_dec + b_dec + frozen error + `extra[l]`.
fn replacement_hooks(frozen: &Frozen, tc: &PerLayer, n_layers: usize, extra: &[Tensor]) -> Hooks {
    let mut hooks = Hooks::new();
    for (name, t) in frozen.cache.iter() {
        if name.ends_with("hook_scale") || name.ends_with("attn.hook_pattern") {
            let t = t.clone();
            hooks = hooks.add(name, move |_, _| Ok(t.clone())).unwrap();
        }
    }
    for l in 0..n_layers {
        let sae = tc.saes()[l].clone();
        let x_clean = frozen.input(tc, l).unwrap();
        let mask = sae
            .encode(&x_clean)
            .unwrap()
            .gt(0f64)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let err = (frozen.mlp_out(l).unwrap() - sae.forward(&x_clean).unwrap()).unwrap();
        let seen = Arc::new(Mutex::new(None::<Tensor>));
        let keep = seen.clone();
        hooks = hooks
            .add(&format!("blocks.{l}.mlp.hook_in"), move |x, _| {
                *keep.lock().unwrap() = Some(x.i(0)?.clone());
                Ok(x.clone())
            })
            .unwrap();
        let add = extra[l].clone();
        hooks = hooks
            .add(&format!("blocks.{l}.hook_mlp_out"), move |_, _| {
                let x = seen.lock().unwrap().clone().expect("mlp.hook_in ran first");
                let acts = (sae.encode_pre(&x)? * &mask)?;
                let out = acts
                    .matmul(sae.w_dec())?
                    .broadcast_add(&sae.weights().b_dec)?;
                Ok(((out + &err)? + &add)?.unsqueeze(0)?)
            })
            .unwrap();
    }
    hooks
}

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
    let clean = demeaned_last_logits(&m, &replacement_hooks(&frozen, &tc, n, &zeros), &toks);
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
    for i in 0..g.selected_features.len() {
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
        let now = demeaned_last_logits(&m, &replacement_hooks(&frozen, &tc, n, &extra), &toks);
        let got = (now[token] - clean[token]) / GAIN;
        let e = (got - effects[i]).abs() / scale;
        worst = worst.max(e);
        assert!(
            e <= 1e-4,
            "{}: total effect {} vs the replacement model's {got} (largest {scale})",
            g.label(i).unwrap(),
            effects[i]
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} early features to check");
    eprintln!("total effects: {checked} features, worst relative error {worst:.2e}");
}
