//! SAEs from the Hugging Face hub through hf-hub, as SAELens's `SAE.from_pretrained` finds
//! them: `sae_id` is the folder inside the repository, holding either SAELens's files
//! (`cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`) or Gemma Scope 2's
//! (`config.json`, `params.safetensors`; e.g. repo `google/gemma-scope-2-270m-pt`, folder
//! `resid_post/layer_6_width_16k_l0_small`). The files land in the hub cache, which offline
//! mode (`HF_HUB_OFFLINE=1`, or [`LoadOptions::offline`]) reads alone.

use std::path::PathBuf;

use super::autoencoder::Sae;
use crate::error::{Error, Result};
use crate::model::load::{hub_getter, hub_offline, HubGetter};
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
        let get = hub_getter(repo_id, opts)?;
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
                if hub_offline(opts) {
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

fn need(get: &HubGetter, f: &str, repo_id: &str) -> Result<PathBuf> {
    get(f)?.ok_or_else(|| Error::Invalid(format!("`{repo_id}` has no {f}")))
}
