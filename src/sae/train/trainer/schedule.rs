//! SAELens's learning-rate and coefficient schedules (`training/optim.py`) in closed form, as
//! the value each training step uses.

use serde::{Deserialize, Serialize};

/// The main learning-rate schedule between warm-up and decay (SAELens's `lr_scheduler_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LrScheduler {
    /// `constant`: the base rate (SAELens's default).
    Constant,
    /// `cosineannealing`: cosine from the base rate down to `lr_end`.
    CosineAnnealing,
}

/// The learning rate SAELens's `get_lr_scheduler` gives step `step` (0-based, the value the
/// optimiser uses at that step): linear warm-up `lr·(s+1)/warm_up`, then the main schedule,
/// then a linear decay from `lr_end` (from `lr` for `constant`) towards 0 over `decay` steps.
pub fn lr_at(
    sched: LrScheduler,
    lr: f64,
    lr_end: f64,
    total: usize,
    warm_up: usize,
    decay: usize,
    step: usize,
) -> f64 {
    if step < warm_up {
        return lr * (step + 1) as f64 / warm_up as f64;
    }
    let decay_start = total.saturating_sub(decay);
    if decay > 0 && step >= decay_start {
        let from = match sched {
            LrScheduler::Constant => lr,
            LrScheduler::CosineAnnealing => lr_end,
        };
        let i = (step - decay_start) as f64;
        return from * (1.0 - i / decay as f64).max(0.0);
    }
    match sched {
        LrScheduler::Constant => lr,
        LrScheduler::CosineAnnealing => {
            let t_max = total.saturating_sub(warm_up + decay).max(1) as f64;
            let t = (step - warm_up) as f64;
            lr_end + (lr - lr_end) * (1.0 + (std::f64::consts::PI * t / t_max).cos()) / 2.0
        }
    }
}

/// A loss coefficient at step `step`, as SAELens's `CoefficientScheduler`: 0 at step 0 of a
/// warm-up, rising linearly to `value` at step `warm_up`.
pub fn coefficient_at(value: f64, warm_up: usize, step: usize) -> f64 {
    if warm_up == 0 || step >= warm_up {
        value
    } else {
        value * step as f64 / warm_up as f64
    }
}
