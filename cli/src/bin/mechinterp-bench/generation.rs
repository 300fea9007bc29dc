//! The generation benchmark: greedy tokens with the KV cache, one row and a batch.

use anyhow::Result;
use mechinterp::model::{GenerateOptions, HookedTransformer};

use crate::flops::forward_flops;
use crate::sets::CLEAN;
use crate::timing::{time, Timing};

/// Generation with the KV cache: 32 greedy tokens after the `s`-token prompt, for each batch
/// size in `batch_rows`.
pub fn generation(
    model: &HookedTransformer,
    repeats: usize,
    s: usize,
    batch_rows: &[usize],
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let n_new = 32;
    let gen = GenerateOptions {
        stop_at_eos: false,
        ..GenerateOptions::greedy(n_new)
    };
    // Per new token: the blocks at one position and one row of logits (the attention over the
    // cached keys, and the prefill, are left out: a lower bound).
    let decode_flops = |rows: usize| (rows * n_new) as f64 * forward_flops(cfg, 1, 1, 1);
    for &rows in batch_rows {
        let prompts = vec![CLEAN; rows];
        let secs = time(repeats.clamp(1, 3), || model.generate_batch(&prompts, &gen))?;
        out.push(Timing {
            name: format!("generate_{rows}x{n_new}"),
            seconds: secs,
            tokens: (rows * n_new) as f64,
            flops: decode_flops(rows),
            note: format!(
                "{rows} row(s) × {n_new} greedy tokens after the {s}-token prompt, KV cache (prefill included)"
            ),
        });
    }
    Ok(())
}
