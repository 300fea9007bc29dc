//! GGUF files (llama.cpp, Ollama, LM Studio): every hyper-parameter from the metadata, read the
//! way llama.cpp reads it, or refused by name where the metadata cannot tell us; tensors
//! dequantized (to f32, or to bf16 / f16 a slab of rows at a time) through the architecture
//! adapter; the tokenizer rebuilt from the vocabulary.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::arch::{Arch, Format, TensorSource};
use crate::model::config::{Activation, Config, LayerConfig, RopeScaling};
use crate::model::transformer::HookedTransformer;
use crate::tokenizer::{GgufVocab, Tokenizer};

/// An open GGUF file: its metadata and tensor index, and the file to read tensors from.
pub(crate) struct Gguf {
    content: Content,
    file: RefCell<File>,
    path: String,
}

impl Gguf {
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

    fn err(&self, msg: String) -> Error {
        Error::Load(format!("{}: {msg}", self.path))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
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

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.err(format!("`{key}` is not a float: {v:?}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }

    fn opt_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| v.to_u32().ok())
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Dequantizes one tensor and converts it; the quantized copy is freed right after, so
    /// loading never holds two copies of the weights.
    fn read(&self, name: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        let q = self.stored(name, device)?;
        match dtype {
            DType::BF16 | DType::F16 if device.is_cpu() => Ok(dequantize_in_slabs(&q, dtype)?),
            _ => Ok(q.dequantize(device)?.to_dtype(dtype)?),
        }
    }

    /// One tensor as the file stores it (quantised blocks), read into memory.
    fn stored(&self, name: &str, device: &Device) -> Result<QTensor> {
        let mut file = self.file.borrow_mut();
        self.content
            .tensor(&mut *file, name, device)
            .map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.opt_array(key, |v| v.to_string().cloned())?
            .ok_or_else(|| self.err(format!("GGUF metadata has no `{key}`")))
    }

    /// The array at `key`, each element converted by `f`; `None` when the key is absent.
    fn opt_array<T>(
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

    fn array(&self, key: &str) -> Result<&Vec<Value>> {
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
                crate::model::arch::SUPPORTED_GGUF.join(", ")
            ))
        })
    }

    /// The model's [`Config`], every number from the metadata as llama.cpp reads it.
    pub(crate) fn config(&self, arch: Arch, vocab: &GgufVocab) -> Result<Config> {
        let p = arch.name();
        let k = |s: &str| format!("{p}.{s}");
        let n_layers = self.usize(&k("block_count"))?;
        let d_model = self.usize(&k("embedding_length"))?;
        let n_heads = self.usize(&k("attention.head_count"))?;
        let n_kv_heads = self
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(n_heads);
        let d_head = self
            .opt_usize(&k("attention.key_length"))?
            .unwrap_or(d_model / n_heads.max(1));
        if let Some(v) = self.opt_usize(&k("attention.value_length"))? {
            if v != d_head {
                return Err(self.err(format!(
                    "`{}` = {v} differs from the key length {d_head}, which is not supported",
                    k("attention.value_length")
                )));
            }
        }
        if let Some(r) = self.opt_usize(&k("rope.dimension_count"))? {
            if r != d_head {
                return Err(self.err(format!(
                    "`{}` = {r}: RoPE on {r} of {d_head} head dimensions is not supported",
                    k("rope.dimension_count")
                )));
            }
        }
        if let Some(e) = self.opt_usize(&k("expert_count"))?.filter(|&e| e > 0) {
            return Err(self.err(format!(
                "`{}` = {e}: mixture-of-experts models are not supported",
                k("expert_count")
            )));
        }
        if self.opt_bool(&k("attention.causal")) == Some(false) {
            return Err(self.err(format!(
                "`{}` = false: non-causal models are not supported",
                k("attention.causal")
            )));
        }
        let theta = self.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let scaling = self.rope_scaling(arch, &k)?;
        let (window, swa) = self.sliding(arch, n_layers, &k)?;
        let swa_theta = match arch {
            // llama.cpp's Gemma 3 local layers: base 10 000 unless the file says, no scaling.
            Arch::Gemma3 => self.opt_f64(&k("rope.freq_base_swa"))?.unwrap_or(10_000.0),
            _ => self.opt_f64(&k("rope.freq_base_swa"))?.unwrap_or(theta),
        };
        let layers = swa
            .iter()
            .map(|&s| LayerConfig {
                sliding_window: if s { window } else { None },
                rope_theta: if s { swa_theta } else { theta },
                rope_scaling: if s && arch == Arch::Gemma3 {
                    None
                } else {
                    scaling.clone()
                },
            })
            .collect();
        let gemma = arch.is_gemma();
        let (attn_softcap, final_softcap) = match arch {
            // llama.cpp's defaults for Gemma 2 are 50 and 30.
            Arch::Gemma2 => (
                Some(self.opt_f64(&k("attn_logit_softcapping"))?.unwrap_or(50.0)),
                Some(self.opt_f64(&k("final_logit_softcapping"))?.unwrap_or(30.0)),
            ),
            Arch::Gemma3 => (None, self.opt_f64(&k("final_logit_softcapping"))?),
            _ => (None, None),
        };
        let (q_bias, o_bias) = Arch::gguf_bias_names();
        let d_vocab = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .unwrap_or(vocab.tokens.len());
        let cfg = Config {
            architecture: p.into(),
            n_layers,
            n_heads,
            n_kv_heads,
            d_model,
            d_head,
            d_mlp: self.usize(&k("feed_forward_length"))?,
            d_vocab,
            rms_norm_eps: self
                .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| {
                    self.err(format!(
                        "GGUF metadata has no `{}`",
                        k("attention.layer_norm_rms_epsilon")
                    ))
                })?,
            attn_scale: self.attn_scale(arch, n_layers, d_model, n_heads, d_head, &k)?,
            attn_softcap,
            final_softcap,
            embed_scale: gemma.then(|| (d_model as f64).sqrt()),
            qk_norm: arch.has_qk_norm(),
            post_norms: gemma,
            qkv_bias: self.has(&q_bias),
            o_bias: self.has(&o_bias),
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            tied_embeddings: !self.has("output.weight"),
            layers,
            max_position: self.usize(&k("context_length"))?,
            bos_token_id: vocab.bos.or(vocab.eos).unwrap_or(0),
            eos_token_id: vocab.eos.unwrap_or(0),
            pad_token_id: vocab.pad.or(vocab.eos).unwrap_or(0),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// RoPE scaling: `rope.scaling.type` / `.factor`, or llama.cpp's `rope_freqs` tensor (its
    /// converter's form of Llama 3 scaling).
    fn rope_scaling(&self, arch: Arch, k: &dyn Fn(&str) -> String) -> Result<Option<RopeScaling>> {
        let kind = self.opt_str(&k("rope.scaling.type")).unwrap_or("linear");
        let factor = match self.opt_f64(&k("rope.scaling.factor"))? {
            Some(f) => Some(f),
            None => self.opt_f64(&k("rope.scale_linear"))?,
        };
        let mut scaling = match kind {
            "none" => None,
            "linear" => factor
                .filter(|&f| f != 0.0 && f != 1.0)
                .map(|factor| RopeScaling::Linear { factor }),
            other => {
                return Err(self.err(format!(
                    "`{}` = {other} is not supported (supported: none, linear, and Llama 3's rope_freqs)",
                    k("rope.scaling.type")
                )))
            }
        };
        if self.has("rope_freqs.weight") {
            if arch != Arch::Llama || scaling.is_some() {
                return Err(self.err(format!(
                    "a `rope_freqs` tensor on a {} model{} is not supported",
                    arch.name(),
                    if scaling.is_some() {
                        " with linear scaling"
                    } else {
                        ""
                    }
                )));
            }
            let f = self.read("rope_freqs.weight", &Device::Cpu, DType::F32)?;
            let f: Vec<f64> = f
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            scaling = Some(RopeScaling::Factors(f));
        }
        Ok(scaling)
    }

    /// The sliding window and which layers use it, as llama.cpp decides per family.
    fn sliding(
        &self,
        arch: Arch,
        n_layers: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(Option<usize>, Vec<bool>)> {
        let key = k("attention.sliding_window");
        let window = self.opt_usize(&key)?.filter(|&w| w > 0);
        let default_pattern = match arch {
            // Gemma 2 always slides (window 4096 when the file does not say).
            Arch::Gemma2 => {
                return Ok((Some(window.unwrap_or(4096)), self.pattern(n_layers, 2, k)?))
            }
            Arch::Gemma3 => 6,
            _ => {
                if let Some(w) = window {
                    return Err(self.err(format!(
                        "`{key}` = {w} on a {} model: llama.cpp ignores a sliding window in this family, so what the file means is unclear; refusing rather than guessing",
                        arch.name()
                    )));
                }
                return Ok((None, vec![false; n_layers]));
            }
        };
        match window {
            Some(w) => Ok((Some(w), self.pattern(n_layers, default_pattern, k)?)),
            None => Ok((None, vec![false; n_layers])),
        }
    }

    /// `attention.sliding_window_pattern`: per-layer booleans, or n (every n-th layer global).
    fn pattern(
        &self,
        n_layers: usize,
        default: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<Vec<bool>> {
        let key = k("attention.sliding_window_pattern");
        if let Some(Value::Array(a)) = self.get(&key) {
            let v: Vec<bool> = a.iter().filter_map(|x| x.to_bool().ok()).collect();
            if v.len() != n_layers {
                return Err(self.err(format!(
                    "`{key}` has {} booleans for {n_layers} layers",
                    v.len()
                )));
            }
            return Ok(v);
        }
        let n = self.opt_usize(&key)?.unwrap_or(default);
        Ok((0..n_layers).map(|l| n == 0 || l % n < n - 1).collect())
    }

    /// 1/√(query scale). Gemma's query_pre_attn_scalar is not in the metadata: llama.cpp knows it
    /// for the sizes it recognises by layer count (27B: d_model / n_heads; the others: the head
    /// size), and where both rules agree there is nothing to know; anything else is refused.
    fn attn_scale(
        &self,
        arch: Arch,
        n_layers: usize,
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<f64> {
        let explicit = self.opt_f64(&k("attention.scale"))?;
        if !arch.is_gemma() {
            return Ok(match (arch, explicit) {
                (Arch::Llama, Some(s)) if s != 0.0 => s,
                (_, Some(s)) if s != 0.0 => {
                    return Err(self.err(format!(
                        "`{}` = {s} on a {} model is not supported",
                        k("attention.scale"),
                        arch.name()
                    )))
                }
                _ => 1.0 / (d_head as f64).sqrt(),
            });
        }
        let per_head = d_model / n_heads.max(1);
        let known: &[(usize, bool)] = match arch {
            // (layers, is 27B)
            Arch::Gemma2 => &[(26, false), (42, false), (46, true)],
            _ => &[
                (18, false),
                (26, false),
                (32, false),
                (34, false),
                (48, false),
                (62, true),
            ],
        };
        let scalar = match known.iter().find(|(n, _)| *n == n_layers) {
            Some((_, true)) => per_head,
            Some((_, false)) => d_head,
            None if per_head == d_head => d_head,
            None => {
                return Err(self.err(format!(
                    "this {} file has {n_layers} layers, a size llama.cpp does not know, and its query scaling cannot be told from the metadata (head size {d_head}, d_model / n_heads = {per_head}); load the Hugging Face checkpoint instead, whose config.json has query_pre_attn_scalar",
                    arch.name()
                )))
            }
        };
        Ok(1.0 / (scalar as f64).sqrt())
    }
}

impl TensorSource for Gguf {
    fn format(&self) -> Format {
        Format::Gguf
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        if !self.has(name) {
            return Ok(None);
        }
        Ok(Some(self.read(name, device, dtype)?))
    }

    fn quantised(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        if !self.has(name) {
            return Ok(None);
        }
        Ok(Some(self.stored(name, device)?))
    }
}

impl HookedTransformer {
    /// Loads a GGUF model (gemma2, gemma3, llama, qwen2, qwen3), dequantizing every tensor to
    /// f32, on the CPU (or the device `MECHINTERP_DEVICE` names).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_gguf_with(path, &crate::model::LoadOptions::from_env()?)
    }

    /// Loads a GGUF model onto a device.
    pub fn from_gguf_on(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_gguf_with(
            path,
            &crate::model::LoadOptions {
                device: device.clone(),
                ..Default::default()
            },
        )
    }

    /// Loads a GGUF model with options: `dtype: BF16` halves the weights' memory (norm
    /// weights stay f32); `weights: Stream` or `Quantized` keeps the file's quantised blocks
    /// in memory instead (see [`crate::model::WeightMode`]).
    pub fn from_gguf_with(
        path: impl AsRef<Path>,
        opts: &crate::model::LoadOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::ModelNotFound {
                path: path.to_path_buf(),
                hint:
                    "pass the path of a .gguf file, or run `mechinterp fetch` for the default model"
                        .into(),
            });
        }
        opts.check()?;
        let g = Gguf::open(path)?;
        let arch = g.arch()?;
        let vocab = g.vocab()?;
        let cfg = g.config(arch, &vocab)?;
        let w = arch.weights(&cfg, &g, opts.dtype, opts.weights, &opts.device)?;
        let tokenizer = Tokenizer::from_gguf_vocab(&vocab)?;
        HookedTransformer::new(cfg, w, Some(tokenizer))
    }
}

impl Tokenizer {
    /// The tokenizer stored in a GGUF file (`tokenizer.ggml.model` llama or gpt2).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Tokenizer::from_gguf_vocab(&Gguf::open(path.as_ref())?.vocab()?)
    }
}

/// Dequantizes to a half-precision dtype a slab of rows at a time, straight into the final
/// buffer: candle's own path goes through an f32 copy of the whole tensor, which for the
/// 262 144 × 640 embedding is a 671 MB transient, more than all half-precision weights.
fn dequantize_in_slabs(q: &QTensor, dtype: DType) -> candle_core::Result<Tensor> {
    const SLAB_ROWS: usize = 4096;
    let dims = q.shape().dims().to_vec();
    let (bs, ts) = (q.dtype().block_size(), q.dtype().type_size());
    let row = dims.last().copied().unwrap_or(1);
    if dims.len() < 2 || row % bs != 0 {
        return q.dequantize(&Device::Cpu)?.to_dtype(dtype);
    }
    let rows = q.shape().elem_count() / row;
    let row_bytes = row / bs * ts;
    let data = q.data()?;
    fn collect<T: candle_core::WithDType>(
        q: &QTensor,
        data: &[u8],
        rows: usize,
        row: usize,
        row_bytes: usize,
        dtype: DType,
    ) -> candle_core::Result<Vec<T>> {
        let mut out = Vec::with_capacity(rows * row);
        for start in (0..rows).step_by(SLAB_ROWS) {
            let n = SLAB_ROWS.min(rows - start);
            let bytes = &data[start * row_bytes..(start + n) * row_bytes];
            let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, q.dtype())?;
            let slab = QTensor::new(storage, (n, row))?.dequantize(&Device::Cpu)?;
            out.extend(slab.to_dtype(dtype)?.flatten_all()?.to_vec1::<T>()?);
        }
        Ok(out)
    }
    match dtype {
        DType::BF16 => {
            let v = collect::<half::bf16>(q, &data, rows, row, row_bytes, dtype)?;
            Tensor::from_vec(v, dims, &Device::Cpu)
        }
        _ => {
            let v = collect::<half::f16>(q, &data, rows, row, row_bytes, dtype)?;
            Tensor::from_vec(v, dims, &Device::Cpu)
        }
    }
}

/// Names of the tensors in a GGUF file with their shapes, for inspection.
pub fn gguf_tensor_shapes(path: impl AsRef<Path>) -> Result<HashMap<String, Vec<usize>>> {
    let g = Gguf::open(path.as_ref())?;
    Ok(g.content
        .tensor_infos
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.dims().to_vec()))
        .collect())
}

impl HookedTransformer {
    /// The default model, Gemma 3 270M (base): fetched into the cache on first use
    /// (see [`crate::fetch`]), then loaded.
    pub fn gemma3_270m() -> Result<Self> {
        let path = crate::fetch::fetch_default_model(&crate::fetch::FetchOptions::default())?;
        Self::from_gguf(path)
    }
}

impl HookedTransformer {
    /// Loads a model named on the command line: `gemma3-270m` (the default model, fetched if
    /// needed), `ollama:NAME[:TAG]`, a `.gguf` file, a local folder of safetensors, or a
    /// Hugging Face repo id.
    pub fn from_spec(spec: &str) -> Result<Self> {
        Self::from_spec_with(spec, &crate::model::LoadOptions::from_env()?)
    }

    /// [`HookedTransformer::from_spec`] with load options (dtype, device…).
    pub fn from_spec_with(spec: &str, opts: &crate::model::LoadOptions) -> Result<Self> {
        let p = Path::new(spec);
        match spec {
            "gemma3-270m" | "gemma-3-270m" | "default" => {
                let path = crate::fetch::fetch_default_model(&crate::fetch::FetchOptions::default())?;
                Self::from_gguf_with(path, opts)
            }
            _ if spec.starts_with("ollama:") => {
                let path = crate::model::ollama::resolve(&spec["ollama:".len()..])?;
                Self::from_gguf_with(path, opts)
            }
            _ if spec.ends_with(".gguf") || p.is_file() => Self::from_gguf_with(p, opts),
            _ if p.is_dir() => Self::from_local_dir_with(p, opts),
            _ if is_repo_id(spec) => Self::from_pretrained_with(spec, opts),
            other => Err(Error::ModelNotFound {
                path: other.into(),
                hint: "a model is `gemma3-270m` (the default), `ollama:NAME[:TAG]`, the path of a .gguf file, a folder with config.json and safetensors, or a Hugging Face repo id such as Qwen/Qwen2.5-3B".into(),
            }),
        }
    }
}

/// `org/name` with the characters the hub allows.
fn is_repo_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(s.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}
