//! Splicing an SAE or transcoder into a forward pass as hooks, as SAELens's
//! `HookedSAETransformer` does: the SAE's activation is replaced by its reconstruction (plus,
//! with the error term, the input minus the clean reconstruction), and the SAE's own activations
//! are hook sub-points named after the hook it writes (`blocks.6.hook_resid_post.hook_sae_acts_post`),
//! cached and hookable like any other point. Feature interventions are hooks at those points.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};

use super::autoencoder::{Sae, SaeHook};
use crate::error::{Error, Result};
use crate::hooks::{HookPoint, Hooks};

/// How an SAE is spliced in.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpliceOptions {
    /// Add `x − clean reconstruction` to the output (SAELens's `use_error_term`): without
    /// interventions the model's activations are unchanged, and a latent intervention changes
    /// them by exactly the change it makes to the reconstruction.
    pub use_error_term: bool,
    /// Leave the first position of every row (BOS, in batches made by `to_tokens_batch`, which
    /// pads on the right) unchanged, as SAELens's `exclude_special_tokens` does for BOS; off by
    /// default, as there. Not for left-padded generation batches.
    pub skip_first_position: bool,
}

/// An edit of one latent's activation, applied at the SAE's `hook_sae_acts_post`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureEdit {
    /// Set the latent to 0 (ablate it).
    Zero(usize),
    /// Set the latent to a value at every position.
    Set(usize, f64),
    /// Multiply the latent by a factor.
    Scale(usize, f64),
}

impl FeatureEdit {
    fn latent(&self) -> usize {
        match *self {
            FeatureEdit::Zero(i) | FeatureEdit::Set(i, _) | FeatureEdit::Scale(i, _) => i,
        }
    }

    /// Applies the edit to latent activations [.., d_sae].
    pub fn apply(&self, acts: &Tensor) -> Result<Tensor> {
        let d = acts.dim(candle_core::D::Minus1)?;
        let i = self.latent();
        if i >= d {
            return Err(Error::Invalid(format!(
                "latent {i} does not exist: this SAE has {d} latents (0..{d})"
            )));
        }
        let mut keep = vec![1f32; d];
        keep[i] = 0.0;
        let dev = acts.device();
        let keep = Tensor::from_vec(keep, d, dev)?.to_dtype(acts.dtype())?;
        let one_hot = (1.0 - &keep)?;
        let col = acts.broadcast_mul(&one_hot)?;
        let new_col = match *self {
            FeatureEdit::Zero(_) => col.zeros_like()?,
            FeatureEdit::Set(_, v) => acts.ones_like()?.broadcast_mul(&one_hot)?.affine(v, 0.0)?,
            FeatureEdit::Scale(_, s) => col.affine(s, 0.0)?,
        };
        Ok((acts.broadcast_mul(&keep)? + new_col)?)
    }
}

fn host(name: &str, what: &str) -> Result<HookPoint> {
    name.parse::<HookPoint>().map_err(|e| {
        Error::Invalid(format!(
            "this SAE's {what} hook `{name}` is not a hook point of ours ({e}); rename it in the SAE's config"
        ))
    })
}

impl Hooks {
    /// Splices `sae` in: its output hook's activation becomes the SAE's reconstruction (for a
    /// transcoder, its output from the input hook's activation). See [`Hooks::sae_with`].
    pub fn sae(self, sae: &Sae) -> Result<Hooks> {
        self.sae_with(sae, SpliceOptions::default())
    }

    /// Splices `sae` in with SAELens's error term, so the model's output is unchanged until a
    /// latent is edited.
    pub fn sae_with_error(self, sae: &Sae) -> Result<Hooks> {
        self.sae_with(
            sae,
            SpliceOptions {
                use_error_term: true,
                ..Default::default()
            },
        )
    }

    /// Splices `sae` in with options. The SAE's internal activations are sub-points of its
    /// output hook, `{hook}.hook_sae_input`, `.hook_sae_acts_pre`, `.hook_sae_acts_post`,
    /// `.hook_sae_recons`, `.hook_sae_error` (with the error term) and `.hook_sae_output`: a
    /// cache records them and [`Hooks::add`] hooks them by those names.
    pub fn sae_with(self, sae: &Sae, opts: SpliceOptions) -> Result<Hooks> {
        let p_in = host(sae.hook_name(), "input")?;
        let p_out = host(sae.hook_name_out(), "output")?;
        let sae = Arc::new(sae.clone());
        // A transcoder reads an earlier hook of the same pass: the input hook leaves it here for
        // the output hook to take.
        let stash: Arc<Mutex<Vec<Tensor>>> = Arc::new(Mutex::new(Vec::new()));
        let mut hooks = self;
        if p_in != p_out {
            if p_in >= p_out && p_in.layer() == p_out.layer() {
                return Err(Error::Invalid(format!(
                    "a transcoder must read a hook before the one it writes; this one reads `{p_in}` and writes `{p_out}`"
                )));
            }
            let st = stash.clone();
            hooks = hooks.add_point(p_in, move |x, _| {
                if let Ok(mut s) = st.lock() {
                    s.push(x.clone());
                }
                Ok(x.clone())
            });
        }
        let transcoder = p_in != p_out;
        Ok(hooks.add_point(p_out, move |orig, ctx| {
            let input = if transcoder {
                stash
                    .lock()
                    .ok()
                    .and_then(|mut s| s.pop())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the transcoder writing `{}` did not see its input `{}` in this pass (a pass that starts after it cannot splice it)",
                            ctx.name,
                            sae.hook_name()
                        ))
                    })?
            } else {
                orig.clone()
            };
            let dtype = orig.dtype();
            let mut sub = |h: SaeHook, t: Tensor| -> Result<Tensor> {
                if h == SaeHook::Output {
                    return Ok(t);
                }
                ctx.sub(h.suffix(), t)
            };
            let mut out = sae.run_hooked(&input, false, &mut sub)?;
            let orig32 = orig.to_dtype(DType::F32)?;
            if opts.use_error_term {
                let clean = sae.forward(&input)?;
                let err = ctx.sub(SaeHook::Error.suffix(), (&orig32 - &clean)?)?;
                out = (out + err)?;
            }
            if opts.skip_first_position && ctx.offset == 0 && out.rank() >= 2 && out.dim(1)? > 0 {
                let s = out.dim(1)?;
                let first = orig32.narrow(1, 0, 1)?;
                out = Tensor::cat(&[&first, &out.narrow(1, 1, s - 1)?], 1)?;
            }
            let out = ctx.sub(SaeHook::Output.suffix(), out)?;
            Ok(out.to_dtype(dtype)?)
        }))
    }

    /// Edits a latent of a spliced SAE (zero, set or scale it) at every position; the SAE
    /// must be spliced too ([`Hooks::sae`] / [`Hooks::sae_with_error`]), in this set or the
    /// view's.
    pub fn sae_edit(self, sae: &Sae, edit: FeatureEdit) -> Result<Hooks> {
        if edit.latent() >= sae.d_sae() {
            return Err(Error::Invalid(format!(
                "latent {} does not exist: this SAE has {} latents",
                edit.latent(),
                sae.d_sae()
            )));
        }
        let name = format!("{}.{}", sae.hook_name_out(), SaeHook::ActsPost.suffix());
        self.add(&name, move |x, _| edit.apply(x))
    }

    /// Feature steering: adds `coeff` × latent `latent`'s decoder direction to the SAE's output
    /// hook at every position (no splice needed), as SAELens's steering does.
    pub fn steer_feature(self, sae: &Sae, latent: usize, coeff: f64) -> Result<Hooks> {
        if latent >= sae.d_sae() {
            return Err(Error::Invalid(format!(
                "latent {latent} does not exist: this SAE has {} latents",
                sae.d_sae()
            )));
        }
        let dir = (sae.w_dec().get(latent)? * coeff)?;
        let p = host(sae.hook_name_out(), "output")?;
        Ok(self.add_point(p, move |x, _| {
            Ok(x.broadcast_add(&dir.to_dtype(x.dtype())?)?)
        }))
    }
}
