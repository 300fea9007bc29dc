//! circuit-tracer 0.5.0 beside our attribution graphs: `scripts/circuit_tracer_bench.py`
//! (embedded, with `scripts/make_graph_fixture.py` it imports) run by `--baseline-python` on
//! the same token ids, transcoders and thread count, its JSON read back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

const BENCH_SCRIPT: &str = include_str!("../../../../scripts/circuit_tracer_bench.py");
const FIXTURE_SCRIPT: &str = include_str!("../../../../scripts/make_graph_fixture.py");

/// How circuit-tracer is run.
#[derive(Debug, Clone)]
pub struct CtBaseline {
    /// A Python with circuit-tracer 0.5.0 and nnsight (tests/fixtures/graph/README.md).
    pub python: PathBuf,
    /// The default model as a local HF folder with a transformers-4 config.
    pub hf_dir: PathBuf,
    /// circuit-tracer's `batch_size`.
    pub batch_size: usize,
}

/// Why `python` cannot run circuit-tracer's baseline, or None when it can.
pub fn why_not(python: &Path, hf_dir: &Path) -> Option<String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import circuit_tracer, nnsight, torch"])
        .output();
    match out {
        Err(e) => return Some(format!("cannot run {}: {e}", python.display())),
        Ok(o) if !o.status.success() => {
            let why = String::from_utf8_lossy(&o.stderr);
            return Some(format!(
                "{} cannot import circuit_tracer and nnsight ({}); see tests/fixtures/graph/README.md for its venv",
                python.display(),
                why.lines().last().unwrap_or("").trim()
            ));
        }
        Ok(_) => {}
    }
    if !hf_dir.join("config.json").is_file() {
        return Some(format!(
            "no HF model folder at {}; make it with scripts/make_graph_fixture.py --steps model, or pass --ct-hf-dir",
            hf_dir.display()
        ));
    }
    None
}

/// Runs circuit-tracer on each prompt's ids (BOS first) and returns its JSON.
pub fn run(b: &CtBaseline, transcoders: &Path, prompts: &[Vec<u32>]) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("mechinterp-bench-ct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("circuit_tracer_bench.py");
    let out = dir.join("circuit_tracer.json");
    std::fs::write(&script, BENCH_SCRIPT)
        .and_then(|_| std::fs::write(dir.join("make_graph_fixture.py"), FIXTURE_SCRIPT))
        .with_context(|| format!("writing the scripts into {}", dir.display()))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut cmd = std::process::Command::new(&b.python);
    cmd.arg(&script)
        .arg("--hf-dir")
        .arg(&b.hf_dir)
        .arg("--transcoders")
        .arg(transcoders)
        .args(["--threads", &threads.to_string()])
        .args(["--batch-size", &b.batch_size.to_string()])
        .arg("--out")
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        .stdout(std::process::Stdio::from(std::io::stderr()));
    for p in prompts {
        let ids: Vec<String> = p.iter().map(u32::to_string).collect();
        cmd.arg("--tokens").arg(ids.join(","));
    }
    let result = cmd
        .status()
        .with_context(|| format!("could not run {}", b.python.display()))
        .and_then(|status| {
            if !status.success() {
                bail!("circuit-tracer's baseline failed ({status}); its messages are above");
            }
            let text = std::fs::read_to_string(&out)
                .with_context(|| format!("reading {}", out.display()))?;
            serde_json::from_str::<Value>(&text).context("circuit-tracer's baseline wrote bad JSON")
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
