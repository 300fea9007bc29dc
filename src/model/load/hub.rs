//! Finding a Hugging Face checkpoint's files: `config.json`, the tokenizer files and the
//! safetensors (single or sharded), from the hub cache, the hub itself, or a local folder.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::load::options::LoadOptions;

/// The files a checkpoint is made of, on local disk.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    /// config.json.
    pub config: PathBuf,
    /// tokenizer.json, where the checkpoint has one.
    pub tokenizer: Option<PathBuf>,
    /// tokenizer_config.json, where the checkpoint has one.
    pub tokenizer_config: Option<PathBuf>,
    /// The safetensors file, or every shard the index lists, in order.
    pub weights: Vec<PathBuf>,
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

/// A hub repo's files: from the cache alone when offline, else downloading what it lacks.
pub(crate) fn hub_files(repo_id: &str, opts: &LoadOptions) -> Result<Files> {
    let get = hub_getter(repo_id, opts)?;
    if !hub_offline(opts) {
        return resolve(repo_id, &*get);
    }
    resolve(repo_id, &*get).map_err(|e| match e {
        Error::ModelNotFound { .. } => {
            let repo =
                Repo::with_revision(repo_id.to_string(), RepoType::Model, opts.revision.clone());
            Error::ModelNotFound {
                path: hub_cache(opts).path().join(repo.folder_name()),
                hint: format!(
                    "`{repo_id}` (revision {}) is not in the hub cache and HF_HUB_OFFLINE is set: download it once with network access (unset HF_HUB_OFFLINE), or point HF_HOME / HF_HUB_CACHE at a cache that has it",
                    opts.revision
                ),
            }
        }
        e => e,
    })
}

/// Whether hub files come from the cache alone (`opts.offline`, else `HF_HUB_OFFLINE`).
pub fn hub_offline(opts: &LoadOptions) -> bool {
    opts.offline.unwrap_or_else(|| env_true("HF_HUB_OFFLINE"))
}

/// Fetches one file of a hub repository by name: `Ok(None)` when the repository has no such file.
pub type HubGetter = Box<dyn Fn(&str) -> Result<Option<PathBuf>>>;

/// A getter for the files of hub repository `repo_id`, with the model loader's rules: the cache
/// of `opts.cache_dir`, `HF_HUB_CACHE` or `HF_HOME`; from the cache alone when offline
/// (`opts.offline` or `HF_HUB_OFFLINE`), else downloading with `opts.token`, `HF_TOKEN` or the
/// cached token, through `HF_ENDPOINT` when set. SAE repositories load through it too.
pub fn hub_getter(repo_id: &str, opts: &LoadOptions) -> Result<HubGetter> {
    let cache = hub_cache(opts);
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, opts.revision.clone());
    if hub_offline(opts) {
        let cached = cache.repo(repo.clone());
        let snapshot = cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(&opts.revision);
        return Ok(Box::new(move |f: &str| {
            // A commit hash names its snapshot folder directly; a branch goes through refs/.
            let direct = snapshot.join(f);
            Ok(cached.get(f).or_else(|| direct.exists().then_some(direct)))
        }));
    }
    let token = opts
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()))
        .or_else(|| cache.token());
    let mut b = ApiBuilder::from_cache(cache)
        .with_progress(opts.progress)
        .with_token(token);
    if let Ok(ep) = std::env::var("HF_ENDPOINT") {
        b = b.with_endpoint(ep);
    }
    let api = b
        .build()
        .map_err(|e| Error::Load(format!("cannot start the hub client: {e}")))?;
    let api_repo = api.repo(repo);
    let repo_id = repo_id.to_string();
    Ok(Box::new(move |f: &str| {
        match api_repo.get(f) {
        Ok(p) => Ok(Some(p)),
        Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::Load(format!(
            "downloading {f} of `{repo_id}` failed: {e}. Check the repo id and your network; gated repositories need a token (HF_TOKEN or `huggingface-cli login`); set HF_HUB_OFFLINE=1 to use only the cache"
        ))),
    }
    }))
}

/// A local folder's files.
pub(crate) fn folder_files(dir: &Path) -> Result<Files> {
    if !dir.is_dir() {
        return Err(Error::ModelNotFound {
            path: dir.to_path_buf(),
            hint: "a model folder holds config.json, tokenizer.json and model.safetensors (or its shards)".into(),
        });
    }
    let get = |f: &str| -> Result<Option<PathBuf>> {
        let p = dir.join(f);
        Ok(p.exists().then_some(p))
    };
    resolve(&dir.display().to_string(), &get)
}

fn is_not_found(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Status(404, _))
}
