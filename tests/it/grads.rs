//! `run_with_cache_and_grads` (TransformerLens's `incl_bwd`): the gradient of a metric at every
//! hook point, checked against central finite differences and against attribution patching.

use candle_core::{Device, IndexOp, Tensor};
use mechinterp::prelude::*;

fn tiny() -> HookedTransformer {
    let dir = crate::common::repo().join("tests/fixtures/models/qwen3");
    HookedTransformer::from_local_dir(dir).unwrap()
}

const IDS: [u32; 6] = [1, 17, 42, 99, 250, 7];
const CORRUPT: [u32; 6] = [1, 17, 43, 98, 250, 7];

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// logit[5] − logit[9] at the last position, as a [1] tensor.
fn metric(logits: &Tensor) -> Result<Tensor> {
    LogitDiff::new(5, 9).compute(&logits.i((.., 5, ..))?)
}

#[test]
fn gradients_match_finite_differences_at_every_kind_of_point() {
    let m = tiny();
    let t = ids(&IDS);
    let (_, cache, grads) = m.run_with_cache_and_grads(&t, |l| metric(l)).unwrap();
    assert_eq!(
        grads.keys(),
        cache.keys(),
        "a gradient for every cached point"
    );
    let f = |hooks: &Hooks| -> f64 {
        let l = m.with_hooks(hooks).forward(&t).unwrap();
        metric(&l)
            .unwrap()
            .i(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let eps = 1e-2f64;
    let mut checked = 0;
    for name in [
        "hook_embed",
        "blocks.0.ln1.hook_scale",
        "blocks.0.ln1.hook_normalized",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.q_norm.hook_scale",
        "blocks.0.attn.hook_pattern",
        "blocks.1.attn.hook_z",
        "blocks.1.hook_resid_mid",
        "blocks.1.mlp.hook_in",
        "blocks.1.mlp.hook_post",
        "ln_final.hook_normalized",
    ] {
        let act = cache.get(name).unwrap();
        let g = grads
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = act.elem_count();
        // The entry with the largest gradient and one in the middle.
        let big = (0..n)
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        for i in [big, n / 2] {
            let bump = |s: f64| {
                let mut d = vec![0f32; n];
                d[i] = s as f32;
                let d = Tensor::from_vec(d, act.shape(), &Device::Cpu).unwrap();
                Hooks::new().intervene(name, Intervention::Add(d)).unwrap()
            };
            let fd = (f(&bump(eps)) - f(&bump(-eps))) / (2.0 * eps);
            let tol = 2e-2 * g[big].abs().max(1e-3) as f64;
            assert!(
                (fd - g[i] as f64).abs() <= tol,
                "{name}[{i}]: autograd {} vs finite differences {fd}",
                g[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
}

#[test]
fn gradients_agree_with_attribution_patching() {
    let m = tiny();
    let (clean, corrupt) = (ids(&IDS), ids(&CORRUPT));
    let p = Patcher::from_tokens(&m, &clean, &corrupt, LogitDiff::new(5, 9))
        .unwrap()
        .quiet(true);
    let attr = p.attribution(Direction::Denoise).unwrap();
    // Denoising: gradients on the corrupted run, times clean − corrupted, summed per head.
    let (_, base, grads) = m.run_with_cache_and_grads(&corrupt, |l| metric(l)).unwrap();
    let (_, source) = m.run_with_cache(&clean).unwrap();
    for l in 0..m.cfg().n_layers {
        let name = format!("blocks.{l}.attn.hook_z");
        let delta = (source.get(&name).unwrap() - base.get(&name).unwrap()).unwrap();
        let per_head = (delta * grads.get(&name).unwrap())
            .unwrap()
            .sum((0, 1, 3))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (h, v) in per_head.iter().enumerate() {
            let a = attr.head_out.get(&[l, h]).unwrap();
            assert!(
                (a - v).abs() <= 1e-5 * (1.0 + a.abs()),
                "{l}.{h}: {a} vs {v}"
            );
        }
    }
}
