//! `mechinterp sae dashboard`: feature dashboards for some latents of an SAE, from a pass over
//! a corpus, written as one offline HTML page (`DIR/dashboard.html`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mechinterp::corpus::{Corpus, Split};
use mechinterp::report::dashboard_html::write_dashboard_page;
use mechinterp::sae::dashboard::{dashboard, DashboardOptions};
use mechinterp::sae::Sae;

use mechinterp_cli::args::ModelArgs;

/// Arguments of `sae dashboard`.
#[derive(clap::Args)]
pub struct DashboardArgs {
    /// The SAE's folder (SAELens, Gemma Scope 2 or circuit-tracer files).
    #[arg(long)]
    sae: PathBuf,
    /// The latents to show, comma-separated (e.g. 12,40).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    features: Vec<usize>,
    /// The text to read, in order: a .txt file (one text per non-empty line), a .tsv file
    /// (every cell a text), a .jsonl file (each line's "text"), or a folder of them. Without
    /// it, the shipped corpus's held-out text (7 languages), shuffled with a fixed seed.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Read at most this many tokens (BOS not counted); 20 000 take about a minute on two
    /// cores with the default model (the forward pass up to the SAE's layer dominates).
    #[arg(long, default_value_t = 20_000)]
    tokens: usize,
    /// Top activating contexts per latent.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Tokens shown on each side of a context's maximum.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Boosted and suppressed output tokens per latent.
    #[arg(long, default_value_t = 10)]
    logits: usize,
    /// The model the SAE reads: `gemma3-270m` (the default model), `ollama:NAME[:TAG]`, a
    /// .gguf file, a folder with config.json and safetensors, or a Hugging Face repo id.
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    /// How to hold the model's weights (see `mechinterp run --help`).
    #[arg(long, value_parser = ["f32", "bf16", "f16", "stream", "quantized"])]
    weights: Option<String>,
    /// Do not prepend BOS to texts.
    #[arg(long)]
    no_bos: bool,
    /// The folder to write dashboard.html into (created if needed).
    #[arg(long)]
    out: PathBuf,
}

/// Loads the model and SAE, reads the corpus, and writes the page.
pub fn run(a: DashboardArgs, out: &mut impl Write) -> Result<()> {
    let corpus = match &a.corpus {
        Some(p) => Corpus::from_path(p)?,
        // Shuffled so that a token budget samples every language, not the first ones.
        None => Corpus::shipped(Split::HeldOut)?.shuffled(0),
    };
    // The model's own `--sae` would splice the SAE in, and the pass would then read its
    // reconstruction: here the SAE is only read, on the clean model.
    let model = ModelArgs {
        model: a.model.clone(),
        weights: a.weights.clone(),
        dtype: None,
        no_bos: a.no_bos,
        sae: Vec::new(),
        sae_error_term: false,
    }
    .load()?;
    let sae = Sae::load(&a.sae).with_context(|| format!("--sae {}", a.sae.display()))?;
    sae.check_fits(&model)
        .with_context(|| format!("--sae {}", a.sae.display()))?;
    let opts = DashboardOptions {
        n_top: a.top,
        window: a.window,
        n_logits: a.logits,
        max_tokens: Some(a.tokens),
        ..DashboardOptions::default()
    };
    let d = dashboard(&model, &sae, &a.features, corpus.texts(), &opts)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let page = a.out.join("dashboard.html");
    let title = format!(
        "SAE {} at {}: latents {}",
        a.sae.display(),
        sae.hook_name(),
        a.features
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    write_dashboard_page(&d, &title, &page)?;
    for x in &d.dashboards {
        writeln!(
            out,
            "latent {:>6}: density {:.4}%, max {:.3}, top token {:?}",
            x.latent,
            x.density * 100.0,
            x.max_act,
            x.boosted.first().map(|e| e.token.as_str()).unwrap_or("-")
        )?;
    }
    writeln!(
        out,
        "read {} tokens from {} texts; wrote {}",
        d.n_tokens,
        d.n_texts,
        page.display()
    )?;
    Ok(())
}
