//! Timing helpers of the benchmark: one timed operation, repeats after a warm-up, and the
//! process's memory (from /proc).

use std::time::Instant;

use anyhow::Result;
use mechinterp::stats::median;
use serde_json::{json, Value};

/// One timed operation.
#[derive(Debug, Clone)]
pub struct Timing {
    /// JSON key, e.g. `forward`.
    pub name: String,
    /// Seconds of each repeat.
    pub seconds: Vec<f64>,
    /// Tokens processed per repeat.
    pub tokens: f64,
    /// FLOPs per repeat (as counted by `flops::forward_flops` and friends).
    pub flops: f64,
    /// Free-text note.
    pub note: String,
}

impl Timing {
    /// Median seconds.
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    /// Fastest repeat.
    pub fn min(&self) -> f64 {
        self.seconds.iter().cloned().fold(f64::INFINITY, f64::min)
    }

    /// Slowest repeat.
    pub fn max(&self) -> f64 {
        self.seconds.iter().cloned().fold(0.0, f64::max)
    }

    /// The JSON object for this operation.
    pub fn to_json(&self) -> Value {
        let m = self.median();
        json!({
            "median_s": m, "min_s": self.min(), "max_s": self.max(),
            "tokens_per_s": self.tokens / m, "gflops": self.flops / m / 1e9,
            "repeats": self.seconds.len(), "note": self.note,
        })
    }
}

/// This process's resident memory now and its high-water mark, in MB (from /proc/self/status).
pub struct Memory {
    /// VmRSS.
    pub rss_mb: u64,
    /// VmHWM: the most the process has held at once.
    pub peak_mb: u64,
}

impl Memory {
    /// Reads /proc/self/status (zeros where it cannot be read).
    pub fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_mb: kb("VmRSS:") / 1024,
            peak_mb: kb("VmHWM:") / 1024,
        }
    }
}

/// Seconds of each of `repeats` calls of `f`, after one warm-up call.
pub fn time<T>(repeats: usize, mut f: impl FnMut() -> mechinterp::Result<T>) -> Result<Vec<f64>> {
    f()?; // warm-up
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64());
    }
    Ok(v)
}
