//! The `mechinterp` binary on a tiny GGUF: top-k output, the safetensors dump, and errors.

mod common;

use std::process::Command;

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mechinterp"))
}

#[test]
fn run_prints_top_k_and_cache_writes_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), &Tiny::default(), 5);
    let out = bin()
        .args(["run", " the cat", "--model"])
        .arg(&model)
        .args(["--top-k", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    let probs: Vec<f32> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(
        probs.windows(2).all(|w| w[0] >= w[1]) && probs[0] <= 1.0,
        "{stdout}"
    );

    let file = dir.path().join("acts.safetensors");
    let out = bin()
        .args([
            "cache",
            " the cat",
            "--filter",
            r"hook_pattern$|resid_post",
            "--out",
        ])
        .arg(&file)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    assert_eq!(t.len(), 6 + 6 + 2, "{keys:?}");
    assert_eq!(t["logits"].dims()[..2], [1, 3]);
    assert_eq!(t["blocks.0.attn.hook_pattern"].dims(), &[1, 4, 3, 3]);
    assert_eq!(t["blocks.5.hook_resid_post"].dims(), &[1, 3, 64]);
}

#[test]
fn bad_input_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), &Tiny::default(), 5);
    let out = bin()
        .args([
            "cache",
            "x",
            "--filter",
            "(",
            "--out",
            "/tmp/x.safetensors",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--filter is not a valid regular expression")
    );
    let out = bin()
        .args([
            "cache",
            "x",
            "--filter",
            "hook_nothing",
            "--out",
            "/tmp/x.safetensors",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no hook point"));
    let out = bin()
        .args(["run", "x", "--model", "no-such-model"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("gemma3-270m") && err.contains(".gguf"),
        "{err}"
    );
    let out = bin()
        .args(["run", "x", "--model", "/nonexistent/m.gguf"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found") && err.contains("mechinterp fetch"),
        "{err}"
    );
}
