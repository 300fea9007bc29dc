//! Generation with a KV cache against the uncached forward pass: on the default model and on a
//! tiny checkpoint of every architecture (all with grouped-query attention; sliding windows
//! shorter and longer than the output), greedy tokens are identical and every step's logits
//! are within 1e-4 of a full forward pass over the same ids; a left-padded batch gives each row
//! its single run; hooks act at every step as on the full sequence; sampling reproduces.

use std::path::PathBuf;

use crate::common::{gemma, max_abs_diff};
use mechinterp::prelude::*;

const TOL: f32 = 1e-4;

fn model_dir(name: &str) -> PathBuf {
    crate::common::repo()
        .join("tests/fixtures/models")
        .join(name)
}

/// Greedy decoding by full forward passes over the whole sequence, and each step's logits.
fn uncached_greedy(
    m: &HookedTransformer,
    prompt: &[u32],
    n: usize,
    hooks: &Hooks,
) -> (Vec<u32>, Tensor) {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l = m.with_hooks(hooks).forward(&t).unwrap();
        let last = l.i((0, ids.len() - 1)).unwrap().to_vec1::<f32>().unwrap();
        let best = last
            .iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > last[b] { i } else { b });
        ids.push(best as u32);
    }
    // The logits that predicted each new token, from one pass over everything.
    let t = Tensor::new(&ids[..ids.len() - 1], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let l = m.with_hooks(hooks).forward(&t).unwrap();
    let steps = l.i((0, prompt.len() - 1..ids.len() - 1)).unwrap();
    (ids[prompt.len()..].to_vec(), steps)
}

/// Cached greedy generation of `n` tokens equals the uncached loop, alone and in a batch.
fn check(m: &HookedTransformer, name: &str, prompts: &[Vec<u32>], n: usize, hooks: &Hooks) {
    let opts = GenerateOptions {
        max_new_tokens: n,
        stop_at_eos: false,
        keep_logits: true,
        ..Default::default()
    };
    let batch = m.with_hooks(hooks).generate_ids(prompts, &opts).unwrap();
    let mut worst = 0f32;
    for (p, row) in prompts.iter().zip(&batch) {
        let single = m
            .with_hooks(hooks)
            .generate_ids(std::slice::from_ref(p), &opts)
            .unwrap()
            .remove(0);
        let (want, steps) = uncached_greedy(m, p, n, hooks);
        assert_eq!(
            single.tokens, want,
            "{name}: cached greedy tokens differ from uncached"
        );
        assert_eq!(
            row.tokens, want,
            "{name}: a batched row differs from its single run"
        );
        let d = max_abs_diff(single.logits.as_ref().unwrap(), &steps);
        let db = max_abs_diff(row.logits.as_ref().unwrap(), &steps);
        worst = worst.max(d).max(db);
        assert!(
            d <= TOL && db <= TOL,
            "{name}: |Δlogit| {d:.2e} alone, {db:.2e} batched"
        );
    }
    println!(
        "{name}: {} prompts × {n} tokens, max |Δlogit| vs uncached {worst:.1e}",
        prompts.len()
    );
}

#[test]
fn tiny_models_of_every_architecture_generate_as_the_uncached_pass() {
    for name in ["llama", "qwen2", "qwen3", "gemma2", "gemma3"] {
        let m = HookedTransformer::from_local_dir(model_dir(name)).unwrap();
        assert!(
            m.cfg().n_kv_heads < m.cfg().n_heads,
            "{name}: not grouped-query"
        );
        // Lengths 3, 7 and 1: padding 4, 0 and 6 slots; 12 new tokens pass the window of 4.
        let v = m.cfg().d_vocab as u32;
        let prompts = vec![
            vec![5 % v, 17, 42],
            vec![9, 3, 77, 120, 31, 8, 200],
            vec![64],
        ];
        check(&m, name, &prompts, 12, &Hooks::new());
    }
}

#[test]
fn sliding_windows_longer_than_the_output() {
    let m = HookedTransformer::from_local_dir(model_dir("gemma3")).unwrap();
    let mut cfg = m.cfg().clone();
    let mut windows = 0;
    for l in cfg.layers.iter_mut() {
        if l.sliding_window.is_some() {
            l.sliding_window = Some(64);
            windows += 1;
        }
    }
    assert!(windows > 0);
    let wide =
        HookedTransformer::new(cfg, m.weights().clone(), m.tokenizer().ok().cloned()).unwrap();
    let prompts = vec![vec![2, 11, 12, 13, 14, 15], vec![2, 40]];
    check(&wide, "gemma3 (window 64)", &prompts, 10, &Hooks::new());
    // The window changes what is generated, so the test above could fail.
    let opts = GenerateOptions {
        keep_logits: true,
        stop_at_eos: false,
        ..GenerateOptions::greedy(10)
    };
    let a = m.generate_ids(&prompts, &opts).unwrap();
    let b = wide.generate_ids(&prompts, &opts).unwrap();
    let d = max_abs_diff(a[0].logits.as_ref().unwrap(), b[0].logits.as_ref().unwrap());
    assert!(d > 1e-3, "the window made no difference ({d})");
}

#[test]
fn default_model_generates_as_the_uncached_pass_with_and_without_hooks() {
    let m = gemma();
    let prompts: Vec<Vec<u32>> = [
        "English: I like green apples.\nFrench: J'aime les",
        "The capital of Italy is",
    ]
    .iter()
    .map(|p| m.encode(p).unwrap())
    .collect();
    check(m, "gemma3-270m", &prompts, 6, &Hooks::new());
    // A steering vector on the residual stream and a zeroed head, active at every step.
    let d = m.cfg().d_model;
    let v = (Tensor::ones(d, DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
    let hooks = Hooks::new()
        .intervene("blocks.6.hook_resid_post", Intervention::Add(v))
        .unwrap()
        .intervene("blocks.3.attn.hook_z", Intervention::ZeroHead(1))
        .unwrap();
    check(m, "gemma3-270m with hooks", &prompts, 6, &hooks);
    let plain = m
        .generate_ids(&prompts, &GenerateOptions::greedy(6))
        .unwrap();
    let hooked = m
        .with_hooks(&hooks)
        .generate_ids(&prompts, &GenerateOptions::greedy(6))
        .unwrap();
    assert_ne!(
        plain.iter().map(|g| g.logprobs.clone()).collect::<Vec<_>>(),
        hooked
            .iter()
            .map(|g| g.logprobs.clone())
            .collect::<Vec<_>>(),
        "the hooks changed nothing"
    );
}

#[test]
fn text_stop_strings_and_sampling() {
    let m = gemma();
    let prompt = "English: I like green apples.\nFrench: J'aime les";
    let g = m
        .generate(prompt, &GenerateOptions::greedy(20).stop_at("\n"))
        .unwrap();
    println!("{prompt:?} → {:?} ({:?})", g.text, g.stop);
    assert!(g.text.contains("vertes"), "{:?}", g.text);
    assert!(!g.text.contains('\n'));
    assert_eq!(g.stop, StopReason::Stop("\n".into()));
    assert_eq!(g.tokens.len(), g.logprobs.len());
    // Sampling: the same seed gives the same text, row 0 of a batch equals the single run,
    // and a repeated prompt gets different draws in other rows.
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: Some(50),
            top_p: Some(0.95),
            seed: 3,
        },
        ..Default::default()
    };
    let a = m.generate(prompt, &opts).unwrap();
    let b = m.generate(prompt, &opts).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let batch = m.generate_batch(&[prompt; 4], &opts).unwrap();
    assert_eq!(batch[0].tokens, a.tokens);
    assert!(
        batch[1..].iter().any(|g| g.tokens != a.tokens),
        "every row drew the same"
    );
    // Options we cannot honour are refused by name.
    for (bad, word) in [
        (
            Sampling::Sample {
                temperature: 0.0,
                top_k: None,
                top_p: None,
                seed: 0,
            },
            "temperature",
        ),
        (
            Sampling::Sample {
                temperature: 1.0,
                top_k: Some(0),
                top_p: None,
                seed: 0,
            },
            "top_k",
        ),
        (
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(1.5),
                seed: 0,
            },
            "top_p",
        ),
    ] {
        let o = GenerateOptions {
            sampling: bad,
            ..Default::default()
        };
        let e = m.generate(prompt, &o).unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
    }
}
