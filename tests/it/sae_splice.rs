//! An SAE or transcoder spliced into a forward pass: with the error term the model's logits
//! are unchanged, without it they equal a run that writes the reconstruction in by hand; the
//! SAE's own activations are cached and hookable under SAELens's names; latent edits and
//! feature steering work, also while generating; patching, attribution and the logit lens
//! run through a view with an SAE spliced in.

use candle_core::{DType, Device, Tensor};
use mechinterp::prelude::*;
use mechinterp::sae::{
    Architecture, FeatureEdit, Format, Normalization, Sae, SaeConfig, SaeWeights, SpliceOptions,
};

fn tiny() -> HookedTransformer {
    let dir = crate::common::repo().join("tests/fixtures/models/gemma3");
    HookedTransformer::from_local_dir(dir).unwrap()
}

fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    let mut rng = mechinterp::stats::Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.gaussian() * scale) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random SAE (or transcoder) whose latents fire on a fair share of inputs.
pub fn random_sae(
    arch: Architecture,
    hook: &str,
    hook_out: &str,
    d_in: usize,
    d_sae: usize,
    seed: u64,
) -> Sae {
    let cfg = SaeConfig {
        architecture: arch,
        d_in,
        d_sae,
        d_out: d_in,
        hook_name: hook.into(),
        hook_name_out: hook_out.into(),
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: !arch.is_transcoder(),
        model_name: None,
        context_size: None,
        exclude_special_tokens: None,
        format: Format::InMemory,
        metadata: serde_json::json!({}),
    };
    let s = 1.0 / (d_in as f64).sqrt();
    let w = SaeWeights {
        w_enc: randn(seed, &[d_in, d_sae], s),
        b_enc: Some(randn(seed + 1, &[d_sae], 0.1)),
        w_dec: randn(seed + 2, &[d_sae, d_in], s),
        b_dec: randn(seed + 3, &[d_in], 0.1),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    Sae::new(cfg, w).unwrap()
}

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

const TOKS: [u32; 8] = [2, 17, 42, 99, 250, 7, 180, 64];

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    crate::common::max_abs_diff(a, b) / crate::common::max_abs(b).max(1e-12)
}

#[test]
fn with_the_error_term_the_default_models_logits_are_unchanged() {
    let m = crate::common::gemma();
    let d = m.cfg().d_model;
    let sae = random_sae(
        Architecture::Standard,
        "blocks.6.hook_resid_post",
        "blocks.6.hook_resid_post",
        d,
        256,
        1,
    );
    let t = m
        .to_tokens("English: I like green apples.\nFrench: J'aime les pommes")
        .unwrap();
    let clean = m.forward(&t).unwrap();
    let hooks = Hooks::new().sae_with_error(&sae).unwrap();
    let spliced = m.with_hooks(&hooks).forward(&t).unwrap();
    let diff = crate::common::max_abs_diff(&spliced, &clean);
    assert!(
        diff <= 1e-5 * crate::common::max_abs(&clean).max(1.0),
        "{diff}"
    );
    // Without the error term, something changes.
    let raw = m
        .with_hooks(&Hooks::new().sae(&sae).unwrap())
        .forward(&t)
        .unwrap();
    assert!(crate::common::max_abs_diff(&raw, &clean) > 1e-2);
}

#[test]
fn without_the_error_term_the_logits_equal_writing_the_reconstruction_by_hand() {
    let m = tiny();
    let t = ids(&TOKS);
    let sae = random_sae(
        Architecture::Standard,
        "blocks.2.hook_resid_post",
        "blocks.2.hook_resid_post",
        32,
        64,
        3,
    );
    let (_, cache) = m.run_with_cache(&t).unwrap();
    let x = cache.get("blocks.2.hook_resid_post").unwrap();
    let recons = sae.forward(&x).unwrap();
    let by_hand = m
        .with_hooks(
            &Hooks::new()
                .intervene(
                    "blocks.2.hook_resid_post",
                    Intervention::Replace(recons.clone()),
                )
                .unwrap(),
        )
        .forward(&t)
        .unwrap();
    let spliced = m
        .with_hooks(&Hooks::new().sae(&sae).unwrap())
        .forward(&t)
        .unwrap();
    assert!(
        rel(&spliced, &by_hand) <= 1e-6,
        "{}",
        rel(&spliced, &by_hand)
    );
}

#[test]
fn the_saes_own_hook_points_are_cached_and_hookable_under_saelens_names() {
    let m = tiny();
    let t = ids(&TOKS);
    let host = "blocks.3.hook_resid_post";
    let sae = random_sae(Architecture::Standard, host, host, 32, 64, 5);
    let view_hooks = Hooks::new().sae_with_error(&sae).unwrap();
    let view = m.with_hooks(&view_hooks);
    let (_, cache) = view.run_with_cache(&t).unwrap();
    let x = cache.get(&format!("{host}.hook_sae_input")).unwrap();
    assert_eq!(x.dims(), &[1, 8, 32]);
    for (suffix, width) in [
        ("hook_sae_acts_pre", 64),
        ("hook_sae_acts_post", 64),
        ("hook_sae_recons", 32),
        ("hook_sae_error", 32),
        ("hook_sae_output", 32),
    ] {
        let a = cache.get(&format!("{host}.{suffix}")).unwrap();
        assert_eq!(a.dims(), &[1, 8, width], "{suffix}");
    }
    let acts = cache.get(&format!("{host}.hook_sae_acts_post")).unwrap();
    assert!(rel(&acts, &sae.encode(&x).unwrap()) < 1e-6);
    // The output is what flows on: the host's cached value equals hook_sae_output.
    let out = cache.get(&format!("{host}.hook_sae_output")).unwrap();
    assert!(rel(&cache.get(host).unwrap(), &out) < 1e-6);
    // Hooking acts_post by name equals the declarative edit, and both change the logits by
    // the decoder direction times the activation removed.
    let latent = {
        let v = acts.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (0..64)
            .max_by(|&a, &b| {
                let s = |j: usize| (0..8).map(|p| v[p * 64 + j]).sum::<f32>();
                s(a).total_cmp(&s(b))
            })
            .unwrap()
    };
    let by_name = Hooks::new()
        .add(&format!("{host}.hook_sae_acts_post"), move |a, _| {
            FeatureEdit::Zero(latent).apply(a)
        })
        .unwrap();
    let edit = Hooks::new()
        .sae_edit(&sae, FeatureEdit::Zero(latent))
        .unwrap();
    let a = view.with_hooks(&by_name).forward(&t).unwrap();
    let b = view.with_hooks(&edit).forward(&t).unwrap();
    let clean = view.forward(&t).unwrap();
    assert!(rel(&a, &b) < 1e-6);
    assert!(crate::common::max_abs_diff(&a, &clean) > 1e-4);
    // With the error term, the host activation moves by exactly −act · W_dec[latent].
    let (_, edited) = view.with_hooks(&edit).run_with_cache(&t).unwrap();
    let moved = (edited.get(host).unwrap() - cache.get(host).unwrap()).unwrap();
    let col = acts.narrow(2, latent, 1).unwrap();
    let want = col
        .broadcast_mul(&sae.w_dec().get(latent).unwrap())
        .unwrap()
        .neg()
        .unwrap();
    assert!(rel(&moved, &want) < 1e-4, "{}", rel(&moved, &want));
}

#[test]
fn set_scale_and_steering_edit_latents_and_steer_generation() {
    let m = tiny();
    let host = "blocks.1.hook_resid_post";
    let sae = random_sae(Architecture::Standard, host, host, 32, 64, 7);
    let t = ids(&TOKS);
    let acts_name = format!("{host}.hook_sae_acts_post");
    let spliced = Hooks::new().sae_with_error(&sae).unwrap();
    let set = spliced
        .clone()
        .sae_edit(&sae, FeatureEdit::Set(4, 3.5))
        .unwrap();
    let (_, c) = m.with_hooks(&set).run_with_cache(&t).unwrap();
    let a = c.get(&acts_name).unwrap().narrow(2, 4, 1).unwrap();
    assert!(a
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| (*v - 3.5).abs() < 1e-6));
    let scale = spliced
        .clone()
        .sae_edit(&sae, FeatureEdit::Scale(4, 0.0))
        .unwrap();
    let zero = spliced
        .clone()
        .sae_edit(&sae, FeatureEdit::Zero(4))
        .unwrap();
    let l1 = m.with_hooks(&scale).forward(&t).unwrap();
    let l2 = m.with_hooks(&zero).forward(&t).unwrap();
    assert!(rel(&l1, &l2) < 1e-6);
    assert!(Hooks::new().sae_edit(&sae, FeatureEdit::Zero(64)).is_err());
    // Steering adds coeff · W_dec[i] to the host at every position.
    let steer = Hooks::new().steer_feature(&sae, 9, 4.0).unwrap();
    let (_, plain) = m.run_with_cache(&t).unwrap();
    let (_, steered) = m.with_hooks(&steer).run_with_cache(&t).unwrap();
    let moved = (steered.get(host).unwrap() - plain.get(host).unwrap()).unwrap();
    let want = (sae.w_dec().get(9).unwrap() * 4.0)
        .unwrap()
        .broadcast_as(moved.shape())
        .unwrap()
        .contiguous()
        .unwrap();
    assert!(rel(&moved, &want) < 1e-5);
    // While generating, the steered view's continuation differs from the plain one, and a
    // spliced SAE with the error term generates what the model does.
    let opts = GenerateOptions::greedy(6);
    let g0 = m.generate_ids(&[TOKS.to_vec()], &opts).unwrap();
    let g1 = m
        .with_hooks(&Hooks::new().steer_feature(&sae, 9, 40.0).unwrap())
        .generate_ids(&[TOKS.to_vec()], &opts)
        .unwrap();
    let g2 = m
        .with_hooks(&spliced)
        .generate_ids(&[TOKS.to_vec()], &opts)
        .unwrap();
    assert_ne!(g0[0].logprobs, g1[0].logprobs);
    for (a, b) in g0[0].logprobs.iter().zip(&g2[0].logprobs) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn a_transcoder_replaces_its_layers_mlp_output() {
    let m = tiny();
    let t = ids(&TOKS);
    let tc = random_sae(
        Architecture::Transcoder,
        "blocks.2.mlp.hook_in",
        "blocks.2.hook_mlp_out",
        32,
        64,
        11,
    );
    let (_, cache) = m.run_with_cache(&t).unwrap();
    let out = tc
        .forward(&cache.get("blocks.2.mlp.hook_in").unwrap())
        .unwrap();
    let by_hand = m
        .with_hooks(
            &Hooks::new()
                .intervene("blocks.2.hook_mlp_out", Intervention::Replace(out))
                .unwrap(),
        )
        .forward(&t)
        .unwrap();
    let spliced = m
        .with_hooks(&Hooks::new().sae(&tc).unwrap())
        .forward(&t)
        .unwrap();
    assert!(rel(&spliced, &by_hand) <= 1e-6);
    let with_err = m
        .with_hooks(&Hooks::new().sae_with_error(&tc).unwrap())
        .forward(&t)
        .unwrap();
    assert!(rel(&with_err, &m.forward(&t).unwrap()) <= 1e-5);
    let (_, c) = m
        .with_hooks(&Hooks::new().sae(&tc).unwrap())
        .run_with_cache(&t)
        .unwrap();
    assert_eq!(
        c.get("blocks.2.hook_mlp_out.hook_sae_acts_post")
            .unwrap()
            .dims(),
        &[1, 8, 64]
    );
}

#[test]
fn patching_attribution_and_the_logit_lens_run_with_an_sae_spliced_in() {
    let m = tiny();
    let host = "blocks.2.hook_resid_post";
    let sae = random_sae(Architecture::Standard, host, host, 32, 64, 13);
    let (t, k) = (ids(&TOKS), ids(&[2, 17, 43, 98, 250, 7, 180, 64]));
    let metric = || LogitDiff::new(5, 9);
    let run = |m: &HookedTransformer| {
        let p = Patcher::from_tokens(m, &t, &k, metric())
            .unwrap()
            .quiet(true);
        let act = p
            .activation(PatchTarget::ResidPre, Direction::Denoise)
            .unwrap();
        let attr = p.attribution(Direction::Denoise).unwrap();
        let lens =
            LogitLens::from_tokens(m, &t, TOKS.iter().map(|i| i.to_string()).collect()).unwrap();
        let l = lens.logits_of(7, &[5, 9]).unwrap();
        (act.table.values, attr.resid_pre.values, l.values)
    };
    let close = |a: &[f32], b: &[f32], tol: f32| {
        let scale = b.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
    };
    let plain = run(&m);
    let err_hooks = Hooks::new().sae_with_error(&sae).unwrap();
    let with_err = run(&m.with_hooks(&err_hooks));
    assert!(close(&with_err.0, &plain.0, 1e-4), "activation patching");
    assert!(close(&with_err.1, &plain.1, 1e-3), "attribution");
    assert!(close(&with_err.2, &plain.2, 1e-4), "logit lens");
    let raw_hooks = Hooks::new().sae(&sae).unwrap();
    let raw = run(&m.with_hooks(&raw_hooks));
    assert!(!close(&raw.0, &plain.0, 1e-3));
    assert!(!close(&raw.2, &plain.2, 1e-3));
}

#[test]
fn splicing_refuses_what_does_not_fit() {
    let m = tiny();
    let t = ids(&TOKS);
    let wide = random_sae(
        Architecture::Standard,
        "blocks.2.hook_resid_post",
        "blocks.2.hook_resid_post",
        48,
        64,
        17,
    );
    let e = m
        .with_hooks(&Hooks::new().sae(&wide).unwrap())
        .forward(&t)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_in = 48"), "{e}");
    let deep = random_sae(
        Architecture::Standard,
        "blocks.9.hook_resid_post",
        "blocks.9.hook_resid_post",
        32,
        64,
        17,
    );
    let e = m
        .with_hooks(&Hooks::new().sae(&deep).unwrap())
        .forward(&t)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks.9"), "{e}");
    let base = random_sae(
        Architecture::Standard,
        "blocks.2.hook_resid_post",
        "blocks.2.hook_resid_post",
        32,
        64,
        17,
    );
    let mut odd = base.cfg().clone();
    odd.hook_name = "blocks.2.hook_resid_middle".into();
    odd.hook_name_out = odd.hook_name.clone();
    let odd = Sae::new(odd, base.weights().clone()).unwrap();
    let e = Hooks::new().sae(&odd).unwrap_err().to_string();
    assert!(e.contains("blocks.2.hook_resid_middle"), "{e}");
    let _ = (SpliceOptions::default(), DType::F32);
}

#[test]
fn the_cli_splices_encodes_and_describes_a_saved_sae() {
    use std::process::Command;
    let bin = || Command::new(env!("CARGO_BIN_EXE_mechinterp"));
    let dir = tempfile::tempdir().unwrap();
    let host = "blocks.2.hook_resid_post";
    let sae = random_sae(Architecture::Standard, host, host, 32, 64, 21);
    let folder = dir.path().join("sae");
    sae.save(&folder).unwrap();
    let model = crate::common::repo().join("tests/fixtures/models/gemma3");
    let run = |extra: &[&str]| {
        let o = bin()
            .args(["run", "hello world", "--top-k", "3", "--model"])
            .arg(&model)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The timing differs between runs; the ranked tokens and probabilities must not.
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let f = folder.to_str().unwrap();
    let plain = run(&[]);
    let with_err = run(&["--sae", f, "--sae-error-term"]);
    let raw = run(&["--sae", f]);
    assert_eq!(plain, with_err);
    assert_ne!(plain, raw);
    // `sae info` prints the config as read; `sae encode` writes both tensors.
    let o = bin().args(["sae", "info", f]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["architecture"], "standard");
    assert_eq!(info["hook_name"], host);
    let acts = randn(5, &[7, 32], 1.0);
    let input = dir.path().join("acts.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("acts".to_string(), acts.clone())]),
        &input,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let o = bin()
        .args(["sae", "encode", "--sae", f, "--acts"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert!(rel(&t["feature_acts"], &sae.encode(&acts).unwrap()) < 1e-6);
    assert!(rel(&t["output"], &sae.forward(&acts).unwrap()) < 1e-6);
    // A folder made for another width is refused by name.
    let wide = random_sae(Architecture::Standard, host, host, 48, 64, 22);
    let wf = dir.path().join("wide");
    wide.save(&wf).unwrap();
    let o = bin()
        .args(["run", "hello", "--model"])
        .arg(&model)
        .arg("--sae")
        .arg(&wf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("wide") && err.contains("48"),
        "{err}"
    );
}
