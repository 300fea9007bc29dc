//! `mechinterp bench --compare-weights f32,stream,quantized`: the same GGUF file held each way,
//! each benchmarked in its own process (so that each peak RSS is its own), then the
//! approximate modes' deviation from the f32 run on real prompts: logits, the 72-head
//! patching table and the translation-head ranking.

use std::io::Write;
use std::process::Command;

use anyhow::{bail, Context, Result};
use mechinterp::metrics::LogitDiff;
use mechinterp::model::{HookedTransformer, LoadOptions, WeightMode};
use mechinterp::patching::{Direction, PatchTarget, Patcher};
use mechinterp::stats::{pearson, spearman};
use mechinterp::translation::{
    load_pairs, prompt, score_heads, shipped_data_dir, ScoreOptions, SentencePair,
};
use serde_json::{json, Value};

use super::harness::{CLEAN, CORRUPT};
use super::Args;
use crate::args::write_json;

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

/// The operations compared across modes (JSON keys of the `weights` set).
const OPS: &[&str] = &[
    "forward",
    "head_patching_sweep",
    "attribution_patching",
    "generate_1x32",
    "translation_scores",
];

/// Benchmarks each mode in a child process, prints one table, then the deviations.
pub fn compare(a: &Args, out: &mut impl Write) -> Result<()> {
    for m in &a.compare_weights {
        if !["f32", "bf16", "stream", "quantized"].contains(&m.as_str()) {
            bail!("--compare-weights takes f32, bf16, stream and quantized; got `{m}`");
        }
    }
    let exe = std::env::current_exe().context("finding this program to re-run it")?;
    let set = match a.set {
        super::harness::Set::Scale => "scale",
        _ => "weights",
    };
    let dir = tempfile_dir()?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for mode in &a.compare_weights {
        let json = dir.join(format!("{mode}.json"));
        eprintln!("== {mode} ==");
        let status = Command::new(&exe)
            .args(["bench", "--set", set, "--model", &a.model.model])
            .args(["--weights", mode, "--repeats", &a.repeats.to_string()])
            .args(["--pairs", &a.pairs.to_string()])
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::inherit())
            .status()
            .with_context(|| format!("running the {mode} benchmark"))?;
        if !status.success() {
            // A mode that does not fit in memory is killed: say so and go on with the others.
            eprintln!("the {mode} benchmark failed ({status}); left out of the table");
            rows.push((mode.clone(), json!({ "failed": status.to_string() })));
            continue;
        }
        let text = std::fs::read_to_string(&json)?;
        rows.push((mode.clone(), serde_json::from_str(&text)?));
    }
    let mut table = format!(
        "\n{:<10} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "weights",
        "load s",
        "held MB",
        "RSS MB",
        "peak MB",
        "forward",
        "72-head",
        "attrib.",
        "gen 32",
        "transl."
    );
    for (mode, j) in &rows {
        if j.get("failed").is_some() {
            table.push_str(&format!("{mode:<10} failed: {}\n", j["failed"]));
            continue;
        }
        let num = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
        table.push_str(&format!(
            "{mode:<10} {:>8.2} {:>9.0} {:>10.0} {:>10.0}",
            num("load_s"),
            num("weight_mb"),
            num("rss_after_load_mb"),
            num("peak_rss_mb")
        ));
        for op in OPS {
            table.push_str(&format!(
                " {:>10.3}",
                j[*op]["median_s"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        table.push('\n');
    }
    table.push_str("(seconds, medians; RSS after load and peak over the run; translation scores per 100 pairs)\n");
    write!(out, "{table}")?;
    let mut result = json!({ "modes": rows.iter().cloned().collect::<serde_json::Map<_, _>>() });
    let has = |m: &str| a.compare_weights.iter().any(|x| x == m);
    // Deviation on real prompts means something only for a trained model.
    if has("f32") && set == "weights" {
        let pairs = load_pairs(shipped_data_dir(), "en", "fr")?;
        let pairs: Vec<SentencePair> = pairs.into_iter().take(a.pairs.max(1)).collect();
        let load = |mode: WeightMode| {
            HookedTransformer::from_spec_with(
                &a.model.model,
                &LoadOptions {
                    weights: mode,
                    ..Default::default()
                },
            )
        };
        let reference = load(WeightMode::Dense)?;
        let mut dev = serde_json::Map::new();
        for (name, mode) in [
            ("stream", WeightMode::Stream),
            ("quantized", WeightMode::Quantized),
        ] {
            if !has(name) {
                continue;
            }
            let other = load(mode)?;
            let (text, j) = deviation(&reference, &other, &pairs)?;
            writeln!(out, "\n{name} against f32:\n{text}")?;
            out.flush()?;
            dev.insert(name.into(), j);
        }
        result["deviation_from_f32"] = Value::Object(dev);
    }
    write_json(&a.json, &result)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("mechinterp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// How far `other` is from `reference`: logits on every translation prompt, the head-patching
/// table of the benchmark's pair, and the translation-head ranking.
fn deviation(
    reference: &HookedTransformer,
    other: &HookedTransformer,
    pairs: &[SentencePair],
) -> Result<(String, Value)> {
    // Logits at every position of every prompt.
    let (mut worst, mut agree, mut positions) = (0f32, 0usize, 0usize);
    let mut worst_rel = 0f32;
    for p in pairs {
        let ids = reference.to_tokens(&prompt("en", "fr", p))?;
        let a = reference.forward(&ids)?.squeeze(0)?;
        let b = other.forward(&ids)?.squeeze(0)?;
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let range = a.abs()?.max_all()?.to_scalar::<f32>()?;
        worst = worst.max(d);
        worst_rel = worst_rel.max(d / range.max(1e-6));
        let ta: Vec<u32> = a.argmax(1)?.to_vec1()?;
        let tb: Vec<u32> = b.argmax(1)?.to_vec1()?;
        agree += ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
        positions += ta.len();
    }
    let top1 = agree as f64 / positions.max(1) as f64;

    // The 72-head activation-patching table.
    let table = |m: &HookedTransformer| -> Result<(Vec<f32>, Vec<f32>)> {
        let metric = LogitDiff::from_strs(m, " Mary", " John")?;
        let p = Patcher::new(m, CLEAN, CORRUPT, metric)?.quiet(true);
        let r = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
        Ok((r.table.values.clone(), r.normalized().values))
    };
    let (ra, na) = table(reference)?;
    let (rb, nb) = table(other)?;
    let patch_r = pearson(&ra, &rb);
    let patch_max = na
        .iter()
        .zip(&nb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let top = |v: &[f32], k: usize| -> Vec<usize> {
        let mut i: Vec<usize> = (0..v.len()).collect();
        i.sort_by(|&x, &y| v[y].abs().total_cmp(&v[x].abs()));
        i.truncate(k);
        i
    };
    let overlap = |a: &[usize], b: &[usize]| a.iter().filter(|x| b.contains(x)).count();
    let patch_top = overlap(&top(&na, 5), &top(&nb, 5));

    // The translation-head ranking (translation − random score of every head).
    let opts = ScoreOptions {
        quiet: true,
        ..Default::default()
    };
    let sa = score_heads(reference, pairs, "en", "fr", &opts)?
        .diff
        .values;
    let sb = score_heads(other, pairs, "en", "fr", &opts)?.diff.values;
    let rho = spearman(&sa, &sb);
    let rank_top = |v: &[f32]| -> Vec<usize> {
        let mut i: Vec<usize> = (0..v.len()).collect();
        i.sort_by(|&x, &y| v[y].total_cmp(&v[x]));
        i.truncate(10);
        i
    };
    let heads_top = overlap(&rank_top(&sa), &rank_top(&sb));
    let n = pairs.len();
    let text = format!(
        "  logits over {n} EN→FR prompts ({positions} positions): max |Δlogit| {worst:.3} ({:.1}% of the largest |logit| of its prompt), top-1 agreement {:.2}%\n  72-head patching table: Pearson {patch_r:.4}, max |Δ normalized| {patch_max:.3}, top-5 heads shared {patch_top}/5\n  translation-head ranking ({n} pairs): Spearman {rho:.4}, top-10 heads shared {heads_top}/10\n",
        100.0 * worst_rel,
        100.0 * top1
    );
    let j = json!({
        "pairs": n, "positions": positions, "max_abs_logit_diff": worst,
        "max_rel_logit_diff": worst_rel, "top1_agreement": top1,
        "patching_pearson": patch_r, "patching_max_abs_normalized_diff": patch_max,
        "patching_top5_shared": patch_top,
        "translation_spearman": rho, "translation_top10_shared": heads_top,
    });
    Ok((text, j))
}
