//! Transcoders for every layer in one streaming pass (issue 25, item 4): on a tiny Gemma 3 a
//! set trains, writes SAELens folders and circuit-tracer's per-layer format that read back with
//! the same encode, and evaluates; the fast sparse step's gradients for a BatchTopK transcoder
//! (encode x, decode towards another tensor y, d_in ≠ d_out) equal candle's autograd's.

use candle_core::{Device, Tensor};
use mechinterp::model::HookedTransformer;
use mechinterp::sae::format::circuit_tracer::load_transcoder_set;
use mechinterp::sae::train::trainer::{TrainArch, TrainConfig, Trainer};
use mechinterp::sae::train::{parse_set_arch, train_transcoders, TranscoderSetOptions};
use mechinterp::sae::{Architecture, Sae};

fn tiny() -> HookedTransformer {
    let dir = crate::common::repo().join("tests/fixtures/models/gemma3");
    HookedTransformer::from_local_dir(dir).unwrap()
}

/// Largest |a − b| relative to b's largest entry.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

fn small_opts(out: &std::path::Path) -> TranscoderSetOptions {
    let mut o = TranscoderSetOptions::quick(out);
    o.d_sae = 48;
    o.k = Some(4);
    o.tokens = 1024;
    o.batch_size = 128;
    o.contexts_per_forward = 8;
    o.context_size = 32;
    o.buffer_batches = 4;
    o.lr_decay_steps = 2;
    o.massive.calibration_tokens = 256;
    o.eval_tokens = 512;
    o.eval_replacement_tokens = 64;
    o.quiet = true;
    o
}

#[test]
fn transcoders_train_tiny_set_saves_both_formats_with_one_encode() {
    let m = tiny();
    let n_layers = m.cfg().n_layers;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("set");
    let r = train_transcoders(&m, &small_opts(&out)).unwrap();
    assert_eq!(r.saes.len(), n_layers);
    assert_eq!(r.steps, 8);
    // One forward pass serves every layer: the store ran no more than the tokens need.
    let per_forward = 8 * 31;
    assert!(
        r.store.forwards <= (256usize + 1024 + 4 * 128).div_ceil(per_forward) + 2,
        "{} forward passes",
        r.store.forwards
    );
    let ev = r.eval.as_ref().unwrap();
    assert_eq!(ev.layers.len(), n_layers);
    let rep = ev.replacement.as_ref().unwrap();
    assert!(rep.positions >= 64 && rep.kl.is_finite() && (0.0..=1.0).contains(&rep.top1_agreement));
    for f in ["config.yaml", "training.json", "eval.json"] {
        assert!(out.join(f).is_file(), "no {f}");
    }
    let ct = load_transcoder_set(&out).unwrap();
    assert_eq!(ct.len(), n_layers);
    let d = m.cfg().d_model;
    let x = (Tensor::randn(0f32, 1.0, (16, d), &Device::Cpu).unwrap() * 3.0).unwrap();
    for (l, c) in ct.iter().enumerate() {
        let sl = Sae::load(out.join("saelens").join(format!("layer_{l}"))).unwrap();
        let one = Sae::load(out.join(format!("layer_{l}.safetensors"))).unwrap();
        assert_eq!(sl.cfg().architecture, Architecture::JumpReluTranscoder);
        assert_eq!(c.cfg().architecture, Architecture::JumpReluTranscoder);
        assert_eq!(c.hook_name(), format!("blocks.{l}.mlp.hook_in"));
        assert_eq!(c.hook_name_out(), format!("blocks.{l}.hook_mlp_out"));
        let want = r.saes[l].encode(&x).unwrap();
        for (what, s) in [("saelens", &sl), ("circuit-tracer", c), ("file", &one)] {
            let got = s.encode(&x).unwrap();
            assert!(
                rel_diff(&got, &want) < 1e-6,
                "layer {l} {what} encode differs"
            );
            let o = rel_diff(&s.forward(&x).unwrap(), &r.saes[l].forward(&x).unwrap());
            assert!(o < 1e-6, "layer {l} {what} output differs by {o}");
        }
    }
}

#[test]
fn transcoders_train_refuses_what_it_cannot_save() {
    for bad in ["topk", "jumprelu", "standard", "batchtopk_transcoder"] {
        let e = parse_set_arch(bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("batchtopk"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut o = small_opts(&dir.path().join("x"));
    o.arch = TrainArch::TopK;
    let e = train_transcoders(&tiny(), &o).unwrap_err().to_string();
    assert!(e.contains("topk"), "{e}");
}

#[test]
fn transcoders_train_fast_step_gradients_equal_autograd() {
    // A BatchTopK transcoder, 12 wide in and 8 wide out: the fast path encodes x and decodes
    // towards y. A one-step dead window brings the aux-k term in after the first steps.
    let (d_in, d_out, b) = (12, 8, 16);
    let mut c = TrainConfig::new(TrainArch::BatchTopKTranscoder, d_in, d_out, 32);
    c.k = Some(3);
    c.total_steps = 20;
    c.lr = 1e-2;
    c.dead_feature_window = 1;
    let empty = Tensor::zeros((0, d_in), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(c, &empty, &Device::Cpu).unwrap();
    let mix = Tensor::randn(0f32, 1.0, (d_in, d_out), &Device::Cpu).unwrap();
    let mut saw_dead = false;
    for step in 0..6 {
        let x = Tensor::randn(0f32, 1.0, (b, d_in), &Device::Cpu).unwrap();
        let y = x.matmul(&mix).unwrap().relu().unwrap();
        saw_dead |= t.dead_mask().iter().any(|&d| d);
        let fast = t.gradients(&x, &y, false).unwrap();
        let slow = t.gradients(&x, &y, true).unwrap();
        assert_eq!(fast.len(), slow.len());
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            assert_eq!(f.dims(), s.dims());
            let r = rel_diff(f, s);
            assert!(
                r <= 1e-4,
                "step {step} parameter {i}: relative difference {r}"
            );
        }
        t.step(&x, Some(&y)).unwrap();
    }
    assert!(saw_dead, "no latent died, so the aux-k term went unchecked");
}
