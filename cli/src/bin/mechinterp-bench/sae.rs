//! The SAE-training benchmark: the activation store (forward passes to layer 6 of contexts of
//! 128 tokens, 16 per pass), one TopK training step (2 048 latents, k 32, batch 256) and the
//! two together as training tokens per second, each against the sgemm peak.

use anyhow::Result;
use candle_core::Tensor;
use mechinterp::corpus::Split;
use mechinterp::model::HookedTransformer;
use mechinterp::sae::train::run::corpus_texts;
use mechinterp::sae::train::trainer::{TrainArch, TrainConfig, Trainer};
use mechinterp::sae::train::{ActivationStore, StoreOptions};

use crate::flops::block_flops;
use crate::timing::{time, Timing};

/// The layer the quick recipe trains at.
const LAYER: usize = 6;
/// Latents and k of the quick recipe.
const D_SAE: usize = 2048;
const K: usize = 32;
/// Rows per step.
const BATCH: usize = 256;

/// FLOPs of one TopK step on `b` rows: encoder and decoder matmuls (2·b·d·n each) forward,
/// twice that backward; the aux-k loss, the top-k selection and Adam are not counted.
fn step_flops(b: usize, d: usize, n: usize) -> f64 {
    3.0 * 2.0 * 2.0 * (b * d * n) as f64
}

/// Times the store, one step, and training as a whole (store + steps for the same tokens).
pub fn sae_training(
    model: &HookedTransformer,
    repeats: usize,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    if LAYER >= cfg.n_layers {
        return Ok(());
    }
    let hook = format!("blocks.{LAYER}.hook_resid_post");
    let mut so = StoreOptions::new(&hook);
    so.massive.calibration_tokens = 1;
    let (ctx, rows) = (so.context_size, so.contexts_per_forward);
    let mut store = ActivationStore::new(model, corpus_texts(None, Split::Train, 0)?, so)?;
    let reps = repeats.clamp(1, 3);
    let mut got = 0usize;
    let store_secs = time(reps, || {
        got = store.next_classified()?.0.rows();
        Ok(())
    })?;
    let fwd_flops = block_flops(cfg, ctx, rows, 0) - block_flops(cfg, ctx, rows, LAYER + 1);
    out.push(Timing {
        name: "sae_store_forward".into(),
        seconds: store_secs.clone(),
        tokens: got as f64,
        flops: fwd_flops,
        note: format!(
            "activation store: {rows} contexts × {ctx} tokens to layer {LAYER} (stop_after), BOS left out"
        ),
    });
    let (x, _) = store.next_batch()?;
    let d = x.dim(1)?;
    let mut tc = TrainConfig::new(TrainArch::TopK, d, d, D_SAE);
    tc.k = Some(K);
    tc.lr = 1e-3;
    tc.total_steps = 1_000_000;
    tc.hook_name = hook.clone();
    tc.hook_name_out = hook;
    let mut trainer = Trainer::new(tc, &x, model.device())?;
    let x: Tensor = x;
    let step_secs = time(repeats.max(5), || trainer.step(&x, None).map(|_| ()))?;
    let sf = step_flops(BATCH, d, D_SAE);
    out.push(Timing {
        name: "sae_step_topk".into(),
        seconds: step_secs.clone(),
        tokens: BATCH as f64,
        flops: sf,
        note: format!(
            "one TopK step: {D_SAE} latents, k {K}, batch {BATCH}, Adam (FLOPs: encoder and decoder matmuls, forward and backward)"
        ),
    });
    // Training as a whole: the store's forward for its tokens plus the steps they feed.
    let steps_per_fwd = got as f64 / BATCH as f64;
    let step_med = mechinterp::stats::median(&step_secs);
    out.push(Timing {
        name: "sae_training".into(),
        seconds: store_secs.iter().map(|s| s + steps_per_fwd * step_med).collect(),
        tokens: got as f64,
        flops: fwd_flops + steps_per_fwd * sf,
        note: format!(
            "training tokens/s: the store's forward plus the {steps_per_fwd:.1} steps its tokens feed"
        ),
    });
    Ok(())
}
