//! `ActivationCache`: the activations a run recorded, by TransformerLens hook name.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::hooks::{act_name, suggest_names, HookPoint};

/// Activations recorded by `run_with_cache`, keyed by hook name, in forward order.
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    names: Vec<String>,
    map: HashMap<String, Tensor>,
    seq_lengths: Vec<usize>,
}

impl ActivationCache {
    pub(crate) fn insert(&mut self, name: String, t: Tensor) {
        if self.map.insert(name.clone(), t).is_none() {
            self.names.push(name);
        }
    }

    /// The same activations cut from any autograd graph.
    pub(crate) fn detached(self) -> Result<Self> {
        let map = self.map.into_iter().map(|(k, v)| (k, v.detach())).collect();
        Ok(ActivationCache { map, ..self })
    }

    pub(crate) fn set_seq_lengths(&mut self, lens: Vec<usize>) {
        self.seq_lengths = lens;
    }

    /// Real (unpadded) length of each batch row of the run that filled this cache.
    pub fn seq_lengths(&self) -> &[usize] {
        &self.seq_lengths
    }

    /// The activation at a hook name, e.g. `cache.get("blocks.3.attn.hook_pattern")?`.
    /// A missing name is an error that lists the nearest cached names.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        if let Some(t) = self.map.get(name) {
            return Ok(t.clone());
        }
        let hint = match name.parse::<HookPoint>() {
            Ok(_) => "; it is a valid hook name that this run did not cache (check the filter passed to run_with_cache_filtered, or the layer count)".to_string(),
            Err(_) => String::new(),
        };
        Err(Error::NotCached {
            name: name.to_string(),
            suggestions: suggest_names(name, &self.names),
            hint,
        })
    }

    /// The activation at a short name and layer, as `act_name` builds it: `cache.act("pattern", 3)`.
    pub fn act(&self, short: &str, layer: usize) -> Result<Tensor> {
        self.get(&act_name(short, layer))
    }

    /// The attention pattern of a layer, [batch, n_heads, query_pos, key_pos].
    pub fn pattern(&self, layer: usize) -> Result<Tensor> {
        self.get(&HookPoint::Pattern(layer).name())
    }

    /// One head's attention pattern of the first prompt, [query_pos, key_pos].
    pub fn head_pattern(&self, layer: usize, head: usize) -> Result<Tensor> {
        let p = self.pattern(layer)?;
        let n = p.dim(1)?;
        if head >= n {
            return Err(Error::Invalid(format!(
                "head {head} does not exist: layer {layer} has {n} heads"
            )));
        }
        Ok(p.get(0)?.get(head)?)
    }

    /// Whether the cache holds this name.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Hook names held, in forward order.
    pub fn keys(&self) -> &[String] {
        &self.names
    }

    /// (name, activation) pairs in forward order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names
            .iter()
            .filter_map(|n| self.map.get(n).map(|t| (n.as_str(), t)))
    }

    /// Number of cached activations.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when nothing was cached.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Total bytes held by the cached tensors.
    pub fn size_bytes(&self) -> usize {
        self.map
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Stacks a per-layer activation over layers `0..n_layers` into a new leading dimension,
    /// e.g. `cache.stack("resid_post", 18)` is [18, b, s, d].
    pub fn stack(&self, short: &str, n_layers: usize) -> Result<Tensor> {
        let ts = (0..n_layers)
            .map(|l| self.act(short, l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&ts, 0)?)
    }

    /// Writes every activation (plus `extra` tensors such as `logits`) to a safetensors file,
    /// atomically, so numpy / PyTorch users can read them.
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        extra: &[(&str, &Tensor)],
    ) -> Result<()> {
        let path = path.as_ref();
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for (n, t) in self.iter() {
            all.insert(n.to_string(), t.contiguous()?);
        }
        for (n, t) in extra {
            all.insert(n.to_string(), t.contiguous()?);
        }
        // Checked first, and every failure below reported against `path`: the writer works on
        // temporary files beside it, whose names mean nothing to the user.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(unwritable(path, dir, ErrorKind::NotFound));
        }
        if path.is_dir() {
            return Err(unwritable(path, dir, ErrorKind::IsADirectory));
        }
        let tmp = path.with_extension("safetensors.tmp");
        if let Err(e) = candle_core::safetensors::save(&all, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(match io_kind(&e) {
                Some(kind) => unwritable(path, dir, kind),
                None => e.into(),
            });
        }
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(unwritable(path, dir, e.kind()));
        }
        Ok(())
    }
}

/// The I/O failure at the bottom of `e`, if it is one.
fn io_kind(e: &candle_core::Error) -> Option<ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// Why `path` (in the folder `dir`) could not be written, and what to do about it.
fn unwritable(path: &Path, dir: &Path, kind: ErrorKind) -> Error {
    // A folder that exists can still refuse new files (/proc answers "not found").
    let dir_exists = dir.is_dir();
    let dir = dir.display();
    let reason = match kind {
        ErrorKind::NotFound if !dir_exists => format!(
            "the folder {dir} does not exist; create it first, or give a path in a folder that exists"
        ),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            format!("the folder {dir} is not writable; give a path in a folder you can write to")
        }
        ErrorKind::StorageFull => {
            format!("the disk holding {dir} is full; free some space or write elsewhere")
        }
        ErrorKind::IsADirectory => {
            "it is a folder; give a file name in it, e.g. acts.safetensors".to_string()
        }
        other => format!("{other}; check that you can write to the folder {dir}"),
    };
    Error::Write {
        path: path.to_path_buf(),
        reason,
    }
}
