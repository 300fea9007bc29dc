//! [`Sae`]: one sparse autoencoder or transcoder's weights and SAELens 6.x's math, with
//! SAELens's internal hook points (`hook_sae_input` … `hook_sae_output`) as callbacks.

use candle_core::{DType, Device, Tensor, D};

use super::config::{Architecture, Normalization, SaeConfig};
use crate::error::{Error, Result};

/// One of SAELens's hook points inside an SAE, in the order a forward pass meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaeHook {
    /// `hook_sae_input` [.., d_in]: the host activation, before normalisation.
    Input,
    /// `hook_sae_acts_pre` [.., d_sae]: encoder pre-activations.
    ActsPre,
    /// `hook_sae_acts_post` [.., d_sae]: latent activations.
    ActsPost,
    /// `hook_sae_recons` [.., d_out]: the decoder's output, before output de-normalisation.
    Recons,
    /// `hook_sae_error` [.., d_out]: input minus the clean reconstruction (with the error term).
    Error,
    /// `hook_sae_output` [.., d_out]: what replaces the host activation.
    Output,
}

impl SaeHook {
    /// Every SAE hook, in forward order.
    pub const ALL: [SaeHook; 6] = [
        SaeHook::Input,
        SaeHook::ActsPre,
        SaeHook::ActsPost,
        SaeHook::Recons,
        SaeHook::Error,
        SaeHook::Output,
    ];

    /// SAELens's attribute name, the suffix after the host hook's name.
    pub fn suffix(&self) -> &'static str {
        match self {
            SaeHook::Input => "hook_sae_input",
            SaeHook::ActsPre => "hook_sae_acts_pre",
            SaeHook::ActsPost => "hook_sae_acts_post",
            SaeHook::Recons => "hook_sae_recons",
            SaeHook::Error => "hook_sae_error",
            SaeHook::Output => "hook_sae_output",
        }
    }

    /// The hook named by a suffix.
    pub fn from_suffix(s: &str) -> Option<SaeHook> {
        SaeHook::ALL.into_iter().find(|h| h.suffix() == s)
    }
}

/// A callback at SAE hook points: returns the activation or a same-shape replacement.
pub type SaeHookFn<'a> = &'a mut dyn FnMut(SaeHook, Tensor) -> Result<Tensor>;

/// The weights of one SAE or transcoder, in SAELens's layout and names.
#[derive(Debug, Clone)]
pub struct SaeWeights {
    /// `W_enc` [d_in, d_sae].
    pub w_enc: Tensor,
    /// `b_enc` [d_sae] (`b_mag` for gated SAEs lives in `b_mag`; gated has no `b_enc`).
    pub b_enc: Option<Tensor>,
    /// `W_dec` [d_sae, d_out].
    pub w_dec: Tensor,
    /// `b_dec` [d_out].
    pub b_dec: Tensor,
    /// JumpReLU `threshold` [d_sae].
    pub threshold: Option<Tensor>,
    /// Gated: `b_gate` [d_sae].
    pub b_gate: Option<Tensor>,
    /// Gated: `r_mag` [d_sae].
    pub r_mag: Option<Tensor>,
    /// Gated: `b_mag` [d_sae].
    pub b_mag: Option<Tensor>,
    /// Skip transcoders: `W_skip` [d_out, d_in].
    pub w_skip: Option<Tensor>,
}

/// A sparse autoencoder or transcoder: its config and weights (f32, on one device).
#[derive(Debug, Clone)]
pub struct Sae {
    cfg: SaeConfig,
    w: SaeWeights,
    /// SAELens's `sparsity.safetensors` (log10 firing frequency per latent), when known.
    log_sparsity: Option<Tensor>,
}

/// What input normalisation remembers for the output side.
enum NormState {
    Identity,
    Coeff(Tensor),
    MeanStd(Tensor, Tensor),
}

impl Sae {
    /// An SAE from a config and weights, checking every shape against the config.
    pub fn new(cfg: SaeConfig, w: SaeWeights) -> Result<Sae> {
        let (d_in, d_sae, d_out) = (cfg.d_in, cfg.d_sae, cfg.d_out);
        let check = |name: &str, t: Option<&Tensor>, want: &[usize]| -> Result<()> {
            match t {
                Some(t) if t.dims() != want => Err(Error::Invalid(format!(
                    "SAE weight `{name}` has shape {:?}, but the config ({}: d_in {d_in}, d_sae {d_sae}, d_out {d_out}) needs {want:?}",
                    t.dims(),
                    cfg.architecture.saelens_name()
                ))),
                _ => Ok(()),
            }
        };
        check("W_enc", Some(&w.w_enc), &[d_in, d_sae])?;
        check("b_enc", w.b_enc.as_ref(), &[d_sae])?;
        check("W_dec", Some(&w.w_dec), &[d_sae, d_out])?;
        check("b_dec", Some(&w.b_dec), &[d_out])?;
        check("threshold", w.threshold.as_ref(), &[d_sae])?;
        check("b_gate", w.b_gate.as_ref(), &[d_sae])?;
        check("r_mag", w.r_mag.as_ref(), &[d_sae])?;
        check("b_mag", w.b_mag.as_ref(), &[d_sae])?;
        check("W_skip", w.w_skip.as_ref(), &[d_out, d_in])?;
        let need = |name: &str, ok: bool| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "a `{}` SAE needs the weight `{name}`, and it is missing",
                    cfg.architecture.saelens_name()
                )))
            }
        };
        let a = cfg.architecture;
        if a == Architecture::Gated {
            need("b_gate", w.b_gate.is_some())?;
            need("r_mag", w.r_mag.is_some())?;
            need("b_mag", w.b_mag.is_some())?;
        } else {
            need("b_enc", w.b_enc.is_some())?;
        }
        if a.has_threshold() {
            need("threshold", w.threshold.is_some())?;
        }
        if a.has_skip() {
            need("W_skip", w.w_skip.is_some())?;
        }
        if a == Architecture::TopK {
            match cfg.k {
                Some(k) if k >= 1 && k <= d_sae => {}
                k => {
                    return Err(Error::Invalid(format!(
                        "a topk SAE needs 1 ≤ k ≤ d_sae ({d_sae}); the config says k = {k:?}"
                    )))
                }
            }
        }
        if a.is_transcoder() && cfg.apply_b_dec_to_input && d_in != d_out {
            return Err(Error::Invalid(format!(
                "a `{}` with d_in {d_in} ≠ d_out {d_out} cannot apply b_dec (width d_out) to its input; set apply_b_dec_to_input to false, as SAELens requires of transcoders",
                a.saelens_name()
            )));
        }
        if !a.is_transcoder() && d_in != d_out {
            return Err(Error::Invalid(format!(
                "a `{}` SAE reconstructs its input, so d_out ({d_out}) must equal d_in ({d_in})",
                a.saelens_name()
            )));
        }
        Ok(Sae {
            cfg,
            w,
            log_sparsity: None,
        })
    }

    /// Reads the SAE or transcoder at `path` in any format this crate knows (SAELens 6 or
    /// pre-6 folder, Gemma Scope 2 folder, circuit-tracer layer file): see
    /// [`crate::sae::format::load`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Sae> {
        super::format::load(path.as_ref())
    }

    /// Checks that this SAE fits `model`: its hooks exist there and carry vectors of its
    /// widths (per-head hooks flattened, `n_heads·d_head` for `attn.hook_z`).
    pub fn check_fits(&self, model: &crate::model::HookedTransformer) -> Result<()> {
        super::format::hooks::check_fits(self, model)
    }

    /// This SAE with SAELens's log10 feature sparsity [d_sae] attached (saved as
    /// `sparsity.safetensors`).
    pub fn with_log_sparsity(mut self, log_sparsity: Tensor) -> Result<Sae> {
        if log_sparsity.dims() != [self.cfg.d_sae] {
            return Err(Error::Invalid(format!(
                "the log feature sparsity has shape {:?}, but this SAE has d_sae = {} latents",
                log_sparsity.dims(),
                self.cfg.d_sae
            )));
        }
        self.log_sparsity = Some(log_sparsity.to_dtype(DType::F32)?);
        Ok(self)
    }

    /// SAELens's log10 feature sparsity [d_sae], when the file had `sparsity.safetensors`.
    pub fn log_sparsity(&self) -> Option<&Tensor> {
        self.log_sparsity.as_ref()
    }

    /// The same SAE with its weights on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Sae> {
        let mv = |t: &Tensor| t.to_device(device);
        let mo = |t: &Option<Tensor>| t.as_ref().map(|t| t.to_device(device)).transpose();
        let w = &self.w;
        Ok(Sae {
            cfg: self.cfg.clone(),
            w: SaeWeights {
                w_enc: mv(&w.w_enc)?,
                b_enc: mo(&w.b_enc)?,
                w_dec: mv(&w.w_dec)?,
                b_dec: mv(&w.b_dec)?,
                threshold: mo(&w.threshold)?,
                b_gate: mo(&w.b_gate)?,
                r_mag: mo(&w.r_mag)?,
                b_mag: mo(&w.b_mag)?,
                w_skip: mo(&w.w_skip)?,
            },
            log_sparsity: mo(&self.log_sparsity)?,
        })
    }

    /// The config as read.
    pub fn cfg(&self) -> &SaeConfig {
        &self.cfg
    }

    /// The weights.
    pub fn weights(&self) -> &SaeWeights {
        &self.w
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.cfg.d_in
    }

    /// Number of latents.
    pub fn d_sae(&self) -> usize {
        self.cfg.d_sae
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.cfg.d_out
    }

    /// The hook it reads.
    pub fn hook_name(&self) -> &str {
        &self.cfg.hook_name
    }

    /// The hook it writes (its own hook for an SAE).
    pub fn hook_name_out(&self) -> &str {
        &self.cfg.hook_name_out
    }

    /// Whether it is a transcoder (reads one hook, writes another).
    pub fn is_transcoder(&self) -> bool {
        self.cfg.architecture.is_transcoder()
    }

    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        self.w.w_enc.device()
    }

    /// `W_dec` [d_sae, d_out]: row i is latent i's decoder direction.
    pub fn w_dec(&self) -> &Tensor {
        &self.w.w_dec
    }

    /// `W_enc` [d_in, d_sae]: column i is latent i's encoder direction.
    pub fn w_enc(&self) -> &Tensor {
        &self.w.w_enc
    }

    /// Latent activations of `x` [.., d_in] → [.., d_sae], as SAELens's `encode`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.encode_hooked(x, &mut |_, t| Ok(t))?.0)
    }

    /// Encoder pre-activations of `x` (`hook_sae_acts_pre`).
    pub fn encode_pre(&self, x: &Tensor) -> Result<Tensor> {
        let mut pre = None;
        self.encode_hooked(x, &mut |h, t| {
            if h == SaeHook::ActsPre {
                pre = Some(t.clone());
            }
            Ok(t)
        })?;
        pre.ok_or_else(|| Error::Invalid("the encoder recorded no pre-activations".into()))
    }

    /// The output for latent activations `acts` [.., d_sae], as SAELens's `decode` (an SAE's
    /// output normalisation needs the input's statistics: use [`Sae::forward`] for that).
    pub fn decode(&self, acts: &Tensor) -> Result<Tensor> {
        self.decode_hooked(acts, &NormState::Identity, None, &mut |_, t| Ok(t))
    }

    /// The reconstruction (or a transcoder's output) of `x`, as SAELens's `forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run_hooked(x, false, &mut |_, t| Ok(t))
    }

    /// SAELens's forward pass with its hook points: `hook` sees (and may replace) every SAE
    /// activation. With `use_error_term` (SAEs only), the output is the hooked reconstruction
    /// plus `x` minus the clean (unhooked) reconstruction, so without interventions it is `x`.
    pub fn run_hooked(&self, x: &Tensor, use_error_term: bool, hook: SaeHookFn) -> Result<Tensor> {
        if use_error_term && self.is_transcoder() {
            return Err(Error::Invalid(format!(
                "a transcoder's error term is its output hook's true value minus its output, which it cannot compute from its input alone: splice it at `{}` with the error computed there",
                self.cfg.hook_name_out
            )));
        }
        let dims = x.dims().to_vec();
        let x = self.flatten_heads(&x.to_dtype(DType::F32)?)?;
        let (acts, state) = self.encode_hooked(&x, hook)?;
        let skip_in = if self.cfg.architecture.has_skip() {
            Some(&x)
        } else {
            None
        };
        let mut out = self.decode_hooked(&acts, &state, skip_in, hook)?;
        if use_error_term {
            let (clean_acts, clean_state) = self.encode_hooked(&x, &mut |_, t| Ok(t))?;
            let clean =
                self.decode_hooked(&clean_acts, &clean_state, skip_in, &mut |_, t| Ok(t))?;
            let err = hook(SaeHook::Error, (&x - &clean)?)?;
            out = (out + err)?;
        }
        let out = hook(SaeHook::Output, out)?;
        self.unflatten_heads(out, &dims)
    }

    /// `[.., heads, d_head]` → `[.., heads·d_head]` at a per-head hook (`attn.hook_z`,
    /// `hook_q`…), where the SAE reads the heads flattened (SAELens's `reshape_activations:
    /// "hook_z"`); other inputs unchanged.
    fn flatten_heads(&self, x: &Tensor) -> Result<Tensor> {
        let per_head = [
            "hook_z",
            "hook_q",
            "hook_k",
            "hook_v",
            "hook_rot_q",
            "hook_rot_k",
        ]
        .iter()
        .any(|h| self.cfg.hook_name.ends_with(h));
        let d = x.dims();
        let r = d.len();
        if per_head && r >= 2 && d[r - 1] != self.cfg.d_in && d[r - 2] * d[r - 1] == self.cfg.d_in {
            Ok(x.flatten_from(r - 2)?)
        } else {
            Ok(x.clone())
        }
    }

    /// The output back in the input's per-head shape, when the input was flattened.
    fn unflatten_heads(&self, out: Tensor, in_dims: &[usize]) -> Result<Tensor> {
        let r = in_dims.len();
        if out.rank() + 1 == r && out.dim(D::Minus1)? == in_dims[r - 2] * in_dims[r - 1] {
            Ok(out.reshape(in_dims)?)
        } else {
            Ok(out)
        }
    }

    fn normalize_in(&self, x: &Tensor) -> Result<(Tensor, NormState)> {
        Ok(match self.cfg.normalize_activations {
            Normalization::None | Normalization::ExpectedAverageOnlyIn => {
                (x.clone(), NormState::Identity)
            }
            Normalization::ConstantNormRescale => {
                let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                let coeff = norm.recip()?.affine((self.cfg.d_in as f64).sqrt(), 0.0)?;
                (x.broadcast_mul(&coeff)?, NormState::Coeff(coeff))
            }
            Normalization::LayerNorm => {
                let n = x.dim(D::Minus1)?;
                let mu = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mu)?;
                let var =
                    (xc.sqr()?.sum_keepdim(D::Minus1)? / (n.saturating_sub(1).max(1)) as f64)?;
                let std = var.sqrt()?;
                let y = xc.broadcast_div(&(&std + 1e-5)?)?;
                (y, NormState::MeanStd(mu, std))
            }
        })
    }

    fn encode_hooked(&self, x: &Tensor, hook: SaeHookFn) -> Result<(Tensor, NormState)> {
        let x = self.flatten_heads(&x.to_dtype(DType::F32)?)?;
        if x.dim(D::Minus1)? != self.cfg.d_in {
            return Err(Error::Invalid(format!(
                "this SAE (at `{}`) reads vectors of width d_in = {}, but got shape {:?}",
                self.cfg.hook_name,
                self.cfg.d_in,
                x.dims()
            )));
        }
        let x = hook(SaeHook::Input, x)?;
        let (x, state) = self.normalize_in(&x)?;
        let sae_in = if self.cfg.apply_b_dec_to_input {
            x.broadcast_sub(&self.w.b_dec)?
        } else {
            x
        };
        let w = &self.w;
        let acts = match self.cfg.architecture {
            Architecture::Gated => {
                let gate_pre =
                    matmul_last(&sae_in, &w.w_enc)?.broadcast_add(opt(&w.b_gate, "b_gate")?)?;
                let active = gate_pre.gt(0.0)?.to_dtype(DType::F32)?;
                let scale = opt(&w.r_mag, "r_mag")?.exp()?;
                let mag_pre = matmul_last(&sae_in, &w.w_enc.broadcast_mul(&scale)?)?
                    .broadcast_add(opt(&w.b_mag, "b_mag")?)?;
                let mag_pre = hook(SaeHook::ActsPre, mag_pre)?;
                (active * mag_pre.relu()?)?
            }
            a => {
                let mut pre =
                    matmul_last(&sae_in, &w.w_enc)?.broadcast_add(opt(&w.b_enc, "b_enc")?)?;
                pre = hook(SaeHook::ActsPre, pre)?;
                match a {
                    Architecture::TopK => {
                        if self.cfg.rescale_acts_by_decoder_norm {
                            pre = pre.broadcast_mul(&row_norms(&w.w_dec)?)?;
                        }
                        topk_relu(&pre, self.cfg.k.unwrap_or(1))?
                    }
                    _ if a.has_threshold() => {
                        let th = opt(&w.threshold, "threshold")?;
                        let mask = pre.broadcast_gt(th)?.to_dtype(DType::F32)?;
                        if self.cfg.jumprelu_without_relu() {
                            (pre * mask)?
                        } else {
                            (pre.relu()? * mask)?
                        }
                    }
                    _ => pre.relu()?,
                }
            }
        };
        Ok((hook(SaeHook::ActsPost, acts)?, state))
    }

    fn decode_hooked(
        &self,
        acts: &Tensor,
        state: &NormState,
        skip_in: Option<&Tensor>,
        hook: SaeHookFn,
    ) -> Result<Tensor> {
        let w = &self.w;
        let acts = acts.to_dtype(DType::F32)?;
        let dec = if self.cfg.rescale_acts_by_decoder_norm {
            w.w_dec.broadcast_div(&row_norms(&w.w_dec)?.unsqueeze(1)?)?
        } else {
            w.w_dec.clone()
        };
        let recons = matmul_last(&acts, &dec)?.broadcast_add(&w.b_dec)?;
        let recons = hook(SaeHook::Recons, recons)?;
        if self.is_transcoder() {
            // SAELens's transcoders never de-normalise (d_out differs from d_in).
            return Ok(match (skip_in, &w.w_skip) {
                (Some(x), Some(ws)) => (recons + matmul_last(x, &ws.t()?)?)?,
                _ => recons,
            });
        }
        Ok(match state {
            NormState::Identity => recons,
            NormState::Coeff(c) => recons.broadcast_div(c)?,
            NormState::MeanStd(mu, std) => recons.broadcast_mul(std)?.broadcast_add(mu)?,
        })
    }
}

fn opt<'a>(t: &'a Option<Tensor>, name: &str) -> Result<&'a Tensor> {
    t.as_ref()
        .ok_or_else(|| Error::Invalid(format!("this SAE has no `{name}` weight")))
}

/// `x @ w` over the last dimension of `x` of any rank.
pub(crate) fn matmul_last(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k.max(1);
    let y = x.reshape((rows, k))?.matmul(w)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(1)?;
    Ok(y.reshape(out)?)
}

/// ‖row‖₂ of a [r, c] matrix, [r].
fn row_norms(w: &Tensor) -> Result<Tensor> {
    Ok(w.sqr()?.sum(1)?.sqrt()?)
}

/// Keeps the k largest entries of the last dimension, ReLU'd; zeroes the rest.
fn topk_relu(x: &Tensor, k: usize) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    let k = k.min(n);
    let idx = x
        .contiguous()?
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, k)?
        .contiguous()?;
    let vals = x.contiguous()?.gather(&idx, D::Minus1)?.relu()?;
    Ok(x.zeros_like()?.scatter(&idx, &vals, D::Minus1)?)
}
