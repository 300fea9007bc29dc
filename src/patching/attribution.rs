//! Attribution patching: the first-order estimate of every activation patch from one forward
//! and one backward pass (Nanda; Syed et al.): Δmetric ≈ (source − base) · ∂metric/∂act,
//! with the gradient taken on the base run.
//!
//! Gradients come from candle's autograd. The forward pass avoids candle's fused softmax,
//! RMSNorm and RoPE kernels, which have no backward; a zero [`candle_core::Var`] added at each
//! hook point collects the gradient there without cutting the graph.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::{Direction, HookFnRef, PatchResult, PatchTarget, Patcher};
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::stats::pearson;
use crate::table::{Axis, Table};

/// Linear estimates of patching effects (metric change from the base run, not raw values).
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The metric's name.
    pub metric: String,
    /// Denoise or noise.
    pub direction: Direction,
    /// The metric on the base run.
    pub base_value: f32,
    /// Each head's output at all positions, [layer][head].
    pub head_out: Table,
    /// `hook_resid_pre`, [layer][position].
    pub resid_pre: Table,
    /// `hook_attn_out`, [layer][position].
    pub attn_out: Table,
    /// `hook_mlp_out`, [layer][position].
    pub mlp_out: Table,
}

impl Attribution {
    /// The estimate table that matches an activation-patching target, if there is one.
    pub fn table(&self, target: PatchTarget) -> Option<&Table> {
        match target {
            PatchTarget::HeadOut => Some(&self.head_out),
            PatchTarget::ResidPre => Some(&self.resid_pre),
            PatchTarget::AttnOut => Some(&self.attn_out),
            PatchTarget::MlpOut => Some(&self.mlp_out),
            _ => None,
        }
    }

    /// Compares an estimate table with activation patching of the same target and direction.
    pub fn agreement(&self, actual: &PatchResult) -> Result<Agreement> {
        let target: PatchTarget = actual.what.parse()?;
        let est = self.table(target).ok_or_else(|| {
            Error::Invalid(format!(
                "attribution patching estimates head-out, resid-pre, attn-out and mlp-out, not {}",
                actual.what
            ))
        })?;
        if actual.direction != self.direction || est.shape() != actual.table.shape() {
            return Err(Error::Invalid(format!(
                "compare like with like: estimate {:?} {:?} vs patching {:?} {:?}",
                self.direction,
                est.shape(),
                actual.direction,
                actual.table.shape()
            )));
        }
        Agreement::new(est, &actual.table.map(|v| v - self.base_value))
    }
}

/// How well attribution estimates agree with activation patching.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// Pearson correlation over all entries.
    pub pearson: f32,
    /// Entries compared.
    pub n: usize,
    /// Scatter-ready rows: label, estimate, actual change.
    pub points: Vec<(String, f32, f32)>,
}

impl Agreement {
    /// Pairs up two tables of the same shape (estimate vs actual change).
    pub fn new(estimate: &Table, actual_change: &Table) -> Result<Self> {
        let mut points = Vec::new();
        for (i, (&e, &a)) in estimate
            .values
            .iter()
            .zip(&actual_change.values)
            .enumerate()
        {
            if e.is_finite() && a.is_finite() {
                let mut rest = i;
                let mut labels = Vec::new();
                for ax in estimate.axes.iter().rev() {
                    labels.push(format!(
                        "{}{}",
                        ax.name.chars().next().unwrap_or('?'),
                        ax.labels[rest % ax.len()]
                    ));
                    rest /= ax.len();
                }
                labels.reverse();
                points.push((labels.join(" "), e, a));
            }
        }
        let n = points.len();
        let est: Vec<f32> = points.iter().map(|p| p.1).collect();
        let act: Vec<f32> = points.iter().map(|p| p.2).collect();
        Ok(Agreement {
            pearson: pearson(&est, &act),
            n,
            points,
        })
    }
}

impl Patcher {
    /// Attribution patching: one forward and backward pass on the base run (the corrupted run
    /// for denoising, the clean run for noising) estimates every head, residual position and
    /// attn / mlp output at once.
    pub fn attribution(&self, direction: Direction) -> Result<Attribution> {
        let (base, source) = self.sides(direction);
        let Gradients {
            base_value,
            grads,
            vars,
        } = self.gradients(&base.tokens)?;
        let s = base.tokens.dim(1)?;
        let mut tables = AttributionTables::new(self, direction);
        for (p, v) in &vars {
            let g = grads.get(v.as_tensor()).ok_or_else(|| {
                Error::Invalid(format!(
                    "no gradient reached {p}: an op without backward is on the path"
                ))
            })?;
            let name = p.name();
            let delta = (source.cache.get(&name)? - base.cache.get(&name)?)?;
            let prod = (delta.to_dtype(DType::F32)? * g.to_dtype(DType::F32)?)?;
            tables.add(*p, &prod, s)?;
        }
        Ok(tables.into_attribution(self.metric.name(), direction, base_value))
    }

    /// The metric on a run of `tokens`, its gradients, and the zero var added at each
    /// attributed hook point (whose gradient is the activation's).
    fn gradients(&self, tokens: &Tensor) -> Result<Gradients> {
        // base + 0·var at each point: the var's gradient is the activation's gradient.
        let vars: Mutex<Vec<(HookPoint, Var)>> = Mutex::new(Vec::new());
        let add_var = |x: &Tensor, ctx: &HookContext| -> Result<Tensor> {
            let v = Var::zeros(x.shape(), x.dtype(), x.device())?;
            let y = (x + v.as_tensor())?;
            vars.lock()
                .map_err(|_| Error::Invalid("gradient hook poisoned".into()))?
                .push((ctx.point, v));
            Ok(y)
        };
        let pos = [self.pos];
        let mut pass = self.model.pass(tokens).logits_at(&pos);
        for p in &attributed_points(self.model.cfg().n_layers) {
            pass = pass.hook(*p, &add_var as &HookFnRef<'_>);
        }
        let logits = pass.run()?.logits;
        let metric = self.metric.compute(&logits.squeeze(1)?)?.sum_all()?;
        let base_value = metric.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let grads = metric.backward()?;
        let vars = vars
            .into_inner()
            .map_err(|_| Error::Invalid("gradient hook poisoned".into()))?;
        Ok(Gradients {
            base_value,
            grads,
            vars,
        })
    }
}

/// The metric on the base run and its gradients at the attributed hook points.
struct Gradients {
    base_value: f32,
    grads: GradStore,
    /// The zero var added at each point; its gradient is the activation's.
    vars: Vec<(HookPoint, Var)>,
}

/// The hook points attribution patching estimates, layer by layer.
fn attributed_points(n_layers: usize) -> Vec<HookPoint> {
    let mut points = Vec::new();
    for l in 0..n_layers {
        points.extend([
            HookPoint::ResidPre(l),
            HookPoint::Z(l),
            HookPoint::AttnOut(l),
            HookPoint::MlpOut(l),
        ]);
    }
    points
}

/// The four estimate tables of an [`Attribution`], while they are filled.
struct AttributionTables {
    head_out: Table,
    resid_pre: Table,
    attn_out: Table,
    mlp_out: Table,
}

impl AttributionTables {
    /// Empty tables titled for the patcher's metric and `direction`.
    fn new(patcher: &Patcher, direction: Direction) -> Self {
        let cfg = patcher.model.cfg();
        let layers = Axis::numbered("layer", cfg.n_layers);
        let positions = Axis::labelled("position", patcher.str_tokens.clone());
        let title = |w: &str| {
            format!(
                "attribution {w}: {} ({})",
                patcher.metric.name(),
                direction.name()
            )
        };
        AttributionTables {
            head_out: Table::new(
                title("head-out"),
                vec![layers.clone(), Axis::numbered("head", cfg.n_heads)],
            ),
            resid_pre: Table::new(title("resid-pre"), vec![layers.clone(), positions.clone()]),
            attn_out: Table::new(title("attn-out"), vec![layers.clone(), positions.clone()]),
            mlp_out: Table::new(title("mlp-out"), vec![layers, positions]),
        }
    }

    /// Adds point `p`'s estimates (delta × gradient, `prod`) to its table: per head for z
    /// ([1, s, n, h]), else per position (of the first `s`).
    fn add(&mut self, p: HookPoint, prod: &Tensor, s: usize) -> Result<()> {
        let l = p.layer().unwrap_or(0);
        if let HookPoint::Z(_) = p {
            let per_head = prod.sum((0, 1, 3))?.to_vec1::<f32>()?;
            for (h, x) in per_head.into_iter().enumerate() {
                self.head_out.set(&[l, h], x)?;
            }
            return Ok(());
        }
        let per_pos = prod.sum((0, 2))?.to_vec1::<f32>()?;
        let t = match p {
            HookPoint::ResidPre(_) => &mut self.resid_pre,
            HookPoint::AttnOut(_) => &mut self.attn_out,
            _ => &mut self.mlp_out,
        };
        for (q, x) in per_pos.into_iter().enumerate().take(s) {
            t.set(&[l, q], x)?;
        }
        Ok(())
    }

    /// The filled tables as an [`Attribution`].
    fn into_attribution(
        self,
        metric: String,
        direction: Direction,
        base_value: f32,
    ) -> Attribution {
        Attribution {
            metric,
            direction,
            base_value,
            head_out: self.head_out,
            resid_pre: self.resid_pre,
            attn_out: self.attn_out,
            mlp_out: self.mlp_out,
        }
    }
}
