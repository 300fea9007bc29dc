//! A transcoder set from disk, as `mechinterp graph --transcoders DIR` takes it: a folder in
//! circuit-tracer's per-layer format (`layer_{i}.safetensors` and its `config.yaml`), a
//! circuit-tracer cross-layer transcoder folder (`model_kind: cross_layer_transcoder`), or a
//! folder holding one SAELens (or Gemma Scope 2) transcoder folder per layer, under any names,
//! each layer told by its config's hook name `blocks.L.…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use candle_core::Tensor;

use crate::graph::cross_layer::CrossLayer;
use crate::graph::transcoders::{FeatureInput, PerLayer, Transcoders};
use crate::sae::format::circuit_tracer::{load_transcoder_set, model_kind, CrossLayerTranscoder};
use crate::sae::Sae;

/// What a transcoder folder holds.
enum Layout {
    /// circuit-tracer's per-layer files.
    TranscoderSet,
    /// circuit-tracer's cross-layer transcoder.
    CrossLayer,
    /// Gemma Scope 2's cross-layer transcoder: `layer_{i}.safetensors` whose `w_dec` is
    /// [d_transcoder, n_layers − i, d_model].
    GemmaScope2Clt(Vec<PathBuf>),
    /// One transcoder folder per layer.
    PerLayerFolders(Vec<PathBuf>),
}

/// The transcoders in `path`: a circuit-tracer per-layer folder (`config.yaml` with
/// `model_kind: transcoder_set` and `layer_{i}.safetensors`), or a folder of per-layer
/// transcoder folders (SAELens `cfg.json` or Gemma Scope 2 `config.json` + `params.safetensors`),
/// in which each folder's layer is read from its hook name; a layer given twice or missing is
/// refused by name.
pub fn load_transcoders(path: &Path) -> Result<TranscoderSet> {
    let wrap = |e: Error| Error::Invalid(format!("transcoders at {}: {e}", path.display()));
    Ok(match layout(path)? {
        Layout::TranscoderSet => {
            TranscoderSet::PerLayer(PerLayer::new(load_transcoder_set(path).map_err(wrap)?)?)
        }
        Layout::CrossLayer => {
            TranscoderSet::CrossLayer(Box::new(CrossLayer::load(path).map_err(wrap)?))
        }
        Layout::GemmaScope2Clt(files) => TranscoderSet::CrossLayer(Box::new(CrossLayer::new(
            CrossLayerTranscoder::load_gemma_scope_2(&files).map_err(wrap)?,
        )?)),
        Layout::PerLayerFolders(dirs) => TranscoderSet::PerLayer(per_layer_folders(path, &dirs)?),
    })
}

/// Transcoders read from disk: one per layer, or one cross-layer transcoder.
#[derive(Debug, Clone)]
pub enum TranscoderSet {
    /// One transcoder per layer.
    PerLayer(PerLayer),
    /// A cross-layer transcoder.
    CrossLayer(Box<CrossLayer>),
}

impl TranscoderSet {
    /// The per-layer transcoders, when the set is one.
    pub fn per_layer(&self) -> Option<&PerLayer> {
        match self {
            TranscoderSet::PerLayer(p) => Some(p),
            TranscoderSet::CrossLayer(_) => None,
        }
    }

    /// The residual width the transcoders read.
    pub fn d_model(&self) -> usize {
        match self {
            TranscoderSet::PerLayer(p) => p.saes().first().map_or(0, |s| s.cfg().d_in),
            TranscoderSet::CrossLayer(c) => c.clt().d_model(),
        }
    }

    fn inner(&self) -> &dyn Transcoders {
        match self {
            TranscoderSet::PerLayer(p) => p,
            TranscoderSet::CrossLayer(c) => c.as_ref(),
        }
    }
}

impl Transcoders for TranscoderSet {
    fn n_layers(&self) -> usize {
        self.inner().n_layers()
    }
    fn d_sae(&self, layer: usize) -> usize {
        self.inner().d_sae(layer)
    }
    fn input(&self, layer: usize) -> FeatureInput {
        self.inner().input(layer)
    }
    fn encode(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.inner().encode(layer, x)
    }
    fn encode_pre(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.inner().encode_pre(layer, x)
    }
    fn encoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Tensor> {
        self.inner().encoder_rows(layer, feats)
    }
    fn decoder_rows(&self, layer: usize, feats: &[u32]) -> Result<Vec<(usize, Tensor)>> {
        self.inner().decoder_rows(layer, feats)
    }
    fn output_bias(&self, out: usize, inputs: &[Tensor]) -> Result<Tensor> {
        self.inner().output_bias(out, inputs)
    }
    fn skip(&self, out: usize) -> Option<&Tensor> {
        self.inner().skip(out)
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
    if model_kind(path).as_deref() == Some("cross_layer_transcoder") {
        return Ok(Layout::CrossLayer);
    }
    if !path.join("config.yaml").is_file() && three_d_decoder(&path.join("layer_0.safetensors"))? {
        let mut files = Vec::new();
        while path
            .join(format!("layer_{}.safetensors", files.len()))
            .is_file()
        {
            files.push(path.join(format!("layer_{}.safetensors", files.len())));
        }
        return Ok(Layout::GemmaScope2Clt(files));
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

/// Whether `file` exists and holds a 3-D `w_dec` (a Gemma Scope 2 cross-layer transcoder's
/// layer: one decoder block per later layer), read from its header only.
fn three_d_decoder(file: &Path) -> Result<bool> {
    if !file.is_file() {
        return Ok(false);
    }
    // SAFETY: the file is only read, and the map lives only for this call.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
        .map_err(|e| Error::Invalid(format!("{}: not a safetensors file ({e})", file.display())))?;
    Ok(st
        .tensors()
        .iter()
        .any(|(name, view)| name == "w_dec" && view.shape().len() == 3))
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
