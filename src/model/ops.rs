//! Kernels the forward pass needs that candle handles badly: a dense projection and its
//! backward (bf16 weights multiplied a slab at a time), used by [`crate::model::matrix`]'s
//! projection op whose backward skips the weight gradient, and a vectorisable GELU (tanh
//! approximation) with its own backward.
//!
//! candle's matmul backward always computes the gradient of both operands, so a backward
//! through the 262 144 × 640 unembedding allocates, zeroes and fills a 671 MB weight gradient
//! nobody asked for (and every block's projections do the same). Interpretability only wants
//! gradients with respect to activations. Both ops fall back to candle's own kernels when no
//! gradient is tracked, off the CPU, or (GELU) for dtypes other than f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, D};

/// Up to this many rows, a projection to fewer outputs than inputs runs as `(w xᵀ)ᵀ`.
const FLIP_ROWS: usize = 64;

/// `x @ wᵀ` without gradient bookkeeping, choosing the fastest way on the CPU.
pub(crate) fn project(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if w.dtype() == DType::BF16 && w.device().is_cpu() {
        // candle has no bf16 gemm on the CPU and widens the *whole* weight storage to f32 at
        // every call (671 MB for the embedding); widen one slab of rows at a time instead.
        let xf = x.to_dtype(DType::F32)?;
        let parts = slabs(w.dim(0)?)
            .map(|(s, n)| project(&xf, &w.narrow(0, s, n)?.to_dtype(DType::F32)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Tensor::cat(&parts, D::Minus1)?.to_dtype(DType::BF16);
    }
    if x.rank() == 2 && x.dim(0)? <= FLIP_ROWS && w.dim(1)? > w.dim(0)? {
        // Few rows into a narrower output (o and down projections at short prompts): gemm
        // packs the large operand better as the left one, measured 1.4-1.7x faster here.
        return w.matmul(&x.t()?)?.t()?.contiguous();
    }
    x.matmul(&w.t()?)
}

/// `g @ w` (the projection's backward), bf16 weights widened a slab at a time.
pub(crate) fn project_back(g: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if w.dtype() == DType::BF16 && w.device().is_cpu() {
        let gf = g.to_dtype(DType::F32)?;
        let mut acc: Option<Tensor> = None;
        for (s, n) in slabs(w.dim(0)?) {
            let part = gf
                .narrow(D::Minus1, s, n)?
                .matmul(&w.narrow(0, s, n)?.to_dtype(DType::F32)?)?;
            acc = Some(match acc {
                Some(a) => (a + part)?,
                None => part,
            });
        }
        return match acc {
            Some(a) => a.to_dtype(DType::BF16),
            None => g.matmul(w),
        };
    }
    g.matmul(w)
}

/// (start, len) of the row slabs a bf16 weight is widened in.
fn slabs(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    const SLAB_ROWS: usize = 16_384;
    (0..rows)
        .step_by(SLAB_ROWS)
        .map(move |s| (s, SLAB_ROWS.min(rows - s)))
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`), written as `x · σ(2u)` with a
/// polynomial exp so that it vectorises: candle's version calls `tanhf` per element and costs
/// as much as a projection at short prompt lengths. Accurate to a few ulp of f32.
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        x.contiguous()?.apply_op1(GeluTanh)
    } else {
        x.gelu()
    }
}

/// A tensor copied out of contiguous CPU storage.
pub(crate) fn cpu_tensor(s: &CpuStorage, l: &Layout) -> candle_core::Result<Tensor> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("expected a contiguous input".into()))?;
    let dev = Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[a..b], l.shape(), &dev),
        CpuStorage::F64(v) => Tensor::from_slice(&v[a..b], l.shape(), &dev),
        CpuStorage::BF16(v) => Tensor::from_slice(&v[a..b], l.shape(), &dev),
        CpuStorage::F16(v) => Tensor::from_slice(&v[a..b], l.shape(), &dev),
        _ => Err(candle_core::Error::Msg(format!(
            "projection of a {:?} tensor",
            s.dtype()
        ))),
    }
}

/// The storage of a CPU tensor, copied.
pub(crate) fn cpu_storage(y: &Tensor) -> candle_core::Result<CpuStorage> {
    let y = y.flatten_all()?;
    Ok(match y.dtype() {
        DType::F32 => CpuStorage::F32(y.to_vec1()?),
        DType::F64 => CpuStorage::F64(y.to_vec1()?),
        DType::BF16 => CpuStorage::BF16(y.to_vec1()?),
        DType::F16 => CpuStorage::F16(y.to_vec1()?),
        d => return Err(candle_core::Error::Msg(format!("projection to {d:?}"))),
    })
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// e^x for f32 without a libm call (Cephes' polynomial, range-reduced by powers of two);
/// relative error below 2e-7, inputs clamped to the finite range.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// σ(2u) for GELU's u; x · σ(2u) = ½ x (1 + tanh u).
#[inline(always)]
fn gelu_sigma(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    1.0 / (1.0 + exp_f32(-2.0 * u))
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "mechinterp-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let y: Vec<f32> = x.iter().map(|&x| x * gelu_sigma(x)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &GeluTanhGrad)?,
        ))
    }
}

/// grad · d/dx [x σ(2u)] = grad · (σ + 2x σ (1 − σ) u′).
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "mechinterp-gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if x.len() != g.len() {
            return Err(candle_core::Error::Msg(
                "gelu gradient shape mismatch".into(),
            ));
        }
        let y: Vec<f32> = x
            .iter()
            .zip(g)
            .map(|(&x, &g)| {
                let s = gelu_sigma(x);
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
                g * (s + 2.0 * x * s * (1.0 - s) * du)
            })
            .collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("expected a contiguous input".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => Err(candle_core::Error::Msg(format!(
            "expected f32, got {:?}",
            s.dtype()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The projection the forward pass uses, over a dense weight.
    fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
        crate::model::Matrix::Dense(w.clone())
            .linear(x, b)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let rel = ((exp_f32(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_candle_and_its_gradient_matches_finite_differences() -> candle_core::Result<()>
    {
        let x: Vec<f32> = (-300..300).map(|i| i as f32 * 0.03).collect();
        let t = Tensor::new(x.as_slice(), &Device::Cpu)?;
        let ours = gelu_tanh(&t)?.to_vec1::<f32>()?;
        let theirs = t.gelu()?.to_vec1::<f32>()?;
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let v = Var::from_tensor(&t.to_dtype(DType::F64)?.to_dtype(DType::F32)?)?;
        let grads = gelu_tanh(v.as_tensor())?.sum_all()?.backward()?;
        let g = grads
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
            .to_vec1::<f32>()?;
        let h = 1e-3f64;
        let f = |x: f64| {
            0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())
        };
        for (&x, &gx) in x.iter().zip(&g) {
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            assert!((gx as f64 - fd).abs() < 1e-5, "x={x}: {gx} vs {fd}");
        }
        Ok(())
    }

    #[test]
    fn bf16_projection_in_slabs_matches_f32() -> candle_core::Result<()> {
        // More rows than one slab, so the slab joins are exercised.
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40_000, 8), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (3, 8), &dev)?;
        let want = x.matmul(&w.t()?)?;
        let wb = w.to_dtype(DType::BF16)?;
        let got = linear(&x.to_dtype(DType::BF16)?, &wb, None)?.to_dtype(DType::F32)?;
        let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 0.15, "bf16 projection off by {err}");
        // The backward through the slabs: d/dx Σ y = Σ_rows w.
        let v = Var::from_tensor(&x.to_dtype(DType::BF16)?)?;
        let grads = linear(v.as_tensor(), &wb, None)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .backward()?;
        let g = grads
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
            .to_dtype(DType::F32)?;
        let want = wb
            .to_dtype(DType::F32)?
            .sum(0)?
            .unsqueeze(0)?
            .broadcast_as((3, 8))?;
        let rel = ((g - want.clone())?.abs()?.max_all()?.to_scalar::<f32>()?)
            / want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            rel < 2e-2,
            "bf16 projection gradient off by {rel} (relative)"
        );
        Ok(())
    }

    #[test]
    fn projection_gradient_reaches_the_input_only() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3), &dev)?)?;
        let y = linear(x.as_tensor(), &w, None)?;
        let plain = x.as_tensor().matmul(&w.t()?)?;
        let diff = (&y - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        let grads = (y.sqr()?.sum_all()?).backward()?;
        let g = grads
            .get(x.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
        // d/dx Σ (x Wᵀ)² = 2 (x Wᵀ) W.
        let want = (plain.matmul(&w)? * 2.0)?;
        let diff = (g - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gradient off by {diff}");
        assert!(grads.get(&w).is_none(), "no gradient for the weight");
        Ok(())
    }
}
