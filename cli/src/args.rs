//! Arguments shared by several subcommands: which model to load, a clean / corrupted prompt
//! pair, and where to write JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use mechinterp::prelude::*;

/// Which model to load, and how.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// `gemma3-270m` (the default model), `ollama:NAME[:TAG]`, a .gguf file (llama.cpp, LM
    /// Studio), a folder with config.json and safetensors, or a Hugging Face repo id (e.g.
    /// Qwen/Qwen2.5-3B).
    #[arg(long, default_value = "gemma3-270m")]
    pub model: String,
    /// How to hold the weights: f32 (the reference), bf16 / f16 (half the memory, slower on a
    /// CPU), or for a GGUF file `stream` (kept quantised, each matrix dequantised when used:
    /// the f32 results bit for bit in about the file's memory) or `quantized` (quantised
    /// matmuls: approximate; fast only where candle has a packed kernel; see PERFORMANCE.md).
    #[arg(long, value_parser = ["f32", "bf16", "f16", "stream", "quantized"])]
    pub weights: Option<String>,
    /// The same as `--weights f32|bf16|f16` (the older spelling).
    #[arg(long, value_parser = ["f32", "bf16", "f16"], conflicts_with = "weights")]
    pub dtype: Option<String>,
    /// Do not prepend BOS to texts (TransformerLens's default prepends the tokenizer's BOS, or
    /// its EOS where it has none); gives HF's ids for tokenizers whose own rule adds nothing.
    #[arg(long)]
    pub no_bos: bool,
    /// Splice an SAE or transcoder in (a SAELens, Gemma Scope 2 or circuit-tracer folder or
    /// file); repeatable. Its output replaces the hook it writes in every pass.
    #[arg(long, value_name = "DIR")]
    pub sae: Vec<PathBuf>,
    /// With --sae: add SAELens's error term (input minus the clean reconstruction), so the
    /// model's outputs are unchanged and only latent edits would act.
    #[arg(long, requires = "sae")]
    pub sae_error_term: bool,
}

impl ModelArgs {
    /// Loads the model as the flags say.
    pub fn load(&self) -> Result<HookedTransformer> {
        let what = self
            .weights
            .as_deref()
            .or(self.dtype.as_deref())
            .unwrap_or("f32");
        let (dtype, weights) = match what {
            "bf16" => (DType::BF16, WeightMode::Dense),
            "f16" => (DType::F16, WeightMode::Dense),
            "stream" => (DType::F32, WeightMode::Stream),
            "quantized" => (DType::F32, WeightMode::Quantized),
            _ => (DType::F32, WeightMode::Dense),
        };
        let opts = LoadOptions {
            dtype,
            weights,
            ..LoadOptions::from_env()?
        };
        let model =
            HookedTransformer::from_spec(&self.model, &opts)?.with_prepend_bos(!self.no_bos);
        if self.sae.is_empty() {
            return Ok(model);
        }
        let mut hooks = Hooks::new();
        for path in &self.sae {
            let sae = mechinterp::sae::Sae::load(path)
                .with_context(|| format!("--sae {}", path.display()))?;
            sae.check_fits(&model)
                .with_context(|| format!("--sae {}", path.display()))?;
            let opts = mechinterp::sae::SpliceOptions {
                use_error_term: self.sae_error_term,
                ..Default::default()
            };
            hooks = hooks.sae_with(&sae, opts)?;
            eprintln!(
                "spliced {} ({}, {} latents) at {}",
                path.display(),
                sae.cfg().architecture.saelens_name(),
                sae.d_sae(),
                sae.hook_name_out()
            );
        }
        Ok(model.with_hooks(&hooks))
    }
}

/// One prompt and the model to run it on.
#[derive(clap::Args)]
pub struct PromptArgs {
    /// The prompt.
    pub prompt: String,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A clean / corrupted prompt pair and the logit difference to measure.
#[derive(clap::Args)]
pub struct PairArgs {
    /// The clean prompt.
    #[arg(long)]
    pub clean: String,
    /// The corrupted prompt (same number of tokens).
    #[arg(long)]
    pub corrupt: String,
    /// The clean run's answer, one token (e.g. " Mary").
    #[arg(long)]
    pub answer: String,
    /// The competing answer, one token (e.g. " John").
    #[arg(long)]
    pub wrong: String,
    /// denoise (clean into corrupted) or noise (corrupted into clean).
    #[arg(long, default_value = "denoise", value_parser = ["denoise", "noise"])]
    pub direction: String,
    /// Patched runs per batched forward.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl PairArgs {
    /// Loads the model and builds the patcher for the pair's logit difference.
    pub fn patcher(&self) -> Result<Patcher> {
        let m = self.model.load()?;
        let metric = LogitDiff::from_strs(&m, &self.answer, &self.wrong)?;
        Ok(Patcher::new(&m, &self.clean, &self.corrupt, metric)?.batch_size(self.batch))
    }
}

/// Writes `v` as pretty JSON to `path` when one is given, and says so on stderr.
pub fn write_json(path: &Option<PathBuf>, v: &serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
