//! GGUF weights kept quantised: `Stream` must equal the dense f32 path bit for bit on the same
//! file (logits, every hook point, generation, gradients), on every architecture and on the
//! default model's K-quants; `Quantized` is approximate, so its deviation is measured and
//! bounded; gradients in both modes agree with finite differences.

use std::path::PathBuf;

use crate::common::{load_as, max_abs, max_abs_diff, requantised, write_tiny_gguf, Tiny};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use mechinterp::fetch::default_model_path;
use mechinterp::hooks::{HookContext, HookPoint, Hooks};
use mechinterp::metrics::{logit_diff, LogitDiff};
use mechinterp::patching::{Direction, PatchTarget, Patcher};
use mechinterp::prelude::*;

fn model_dir(name: &str) -> PathBuf {
    crate::common::repo()
        .join("tests/fixtures/models")
        .join(name)
}

/// The fixture's reference token ids, [1, s].
fn fixture_ids(name: &str) -> Tensor {
    let r =
        candle_core::safetensors::load(model_dir(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    r["ids"].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap()
}

/// Every hook point of two runs, compared exactly.
fn assert_same_caches(a: &HookedTransformer, b: &HookedTransformer, ids: &Tensor, what: &str) {
    let (la, ca) = a.run_with_cache(ids).unwrap();
    let (lb, cb) = b.run_with_cache(ids).unwrap();
    assert_eq!(max_abs_diff(&la, &lb), 0.0, "{what}: logits");
    assert_eq!(ca.keys(), cb.keys(), "{what}");
    for (name, x) in ca.iter() {
        let d = max_abs_diff(x, &cb.get(name).unwrap());
        assert_eq!(d, 0.0, "{what}: {name} differs by {d}");
    }
}

/// Share of positions whose arg-max token agrees, and max |Δlogit|, of two [.., v] tensors.
fn deviation(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let top = |t: &Tensor| -> Vec<u32> {
        t.flatten_to(D::Minus2)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (ta, tb) = (top(a), top(b));
    let agree = ta.iter().zip(&tb).filter(|(x, y)| x == y).count() as f32 / ta.len() as f32;
    (agree, max_abs_diff(a, b))
}

#[test]
fn stream_equals_dense_bit_for_bit_and_quantized_stays_close_on_every_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama", "qwen2", "qwen3", "gemma2", "gemma3"] {
        let ids = fixture_ids(name);
        for qt in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let path = requantised(&model_dir(name).join("model.gguf"), tmp.path(), qt);
            let dense = load_as(&path, WeightMode::Dense);
            let stream = load_as(&path, WeightMode::Stream);
            let fast = load_as(&path, WeightMode::Quantized);
            assert_eq!(stream.weight_mode(), WeightMode::Stream);
            assert_eq!(fast.weight_mode(), WeightMode::Quantized);
            assert!(
                stream.weight_bytes() * 3 < dense.weight_bytes(),
                "{name} {qt:?}: stream holds {} bytes, dense {}",
                stream.weight_bytes(),
                dense.weight_bytes()
            );
            let what = format!("{name} {qt:?}");
            assert_same_caches(&dense, &stream, &ids, &what);

            // Generation (KV cache, batched with padding) is the same too.
            let ids2: Vec<u32> = ids.i(0).unwrap().to_vec1().unwrap();
            let prompts = [ids2[..3].to_vec(), ids2[..7].to_vec()];
            let gen = GenerateOptions {
                stop_at_eos: false,
                ..GenerateOptions::greedy(6)
            };
            let a = dense.generate_ids(&prompts, &gen).unwrap();
            let b = stream.generate_ids(&prompts, &gen).unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.tokens, y.tokens, "{what}: generated tokens");
            }

            let want = dense.forward(&ids).unwrap();
            let got = fast.forward(&ids).unwrap();
            let (agree, d) = deviation(&want, &got);
            let scale = max_abs(&want);
            println!(
                "{what}: quantized max |Δlogit| {d:.2e} (logits up to {scale:.2}), top-1 agreement {agree:.2}"
            );
            // 8-bit activations against the weights' own rounding: a few percent of the
            // logits' range on these random models.
            assert!(d <= 0.08 * scale, "{what}: quantized off by {d} of {scale}");
        }
    }
}

#[test]
fn stream_equals_dense_bit_for_bit_on_the_default_model() {
    // The default file mixes Q8_0, Q5_0, Q4_K and Q6_K, and its 262 144-row unembedding is
    // streamed in slabs; none of that may change a bit.
    let dense = crate::common::gemma();
    let stream = load_as(&default_model_path(), WeightMode::Stream);
    let ids = dense.to_tokens_batch(&crate::common::PROMPTS[..3]).unwrap();
    assert_same_caches(dense, &stream, &ids, "default model");
    println!(
        "default model weights: dense {} MB, stream {} MB",
        dense.weight_bytes() >> 20,
        stream.weight_bytes() >> 20
    );
    // The logit lens and direct logit attribution go through the same unembedding.
    let la = LogitLens::new(dense, crate::common::PROMPTS[0])
        .unwrap()
        .logits_at(2)
        .unwrap();
    let lb = LogitLens::new(&stream, crate::common::PROMPTS[0])
        .unwrap()
        .logits_at(2)
        .unwrap();
    assert_eq!(max_abs_diff(&la, &lb), 0.0, "logit lens");
}

#[test]
fn quantized_mode_on_the_default_model_is_close() {
    let dense = crate::common::gemma();
    let fast = load_as(&default_model_path(), WeightMode::Quantized);
    let texts: Vec<String> = crate::common::PROMPTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut worst = 0f32;
    let mut agree = Vec::new();
    for t in &texts {
        let ids = dense.to_tokens(t).unwrap();
        let (a, d) = deviation(&dense.forward(&ids).unwrap(), &fast.forward(&ids).unwrap());
        worst = worst.max(d);
        agree.push(a);
    }
    let mean = agree.iter().sum::<f32>() / agree.len() as f32;
    println!(
        "default model, quantized vs dense over {} prompts: max |Δlogit| {worst:.3}, top-1 agreement {mean:.3}",
        texts.len()
    );
    assert!(worst < 3.0, "quantized mode moved a logit by {worst}");
    assert!(mean >= 0.9, "top-1 agreement {mean}");
}

/// A directional derivative of the logit difference through `resid_pre` of layer 1, from the
/// attribution gradients and from central finite differences.
fn gradient_and_finite_difference(m: &HookedTransformer) -> (f64, f64) {
    let clean = Tensor::new(&[2u32, 260, 261, 262, 270, 263, 264, 265], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (_, cache) = m.run_with_cache(&clean).unwrap();
    let name = HookPoint::ResidPre(1).name();
    let x = cache.get(&name).unwrap();
    // A fixed direction (the same for every mode), scaled to the activations.
    let dir = (Tensor::arange(0f32, x.elem_count() as f32, &Device::Cpu)
        .unwrap()
        .reshape(x.shape())
        .unwrap()
        * 0.37)
        .unwrap()
        .sin()
        .unwrap();
    let h = 1e-2;
    let f = |t: f64| {
        let v = (&x + (&dir * t).unwrap()).unwrap();
        let hook = move |_: &Tensor, _: &HookContext| Ok(v.clone());
        let l = m
            .with_hooks(&Hooks::new().add(&name, hook).unwrap())
            .forward(&clean)
            .unwrap();
        logit_diff(&l, 272, 273, None).unwrap() as f64
    };
    let fd = (f(h) - f(-h)) / (2.0 * h);
    let d2 = dir.clone();
    let hooks = Hooks::new().add_point(
        HookPoint::ResidPre(1),
        move |x: &Tensor, _: &HookContext| Ok((x + &d2)?),
    );
    let (_, src) = m
        .with_hooks(&hooks)
        .run_with_cache_filtered(&clean, |_: &str| true)
        .unwrap();
    let p = Patcher::from_caches(m, (&clean, cache), (&clean, src), LogitDiff::new(272, 273))
        .unwrap()
        .quiet(true);
    let a = p.attribution(Direction::Noise).unwrap();
    let est: f32 = (0..clean.dim(1).unwrap())
        .map(|q| a.resid_pre.get(&[1, q]).unwrap())
        .sum();
    (est as f64, fd)
}

#[test]
fn gradients_in_both_quantised_modes_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_file = write_tiny_gguf(tmp.path(), &Tiny::default(), 21);
    let q8_file = requantised(&f32_file, tmp.path(), GgmlDType::Q8_0);
    // Stream: the Q8_0 file's exact function, so its gradient is the dense one, bit for bit,
    // and agrees with finite differences.
    let dense = load_as(&q8_file, WeightMode::Dense);
    let (want, _) = gradient_and_finite_difference(&dense);
    let (est, fd) = gradient_and_finite_difference(&load_as(&q8_file, WeightMode::Stream));
    println!("stream: gradient {est:.6}, finite difference {fd:.6}, dense gradient {want:.6}");
    assert_eq!(est, want, "stream gradients differ from dense ones");
    assert!(fd.abs() > 1e-3 && (est - fd).abs() <= 1e-3 * (1.0 + fd.abs()));
    // Quantized: the forward quantises activations to 8 bits, a step function at that
    // resolution (a finite difference at h = 1e-2 measures its steps), so the backward is the
    // straight-through gradient of the dequantised weights. Its plumbing is checked against
    // finite differences where the matmul is smooth (the f32 file: no 8-bit activations) ...
    let (est, fd) = gradient_and_finite_difference(&load_as(&f32_file, WeightMode::Quantized));
    println!("quantized, f32 file: gradient {est:.6}, finite difference {fd:.6}");
    assert!(fd.abs() > 1e-3 && (est - fd).abs() <= 1e-3 * (1.0 + fd.abs()));
    // ... and on the Q8_0 file its attribution table is compared with the exact one.
    let toks = |ids: &[u32]| {
        Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let (c, k) = (
        toks(&[2, 260, 261, 262, 270, 263, 264, 265]),
        toks(&[2, 260, 266, 262, 271, 263, 264, 265]),
    );
    let tables = |m: &HookedTransformer| {
        let p = Patcher::from_tokens(m, &c, &k, LogitDiff::new(272, 273))
            .unwrap()
            .quiet(true);
        let a = p.attribution(Direction::Denoise).unwrap();
        let h = p
            .activation(PatchTarget::HeadOut, Direction::Denoise)
            .unwrap();
        (a.head_out.values, h.table.values)
    };
    let (attr, act) = tables(&dense);
    assert_eq!(
        (attr.clone(), act.clone()),
        tables(&load_as(&q8_file, WeightMode::Stream))
    );
    let (qattr, qact) = tables(&load_as(&q8_file, WeightMode::Quantized));
    let r_attr = mechinterp::stats::pearson(&attr, &qattr);
    let r_act = mechinterp::stats::pearson(&act, &qact);
    println!("quantized vs exact on Q8_0, {} heads: attribution pearson {r_attr:.4}, activation patching pearson {r_act:.4}", attr.len());
    assert!(r_attr > 0.9 && r_act > 0.9, "{r_attr} {r_act}");
}

#[test]
fn quantised_modes_are_refused_where_they_cannot_be_honoured() {
    let err = |r: mechinterp::Result<HookedTransformer>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let e = err(HookedTransformer::from_spec(
        model_dir("qwen2"),
        &LoadOptions {
            weights: WeightMode::Stream,
            ..Default::default()
        },
    ));
    assert!(e.contains("stream") && e.contains("safetensors"), "{e}");
    let e = err(HookedTransformer::from_spec(
        model_dir("qwen2").join("model.gguf"),
        &LoadOptions {
            weights: WeightMode::Quantized,
            dtype: DType::BF16,
            ..Default::default()
        },
    ));
    assert!(e.contains("quantized") && e.contains("BF16"), "{e}");
}

#[test]
fn our_q8_0_q5_0_and_q4_0_decoders_give_candles_bits() {
    // Stream mode decodes these two types itself (faster); the rest of the suite compares whole
    // models, this compares every value of a matrix with more rows than one band.
    let w = Tensor::randn(0f32, 1.0, (3000, 256), &Device::Cpu).unwrap();
    for dt in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4_0] {
        let q = std::sync::Arc::new(candle_core::quantized::QTensor::quantize(&w, dt).unwrap());
        let want = q.dequantize(&Device::Cpu).unwrap();
        let got = mechinterp::model::Matrix::quantised(vec![q], false)
            .unwrap()
            .dense()
            .unwrap();
        assert_eq!(max_abs_diff(&want, &got), 0.0, "{dt:?}");
    }
}

#[test]
fn files_written_by_llama_cpps_converter_stream_to_hf_transformers_logits() {
    // Not our files: llama.cpp's convert_hf_to_gguf.py wrote these (Q8_0, BF16, F16), and HF
    // transformers computed the reference logits on the weights gguf-py dequantizes from them.
    for (name, kind) in [("llama", "q8_0"), ("qwen3", "bf16"), ("gemma3", "f16")] {
        let path = model_dir(name).join(format!("model.{kind}.gguf"));
        let dense = load_as(&path, WeightMode::Dense);
        let stream = load_as(&path, WeightMode::Stream);
        let ids = fixture_ids(name);
        assert_same_caches(&dense, &stream, &ids, &format!("{name}.{kind}.gguf"));
        let r = candle_core::safetensors::load(
            model_dir(name).join(format!("reference.{kind}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let got = stream.forward(&ids).unwrap().i(0).unwrap();
        let d = max_abs_diff(&got, &r["logits"]);
        let q = max_abs_diff(
            &load_as(&path, WeightMode::Quantized)
                .forward(&ids)
                .unwrap()
                .i(0)
                .unwrap(),
            &r["logits"],
        );
        println!("{name}.{kind}.gguf: stream vs HF {d:.1e}, quantized vs HF {q:.1e}");
        assert!(d <= 1e-4, "{name} {kind}: stream off HF by {d}");
    }
}
