//! Loading a GGUF file: config from the metadata, every tensor dequantized (to f32, or to
//! bf16 / f16 a slab of rows at a time), and the tokenizer rebuilt from the vocabulary.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::config::{Activation, Config};
use crate::model::transformer::{BlockWeights, HookedTransformer, Weights};
use crate::tokenizer::{GgufVocab, Tokenizer};

/// Gemma 3's fixed conventions that the GGUF metadata does not carry.
const GEMMA3_SLIDING_PATTERN: usize = 6;
const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;

struct Gguf {
    content: Content,
    file: File,
    path: String,
}

impl Gguf {
    fn open(path: &Path) -> Result<Self> {
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
            file,
            path: path.display().to_string(),
        })
    }

    fn meta(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::Load(format!("{}: GGUF metadata has no `{key}`", self.path)))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key)?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            _ => {
                return Err(Error::Load(format!(
                    "{}: `{key}` is not a count: {v:?}",
                    self.path
                )))
            }
        };
        Ok(n as usize)
    }

    fn f64(&self, key: &str) -> Result<f64> {
        match self.meta(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            v => Err(Error::Load(format!(
                "{}: `{key}` is not a float: {v:?}",
                self.path
            ))),
        }
    }

    fn opt_u32(&self, key: &str) -> Option<u32> {
        self.content.metadata.get(key).and_then(|v| v.to_u32().ok())
    }

    fn tensor(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        self.tensor_as(name, device, DType::F32)
    }

    /// Dequantizes one tensor and converts it; the quantized copy is freed right after, so
    /// loading never holds two copies of the weights.
    fn tensor_as(&mut self, name: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        let q = self
            .content
            .tensor(&mut self.file, name, device)
            .map_err(|e| Error::Load(format!("{}: tensor `{name}`: {e}", self.path)))?;
        match dtype {
            DType::BF16 | DType::F16 if device.is_cpu() => Ok(dequantize_in_slabs(&q, dtype)?),
            _ => Ok(q.dequantize(device)?.to_dtype(dtype)?),
        }
    }

    fn opt_tensor(&mut self, name: &str, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
        if self.content.tensor_infos.contains_key(name) {
            Ok(Some(self.tensor_as(name, device, dtype)?))
        } else {
            Ok(None)
        }
    }

    fn vocab(&self) -> Result<GgufVocab> {
        let arr = |key: &str| -> Result<&Vec<Value>> {
            self.meta(key)?
                .to_vec()
                .map_err(|e| Error::Load(format!("{}: `{key}`: {e}", self.path)))
        };
        let tokens = arr("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let scores = arr("tokenizer.ggml.scores")?
            .iter()
            .map(|v| v.to_f32())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let types = arr("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| v.to_i32())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(GgufVocab {
            tokens,
            scores,
            types,
            bos: self.opt_u32("tokenizer.ggml.bos_token_id"),
            eos: self.opt_u32("tokenizer.ggml.eos_token_id"),
            pad: self.opt_u32("tokenizer.ggml.padding_token_id"),
            unk: self.opt_u32("tokenizer.ggml.unknown_token_id"),
            add_bos: self
                .content
                .metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(true),
        })
    }
}

impl HookedTransformer {
    /// Loads a GGUF model (Gemma 3 today), dequantizing every tensor to f32 on the CPU.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_gguf_on(path, &Device::Cpu)
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
    /// weights stay f32).
    pub fn from_gguf_with(
        path: impl AsRef<Path>,
        opts: &crate::model::LoadOptions,
    ) -> Result<Self> {
        let device = &opts.device;
        let dtype = opts.dtype;
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::ModelNotFound {
                path: path.to_path_buf(),
                hint:
                    "pass the path of a .gguf file, or run `mechinterp fetch` for the default model"
                        .into(),
            });
        }
        let mut g = Gguf::open(path)?;
        let arch = g.meta("general.architecture")?.to_string()?.clone();
        if arch != "gemma3" {
            return Err(Error::Load(format!(
                "{}: GGUF architecture `{arch}` is not supported; supported GGUF architectures: gemma3 (other models load from safetensors)",
                g.path
            )));
        }
        let vocab = g.vocab()?;
        let cfg = gemma3_config(&g, &vocab)?;
        let embed = g.tensor_as("token_embd.weight", device, dtype)?;
        let unembed = g.opt_tensor("output.weight", device, dtype)?;
        let ln_final = g.tensor("output_norm.weight", device)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            // Norm weights stay f32 (the GGUF's already include Gemma's +1); matrices take `dtype`.
            let mut t =
                |s: &str, dt: DType| g.tensor_as(&format!("blk.{l}.{s}.weight"), device, dt);
            let f = DType::F32;
            blocks.push(BlockWeights {
                ln1: t("attn_norm", f)?,
                ln1_post: Some(t("post_attention_norm", f)?),
                ln2: t("ffn_norm", f)?,
                ln2_post: Some(t("post_ffw_norm", f)?),
                w_q: t("attn_q", dtype)?,
                w_k: t("attn_k", dtype)?,
                w_v: t("attn_v", dtype)?,
                w_o: t("attn_output", dtype)?,
                b_q: None,
                b_k: None,
                b_v: None,
                b_o: None,
                q_norm: Some(t("attn_q_norm", f)?),
                k_norm: Some(t("attn_k_norm", f)?),
                w_gate: t("ffn_gate", dtype)?,
                w_up: t("ffn_up", dtype)?,
                w_down: t("ffn_down", dtype)?,
            });
        }
        let tokenizer = Tokenizer::from_gguf_vocab(&vocab)?;
        let w = Weights {
            embed,
            unembed,
            ln_final,
            blocks,
        };
        HookedTransformer::new(cfg, w, Some(tokenizer))
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

fn gemma3_config(g: &Gguf, vocab: &GgufVocab) -> Result<Config> {
    let a = "gemma3";
    let n_layers = g.usize(&format!("{a}.block_count"))?;
    let d_model = g.usize(&format!("{a}.embedding_length"))?;
    let n_heads = g.usize(&format!("{a}.attention.head_count"))?;
    let n_kv_heads = g.usize(&format!("{a}.attention.head_count_kv"))?;
    let d_head = g.usize(&format!("{a}.attention.key_length"))?;
    let window = g.usize(&format!("{a}.attention.sliding_window"))?;
    let global_theta = g.f64(&format!("{a}.rope.freq_base")).unwrap_or(1_000_000.0);
    let d_vocab = g
        .content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .unwrap_or(vocab.tokens.len());
    let query_pre_attn_scalar = d_head as f64;
    let cfg = Config {
        architecture: a.into(),
        n_layers,
        n_heads,
        n_kv_heads,
        d_model,
        d_head,
        d_mlp: g.usize(&format!("{a}.feed_forward_length"))?,
        d_vocab,
        rms_norm_eps: g.f64(&format!("{a}.attention.layer_norm_rms_epsilon"))?,
        attn_scale: 1.0 / query_pre_attn_scalar.sqrt(),
        attn_softcap: None,
        final_softcap: None,
        embed_scale: Some((d_model as f64).sqrt()),
        qk_norm: true,
        post_norms: true,
        qkv_bias: false,
        o_bias: false,
        activation: Activation::GeluTanh,
        tied_embeddings: !g.content.tensor_infos.contains_key("output.weight"),
        layers: Config::gemma3_layers(
            n_layers,
            GEMMA3_SLIDING_PATTERN,
            window,
            GEMMA3_LOCAL_ROPE_BASE,
            global_theta,
        ),
        max_position: g.usize(&format!("{a}.context_length")).unwrap_or(32_768),
        bos_token_id: vocab.bos.unwrap_or(2),
        eos_token_id: vocab.eos.unwrap_or(1),
        pad_token_id: vocab.pad.unwrap_or(0),
    };
    Ok(cfg)
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
    /// needed), a `.gguf` file, a local folder of safetensors, or a Hugging Face repo id.
    pub fn from_spec(spec: &str) -> Result<Self> {
        Self::from_spec_with(spec, &crate::model::LoadOptions::default())
    }

    /// [`HookedTransformer::from_spec`] with load options (dtype, device…) for hub models.
    pub fn from_spec_with(spec: &str, opts: &crate::model::LoadOptions) -> Result<Self> {
        let p = Path::new(spec);
        match spec {
            "gemma3-270m" | "gemma-3-270m" | "default" => {
                let path = crate::fetch::fetch_default_model(&crate::fetch::FetchOptions::default())?;
                Self::from_gguf_with(path, opts)
            }
            _ if spec.ends_with(".gguf") || p.is_file() => Self::from_gguf_with(p, opts),
            _ if p.is_dir() => Self::from_local_dir_with(p, opts),
            _ if is_repo_id(spec) => Self::from_pretrained_with(spec, opts),
            other => Err(Error::ModelNotFound {
                path: other.into(),
                hint: "a model is `gemma3-270m` (the default), the path of a .gguf file, a folder with config.json and safetensors, or a Hugging Face repo id such as Qwen/Qwen2.5-3B".into(),
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
