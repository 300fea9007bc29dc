//! The timed operations of `mechinterp bench`, with honest FLOP counts: the plain forward,
//! caching, patching, attribution, generation and translation scoring, against this machine's
//! matmul peak measured with the same kernel; the process's memory (from /proc); and the
//! same-run ratios against the Python baselines.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use mechinterp::hooks::{HookContext, HookPoint, Hooks, Intervention};
use mechinterp::metrics::LogitDiff;
use mechinterp::model::{Config, GenerateOptions, HookedTransformer};
use mechinterp::patching::{Direction, PatchTarget, Patcher};
use mechinterp::stats::median;
use mechinterp::translation::{prompt, score_heads, ScoreOptions, SentencePair};
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
    /// FLOPs per repeat (as counted by [`forward_flops`] and friends).
    pub flops: f64,
    /// Free-text note.
    pub note: String,
}

impl Timing {
    /// Median seconds.
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    fn min(&self) -> f64 {
        self.seconds.iter().cloned().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
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
fn time<T>(repeats: usize, mut f: impl FnMut() -> mechinterp::Result<T>) -> Result<Vec<f64>> {
    f()?; // warm-up
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64());
    }
    Ok(v)
}

/// FLOPs of the blocks from layer `from` on, for `rows` sequences of `s` tokens.
pub fn block_flops(cfg: &Config, s: usize, rows: usize, from: usize) -> f64 {
    let (d, n, k, h, m) = (
        cfg.d_model as f64,
        cfg.n_heads as f64,
        cfg.n_kv_heads as f64,
        cfg.d_head as f64,
        cfg.d_mlp as f64,
    );
    let s = s as f64;
    let proj = 2.0 * d * (n * h + 2.0 * k * h) + 2.0 * n * h * d;
    let attn = 2.0 * 2.0 * n * h * s; // scores and weighted values, full s × s
    let mlp = 3.0 * 2.0 * d * m;
    (cfg.n_layers - from.min(cfg.n_layers)) as f64 * rows as f64 * s * (proj + attn + mlp)
}

/// FLOPs of a forward pass with logits at `logit_positions` positions per row.
pub fn forward_flops(cfg: &Config, s: usize, rows: usize, logit_positions: usize) -> f64 {
    block_flops(cfg, s, rows, 0)
        + rows as f64 * logit_positions as f64 * 2.0 * cfg.d_model as f64 * cfg.d_vocab as f64
}

/// This machine's sgemm rate (GFLOP/s) with candle's matmul, on the model's largest shapes.
pub fn sgemm_peak(repeats: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (512, 640), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (640, 2048), &dev)?;
    let c = Tensor::randn(0f32, 1.0, (2048, 640), &dev)?;
    let t = time(repeats, || {
        Ok((a.matmul(&b)?.matmul(&c)?).sum_all()?.to_scalar::<f32>()?)
    })?;
    let flops = 2.0 * 512.0 * 640.0 * 2048.0 * 2.0;
    let best = t.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(flops / best / 1e9)
}

/// The benchmark's prompt pair (40 tokens each on the default model's tokenizer).
pub const CLEAN: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to their small house by the quiet river, John gave a warm drink to";
/// The corrupted prompt.
pub const CORRUPT: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to their small house by the quiet river, Mary gave a warm drink to";

/// Which operations to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Set {
    /// Everything.
    Full,
    /// What differs between ways of holding the weights: the forward, the 72-head sweep,
    /// attribution and translation scores.
    Weights,
    /// For big models: the forward and translation scores only (use `--pairs` to time a few
    /// pairs and scale to 100).
    Scale,
}

/// Runs the benchmarks; `pairs` are the sentence pairs for translation scoring, of which
/// `n_pairs` are run (the time is reported for 100, scaled when fewer were run).
pub fn run(
    model: &HookedTransformer,
    repeats: usize,
    pairs: &[SentencePair],
    set: Set,
    n_pairs: usize,
) -> Result<(Vec<Timing>, f64)> {
    let cfg = model.cfg().clone();
    let toks = model.to_tokens(CLEAN)?;
    // The prompt is 40 tokens with the default model's tokenizer; another tokenizer may cut it
    // finer, so the scale set times its first 40 tokens.
    let toks = match set {
        Set::Scale => toks.narrow(1, 0, toks.dim(1)?.min(40))?,
        _ => toks,
    };
    let s = toks.dim(1)?;
    let mut out = Vec::new();
    let peak = sgemm_peak(repeats.max(5))?;
    let secs = time(repeats, || model.forward(&toks))?;
    out.push(Timing {
        name: "forward".into(),
        seconds: secs,
        tokens: s as f64,
        flops: forward_flops(&cfg, s, 1, s),
        note: format!("{s} tokens, logits at every position"),
    });
    if set == Set::Full {
        cache_and_patch(model, repeats, &toks, &mut out)?;
    }
    if set != Set::Scale {
        let metric = LogitDiff::from_strs(model, " Mary", " John")?;
        let p = Patcher::new(model, CLEAN, CORRUPT, metric)?.quiet(true);
        head_sweep(model, &p, repeats, &mut out)?;
        if set == Set::Full {
            naive_sweep(model, &mut out)?;
        }
        let secs = time(repeats.clamp(1, 3), || p.attribution(Direction::Denoise))?;
        out.push(Timing {
            name: "attribution_patching".into(),
            seconds: secs,
            tokens: s as f64,
            flops: 3.0 * forward_flops(&cfg, s, 1, 1),
            note: "one forward + backward on the corrupted run".into(),
        });
    }
    if set == Set::Full {
        long_prompt(model, repeats, &mut out)?;
    }
    if set != Set::Scale {
        let rows: &[usize] = if set == Set::Full { &[1, 4] } else { &[1] };
        generation(model, repeats, s, rows, &mut out)?;
    }
    translation(model, repeats, pairs, n_pairs, &mut out)?;
    Ok((out, peak))
}

/// `run_with_cache` and a forward with one head zeroed, over the prompt.
fn cache_and_patch(
    model: &HookedTransformer,
    repeats: usize,
    toks: &Tensor,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let s = toks.dim(1)?;
    let whole_prompt = |name: &str, seconds: Vec<f64>, note: String| Timing {
        name: name.into(),
        seconds,
        tokens: s as f64,
        flops: forward_flops(cfg, s, 1, s),
        note,
    };
    let secs = time(repeats, || model.run_with_cache(toks))?;
    out.push(whole_prompt(
        "run_with_cache",
        secs,
        "every hook point, hook_result included".into(),
    ));
    let patched = model
        .with_hooks(&Hooks::new().intervene("blocks.9.attn.hook_z", Intervention::ZeroHead(1))?);
    let secs = time(repeats, || patched.forward(toks))?;
    out.push(whole_prompt(
        "patched_forward",
        secs,
        "one hook_z replacement, full forward".into(),
    ));
    Ok(())
}

/// Activation patching of every head's output.
fn head_sweep(
    model: &HookedTransformer,
    p: &Patcher,
    repeats: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let s = model.to_tokens(CLEAN)?.dim(1)?;
    let secs = time(repeats.clamp(1, 3), || {
        p.activation(PatchTarget::HeadOut, Direction::Denoise)
    })?;
    let sweep_flops: f64 = (0..cfg.n_layers)
        .map(|l| {
            block_flops(cfg, s, cfg.n_heads, l)
                + cfg.n_heads as f64 * 2.0 * (cfg.d_model * cfg.d_vocab) as f64
        })
        .sum();
    out.push(Timing {
        name: "head_patching_sweep".into(),
        seconds: secs,
        tokens: (cfg.n_layers * cfg.n_heads * s) as f64,
        flops: sweep_flops,
        note: format!(
            "{} heads, denoising, in waves from the cached residuals, last-position logits",
            cfg.n_layers * cfg.n_heads
        ),
    });
    Ok(())
}

/// The same sweep done the naive way, for the before/after ratio: one full forward per head
/// with logits at every position, from the clean run's own cache.
fn naive_sweep(model: &HookedTransformer, out: &mut Vec<Timing>) -> Result<()> {
    let cfg = model.cfg();
    let toks = model.to_tokens(CLEAN)?;
    let s = toks.dim(1)?;
    let (_, clean_cache) = model.run_with_cache(&toks)?;
    let corrupt = model.to_tokens(CORRUPT)?;
    let secs = time(1, || {
        for l in 0..cfg.n_layers {
            let src = clean_cache.get(&HookPoint::Z(l).name())?;
            for h in 0..cfg.n_heads {
                let src = src.clone();
                let hook = move |x: &Tensor, _: &HookContext| -> mechinterp::Result<Tensor> {
                    let n = x.dim(2)?;
                    let on: Vec<u8> = (0..n).map(|i| u8::from(i == h)).collect();
                    let mask = Tensor::from_vec(on, (1, 1, n, 1), x.device())?;
                    let src = src.to_dtype(x.dtype())?.broadcast_as(x.shape())?;
                    Ok(mask.broadcast_as(x.shape())?.where_cond(&src, x)?)
                };
                model
                    .with_hooks(&Hooks::new().add_point(HookPoint::Z(l), hook))
                    .forward(&corrupt)?;
            }
        }
        Ok(())
    })?;
    out.push(Timing {
        name: "head_patching_sweep_naive".into(),
        seconds: secs,
        tokens: (cfg.n_layers * cfg.n_heads * s) as f64,
        flops: (cfg.n_layers * cfg.n_heads) as f64 * forward_flops(cfg, s, 1, s),
        note: "the same sweep as 72 separate full forwards with all logits (the before)".into(),
    });
    Ok(())
}

/// A long prompt, activations only: attention in query blocks that skip the keys they cannot
/// see (the default) against the full s × s computation (forced by caching patterns).
fn long_prompt(model: &HookedTransformer, repeats: usize, out: &mut Vec<Timing>) -> Result<()> {
    let cfg = model.cfg();
    let s = model.to_tokens(CLEAN)?.dim(1)?;
    let long_s = 2048.min(cfg.max_position);
    // BOS appears once, so each copy adds s - 1 tokens (and a little slack for the joins).
    let long_text = std::iter::repeat_n(CLEAN, long_s / s.saturating_sub(1).max(1) + 4)
        .collect::<Vec<_>>()
        .join(" ");
    let long = model.to_tokens(&long_text)?.narrow(1, 0, long_s)?;
    for (name, full) in [
        ("long_prompt_blocks", false),
        ("long_prompt_blocks_full_attention", true),
    ] {
        let secs = time(repeats.clamp(1, 2), || {
            model.cache_activations(&long, |n: &str| full && n.ends_with("hook_pattern"))
        })?;
        out.push(Timing {
            name: name.into(),
            seconds: secs,
            tokens: long_s as f64,
            flops: block_flops(cfg, long_s, 1, 0),
            note: if full {
                format!("{long_s} tokens, no logits, full s × s attention (the before)")
            } else {
                format!("{long_s} tokens, no logits, blocked attention (FLOPs counted as full)")
            },
        });
    }
    Ok(())
}

/// Generation with the KV cache: 32 greedy tokens after the `s`-token prompt, for each batch
/// size in `batch_rows`.
fn generation(
    model: &HookedTransformer,
    repeats: usize,
    s: usize,
    batch_rows: &[usize],
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let n_new = 32;
    let gen = GenerateOptions {
        stop_at_eos: false,
        ..GenerateOptions::greedy(n_new)
    };
    // Per new token: the blocks at one position and one row of logits (the attention over the
    // cached keys, and the prefill, are left out: a lower bound).
    let decode_flops = |rows: usize| (rows * n_new) as f64 * forward_flops(cfg, 1, 1, 1);
    for &rows in batch_rows {
        let prompts = vec![CLEAN; rows];
        let secs = time(repeats.clamp(1, 3), || model.generate_batch(&prompts, &gen))?;
        out.push(Timing {
            name: format!("generate_{rows}x{n_new}"),
            seconds: secs,
            tokens: (rows * n_new) as f64,
            flops: decode_flops(rows),
            note: format!(
                "{rows} row(s) × {n_new} greedy tokens after the {s}-token prompt, KV cache (prefill included)"
            ),
        });
    }
    Ok(())
}

/// Translation and random-control scores of every head over `n_pairs` EN→FR pairs, reported
/// per 100 pairs.
fn translation(
    model: &HookedTransformer,
    repeats: usize,
    pairs: &[SentencePair],
    n_pairs: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let pairs: Vec<SentencePair> = pairs.iter().take(n_pairs.max(1)).cloned().collect();
    let opts = ScoreOptions {
        quiet: true,
        ..Default::default()
    };
    let ntok: usize = pairs
        .iter()
        .map(|p| {
            model
                .to_tokens(&prompt("en", "fr", p))
                .map(|t| t.dim(1).unwrap_or(0))
        })
        .sum::<mechinterp::Result<usize>>()?;
    let n = pairs.len();
    let scale = 100.0 / n as f64;
    let secs = time(repeats.clamp(1, 3), || {
        score_heads(model, &pairs, "en", "fr", &opts)
    })?;
    let avg = ntok / n;
    out.push(Timing {
        name: "translation_scores".into(),
        seconds: secs.iter().map(|t| t * scale).collect(),
        tokens: 2.0 * ntok as f64 * scale,
        flops: 2.0 * block_flops(cfg, avg, 100, 0),
        note: if n >= 100 {
            format!("{n} pairs: translation and random prompts, patterns only (no logits)")
        } else {
            format!("100 pairs, scaled from {n} timed: translation and random prompts, patterns only (no logits)")
        },
    });
    Ok(())
}

/// The report: a table and JSON.
pub fn report(timings: &[Timing], peak: f64) -> (String, Value) {
    let mut s = format!("sgemm peak (candle matmul, this machine): {peak:.1} GFLOP/s\n\n{:<34} {:>9} {:>9} {:>9} {:>11} {:>9} {:>7}\n", "operation", "median s", "min s", "max s", "tokens/s", "GFLOP/s", "% peak");
    let mut j = serde_json::Map::new();
    for t in timings {
        let m = t.median();
        let g = t.flops / m / 1e9;
        s.push_str(&format!(
            "{:<34} {:>9.3} {:>9.3} {:>9.3} {:>11.0} {:>9.1} {:>6.0}%\n",
            t.name,
            m,
            t.min(),
            t.max(),
            t.tokens / m,
            g,
            100.0 * g / peak
        ));
        j.insert(t.name.clone(), t.to_json());
    }
    j.insert("sgemm_peak_gflops".into(), json!(peak));
    (s, Value::Object(j))
}

/// Same-run ratios: ours against each other and, given the Python baselines' JSON, against
/// HF transformers and TransformerLens, with a check that both sides computed the same thing.
pub fn compare(
    model: &HookedTransformer,
    timings: &[Timing],
    baseline: Option<&Value>,
) -> Result<(String, Value)> {
    let ours = |k: &str| timings.iter().find(|t| t.name == k).map(Timing::median);
    let theirs = |k: &str| baseline.and_then(|b| b[k]["median_s"].as_f64());
    let mut lines = Vec::new();
    let mut j = serde_json::Map::new();
    let mut ratio = |key: &str, text: String, r: Option<f64>, target: &str| {
        if let Some(r) = r {
            lines.push(format!("{text:<60} {r:>7.2}   {target}"));
            j.insert(key.into(), json!(r));
        }
    };
    let div = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let fwd = ours("forward");
    ratio(
        "forward_over_hf",
        "forward / HF transformers forward".into(),
        div(fwd, theirs("hf_forward")),
        "target <= 1",
    );
    ratio(
        "forward_over_tl",
        "forward / TransformerLens forward".into(),
        div(fwd, theirs("tl_forward")),
        "",
    );
    ratio(
        "run_with_cache_over_forward",
        "run_with_cache / forward".into(),
        div(ours("run_with_cache"), fwd),
        "target <= 1.3",
    );
    ratio(
        "run_with_cache_over_tl",
        "run_with_cache / TransformerLens run_with_cache".into(),
        div(ours("run_with_cache"), theirs("tl_run_with_cache")),
        "",
    );
    ratio(
        "naive_sweep_over_sweep",
        "naive 72-head sweep / ours (speed-up)".into(),
        div(
            ours("head_patching_sweep_naive"),
            ours("head_patching_sweep"),
        ),
        "",
    );
    // The sweep target is stated against TransformerLens 3.9, not the 4.x bridge.
    let tl3 = baseline
        .and_then(|b| b["versions"]["transformer_lens"].as_str())
        .is_some_and(|v| v.starts_with("3."));
    ratio(
        "tl_sweep_over_sweep",
        "TransformerLens 72-head sweep / ours (speed-up)".into(),
        div(
            theirs("tl_head_patching_sweep"),
            ours("head_patching_sweep"),
        ),
        if tl3 {
            "target >= 10"
        } else {
            "(target: >= 10 against TL 3.9)"
        },
    );
    ratio(
        "long_prompt_full_over_blocked",
        "2048-token prompt: full attention / blocked (speed-up)".into(),
        div(
            ours("long_prompt_blocks_full_attention"),
            ours("long_prompt_blocks"),
        ),
        "",
    );
    ratio(
        "attribution_over_forward",
        "attribution patching / forward".into(),
        div(ours("attribution_patching"), fwd),
        "target <= 4",
    );
    ratio(
        "attribution_over_tl",
        "attribution patching / TransformerLens attribution".into(),
        div(
            ours("attribution_patching"),
            theirs("tl_attribution_patching"),
        ),
        "",
    );

    let mut s = String::new();
    let Some(baseline) = baseline else {
        s.push_str("\nratios (same run):\n");
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
        return Ok((s, Value::Object(j)));
    };
    // Same tokens and same logits, or the comparison is void.
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
    s.push_str(&format!(
        "\nSame-run baselines (Python {}, torch {}, transformers {}, TransformerLens {}, {} threads):\n",
        baseline["versions"]["python"].as_str().unwrap_or("?"),
        baseline["versions"]["torch"].as_str().unwrap_or("?"),
        baseline["versions"]["transformers"].as_str().unwrap_or("?"),
        baseline["versions"]["transformer_lens"].as_str().unwrap_or("not installed"),
        baseline["threads"]
    ));
    for k in [
        "hf_forward",
        "tl_forward",
        "tl_run_with_cache",
        "tl_head_patching_sweep",
        "tl_attribution_patching",
    ] {
        if let Some(m) = theirs(k) {
            s.push_str(&format!("{k:<26} {m:>9.3} s\n"));
        }
    }
    if let Some(e) = baseline["tl_error"].as_str() {
        s.push_str(&format!("TransformerLens skipped: {e}\n"));
    }
    s.push_str("\nratios (same run):\n");
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    Ok((s, Value::Object(j)))
}
