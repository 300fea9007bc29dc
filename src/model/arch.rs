//! Architecture adapters: for each supported family, its names in a Hugging Face checkpoint and
//! in a GGUF file (config and tensors), and how those tensors differ from what the forward pass
//! expects. A safetensors folder and a GGUF file are two [`TensorSource`]s for the same code.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::matrix::{permute_rows, Matrix, WeightMode};
use crate::model::transformer::{BlockWeights, Weights};

/// The `architectures` entries we load from config.json.
pub const SUPPORTED: &[&str] = &[
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// The `general.architecture` values we load from GGUF files.
pub const SUPPORTED_GGUF: &[&str] = &["gemma2", "gemma3", "llama", "qwen2", "qwen3"];

/// A supported architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 2: soft-capping, alternating sliding window, (1 + w) norms, post-norms.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norm, 5 local : 1 global layers, two RoPE bases.
    Gemma3,
    /// Llama (1–3.x, SmolLM, Mistral-style): RoPE scaling, optional attention bias.
    Llama,
    /// Qwen 2 / 2.5: q/k/v biases.
    Qwen2,
    /// Qwen 3: q/k norm.
    Qwen3,
}

/// Which naming a tensor source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face safetensors (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
    /// llama.cpp's GGUF (`blk.0.attn_q.weight`).
    Gguf,
}

/// Where tensors come from: memory-mapped safetensors or a GGUF file.
pub trait TensorSource {
    /// The naming this source uses.
    fn format(&self) -> Format;
    /// The named tensor on `device`, converted to `dtype`; `None` when absent.
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Option<Tensor>>;
    /// The named tensor as stored (quantised blocks), for weights kept quantised; `None`
    /// when absent. Only GGUF files have them.
    fn quantised(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        let _ = (name, device);
        Err(Error::Load(
            "only GGUF files can keep their weights quantised (stream / quantized); load safetensors as f32 or bf16".into(),
        ))
    }
}

/// One weight of the model, named independently of any file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W {
    Embed,
    Unembed,
    FinalNorm,
    Ln1,
    Ln1Post,
    Ln2,
    Ln2Post,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    OBias,
    QNorm,
    KNorm,
    Gate,
    Up,
    Down,
}

impl Arch {
    /// Reads `architectures` from a config.json.
    pub fn from_config(cfg: &Value) -> Result<Arch> {
        let archs: Vec<&str> = cfg
            .get("architectures")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        for a in &archs {
            match *a {
                "Gemma2ForCausalLM" => return Ok(Arch::Gemma2),
                "Gemma3ForCausalLM" => return Ok(Arch::Gemma3),
                "LlamaForCausalLM" => return Ok(Arch::Llama),
                "Qwen2ForCausalLM" => return Ok(Arch::Qwen2),
                "Qwen3ForCausalLM" => return Ok(Arch::Qwen3),
                _ => {}
            }
        }
        let named = if archs.is_empty() {
            "config.json has no `architectures` entry".to_string()
        } else {
            format!("architecture {} is not supported", archs.join(", "))
        };
        let hint = if archs.contains(&"Gemma3ForConditionalGeneration") {
            " (for multimodal Gemma 3 checkpoints, load the text-only Gemma3ForCausalLM variant, e.g. google/gemma-3-1b-pt)"
        } else {
            ""
        };
        Err(Error::Load(format!(
            "{named}; supported architectures: {}{hint}",
            SUPPORTED.join(", ")
        )))
    }

    /// Reads a GGUF's `general.architecture`.
    pub fn from_gguf(name: &str) -> Result<Arch> {
        Ok(match name {
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(Error::Load(format!(
                    "GGUF architecture `{other}` is not supported; supported: {}",
                    SUPPORTED_GGUF.join(", ")
                )))
            }
        })
    }

    /// The short name (also the GGUF metadata prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Gemma's family traits: (1 + w) norms in HF files, post-norms, scaled embeddings.
    pub fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }

    /// RMSNorm on q and k per head.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Qwen3)
    }

    /// Maps config.json (either transformers dialect) onto the one [`Config`].
    pub fn config(self, j: &Value) -> Result<Config> {
        crate::model::hf_config::config(self, j)
    }

    fn hf_name(self, w: W, l: usize) -> String {
        let gemma = self.is_gemma();
        let s = match w {
            W::Embed => return "model.embed_tokens.weight".into(),
            W::Unembed => return "lm_head.weight".into(),
            W::FinalNorm => return "model.norm.weight".into(),
            W::Ln1 => "input_layernorm.weight",
            // In Llama-style checkpoints "post_attention_layernorm" is the pre-MLP norm.
            W::Ln1Post | W::Ln2 if !gemma => "post_attention_layernorm.weight",
            W::Ln1Post => "post_attention_layernorm.weight",
            W::Ln2 => "pre_feedforward_layernorm.weight",
            W::Ln2Post => "post_feedforward_layernorm.weight",
            W::Q => "self_attn.q_proj.weight",
            W::K => "self_attn.k_proj.weight",
            W::V => "self_attn.v_proj.weight",
            W::O => "self_attn.o_proj.weight",
            W::QBias => "self_attn.q_proj.bias",
            W::KBias => "self_attn.k_proj.bias",
            W::VBias => "self_attn.v_proj.bias",
            W::OBias => "self_attn.o_proj.bias",
            W::QNorm => "self_attn.q_norm.weight",
            W::KNorm => "self_attn.k_norm.weight",
            W::Gate => "mlp.gate_proj.weight",
            W::Up => "mlp.up_proj.weight",
            W::Down => "mlp.down_proj.weight",
        };
        format!("model.layers.{l}.{s}")
    }

    /// llama.cpp's tensor names are the same for every family.
    fn gguf_name(w: W, l: usize) -> String {
        let s = match w {
            W::Embed => return "token_embd.weight".into(),
            W::Unembed => return "output.weight".into(),
            W::FinalNorm => return "output_norm.weight".into(),
            W::Ln1 => "attn_norm.weight",
            W::Ln1Post => "post_attention_norm.weight",
            W::Ln2 => "ffn_norm.weight",
            W::Ln2Post => "post_ffw_norm.weight",
            W::Q => "attn_q.weight",
            W::K => "attn_k.weight",
            W::V => "attn_v.weight",
            W::O => "attn_output.weight",
            W::QBias => "attn_q.bias",
            W::KBias => "attn_k.bias",
            W::VBias => "attn_v.bias",
            W::OBias => "attn_output.bias",
            W::QNorm => "attn_q_norm.weight",
            W::KNorm => "attn_k_norm.weight",
            W::Gate => "ffn_gate.weight",
            W::Up => "ffn_up.weight",
            W::Down => "ffn_down.weight",
        };
        format!("blk.{l}.{s}")
    }

    /// Loads the weights from either source. Matrices come in `dtype`, or stay quantised as
    /// `mode` says; norms in f32, with Gemma's (1 + w) folded in (GGUF files already carry it).
    pub fn weights(
        self,
        cfg: &Config,
        src: &dyn TensorSource,
        dtype: DType,
        mode: WeightMode,
        device: &Device,
    ) -> Result<Weights> {
        let format = src.format();
        let name = |w: W, l: usize| match format {
            Format::Hf => self.hf_name(w, l),
            Format::Gguf => Self::gguf_name(w, l),
        };
        let opt = |w: W, l: usize, dt: DType| -> Result<Option<Tensor>> {
            let t = src.tensor(&name(w, l), dt, device)?;
            let Some(t) = t else { return Ok(None) };
            // llama.cpp's converter permutes the q / k rows of the llama family so that its
            // interleaved RoPE works; undo it (as transformers' GGUF loader does).
            let t = if format == Format::Gguf && self == Arch::Llama {
                match w {
                    W::Q | W::QBias => unpermute(&t, cfg.n_heads)?,
                    W::K | W::KBias => unpermute(&t, cfg.n_kv_heads)?,
                    _ => t,
                }
            } else {
                t
            };
            Ok(Some(t))
        };
        let get = |w: W, l: usize, dt: DType| -> Result<Tensor> {
            opt(w, l, dt)?.ok_or_else(|| {
                Error::Load(format!("the checkpoint has no tensor `{}`", name(w, l)))
            })
        };
        let norm = |w: W, l: usize| -> Result<Tensor> {
            let t = get(w, l, DType::F32)?;
            Ok(if self.is_gemma() && format == Format::Hf {
                (t + 1.0)?
            } else {
                t
            })
        };
        let when = |on: bool, w: W, l: usize| -> Result<Option<Tensor>> {
            if on {
                Ok(Some(norm(w, l)?))
            } else {
                Ok(None)
            }
        };
        let matrix = |w: W, l: usize| -> Result<Matrix> {
            if mode == WeightMode::Dense {
                return Ok(Matrix::Dense(get(w, l, dtype)?));
            }
            let q = src.quantised(&name(w, l), device)?.ok_or_else(|| {
                Error::Load(format!("the checkpoint has no tensor `{}`", name(w, l)))
            })?;
            // The same permutation as the dense path, moving whole rows of blocks.
            let q = match (format, self, w) {
                (Format::Gguf, Arch::Llama, W::Q | W::K) => {
                    let heads = if w == W::Q {
                        cfg.n_heads
                    } else {
                        cfg.n_kv_heads
                    };
                    let rows = q.shape().dims()[0];
                    let index =
                        Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
                    let from: Vec<usize> = unpermute(&index, heads)?
                        .flatten_all()?
                        .to_vec1::<u32>()?
                        .into_iter()
                        .map(|r| r as usize)
                        .collect();
                    permute_rows(&q, &from)?
                }
                _ => q,
            };
            Matrix::quantised(vec![Arc::new(q)], mode == WeightMode::Quantized)
        };
        let bias = |on: bool, w: W, l: usize| -> Result<Option<Tensor>> {
            if on {
                Ok(Some(get(w, l, dtype)?))
            } else {
                Ok(None)
            }
        };
        let embed = matrix(W::Embed, 0)?;
        let unembed = if cfg.tied_embeddings {
            None
        } else {
            Some(matrix(W::Unembed, 0)?)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            blocks.push(BlockWeights {
                ln1: norm(W::Ln1, l)?,
                ln1_post: when(cfg.post_norms, W::Ln1Post, l)?,
                ln2: norm(W::Ln2, l)?,
                ln2_post: when(cfg.post_norms, W::Ln2Post, l)?,
                w_q: matrix(W::Q, l)?,
                w_k: matrix(W::K, l)?,
                w_v: matrix(W::V, l)?,
                w_o: matrix(W::O, l)?,
                b_q: bias(cfg.qkv_bias, W::QBias, l)?,
                b_k: bias(cfg.qkv_bias, W::KBias, l)?,
                b_v: bias(cfg.qkv_bias, W::VBias, l)?,
                b_o: bias(cfg.o_bias, W::OBias, l)?,
                q_norm: when(cfg.qk_norm, W::QNorm, l)?,
                k_norm: when(cfg.qk_norm, W::KNorm, l)?,
                w_gate: matrix(W::Gate, l)?,
                w_up: matrix(W::Up, l)?,
                w_down: matrix(W::Down, l)?,
            });
        }
        Ok(Weights {
            embed,
            unembed,
            ln_final: norm(W::FinalNorm, 0)?,
            blocks,
        })
    }

    /// The GGUF names of layer 0's q and output-projection biases, whose presence says whether
    /// a GGUF model has them.
    pub(crate) fn gguf_bias_names() -> (String, String) {
        (Self::gguf_name(W::QBias, 0), Self::gguf_name(W::OBias, 0))
    }
}

/// Inverts llama.cpp's `permute(w, n_head)`: rows (head, pair, half) back to (head, half, pair).
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::Load(format!(
            "cannot undo llama.cpp's q/k permutation: {rows} rows for {heads} heads"
        )));
    }
    let half = rows / heads / 2;
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut shape = vec![heads, half, 2];
    shape.extend(&rest);
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}
