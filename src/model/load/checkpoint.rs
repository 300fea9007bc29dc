//! A Hugging Face checkpoint's files, once found, onto a model: config.json through
//! [`hf_config`](crate::model::load::hf_config), the safetensors through the family's tensor
//! names, and the tokenizer files.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::load::hf_config;
use crate::model::load::hub::Files;
use crate::model::load::options::LoadOptions;
use crate::model::load::safetensors::Mmapped;
use crate::model::load::weights::load_weights;
use crate::model::matrix::WeightMode;
use crate::model::transformer::HookedTransformer;
use crate::tokenizer::Tokenizer;

/// Loads the checkpoint made of `files`.
pub(crate) fn load(files: &Files, opts: &LoadOptions) -> Result<HookedTransformer> {
    opts.check()?;
    if opts.weights != WeightMode::Dense {
        return Err(Error::Invalid(format!(
            "weights `{}` keep a GGUF file's quantised blocks, but {} is a safetensors checkpoint; load it dense (f32 or bf16), or pass a .gguf file",
            opts.weights.name(),
            files.config.parent().map_or_else(|| "this".into(), |p| p.display().to_string())
        )));
    }
    let json = read_json(&files.config)?;
    let (arch, cfg) = hf_config::read(&json)?;
    let st = Mmapped::open(&files.weights)?;
    let w = load_weights(arch, &cfg, &st, opts.dtype, opts.weights, &opts.device)?;
    let tokenizer = match &files.tokenizer {
        Some(p) => {
            // A tokenizer_config.json that does not parse only loses its hints.
            let tc = match &files.tokenizer_config {
                Some(f) => serde_json::from_str::<Value>(&read_text(f)?).ok(),
                None => None,
            };
            let fallback = json
                .get("bos_token_id")
                .and_then(|v| v.as_u64())
                .map(|x| x as u32);
            Some(Tokenizer::from_hf_files(
                p,
                tc.as_ref(),
                fallback,
                Some(cfg.eos_token_id),
                cfg.pad_token_id,
            )?)
        }
        None => None,
    };
    HookedTransformer::new(cfg, w, tokenizer)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Error::Load(format!("{} is not valid JSON: {e}", path.display())))
}
