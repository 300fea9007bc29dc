//! Loading HF checkpoints: resolve `config.json`, `tokenizer.json` and the safetensors (single
//! or sharded) from the hub cache, the hub itself, or a local folder, then map them through
//! an architecture adapter. Safetensors are memory-mapped.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::arch::{Arch, Format, TensorSource};
use crate::model::matrix::WeightMode;
use crate::model::transformer::HookedTransformer;
use crate::tokenizer::Tokenizer;

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// Dtype of the weights and activations: `F32` (default) or `BF16` (half the memory).
    pub dtype: DType,
    /// Where the model runs.
    pub device: Device,
    /// How GGUF weight matrices are held: dense (dequantised at load, the default), or kept
    /// quantised and streamed (exact) or multiplied as they are (fast, approximate). See
    /// [`WeightMode`]; safetensors checkpoints load dense.
    pub weights: WeightMode,
    /// Hub cache folder; `None` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache; `None` reads `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Access token; `None` reads `HF_TOKEN`, else the token file beside the cache.
    pub token: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            revision: "main".into(),
            dtype: DType::F32,
            device: Device::Cpu,
            weights: WeightMode::Dense,
            cache_dir: None,
            offline: None,
            token: None,
            progress: true,
        }
    }
}

/// The files a checkpoint is made of, on local disk.
#[derive(Debug, Clone)]
struct Files {
    config: PathBuf,
    tokenizer: Option<PathBuf>,
    tokenizer_config: Option<PathBuf>,
    weights: Vec<PathBuf>,
}

fn env_true(k: &str) -> bool {
    std::env::var(k)
        .map(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        })
        .unwrap_or(false)
}

fn hub_cache(opts: &LoadOptions) -> Cache {
    if let Some(d) = &opts.cache_dir {
        return Cache::new(d.clone());
    }
    if let Some(d) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return Cache::new(PathBuf::from(d));
    }
    Cache::from_env()
}

/// Shard file names listed by a `model.safetensors.index.json`, in order, without repeats.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Load(format!("{} is not valid JSON: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Load(format!("{} has no weight_map", index.display())))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Resolves a checkpoint's files through a getter (cache, hub or folder).
fn resolve(what: &str, get: &dyn Fn(&str) -> Result<Option<PathBuf>>) -> Result<Files> {
    let config = get("config.json")?.ok_or_else(|| Error::ModelNotFound {
        path: PathBuf::from(what),
        hint: "no config.json there: is this a Hugging Face model repository or folder?".into(),
    })?;
    let weights = if let Some(index) = get("model.safetensors.index.json")? {
        let mut v = Vec::new();
        for f in shards_of(&index)? {
            v.push(get(&f)?.ok_or_else(|| {
                Error::Load(format!("{what}: shard {f} listed in the index is missing"))
            })?);
        }
        v
    } else if let Some(f) = get("model.safetensors")? {
        vec![f]
    } else {
        return Err(Error::Load(format!(
            "{what} has neither model.safetensors nor model.safetensors.index.json (only safetensors checkpoints are supported)"
        )));
    };
    Ok(Files {
        config,
        tokenizer: get("tokenizer.json")?,
        tokenizer_config: get("tokenizer_config.json")?,
        weights,
    })
}

impl HookedTransformer {
    /// Loads a Hugging Face model by repo id (e.g. `Qwen/Qwen2.5-3B`) in f32 on the CPU,
    /// downloading what the hub cache lacks.
    pub fn from_pretrained(repo_id: &str) -> Result<Self> {
        Self::from_pretrained_with(repo_id, &LoadOptions::from_env()?)
    }

    /// Loads a Hugging Face model with options (revision, dtype, device, cache, offline, token).
    pub fn from_pretrained_with(repo_id: &str, opts: &LoadOptions) -> Result<Self> {
        let cache = hub_cache(opts);
        let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, opts.revision.clone());
        let offline = opts.offline.unwrap_or_else(|| env_true("HF_HUB_OFFLINE"));
        let files = if offline {
            let cached = cache.repo(repo.clone());
            let snapshot = cache
                .path()
                .join(repo.folder_name())
                .join("snapshots")
                .join(&opts.revision);
            let get = |f: &str| -> Result<Option<PathBuf>> {
                // A commit hash names its snapshot folder directly; a branch goes through refs/.
                let direct = snapshot.join(f);
                Ok(cached.get(f).or_else(|| direct.exists().then_some(direct)))
            };
            resolve(repo_id, &get).map_err(|e| match e {
                Error::ModelNotFound { .. } => Error::ModelNotFound {
                    path: cache.path().join(repo.folder_name()),
                    hint: format!(
                        "`{repo_id}` (revision {}) is not in the hub cache and HF_HUB_OFFLINE is set: download it once with network access (unset HF_HUB_OFFLINE), or point HF_HOME / HF_HUB_CACHE at a cache that has it",
                        opts.revision
                    ),
                },
                e => e,
            })?
        } else {
            let token = opts
                .token
                .clone()
                .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()))
                .or_else(|| cache.token());
            let mut b = ApiBuilder::from_cache(cache.clone())
                .with_progress(opts.progress)
                .with_token(token);
            if let Ok(ep) = std::env::var("HF_ENDPOINT") {
                b = b.with_endpoint(ep);
            }
            let api = b
                .build()
                .map_err(|e| Error::Load(format!("cannot start the hub client: {e}")))?;
            let api_repo = api.repo(repo);
            let get = |f: &str| -> Result<Option<PathBuf>> {
                match api_repo.get(f) {
                    Ok(p) => Ok(Some(p)),
                    Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(Error::Load(format!(
                        "downloading {f} of `{repo_id}` failed: {e}. Check the repo id and your network; gated models need a token (HF_TOKEN or `huggingface-cli login`); set HF_HUB_OFFLINE=1 to use only the cache"
                    ))),
                }
            };
            resolve(repo_id, &get)?
        };
        load_files(&files, opts)
    }

    /// Loads a model from a folder holding config.json, tokenizer.json and safetensors.
    pub fn from_local_dir(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_local_dir_with(path, &LoadOptions::from_env()?)
    }

    /// Loads a model from a folder, with options (dtype, device).
    pub fn from_local_dir_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = path.as_ref();
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                path: dir.to_path_buf(),
                hint: "from_local_dir takes a folder with config.json, tokenizer.json and model.safetensors".into(),
            });
        }
        let get = |f: &str| -> Result<Option<PathBuf>> {
            let p = dir.join(f);
            Ok(p.exists().then_some(p))
        };
        let files = resolve(&dir.display().to_string(), &get)?;
        load_files(&files, opts)
    }
}

fn is_not_found(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Status(404, _))
}

/// Memory-mapped safetensors as a tensor source.
struct Mmapped(MmapedSafetensors);

impl TensorSource for Mmapped {
    fn format(&self) -> Format {
        Format::Hf
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        if self.0.get(name).is_err() {
            return Ok(None);
        }
        Ok(Some(self.0.load(name, device)?.to_dtype(dtype)?))
    }
}

impl LoadOptions {
    /// The defaults, on the device `MECHINTERP_DEVICE` names (`cpu`, the default, `cuda` or
    /// `cuda:N`): how the plain loaders (`from_gguf`, `from_spec`, …) and the CLI choose it,
    /// so that a test suite or a notebook runs on a GPU unchanged.
    pub fn from_env() -> Result<Self> {
        let device = match std::env::var("MECHINTERP_DEVICE")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("cpu") => Device::Cpu,
            Some(v) if v == "cuda" || v.starts_with("cuda:") => {
                let n = v
                    .strip_prefix("cuda:")
                    .map(|n| n.parse::<usize>())
                    .transpose()
                    .map_err(|_| {
                        Error::Invalid(format!(
                            "MECHINTERP_DEVICE={v}: expected cuda:N with N a GPU index"
                        ))
                    })?
                    .unwrap_or(0);
                Device::new_cuda(n).map_err(|e| {
                    Error::Invalid(format!(
                        "MECHINTERP_DEVICE={v}, but no CUDA device {n} could be opened ({e}); build with `--features cuda` on a machine with a GPU, or unset it"
                    ))
                })?
            }
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "MECHINTERP_DEVICE={v} is not a device: use cpu, cuda or cuda:N"
                )))
            }
        };
        Ok(LoadOptions {
            device,
            ..Default::default()
        })
    }

    /// Refuses combinations that cannot be honoured: a dtype other than f32 / bf16 / f16, or
    /// weights kept quantised with half-precision activations (their projections run in f32).
    pub(crate) fn check(&self) -> Result<()> {
        if !matches!(self.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!(
                "dtype {:?} is not supported: use F32, BF16 or F16",
                self.dtype
            )));
        }
        if self.weights != WeightMode::Dense && self.dtype != DType::F32 {
            return Err(Error::Invalid(format!(
                "weights `{}` compute in f32, but dtype {:?} was asked for; use dtype F32 with it, or dense weights for bf16 / f16",
                self.weights.name(),
                self.dtype
            )));
        }
        Ok(())
    }
}

fn load_files(files: &Files, opts: &LoadOptions) -> Result<HookedTransformer> {
    opts.check()?;
    if opts.weights != WeightMode::Dense {
        return Err(Error::Invalid(format!(
            "weights `{}` keep a GGUF file's quantised blocks, but {} is a safetensors checkpoint; load it dense (f32 or bf16), or pass a .gguf file",
            opts.weights.name(),
            files.config.parent().map_or_else(|| "this".into(), |p| p.display().to_string())
        )));
    }
    let text = std::fs::read_to_string(&files.config)
        .map_err(|e| Error::io(format!("reading {}", files.config.display()), e))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Load(format!("{} is not valid JSON: {e}", files.config.display())))?;
    let arch = Arch::from_config(&json)?;
    let cfg = arch.config(&json)?;
    // SAFETY: the files are not modified while mapped; the hub cache only adds files.
    let st = unsafe { MmapedSafetensors::multi(&files.weights)? };
    let w = arch.weights(&cfg, &Mmapped(st), opts.dtype, opts.weights, &opts.device)?;
    let tokenizer = match &files.tokenizer {
        Some(p) => {
            let tc = match &files.tokenizer_config {
                Some(f) => serde_json::from_str::<Value>(
                    &std::fs::read_to_string(f)
                        .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
                )
                .ok(),
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
