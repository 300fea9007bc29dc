//! The `mechinterp` binary on a tiny GGUF: top-k output, the safetensors dump, and errors.

use std::process::Command;

use crate::common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mechinterp"))
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mechinterp-bench"))
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
fn cache_into_a_missing_folder_names_the_users_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), &Tiny::default(), 5);
    let cache = |out: &std::path::Path| {
        let out = bin()
            .args(["cache", "x", "--filter", "hook_embed", "--out"])
            .arg(out)
            .arg("--model")
            .arg(&model)
            .output()
            .unwrap();
        assert!(!out.status.success());
        // The test's own folder is a .tmpXXXX too: only what follows it may not name one.
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.replace(&dir.path().display().to_string(), "DIR")
    };
    let missing = dir.path().join("no-such-folder/acts.safetensors");
    let err = cache(&missing);
    assert!(
        err.contains("cannot write DIR/no-such-folder/acts.safetensors")
            && err.contains("does not exist")
            && !err.contains(".tmp"),
        "{err}"
    );
    // A folder where the file should be: said so, and nothing left beside it.
    let folder = dir.path().join("acts.safetensors");
    std::fs::create_dir(&folder).unwrap();
    let err = cache(&folder);
    assert!(
        err.contains("it is a folder") && !err.contains(".tmp"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 2, "only the model and the folder: {left:?}");
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

#[test]
fn patch_attribute_and_logit_lens_write_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), &Tiny::default(), 5);
    let json = dir.path().join("patch.json");
    let pair = |cmd: &str| {
        let mut c = bin();
        c.args([
            cmd,
            "--clean",
            " the cat",
            "--corrupt",
            " the the",
            "--answer",
            " cat",
            "--wrong",
            " the",
            "--model",
        ])
        .arg(&model)
        .arg("--json")
        .arg(&json);
        c
    };
    let out = pair("patch")
        .args(["--what", "resid-pre", "--direction", "noise"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["direction"], "noise");
    assert_eq!(j["axes"][0]["name"], "layer");
    assert_eq!(
        j["axes"][1]["labels"],
        serde_json::json!(["<bos>", " the", " cat"])
    );
    assert_eq!(j["values"].as_array().unwrap().len(), 6);
    assert_eq!(j["values"][0].as_array().unwrap().len(), 3);
    assert!(
        j["clean_value"].is_number() && j["corrupted_value"].is_number() && j["metric"].is_string()
    );
    // Noising position 0 (BOS, identical in both prompts) changes nothing.
    assert!(
        (j["values"][0][0].as_f64().unwrap() - j["clean_value"].as_f64().unwrap()).abs() < 1e-5
    );

    let out = pair("patch")
        .args(["--what", "head-out", "--by-pos"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        j["values"][5][3].as_array().unwrap().len(),
        3,
        "[layer][head][position]"
    );

    let out = pair("attribute").arg("--compare").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["head_out"]["values"].as_array().unwrap().len(), 6);
    assert!(j["agreement"]["pearson"].is_number());

    let out = bin()
        .args([
            "logit-lens",
            " the cat",
            "--tokens",
            " cat",
            " the",
            "--json",
        ])
        .arg(&json)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["layers"].as_array().unwrap().len(), 7);
    assert_eq!(j["probs"]["values"][6].as_array().unwrap().len(), 2);

    let out = bin()
        .args([
            "patch",
            "--clean",
            " the cat",
            "--corrupt",
            " the",
            "--answer",
            " cat",
            "--wrong",
            " the",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("same number of tokens"),
        "{err}"
    );
}

#[test]
fn bench_refuses_a_python_without_torch_before_benchmarking() {
    // A wrong --baseline-python must fail with the fix before minutes of benchmarks run.
    let out = bench()
        .args([
            "--model",
            "Qwen/Qwen2.5-0.5B",
            "--baseline-python",
            "python3",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("loads a GGUF file"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sgemm"));
    for (python, want) in [
        ("/nonexistent/python", "could not run"),
        ("python3", "cannot import torch"),
    ] {
        let out = bench()
            .args(["--model", "/nonexistent/model.gguf", "--baseline-python"])
            .arg(python)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if python == "python3"
            && Command::new("python3")
                .args(["-c", "import torch, transformers, gguf"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            continue; // this machine's python3 can run the baseline: nothing to refuse
        }
        assert!(!out.status.success(), "{python}: {stdout}");
        assert!(stderr.contains(want), "{python}: {stderr}");
        assert!(stderr.contains("pip install torch") || stderr.contains("Python executable"));
        assert!(!stdout.contains("sgemm"), "benchmarks ran first: {stdout}");
    }
}

#[test]
fn translation_heads_refuses_a_bad_split_before_loading_the_model() {
    let out = bin()
        .args([
            "translation-heads",
            "--model",
            "/nonexistent/model.gguf",
            "--split",
            "1.5",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--split 1.5 must be in [0, 1)"), "{stderr}");
}

#[test]
fn translation_heads_skips_a_stage_with_too_little_data_and_still_succeeds() {
    // Six pairs leave three held-out ones, none of whose prompts share a token length: path
    // patching has no prompt pair to corrupt with. That is a skipped stage, not a failure.
    let out = tempfile::tempdir().unwrap();
    let run = |pairs: &str, causal: bool| {
        let mut c = bin();
        c.args([
            "translation-heads",
            "--pairs",
            pairs,
            "--limit",
            "6",
            "--quiet",
        ])
        .args([
            "--permutations",
            "200",
            "--bootstrap",
            "100",
            "--random-draws",
            "1",
        ])
        .arg("--out")
        .arg(out.path());
        if !causal {
            c.arg("--no-causal");
        }
        c.output().unwrap()
    };
    let o = run("en-fr", true);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("path patching skipped"), "{stderr}");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        md.contains("**Skipped** for too little data") && md.contains("needs 2 such pairs"),
        "{md}"
    );
    assert!(!md.contains("Incomplete"), "{md}");
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("en-fr/scores.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["complete"], true);
    assert_eq!(j["skipped"][0]["stage"], "path patching");
    assert_eq!(j["skipped"][0]["needs"], 2);
    // A direction with no data is a real error: the run fails.
    let o = run("qq-fr", false);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 of 1 directions failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn weights_flag_streams_a_quantised_file_to_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let f32_file = write_tiny_gguf(dir.path(), &Tiny::default(), 5);
    let model = requantised(
        &f32_file,
        dir.path(),
        candle_core::quantized::GgmlDType::Q8_0,
    );
    let run = |weights: &str| {
        let out = bin()
            .args([
                "run",
                " the cat",
                "--top-k",
                "5",
                "--weights",
                weights,
                "--model",
            ])
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{weights}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Everything but the first line, which says how long the forward took.
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let (dense, stream) = (run("f32"), run("stream"));
    assert_eq!(dense, stream, "stream must print what f32 prints");
    assert!(run("quantized").lines().count() >= 5);
    // --weights and the older --dtype are one choice: both at once is refused.
    let out = bin()
        .args([
            "run",
            " the cat",
            "--weights",
            "stream",
            "--dtype",
            "bf16",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_old_bench_subcommand_says_where_the_benchmark_went() {
    let out = bin().args(["bench", "--set", "weights"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cargo run --release --bin mechinterp-bench -- --set weights"),
        "{err}"
    );
}
