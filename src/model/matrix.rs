//! Weight matrices as a model holds them: dense tensors, or a GGUF file's blocks kept quantised
//! in memory and either dequantised to f32 at each use (`Stream`, exact) or multiplied as they
//! are (`Quantized`, candle's `QMatMul`, approximate). Every projection of the forward pass, its
//! backward, the embedding lookup and the unembedding go through [`Matrix`], so the rest of the
//! library does not know which it has.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor, D};

use crate::error::{Error, Result};
use crate::model::ops;

/// How a model holds its weight matrices, chosen at load time ([`crate::model::LoadOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// Dequantised once at load, in the load options' dtype (f32 or bf16). The reference.
    #[default]
    Dense,
    /// GGUF only. The file's blocks stay quantised in memory; each matrix is dequantised to
    /// f32 just before it is used and dropped after (the unembedding a slab of rows at a time).
    /// Bit-identical to `Dense` f32 on the same file; peak memory is about the file's size plus
    /// the largest matrix in f32 plus activations. Slower: every pass dequantises every block.
    Stream,
    /// GGUF only. The blocks stay quantised and projections run as quantised matmuls (candle's
    /// `QMatMul`, which quantises the activations to 8 bits on the fly); activations, norms and
    /// attention stay f32. Approximate: on the default model (Q4_K_M), against `Dense` over 100
    /// EN→FR prompts, logits move by up to 4.64 (12 % of the prompt's largest), the top-1 token
    /// agrees at 96 % of positions, a 72-head patching table correlates at 0.995 and the
    /// translation-head ranking at Spearman 0.9995 (PERFORMANCE.md, "Weights kept quantised").
    /// Fast only where candle has a packed kernel (Q4_K, Q6_K, Q8_0 with rows a multiple of 256
    /// values); elsewhere batched work is slower than f32, and only generation gains.
    /// Gradients are straight-through: the backward uses the dequantised weights.
    Quantized,
}

impl WeightMode {
    /// A short name for messages (`dense`, `stream`, `quantized`).
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::Dense => "dense",
            WeightMode::Stream => "stream",
            WeightMode::Quantized => "quantized",
        }
    }
}

/// A weight matrix [out, in] (PyTorch layout).
#[derive(Debug, Clone)]
pub enum Matrix {
    /// A dense tensor in the model's dtype.
    Dense(Tensor),
    /// Quantised GGUF blocks.
    Gguf(QMatrix),
}

/// Quantised GGUF tensors stacked along their rows (one, or q, k and v fused), and whether
/// they are multiplied as they are (`fast`) or dequantised first.
#[derive(Debug, Clone)]
pub struct QMatrix {
    parts: Vec<Arc<QTensor>>,
    rows: usize,
    cols: usize,
    fast: bool,
}

/// Above this many f32 bytes, an f32 matrix (dense, or streamed and dequantised slab by slab)
/// is used a slab of rows at a time: the unembedding of a 150k vocabulary at d_model 3584 is
/// 2.2 GB in f32. Block matrices of the 7B shape (18 944 × 3 584, 272 MB) stay whole.
const SLAB_BYTES: usize = 384 << 20;
/// The f32 size of one such slab.
const SLAB_SIZE: usize = 64 << 20;

impl Matrix {
    /// Quantised tensors (same column count) stacked along their rows.
    pub fn quantised(parts: Vec<Arc<QTensor>>, fast: bool) -> Result<Matrix> {
        let mut rows = 0;
        let mut cols = None;
        for p in &parts {
            let (r, c) = p
                .shape()
                .dims2()
                .map_err(|_| Error::Load(format!("a weight matrix of shape {:?}", p.shape())))?;
            if cols.is_some_and(|k| k != c) {
                return Err(Error::Load(format!(
                    "cannot stack matrices with {} and {c} columns",
                    cols.unwrap_or(0)
                )));
            }
            cols = Some(c);
            rows += r;
        }
        Ok(Matrix::Gguf(QMatrix {
            parts,
            rows,
            cols: cols.unwrap_or(0),
            fast,
        }))
    }

    /// Matrices stacked along their rows: a dense concatenation, or the quantised parts side by
    /// side (nothing is dequantised).
    pub fn stack_rows(ms: &[&Matrix]) -> Result<Matrix> {
        if let Some(ts) = ms
            .iter()
            .map(|m| match m {
                Matrix::Dense(t) => Some(t),
                Matrix::Gguf(_) => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            return Ok(Matrix::Dense(Tensor::cat(&ts, 0)?));
        }
        let mut parts = Vec::new();
        let mut fast = None;
        for m in ms {
            match m {
                Matrix::Gguf(q) if fast.is_none_or(|f| f == q.fast) => {
                    fast = Some(q.fast);
                    parts.extend(q.parts.iter().cloned());
                }
                _ => {
                    return Err(Error::Load(
                        "cannot stack dense and quantised matrices, or stream and quantized ones"
                            .into(),
                    ))
                }
            }
        }
        Matrix::quantised(parts, fast.unwrap_or(false))
    }

    /// [out, in].
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Matrix::Dense(t) => t.dims().to_vec(),
            Matrix::Gguf(q) => vec![q.rows, q.cols],
        }
    }

    /// The dtype a projection through it computes in (f32 for quantised matrices).
    pub fn dtype(&self) -> DType {
        match self {
            Matrix::Dense(t) => t.dtype(),
            Matrix::Gguf(_) => DType::F32,
        }
    }

    /// The device it lives on.
    pub fn device(&self) -> Device {
        match self {
            Matrix::Dense(t) => t.device().clone(),
            Matrix::Gguf(q) => q.parts.first().map(|p| p.device()).unwrap_or(Device::Cpu),
        }
    }

    /// How it is held.
    pub fn mode(&self) -> WeightMode {
        match self {
            Matrix::Dense(_) => WeightMode::Dense,
            Matrix::Gguf(q) if q.fast => WeightMode::Quantized,
            Matrix::Gguf(_) => WeightMode::Stream,
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Matrix::Gguf(q) => q
                .parts
                .iter()
                .map(|p| p.shape().elem_count() / p.dtype().block_size() * p.dtype().type_size())
                .sum(),
        }
    }

    /// The whole matrix as a dense tensor: itself, or the quantised blocks dequantised to f32
    /// (a new allocation each call).
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            Matrix::Dense(t) => Ok(t.clone()),
            Matrix::Gguf(q) => self.slab(0, q.rows),
        }
    }

    /// Rows `ids` as [ids.len(), in] (the embedding lookup); quantised rows are dequantised
    /// exactly as the whole matrix would be.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.flatten_all()?;
        match self {
            Matrix::Dense(t) => Ok(t.index_select(&ids, 0)?),
            Matrix::Gguf(q) if q.parts.len() == 1 => {
                let p = &q.parts[0];
                Ok(p.embedding(&ids)?.reshape((ids.dim(0)?, q.cols))?)
            }
            Matrix::Gguf(_) => Ok(self.dense()?.index_select(&ids, 0)?),
        }
    }

    /// `x [.., in] @ wᵀ (+ b)`. When `x` carries a gradient (on the CPU), the backward computes
    /// only the gradient with respect to `x`, with the weight dequantised again for it: the
    /// graph holds the quantised matrix, never an f32 copy.
    pub fn linear(&self, x: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let y = if x.track_op() && x.device().is_cpu() && x.rank() == 2 {
            x.contiguous()?.apply_op1(Project { w: self.clone() })?
        } else if x.track_op() {
            // Off the CPU candle differentiates its own matmul (computing a weight gradient).
            x.broadcast_matmul(&self.dense()?.t()?)?
        } else {
            self.project(x)?
        };
        Ok(match b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `x @ wᵀ` without gradient bookkeeping.
    pub(crate) fn project(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(rows) = self.slab_rows() {
            let ys = self
                .slab_starts(rows)
                .map(|(s, n)| Ok(ops::project(x, &self.slab(s, n)?)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&ys, D::Minus1)?);
        }
        match self {
            Matrix::Dense(w) => Ok(ops::project(x, w)?),
            Matrix::Gguf(q) if q.fast => {
                let x = x.contiguous()?;
                let ys = q
                    .parts
                    .iter()
                    .map(|p| QMatMul::from_arc(p.clone())?.forward(&x))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::cat(&ys, D::Minus1)?)
            }
            Matrix::Gguf(_) => Ok(ops::project(x, &self.dense()?)?),
        }
    }

    /// `g @ w` (the projection's backward) with the weight dequantised for it.
    pub(crate) fn project_back(&self, g: &Tensor) -> Result<Tensor> {
        if let Some(rows) = self.slab_rows() {
            let mut acc: Option<Tensor> = None;
            for (s, n) in self.slab_starts(rows) {
                let part = g.narrow(D::Minus1, s, n)?.matmul(&self.slab(s, n)?)?;
                acc = Some(match acc {
                    Some(a) => (a + part)?,
                    None => part,
                });
            }
            return acc.ok_or_else(|| Error::Shape("an empty weight matrix".into()));
        }
        match self {
            Matrix::Dense(w) => Ok(ops::project_back(g, w)?),
            Matrix::Gguf(_) => Ok(g.matmul(&self.dense()?)?),
        }
    }

    /// Rows per slab when the matrix is used a slab at a time: an f32 matrix larger than
    /// `SLAB_BYTES`, dense or streamed. Both are cut the same way, so that the stream mode
    /// gives the dense path's bits (gemm's results depend on the shapes it is given).
    fn slab_rows(&self) -> Option<usize> {
        let (rows, cols) = match self.dims()[..] {
            [r, c] => (r, c),
            _ => return None,
        };
        let f32_matrix = match self {
            Matrix::Dense(w) => w.dtype() == DType::F32,
            Matrix::Gguf(q) => !q.fast,
        };
        (f32_matrix && rows * cols * 4 > SLAB_BYTES).then(|| (SLAB_SIZE / (4 * cols.max(1))).max(1))
    }

    /// (start, len) of each slab of `rows` rows.
    fn slab_starts(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> {
        let total = self.dims()[0];
        (0..total)
            .step_by(rows)
            .map(move |s| (s, rows.min(total - s)))
    }

    /// Rows `start..start + n` in f32: a view of a dense matrix, or dequantised.
    fn slab(&self, start: usize, n: usize) -> Result<Tensor> {
        match self {
            Matrix::Dense(w) => Ok(w.narrow(0, start, n)?),
            Matrix::Gguf(q) => {
                // The slab may span parts (a fused q/k/v): dequantise each piece (`cat` of one
                // piece copies nothing).
                let mut pieces = Vec::new();
                let mut offset = 0;
                for p in &q.parts {
                    let rows = p.shape().dims()[0];
                    let (from, to) = (start.max(offset), (start + n).min(offset + rows));
                    if from < to {
                        pieces.push(dequantize_in_bands(p, from - offset, to - from)?);
                    }
                    offset += rows;
                }
                Ok(Tensor::cat(&pieces, 0)?)
            }
        }
    }
}

/// Rows `start..start + n` of a quantised [rows, cols] tensor, dequantised to f32 on every
/// thread candle uses. Q8_0, Q5_0 and Q4_0 (the default model's embedding and most of its
/// projections, and the scale files) are decoded here, straight into the result, with candle's arithmetic (so the
/// same bits) but in loops that vectorise: candle's own decoder is sequential and bounds-checked,
/// and in stream mode it was most of a forward pass. Other types go through candle, a band of
/// rows per thread. Each row is a whole number of blocks (GGUF requires it), so this equals
/// dequantising the whole tensor and taking the rows.
fn dequantize_in_bands(q: &QTensor, start: usize, n: usize) -> Result<Tensor> {
    const MIN_BAND_VALUES: usize = 1 << 18;
    let (rows, cols) = q.shape().dims2()?;
    let (bs, ts) = (q.dtype().block_size(), q.dtype().type_size());
    if start + n > rows || cols % bs != 0 {
        return Err(Error::Load(format!(
            "rows {start}..{} of a {:?} tensor of {rows} rows of {cols} values",
            start + n,
            q.dtype()
        )));
    }
    let threads = candle_core::utils::get_num_threads()
        .min(n * cols / MIN_BAND_VALUES)
        .max(1);
    let device = q.device();
    let decode: Option<Decoder> = match q.dtype() {
        GgmlDType::Q8_0 => Some(decode_q8_0),
        GgmlDType::Q4_0 => Some(decode_q4_0),
        GgmlDType::Q5_0 => Some(decode_q5_0),
        _ => None,
    };
    if let (Some(decode), true) = (decode, device.is_cpu()) {
        let row_bytes = cols / bs * ts;
        let data = q.data()?;
        let bytes = &data[start * row_bytes..(start + n) * row_bytes];
        let mut out = vec![0f32; n * cols];
        let band = n.div_ceil(threads);
        std::thread::scope(|scope| {
            for (src, dst) in bytes
                .chunks(band * row_bytes)
                .zip(out.chunks_mut(band * cols))
            {
                scope.spawn(move || decode(src, dst));
            }
        });
        return Ok(Tensor::from_vec(out, (n, cols), &device)?);
    }
    if threads == 1 || !device.is_cpu() {
        return dequantize_rows(q, start, n);
    }
    let band = n.div_ceil(threads);
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = (start..start + n)
            .step_by(band)
            .map(|s| scope.spawn(move || dequantize_rows(q, s, band.min(start + n - s))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Load("a dequantising thread panicked".into())))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Decodes whole blocks (bytes) into f32 values.
type Decoder = fn(&[u8], &mut [f32]);

/// Q8_0 blocks (an f16 scale, then 32 signed bytes) to f32, as candle computes them.
fn decode_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (y, &q) in y.iter_mut().zip(&b[2..34]) {
            *y = (q as i8) as f32 * d;
        }
    }
}

/// Q4_0 blocks (an f16 scale, then 16 bytes of two 4-bit values, low halves first) to f32, as
/// candle computes them.
fn decode_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (lo, hi) = y.split_at_mut(16);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
            *l = ((q & 0x0F) as i16 - 8) as f32 * d;
            *h = ((q >> 4) as i16 - 8) as f32 * d;
        }
    }
}

/// Q5_0 blocks (an f16 scale, 32 high bits, then 16 bytes of two low nibbles) to f32, as
/// candle computes them.
fn decode_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let (lo, hi) = y.split_at_mut(16);
        for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[6..22]).enumerate() {
            let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
            *l = (((q & 0x0F) | xh_0) as i32 - 16) as f32 * d;
            *h = (((q >> 4) | xh_1) as i32 - 16) as f32 * d;
        }
    }
}

/// Rows `start..start + n` of a quantised [rows, cols] tensor, dequantised to f32 by candle.
fn dequantize_rows(q: &QTensor, start: usize, n: usize) -> Result<Tensor> {
    let (rows, cols) = q.shape().dims2()?;
    let (bs, ts) = (q.dtype().block_size(), q.dtype().type_size());
    if start == 0 && n == rows {
        return Ok(q.dequantize(&q.device())?);
    }
    let row_bytes = cols / bs * ts;
    let data = q.data()?;
    let bytes = &data[start * row_bytes..(start + n) * row_bytes];
    let device = q.device();
    let storage = QStorage::from_data(Cow::Borrowed(bytes), &device, q.dtype())?;
    Ok(QTensor::new(storage, (n, cols))?.dequantize(&device)?)
}

/// Rows of a quantised [rows, cols] tensor reordered: row `i` of the result is row `from[i]`.
/// Moves whole rows of blocks, so nothing is requantised.
pub(crate) fn permute_rows(q: &QTensor, from: &[usize]) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let (bs, ts) = (q.dtype().block_size(), q.dtype().type_size());
    if from.len() != rows || cols % bs != 0 || from.iter().any(|&r| r >= rows) {
        return Err(Error::Load(format!(
            "cannot reorder the {rows} rows of a {:?} tensor",
            q.dtype()
        )));
    }
    let row_bytes = cols / bs * ts;
    let data = q.data()?;
    let mut out = Vec::with_capacity(data.len());
    for &r in from {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let device = q.device();
    let storage = QStorage::from_data(Cow::Owned(out), &device, q.dtype())?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// The projection as a custom op over any [`Matrix`]: forward as [`Matrix::project`], backward
/// `g @ w` with no weight gradient.
struct Project {
    w: Matrix,
}

impl CustomOp1 for Project {
    fn name(&self) -> &'static str {
        "mechinterp-project"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = ops::cpu_tensor(s, l)?;
        let y = self.w.project(&x).map_err(candle_err)?;
        Ok((ops::cpu_storage(&y)?, y.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.w.project_back(grad).map_err(candle_err)?))
    }
}

fn candle_err(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
