//! Same-run ratios: our operations against each other and against the Python baselines, with
//! a check that both sides computed the same thing.

use anyhow::Result;
use mechinterp::model::HookedTransformer;
use serde_json::{json, Map, Value};

use crate::sets::CLEAN;
use crate::timing::Timing;

/// One side of a ratio: one of our timings, or one of the Python baseline's (JSON key).
#[derive(Clone, Copy)]
enum Side {
    Ours(&'static str),
    Theirs(&'static str),
}
use Side::{Ours, Theirs};

/// A ratio reported when both sides were timed: JSON key, text, numerator, denominator, target.
type Ratio = (&'static str, &'static str, Side, Side, &'static str);

/// Stands for [`sweep_target`]'s answer in [`RATIOS`].
const SWEEP_TARGET: &str = "(sweep)";

/// Every same-run ratio, in the report's order. The TransformerLens sweep's target is filled in
/// by [`sweep_target`]: it is stated against TransformerLens 3.9, not the 4.x bridge.
const RATIOS: &[Ratio] = &[
    (
        "forward_over_hf",
        "forward / HF transformers forward",
        Ours("forward"),
        Theirs("hf_forward"),
        "target <= 1",
    ),
    (
        "forward_over_tl",
        "forward / TransformerLens forward",
        Ours("forward"),
        Theirs("tl_forward"),
        "",
    ),
    (
        "run_with_cache_over_forward",
        "run_with_cache / forward",
        Ours("run_with_cache"),
        Ours("forward"),
        "target <= 1.3",
    ),
    (
        "run_with_cache_over_tl",
        "run_with_cache / TransformerLens run_with_cache",
        Ours("run_with_cache"),
        Theirs("tl_run_with_cache"),
        "",
    ),
    (
        "naive_sweep_over_sweep",
        "naive 72-head sweep / ours (speed-up)",
        Ours("head_patching_sweep_naive"),
        Ours("head_patching_sweep"),
        "",
    ),
    (
        "tl_sweep_over_sweep",
        "TransformerLens 72-head sweep / ours (speed-up)",
        Theirs("tl_head_patching_sweep"),
        Ours("head_patching_sweep"),
        SWEEP_TARGET,
    ),
    (
        "long_prompt_full_over_blocked",
        "2048-token prompt: full attention / blocked (speed-up)",
        Ours("long_prompt_blocks_full_attention"),
        Ours("long_prompt_blocks"),
        "",
    ),
    (
        "attribution_over_forward",
        "attribution patching / forward",
        Ours("attribution_patching"),
        Ours("forward"),
        "target <= 4",
    ),
    (
        "attribution_over_tl",
        "attribution patching / TransformerLens attribution",
        Ours("attribution_patching"),
        Theirs("tl_attribution_patching"),
        "",
    ),
];

/// The baseline's timings shown as they are, in this order.
const BASELINE_KEYS: &[&str] = &[
    "hf_forward",
    "tl_forward",
    "tl_run_with_cache",
    "tl_head_patching_sweep",
    "tl_attribution_patching",
];

/// Same-run ratios: ours against each other and, given the Python baselines' JSON, against
/// HF transformers and TransformerLens, with a check that both sides computed the same thing.
pub fn compare(
    model: &HookedTransformer,
    timings: &[Timing],
    baseline: Option<&Value>,
) -> Result<(String, Value)> {
    let (mut lines, mut j) = ratios(timings, baseline);
    let mut s = String::new();
    if let Some(baseline) = baseline {
        same_computation(model, baseline, &mut lines, &mut j)?;
        s.push_str(&baseline_section(baseline));
    }
    s.push_str("\nratios (same run):\n");
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    Ok((s, Value::Object(j)))
}

/// The ratios whose two sides were both timed, as report lines and JSON.
fn ratios(timings: &[Timing], baseline: Option<&Value>) -> (Vec<String>, Map<String, Value>) {
    let seconds = |side: Side| match side {
        Ours(k) => timings.iter().find(|t| t.name == k).map(Timing::median),
        Theirs(k) => baseline.and_then(|b| b[k]["median_s"].as_f64()),
    };
    let mut lines = Vec::new();
    let mut j = Map::new();
    for &(key, text, num, den, target) in RATIOS {
        let Some(r) = seconds(num).zip(seconds(den)).map(|(a, b)| a / b) else {
            continue;
        };
        let target = if target == SWEEP_TARGET {
            sweep_target(baseline)
        } else {
            target
        };
        lines.push(format!("{text:<60} {r:>7.2}   {target}"));
        j.insert(key.into(), json!(r));
    }
    (lines, j)
}

/// The sweep's speed-up target, which holds against TransformerLens 3.x only.
fn sweep_target(baseline: Option<&Value>) -> &'static str {
    let tl3 = baseline
        .and_then(|b| b["versions"]["transformer_lens"].as_str())
        .is_some_and(|v| v.starts_with("3."));
    if tl3 {
        "target >= 10"
    } else {
        "(target: >= 10 against TL 3.9)"
    }
}

/// Same tokens and same logits as HF transformers, or the comparison is void: adds what the
/// baseline lets us check to the report lines and JSON.
fn same_computation(
    model: &HookedTransformer,
    baseline: &Value,
    lines: &mut Vec<String>,
    j: &mut Map<String, Value>,
) -> Result<()> {
    let toks = model.to_tokens(CLEAN)?;
    let ids: Vec<u32> = toks.squeeze(0)?.to_vec1()?;
    let same_tokens = baseline["clean_ids"].as_array().map(|v| {
        v.iter()
            .map(|x| x.as_u64().unwrap_or(u64::MAX))
            .eq(ids.iter().map(|&i| i as u64))
    });
    let logits = model.forward(&toks)?;
    let last = logits.get(0)?.get(ids.len() - 1)?.to_vec1::<f32>()?;
    let max_diff = baseline["hf_last_top"].as_array().map(|top| {
        top.iter()
            .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
            .map(|(i, v)| (last.get(i).copied().unwrap_or(f32::NAN) as f64 - v).abs())
            .fold(0.0, f64::max)
    });
    if let Some(same) = same_tokens {
        lines.push(format!("same token ids as HF's tokenizer: {same}"));
        j.insert("same_tokens".into(), json!(same));
    }
    if let Some(d) = max_diff {
        lines.push(format!(
            "max |logit difference| vs HF at the last position (HF's top 10): {d:.2e}"
        ));
        j.insert("max_abs_logit_diff_vs_hf".into(), json!(d));
    }
    Ok(())
}

/// The baseline's versions and its own timings.
fn baseline_section(baseline: &Value) -> String {
    let mut s = format!(
        "\nSame-run baselines (Python {}, torch {}, transformers {}, TransformerLens {}, {} threads):\n",
        baseline["versions"]["python"].as_str().unwrap_or("?"),
        baseline["versions"]["torch"].as_str().unwrap_or("?"),
        baseline["versions"]["transformers"].as_str().unwrap_or("?"),
        baseline["versions"]["transformer_lens"].as_str().unwrap_or("not installed"),
        baseline["threads"]
    );
    for k in BASELINE_KEYS {
        if let Some(m) = baseline[*k]["median_s"].as_f64() {
            s.push_str(&format!("{k:<26} {m:>9.3} s\n"));
        }
    }
    if let Some(e) = baseline["tl_error"].as_str() {
        s.push_str(&format!("TransformerLens skipped: {e}\n"));
    }
    s
}
