//! SAE and transcoder files in every format `Sae::load` reads, against the outputs the
//! reference libraries computed from the same files (tests/fixtures/sae/, written by
//! scripts/make_sae_fixtures.py: SAELens 6.54.12's own classes and loaders, circuit-tracer
//! 0.5.0): encode, pre-activations, decode and forward, each within 1e-5 of the reference
//! tensor's largest value. Also: the refusals, `check_fits` against the default model,
//! save → load round trips, and `from_pretrained` through an offline temporary hub cache.
//!
//! With `MECHINTERP_SAE_SAVE_DIR` set, the round-trip test also leaves every saved folder
//! there, each with `ours.safetensors` (inputs and our outputs), for
//! scripts/check_sae_saved.py to load with SAELens's `SAE.load_from_disk` and compare.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mechinterp::prelude::*;
use mechinterp::sae::format::circuit_tracer::load_transcoder_set;
use mechinterp::sae::{
    Architecture, CrossLayerTranscoder, Format, Normalization, Sae, SaeConfig, SaeWeights,
};
use serde_json::{json, Value};

use crate::common::{gemma, repo};

/// SAELens 6 folders written by `save_model`, and pre-6 configs SAELens converts.
const SAELENS_CASES: &[&str] = &[
    "standard_none",
    "standard_none_nobdec",
    "standard_expected_average",
    "standard_constant_norm",
    "standard_layer_norm",
    "standard_layer_norm_nobdec",
    "jumprelu_none",
    "jumprelu_none_nobdec",
    "jumprelu_layer_norm",
    "jumprelu_constant_norm",
    "topk_none",
    "topk_rescale",
    "topk_rescale_nobdec",
    "topk_layer_norm_rescale",
    "topk_constant_norm",
    "gated_none",
    "gated_none_nobdec",
    "gated_layer_norm",
    "transcoder_none",
    "transcoder_layer_norm",
    "transcoder_constant_norm",
    "skip_transcoder_none",
    "jumprelu_transcoder_none",
    "jumprelu_skip_transcoder_none",
    "jumprelu_skip_transcoder_layer_norm",
    "legacy_topk",
    "legacy_standard_norm",
    "legacy_jumprelu_5x",
];

/// Gemma Scope 2 folders (read back by SAELens's Gemma Scope 2 loader for the references).
const GEMMA_SCOPE_CASES: &[&str] = &[
    "gemma_scope_2/resid_post/layer_1_width_64_l0_small",
    "gemma_scope_2/attn_out/layer_2_width_64_l0_small",
    "gemma_scope_2/transcoder/layer_3_width_64_l0_small_affine",
];

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/sae")
}

fn io(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// max |a − b| / max |b|, the error relative to the reference's largest value.
fn rel_err(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "shapes differ");
    crate::common::max_abs_diff(ours, reference) / crate::common::max_abs(reference).max(1e-12)
}

const TOL: f32 = 1e-5;

/// Compares our outputs for one SAE with a reference io file; returns the worst error.
fn check_sae(name: &str, sae: &Sae, io: &HashMap<String, Tensor>) -> f32 {
    let x = &io["x"];
    let feats = sae.encode(x).unwrap();
    let mut errs = vec![
        ("feature_acts", rel_err(&feats, &io["feature_acts"])),
        (
            "acts_pre",
            rel_err(&sae.encode_pre(x).unwrap(), &io["acts_pre"]),
        ),
        ("output", rel_err(&sae.forward(x).unwrap(), &io["output"])),
    ];
    // SAELens's decode de-normalises with the statistics its last encode left behind; ours
    // alone has none, so decode is compared where the output side is not normalised.
    let denorm = matches!(
        sae.cfg().normalize_activations,
        Normalization::ConstantNormRescale | Normalization::LayerNorm
    ) && !sae.is_transcoder();
    if let (Some(dec), false) = (io.get("decoded"), denorm) {
        errs.push(("decoded", rel_err(&sae.decode(&feats).unwrap(), dec)));
    }
    let worst = errs.iter().map(|e| e.1).fold(0f32, f32::max);
    println!(
        "{name:<62} {}",
        errs.iter()
            .map(|(k, e)| format!("{k} {e:.1e}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for (k, e) in &errs {
        assert!(
            *e <= TOL,
            "{name}: {k} differs from the reference by {e:e} (relative)"
        );
    }
    worst
}

#[test]
fn sae_formats_saelens_cases_match_saelens() {
    for case in SAELENS_CASES {
        let dir = fixtures().join(case);
        let sae = Sae::load(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        let want = if case.starts_with("legacy") {
            Format::SaeLensLegacy
        } else {
            Format::SaeLensV6
        };
        assert_eq!(sae.cfg().format, want, "{case}");
        check_sae(case, &sae, &io(&dir.join("io.safetensors")));
    }
}

#[test]
fn sae_formats_configs_read_as_saelens_reads_them() {
    let topk = Sae::load(fixtures().join("legacy_topk")).unwrap();
    let c = topk.cfg();
    assert_eq!(c.architecture, Architecture::TopK);
    assert_eq!(c.k, Some(6));
    assert_eq!(c.hook_name, "blocks.4.hook_resid_pre");
    assert_eq!(c.normalize_activations, Normalization::None);
    let norm = Sae::load(fixtures().join("legacy_standard_norm")).unwrap();
    assert_eq!(
        norm.cfg().normalize_activations,
        Normalization::ExpectedAverageOnlyIn
    );
    assert!(!norm.cfg().apply_b_dec_to_input);
    let s = Sae::load(fixtures().join("standard_none")).unwrap();
    assert_eq!(s.log_sparsity().map(|t| t.dims().to_vec()), Some(vec![64]));
    assert!(Sae::load(fixtures().join("standard_layer_norm"))
        .unwrap()
        .log_sparsity()
        .is_none());
    let tc = Sae::load(fixtures().join("jumprelu_skip_transcoder_none")).unwrap();
    assert_eq!(
        (tc.hook_name(), tc.hook_name_out(), tc.d_out()),
        ("blocks.2.mlp.hook_in", "blocks.2.hook_mlp_out", 12)
    );
}

#[test]
fn sae_formats_gemma_scope_2_matches_saelens_loader() {
    let want = [
        (
            "blocks.1.hook_resid_post",
            "blocks.1.hook_resid_post",
            Architecture::JumpRelu,
        ),
        (
            "blocks.2.attn.hook_z",
            "blocks.2.attn.hook_z",
            Architecture::JumpRelu,
        ),
        (
            "blocks.3.mlp.hook_in",
            "blocks.3.hook_mlp_out",
            Architecture::JumpReluSkipTranscoder,
        ),
    ];
    for (case, (hin, hout, arch)) in GEMMA_SCOPE_CASES.iter().zip(want) {
        let dir = fixtures().join(case);
        let sae = Sae::load(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(sae.cfg().format, Format::GemmaScope2);
        assert_eq!(
            (sae.hook_name(), sae.hook_name_out()),
            (hin, hout),
            "{case}"
        );
        assert_eq!(sae.cfg().architecture, arch);
        assert!(!sae.cfg().apply_b_dec_to_input);
        check_sae(case, &sae, &io(&dir.join("io.safetensors")));
    }
    // hook_z arrives per head, [.., n_heads, d_head]: the SAE flattens it, as SAELens's
    // reshape_activations "hook_z" does, and answers in the same shape.
    let dir = fixtures().join(GEMMA_SCOPE_CASES[1]);
    let sae = Sae::load(&dir).unwrap();
    let x = io(&dir.join("io.safetensors"))["x"].clone();
    let heads = x.reshape((2, 5, 4, 4)).unwrap();
    let out = sae.forward(&heads).unwrap();
    assert_eq!(out.dims(), &[2, 5, 4, 4]);
    let flat = sae.forward(&x).unwrap().reshape((2, 5, 4, 4)).unwrap();
    assert_eq!(rel_err(&out, &flat), 0.0);
    assert_eq!(sae.encode(&heads).unwrap().dims(), &[2, 5, 64]);
}

#[test]
fn sae_formats_circuit_tracer_transcoders_match_circuit_tracer() {
    let dir = fixtures().join("circuit_tracer_plt");
    for layer in 0..2 {
        let file = dir.join(format!("layer_{layer}.safetensors"));
        let sae = Sae::load(&file).unwrap_or_else(|e| panic!("layer {layer}: {e}"));
        assert_eq!(sae.cfg().format, Format::CircuitTracer);
        assert_eq!(sae.hook_name(), format!("blocks.{layer}.mlp.hook_in"));
        assert_eq!(sae.hook_name_out(), format!("blocks.{layer}.hook_mlp_out"));
        let arch = [
            Architecture::JumpReluSkipTranscoder,
            Architecture::Transcoder,
        ][layer];
        assert_eq!(sae.cfg().architecture, arch);
        let io = io(&dir.join(format!("io_layer_{layer}.safetensors")));
        check_sae(&format!("circuit_tracer_plt layer {layer}"), &sae, &io);
    }
    assert_eq!(load_transcoder_set(&dir).unwrap().len(), 2);
    let e = Sae::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("transcoder set") && e.contains("layer_0.safetensors"),
        "{e}"
    );
}

#[test]
fn sae_formats_cross_layer_transcoder_matches_circuit_tracer() {
    let dir = fixtures().join("circuit_tracer_clt");
    let clt = CrossLayerTranscoder::load(&dir).unwrap();
    assert_eq!(
        (clt.n_layers(), clt.d_model(), clt.d_transcoder()),
        (3, 16, 32)
    );
    assert_eq!(clt.input_hook(2), "blocks.2.hook_resid_mid");
    assert_eq!(clt.output_hook(0), "blocks.0.hook_mlp_out");
    let io = io(&dir.join("io.safetensors"));
    let xs: Vec<Tensor> = (0..3).map(|l| io["x"].get(l).unwrap()).collect();
    let mut worst = 0f32;
    for (l, x) in xs.iter().enumerate() {
        let pre = rel_err(
            &clt.encode_pre(l, x).unwrap(),
            &io["acts_pre"].get(l).unwrap(),
        );
        let acts = rel_err(
            &clt.encode(l, x).unwrap(),
            &io["feature_acts"].get(l).unwrap(),
        );
        worst = worst.max(pre).max(acts);
    }
    for (l, out) in clt.forward(&xs).unwrap().iter().enumerate() {
        worst = worst.max(rel_err(out, &io["output"].get(l).unwrap()));
    }
    println!("circuit_tracer_clt worst relative error {worst:.1e}");
    assert!(worst <= TOL, "CLT differs from circuit-tracer by {worst:e}");
    let e = Sae::load(&dir).unwrap_err().to_string();
    assert!(e.contains("CrossLayerTranscoder::load"), "{e}");
}

#[test]
fn sae_formats_gemma_scope_2_clt_matches_circuit_tracer() {
    let dir = fixtures().join("gemma_scope_2_clt");
    let files: Vec<PathBuf> = (0..3)
        .map(|l| dir.join(format!("layer_{l}_width_32_l0_small_affine.safetensors")))
        .collect();
    let clt = CrossLayerTranscoder::load_gemma_scope_2(&files).unwrap();
    assert_eq!(
        (clt.n_layers(), clt.d_model(), clt.d_transcoder()),
        (3, 16, 32)
    );
    assert_eq!(
        (clt.input_hook(1), clt.output_hook(1)),
        (
            "blocks.1.mlp.hook_in".to_string(),
            "blocks.1.hook_mlp_out".to_string()
        )
    );
    let io = io(&dir.join("io.safetensors"));
    let xs: Vec<Tensor> = (0..3).map(|l| io["x"].get(l).unwrap()).collect();
    let mut worst = 0f32;
    for (l, x) in xs.iter().enumerate() {
        let pre = rel_err(
            &clt.encode_pre(l, x).unwrap(),
            &io["acts_pre"].get(l).unwrap(),
        );
        let acts = rel_err(
            &clt.encode(l, x).unwrap(),
            &io["feature_acts"].get(l).unwrap(),
        );
        worst = worst.max(pre).max(acts);
    }
    for (l, out) in clt.forward(&xs).unwrap().iter().enumerate() {
        worst = worst.max(rel_err(out, &io["output"].get(l).unwrap()));
    }
    println!("gemma_scope_2_clt worst relative error {worst:.1e}");
    assert!(
        worst <= TOL,
        "Gemma Scope 2 CLT differs from circuit-tracer by {worst:e}"
    );
    let e = CrossLayerTranscoder::load_gemma_scope_2(&files[..2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected [d_sae, 2, d_out]"), "{e}");
}

/// A copy of a fixture folder with its config edited, in a temporary folder.
fn edited(
    case: &str,
    file: &str,
    edit: impl Fn(&mut serde_json::Map<String, Value>),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(case)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join(file);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, v.to_string()).unwrap();
    tmp
}

fn load_err(dir: &Path) -> String {
    Sae::load(dir).unwrap_err().to_string()
}

#[test]
fn sae_formats_refuse_what_they_cannot_honour() {
    let cases: Vec<(tempfile::TempDir, &[&str])> = vec![
        (
            edited("standard_none", "cfg.json", |c| {
                c.insert("architecture".into(), json!("sparse_magic"));
            }),
            &[
                "cfg.json",
                "unknown architecture `sparse_magic`",
                "jumprelu_skip_transcoder",
            ],
        ),
        (
            edited("standard_none", "cfg.json", |c| {
                c.insert("architecture".into(), json!("batchtopk"));
            }),
            &["batchtopk", "does not implement"],
        ),
        (
            edited("standard_none", "cfg.json", |c| {
                c.insert("frobnicate".into(), json!(1));
            }),
            &[
                "cfg.json",
                "unknown SAELens 6 config key `frobnicate`",
                "d_sae",
            ],
        ),
        (
            edited("legacy_topk", "cfg.json", |c| {
                c.insert("mystery_knob".into(), json!(true));
            }),
            &["unknown pre-6 SAELens config key `mystery_knob`"],
        ),
        (
            edited("legacy_topk", "cfg.json", |c| {
                c.insert("activation_fn_str".into(), json!("tanh-relu"));
            }),
            &["tanh-relu", "not supported"],
        ),
        (
            edited("legacy_topk", "cfg.json", |c| {
                c.remove("activation_fn_kwargs");
            }),
            &["no `k`"],
        ),
        (
            edited("standard_none", "cfg.json", |c| {
                c.insert("d_sae".into(), json!(65));
            }),
            &["sae_weights.safetensors", "W_enc", "[16, 65]"],
        ),
        (
            edited("standard_none", "cfg.json", |c| {
                c.insert(
                    "normalize_activations".into(),
                    json!("covariance_whitening"),
                );
            }),
            &["covariance_whitening", "not supported"],
        ),
        (
            edited("topk_none", "cfg.json", |c| {
                c.remove("k");
            }),
            &["topk", "`k`"],
        ),
        (
            edited("transcoder_none", "cfg.json", |c| {
                c["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("hook_name_out");
            }),
            &["hook_name_out"],
        ),
        (
            edited("standard_none", "cfg.json", |c| {
                c["metadata"]["hook_head_index"] = json!(3);
            }),
            &["hook_head_index", "single head"],
        ),
        (
            edited(GEMMA_SCOPE_CASES[0], "config.json", |c| {
                c.insert(
                    "hf_hook_point_in".into(),
                    json!("model.layers.1.mlp.act_fn.output"),
                );
            }),
            &[
                "config.json",
                "model.layers.1.mlp.act_fn.output",
                "pre_feedforward_layernorm",
            ],
        ),
        (
            edited(GEMMA_SCOPE_CASES[0], "config.json", |c| {
                c.insert("sparsity_mode".into(), json!("x"));
            }),
            &["unknown Gemma Scope 2 config key `sparsity_mode`"],
        ),
        (
            edited(GEMMA_SCOPE_CASES[2], "config.json", |c| {
                c.insert("affine_connection".into(), json!(false));
            }),
            &["affine_connection", "affine_skip_connection"],
        ),
    ];
    for (dir, needles) in cases {
        let e = load_err(dir.path());
        for n in needles {
            assert!(e.contains(n), "error lacks `{n}`: {e}");
        }
    }
    // A stray tensor is refused by name, as SAELens's strict load_state_dict would.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("standard_none/cfg.json"),
        tmp.path().join("cfg.json"),
    )
    .unwrap();
    let mut t = io(&fixtures().join("standard_none/sae_weights.safetensors"));
    t.insert(
        "log_threshold".into(),
        Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, tmp.path().join("sae_weights.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("`log_threshold`") && e.contains("standard"),
        "{e}"
    );
    // circuit-tracer's JumpReLU keeps negatives above a negative threshold; SAELens's would not.
    let plt = Sae::load(fixtures().join("circuit_tracer_plt/layer_0.safetensors")).unwrap();
    let e = plt
        .save(tempfile::tempdir().unwrap().path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("negative JumpReLU thresholds"), "{e}");
}

/// An in-memory SAE of the given widths and hooks (zero weights).
fn blank(arch: Architecture, d_in: usize, d_out: usize, hook: &str, hook_out: &str) -> Sae {
    let z = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &Device::Cpu).unwrap();
    let d_sae = 8;
    let cfg = SaeConfig {
        architecture: arch,
        d_in,
        d_sae,
        d_out,
        hook_name: hook.into(),
        hook_name_out: hook_out.into(),
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: false,
        model_name: None,
        context_size: None,
        exclude_special_tokens: None,
        format: Format::InMemory,
        metadata: json!({}),
    };
    let w = SaeWeights {
        w_enc: z(&[d_in, d_sae]),
        b_enc: Some(z(&[d_sae])),
        w_dec: z(&[d_sae, d_out]),
        b_dec: z(&[d_out]),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    Sae::new(cfg, w).unwrap()
}

#[test]
fn sae_formats_check_fits_the_model() {
    let model = gemma();
    let c = model.cfg();
    let d = c.d_model;
    let z = c.n_heads * c.d_head;
    let std = Architecture::Standard;
    let ok = [
        blank(
            std,
            d,
            d,
            "blocks.6.hook_resid_post",
            "blocks.6.hook_resid_post",
        ),
        blank(std, z, z, "blocks.5.attn.hook_z", "blocks.5.attn.hook_z"),
        blank(
            std,
            c.d_mlp,
            c.d_mlp,
            "blocks.2.mlp.hook_post",
            "blocks.2.mlp.hook_post",
        ),
        blank(
            Architecture::Transcoder,
            d,
            d,
            "blocks.3.mlp.hook_in",
            "blocks.3.hook_mlp_out",
        ),
    ];
    for sae in &ok {
        sae.check_fits(model)
            .unwrap_or_else(|e| panic!("{}: {e}", sae.hook_name()));
    }
    let bad: Vec<(Sae, &str)> = vec![
        (
            Sae::load(fixtures().join("standard_none")).unwrap(),
            "d_in = 16",
        ),
        (
            blank(
                std,
                d,
                d,
                &format!("blocks.{}.hook_resid_post", c.n_layers),
                "x",
            ),
            "layers",
        ),
        (
            blank(std, d, d, "blocks.1.hook_banana", "x"),
            "not a hook point",
        ),
        (
            blank(std, d, d, "blocks.1.attn.hook_pattern", "x"),
            "not a hook an SAE",
        ),
        (
            blank(
                Architecture::Transcoder,
                d,
                7,
                "blocks.3.mlp.hook_in",
                "blocks.3.hook_mlp_out",
            ),
            "d_out = 7",
        ),
    ];
    for (sae, needle) in bad {
        let e = sae.check_fits(model).unwrap_err().to_string();
        assert!(e.contains(needle), "error lacks `{needle}`: {e}");
    }
}

#[test]
fn sae_formats_save_load_round_trip() {
    let keep = std::env::var_os("MECHINTERP_SAE_SAVE_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, PathBuf, String)> = SAELENS_CASES
        .iter()
        .map(|c| (c.to_string(), fixtures().join(c), "io.safetensors".into()))
        .collect();
    for c in GEMMA_SCOPE_CASES {
        cases.push((
            c.replace('/', "__"),
            fixtures().join(c),
            "io.safetensors".into(),
        ));
    }
    cases.push((
        "circuit_tracer_plt_layer_1".into(),
        fixtures().join("circuit_tracer_plt/layer_1.safetensors"),
        "../io_layer_1.safetensors".into(),
    ));
    for (name, src, io_name) in cases {
        let sae = Sae::load(&src).unwrap();
        let out_dir = keep
            .as_ref()
            .unwrap_or(&tmp.path().to_path_buf())
            .join(&name);
        sae.save(&out_dir).unwrap();
        let back = Sae::load(&out_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back.cfg().format, Format::SaeLensV6);
        for f in [
            "architecture",
            "d_in",
            "d_sae",
            "d_out",
            "hook_name",
            "hook_name_out",
            "k",
        ] {
            let a = serde_json::to_value(sae.cfg()).unwrap()[f].clone();
            let b = serde_json::to_value(back.cfg()).unwrap()[f].clone();
            assert_eq!(a, b, "{name}: {f}");
        }
        assert_eq!(
            back.log_sparsity().is_some(),
            sae.log_sparsity().is_some(),
            "{name}: sparsity"
        );
        let io_path = if src.is_file() {
            src.parent()
                .unwrap()
                .join(io_name.trim_start_matches("../"))
        } else {
            src.join(&io_name)
        };
        let mut x = io(&io_path)["x"].clone();
        if sae.hook_name().ends_with("hook_z") {
            // SAELens reads a saved hook_z SAE per head (reshape_activations "hook_z"), as
            // TransformerLens's hook_z is: [.., n_heads, d_head], here 4 × 4.
            x = x.reshape((2, 5, 4, 4)).unwrap();
        }
        let (f0, o0) = (sae.encode(&x).unwrap(), sae.forward(&x).unwrap());
        let (f1, o1) = (back.encode(&x).unwrap(), back.forward(&x).unwrap());
        assert_eq!(rel_err(&f1, &f0), 0.0, "{name}: feature_acts");
        assert_eq!(rel_err(&o1, &o0), 0.0, "{name}: output");
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("cfg.json")).unwrap())
                .unwrap();
        assert_eq!(
            cfg["metadata"]["hook_name"],
            json!(sae.hook_name()),
            "{name}"
        );
        if sae.cfg().format == Format::SaeLensV6 {
            // The key set SAELens's own save_model wrote for the same SAE.
            let theirs: Value =
                serde_json::from_str(&std::fs::read_to_string(src.join("cfg.json")).unwrap())
                    .unwrap();
            let keys = |v: &Value| {
                let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(&cfg), keys(&theirs), "{name}: cfg.json keys");
            assert_eq!(cfg["metadata"], theirs["metadata"], "{name}: metadata");
        }
        if keep.is_some() {
            let mut t = HashMap::new();
            t.insert("x".to_string(), x);
            t.insert("feature_acts".to_string(), f0);
            t.insert("output".to_string(), o0);
            candle_core::safetensors::save(&t, out_dir.join("ours.safetensors")).unwrap();
        }
    }
    // save_with_sparsity writes SAELens's sparsity.safetensors.
    let sae = Sae::load(fixtures().join("topk_rescale")).unwrap();
    let s = Tensor::arange(0f32, 64., &Device::Cpu)
        .unwrap()
        .affine(-0.05, 0.0)
        .unwrap();
    let dir = tmp.path().join("with_sparsity");
    sae.save_with_sparsity(&dir, &s).unwrap();
    let back = Sae::load(&dir).unwrap();
    assert_eq!(rel_err(back.log_sparsity().unwrap(), &s), 0.0);
}

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Puts `files` (relative path → source file) into a hub-cache snapshot of `repo_id`.
fn put_in_cache(cache: &Path, repo_id: &str, files: &[(&str, PathBuf)]) {
    let root = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), REV).unwrap();
    for (rel, src) in files {
        let dst = root.join("snapshots").join(REV).join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

#[test]
fn sae_formats_from_pretrained_through_an_offline_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let gs = fixtures().join(GEMMA_SCOPE_CASES[0]);
    let folder = "resid_post/layer_1_width_64_l0_small";
    put_in_cache(
        &cache,
        "google/gemma-scope-2-270m-pt",
        &[
            (&format!("{folder}/config.json"), gs.join("config.json")),
            (
                &format!("{folder}/params.safetensors"),
                gs.join("params.safetensors"),
            ),
        ],
    );
    let sl = fixtures().join("standard_none");
    put_in_cache(
        &cache,
        "someone/gpt-saes",
        &[
            ("blocks.3.hook_resid_post/cfg.json", sl.join("cfg.json")),
            (
                "blocks.3.hook_resid_post/sae_weights.safetensors",
                sl.join("sae_weights.safetensors"),
            ),
            (
                "blocks.3.hook_resid_post/sparsity.safetensors",
                sl.join("sparsity.safetensors"),
            ),
        ],
    );
    let opts = LoadOptions {
        cache_dir: Some(cache.clone()),
        offline: Some(true),
        ..LoadOptions::from_env().unwrap()
    };
    for (repo_id, sae_id, local) in [
        ("google/gemma-scope-2-270m-pt", folder, gs.clone()),
        ("someone/gpt-saes", "blocks.3.hook_resid_post", sl.clone()),
    ] {
        let sae = Sae::from_pretrained_with(repo_id, sae_id, &opts)
            .unwrap_or_else(|e| panic!("{repo_id}: {e}"));
        let direct = Sae::load(&local).unwrap();
        let x = io(&local.join("io.safetensors"))["x"].clone();
        assert_eq!(
            rel_err(&sae.forward(&x).unwrap(), &direct.forward(&x).unwrap()),
            0.0
        );
        assert_eq!(sae.hook_name(), direct.hook_name());
        assert_eq!(
            sae.log_sparsity().is_some(),
            direct.log_sparsity().is_some()
        );
    }
    let e = Sae::from_pretrained_with("google/gemma-scope-2-270m-pt", "mlp_out/layer_9", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no SAE in folder `mlp_out/layer_9`") && e.contains("offline"),
        "{e}"
    );
    let e = Sae::from_pretrained_with("gemma-scope-2-270m-pt-res", "x", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("google/gemma-scope-2-270m-pt"), "{e}");
}
