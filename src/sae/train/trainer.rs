//! The optimiser and losses for training SAEs and transcoders, as SAELens 6.x's `SAETrainer`
//! and its training SAEs do it: Adam with gradient-norm clipping at 1, the learning-rate
//! warm-up / main schedule / decay, the MSE loss summed over the output and averaged over the
//! batch, and per architecture
//! - standard (and the ReLU transcoders, which SAELens cannot train): an L1 penalty on latents
//!   weighted by ‖W_dec row‖, its coefficient warmed up linearly;
//! - TopK / BatchTopK: pre-activations scaled by ‖W_dec row‖ (`rescale_acts_by_decoder_norm`),
//!   the aux-k loss on the top d_in/2 dead latents, BatchTopK's running threshold, saved as a
//!   JumpReLU SAE; BatchTopK transcoders (ours) the same towards a target, saved as JumpReLU
//!   transcoders;
//! - JumpReLU: the straight-through estimator with a rectangle kernel and the step (L0), tanh or
//!   quadratic sparsity penalty, the threshold kept non-negative.
//!
//! Weights start as SAELens's do: `W_dec` Kaiming-uniform with rows rescaled to norm 0.1,
//! `W_enc = W_decᵀ`, biases zero. Latents that have not fired for `dead_feature_window` steps
//! are dead; firing frequencies are counted over windows of `feature_sampling_window` steps.
//! Gradients come from candle's autograd, except for TopK / BatchTopK on the CPU, where a
//! hand-written sparse backward pass (`fast.rs`, checked against autograd in the tests)
//! touches only the k selected latents per row; `W_enc` is held transposed for it.

mod adam;
mod fast;
mod losses;
mod schedule;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

pub use adam::{clip_factor, grads_of, Adam, Moments};
pub use losses::{batch_topk_mask, dead_topk_mask, jumprelu, step as step_fn, topk_mask};
pub use schedule::{coefficient_at, lr_at, LrScheduler};

use crate::error::{Error, Result};
use crate::sae::{Architecture, Format, Normalization, Sae, SaeConfig, SaeWeights};

/// What to train (SAELens's training architectures, plus ReLU transcoders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainArch {
    /// ReLU SAE with a decoder-norm-weighted L1 penalty (`standard`).
    Standard,
    /// TopK SAE (`topk`).
    TopK,
    /// BatchTopK SAE (`batchtopk`), saved as `jumprelu`.
    BatchTopK,
    /// JumpReLU SAE (`jumprelu`).
    JumpRelu,
    /// ReLU transcoder (`transcoder`), trained like `standard` against a target.
    Transcoder,
    /// ReLU transcoder with a linear skip path `W_skip`, initialised at zero.
    SkipTranscoder,
    /// BatchTopK transcoder (`batchtopk_transcoder`, ours: SAELens trains none), saved as
    /// `jumprelu_transcoder` with the learned global threshold.
    BatchTopKTranscoder,
}

impl TrainArch {
    /// The name SAELens (and the CLI's `--arch`) gives it.
    pub fn name(&self) -> &'static str {
        match self {
            TrainArch::Standard => "standard",
            TrainArch::TopK => "topk",
            TrainArch::BatchTopK => "batchtopk",
            TrainArch::JumpRelu => "jumprelu",
            TrainArch::Transcoder => "transcoder",
            TrainArch::SkipTranscoder => "skip_transcoder",
            TrainArch::BatchTopKTranscoder => "batchtopk_transcoder",
        }
    }

    /// SAELens's training architectures, plus the ReLU transcoders.
    pub const ALL: [TrainArch; 6] = [
        TrainArch::Standard,
        TrainArch::TopK,
        TrainArch::BatchTopK,
        TrainArch::JumpRelu,
        TrainArch::Transcoder,
        TrainArch::SkipTranscoder,
    ];

    /// Architectures of ours beyond [`TrainArch::ALL`].
    pub const MORE: [TrainArch; 1] = [TrainArch::BatchTopKTranscoder];

    /// The architecture named `s` (`--arch`), or an error listing the names.
    pub fn parse(s: &str) -> Result<TrainArch> {
        let all = || TrainArch::ALL.into_iter().chain(TrainArch::MORE);
        all().find(|a| a.name() == s).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown training architecture `{s}`; use one of: {}",
                all().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Whether it maps one hook to another (needs a target).
    pub fn is_transcoder(&self) -> bool {
        matches!(
            self,
            TrainArch::Transcoder | TrainArch::SkipTranscoder | TrainArch::BatchTopKTranscoder
        )
    }

    fn is_topk(&self) -> bool {
        matches!(
            self,
            TrainArch::TopK | TrainArch::BatchTopK | TrainArch::BatchTopKTranscoder
        )
    }

    /// Whether it selects the top k·b pre-activations of a batch (and learns a threshold).
    pub(crate) fn is_batch_topk(&self) -> bool {
        matches!(self, TrainArch::BatchTopK | TrainArch::BatchTopKTranscoder)
    }

    fn has_l1(&self) -> bool {
        matches!(
            self,
            TrainArch::Standard | TrainArch::Transcoder | TrainArch::SkipTranscoder
        )
    }
}

/// JumpReLU's sparsity penalty (SAELens's `jumprelu_sparsity_loss_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SparsityMode {
    /// `step`: the expected L0 through the step function's estimator (DeepMind's).
    Step,
    /// `tanh`: Σ tanh(scale · acts · ‖W_dec row‖) (Anthropic's).
    Tanh,
    /// `quadratic`: 2/target · (L0 − target)² around `target_l0` (Gemma Scope 2's).
    Quadratic,
}

/// How `b_dec` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BDecInit {
    /// Zeros (SAELens 6.x's only choice).
    Zeros,
    /// The mean of the initial batch (older SAELens's `b_dec_init_method = "mean"`).
    Mean,
}

/// Everything a training run needs, with SAELens's names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// What to train.
    pub arch: TrainArch,
    /// Input width.
    pub d_in: usize,
    /// Output width (`d_in` for an SAE).
    pub d_out: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// TopK's k per row, BatchTopK's mean k per row (SAELens's default 100).
    pub k: Option<usize>,
    /// Base learning rate (3e-4).
    pub lr: f64,
    /// Adam β₁ (0.9).
    pub adam_beta1: f64,
    /// Adam β₂ (0.999).
    pub adam_beta2: f64,
    /// Adam ε (torch's 1e-8).
    pub adam_eps: f64,
    /// Gradient-norm clipping over all parameters (SAELens always clips at 1.0); `None` to
    /// turn it off.
    pub max_grad_norm: Option<f64>,
    /// Planned number of steps, which the schedules need (no default: set it).
    pub total_steps: usize,
    /// Main learning-rate schedule (`constant`).
    pub lr_scheduler: LrScheduler,
    /// Learning rate at the end of cosine annealing and the start of decay; `None` is SAELens's
    /// `lr / 10`.
    pub lr_end: Option<f64>,
    /// Linear learning-rate warm-up steps (0).
    pub lr_warm_up_steps: usize,
    /// Linear learning-rate decay steps at the end (0).
    pub lr_decay_steps: usize,
    /// Standard / transcoders: L1 coefficient (1.0).
    pub l1_coefficient: f64,
    /// Standard / transcoders: L1 coefficient warm-up steps (0).
    pub l1_warm_up_steps: usize,
    /// JumpReLU: L0 coefficient (1.0).
    pub l0_coefficient: f64,
    /// JumpReLU: L0 coefficient warm-up steps (0).
    pub l0_warm_up_steps: usize,
    /// JumpReLU: the estimator's rectangle width (0.05).
    pub jumprelu_bandwidth: f64,
    /// JumpReLU: initial threshold (0.01).
    pub jumprelu_init_threshold: f64,
    /// JumpReLU: sparsity penalty (`step`).
    pub jumprelu_sparsity_loss_mode: SparsityMode,
    /// JumpReLU `tanh` mode: the scale inside tanh (4.0).
    pub jumprelu_tanh_scale: f64,
    /// JumpReLU: whether the estimator also reaches the pre-activations (false, DeepMind's).
    pub jumprelu_ste_to_input: bool,
    /// JumpReLU `quadratic` mode: the target L0 (required there).
    pub target_l0: Option<f64>,
    /// JumpReLU: Anthropic's pre-activation loss on dead latents (`None`, off).
    pub pre_act_loss_coefficient: Option<f64>,
    /// TopK / BatchTopK: the aux-k loss coefficient (1.0).
    pub aux_k_coefficient: f64,
    /// BatchTopK: the running threshold's update rate (0.01).
    pub topk_threshold_lr: f64,
    /// TopK / BatchTopK: select and decode as if decoder rows had unit norm (true).
    pub rescale_acts_by_decoder_norm: bool,
    /// Initial ‖W_dec row‖ with `W_enc = W_decᵀ` (0.1); `None` keeps Kaiming-uniform rows.
    pub decoder_init_norm: Option<f64>,
    /// How `b_dec` starts (zeros).
    pub b_dec_init: BDecInit,
    /// Steps without firing after which a latent is dead (1000).
    pub dead_feature_window: usize,
    /// Steps over which firing frequencies are counted before they are reset (2000).
    pub feature_sampling_window: usize,
    /// Subtract `b_dec` from the input before encoding (true for SAEs, false for transcoders).
    pub apply_b_dec_to_input: bool,
    /// The hook read, recorded in the saved SAE.
    pub hook_name: String,
    /// The hook written (= `hook_name` for an SAE).
    pub hook_name_out: String,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl TrainConfig {
    /// SAELens's defaults for `arch` at these sizes (`total_steps` left at 0: set it).
    pub fn new(arch: TrainArch, d_in: usize, d_out: usize, d_sae: usize) -> TrainConfig {
        TrainConfig {
            arch,
            d_in,
            d_out,
            d_sae,
            k: if arch.is_topk() { Some(100) } else { None },
            lr: 3e-4,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            max_grad_norm: Some(1.0),
            total_steps: 0,
            lr_scheduler: LrScheduler::Constant,
            lr_end: None,
            lr_warm_up_steps: 0,
            lr_decay_steps: 0,
            l1_coefficient: 1.0,
            l1_warm_up_steps: 0,
            l0_coefficient: 1.0,
            l0_warm_up_steps: 0,
            jumprelu_bandwidth: 0.05,
            jumprelu_init_threshold: 0.01,
            jumprelu_sparsity_loss_mode: SparsityMode::Step,
            jumprelu_tanh_scale: 4.0,
            jumprelu_ste_to_input: false,
            target_l0: None,
            pre_act_loss_coefficient: None,
            aux_k_coefficient: 1.0,
            topk_threshold_lr: 0.01,
            rescale_acts_by_decoder_norm: true,
            decoder_init_norm: Some(0.1),
            b_dec_init: BDecInit::Zeros,
            dead_feature_window: 1000,
            feature_sampling_window: 2000,
            apply_b_dec_to_input: !arch.is_transcoder(),
            hook_name: String::new(),
            hook_name_out: String::new(),
            seed: 42,
        }
    }

    /// The learning rate at `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        lr_at(
            self.lr_scheduler,
            self.lr,
            self.lr_end.unwrap_or(self.lr / 10.0),
            self.total_steps,
            self.lr_warm_up_steps,
            self.lr_decay_steps,
            step,
        )
    }

    /// Checks every value that training could not honour, naming it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        let a = self.arch.name();
        if self.d_in == 0 || self.d_out == 0 || self.d_sae == 0 {
            return bad(format!(
                "d_in ({}), d_out ({}) and d_sae ({}) must all be at least 1",
                self.d_in, self.d_out, self.d_sae
            ));
        }
        if !self.arch.is_transcoder() && self.d_out != self.d_in {
            return bad(format!(
                "a `{a}` SAE reconstructs its input, so d_out ({}) must equal d_in ({})",
                self.d_out, self.d_in
            ));
        }
        if self.arch.is_transcoder() && self.apply_b_dec_to_input {
            return bad(format!(
                "apply_b_dec_to_input is not supported for a `{a}` (b_dec lives in the output space), as in SAELens; set it to false"
            ));
        }
        if self.arch.is_transcoder() && self.b_dec_init == BDecInit::Mean {
            return bad(format!(
                "b_dec_init = Mean takes the input's mean, which is not in a `{a}`'s output space; use Zeros"
            ));
        }
        if self.arch.is_topk() {
            match self.k {
                Some(k) if k >= 1 && k <= self.d_sae => {}
                k => {
                    return bad(format!(
                        "a `{a}` SAE needs 1 ≤ k ≤ d_sae ({}); k is {k:?}",
                        self.d_sae
                    ))
                }
            }
        } else if self.k.is_some() {
            return bad(format!(
                "k is only for topk and batchtopk, but the architecture is `{a}`; leave k unset"
            ));
        }
        if self.total_steps == 0 {
            return bad(
                "total_steps is 0; set it (tokens / batch size) so the schedules know the run's length"
                    .into(),
            );
        }
        if self.lr_warm_up_steps + self.lr_decay_steps > self.total_steps {
            return bad(format!(
                "lr_warm_up_steps ({}) + lr_decay_steps ({}) exceed total_steps ({})",
                self.lr_warm_up_steps, self.lr_decay_steps, self.total_steps
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if self.lr_decay_steps > 0
            && self.lr_scheduler == LrScheduler::CosineAnnealing
            && self.lr_end == Some(0.0)
        {
            return bad(
                "lr_decay_steps with lr_end = 0 would decay from 0 to 0 (SAELens refuses it too); set lr_end"
                    .into(),
            );
        }
        for (name, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if self.arch == TrainArch::JumpRelu {
            if self.jumprelu_bandwidth.is_nan() || self.jumprelu_bandwidth <= 0.0 {
                return bad(format!(
                    "jumprelu_bandwidth must be positive, got {}",
                    self.jumprelu_bandwidth
                ));
            }
            if self.jumprelu_sparsity_loss_mode == SparsityMode::Quadratic {
                match self.target_l0 {
                    Some(t) if t > 0.0 && t <= self.d_sae as f64 => {}
                    t => {
                        return bad(format!(
                            "the quadratic sparsity loss needs 0 < target_l0 ≤ d_sae ({}); target_l0 is {t:?}",
                            self.d_sae
                        ))
                    }
                }
            }
        }
        if self.dead_feature_window == 0 || self.feature_sampling_window == 0 {
            return bad(
                "dead_feature_window and feature_sampling_window must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// What one step measured (on the batch it trained on, before the update).
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The step's index (0-based).
    pub step: usize,
    /// MSE loss: squared error summed over the output, averaged over the batch.
    pub mse: f64,
    /// TopK / BatchTopK: the aux-k loss; JumpReLU: the pre-activation loss (0 when off).
    pub aux_loss: f64,
    /// Standard / transcoders: the L1 loss; JumpReLU: the L0 loss; 0 for TopK.
    pub sparsity_loss: f64,
    /// Mean number of firing latents per row.
    pub l0: f64,
    /// 1 − Σ‖out − target‖² / Σ‖target − mean(target)‖² over the batch, as SAELens logs it.
    pub explained_variance: f64,
    /// Fraction of latents dead after this step.
    pub dead_fraction: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
}

/// An SAE or transcoder in training: its parameters, Adam state and firing statistics.
pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    /// `W_enc` transposed, [d_sae, d_in].
    w_enc_t: Var,
    b_enc: Var,
    w_dec: Var,
    b_dec: Var,
    threshold: Option<Var>,
    w_skip: Option<Var>,
    adam: Adam,
    step: usize,
    topk_threshold: f64,
    since_fired: Vec<u32>,
    act_freq: Vec<f64>,
    n_frac_active: usize,
    autograd_only: bool,
}

/// The forward pass of a training step: what the losses and statistics read.
struct Forward {
    acts: Tensor,
    h: Tensor,
    out: Tensor,
}

/// What a step's forward and backward pass produced, whichever path computed it.
struct Pass {
    grads: Vec<Tensor>,
    mse: f64,
    aux: f64,
    sparsity: f64,
    fired: Vec<f32>,
    min_pos: f32,
    resid_sq: f64,
}

/// Deterministic uniform numbers (SplitMix64), so runs are reproducible without a `rand` crate.
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `torch.nn.init.kaiming_uniform_` on a [rows, cols] matrix: U(−b, b), b = √(6 / cols).
    fn kaiming_uniform(&mut self, rows: usize, cols: usize) -> Vec<f32> {
        let b = (6.0 / cols as f64).sqrt() as f32;
        (0..rows * cols)
            .map(|_| (2.0 * self.next_f32() - 1.0) * b)
            .collect()
    }
}

const WEIGHTS_FILE: &str = "trainer_weights.safetensors";
const CONFIG_FILE: &str = "trainer_config.json";
const STATE_FILE: &str = "trainer_state.json";

/// The scalar counters of a checkpoint (tensors go in the safetensors file).
#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    adam_t: usize,
    topk_threshold: f64,
    n_frac_active: usize,
}

impl Trainer {
    /// A fresh trainer with SAELens's initialisation; `init_batch` [n, d_in] is read only for
    /// `b_dec_init = Mean` (SAELens 6.x starts `b_dec` at zero).
    pub fn new(cfg: TrainConfig, init_batch: &Tensor, device: &Device) -> Result<Trainer> {
        cfg.validate()?;
        let (d_in, d_sae, d_out) = (cfg.d_in, cfg.d_sae, cfg.d_out);
        let mut rng = SplitMix(cfg.seed);
        let mut w_dec = rng.kaiming_uniform(d_sae, d_out);
        if let Some(norm) = cfg.decoder_init_norm {
            for row in w_dec.chunks_exact_mut(d_out) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let s = norm as f32 / n;
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let w_dec = Tensor::from_vec(w_dec, (d_sae, d_out), device)?;
        // W_enc is held transposed, [d_sae, d_in], so that a latent's encoder row is
        // contiguous for the sparse gradients. SAELens's transcoders draw W_enc on its own
        // (Kaiming-uniform on its [d_in, d_sae] shape, so the bound is √(6 / d_sae)).
        let w_enc_t = if cfg.arch.is_transcoder() {
            let b = (6.0 / d_sae as f64).sqrt() as f32;
            let v = (0..d_sae * d_in)
                .map(|_| (2.0 * rng.next_f32() - 1.0) * b)
                .collect::<Vec<_>>();
            Tensor::from_vec(v, (d_sae, d_in), device)?
        } else {
            w_dec.copy()?
        };
        let b_dec = match cfg.b_dec_init {
            BDecInit::Zeros => Tensor::zeros(d_out, DType::F32, device)?,
            BDecInit::Mean => {
                let x = check_rows(init_batch, d_in, "init_batch")?;
                if x.dim(0)? == 0 {
                    return Err(Error::Invalid(
                        "b_dec_init = Mean needs a non-empty init_batch".into(),
                    ));
                }
                x.to_device(device)?.mean(0)?
            }
        };
        let threshold = if cfg.arch == TrainArch::JumpRelu {
            Some(Var::from_tensor(&Tensor::full(
                cfg.jumprelu_init_threshold as f32,
                d_sae,
                device,
            )?)?)
        } else {
            None
        };
        let w_skip = if cfg.arch == TrainArch::SkipTranscoder {
            Some(Var::from_tensor(&Tensor::zeros(
                (d_out, d_in),
                DType::F32,
                device,
            )?)?)
        } else {
            None
        };
        let mut t = Trainer {
            w_enc_t: Var::from_tensor(&w_enc_t)?,
            b_enc: Var::from_tensor(&Tensor::zeros(d_sae, DType::F32, device)?)?,
            w_dec: Var::from_tensor(&w_dec)?,
            b_dec: Var::from_tensor(&b_dec)?,
            threshold,
            w_skip,
            adam: Adam {
                beta1: cfg.adam_beta1,
                beta2: cfg.adam_beta2,
                eps: cfg.adam_eps,
                t: 0,
                moments: Vec::new(),
            },
            step: 0,
            topk_threshold: 0.0,
            since_fired: vec![0; d_sae],
            act_freq: vec![0.0; d_sae],
            n_frac_active: 0,
            autograd_only: false,
            device: device.clone(),
            cfg,
        };
        t.adam = Adam::new(
            &t.params(),
            t.cfg.adam_beta1,
            t.cfg.adam_beta2,
            t.cfg.adam_eps,
        )?;
        Ok(t)
    }

    /// The configuration.
    pub fn cfg(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// BatchTopK's running threshold (0 for other architectures).
    pub fn topk_threshold(&self) -> f64 {
        self.topk_threshold
    }

    /// Which latents are dead now (no firing for more than `dead_feature_window` steps).
    pub fn dead_mask(&self) -> Vec<bool> {
        self.since_fired
            .iter()
            .map(|&n| n as usize > self.cfg.dead_feature_window)
            .collect()
    }

    /// The parameters in a fixed order (Adam's state follows it).
    fn params(&self) -> Vec<Var> {
        let mut p = vec![
            self.w_enc_t.clone(),
            self.b_enc.clone(),
            self.w_dec.clone(),
            self.b_dec.clone(),
        ];
        p.extend(self.threshold.clone());
        p.extend(self.w_skip.clone());
        p
    }

    /// SAELens's parameter names, in [`Trainer::params`]'s order.
    fn param_names(&self) -> Vec<&'static str> {
        let mut n = vec!["W_enc", "b_enc", "W_dec", "b_dec"];
        if self.threshold.is_some() {
            n.push("threshold");
        }
        if self.w_skip.is_some() {
            n.push("W_skip");
        }
        n
    }

    /// ‖W_dec row‖ [d_sae], differentiable.
    fn dec_norms(&self) -> Result<Tensor> {
        Ok(self.w_dec.as_tensor().sqr()?.sum(1)?.sqrt()?)
    }

    /// The training forward pass of SAELens's training SAE for this architecture.
    fn forward(&self, x: &Tensor) -> Result<Forward> {
        let cfg = &self.cfg;
        let sae_in = if cfg.apply_b_dec_to_input {
            x.broadcast_sub(self.b_dec.as_tensor())?
        } else {
            x.clone()
        };
        let pre = sae_in
            .matmul(&self.w_enc_t.as_tensor().t()?)?
            .broadcast_add(self.b_enc.as_tensor())?;
        let (h, acts, dec_acts) = match cfg.arch {
            TrainArch::TopK | TrainArch::BatchTopK | TrainArch::BatchTopKTranscoder => {
                let norms = if cfg.rescale_acts_by_decoder_norm {
                    Some(self.dec_norms()?)
                } else {
                    None
                };
                let h = match &norms {
                    Some(n) => pre.broadcast_mul(n)?,
                    None => pre,
                };
                let k = cfg.k.unwrap_or(1);
                let mask = if cfg.arch == TrainArch::TopK {
                    topk_mask(&h, k)?
                } else {
                    batch_topk_mask(&h, k as f64)?
                };
                let acts = h.relu()?.mul(&mask)?;
                let dec_acts = match &norms {
                    // SAELens multiplies by 1 / ‖W_dec row‖.
                    Some(n) => acts.broadcast_mul(&n.recip()?)?,
                    None => acts.clone(),
                };
                (h, acts, dec_acts)
            }
            TrainArch::JumpRelu => {
                let th = self.threshold_var()?;
                let acts = jumprelu(
                    &pre,
                    th.as_tensor(),
                    cfg.jumprelu_bandwidth,
                    cfg.jumprelu_ste_to_input,
                )?;
                (pre, acts.clone(), acts)
            }
            _ => {
                let acts = pre.relu()?;
                (pre, acts.clone(), acts)
            }
        };
        let mut out = dec_acts
            .matmul(self.w_dec.as_tensor())?
            .broadcast_add(self.b_dec.as_tensor())?;
        if let Some(ws) = &self.w_skip {
            out = (out + x.matmul(&ws.as_tensor().t()?)?)?;
        }
        Ok(Forward { acts, h, out })
    }

    fn threshold_var(&self) -> Result<&Var> {
        self.threshold
            .as_ref()
            .ok_or_else(|| Error::Invalid("this trainer has no JumpReLU threshold".into()))
    }

    /// The output (reconstruction, or a transcoder's output) the training forward pass gives
    /// `x` [b, d_in] with the current weights; BatchTopK selects over this batch.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let x = check_rows(x, self.cfg.d_in, "x")?.to_device(&self.device)?;
        Ok(self.forward(&x)?.out.detach())
    }

    /// One training step on `x` [b, d_in] (and, for transcoders, `target` [b, d_out]).
    pub fn step(&mut self, x: &Tensor, target: Option<&Tensor>) -> Result<StepStats> {
        let cfg = self.cfg.clone();
        let x = check_rows(x, cfg.d_in, "x")?.to_device(&self.device)?;
        let b = x.dim(0)?;
        if b == 0 {
            return Err(Error::Invalid(
                "a training batch needs at least one row".into(),
            ));
        }
        let target = match (cfg.arch.is_transcoder(), target) {
            (true, Some(t)) => {
                let t = check_rows(t, cfg.d_out, "target")?.to_device(&self.device)?;
                if t.dim(0)? != b {
                    return Err(Error::Invalid(format!(
                        "the target has {} rows but the input has {b}",
                        t.dim(0)?
                    )));
                }
                t
            }
            (true, None) => {
                return Err(Error::Invalid(format!(
                    "a `{}` learns to map its input to a target: pass the target batch [b, {}]",
                    cfg.arch.name(),
                    cfg.d_out
                )))
            }
            (false, Some(_)) => {
                return Err(Error::Invalid(format!(
                    "a `{}` SAE reconstructs its input; pass no target",
                    cfg.arch.name()
                )))
            }
            (false, None) => x.clone(),
        };
        let lr = cfg.lr_at(self.step);
        let dead = self.dead_mask();
        let n_dead = dead.iter().filter(|&&d| d).count();

        let params = self.params();
        let fast = self.device.is_cpu() && cfg.arch.is_topk() && !self.autograd_only;
        let pass = if fast {
            self.fast_pass(&x, &target, &dead)?
        } else {
            self.autograd_pass(&x, &target, &dead, n_dead)?
        };
        let (scale, grad_norm) = clip_factor(&pass.grads, cfg.max_grad_norm)?;
        self.adam.step(&params, &pass.grads, scale, lr)?;
        if let Some(th) = &self.threshold {
            // SAELens projects the threshold onto θ ≥ 0 before each forward pass; doing it
            // after the update is the same for training and gives the saved SAE the same
            // outputs.
            th.set(&th.as_tensor().relu()?)?;
        }
        let per_latent = pass.fired;
        if cfg.arch.is_batch_topk() && pass.min_pos.is_finite() {
            let r = cfg.topk_threshold_lr;
            self.topk_threshold = (1.0 - r) * self.topk_threshold + r * pass.min_pos as f64;
        }
        if self.step > 0 && self.step.is_multiple_of(cfg.feature_sampling_window) {
            self.act_freq.iter_mut().for_each(|v| *v = 0.0);
            self.n_frac_active = 0;
        }
        for ((s, f), &c) in self
            .since_fired
            .iter_mut()
            .zip(self.act_freq.iter_mut())
            .zip(&per_latent)
        {
            *s = if c > 0.0 { 0 } else { s.saturating_add(1) };
            *f += c as f64;
        }
        self.n_frac_active += b;
        let l0 = per_latent.iter().map(|&c| c as f64).sum::<f64>() / b as f64;
        let resid = pass.resid_sq;
        let centred = target.broadcast_sub(&target.mean_keepdim(0)?)?;
        let total = centred.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let stats = StepStats {
            step: self.step,
            mse: pass.mse,
            aux_loss: pass.aux,
            sparsity_loss: pass.sparsity,
            l0,
            explained_variance: 1.0 - resid / total,
            dead_fraction: self.dead_mask().iter().filter(|&&d| d).count() as f64
                / cfg.d_sae as f64,
            lr,
            grad_norm,
        };
        self.step += 1;
        Ok(stats)
    }

    /// The CPU fast path (TopK / BatchTopK): hand-written sparse gradients.
    fn fast_pass(&self, x: &Tensor, target: &Tensor, dead: &[bool]) -> Result<Pass> {
        let f = fast::topk_step(
            &self.cfg,
            x,
            target,
            self.w_enc_t.as_tensor(),
            self.b_enc.as_tensor(),
            self.w_dec.as_tensor(),
            self.b_dec.as_tensor(),
            dead,
        )?;
        Ok(Pass {
            grads: f.grads,
            mse: f.mse,
            aux: f.aux,
            sparsity: 0.0,
            fired: f.fired,
            min_pos: f.min_pos,
            resid_sq: f.resid_sq,
        })
    }

    /// The general path: the losses as a graph, gradients from candle's autograd.
    fn autograd_pass(
        &self,
        x: &Tensor,
        target: &Tensor,
        dead: &[bool],
        n_dead: usize,
    ) -> Result<Pass> {
        let cfg = &self.cfg;
        let b = x.dim(0)?;
        let fwd = self.forward(x)?;
        let diff = (&fwd.out - target)?;
        let mse = (diff.sqr()?.sum_all()? / b as f64)?;
        let mut loss = mse.clone();
        let mut aux = None;
        let mut sparsity = None;
        if cfg.arch.has_l1() {
            let coef = coefficient_at(cfg.l1_coefficient, cfg.l1_warm_up_steps, self.step);
            // acts ≥ 0, so the L1 norm is the plain sum.
            let l1 = (fwd.acts.broadcast_mul(&self.dec_norms()?)?.sum_all()? * (coef / b as f64))?;
            loss = (loss + &l1)?;
            sparsity = Some(l1);
        } else if cfg.arch.is_topk() && n_dead > 0 {
            let l = self.aux_k_loss(target, &fwd, dead, n_dead)?;
            loss = (loss + &l)?;
            aux = Some(l);
        } else if cfg.arch == TrainArch::JumpRelu {
            let l0 = self.l0_loss(&fwd)?;
            loss = (loss + &l0)?;
            sparsity = Some(l0);
            if let (Some(c), true) = (cfg.pre_act_loss_coefficient, n_dead > 0) {
                let l = self.pre_act_loss(&fwd, dead, c)?;
                loss = (loss + &l)?;
                aux = Some(l);
            }
        }
        let grads = grads_of(&self.params(), &loss.backward()?)?;
        let acts = fwd.acts.detach();
        let fired = acts
            .gt(0f32)?
            .to_dtype(DType::F32)?
            .sum(0)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        let min_pos = if cfg.arch.is_batch_topk() {
            acts.flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?
                .into_iter()
                .filter(|&v| v > 0.0)
                .fold(f32::INFINITY, f32::min)
        } else {
            f32::INFINITY
        };
        let scalar = |t: Option<Tensor>| -> Result<f64> {
            Ok(match t {
                Some(t) => t.to_scalar::<f32>()? as f64,
                None => 0.0,
            })
        };
        Ok(Pass {
            grads,
            mse: mse.to_scalar::<f32>()? as f64,
            aux: scalar(aux)?,
            sparsity: scalar(sparsity)?,
            fired,
            min_pos,
            resid_sq: diff.sqr()?.sum_all()?.to_scalar::<f32>()? as f64,
        })
    }

    /// The gradients a step on `x` (and `target`, for transcoders) would take now, before
    /// clipping, in [`Trainer::params`]' order (`W_enc` transposed), by candle's autograd or,
    /// where there is one, the CPU fast path; nothing is updated. For checking the two.
    pub fn gradients(&self, x: &Tensor, target: &Tensor, autograd: bool) -> Result<Vec<Tensor>> {
        let x = check_rows(x, self.cfg.d_in, "x")?.to_device(&self.device)?;
        let target = check_rows(target, self.cfg.d_out, "target")?.to_device(&self.device)?;
        let dead = self.dead_mask();
        let n_dead = dead.iter().filter(|&&d| d).count();
        let fast = self.device.is_cpu() && self.cfg.arch.is_topk() && !autograd;
        let pass = if fast {
            self.fast_pass(&x, &target, &dead)?
        } else {
            self.autograd_pass(&x, &target, &dead, n_dead)?
        };
        Ok(pass.grads)
    }

    /// Makes every step use candle's autograd (the reference the CPU fast path of TopK and
    /// BatchTopK is checked against), or, with `false`, the fast path where there is one.
    pub fn set_autograd_only(&mut self, on: bool) {
        self.autograd_only = on;
    }

    /// SAELens's `calculate_topk_aux_loss`: the top `min(d_in/2, n_dead)` dead latents of each
    /// row (pre-activations, not ReLU'd) reconstruct the detached residual (target − output)
    /// through `W_dec` without bias, scaled by `min(n_dead / (d_in/2), 1)`.
    fn aux_k_loss(
        &self,
        target: &Tensor,
        fwd: &Forward,
        dead: &[bool],
        n_dead: usize,
    ) -> Result<Tensor> {
        let half = (self.cfg.d_in / 2).max(1);
        let scale = (n_dead as f64 / half as f64).min(1.0);
        let k_aux = half.min(n_dead);
        let residual = (target - &fwd.out)?.detach();
        let mask = dead_topk_mask(&fwd.h, dead, k_aux)?;
        let mut aux_acts = fwd.h.mul(&mask)?;
        if self.cfg.rescale_acts_by_decoder_norm {
            aux_acts = aux_acts.broadcast_mul(&self.dec_norms()?.recip()?)?;
        }
        let recons = aux_acts.matmul(self.w_dec.as_tensor())?;
        let b = target.dim(0)? as f64;
        Ok(((recons - residual)?.sqr()?.sum_all()? * (self.cfg.aux_k_coefficient * scale / b))?)
    }

    /// JumpReLU's sparsity loss, `(coef · per_row).mean()`.
    fn l0_loss(&self, fwd: &Forward) -> Result<Tensor> {
        let cfg = &self.cfg;
        let coef = coefficient_at(cfg.l0_coefficient, cfg.l0_warm_up_steps, self.step);
        let th = self.threshold_var()?.as_tensor();
        let b = fwd.h.dim(0)? as f64;
        let per_row = match cfg.jumprelu_sparsity_loss_mode {
            SparsityMode::Step | SparsityMode::Quadratic => {
                let l0 = step_fn(
                    &fwd.h,
                    th,
                    cfg.jumprelu_bandwidth,
                    cfg.jumprelu_ste_to_input,
                )?
                .sum(D::Minus1)?;
                if cfg.jumprelu_sparsity_loss_mode == SparsityMode::Quadratic {
                    let t = cfg.target_l0.unwrap_or(1.0);
                    ((l0 - t)?.sqr()? * (2.0 / t))?
                } else {
                    l0
                }
            }
            SparsityMode::Tanh => fwd
                .acts
                .broadcast_mul(&self.dec_norms()?)?
                .affine(cfg.jumprelu_tanh_scale, 0.0)?
                .tanh()?
                .sum(D::Minus1)?,
        };
        Ok((per_row.sum_all()? * (coef / b))?)
    }

    /// Anthropic's pre-activation loss on dead latents, as SAELens's `calculate_pre_act_loss`.
    fn pre_act_loss(&self, fwd: &Forward, dead: &[bool], coef: f64) -> Result<Tensor> {
        let th = self.threshold_var()?.as_tensor();
        let dead_t = Tensor::from_vec(
            dead.iter().map(|&d| d as u8 as f32).collect::<Vec<_>>(),
            dead.len(),
            &self.device,
        )?;
        let w = dead_t.mul(&self.dec_norms()?)?;
        let gap = th.broadcast_sub(&fwd.h)?.relu()?;
        let b = fwd.h.dim(0)? as f64;
        Ok((gap.broadcast_mul(&w)?.sum_all()? * (coef / b))?)
    }

    /// The inference SAE, as SAELens saves the training SAE: TopK / BatchTopK with
    /// `rescale_acts_by_decoder_norm` fold ‖W_dec row‖ into `W_enc`, `b_enc` and `W_dec`;
    /// BatchTopK becomes `jumprelu` with its running threshold for every latent.
    pub fn sae(&self) -> Result<Sae> {
        let cfg = &self.cfg;
        let mut w_enc = self.w_enc_t.as_tensor().detach().t()?.contiguous()?;
        let mut b_enc = self.b_enc.as_tensor().detach().copy()?;
        let mut w_dec = self.w_dec.as_tensor().detach().copy()?;
        let b_dec = self.b_dec.as_tensor().detach().copy()?;
        let fold = cfg.arch.is_topk() && cfg.rescale_acts_by_decoder_norm;
        if fold {
            let n = self.dec_norms()?.detach();
            b_enc = (b_enc * &n)?;
            w_dec = w_dec.broadcast_div(&n.unsqueeze(1)?)?;
            w_enc = w_enc.broadcast_mul(&n.unsqueeze(0)?)?;
        }
        let (architecture, threshold, k) = match cfg.arch {
            TrainArch::Standard => (Architecture::Standard, None, None),
            TrainArch::TopK => (Architecture::TopK, None, cfg.k),
            TrainArch::BatchTopK | TrainArch::BatchTopKTranscoder => (
                if cfg.arch.is_transcoder() {
                    Architecture::JumpReluTranscoder
                } else {
                    Architecture::JumpRelu
                },
                Some(Tensor::full(
                    self.topk_threshold as f32,
                    cfg.d_sae,
                    &self.device,
                )?),
                None,
            ),
            TrainArch::JumpRelu => (
                Architecture::JumpRelu,
                Some(self.threshold_var()?.as_tensor().detach().copy()?),
                None,
            ),
            TrainArch::Transcoder => (Architecture::Transcoder, None, None),
            TrainArch::SkipTranscoder => (Architecture::SkipTranscoder, None, None),
        };
        let mut details = serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null);
        if let Some(o) = details.as_object_mut() {
            for key in [
                "arch",
                "d_in",
                "d_out",
                "d_sae",
                "hook_name",
                "hook_name_out",
            ] {
                o.remove(key);
            }
        }
        let metadata = serde_json::json!({
            "hook_name": cfg.hook_name,
            "hook_name_out": cfg.hook_name_out,
            "training_architecture": cfg.arch.name(),
            "training_architecture_details": details,
            "training_steps": self.step,
        });
        let sae_cfg = SaeConfig {
            architecture,
            d_in: cfg.d_in,
            d_sae: cfg.d_sae,
            d_out: cfg.d_out,
            hook_name: cfg.hook_name.clone(),
            hook_name_out: if cfg.hook_name_out.is_empty() {
                cfg.hook_name.clone()
            } else {
                cfg.hook_name_out.clone()
            },
            k,
            rescale_acts_by_decoder_norm: cfg.arch == TrainArch::TopK
                && cfg.rescale_acts_by_decoder_norm,
            normalize_activations: Normalization::None,
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            model_name: None,
            context_size: None,
            exclude_special_tokens: None,
            format: Format::InMemory,
            metadata,
        };
        let w = SaeWeights {
            w_enc,
            b_enc: Some(b_enc),
            w_dec,
            b_dec,
            threshold,
            b_gate: None,
            r_mag: None,
            b_mag: None,
            w_skip: match &self.w_skip {
                Some(w) => Some(w.as_tensor().detach().copy()?),
                None => None,
            },
        };
        Sae::new(sae_cfg, w)
    }

    /// log10 of each latent's firing frequency over the current sampling window (+1e-10), [d_sae]
    /// on the CPU, as SAELens's `sparsity.safetensors` holds it.
    pub fn log_feature_sparsity(&self) -> Result<Tensor> {
        let n = self.n_frac_active.max(1) as f64;
        let v: Vec<f32> = self
            .act_freq
            .iter()
            .map(|&c| (c / n + 1e-10).log10() as f32)
            .collect();
        Ok(Tensor::from_vec(v, self.cfg.d_sae, &Device::Cpu)?)
    }

    /// Writes everything needed to resume into folder `dir` (created if missing): the config,
    /// the weights, Adam's moments, the step and the firing statistics.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let werr = |reason: String| Error::Write {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| werr(format!("cannot create the checkpoint folder: {e}")))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for ((name, p), mo) in self
            .param_names()
            .into_iter()
            .zip(self.params())
            .zip(&self.adam.moments)
        {
            // W_enc (and its moments) in SAELens's [d_in, d_sae] layout.
            let lay = |t: &Tensor| -> Result<Tensor> {
                Ok(if name == "W_enc" {
                    t.t()?.contiguous()?
                } else {
                    t.clone()
                })
            };
            tensors.insert(name.to_string(), lay(&p.as_tensor().detach())?);
            tensors.insert(format!("adam_m.{name}"), lay(&mo.m)?);
            tensors.insert(format!("adam_v.{name}"), lay(&mo.v)?);
        }
        let d = self.cfg.d_sae;
        tensors.insert(
            "n_forward_passes_since_fired".into(),
            Tensor::from_vec(
                self.since_fired
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>(),
                d,
                &Device::Cpu,
            )?,
        );
        tensors.insert(
            "act_freq_scores".into(),
            Tensor::from_vec(self.act_freq.clone(), d, &Device::Cpu)?,
        );
        let state = TrainerState {
            step: self.step,
            adam_t: self.adam.t,
            topk_threshold: self.topk_threshold,
            n_frac_active: self.n_frac_active,
        };
        std::fs::write(dir.join(CONFIG_FILE), to_json(&self.cfg)?)
            .map_err(|e| werr(format!("cannot write {CONFIG_FILE}: {e}")))?;
        std::fs::write(dir.join(STATE_FILE), to_json(&state)?)
            .map_err(|e| werr(format!("cannot write {STATE_FILE}: {e}")))?;
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))
            .map_err(|e| werr(format!("cannot write {WEIGHTS_FILE}: {e}")))?;
        Ok(())
    }

    /// A trainer resumed from a folder written by [`Trainer::save_checkpoint`], on `device`.
    pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Trainer> {
        let read = |name: &str| -> Result<String> {
            std::fs::read_to_string(dir.join(name)).map_err(|e| {
                Error::Invalid(format!(
                    "{} is not a trainer checkpoint (cannot read {name}: {e}); give the folder save_checkpoint wrote",
                    dir.display()
                ))
            })
        };
        let bad = |name: &str, e: String| {
            Error::Invalid(format!("{}: {name} is corrupt: {e}", dir.display()))
        };
        let cfg: TrainConfig = serde_json::from_str(&read(CONFIG_FILE)?)
            .map_err(|e| bad(CONFIG_FILE, e.to_string()))?;
        let state: TrainerState =
            serde_json::from_str(&read(STATE_FILE)?).map_err(|e| bad(STATE_FILE, e.to_string()))?;
        let tensors = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), device)
            .map_err(|e| bad(WEIGHTS_FILE, e.to_string()))?;
        let get = |name: &str| -> Result<Tensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(WEIGHTS_FILE, format!("it has no tensor `{name}`")))?;
            // W_enc is stored as SAELens lays it out and held transposed.
            Ok(if name.ends_with("W_enc") && t.rank() == 2 {
                t.t()?.contiguous()?
            } else {
                t.clone()
            })
        };
        let empty = Tensor::zeros((0, cfg.d_in), DType::F32, device)?;
        let mut cfg0 = cfg.clone();
        cfg0.b_dec_init = BDecInit::Zeros;
        let mut t = Trainer::new(cfg0, &empty, device)?;
        t.cfg = cfg;
        let names = t.param_names();
        for (name, p) in names.iter().zip(t.params()) {
            let v = get(name)?;
            if v.dims() != p.as_tensor().dims() {
                return Err(bad(
                    WEIGHTS_FILE,
                    format!(
                        "`{name}` has shape {:?}, but the config needs {:?}",
                        v.dims(),
                        p.as_tensor().dims()
                    ),
                ));
            }
            p.set(&v)?;
        }
        for (name, mo) in names.iter().zip(t.adam.moments.iter_mut()) {
            mo.m = get(&format!("adam_m.{name}"))?;
            mo.v = get(&format!("adam_v.{name}"))?;
        }
        t.since_fired = get("n_forward_passes_since_fired")?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as u32)
            .collect();
        t.act_freq = get("act_freq_scores")?
            .to_device(&Device::Cpu)?
            .to_vec1::<f64>()?;
        t.step = state.step;
        t.adam.t = state.adam_t;
        t.topk_threshold = state.topk_threshold;
        t.n_frac_active = state.n_frac_active;
        Ok(t)
    }
}

/// Pretty JSON of a checkpoint part.
fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map_err(|e| Error::Invalid(format!("cannot serialise the trainer state: {e}")))
}

/// `t` as f32 [n, width], or an error naming `what`.
fn check_rows(t: &Tensor, width: usize, what: &str) -> Result<Tensor> {
    match t.dims() {
        [_, w] if *w == width => Ok(t.to_dtype(DType::F32)?),
        d => Err(Error::Shape(format!(
            "{what} must have shape [rows, {width}], got {d:?}"
        ))),
    }
}
