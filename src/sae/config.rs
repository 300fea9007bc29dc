//! What an SAE or transcoder file says about itself, in one shape for every format: the
//! architecture, sizes, hook points (by our TransformerLens names) and input normalisation.

use serde::{Deserialize, Serialize};

/// The encoder/decoder family, as SAELens names its architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// ReLU SAE (`standard`).
    Standard,
    /// Gated SAE (`gated`): a gate path and a magnitude path sharing `W_enc`.
    Gated,
    /// JumpReLU SAE (`jumprelu`): ReLU(h)·1[h > θ].
    JumpRelu,
    /// TopK SAE (`topk`): the k largest pre-activations, ReLU'd.
    TopK,
    /// ReLU transcoder (`transcoder`): reads one hook, writes another.
    Transcoder,
    /// ReLU transcoder with a linear skip path (`skip_transcoder`).
    SkipTranscoder,
    /// JumpReLU transcoder (`jumprelu_transcoder`).
    JumpReluTranscoder,
    /// JumpReLU transcoder with a skip path (`jumprelu_skip_transcoder`).
    JumpReluSkipTranscoder,
}

impl Architecture {
    /// SAELens's name for it (`cfg.json`'s `architecture`).
    pub fn saelens_name(&self) -> &'static str {
        match self {
            Architecture::Standard => "standard",
            Architecture::Gated => "gated",
            Architecture::JumpRelu => "jumprelu",
            Architecture::TopK => "topk",
            Architecture::Transcoder => "transcoder",
            Architecture::SkipTranscoder => "skip_transcoder",
            Architecture::JumpReluTranscoder => "jumprelu_transcoder",
            Architecture::JumpReluSkipTranscoder => "jumprelu_skip_transcoder",
        }
    }

    /// Every architecture, for error messages.
    pub const ALL: [Architecture; 8] = [
        Architecture::Standard,
        Architecture::Gated,
        Architecture::JumpRelu,
        Architecture::TopK,
        Architecture::Transcoder,
        Architecture::SkipTranscoder,
        Architecture::JumpReluTranscoder,
        Architecture::JumpReluSkipTranscoder,
    ];

    /// Whether it writes a different hook than it reads.
    pub fn is_transcoder(&self) -> bool {
        matches!(
            self,
            Architecture::Transcoder
                | Architecture::SkipTranscoder
                | Architecture::JumpReluTranscoder
                | Architecture::JumpReluSkipTranscoder
        )
    }

    /// Whether it has a `threshold` (JumpReLU).
    pub fn has_threshold(&self) -> bool {
        matches!(
            self,
            Architecture::JumpRelu
                | Architecture::JumpReluTranscoder
                | Architecture::JumpReluSkipTranscoder
        )
    }

    /// Whether it has a linear skip path `W_skip`.
    pub fn has_skip(&self) -> bool {
        matches!(
            self,
            Architecture::SkipTranscoder | Architecture::JumpReluSkipTranscoder
        )
    }
}

/// How the input is normalised before encoding (SAELens's `normalize_activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Normalization {
    /// `none`.
    None,
    /// `expected_average_only_in`: a training-time scale, the identity at inference.
    ExpectedAverageOnlyIn,
    /// `constant_norm_rescale`: x·√d_in/‖x‖ in, divided back out.
    ConstantNormRescale,
    /// `layer_norm`: (x−μ)/(σ + 1e-5) with σ the ddof-1 standard deviation, undone on output
    /// without the eps.
    LayerNorm,
}

impl Normalization {
    /// SAELens's name for it.
    pub fn saelens_name(&self) -> &'static str {
        match self {
            Normalization::None => "none",
            Normalization::ExpectedAverageOnlyIn => "expected_average_only_in",
            Normalization::ConstantNormRescale => "constant_norm_rescale",
            Normalization::LayerNorm => "layer_norm",
        }
    }
}

/// Where a file came from, kept so `mechinterp sae info` can say how it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// SAELens 6.x: `cfg.json` with `metadata`, `sae_weights.safetensors`.
    SaeLensV6,
    /// SAELens before 6: flat `cfg.json` (`hook_point`, `activation_fn_str`…).
    SaeLensLegacy,
    /// Gemma Scope 2: `config.json` + `params.safetensors`.
    GemmaScope2,
    /// circuit-tracer's per-layer transcoder file.
    CircuitTracer,
    /// circuit-tracer's cross-layer transcoder (one encoder per layer, decoders to every
    /// later layer); a [`crate::sae::Sae`] holds one source layer of it.
    CircuitTracerClt,
    /// Made in memory (training).
    InMemory,
}

/// Everything about an SAE except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Encoder/decoder family.
    pub architecture: Architecture,
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Output width (`d_in` for an SAE).
    pub d_out: usize,
    /// The hook it reads, as our (TransformerLens) hook name, e.g. `blocks.6.hook_resid_post`.
    pub hook_name: String,
    /// The hook it writes: `hook_name` for an SAE, e.g. `blocks.6.hook_mlp_out` for a transcoder.
    pub hook_name_out: String,
    /// TopK's k.
    pub k: Option<usize>,
    /// TopK: multiply pre-activations by ‖W_dec row‖ (and decode with unit rows).
    pub rescale_acts_by_decoder_norm: bool,
    /// Input normalisation.
    pub normalize_activations: Normalization,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// The model it was trained on, when the file says.
    pub model_name: Option<String>,
    /// Tokens per context in training, when the file says.
    pub context_size: Option<usize>,
    /// Whether BOS was left out in training, when the file says.
    pub exclude_special_tokens: Option<bool>,
    /// Where it was read from.
    pub format: Format,
    /// SAELens's `metadata` object: the file's own, or for a Gemma Scope 2 / circuit-tracer
    /// file the one SAELens's loaders build for it (model, hooks, `hf_hook_name`…); saving
    /// writes it back.
    pub metadata: serde_json::Value,
}

impl SaeConfig {
    /// Whether JumpReLU is circuit-tracer's `x·1[x > θ]` (files from circuit-tracer) rather
    /// than SAELens's `ReLU(x)·1[x > θ]`; they differ only where θ < 0.
    pub fn jumprelu_without_relu(&self) -> bool {
        matches!(
            self.format,
            Format::CircuitTracer | Format::CircuitTracerClt
        )
    }
}
