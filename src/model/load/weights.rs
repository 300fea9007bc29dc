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
    let format = src.format();
    let name = |w: W, l: usize| match format {
        Format::Hf => arch.hf_name(w, l),
        Format::Gguf => Arch::gguf_name(w, l),
    };
    // llama.cpp's converter permutes the q / k rows of the llama family so that its
    // interleaved RoPE works; undo it (as transformers' GGUF loader does).
    let permuted = |w: W| -> Option<usize> {
        if format != Format::Gguf || arch != Arch::Llama {
            return None;
        }
        match w {
            W::Q | W::QBias => Some(cfg.n_heads),
            W::K | W::KBias => Some(cfg.n_kv_heads),
            _ => None,
        }
    };
    let get = |w: W, l: usize, dt: DType| -> Result<Tensor> {
        let t = src
            .tensor(&name(w, l), dt, device)?
            .ok_or_else(|| Error::Load(format!("the checkpoint has no tensor `{}`", name(w, l))))?;
        match permuted(w) {
            Some(heads) => unpermute(&t, heads),
            None => Ok(t),
        }
    };
    // llama.cpp's converter folds the offset into the stored weights; transformers does not.
    let offset = match format {
        Format::Hf => arch.norm_offset(),
        Format::Gguf => 0.0,
    };
    let norm = |w: W, l: usize| -> Result<Tensor> {
        let t = get(w, l, DType::F32)?;
        Ok(if offset != 0.0 { (t + offset)? } else { t })
    };
    let when =
        |on: bool, w: W, l: usize| -> Result<Option<Tensor>> { on.then(|| norm(w, l)).transpose() };
    let matrix = |w: W, l: usize| -> Result<Matrix> {
        if mode == WeightMode::Dense {
            return Ok(Matrix::Dense(get(w, l, dtype)?));
        }
        let q = src
            .quantised(&name(w, l), device)?
            .ok_or_else(|| Error::Load(format!("the checkpoint has no tensor `{}`", name(w, l))))?;
        // The same permutation as the dense path, moving whole rows of blocks.
        let q = match permuted(w) {
            Some(heads) => {
                let rows = q.shape().dims()[0];
                let index = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
                let from: Vec<usize> = unpermute(&index, heads)?
                    .flatten_all()?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|r| r as usize)
                    .collect();
                permute_rows(&q, &from)?
            }
            None => q,
        };
        Matrix::quantised(vec![Arc::new(q)], mode == WeightMode::Quantized)
    };
    let bias = |on: bool, w: W, l: usize| -> Result<Option<Tensor>> {
        on.then(|| get(w, l, dtype)).transpose()
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
