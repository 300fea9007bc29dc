//! Gemma Scope 2 folders (`config.json` + `params.safetensors`), read as SAELens's own Gemma
//! Scope 2 loader (`gemma_3_sae_huggingface_loader`) reads them: JumpReLU, no input
//! normalisation, no `b_dec` on the input, `affine_skip_connection` [d_in, d_out] as
//! `W_skip` [d_out, d_in]. The hooks come from the config's Hugging Face module paths
//! (`hf_hook_point_in` / `_out`), mapped to ours by [`super::hooks::hf_to_hook_name`].

use std::path::Path;

use serde_json::{json, Map, Value};

use super::hooks::hf_to_hook_name;
use super::{get_bool, get_str, read_json, read_tensors, refuse_leftover_tensors, take};
use crate::error::{Error, Result};
use crate::sae::autoencoder::{Sae, SaeWeights};
use crate::sae::config::{Architecture, Format, Normalization, SaeConfig};

/// The keys of a Gemma Scope 2 `config.json`.
const KEYS: &[&str] = &[
    "hf_hook_point_in",
    "hf_hook_point_out",
    "width",
    "model_name",
    "architecture",
    "l0",
    "affine_connection",
    "type",
];

/// Reads a Gemma Scope 2 folder.
pub(crate) fn load_dir(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join("config.json");
    let raw = read_json(&cfg_path)?;
    super::refuse_unknown_keys(&raw, KEYS, &cfg_path, "Gemma Scope 2 config")?;
    match get_str(&raw, "architecture", &cfg_path)? {
        Some("jump_relu") => {}
        a => {
            return Err(Error::Invalid(format!(
                "{}: architecture {a:?}; Gemma Scope 2 SAEs and transcoders are \"jump_relu\" (the only one SAELens's loader accepts)",
                cfg_path.display()
            )))
        }
    }
    let hf_in = get_str(&raw, "hf_hook_point_in", &cfg_path)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no `hf_hook_point_in`: say where it reads",
            cfg_path.display()
        ))
    })?;
    let hf_out = get_str(&raw, "hf_hook_point_out", &cfg_path)?.filter(|o| *o != hf_in);
    let hook_name = hf_to_hook_name(hf_in).map_err(|e| in_file(e, &cfg_path))?;
    let hook_name_out = match hf_out {
        Some(o) => hf_to_hook_name(o).map_err(|e| in_file(e, &cfg_path))?,
        None => hook_name.clone(),
    };
    let transcoder = hf_out.is_some();
    let affine = get_bool(&raw, "affine_connection", false, &cfg_path)?;

    let params = dir.join("params.safetensors");
    let mut t = read_tensors(&params)?;
    let w_enc = take(&mut t, "w_enc", &params, "the encoder [d_in, d_sae]")?;
    let w_dec = take(&mut t, "w_dec", &params, "the decoder [d_sae, d_out]")?;
    if w_dec.rank() != 2 {
        return Err(Error::Invalid(format!(
            "{}: `w_dec` has shape {:?}: a cross-layer transcoder's decoder; read it with CrossLayerTranscoder (circuit-tracer layout) instead",
            params.display(),
            w_dec.dims()
        )));
    }
    let b_enc = take(&mut t, "b_enc", &params, "the encoder bias")?;
    let b_dec = take(&mut t, "b_dec", &params, "the decoder bias")?;
    let threshold = take(&mut t, "threshold", &params, "JumpReLU's threshold")?;
    let w_skip = t
        .remove("affine_skip_connection")
        .map(|s| s.t()?.contiguous())
        .transpose()?;
    refuse_leftover_tensors(&t, &params, "Gemma Scope 2")?;
    if w_skip.is_some() != affine {
        return Err(Error::Invalid(format!(
            "{}: `affine_connection` is {affine}, but params.safetensors {} `affine_skip_connection`",
            cfg_path.display(),
            if affine { "lacks" } else { "holds" }
        )));
    }
    if w_skip.is_some() && !transcoder {
        return Err(Error::Invalid(format!(
            "{}: an affine skip connection on an SAE (hf_hook_point_out equals hf_hook_point_in): only transcoders have one",
            cfg_path.display()
        )));
    }
    let (d_in, d_sae) = w_enc.dims2()?;
    let d_out = w_dec.dim(1)?;
    if let Some(w) = raw.get("width").and_then(Value::as_u64) {
        if w as usize != d_sae {
            return Err(Error::Invalid(format!(
                "{}: `width` is {w} but w_enc has {d_sae} latents",
                cfg_path.display()
            )));
        }
    }
    let architecture = match (transcoder, w_skip.is_some()) {
        (false, _) => Architecture::JumpRelu,
        (true, false) => Architecture::JumpReluTranscoder,
        (true, true) => Architecture::JumpReluSkipTranscoder,
    };
    let model_name = get_str(&raw, "model_name", &cfg_path)?.map(saelens_model_name);
    let mut metadata = Map::new();
    metadata.insert("model_name".into(), json!(model_name));
    metadata.insert("hook_name".into(), json!(hook_name));
    if transcoder {
        metadata.insert("hook_name_out".into(), json!(hook_name_out));
    }
    metadata.insert("hook_head_index".into(), Value::Null);
    metadata.insert("prepend_bos".into(), json!(true));
    metadata.insert("dataset_path".into(), json!("monology/pile-uncopyrighted"));
    metadata.insert("context_size".into(), json!(1024));
    metadata.insert("hf_hook_name".into(), json!(hf_in));
    if let Some(o) = hf_out {
        metadata.insert("hf_hook_name_out".into(), json!(o));
    }
    let cfg = SaeConfig {
        architecture,
        d_in,
        d_sae,
        d_out,
        hook_name,
        hook_name_out,
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: false,
        model_name,
        context_size: Some(1024),
        exclude_special_tokens: None,
        format: Format::GemmaScope2,
        metadata: Value::Object(metadata),
    };
    let w = SaeWeights {
        w_enc,
        b_enc: Some(b_enc),
        w_dec,
        b_dec,
        threshold: Some(threshold),
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip,
    };
    Sae::new(cfg, w).map_err(|e| in_file(e, &params))
}

/// The model name as SAELens's loader writes it (`gemma-v3-270m-pt` → `google/gemma-3-270m`).
fn saelens_model_name(name: &str) -> String {
    let mut m = if name.contains("google") {
        name.to_string()
    } else {
        format!("google/{name}")
    };
    m = m.replace("-v3", "-3");
    if m.contains("270m") {
        m = m.replace("-pt", "");
    }
    m
}

fn in_file(e: Error, file: &Path) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", file.display())),
        e => e,
    }
}
