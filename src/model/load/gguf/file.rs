//! A GGUF file's metadata: opened once, read through typed getters that name the key and
//! the file in every error, and the tokenizer section.

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, Result};
use crate::model::arch::{Arch, SUPPORTED_GGUF};
use crate::tokenizer::GgufVocab;

/// An open GGUF file: its metadata and tensor index, and the file to read tensors from.
pub(crate) struct Gguf {
    pub(super) content: Content,
    pub(super) file: RefCell<File>,
    pub(super) path: String,
}

impl Gguf {
    /// Reads the metadata and tensor index of the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let mut file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let content = Content::read(&mut file).map_err(|e| {
            Error::Load(format!(
                "{} is not a readable GGUF file: {e}",
                path.display()
            ))
        })?;
        Ok(Gguf {
            content,
            file: RefCell::new(file),
            path: path.display().to_string(),
        })
    }

    pub(super) fn err(&self, msg: String) -> Error {
        Error::Load(format!("{}: {msg}", self.path))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub(super) fn meta(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            Value::Array(_) => {
                return Err(self.err(format!("`{key}` differs per layer, which is not supported")))
            }
            _ => return Err(self.err(format!("`{key}` is not a count: {v:?}"))),
        };
        Ok(Some(n as usize))
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.err(format!("`{key}` is not a float: {v:?}"))),
        }
    }

    pub(super) fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    pub(super) fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }

    pub(super) fn opt_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| v.to_u32().ok())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.opt_array(key, |v| v.to_string().cloned())?
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    /// The array at `key`, each element converted by `f`; `None` when the key is absent.
    pub(super) fn opt_array<T>(
        &self,
        key: &str,
        f: impl Fn(&Value) -> candle_core::Result<T>,
    ) -> Result<Option<Vec<T>>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        let v = self
            .array(key)?
            .iter()
            .map(f)
            .collect::<candle_core::Result<Vec<T>>>()
            .map_err(|e| self.err(format!("`{key}`: {e}")))?;
        Ok(Some(v))
    }

    pub(super) fn array(&self, key: &str) -> Result<&Vec<Value>> {
        self.meta(key)?
            .to_vec()
            .map_err(|e| self.err(format!("`{key}`: {e}")))
    }

    /// The tokenizer section, for either `tokenizer.ggml.model` we read.
    pub(crate) fn vocab(&self) -> Result<GgufVocab> {
        let model = self.opt_str("tokenizer.ggml.model").unwrap_or("llama");
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let scores = self
            .opt_array("tokenizer.ggml.scores", |v| v.to_f32())?
            .unwrap_or_else(|| vec![0.0; n]);
        let types = self
            .opt_array("tokenizer.ggml.token_type", |v| v.to_i32())?
            .unwrap_or_else(|| vec![1; n]);
        let merges = self
            .opt_array("tokenizer.ggml.merges", |v| v.to_string().cloned())?
            .unwrap_or_default();
        // llama.cpp's defaults per tokenizer kind when the file does not say.
        let spm = model == "llama";
        Ok(GgufVocab {
            model: model.to_string(),
            pre: self
                .opt_str("tokenizer.ggml.pre")
                .unwrap_or("default")
                .to_string(),
            tokens,
            scores,
            types,
            merges,
            bos: self.opt_u32("tokenizer.ggml.bos_token_id"),
            eos: self.opt_u32("tokenizer.ggml.eos_token_id"),
            pad: self.opt_u32("tokenizer.ggml.padding_token_id"),
            unk: self.opt_u32("tokenizer.ggml.unknown_token_id"),
            add_bos: self.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(spm),
            add_space_prefix: self
                .opt_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(spm),
        })
    }

    /// The architecture named by `general.architecture`.
    pub(crate) fn arch(&self) -> Result<Arch> {
        let name = self.meta("general.architecture")?.to_string()?.clone();
        Arch::from_gguf(&name).map_err(|_| {
            self.err(format!(
                "GGUF architecture `{name}` is not supported; supported: {}",
                SUPPORTED_GGUF.join(", ")
            ))
        })
    }
}
