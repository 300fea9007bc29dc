//! Safetensors files as a tensor source: memory-mapped, after checking that each file is as
//! long as its header says, so that a truncated download is named as one.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::load::weights::{Format, TensorSource};

/// The largest header we read; safetensors itself refuses longer ones.
const MAX_HEADER: u64 = 100_000_000;

/// Memory-mapped safetensors as a tensor source.
pub(crate) struct Mmapped(MmapedSafetensors);

impl Mmapped {
    /// Maps `files` (one checkpoint, possibly sharded) after checking each one's length.
    pub(crate) fn open(files: &[PathBuf]) -> Result<Self> {
        for f in files {
            check_length(f)?;
        }
        // SAFETY: the files are not modified while mapped; the hub cache only adds files.
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| {
            Error::Load(format!(
                "cannot read the safetensors {}: {e}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Ok(Mmapped(st))
    }
}

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

/// A safetensors file is an 8-byte header length n, an n-byte JSON header, then the data,
/// whose length is the largest `data_offsets` end: a file of any other length is truncated
/// or corrupt, which safetensors reports only as "incomplete metadata".
fn check_length(path: &Path) -> Result<()> {
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let corrupt = |what: String| corrupt(path, what);
    let mut len = [0u8; 8];
    if size < 8 {
        return Err(corrupt(format!(
            "it is {size} bytes, shorter than the 8 bytes that give its header's length"
        )));
    }
    file.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(corrupt(format!(
            "its first 8 bytes give a header of {n} bytes, which no safetensors file has"
        )));
    }
    if 8 + n > size {
        return Err(corrupt(format!(
            "it is {size} bytes, but its header alone takes {} bytes",
            8 + n
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("its header is not valid JSON ({e})")))?;
    let data = header
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let promised = 8 + n + data;
    if size != promised {
        return Err(corrupt(format!(
            "it is {size} bytes, but its header promises {promised} (8 + a {n}-byte header + {data} bytes of tensors)"
        )));
    }
    Ok(())
}

fn corrupt(path: &Path, what: String) -> Error {
    // In a hub cache the file is a link into blobs/: the blob is what has to go.
    let target = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_symlink())
        .then(|| std::fs::canonicalize(path).ok())
        .flatten()
        .map(|t| format!(" and {}, the file it links to", t.display()))
        .unwrap_or_default();
    Error::Load(format!(
        "{} is truncated or corrupt: {what}. An interrupted download leaves such a file: delete it{target}, then download it again",
        path.display()
    ))
}
