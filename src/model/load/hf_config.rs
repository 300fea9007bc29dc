//! `config.json` onto [`Config`], in both dialects: transformers 4 writes top-level `rope_theta`
//! / `rope_scaling` (plus Gemma 3's `rope_local_base_freq` and `sliding_window_pattern`);
//! transformers 5 writes `rope_parameters`, flat or keyed by layer type, and `layer_types`.
//! A key that changes the math and that we do not implement is an error naming it.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::arch::{Arch, SUPPORTED};
use crate::model::config::{Activation, Config, LayerConfig, RopeScaling};

/// Layer types we implement (transformers 5's `layer_types` entries).
const FULL: &str = "full_attention";
const SLIDING: &str = "sliding_attention";

fn refuse<T>(msg: String) -> Result<T> {
    Err(Error::Load(format!("config.json: {msg}")))
}

/// A config.json's family and its [`Config`].
pub fn read(j: &Value) -> Result<(Arch, Config)> {
    let arch = arch_of(j)?;
    Ok((arch, config(arch, j)?))
}

/// The family a config.json's `architectures` names.
pub fn arch_of(j: &Value) -> Result<Arch> {
    let archs: Vec<&str> = j
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if let Some(arch) = archs.iter().find_map(|a| Arch::from_hf_class(a)) {
        return Ok(arch);
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

/// Maps a config.json of family `arch` onto the one [`Config`].
pub fn config(arch: Arch, j: &Value) -> Result<Config> {
    refuse_unsupported(j)?;
    let d_model = req_usize(j, "hidden_size")?;
    let n_heads = req_usize(j, "num_attention_heads")?;
    let n_layers = req_usize(j, "num_hidden_layers")?;
    let d_head = opt_usize(j, "head_dim").unwrap_or(d_model / n_heads.max(1));
    let gemma = arch.is_gemma();
    let types = layer_types(arch, j, n_layers)?;
    let window = window(arch, j)?;
    let mut layers = Vec::with_capacity(n_layers);
    for (l, t) in types.iter().enumerate() {
        let sliding_window = if t == SLIDING {
            Some(window.ok_or_else(|| {
                Error::Load(format!(
                    "config.json: layer {l} is a sliding-attention layer but `sliding_window` is not set"
                ))
            })?)
        } else {
            None
        };
        let (rope_theta, rope_scaling) = rope(arch, j, t)?;
        layers.push(LayerConfig {
            sliding_window,
            rope_theta,
            rope_scaling,
        });
    }
    let activation = activation(arch, j)?;
    let attention_bias = opt_bool(j, "attention_bias").unwrap_or(false);
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
    let (attn_cap, final_cap) = arch.default_softcaps();
    let cfg = Config {
        architecture: arch.name().into(),
        n_layers,
        n_heads,
        n_kv_heads: opt_usize(j, "num_key_value_heads").unwrap_or(n_heads),
        d_model,
        d_head,
        d_mlp: req_usize(j, "intermediate_size")?,
        d_vocab: req_usize(j, "vocab_size")?,
        rms_norm_eps: opt_f64(j, "rms_norm_eps").unwrap_or(1e-6),
        attn_scale: arch.attn_scale(opt_f64(j, "query_pre_attn_scalar"), d_head),
        attn_softcap: softcap(j, "attn_logit_softcapping", attn_cap).filter(|_| gemma),
        final_softcap: softcap(j, "final_logit_softcapping", final_cap).filter(|_| gemma),
        embed_scale: arch.embed_scale(d_model),
        qk_norm: arch.has_qk_norm(),
        post_norms: arch.has_post_norms(),
        qkv_bias: arch == Arch::Qwen2 || attention_bias,
        // Qwen 2's output projection never has a bias; every other family follows attention_bias.
        o_bias: arch != Arch::Qwen2 && attention_bias,
        activation,
        tied_embeddings: opt_bool(j, "tie_word_embeddings").unwrap_or(gemma),
        layers,
        max_position: opt_usize(j, "max_position_embeddings").unwrap_or(4096),
        bos_token_id: bos.or(eos).unwrap_or(0) as u32,
        eos_token_id: eos.unwrap_or(0) as u32,
        pad_token_id: pad as u32,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Keys whose values change the math in ways the forward pass does not implement.
fn refuse_unsupported(j: &Value) -> Result<()> {
    if opt_bool(j, "mlp_bias") == Some(true) {
        return refuse("`mlp_bias` = true is not supported (no MLP biases)".into());
    }
    if let Some(v) = j.get("attention_chunk_size").filter(|v| !v.is_null()) {
        return refuse(format!(
            "`attention_chunk_size` = {v} (chunked attention) is not supported"
        ));
    }
    if opt_bool(j, "use_bidirectional_attention") == Some(true) {
        return refuse(
            "`use_bidirectional_attention` = true (an embedding model) is not supported: the forward pass is causal".into(),
        );
    }
    if j.get("rope_parameters").is_some_and(|v| !v.is_null())
        && j.get("rope_scaling").is_some_and(|v| !v.is_null())
    {
        return refuse(
            "both `rope_parameters` (transformers 5) and `rope_scaling` (transformers 4) are set; keep one".into(),
        );
    }
    if let Some(f) = opt_f64(j, "partial_rotary_factor").filter(|f| *f != 1.0) {
        return refuse(format!(
            "`partial_rotary_factor` = {f} (RoPE on part of each head) is not supported"
        ));
    }
    Ok(())
}

/// Each layer's type: `layer_types` when the config lists them, else each family's rule
/// (what transformers derives when it writes them).
fn layer_types(arch: Arch, j: &Value, n_layers: usize) -> Result<Vec<String>> {
    if let Some(types) = j.get("layer_types").filter(|v| !v.is_null()) {
        let types = types
            .as_array()
            .ok_or_else(|| Error::Load("config.json: `layer_types` is not a list".into()))?;
        if types.len() != n_layers {
            return refuse(format!(
                "`layer_types` has {} entries for {n_layers} layers",
                types.len()
            ));
        }
        return types
            .iter()
            .enumerate()
            .map(|(l, t)| match t.as_str() {
                Some(FULL) | Some(SLIDING) => Ok(t.as_str().unwrap_or(FULL).to_string()),
                _ => refuse(format!(
                    "`layer_types[{l}]` = {t} is not supported (supported: {FULL}, {SLIDING})"
                )),
            })
            .collect();
    }
    let sliding: Vec<bool> = match (arch, arch.sliding_pattern()) {
        (_, Some(family)) => {
            // Only Gemma 3's config.json (transformers 4) may change the family's pattern.
            let n = match arch {
                Arch::Gemma3 => opt_usize(j, "sliding_window_pattern").unwrap_or(family),
                _ => family,
            };
            if n == 0 {
                return refuse(
                    "`sliding_window_pattern` = 0 names no layer pattern (transformers cannot load it either); list the layers in `layer_types`".into(),
                );
            }
            Arch::sliding_layers(n_layers, n)
        }
        (Arch::Qwen2 | Arch::Qwen3, None) => {
            let on = opt_bool(j, "use_sliding_window").unwrap_or(false)
                && j.get("sliding_window").is_some_and(|v| !v.is_null());
            let from = opt_usize(j, "max_window_layers").unwrap_or(n_layers);
            (0..n_layers).map(|l| on && l >= from).collect()
        }
        _ => vec![false; n_layers],
    };
    Ok(sliding
        .into_iter()
        .map(|s| if s { SLIDING } else { FULL }.to_string())
        .collect())
}

/// The sliding window: `sliding_window`, except that Qwen ignores it without `use_sliding_window`.
fn window(arch: Arch, j: &Value) -> Result<Option<usize>> {
    if matches!(arch, Arch::Qwen2 | Arch::Qwen3)
        && !opt_bool(j, "use_sliding_window").unwrap_or(false)
    {
        return Ok(None);
    }
    match j.get("sliding_window") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(w) if w > 0 => Ok(Some(w as usize)),
            _ => refuse(format!("`sliding_window` = {v} is not a positive integer")),
        },
    }
}

/// RoPE base and scaling of one layer type.
fn rope(arch: Arch, j: &Value, layer_type: &str) -> Result<(f64, Option<RopeScaling>)> {
    let max_pos = opt_f64(j, "max_position_embeddings");
    // Gemma 3's local layers have their own base and no scaling in both dialects.
    let local = arch.local_rope_theta().filter(|_| layer_type == SLIDING);
    let default_theta = match (arch, local) {
        (_, Some(theta)) => theta,
        // transformers' Gemma 3 global base.
        (Arch::Gemma3, None) => 1_000_000.0,
        _ => 10_000.0,
    };
    if let Some(rp) = j.get("rope_parameters").filter(|v| !v.is_null()) {
        let obj = rp
            .as_object()
            .ok_or_else(|| Error::Load("config.json: `rope_parameters` is not an object".into()))?;
        let nested = obj.contains_key(FULL) || obj.contains_key(SLIDING);
        let (p, key) = if nested {
            match obj.get(layer_type).filter(|v| !v.is_null()) {
                Some(p) => (p, format!("rope_parameters.{layer_type}")),
                // transformers fills a missing entry with the family's defaults.
                None if arch == Arch::Gemma3 => return Ok((default_theta, None)),
                None => {
                    return refuse(format!(
                        "`rope_parameters` is keyed by layer type but has no `{layer_type}` entry"
                    ))
                }
            }
        } else {
            (rp, "rope_parameters".to_string())
        };
        let theta = opt_f64(p, "rope_theta")
            .or_else(|| opt_f64(j, "rope_theta"))
            .unwrap_or(default_theta);
        return Ok((theta, rope_scaling(p, &key, max_pos)?));
    }
    if local.is_some() {
        let theta = opt_f64(j, "rope_local_base_freq").unwrap_or(default_theta);
        return Ok((theta, None));
    }
    let theta = opt_f64(j, "rope_theta").unwrap_or(default_theta);
    let scaling = match j.get("rope_scaling").filter(|v| !v.is_null()) {
        Some(rs) => rope_scaling(rs, "rope_scaling", max_pos)?,
        None => None,
    };
    Ok((theta, scaling))
}

/// One RoPE parameter set's scaling (`key` names where it was read, for errors).
fn rope_scaling(p: &Value, key: &str, max_pos: Option<f64>) -> Result<Option<RopeScaling>> {
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    if let Some(f) = opt_f64(p, "partial_rotary_factor").filter(|f| *f != 1.0) {
        return refuse(format!(
            "`{key}.partial_rotary_factor` = {f} (RoPE on part of each head) is not supported"
        ));
    }
    let need = |k: &str| -> Result<f64> {
        opt_f64(p, k).ok_or_else(|| {
            Error::Load(format!(
                "config.json: `{key}` of type {kind} has no number `{k}`"
            ))
        })
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: need("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            // transformers 5 falls back to max_position_embeddings, as we do.
            original_max_position_embeddings: opt_f64(p, "original_max_position_embeddings")
                .or(max_pos)
                .ok_or_else(|| {
                    Error::Load(format!(
                        "config.json: `{key}` of type llama3 has no `original_max_position_embeddings`"
                    ))
                })?,
        }),
        other => {
            return refuse(format!(
                "RoPE type `{other}` (`{key}`) is not supported; supported: default, linear, llama3"
            ))
        }
    })
}

fn activation(arch: Arch, j: &Value) -> Result<Activation> {
    // Gemma 2 / 3 read `hidden_activation`; the others `hidden_act`.
    let key = if arch.is_gemma() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let act = match j.get(key).filter(|v| !v.is_null()) {
        Some(v) => v
            .as_str()
            .ok_or_else(|| Error::Load(format!("config.json: `{key}` = {v} is not a string")))?,
        None => return Ok(arch.activation()),
    };
    Ok(match act {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        other => {
            return refuse(format!(
                "`{key}` = `{other}` is not supported (supported: silu, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast)"
            ))
        }
    })
}

/// A soft-cap: the family's default when the key is absent, none when it is null.
fn softcap(j: &Value, k: &str, default: Option<f64>) -> Option<f64> {
    match j.get(k) {
        None => default,
        Some(v) => v.as_f64(),
    }
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

fn opt_bool(j: &Value, k: &str) -> Option<bool> {
    j.get(k).and_then(|v| v.as_bool())
}
