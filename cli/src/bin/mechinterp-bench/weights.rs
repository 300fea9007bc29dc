//! `mechinterp-bench --compare-weights f32,stream,quantized`: the same GGUF file held each way,
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
use mechinterp::table::Table;
use mechinterp::translation::{
    load_pairs, prompt, score_heads, shipped_data_dir, ScoreOptions, SentencePair,
};
use serde_json::{json, Value};

use mechinterp_cli::args::write_json;

use crate::sets::{Set, CLEAN, CORRUPT};
use crate::Args;

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
    let set = match a.set {
        Set::Scale => "scale",
        _ => "weights",
    };
    let rows = run_modes(a, set)?;
    write!(out, "{}", modes_table(&rows))?;
    let mut result = json!({ "modes": rows.iter().cloned().collect::<serde_json::Map<_, _>>() });
    // Deviation on real prompts means something only for a trained model.
    if a.compare_weights.iter().any(|x| x == "f32") && set == "weights" {
        result["deviation_from_f32"] = deviation_section(a, out)?;
    }
    write_json(&a.json, &result)
}

/// Runs this benchmark once per mode, each in its own process, and reads back each one's JSON
/// (or why it failed).
fn run_modes(a: &Args, set: &str) -> Result<Vec<(String, Value)>> {
    let exe = std::env::current_exe().context("finding this program to re-run it")?;
    let dir = tempfile_dir()?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for mode in &a.compare_weights {
        let json = dir.join(format!("{mode}.json"));
        eprintln!("== {mode} ==");
        let status = Command::new(&exe)
            .args(["--set", set, "--model", &a.model.model])
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
    Ok(rows)
}

/// One row per mode: load time, memory, and the median of each operation in [`OPS`].
fn modes_table(rows: &[(String, Value)]) -> String {
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
    for (mode, j) in rows {
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
    table
}

/// Loads the model as f32 and as each approximate mode asked for, prints how far each is from
/// f32 on real prompts, and returns the same as JSON.
fn deviation_section(a: &Args, out: &mut impl Write) -> Result<Value> {
    let pairs = load_pairs(shipped_data_dir(), "en", "fr")?;
    let pairs: Vec<SentencePair> = pairs.into_iter().take(a.pairs.max(1)).collect();
    let load = |mode: WeightMode| {
        HookedTransformer::from_spec(
            &a.model.model,
            &LoadOptions {
                weights: mode,
                ..Default::default()
            },
        )
    };
    let reference = load(WeightMode::Dense)?;
    let mut others = Vec::new();
    for (name, mode) in [
        ("stream", WeightMode::Stream),
        ("quantized", WeightMode::Quantized),
    ] {
        if a.compare_weights.iter().any(|x| x == name) {
            others.push((name, load(mode)?));
        }
    }
    let mut dev = serde_json::Map::new();
    for (name, text, j) in deviations(&reference, &others, &pairs)? {
        writeln!(out, "\n{name} against f32:\n{text}")?;
        dev.insert(name.into(), j);
    }
    out.flush()?;
    Ok(Value::Object(dev))
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("mechinterp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// One model's logits against the reference's: worst |Δ|, worst relative |Δ|, agreeing arg-maxes.
type LogitDeviation = (f32, f32, usize);

/// Logits at every position of every translation prompt: per model of `others`, the worst
/// |Δ| from `reference`, the worst relative to the prompt's largest |logit|, and the positions
/// whose arg-max agrees; and how many positions there were.
fn logit_deviation(
    reference: &HookedTransformer,
    others: &[(&'static str, HookedTransformer)],
    pairs: &[SentencePair],
) -> Result<(Vec<LogitDeviation>, usize)> {
    let mut logit_dev = vec![(0f32, 0f32, 0usize); others.len()];
    let mut positions = 0usize;
    for p in pairs {
        let ids = reference.to_tokens(&prompt("en", "fr", p))?;
        let a = reference.forward(&ids)?.squeeze(0)?;
        let range = a.abs()?.max_all()?.to_scalar::<f32>()?;
        let ta: Vec<u32> = a.argmax(1)?.to_vec1()?;
        positions += ta.len();
        for ((_, m), (worst, worst_rel, agree)) in others.iter().zip(logit_dev.iter_mut()) {
            let b = m.forward(&ids)?.squeeze(0)?;
            let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            *worst = worst.max(d);
            *worst_rel = worst_rel.max(d / range.max(1e-6));
            let tb: Vec<u32> = b.argmax(1)?.to_vec1()?;
            *agree += ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
        }
    }
    Ok((logit_dev, positions))
}

/// How far each of `others` is from `reference`: logits on every translation prompt, the
/// head-patching table of the benchmark's pair, and the translation-head ranking. The
/// reference runs once for all of them.
fn deviations(
    reference: &HookedTransformer,
    others: &[(&'static str, HookedTransformer)],
    pairs: &[SentencePair],
) -> Result<Vec<(&'static str, String, Value)>> {
    let (logit_dev, positions) = logit_deviation(reference, others, pairs)?;
    // The 72-head activation-patching table, raw and normalized.
    let patching = |m: &HookedTransformer| -> Result<(Table, Table)> {
        let metric = LogitDiff::from_strs(m, " Mary", " John")?;
        let p = Patcher::new(m, CLEAN, CORRUPT, metric)?.quiet(true);
        let r = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
        let normalized = r.normalized();
        Ok((r.table, normalized))
    };
    // The translation-head ranking (translation − random score of every head).
    let opts = ScoreOptions {
        quiet: true,
        ..Default::default()
    };
    let ranking = |m: &HookedTransformer| score_heads(m, pairs, "en", "fr", &opts).map(|s| s.diff);
    let shared = |a: &Table, b: &Table, k: usize| {
        let top = |t: &Table| t.top_k(k).into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        let tb = top(b);
        top(a).iter().filter(|i| tb.contains(i)).count()
    };
    let (ra, na) = patching(reference)?;
    let sa = ranking(reference)?;
    let n = pairs.len();
    let mut out = Vec::new();
    for ((name, m), (worst, worst_rel, agree)) in others.iter().zip(logit_dev) {
        let top1 = agree as f64 / positions.max(1) as f64;
        let (rb, nb) = patching(m)?;
        let patch_r = pearson(&ra.values, &rb.values);
        let patch_max = na
            .values
            .iter()
            .zip(&nb.values)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let patch_top = shared(&na.map(f32::abs), &nb.map(f32::abs), 5);
        let sb = ranking(m)?;
        let rho = spearman(&sa.values, &sb.values);
        let heads_top = shared(&sa, &sb, 10);
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
        out.push((*name, text, j));
    }
    Ok(out)
}
