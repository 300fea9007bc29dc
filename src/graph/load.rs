//! A transcoder set from disk, as `mechinterp graph --transcoders DIR` takes it: either a
//! folder in circuit-tracer's per-layer format (`layer_{i}.safetensors` and its `config.yaml`),
//! or a folder holding one SAELens (or Gemma Scope 2) transcoder folder per layer, under any
//! names, each layer told by its config's hook name `blocks.L.…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::transcoders::PerLayer;
use crate::sae::format::circuit_tracer::load_transcoder_set;
use crate::sae::Sae;

/// What a transcoder folder holds.
enum Layout {
    /// circuit-tracer's per-layer files.
    TranscoderSet,
    /// One transcoder folder per layer.
    PerLayerFolders(Vec<PathBuf>),
}

/// The transcoders in `path`: a circuit-tracer per-layer folder (`config.yaml` with
/// `model_kind: transcoder_set` and `layer_{i}.safetensors`), or a folder of per-layer
/// transcoder folders (SAELens `cfg.json` or Gemma Scope 2 `config.json` + `params.safetensors`),
/// in which each folder's layer is read from its hook name; a layer given twice or missing is
/// refused by name.
pub fn load_transcoders(path: &Path) -> Result<PerLayer> {
    let wrap = |e: Error| Error::Invalid(format!("transcoders at {}: {e}", path.display()));
    match layout(path)? {
        Layout::TranscoderSet => PerLayer::new(load_transcoder_set(path).map_err(wrap)?),
        Layout::PerLayerFolders(dirs) => per_layer_folders(path, &dirs),
    }
}

/// Tells the formats apart; an error says what was expected.
fn layout(path: &Path) -> Result<Layout> {
    if !path.is_dir() {
        return Err(Error::Invalid(format!(
            "transcoders at {}: {}; expected a folder in circuit-tracer's per-layer format (config.yaml + layer_0.safetensors, layer_1.safetensors, …) or a folder of one SAELens transcoder folder per layer",
            path.display(),
            if path.exists() { "not a folder" } else { "no such folder" }
        )));
    }
    if path.join("config.yaml").is_file() || path.join("layer_0.safetensors").is_file() {
        return Ok(Layout::TranscoderSet);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::io(format!("reading the folder {}", path.display()), e))?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for e in entries {
        let p = e
            .map_err(|e| Error::io(format!("reading the folder {}", path.display()), e))?
            .path();
        let holds_sae = p.join("cfg.json").is_file()
            || (p.join("config.json").is_file() && p.join("params.safetensors").is_file());
        if p.is_dir() && holds_sae {
            dirs.push(p);
        }
    }
    if dirs.is_empty() {
        return Err(Error::Invalid(format!(
            "transcoders at {}: found neither circuit-tracer's per-layer files (config.yaml + layer_N.safetensors) nor any transcoder folder inside it (a subfolder with cfg.json, as SAELens saves one per layer)",
            path.display()
        )));
    }
    dirs.sort();
    Ok(Layout::PerLayerFolders(dirs))
}

/// The layer a hook name `blocks.L.…` names.
fn hook_layer(hook: &str) -> Option<usize> {
    hook.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// One transcoder per layer from `dirs`, each placed by its hook name's layer.
fn per_layer_folders(root: &Path, dirs: &[PathBuf]) -> Result<PerLayer> {
    let mut by_layer: BTreeMap<usize, (PathBuf, Sae)> = BTreeMap::new();
    for d in dirs {
        let sae = Sae::load(d)
            .map_err(|e| Error::Invalid(format!("transcoder folder {}: {e}", d.display())))?;
        let layer = hook_layer(sae.hook_name()).ok_or_else(|| {
            Error::Invalid(format!(
                "transcoder folder {}: its hook `{}` names no layer; a graph's transcoders read `blocks.L.…` (e.g. blocks.3.mlp.hook_in)",
                d.display(),
                sae.hook_name()
            ))
        })?;
        if let Some((first, _)) = by_layer.get(&layer) {
            return Err(Error::Invalid(format!(
                "transcoders at {}: layer {layer} is given twice, by {} and {}; keep one transcoder per layer",
                root.display(),
                first.display(),
                d.display()
            )));
        }
        by_layer.insert(layer, (d.clone(), sae));
    }
    let top = by_layer.keys().next_back().copied().unwrap_or(0);
    let missing: Vec<String> = (0..=top)
        .filter(|l| !by_layer.contains_key(l))
        .map(|l| l.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "transcoders at {}: no transcoder for layer{} {} (found layers {}); a graph needs one per layer",
            root.display(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            by_layer
                .keys()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    PerLayer::new(by_layer.into_values().map(|(_, s)| s).collect())
        .map_err(|e| Error::Invalid(format!("transcoders at {}: {e}", root.display())))
}
