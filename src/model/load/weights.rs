//! Weights from any tensor source: each family's tensor names looked up in the source's
//! naming, and what a format does to the tensors undone (llama.cpp's q/k row permutation,
//! Gemma's norm offset that only transformers leaves out). A safetensors folder and a GGUF
//! file are two [`TensorSource`]s for the same code.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::arch::{Arch, W};
use crate::model::config::Config;
use crate::model::matrix::{permute_rows, Matrix, WeightMode};
use crate::model::transformer::{BlockWeights, Weights};

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

/// Loads `arch`'s weights from `src`. Matrices come in `dtype`, or stay quantised as `mode`
/// says; norms in f32, with the family's norm offset folded in.
pub fn load_weights(
    arch: Arch,
    cfg: &Config,
    src: &dyn TensorSource,
    dtype: DType,
    mode: WeightMode,
    device: &Device,
) -> Result<Weights> {
    let ld = Loader {
        format: src.format(),
        arch,
        cfg,
        src,
        dtype,
        mode,
        device,
    };
    let embed = ld.matrix(W::Embed, 0)?;
    let unembed = if cfg.tied_embeddings {
        None
    } else {
        Some(ld.matrix(W::Unembed, 0)?)
    };
    let blocks = (0..cfg.n_layers)
        .map(|l| ld.block(l))
        .collect::<Result<Vec<_>>>()?;
    Ok(Weights {
        embed,
        unembed,
        ln_final: ld.norm(W::FinalNorm, 0)?,
        blocks,
    })
}

/// What [`load_weights`] reads from, and how.
struct Loader<'a> {
    format: Format,
    arch: Arch,
    cfg: &'a Config,
    src: &'a dyn TensorSource,
    dtype: DType,
    mode: WeightMode,
    device: &'a Device,
}

impl Loader<'_> {
    /// Block `l`'s weights.
    fn block(&self, l: usize) -> Result<BlockWeights> {
        let cfg = self.cfg;
        Ok(BlockWeights {
            ln1: self.norm(W::Ln1, l)?,
            ln1_post: self.norm_when(cfg.post_norms, W::Ln1Post, l)?,
            ln2: self.norm(W::Ln2, l)?,
            ln2_post: self.norm_when(cfg.post_norms, W::Ln2Post, l)?,
            w_q: self.matrix(W::Q, l)?,
            w_k: self.matrix(W::K, l)?,
            w_v: self.matrix(W::V, l)?,
            w_o: self.matrix(W::O, l)?,
            b_q: self.bias(cfg.qkv_bias, W::QBias, l)?,
            b_k: self.bias(cfg.qkv_bias, W::KBias, l)?,
            b_v: self.bias(cfg.qkv_bias, W::VBias, l)?,
            b_o: self.bias(cfg.o_bias, W::OBias, l)?,
            q_norm: self.norm_when(cfg.qk_norm, W::QNorm, l)?,
            k_norm: self.norm_when(cfg.qk_norm, W::KNorm, l)?,
            w_gate: self.matrix(W::Gate, l)?,
            w_up: self.matrix(W::Up, l)?,
            w_down: self.matrix(W::Down, l)?,
        })
    }

    /// Weight `w` of layer `l`'s name in the source's naming.
    fn name(&self, w: W, l: usize) -> String {
        match self.format {
            Format::Hf => self.arch.hf_name(w, l),
            Format::Gguf => Arch::gguf_name(w, l),
        }
    }

    /// The heads whose rows llama.cpp's converter permuted in weight `w`, if it did: it
    /// permutes the q / k rows of the llama family so that its interleaved RoPE works; we undo
    /// it (as transformers' GGUF loader does).
    fn permuted(&self, w: W) -> Option<usize> {
        if self.format != Format::Gguf || self.arch != Arch::Llama {
            return None;
        }
        match w {
            W::Q | W::QBias => Some(self.cfg.n_heads),
            W::K | W::KBias => Some(self.cfg.n_kv_heads),
            _ => None,
        }
    }

    /// Weight `w` of layer `l` in `dt`, unpermuted.
    fn get(&self, w: W, l: usize, dt: DType) -> Result<Tensor> {
        let t = self
            .src
            .tensor(&self.name(w, l), dt, self.device)?
            .ok_or_else(|| self.missing(w, l))?;
        match self.permuted(w) {
            Some(heads) => unpermute(&t, heads),
            None => Ok(t),
        }
    }

    /// The error for a checkpoint without weight `w` of layer `l`.
    fn missing(&self, w: W, l: usize) -> Error {
        Error::Load(format!(
            "the checkpoint has no tensor `{}`",
            self.name(w, l)
        ))
    }

    /// A norm weight in f32, with the family's offset folded in.
    fn norm(&self, w: W, l: usize) -> Result<Tensor> {
        // llama.cpp's converter folds the offset into the stored weights; transformers does not.
        let offset = match self.format {
            Format::Hf => self.arch.norm_offset(),
            Format::Gguf => 0.0,
        };
        let t = self.get(w, l, DType::F32)?;
        Ok(if offset != 0.0 { (t + offset)? } else { t })
    }

    /// A norm weight the architecture has when `on`.
    fn norm_when(&self, on: bool, w: W, l: usize) -> Result<Option<Tensor>> {
        on.then(|| self.norm(w, l)).transpose()
    }

    /// A bias the architecture has when `on`, in the activations' dtype.
    fn bias(&self, on: bool, w: W, l: usize) -> Result<Option<Tensor>> {
        on.then(|| self.get(w, l, self.dtype)).transpose()
    }

    /// A weight matrix: dense in the activations' dtype, or quantised as the mode says.
    fn matrix(&self, w: W, l: usize) -> Result<Matrix> {
        if self.mode == WeightMode::Dense {
            return Ok(Matrix::Dense(self.get(w, l, self.dtype)?));
        }
        let q = self
            .src
            .quantised(&self.name(w, l), self.device)?
            .ok_or_else(|| self.missing(w, l))?;
        let q = match self.permuted(w) {
            Some(heads) => unpermute_quantised(&q, heads)?,
            None => q,
        };
        Matrix::quantised(vec![Arc::new(q)], self.mode == WeightMode::Quantized)
    }
}

/// The same permutation as [`unpermute`] on a quantised matrix, moving whole rows of blocks.
fn unpermute_quantised(q: &QTensor, heads: usize) -> Result<QTensor> {
    let rows = q.shape().dims()[0];
    let index = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
    let from: Vec<usize> = unpermute(&index, heads)?
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|r| r as usize)
        .collect();
    permute_rows(q, &from)
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
