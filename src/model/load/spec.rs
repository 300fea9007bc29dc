//! Naming a model: one spec (the default model, `ollama:NAME[:TAG]`, a .gguf file, a folder,
//! a hub repo id) to the reader for its source, and the constructors that take one.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::load::options::LoadOptions;
use crate::model::load::{checkpoint, gguf, hub, ollama};
use crate::model::transformer::HookedTransformer;

/// The specs that name the default model.
const DEFAULT_NAMES: &[&str] = &["gemma3-270m", "gemma-3-270m", "default"];

/// Where a spec points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The default model, fetched into the cache if needed.
    Default,
    /// A GGUF file: given, or resolved from Ollama's store.
    Gguf(PathBuf),
    /// A local folder of config.json and safetensors.
    Folder(PathBuf),
    /// A Hugging Face repo id.
    Hub(String),
}

/// Reads a spec; a file that exists is a GGUF file whatever its name.
fn source(spec: &Path) -> Result<Source> {
    let text = spec.to_str();
    Ok(match text {
        Some(s) if DEFAULT_NAMES.contains(&s) => Source::Default,
        Some(s) if s.starts_with("ollama:") => {
            Source::Gguf(ollama::resolve(&s["ollama:".len()..])?)
        }
        _ if spec.extension().is_some_and(|e| e == "gguf") || spec.is_file() => {
            Source::Gguf(spec.to_path_buf())
        }
        _ if spec.is_dir() => Source::Folder(spec.to_path_buf()),
        Some(s) if is_repo_id(s) => Source::Hub(s.to_string()),
        _ => {
            return Err(Error::ModelNotFound {
                path: spec.to_path_buf(),
                hint: "a model is `gemma3-270m` (the default), `ollama:NAME[:TAG]`, the path of a .gguf file, a folder with config.json and safetensors, or a Hugging Face repo id such as Qwen/Qwen2.5-3B".into(),
            })
        }
    })
}

/// `org/name` with the characters the hub allows.
fn is_repo_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(s.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}

fn load(src: Source, opts: &LoadOptions) -> Result<HookedTransformer> {
    match src {
        Source::Default => {
            let path = crate::fetch::fetch_default_model(&crate::fetch::FetchOptions::default())?;
            gguf::load(&path, opts)
        }
        Source::Gguf(path) => gguf::load(&path, opts),
        Source::Folder(dir) => checkpoint::load(&hub::folder_files(&dir)?, opts),
        Source::Hub(id) => checkpoint::load(&hub::hub_files(&id, opts)?, opts),
    }
}

impl HookedTransformer {
    /// Loads any model: `gemma3-270m` (the default model, fetched if needed),
    /// `ollama:NAME[:TAG]`, a `.gguf` file, a local folder of config.json and safetensors, or
    /// a Hugging Face repo id; `opts` sets the device, dtype, weight mode and hub access.
    ///
    /// ```no_run
    /// use mechinterp::prelude::*;
    /// let opts = LoadOptions { dtype: DType::BF16, ..LoadOptions::from_env()? };
    /// let model = HookedTransformer::from_spec("Qwen/Qwen2.5-0.5B", &opts)?;
    /// let gguf = HookedTransformer::from_spec("models/llama-3.2-1b.Q8_0.gguf", &LoadOptions::default())?;
    /// # Ok::<(), mechinterp::Error>(())
    /// ```
    pub fn from_spec(spec: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        load(source(spec.as_ref())?, opts)
    }

    /// The default model, Gemma 3 270M (base): fetched into the cache on first use (see
    /// [`crate::fetch`]), then loaded on the device `MECHINTERP_DEVICE` names.
    ///
    /// ```no_run
    /// use mechinterp::prelude::*;
    /// let model = HookedTransformer::gemma3_270m()?;
    /// # Ok::<(), mechinterp::Error>(())
    /// ```
    pub fn gemma3_270m() -> Result<Self> {
        load(Source::Default, &LoadOptions::from_env()?)
    }

    /// A Hugging Face model by repo id, in f32 on the device `MECHINTERP_DEVICE` names,
    /// downloading what the hub cache lacks (`HF_HUB_OFFLINE=1`: the cache only).
    ///
    /// ```no_run
    /// use mechinterp::prelude::*;
    /// let model = HookedTransformer::from_pretrained("Qwen/Qwen2.5-0.5B")?;
    /// # Ok::<(), mechinterp::Error>(())
    /// ```
    pub fn from_pretrained(repo_id: &str) -> Result<Self> {
        load(Source::Hub(repo_id.to_string()), &LoadOptions::from_env()?)
    }

    /// A model from a local folder holding config.json, tokenizer.json and safetensors, in
    /// f32 on the device `MECHINTERP_DEVICE` names.
    ///
    /// ```no_run
    /// use mechinterp::prelude::*;
    /// let model = HookedTransformer::from_local_dir("models/SmolLM2-135M")?;
    /// # Ok::<(), mechinterp::Error>(())
    /// ```
    pub fn from_local_dir(path: impl AsRef<Path>) -> Result<Self> {
        load(
            Source::Folder(path.as_ref().to_path_buf()),
            &LoadOptions::from_env()?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_their_sources() {
        assert_eq!(source(Path::new("gemma3-270m")).ok(), Some(Source::Default));
        assert_eq!(
            source(Path::new("/no/such/model.gguf")).ok(),
            Some(Source::Gguf("/no/such/model.gguf".into()))
        );
        assert_eq!(
            source(Path::new("Qwen/Qwen2.5-3B")).ok(),
            Some(Source::Hub("Qwen/Qwen2.5-3B".into()))
        );
        assert!(source(Path::new("no such thing")).is_err());
    }
}
