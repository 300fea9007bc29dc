//! SAEs from the Hugging Face hub through hf-hub, as SAELens's `SAE.from_pretrained` finds
//! them: `sae_id` is the folder inside the repository, holding either SAELens's files
//! (`cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`) or Gemma Scope 2's
//! (`config.json`, `params.safetensors`; e.g. repo `google/gemma-scope-2-270m-pt`, folder
//! `resid_post/layer_6_width_16k_l0_small`). The files land in the hub cache, which offline
//! mode (`HF_HUB_OFFLINE=1`, or [`LoadOptions::offline`]) reads alone.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::autoencoder::Sae;
use crate::error::{Error, Result};
use crate::model::LoadOptions;

impl Sae {
    /// The SAE in folder `sae_id` of hub repository `repo_id` (see the module docs), with the
    /// hub settings of [`LoadOptions::from_env`].
    pub fn from_pretrained(repo_id: &str, sae_id: &str) -> Result<Sae> {
        Self::from_pretrained_with(repo_id, sae_id, &LoadOptions::from_env()?)
    }

    /// [`Sae::from_pretrained`] with explicit hub settings (cache folder, revision, offline
    /// mode, token; the weights load on the options' device).
    pub fn from_pretrained_with(repo_id: &str, sae_id: &str, opts: &LoadOptions) -> Result<Sae> {
        if !repo_id.contains('/') {
            return Err(Error::Invalid(format!(
                "`{repo_id}` is not a hub repository id (owner/name); SAELens release names such as gemma-scope-2-270m-pt-res map to one in SAELens's pretrained_saes.yaml (that one is google/gemma-scope-2-270m-pt)"
            )));
        }
        let folder = sae_id.trim_matches('/');
        let file = |f: &str| {
            if folder.is_empty() {
                f.to_string()
            } else {
                format!("{folder}/{f}")
            }
        };
        let get = getter(repo_id, opts)?;
        let dir = if let Some(cfg) = get(&file("cfg.json"))? {
            need(&get, &file("sae_weights.safetensors"), repo_id)?;
            get(&file("sparsity.safetensors"))?;
            cfg
        } else if let Some(cfg) = get(&file("config.json"))? {
            need(&get, &file("params.safetensors"), repo_id)?;
            cfg
        } else {
            return Err(Error::Invalid(format!(
                "`{repo_id}` has no SAE in folder `{folder}`: neither {} (SAELens) nor {} (Gemma Scope 2){}",
                file("cfg.json"),
                file("config.json"),
                if opts.offline.unwrap_or(false) || offline_env() {
                    " in the hub cache (offline mode: download it once with network access)"
                } else {
                    ""
                }
            )));
        };
        let dir = dir
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| Error::Invalid("a hub file with no folder".into()))?;
        Sae::load(&dir)?.to_device(&opts.device)
    }
}

type Getter = Box<dyn Fn(&str) -> Result<Option<PathBuf>>>;

fn need(get: &Getter, f: &str, repo_id: &str) -> Result<PathBuf> {
    get(f)?.ok_or_else(|| Error::Invalid(format!("`{repo_id}` has no {f}")))
}

fn offline_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        })
        .unwrap_or(false)
}

/// Fetches one file of the repository: from the cache alone when offline, else downloading it.
fn getter(repo_id: &str, opts: &LoadOptions) -> Result<Getter> {
    let cache = match &opts.cache_dir {
        Some(d) => Cache::new(d.clone()),
        None => match std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
            Some(d) => Cache::new(PathBuf::from(d)),
            None => Cache::from_env(),
        },
    };
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, opts.revision.clone());
    if opts.offline.unwrap_or_else(offline_env) {
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
        Err(ApiError::RequestError(e)) if matches!(*e, ureq::Error::Status(404, _)) => Ok(None),
        Err(e) => Err(Error::Load(format!(
            "downloading {f} of `{repo_id}` failed: {e}. Check the repo id and your network; gated repositories need a token (HF_TOKEN); set HF_HUB_OFFLINE=1 to use only the cache"
        ))),
    }
    }))
}
