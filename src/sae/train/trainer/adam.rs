//! Adam as `torch.optim.Adam` with weight decay 0 (SAELens's optimiser), plus
//! `clip_grad_norm_(params, max_norm)`, which SAELens's trainer applies before every step.

use candle_core::{backprop::GradStore, Tensor, Var};

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

    /// One update of every parameter with gradients `grads` (already clipped), at rate `lr`.
    /// A parameter without a gradient still moves by its momentum, as torch's Adam does for a
    /// zero gradient.
    pub fn step(&mut self, params: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
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

/// The gradients of `params` from `grads` (zeros where a parameter got none), scaled as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` scales them: by
/// `min(1, max_norm / (‖g‖ + 1e-6))` with ‖g‖ the norm over all of them. Returns the
/// gradients and the norm before clipping.
pub fn clipped_grads(
    params: &[Var],
    grads: &GradStore,
    max_norm: Option<f64>,
) -> Result<(Vec<Tensor>, f64)> {
    let gs = params
        .iter()
        .map(|p| match grads.get(p.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(p.as_tensor().zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sq = 0f64;
    for g in &gs {
        sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    let Some(max_norm) = max_norm else {
        return Ok((gs, norm));
    };
    let coef = max_norm / (norm + 1e-6);
    if coef >= 1.0 {
        return Ok((gs, norm));
    }
    let gs = gs
        .into_iter()
        .map(|g| Ok(g.affine(coef, 0.0)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((gs, norm))
}
