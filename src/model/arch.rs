//! Architecture adapters for HF checkpoints: each maps `config.json` onto [`Config`] and the
//! checkpoint's weight names onto [`Weights`]; none has a forward pass of its own.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::{Activation, Config, LayerConfig, RopeScaling};
use crate::model::transformer::{BlockWeights, Weights};

/// The `architectures` entries we load.
pub const SUPPORTED: &[&str] = &[
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// A supported HF architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 2: soft-capping, alternating sliding window, (1 + w) norms, post-norms.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norm, 5 local : 1 global layers, two RoPE bases.
    Gemma3,
    /// Llama (1–3.x): RoPE scaling, optional attention bias.
    Llama,
    /// Qwen 2 / 2.5: q/k/v biases.
    Qwen2,
    /// Qwen 3: q/k norm.
    Qwen3,
}

/// Where tensors come from (memory-mapped safetensors in practice).
pub trait TensorSource {
    /// The named tensor on `device`, converted to `dtype`; `None` when absent.
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Option<Tensor>>;
}

impl Arch {
    /// Reads `architectures` from a config.json.
    pub fn from_config(cfg: &Value) -> Result<Arch> {
        let archs: Vec<&str> = cfg
            .get("architectures")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        for a in &archs {
            match *a {
                "Gemma2ForCausalLM" => return Ok(Arch::Gemma2),
                "Gemma3ForCausalLM" => return Ok(Arch::Gemma3),
                "LlamaForCausalLM" => return Ok(Arch::Llama),
                "Qwen2ForCausalLM" => return Ok(Arch::Qwen2),
                "Qwen3ForCausalLM" => return Ok(Arch::Qwen3),
                _ => {}
            }
        }
        let named = if archs.is_empty() {
            "config.json has no `architectures` entry".to_string()
        } else {
            format!("architecture {} is not supported", archs.join(", "))
        };
        let hint = if archs.contains(&"Gemma3ForConditionalGeneration") {
            " (for multimodal Gemma 3 checkpoints, load the text-only Gemma3ForCausalLM variant, e.g. google/gemma-3-1b-pt)"
        } else {
            ""
        };
        Err(Error::Load(format!(
            "{named}; supported architectures: {}{hint}",
            SUPPORTED.join(", ")
        )))
    }

    fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }

    /// Maps config.json onto the one [`Config`].
    pub fn config(self, j: &Value) -> Result<Config> {
        let d_model = req_usize(j, "hidden_size")?;
        let n_heads = req_usize(j, "num_attention_heads")?;
        let n_layers = req_usize(j, "num_hidden_layers")?;
        let d_head = opt_usize(j, "head_dim").unwrap_or(d_model / n_heads.max(1));
        let gemma = self.is_gemma();
        let rope_theta =
            opt_f64(j, "rope_theta").unwrap_or(if self == Arch::Gemma3 { 1e6 } else { 1e4 });
        let rope_scaling = rope_scaling(j)?;
        let window = opt_usize(j, "sliding_window");
        let sliding = sliding_layers(self, j, n_layers, window);
        let layers = (0..n_layers)
            .map(|l| {
                let sliding_window = if sliding[l] { window } else { None };
                // Gemma 3's local layers use their own base and no scaling.
                let local = self == Arch::Gemma3 && sliding_window.is_some();
                LayerConfig {
                    sliding_window,
                    rope_theta: if local {
                        opt_f64(j, "rope_local_base_freq").unwrap_or(1e4)
                    } else {
                        rope_theta
                    },
                    rope_scaling: if local { None } else { rope_scaling },
                }
            })
            .collect();
        let act_key = if gemma {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let act = j
            .get(act_key)
            .or_else(|| j.get("hidden_act"))
            .and_then(|v| v.as_str())
            .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" });
        let activation = match act {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            // HF's Gemma uses the tanh approximation whatever hidden_act says.
            "gelu" if gemma => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            other => {
                return Err(Error::Load(format!(
                    "unsupported activation `{other}` in config.json"
                )))
            }
        };
        if j.get("mlp_bias").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::Load(
                "config.json sets mlp_bias = true, which is not supported".into(),
            ));
        }
        let attention_bias = j
            .get("attention_bias")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let eos = match j.get("eos_token_id") {
            Some(Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
            Some(v) => v.as_u64(),
            None => None,
        };
        let bos = opt_usize(j, "bos_token_id").map(|x| x as u64);
        let pad = opt_usize(j, "pad_token_id")
            .map(|x| x as u64)
            .or(eos)
            .unwrap_or(0);
        let qpas = opt_f64(j, "query_pre_attn_scalar")
            .filter(|_| gemma)
            .unwrap_or(d_head as f64);
        let cfg = Config {
            architecture: format!("{self:?}").to_lowercase(),
            n_layers,
            n_heads,
            n_kv_heads: opt_usize(j, "num_key_value_heads").unwrap_or(n_heads),
            d_model,
            d_head,
            d_mlp: req_usize(j, "intermediate_size")?,
            d_vocab: req_usize(j, "vocab_size")?,
            rms_norm_eps: opt_f64(j, "rms_norm_eps").unwrap_or(1e-6),
            attn_scale: 1.0 / qpas.sqrt(),
            attn_softcap: opt_f64(j, "attn_logit_softcapping").filter(|_| gemma),
            final_softcap: opt_f64(j, "final_logit_softcapping").filter(|_| gemma),
            embed_scale: gemma.then(|| (d_model as f64).sqrt()),
            qk_norm: matches!(self, Arch::Gemma3 | Arch::Qwen3),
            post_norms: gemma,
            qkv_bias: self == Arch::Qwen2 || attention_bias,
            o_bias: self == Arch::Llama && attention_bias,
            activation,
            tied_embeddings: j
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(gemma),
            layers,
            max_position: opt_usize(j, "max_position_embeddings").unwrap_or(4096),
            bos_token_id: bos.unwrap_or(0) as u32,
            eos_token_id: eos.unwrap_or(0) as u32,
            pad_token_id: pad as u32,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads the weights by their HF names. Matrices come in `dtype`; norms in f32, with
    /// Gemma's (1 + w) folded in.
    pub fn weights(
        self,
        cfg: &Config,
        src: &dyn TensorSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Weights> {
        let get = |name: &str, dt: DType| -> Result<Tensor> {
            src.tensor(name, dt, device)?
                .ok_or_else(|| Error::Load(format!("the checkpoint has no tensor `{name}`")))
        };
        let opt = |name: &str, dt: DType| src.tensor(name, dt, device);
        let gemma = self.is_gemma();
        let norm = |name: &str| -> Result<Tensor> {
            let w = get(name, DType::F32)?;
            Ok(if gemma { (w + 1.0)? } else { w })
        };
        let embed = get("model.embed_tokens.weight", dtype)?;
        let unembed = if cfg.tied_embeddings {
            None
        } else {
            Some(get("lm_head.weight", dtype)?)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (ln1_post, ln2, ln2_post) = if gemma {
                (
                    Some(norm(&p("post_attention_layernorm.weight"))?),
                    norm(&p("pre_feedforward_layernorm.weight"))?,
                    Some(norm(&p("post_feedforward_layernorm.weight"))?),
                )
            } else {
                // In Llama-style checkpoints "post_attention_layernorm" is the pre-MLP norm.
                (None, norm(&p("post_attention_layernorm.weight"))?, None)
            };
            let bias = |s: &str| -> Result<Option<Tensor>> {
                if cfg.qkv_bias {
                    Ok(Some(get(&p(&format!("self_attn.{s}_proj.bias")), dtype)?))
                } else {
                    Ok(None)
                }
            };
            blocks.push(BlockWeights {
                ln1: norm(&p("input_layernorm.weight"))?,
                ln1_post,
                ln2,
                ln2_post,
                w_q: get(&p("self_attn.q_proj.weight"), dtype)?,
                w_k: get(&p("self_attn.k_proj.weight"), dtype)?,
                w_v: get(&p("self_attn.v_proj.weight"), dtype)?,
                w_o: get(&p("self_attn.o_proj.weight"), dtype)?,
                b_q: bias("q")?,
                b_k: bias("k")?,
                b_v: bias("v")?,
                b_o: if cfg.o_bias {
                    opt(&p("self_attn.o_proj.bias"), dtype)?
                } else {
                    None
                },
                q_norm: if cfg.qk_norm {
                    Some(norm(&p("self_attn.q_norm.weight"))?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(norm(&p("self_attn.k_norm.weight"))?)
                } else {
                    None
                },
                w_gate: get(&p("mlp.gate_proj.weight"), dtype)?,
                w_up: get(&p("mlp.up_proj.weight"), dtype)?,
                w_down: get(&p("mlp.down_proj.weight"), dtype)?,
            });
        }
        Ok(Weights {
            embed,
            unembed,
            ln_final: norm("model.norm.weight")?,
            blocks,
        })
    }
}

/// Which layers slide: `layer_types` when the config lists them, else each family's rule.
fn sliding_layers(arch: Arch, j: &Value, n_layers: usize, window: Option<usize>) -> Vec<bool> {
    if let Some(types) = j.get("layer_types").and_then(|v| v.as_array()) {
        if types.len() == n_layers {
            return types
                .iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect();
        }
    }
    if window.is_none() {
        return vec![false; n_layers];
    }
    match arch {
        // HF: layer 0 slides, layer 1 is global, and so on.
        Arch::Gemma2 => (0..n_layers).map(|l| (l + 1) % 2 != 0).collect(),
        Arch::Gemma3 => {
            let pattern = opt_usize(j, "sliding_window_pattern").unwrap_or(6).max(1);
            (0..n_layers).map(|l| (l + 1) % pattern != 0).collect()
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            let on = j
                .get("use_sliding_window")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let from = opt_usize(j, "max_window_layers").unwrap_or(n_layers);
            (0..n_layers).map(|l| on && l >= from).collect()
        }
        Arch::Llama => vec![false; n_layers],
    }
}

fn rope_scaling(j: &Value) -> Result<Option<RopeScaling>> {
    let Some(rs) = j.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let f = |k: &str| rs.get(k).and_then(|v| v.as_f64());
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: f("factor").unwrap_or(1.0),
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: f("factor").unwrap_or(8.0),
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: f("original_max_position_embeddings")
                .unwrap_or(8192.0),
        }),
        other => {
            return Err(Error::Load(format!(
                "rope_scaling type `{other}` is not supported (supported: linear, llama3)"
            )))
        }
    })
}

fn opt_usize(j: &Value, k: &str) -> Option<usize> {
    j.get(k).and_then(|v| v.as_u64()).map(|x| x as usize)
}

fn req_usize(j: &Value, k: &str) -> Result<usize> {
    opt_usize(j, k).ok_or_else(|| Error::Load(format!("config.json has no integer `{k}`")))
}

fn opt_f64(j: &Value, k: &str) -> Option<f64> {
    j.get(k).and_then(|v| v.as_f64())
}
