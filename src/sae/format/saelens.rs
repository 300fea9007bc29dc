//! SAELens folders: `cfg.json` (6.x, or a pre-6 flat config converted exactly as SAELens's
//! `handle_pre_6_0_config` does), `sae_weights.safetensors` and `sparsity.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{Map, Value};

use super::{
    get_bool, get_str, get_usize, read_json, read_tensors, refuse_leftover_tensors,
    refuse_unknown_keys, take,
};
use crate::error::{Error, Result};
use crate::sae::autoencoder::{Sae, SaeWeights};
use crate::sae::config::{Architecture, Format, Normalization, SaeConfig};

/// SAELens 6's config fields (every inference config class), plus the training-only fields
/// its training configs add (inert at inference: SAELens drops them when loading).
const V6_KEYS: &[&str] = &[
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "metadata",
    "architecture",
    "k",
    "rescale_acts_by_decoder_norm",
    "d_out",
    // dropped by SAELens's loader
    "sae_lens_version",
    "sae_lens_training_version",
    // training-only
    "decoder_init_norm",
    "l1_coefficient",
    "lp_norm",
    "l1_warm_up_steps",
    "use_sparse_activations",
    "aux_loss_coefficient",
    "jumprelu_init_threshold",
    "jumprelu_bandwidth",
    "jumprelu_sparsity_loss_mode",
    "l0_coefficient",
    "l0_warm_up_steps",
    "pre_act_loss_coefficient",
    "jumprelu_tanh_scale",
    "jumprelu_ste_to_input",
    "target_l0",
    "topk_threshold_lr",
];

/// Keys of pre-6 configs: SAELens 3–5's SAE config and the training-runner settings they
/// were saved with (all inert at inference except those [`legacy_to_v6`] reads).
const LEGACY_KEYS: &[&str] = &[
    "architecture",
    "d_in",
    "d_sae",
    "d_out",
    "k",
    "rescale_acts_by_decoder_norm",
    "activation_fn_str",
    "activation_fn",
    "activation_fn_kwargs",
    "apply_b_dec_to_input",
    "finetuning_scaling_factor",
    "context_size",
    "model_name",
    "model_class_name",
    "hook_point",
    "hook_name",
    "hook_point_layer",
    "hook_layer",
    "hook_point_head_index",
    "hook_head_index",
    "hook_name_out",
    "hook_layer_out",
    "hook_head_index_out",
    "hf_hook_name",
    "hf_hook_name_out",
    "hook_point_eval",
    "hook_eval",
    "prepend_bos",
    "dataset_path",
    "dataset_trust_remote_code",
    "normalize_activations",
    "reshape_activations",
    "dtype",
    "device",
    "act_store_device",
    "sae_lens_version",
    "sae_lens_training_version",
    "neuronpedia_id",
    "model_from_pretrained_kwargs",
    "model_kwargs",
    "seqpos_slice",
    "exclude_special_tokens",
    "metadata",
    // training-runner settings
    "expansion_factor",
    "b_dec_init_method",
    "normalize_sae_decoder",
    "noise_scale",
    "from_pretrained_path",
    "decoder_orthogonal_init",
    "decoder_heuristic_init",
    "decoder_heuristic_init_norm",
    "init_encoder_as_decoder_transpose",
    "n_batches_in_buffer",
    "training_tokens",
    "finetuning_tokens",
    "store_batch_size",
    "store_batch_size_prompts",
    "train_batch_size",
    "train_batch_size_tokens",
    "seed",
    "jumprelu_init_threshold",
    "jumprelu_bandwidth",
    "autocast",
    "autocast_lm",
    "compile_llm",
    "llm_compilation_mode",
    "compile_sae",
    "sae_compilation_mode",
    "adam_beta1",
    "adam_beta2",
    "mse_loss_normalization",
    "l1_coefficient",
    "lp_norm",
    "scale_sparsity_penalty_by_decoder_norm",
    "l1_warm_up_steps",
    "lr",
    "lr_scheduler_name",
    "lr_warm_up_steps",
    "lr_end",
    "lr_decay_steps",
    "n_restart_cycles",
    "finetuning_method",
    "use_ghost_grads",
    "feature_sampling_window",
    "dead_feature_window",
    "dead_feature_threshold",
    "n_eval_batches",
    "eval_batch_size_prompts",
    "log_to_wandb",
    "log_activations_store_to_wandb",
    "log_optimizer_state_to_wandb",
    "wandb_project",
    "wandb_id",
    "run_name",
    "wandb_entity",
    "wandb_log_frequency",
    "eval_every_n_wandb_logs",
    "resume",
    "n_checkpoints",
    "checkpoint_path",
    "verbose",
    "streaming",
    "is_dataset_tokenized",
    "use_cached_activations",
    "cached_activations_path",
    "tokens_per_buffer",
    "total_training_steps",
    "total_training_tokens",
    "sae_class_name",
    "logger",
    "output_path",
    "save_final_checkpoint",
    "resume_from_checkpoint",
    "disable_concat_sequences",
    "sequence_separator_token",
    "use_chat_formatting",
    "n_batches_for_norm_estimate",
    "activations_mixing_fraction",
    "llm_device",
    "prefetch_llm_batches",
    "sae",
    "topk_threshold_lr",
    "l0_coefficient",
    "l0_warm_up_steps",
    "pre_act_loss_coefficient",
    "decoder_init_norm",
];

/// SAELens's `LLM_METADATA_KEYS`: what a pre-6 config's conversion keeps as metadata.
const LLM_METADATA_KEYS: &[&str] = &[
    "model_name",
    "hook_name",
    "model_class_name",
    "hook_head_index",
    "model_from_pretrained_kwargs",
    "prepend_bos",
    "exclude_special_tokens",
    "neuronpedia_id",
    "context_size",
    "seqpos_slice",
    "dataset_path",
    "sae_lens_version",
    "sae_lens_training_version",
    "hook_name_out",
    "hook_head_index_out",
    "hf_hook_name",
    "hf_hook_name_out",
];

/// SAELens architectures this crate does not implement, refused by name.
const SAELENS_UNSUPPORTED: &[&str] = &[
    "abstopk",
    "batchtopk",
    "matryoshka_batchtopk",
    "matching_pursuit",
    "temporal",
];

/// Reads a SAELens folder.
pub(crate) fn load_dir(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join("cfg.json");
    let raw = read_json(&cfg_path)?;
    let (v6, format) = if is_v6(&raw) {
        refuse_unknown_keys(&raw, V6_KEYS, &cfg_path, "SAELens 6 config")?;
        (raw, Format::SaeLensV6)
    } else {
        refuse_unknown_keys(&raw, LEGACY_KEYS, &cfg_path, "pre-6 SAELens config")?;
        (legacy_to_v6(&raw, &cfg_path)?, Format::SaeLensLegacy)
    };
    let cfg = config_from_v6(&v6, format, &cfg_path)?;
    let weights_path = dir.join("sae_weights.safetensors");
    if !weights_path.is_file() {
        return Err(Error::Invalid(format!(
            "{} has cfg.json but no sae_weights.safetensors",
            dir.display()
        )));
    }
    let tensors = read_tensors(&weights_path)?;
    let weights = weights_from_state_dict(tensors, &cfg, &weights_path)?;
    let mut sae = Sae::new(cfg, weights).map_err(|e| in_file(e, &weights_path))?;
    let sparsity = dir.join("sparsity.safetensors");
    if sparsity.is_file() {
        let mut t = read_tensors(&sparsity)?;
        let s = take(
            &mut t,
            "sparsity",
            &sparsity,
            "SAELens's log10 feature sparsity",
        )?;
        sae = sae
            .with_log_sparsity(s)
            .map_err(|e| in_file(e, &sparsity))?;
    }
    Ok(sae)
}

fn in_file(e: Error, file: &Path) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", file.display())),
        e => e,
    }
}

/// SAELens's `handle_config_defaulting`: a config is 6.x when its `sae_lens_version`
/// (top level, else in `metadata`) is at least 6.
fn is_v6(raw: &Map<String, Value>) -> bool {
    let version = raw
        .get("sae_lens_version")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            raw.get("metadata")
                .and_then(|m| m.get("sae_lens_version"))
                .and_then(Value::as_str)
        });
    version
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u64>().ok())
        .is_some_and(|major| major >= 6)
}

/// SAELens's `handle_pre_6_0_config`, key for key, refusing what SAELens 6 would silently
/// drop although it changes the math (another activation function, a head index).
fn legacy_to_v6(raw: &Map<String, Value>, file: &Path) -> Result<Map<String, Value>> {
    let mut cfg = Map::new();
    for (k, v) in raw {
        let k = match k.as_str() {
            "hook_point" => "hook_name",
            "hook_point_head_index" => "hook_head_index",
            "activation_fn_str" => "activation_fn",
            k => k,
        };
        cfg.insert(k.to_string(), v.clone());
    }
    let set_default = |cfg: &mut Map<String, Value>, k: &str, v: Value| {
        cfg.entry(k.to_string()).or_insert(v);
    };
    set_default(&mut cfg, "apply_b_dec_to_input", Value::Bool(true));
    set_default(&mut cfg, "activation_fn", Value::from("relu"));
    set_default(&mut cfg, "architecture", Value::from("standard"));
    let hook = cfg
        .get("hook_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let reshape = if hook.contains("hook_z") {
        "hook_z"
    } else {
        "none"
    };
    set_default(&mut cfg, "reshape_activations", Value::from(reshape));
    let act = cfg
        .get("activation_fn")
        .cloned()
        .unwrap_or(Value::from("relu"));
    let kwarg_k = cfg
        .get("activation_fn_kwargs")
        .and_then(|kw| kw.get("k"))
        .filter(|k| !k.is_null())
        .cloned();
    match act.as_str() {
        Some("topk") => match kwarg_k {
            Some(k) => {
                cfg.insert("architecture".into(), Value::from("topk"));
                cfg.insert("k".into(), k);
            }
            None => {
                return Err(Error::Invalid(format!(
                    "{}: `activation_fn_str` is \"topk\" but `activation_fn_kwargs` has no `k`: SAELens 6 would load this as a ReLU SAE; add the k it was trained with",
                    file.display()
                )))
            }
        },
        Some("relu") => {}
        _ => {
            return Err(Error::Invalid(format!(
                "{}: activation function {act} is not supported (SAELens 6 would silently replace it by its architecture's own); only \"relu\" and \"topk\" are read",
                file.display()
            )))
        }
    }
    match cfg.get("normalize_activations") {
        Some(Value::Bool(b)) => {
            let v = if *b {
                "expected_average_only_in"
            } else {
                "none"
            };
            cfg.insert("normalize_activations".into(), Value::from(v));
        }
        None | Some(Value::Null) => {
            cfg.insert("normalize_activations".into(), Value::from("none"));
        }
        _ => {}
    }
    let mut metadata = Map::new();
    for k in LLM_METADATA_KEYS {
        if let Some(v) = cfg.get(*k) {
            metadata.insert(k.to_string(), v.clone());
        }
    }
    // A pre-6 config keeps its hook name at the top level; a nested one is read as a fallback.
    if let Some(Value::Object(m)) = raw.get("metadata") {
        for (k, v) in m {
            metadata.entry(k.clone()).or_insert(v.clone());
        }
    }
    let mut out = Map::new();
    for k in [
        "d_in",
        "d_sae",
        "dtype",
        "device",
        "apply_b_dec_to_input",
        "normalize_activations",
        "reshape_activations",
        "architecture",
        "k",
        "rescale_acts_by_decoder_norm",
        "d_out",
    ] {
        if let Some(v) = cfg.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(metadata));
    Ok(out)
}

/// The architecture named by a config, refused by name when unknown or unsupported.
pub(crate) fn parse_architecture(name: &str, file: &Path) -> Result<Architecture> {
    if let Some(a) = Architecture::ALL
        .into_iter()
        .find(|a| a.saelens_name() == name)
    {
        return Ok(a);
    }
    let known = Architecture::ALL
        .iter()
        .map(|a| a.saelens_name())
        .collect::<Vec<_>>()
        .join(", ");
    if SAELENS_UNSUPPORTED.contains(&name) {
        return Err(Error::Invalid(format!(
            "{}: architecture `{name}` is SAELens's, but this crate does not implement it (it reads {known}){}",
            file.display(),
            if name.contains("batchtopk") {
                "; SAELens saves a trained batchtopk SAE for inference as `jumprelu` (save_inference_model)"
            } else {
                ""
            }
        )));
    }
    Err(Error::Invalid(format!(
        "{}: unknown architecture `{name}`; known: {known}",
        file.display()
    )))
}

/// A normalisation named by a config.
pub(crate) fn parse_normalization(v: Option<&Value>, file: &Path) -> Result<Normalization> {
    let all = [
        Normalization::None,
        Normalization::ExpectedAverageOnlyIn,
        Normalization::ConstantNormRescale,
        Normalization::LayerNorm,
    ];
    let name = match v {
        None => return Ok(Normalization::None),
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(Error::Invalid(format!(
                "{}: `normalize_activations` is {v}; SAELens 6 takes one of none, expected_average_only_in, constant_norm_rescale, layer_norm",
                file.display()
            )))
        }
    };
    if let Some(n) = all.into_iter().find(|n| n.saelens_name() == name) {
        return Ok(n);
    }
    let why = if name == "covariance_whitening" {
        " (SAELens folds the whitening into the weights when it saves; a config that still names it holds unfolded weights, which SAELens itself would run without the whitening)"
    } else {
        ""
    };
    Err(Error::Invalid(format!(
        "{}: `normalize_activations` \"{name}\" is not supported{why}; known: none, expected_average_only_in, constant_norm_rescale, layer_norm",
        file.display()
    )))
}

/// Our config from a SAELens 6 config object (read directly, or converted from pre-6).
fn config_from_v6(v: &Map<String, Value>, format: Format, file: &Path) -> Result<SaeConfig> {
    let arch_name = get_str(v, "architecture", file)?.unwrap_or("standard");
    let architecture = parse_architecture(arch_name, file)?;
    let d_in = get_usize(v, "d_in", file)?;
    let d_sae = get_usize(v, "d_sae", file)?;
    let d_out = if architecture.is_transcoder() {
        get_usize(v, "d_out", file).map_err(|_| {
            Error::Invalid(format!(
                "{}: a `{arch_name}` needs `d_out` (SAELens would default it to 768)",
                file.display()
            ))
        })?
    } else {
        match v.get("d_out") {
            Some(x) if x.as_u64() != Some(d_in as u64) && !x.is_null() => {
                return Err(Error::Invalid(format!(
                    "{}: `d_out` is {x} but a `{arch_name}` SAE reconstructs its input (d_in {d_in})",
                    file.display()
                )))
            }
            _ => d_in,
        }
    };
    let apply_b_dec_to_input = get_bool(v, "apply_b_dec_to_input", true, file)?;
    if architecture.is_transcoder() && apply_b_dec_to_input {
        return Err(Error::Invalid(format!(
            "{}: `apply_b_dec_to_input` is true, which SAELens refuses for transcoders (b_dec has width d_out)",
            file.display()
        )));
    }
    let normalize_activations = parse_normalization(v.get("normalize_activations"), file)?;
    let rescale = get_bool(v, "rescale_acts_by_decoder_norm", false, file)?;
    if rescale && architecture != Architecture::TopK {
        return Err(Error::Invalid(format!(
            "{}: `rescale_acts_by_decoder_norm` is true, but only topk SAEs rescale (the architecture is `{arch_name}`)",
            file.display()
        )));
    }
    let k = if architecture == Architecture::TopK {
        Some(get_usize(v, "k", file).map_err(|_| {
            Error::Invalid(format!(
                "{}: a topk SAE needs an integer `k` (SAELens would default it to 100)",
                file.display()
            ))
        })?)
    } else {
        None
    };
    let metadata = match v.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(x) => {
            return Err(Error::Invalid(format!(
                "{}: `metadata` is {x}, but must be an object",
                file.display()
            )))
        }
    };
    let hook_name = get_str(&metadata, "hook_name", file)?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no hook name (`metadata.hook_name`, or `hook_name` / `hook_point` in a pre-6 config): say where the SAE reads",
                file.display()
            ))
        })?
        .to_string();
    for key in ["hook_head_index", "hook_head_index_out"] {
        if let Some(h) = metadata.get(key).filter(|h| !h.is_null()) {
            return Err(Error::Invalid(format!(
                "{}: `{key}` is {h}: SAEs on a single head's slice of a hook are not supported",
                file.display()
            )));
        }
    }
    let hook_name_out = if architecture.is_transcoder() {
        get_str(&metadata, "hook_name_out", file)?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: a transcoder needs `metadata.hook_name_out`, the hook it writes (e.g. blocks.L.hook_mlp_out)",
                    file.display()
                ))
            })?
            .to_string()
    } else {
        hook_name.clone()
    };
    match get_str(v, "reshape_activations", file)? {
        None | Some("none") => {}
        Some("hook_z") if hook_name.ends_with("_z") => {}
        Some(r) => {
            return Err(Error::Invalid(format!(
                "{}: `reshape_activations` \"{r}\" does not fit hook `{hook_name}` (known: none, and hook_z for a hook_z SAE)",
                file.display()
            )))
        }
    }
    Ok(SaeConfig {
        architecture,
        d_in,
        d_sae,
        d_out,
        hook_name,
        hook_name_out,
        k,
        rescale_acts_by_decoder_norm: rescale,
        normalize_activations,
        apply_b_dec_to_input,
        model_name: get_str(&metadata, "model_name", file)?.map(String::from),
        context_size: metadata
            .get("context_size")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        exclude_special_tokens: metadata
            .get("exclude_special_tokens")
            .and_then(Value::as_bool),
        format,
        metadata: Value::Object(metadata),
    })
}

/// The weights under SAELens's tensor names, as `read_sae_components_from_disk` and
/// `load_state_dict` take them: an all-ones `scaling_factor` is dropped, anything else extra
/// refused.
fn weights_from_state_dict(
    mut t: HashMap<String, Tensor>,
    cfg: &SaeConfig,
    file: &Path,
) -> Result<SaeWeights> {
    if let Some(s) = t.remove("scaling_factor") {
        let max_dev = (s - 1.0)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        if max_dev > 0.0 {
            return Err(Error::Invalid(format!(
                "{}: `scaling_factor` is not all ones (a finetuning scaling factor, which SAELens 6 cannot load either)",
                file.display()
            )));
        }
    }
    let a = cfg.architecture;
    let name = a.saelens_name();
    let w_enc = take(&mut t, "W_enc", file, "the encoder")?;
    let w_dec = take(&mut t, "W_dec", file, "the decoder")?;
    let b_dec = take(&mut t, "b_dec", file, "the decoder bias")?;
    let gated = a == Architecture::Gated;
    let b_enc = if gated {
        None
    } else {
        Some(take(&mut t, "b_enc", file, "the encoder bias")?)
    };
    let threshold = if a.has_threshold() {
        Some(take(&mut t, "threshold", file, "JumpReLU's threshold")?)
    } else {
        None
    };
    let (b_gate, r_mag, b_mag) = if gated {
        (
            Some(take(&mut t, "b_gate", file, "gated SAEs' gate bias")?),
            Some(take(&mut t, "r_mag", file, "gated SAEs' magnitude scale")?),
            Some(take(&mut t, "b_mag", file, "gated SAEs' magnitude bias")?),
        )
    } else {
        (None, None, None)
    };
    let w_skip = if a.has_skip() {
        Some(take(&mut t, "W_skip", file, "the skip connection")?)
    } else {
        None
    };
    refuse_leftover_tensors(&t, file, name)?;
    Ok(SaeWeights {
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold,
        b_gate,
        r_mag,
        b_mag,
        w_skip,
    })
}
