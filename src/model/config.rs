//! One configuration for every architecture: the forward pass reads only this, so an
//! architecture is a config mapping plus a weight-name mapping.

use serde::Serialize;

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// GELU, tanh approximation (`gelu_pytorch_tanh`), as Gemma uses.
    GeluTanh,
    /// GELU with the exact erf.
    GeluErf,
    /// SiLU (swish), as Llama and Qwen use.
    Silu,
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (HF `rope_type: "linear"`).
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3's piecewise scaling (HF `rope_type: "llama3"`).
    Llama3 {
        /// Divisor of low frequencies.
        factor: f64,
        /// Wavelengths above original_max / low_freq_factor are scaled.
        low_freq_factor: f64,
        /// Wavelengths below original_max / high_freq_factor are kept.
        high_freq_factor: f64,
        /// Context length the base model was trained for.
        original_max_position_embeddings: f64,
    },
    /// Frequency i divided by `factors[i]`: llama.cpp's `rope_freqs` tensor, which its
    /// converter writes for Llama 3 scaling.
    Factors(Vec<f64>),
}

impl RopeScaling {
    /// Rescales inverse frequency `i` (of d_head / 2).
    pub fn apply(&self, i: usize, inv_freq: f64) -> f64 {
        match *self {
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Factors(ref f) => inv_freq / f.get(i).copied().unwrap_or(1.0),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            } => {
                let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
                if wavelen < orig / high_freq_factor {
                    inv_freq
                } else if wavelen > orig / low_freq_factor {
                    inv_freq / factor
                } else {
                    let smooth =
                        (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
                }
            }
        }
    }
}

/// Per-layer attention settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerConfig {
    /// Keys visible to a query: those at distance < window (HF and llama.cpp's convention).
    /// `None` is full causal attention.
    pub sliding_window: Option<usize>,
    /// RoPE base frequency for this layer.
    pub rope_theta: f64,
    /// RoPE frequency scaling for this layer, if any.
    pub rope_scaling: Option<RopeScaling>,
}

/// Everything the hooked forward pass needs to know about a model.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Architecture name, e.g. `gemma3`.
    pub architecture: String,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (grouped-query attention when < n_heads).
    pub n_kv_heads: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Width of one head.
    pub d_head: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// Vocabulary size (rows of the embedding).
    pub d_vocab: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Multiplier on attention scores (Gemma: query_pre_attn_scalar^-0.5).
    pub attn_scale: f64,
    /// Attention-logit soft-cap (Gemma 2: 50).
    pub attn_softcap: Option<f64>,
    /// Final-logit soft-cap (Gemma 2: 30).
    pub final_softcap: Option<f64>,
    /// Multiplier on token embeddings (Gemma: sqrt(d_model)).
    pub embed_scale: Option<f64>,
    /// RMSNorm on q and k per head, before RoPE (Gemma 3, Qwen 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP, before the residual add (Gemma 2/3).
    pub post_norms: bool,
    /// Biases on q, k and v (Qwen 2, Llama with attention_bias).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama with attention_bias).
    pub o_bias: bool,
    /// MLP activation.
    pub activation: Activation,
    /// Unembedding shares the embedding matrix.
    pub tied_embeddings: bool,
    /// Per-layer attention settings (length n_layers).
    pub layers: Vec<LayerConfig>,
    /// Longest context the model was trained for.
    pub max_position: usize,
    /// Beginning-of-sequence token id.
    pub bos_token_id: u32,
    /// End-of-sequence token id.
    pub eos_token_id: u32,
    /// Padding token id (right padding).
    pub pad_token_id: u32,
}

impl Config {
    /// Query heads per kv head.
    pub fn n_groups(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }

    /// Checks the numbers fit together, so a bad config fails at load, not mid-forward.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Load(m));
        if self.n_layers == 0 || self.n_heads == 0 || self.n_kv_heads == 0 || self.d_head == 0 {
            return bad(format!("config has a zero dimension: {self:?}"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads ({}) is not a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.d_head.is_multiple_of(2) {
            return bad(format!("d_head ({}) must be even for RoPE", self.d_head));
        }
        if self.layers.len() != self.n_layers {
            return bad(format!(
                "{} per-layer settings for {} layers",
                self.layers.len(),
                self.n_layers
            ));
        }
        Ok(())
    }
}
