//! Forward-pass benchmarks: caching every hook point, a forward with one head replaced, and a
//! long prompt with blocked against full attention.

use anyhow::Result;
use candle_core::Tensor;
use mechinterp::hooks::{Hooks, Intervention};
use mechinterp::model::HookedTransformer;

use crate::flops::{block_flops, forward_flops};
use crate::sets::CLEAN;
use crate::timing::{time, Timing};

/// The plain forward over the prompt, logits at every position.
pub fn plain(
    model: &HookedTransformer,
    repeats: usize,
    toks: &Tensor,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let s = toks.dim(1)?;
    let secs = time(repeats, || model.forward(toks))?;
    out.push(Timing {
        name: "forward".into(),
        seconds: secs,
        tokens: s as f64,
        flops: forward_flops(model.cfg(), s, 1, s),
        note: format!("{s} tokens, logits at every position"),
    });
    Ok(())
}

/// `run_with_cache` and a forward with one head zeroed, over the prompt.
pub fn cache_and_patch(
    model: &HookedTransformer,
    repeats: usize,
    toks: &Tensor,
    out: &mut Vec<Timing>,
) -> Result<()> {
    let cfg = model.cfg();
    let s = toks.dim(1)?;
    let whole_prompt = |name: &str, seconds: Vec<f64>, note: String| Timing {
        name: name.into(),
        seconds,
        tokens: s as f64,
        flops: forward_flops(cfg, s, 1, s),
        note,
    };
    let secs = time(repeats, || model.run_with_cache(toks))?;
    out.push(whole_prompt(
        "run_with_cache",
        secs,
        "every hook point, hook_result included".into(),
    ));
    let patched = model
        .with_hooks(&Hooks::new().intervene("blocks.9.attn.hook_z", Intervention::ZeroHead(1))?);
    let secs = time(repeats, || patched.forward(toks))?;
    out.push(whole_prompt(
        "patched_forward",
        secs,
        "one hook_z replacement, full forward".into(),
    ));
    Ok(())
}

/// A long prompt, activations only: attention in query blocks that skip the keys they cannot
/// see (the default) against the full s × s computation (forced by caching patterns).
pub fn long_prompt(model: &HookedTransformer, repeats: usize, out: &mut Vec<Timing>) -> Result<()> {
    let cfg = model.cfg();
    let s = model.to_tokens(CLEAN)?.dim(1)?;
    let long_s = 2048.min(cfg.max_position);
    // BOS appears once, so each copy adds s - 1 tokens (and a little slack for the joins).
    let long_text = std::iter::repeat_n(CLEAN, long_s / s.saturating_sub(1).max(1) + 4)
        .collect::<Vec<_>>()
        .join(" ");
    let long = model.to_tokens(&long_text)?.narrow(1, 0, long_s)?;
    for (name, full) in [
        ("long_prompt_blocks", false),
        ("long_prompt_blocks_full_attention", true),
    ] {
        let secs = time(repeats.clamp(1, 2), || {
            model.cache_activations(&long, |n: &str| full && n.ends_with("hook_pattern"))
        })?;
        out.push(Timing {
            name: name.into(),
            seconds: secs,
            tokens: long_s as f64,
            flops: block_flops(cfg, long_s, 1, 0),
            note: if full {
                format!("{long_s} tokens, no logits, full s × s attention (the before)")
            } else {
                format!("{long_s} tokens, no logits, blocked attention (FLOPs counted as full)")
            },
        });
    }
    Ok(())
}
