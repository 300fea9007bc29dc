//! GGUF files (llama.cpp, Ollama, LM Studio): the metadata reader ([`file`]), the metadata
//! onto a [`Config`](crate::model::Config) as llama.cpp reads it (`config`), the tensors and
//! their dequantiser (`tensors`), and here the loader that puts them together with the
//! tokenizer rebuilt from the vocabulary.

mod config;
pub(crate) mod file;
mod tensors;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::load::options::LoadOptions;
use crate::model::load::weights::load_weights;
use crate::model::transformer::HookedTransformer;
use crate::tokenizer::Tokenizer;
use file::Gguf;

/// Loads the GGUF model at `path` (gemma2, gemma3, llama, qwen2, qwen3).
pub(crate) fn load(path: &Path, opts: &LoadOptions) -> Result<HookedTransformer> {
    if !path.exists() {
        return Err(Error::ModelNotFound {
            path: path.to_path_buf(),
            hint: "pass the path of a .gguf file, or run `mechinterp fetch` for the default model"
                .into(),
        });
    }
    opts.check()?;
    let g = Gguf::open(path)?;
    let arch = g.arch()?;
    let vocab = g.vocab()?;
    let cfg = g.config(arch, &vocab)?;
    let w = load_weights(arch, &cfg, &g, opts.dtype, opts.weights, &opts.device)?;
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab)?;
    HookedTransformer::new(cfg, w, Some(tokenizer))
}

impl Tokenizer {
    /// The tokenizer stored in a GGUF file (`tokenizer.ggml.model` llama or gpt2).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Tokenizer::from_gguf_vocab(&Gguf::open(path.as_ref())?.vocab()?)
    }
}

/// Names of the tensors in a GGUF file with their shapes, for inspection.
pub fn gguf_tensor_shapes(path: impl AsRef<Path>) -> Result<HashMap<String, Vec<usize>>> {
    let g = Gguf::open(path.as_ref())?;
    Ok(g.content
        .tensor_infos
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.dims().to_vec()))
        .collect())
}
