//! Adam as `torch.optim.Adam` with weight decay 0 (SAELens's optimiser), plus
//! `clip_grad_norm_(params, max_norm)`, which SAELens's trainer applies before every step.

use candle_core::{
    backprop::GradStore, CpuStorage, InplaceOp2, InplaceOp3, Layout, Storage, Tensor, Var,
};

use crate::error::{Error, Result};

/// One parameter's moment estimates.
#[derive(Debug, Clone)]
pub struct Moments {
    /// First moment (`exp_avg`).
    pub m: Tensor,
    /// Second moment (`exp_avg_sq`).
    pub v: Tensor,
}

/// Adam's hyper-parameters and state for a fixed list of parameters.
#[derive(Debug)]
pub struct Adam {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε, added to √v̂.
    pub eps: f64,
    /// Steps taken (torch's `step`).
    pub t: usize,
    /// Moments, one per parameter, in the trainer's parameter order.
    pub moments: Vec<Moments>,
}

impl Adam {
    /// Fresh state (zero moments) for `params`.
    pub fn new(params: &[Var], beta1: f64, beta2: f64, eps: f64) -> Result<Adam> {
        let moments = params
            .iter()
            .map(|p| {
                Ok(Moments {
                    m: p.as_tensor().zeros_like()?,
                    v: p.as_tensor().zeros_like()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Adam {
            beta1,
            beta2,
            eps,
            t: 0,
            moments,
        })
    }

    /// One update of every parameter with gradients `grads` times `grad_scale` (the clipping
    /// factor), at rate `lr`. On the CPU the update runs in place, fused per tensor.
    pub fn step(
        &mut self,
        params: &[Var],
        grads: &[Tensor],
        grad_scale: f64,
        lr: f64,
    ) -> Result<()> {
        if params.len() != self.moments.len() || grads.len() != params.len() {
            return Err(Error::Invalid(format!(
                "Adam holds state for {} parameters but was given {} parameters and {} gradients",
                self.moments.len(),
                params.len(),
                grads.len()
            )));
        }
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let step_size = lr / bc1;
        for ((p, g), mo) in params.iter().zip(grads).zip(self.moments.iter_mut()) {
            if p.device().is_cpu() && mo.m.is_contiguous() && mo.v.is_contiguous() {
                let g = g.contiguous()?;
                mo.m.inplace_op2(
                    &g,
                    &Moment {
                        beta: self.beta1,
                        scale: grad_scale,
                        square: false,
                    },
                )?;
                mo.v.inplace_op2(
                    &g,
                    &Moment {
                        beta: self.beta2,
                        scale: grad_scale,
                        square: true,
                    },
                )?;
                p.as_tensor().inplace_op3(
                    &mo.m,
                    &mo.v,
                    &Update {
                        step_size,
                        bc2_sqrt: bc2.sqrt(),
                        eps: self.eps,
                    },
                )?;
                continue;
            }
            let g = g.affine(grad_scale, 0.0)?;
            let m = (mo.m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
            let v = (mo.v.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), self.eps)?;
            let upd = m.div(&denom)?.affine(step_size, 0.0)?;
            p.set(&p.as_tensor().sub(&upd)?)?;
            mo.m = m;
            mo.v = v;
        }
        Ok(())
    }
}

fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("Adam's in-place update needs contiguous f32 tensors"),
    }
}

fn f32_ref<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("Adam's in-place update needs contiguous f32 tensors"),
    }
}

/// `m ← β·m + (1 − β)·(s·g)` (or with `(s·g)²`), in place.
struct Moment {
    beta: f64,
    scale: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let m = f32_mut(s1, l1)?;
        let g = f32_ref(s2, l2)?;
        let (b, c, sc) = (
            self.beta as f32,
            (1.0 - self.beta) as f32,
            self.scale as f32,
        );
        if self.square {
            m.iter_mut().zip(g).for_each(|(m, g)| {
                let g = g * sc;
                *m = *m * b + c * g * g
            });
        } else {
            m.iter_mut()
                .zip(g)
                .for_each(|(m, g)| *m = *m * b + c * (g * sc));
        }
        Ok(())
    }
}

/// `p ← p − step_size · m / (√v / √bc₂ + ε)`, in place.
struct Update {
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_mut(s1, l1)?;
        let m = f32_ref(s2, l2)?;
        let v = f32_ref(s3, l3)?;
        let (ss, inv_bc, eps) = (
            self.step_size as f32,
            (1.0 / self.bc2_sqrt) as f32,
            self.eps as f32,
        );
        for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
            *p -= ss * m / (v.sqrt() * inv_bc + eps);
        }
        Ok(())
    }
}

/// Σ g² of one tensor, without a temporary on the CPU.
fn sum_sq(g: &Tensor) -> Result<f64> {
    if g.device().is_cpu() && g.dtype() == candle_core::DType::F32 {
        let (st, l) = g.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) = (&*st, l.contiguous_offsets()) {
            return Ok(super::fast::sum_sq(&v[a..b]));
        }
    }
    Ok(g.sqr()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?)
}

/// The clipping factor of `torch.nn.utils.clip_grad_norm_(params, max_norm)` for gradients
/// `gs`: `min(1, max_norm / (‖g‖ + 1e-6))` with ‖g‖ their joint norm; returns it and ‖g‖.
pub fn clip_factor(gs: &[Tensor], max_norm: Option<f64>) -> Result<(f64, f64)> {
    let mut sq = 0f64;
    for g in gs {
        sq += sum_sq(g)?;
    }
    let norm = sq.sqrt();
    let coef = match max_norm {
        Some(m) => (m / (norm + 1e-6)).min(1.0),
        None => 1.0,
    };
    Ok((coef, norm))
}

/// The gradients of `params` from `grads`, zeros where a parameter got none.
pub fn grads_of(params: &[Var], grads: &GradStore) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|p| match grads.get(p.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(p.as_tensor().zeros_like()?),
        })
        .collect()
}
