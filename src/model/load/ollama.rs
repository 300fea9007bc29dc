//! Ollama's local model store: `NAME[:TAG]` → its manifest → the GGUF blob it names.
//!
//! The store is `$OLLAMA_MODELS`, else `~/.ollama/models`; a manifest lives at
//! `manifests/<host>/<namespace>/<name>/<tag>` (host `registry.ollama.ai`, namespace `library`
//! and tag `latest` unless given) and lists layers, of which the one with media type
//! `application/vnd.ollama.image.model` is the weights, stored as `blobs/sha256-<hex>`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// The Ollama models folder: `$OLLAMA_MODELS`, else `~/.ollama/models`.
pub fn store() -> PathBuf {
    if let Some(d) = std::env::var_os("OLLAMA_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".ollama").join("models")
}

/// The GGUF file of `NAME[:TAG]` in the Ollama store.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    resolve_in(&store(), spec)
}

/// The GGUF file of `NAME[:TAG]` in the store at `root`.
pub fn resolve_in(root: &Path, spec: &str) -> Result<PathBuf> {
    let (name, tag) = split_tag(spec);
    if name.is_empty() {
        return Err(Error::Invalid(format!(
            "`ollama:{spec}` names no model; write ollama:NAME[:TAG], e.g. ollama:llama3.2:1b"
        )));
    }
    let parts: Vec<&str> = name.split('/').collect();
    let (host, path): (&str, Vec<&str>) = match parts.as_slice() {
        [n] => ("registry.ollama.ai", vec!["library", n]),
        [ns, n] => ("registry.ollama.ai", vec![ns, n]),
        [h, rest @ ..] => (h, rest.to_vec()),
        [] => unreachable!("split yields at least one part"),
    };
    let mut manifest = root.join("manifests").join(host);
    for p in &path {
        manifest.push(p);
    }
    manifest.push(tag);
    if !manifest.is_file() {
        return Err(Error::ModelNotFound {
            path: manifest,
            hint: format!(
                "no Ollama manifest for `{name}:{tag}` in the store {} (set OLLAMA_MODELS to use another store; `ollama pull {name}:{tag}` downloads it)",
                root.display()
            ),
        });
    }
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Error::io(format!("reading {}", manifest.display()), e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        Error::Load(format!(
            "{} is not a valid Ollama manifest: {e}",
            manifest.display()
        ))
    })?;
    let digest = json
        .get("layers")
        .and_then(|l| l.as_array())
        .and_then(|layers| {
            layers
                .iter()
                .find(|l| l.get("mediaType").and_then(|m| m.as_str()) == Some(MODEL_MEDIA_TYPE))
        })
        .and_then(|l| l.get("digest"))
        .and_then(|d| d.as_str())
        .ok_or_else(|| {
            Error::Load(format!(
                "{} lists no layer of type {MODEL_MEDIA_TYPE} (is it a model?)",
                manifest.display()
            ))
        })?;
    let blob = root.join("blobs").join(digest.replace(':', "-"));
    if !blob.is_file() {
        return Err(Error::ModelNotFound {
            path: blob,
            hint: format!(
                "the manifest {} names this weights blob, but it is missing from the store; `ollama pull {name}:{tag}` restores it",
                manifest.display()
            ),
        });
    }
    Ok(blob)
}

/// `name:tag` → (name, tag), `latest` by default; a ':' inside a host's port is not a tag.
fn split_tag(spec: &str) -> (&str, &str) {
    match spec.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') && !t.is_empty() => (n, t),
        _ => (spec, "latest"),
    }
}
