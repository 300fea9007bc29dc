//! The same-run Python baselines of `mechinterp-bench`: HF transformers and TransformerLens
//! timed by `scripts/bench_python.py` on the same GGUF, prompts and thread count.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::sets::{CLEAN, CORRUPT};

/// The Python companion script, embedded so that an installed binary can run it.
const PYTHON_SCRIPT: &str = include_str!("../../../../scripts/bench_python.py");

/// Options for the same-run Python baselines.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// A Python with torch, transformers and gguf (and optionally transformer_lens).
    pub python: std::path::PathBuf,
    /// The GGUF both sides load.
    pub gguf: std::path::PathBuf,
    /// Repeats per operation.
    pub repeats: usize,
    /// Skip TransformerLens's head sweep (72 forwards, over a minute).
    pub skip_sweep: bool,
}

/// Fails fast, before minutes of benchmarks, when `python` cannot run the baseline.
pub fn check_baseline_python(python: &std::path::Path) -> Result<()> {
    let out = std::process::Command::new(python)
        .args(["-c", "import torch, transformers, gguf"])
        .output()
        .with_context(|| {
            format!(
                "could not run {}; pass the path of a Python executable",
                python.display()
            )
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("").trim();
        bail!(
            "{} cannot import torch, transformers and gguf ({why}); create one with: \
             python3 -m venv VENV && VENV/bin/pip install torch transformers gguf \"transformer_lens>=3,<4\"",
            python.display()
        );
    }
    Ok(())
}

/// Runs `scripts/bench_python.py` (HF transformers and TransformerLens on the same GGUF,
/// prompts and thread count) and returns its JSON.
pub fn python_baseline(b: &Baseline) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("mechinterp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("bench_python.py");
    let out = dir.join("baseline.json");
    std::fs::write(&script, PYTHON_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut cmd = std::process::Command::new(&b.python);
    cmd.arg(&script)
        .arg("--gguf")
        .arg(&b.gguf)
        .args(["--clean", CLEAN, "--corrupt", CORRUPT])
        .args(["--repeats", &b.repeats.to_string()])
        .args(["--threads", &threads.to_string()])
        .arg("--out")
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        // TransformerLens prints to stdout; keep ours for the report.
        .stdout(std::process::Stdio::from(std::io::stderr()));
    if b.skip_sweep {
        cmd.arg("--skip-sweep");
    }
    let result = cmd
        .status()
        .with_context(|| {
            format!(
                "could not run {}; pass a Python that has torch, transformers and gguf",
                b.python.display()
            )
        })
        .and_then(|status| {
            if !status.success() {
                bail!("the Python baseline failed ({status}); its messages are above");
            }
            let text = std::fs::read_to_string(&out)
                .with_context(|| format!("reading {}", out.display()))?;
            serde_json::from_str::<Value>(&text).context("the Python baseline wrote bad JSON")
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
