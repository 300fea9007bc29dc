//! The supported families: their names in each format, the tensor names of every weight, and
//! the family facts (layer pattern, query scaling, embedding scale, norm offset…) that every
//! reader applies. What a file says is read under [`crate::model::load`]; this module knows
//! families, not file formats.

use crate::error::{Error, Result};
use crate::model::config::Activation;

/// The `architectures` entries we load from config.json.
pub const SUPPORTED: &[&str] = &[
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// The `general.architecture` values we load from GGUF files.
pub const SUPPORTED_GGUF: &[&str] = &["gemma2", "gemma3", "llama", "qwen2", "qwen3"];

/// A supported architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 2: soft-capping, alternating sliding window, (1 + w) norms, post-norms.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norm, 5 local : 1 global layers, two RoPE bases.
    Gemma3,
    /// Llama (1–3.x, SmolLM, Mistral-style): RoPE scaling, optional attention bias.
    Llama,
    /// Qwen 2 / 2.5: q/k/v biases.
    Qwen2,
    /// Qwen 3: q/k norm.
    Qwen3,
}

/// One weight of the model, named independently of any file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum W {
    Embed,
    Unembed,
    FinalNorm,
    Ln1,
    Ln1Post,
    Ln2,
    Ln2Post,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    OBias,
    QNorm,
    KNorm,
    Gate,
    Up,
    Down,
}

/// Gemma 3's local (sliding) layers' RoPE base when the file does not give one.
const GEMMA3_LOCAL_ROPE_THETA: f64 = 10_000.0;

impl Arch {
    /// The family of a config.json `architectures` entry; `None` for one we do not load.
    pub fn from_hf_class(class: &str) -> Option<Arch> {
        Some(match class {
            "Gemma2ForCausalLM" => Arch::Gemma2,
            "Gemma3ForCausalLM" => Arch::Gemma3,
            "LlamaForCausalLM" => Arch::Llama,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            _ => return None,
        })
    }

    /// Reads a GGUF's `general.architecture`.
    pub fn from_gguf(name: &str) -> Result<Arch> {
        Ok(match name {
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(Error::Load(format!(
                    "GGUF architecture `{other}` is not supported; supported: {}",
                    SUPPORTED_GGUF.join(", ")
                )))
            }
        })
    }

    /// The short name (also the GGUF metadata prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Gemma's family traits: (1 + w) norms, post-norms, scaled embeddings, GELU.
    pub fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }

    /// RMSNorm on q and k per head.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Qwen3)
    }

    /// Norms after attention and after the MLP, before the residual add.
    pub fn has_post_norms(self) -> bool {
        self.is_gemma()
    }

    /// What every RMSNorm weight is offset by: Gemma's norms scale by (1 + w). Transformers
    /// stores w; llama.cpp's converter stores 1 + w.
    pub fn norm_offset(self) -> f64 {
        if self.is_gemma() {
            1.0
        } else {
            0.0
        }
    }

    /// Multiplier on token embeddings: Gemma scales them by √d_model.
    pub fn embed_scale(self, d_model: usize) -> Option<f64> {
        self.is_gemma().then(|| (d_model as f64).sqrt())
    }

    /// The MLP activation where the file does not name one.
    pub fn activation(self) -> Activation {
        if self.is_gemma() {
            Activation::GeluTanh
        } else {
            Activation::Silu
        }
    }

    /// Attention-score multiplier 1/√s: s is Gemma's `query_pre_attn_scalar` where the file
    /// gives one, else (and always for the other families) the head size.
    pub fn attn_scale(self, query_pre_attn_scalar: Option<f64>, d_head: usize) -> f64 {
        let s = query_pre_attn_scalar
            .filter(|_| self.is_gemma())
            .unwrap_or(d_head as f64);
        1.0 / s.sqrt()
    }

    /// Attention and final logit soft-caps where the file does not set them: Gemma 2's 50
    /// and 30 (transformers' and llama.cpp's defaults alike); the others have none.
    pub fn default_softcaps(self) -> (Option<f64>, Option<f64>) {
        match self {
            Arch::Gemma2 => (Some(50.0), Some(30.0)),
            _ => (None, None),
        }
    }

    /// The family's sliding-window pattern n (every n-th layer global, the others sliding)
    /// when the file does not give one: Gemma 2 alternates (2), Gemma 3 has 5 local : 1
    /// global (6); the others do not slide by pattern.
    pub fn sliding_pattern(self) -> Option<usize> {
        match self {
            Arch::Gemma2 => Some(2),
            Arch::Gemma3 => Some(6),
            _ => None,
        }
    }

    /// Which layers slide under pattern `n`: all but every n-th (1-based); `n` = 0 slides
    /// every layer, as llama.cpp reads it.
    pub fn sliding_layers(n_layers: usize, n: usize) -> Vec<bool> {
        (0..n_layers).map(|l| n == 0 || (l + 1) % n != 0).collect()
    }

    /// The RoPE base of Gemma 3's local layers when the file does not give one; those layers
    /// never take the global RoPE scaling. `None` for families whose layers share one RoPE.
    pub fn local_rope_theta(self) -> Option<f64> {
        (self == Arch::Gemma3).then_some(GEMMA3_LOCAL_ROPE_THETA)
    }

    /// A weight's name in a Hugging Face checkpoint.
    pub(crate) fn hf_name(self, w: W, l: usize) -> String {
        let gemma = self.is_gemma();
        let s = match w {
            W::Embed => return "model.embed_tokens.weight".into(),
            W::Unembed => return "lm_head.weight".into(),
            W::FinalNorm => return "model.norm.weight".into(),
            W::Ln1 => "input_layernorm.weight",
            // In Llama-style checkpoints "post_attention_layernorm" is the pre-MLP norm.
            W::Ln1Post | W::Ln2 if !gemma => "post_attention_layernorm.weight",
            W::Ln1Post => "post_attention_layernorm.weight",
            W::Ln2 => "pre_feedforward_layernorm.weight",
            W::Ln2Post => "post_feedforward_layernorm.weight",
            W::Q => "self_attn.q_proj.weight",
            W::K => "self_attn.k_proj.weight",
            W::V => "self_attn.v_proj.weight",
            W::O => "self_attn.o_proj.weight",
            W::QBias => "self_attn.q_proj.bias",
            W::KBias => "self_attn.k_proj.bias",
            W::VBias => "self_attn.v_proj.bias",
            W::OBias => "self_attn.o_proj.bias",
            W::QNorm => "self_attn.q_norm.weight",
            W::KNorm => "self_attn.k_norm.weight",
            W::Gate => "mlp.gate_proj.weight",
            W::Up => "mlp.up_proj.weight",
            W::Down => "mlp.down_proj.weight",
        };
        format!("model.layers.{l}.{s}")
    }

    /// A weight's name in a GGUF file: llama.cpp's names are the same for every family.
    pub(crate) fn gguf_name(w: W, l: usize) -> String {
        let s = match w {
            W::Embed => return "token_embd.weight".into(),
            W::Unembed => return "output.weight".into(),
            W::FinalNorm => return "output_norm.weight".into(),
            W::Ln1 => "attn_norm.weight",
            W::Ln1Post => "post_attention_norm.weight",
            W::Ln2 => "ffn_norm.weight",
            W::Ln2Post => "post_ffw_norm.weight",
            W::Q => "attn_q.weight",
            W::K => "attn_k.weight",
            W::V => "attn_v.weight",
            W::O => "attn_output.weight",
            W::QBias => "attn_q.bias",
            W::KBias => "attn_k.bias",
            W::VBias => "attn_v.bias",
            W::OBias => "attn_output.bias",
            W::QNorm => "attn_q_norm.weight",
            W::KNorm => "attn_k_norm.weight",
            W::Gate => "ffn_gate.weight",
            W::Up => "ffn_up.weight",
            W::Down => "ffn_down.weight",
        };
        format!("blk.{l}.{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_both_readers_conventions() {
        // Gemma 2: even layers slide; Gemma 3: every 6th layer (1-based) is global.
        assert_eq!(Arch::sliding_layers(4, 2), [true, false, true, false]);
        let g3 = Arch::sliding_layers(12, 6);
        assert_eq!(g3.iter().filter(|s| !**s).count(), 2);
        assert!(!g3[5] && !g3[11] && g3[0] && g3[6]);
        assert!(Arch::sliding_layers(3, 0).iter().all(|s| *s));
    }
}
