//! Reading SAE and transcoder files: which format a path holds, and the helpers every format
//! reader shares (JSON, safetensors as f32, refusing unknown keys and tensors by name).

pub mod circuit_tracer;
pub mod gemma_scope;
pub mod hooks;
pub mod saelens;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use super::autoencoder::Sae;
use crate::error::{Error, Result};

/// Reads the SAE or transcoder at `path`, whatever its format:
/// - a SAELens folder (`cfg.json` + `sae_weights.safetensors`, v6 or pre-6 config, with
///   `sparsity.safetensors` when present);
/// - a Gemma Scope 2 folder (`config.json` + `params.safetensors`);
/// - one circuit-tracer per-layer transcoder file (`layer_N.safetensors`, hooks from the
///   `config.yaml` beside it).
///
/// A circuit-tracer cross-layer transcoder folder is refused with a pointer to
/// [`circuit_tracer::CrossLayerTranscoder::load`].
pub fn load(path: &Path) -> Result<Sae> {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "safetensors") {
            return circuit_tracer::load_layer_file(path);
        }
        return Err(Error::Invalid(format!(
            "{} is a file, not an SAE: give the folder that holds cfg.json (SAELens) or config.json + params.safetensors (Gemma Scope 2), or a circuit-tracer layer_N.safetensors",
            path.display()
        )));
    }
    if !path.is_dir() {
        return Err(Error::Invalid(format!(
            "no SAE at {}: the path does not exist",
            path.display()
        )));
    }
    if path.join("cfg.json").is_file() {
        return saelens::load_dir(path);
    }
    if path.join("config.json").is_file() && path.join("params.safetensors").is_file() {
        return gemma_scope::load_dir(path);
    }
    if path.join("config.yaml").is_file() || path.join("W_enc_0.safetensors").is_file() {
        return Err(circuit_tracer::folder_hint(path));
    }
    Err(Error::Invalid(format!(
        "{} holds no SAE this crate reads: expected cfg.json + sae_weights.safetensors (SAELens), config.json + params.safetensors (Gemma Scope 2), a circuit-tracer layer_N.safetensors file, or a circuit-tracer cross-layer transcoder folder (CrossLayerTranscoder::load)",
        path.display()
    )))
}

/// A JSON file's top-level object.
pub(crate) fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Invalid(format!(
            "{} is not a JSON object",
            path.display()
        ))),
        Err(e) => Err(Error::Invalid(format!(
            "{} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

/// Every tensor of a safetensors file, as f32 on the CPU.
pub(crate) fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    raw.into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect()
}

/// Refuses any key of `obj` outside `known`, naming the file and listing the known keys.
pub(crate) fn refuse_unknown_keys(
    obj: &Map<String, Value>,
    known: &[&str],
    file: &Path,
    what: &str,
) -> Result<()> {
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<&str> = known.iter().copied().collect();
    Err(Error::Invalid(format!(
        "{}: unknown {what} key{} {}; this reader knows {}. Remove {} or convert the file with the tool that wrote it",
        file.display(),
        if unknown.len() > 1 { "s" } else { "" },
        unknown.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        known.into_iter().collect::<Vec<_>>().join(", "),
        if unknown.len() > 1 { "them" } else { "it" },
    )))
}

/// Takes a tensor out of a loaded file, refusing its absence by name.
pub(crate) fn take(
    map: &mut HashMap<String, Tensor>,
    name: &str,
    file: &Path,
    why: &str,
) -> Result<Tensor> {
    map.remove(name).ok_or_else(|| {
        let mut have: Vec<&String> = map.keys().collect();
        have.sort();
        Error::Invalid(format!(
            "{}: no tensor `{name}` ({why}); the file holds {}",
            file.display(),
            have.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Refuses tensors left over after a reader took the ones it knows.
pub(crate) fn refuse_leftover_tensors(
    map: &HashMap<String, Tensor>,
    file: &Path,
    arch: &str,
) -> Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    let mut left: Vec<&String> = map.keys().collect();
    left.sort();
    Err(Error::Invalid(format!(
        "{}: tensor{} {} not part of a `{arch}` SAE (the reference library would refuse to load it too); is the config's architecture right?",
        file.display(),
        if left.len() > 1 { "s" } else { "" },
        left.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A non-negative integer config value, refused by name when it is anything else.
pub(crate) fn get_usize(obj: &Map<String, Value>, key: &str, file: &Path) -> Result<usize> {
    match obj.get(key) {
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: `{key}` is {v}, but must be a non-negative integer",
                file.display()
            ))
        }),
        None => Err(Error::Invalid(format!(
            "{}: the config has no `{key}`",
            file.display()
        ))),
    }
}

/// An optional boolean config value (absent or null → `default`).
pub(crate) fn get_bool(
    obj: &Map<String, Value>,
    key: &str,
    default: bool,
    file: &Path,
) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(Error::Invalid(format!(
            "{}: `{key}` is {v}, but must be true or false",
            file.display()
        ))),
    }
}

/// An optional string config value.
pub(crate) fn get_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    file: &Path,
) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::Invalid(format!(
            "{}: `{key}` is {v}, but must be a string",
            file.display()
        ))),
    }
}
