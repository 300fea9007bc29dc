//! A GGUF file's tensors: read as stored (quantised blocks) or dequantised, to f32 or to
//! bf16 / f16 a slab of rows at a time.

use std::borrow::Cow;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::load::gguf::file::Gguf;
use crate::model::load::weights::{Format, TensorSource};

impl Gguf {
    /// Dequantizes one tensor and converts it; the quantized copy is freed right after, so
    /// loading never holds two copies of the weights.
    pub(super) fn read(&self, name: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        let q = self.stored(name, device)?;
        match dtype {
            DType::BF16 | DType::F16 if device.is_cpu() => Ok(dequantize_in_slabs(&q, dtype)?),
            _ => Ok(q.dequantize(device)?.to_dtype(dtype)?),
        }
    }

    /// One tensor as the file stores it (quantised blocks), read into memory.
    pub(super) fn stored(&self, name: &str, device: &Device) -> Result<QTensor> {
        let mut file = self.file.borrow_mut();
        self.content
            .tensor(&mut *file, name, device)
            .map_err(|e| self.err(format!("tensor `{name}`: {e}")))
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
