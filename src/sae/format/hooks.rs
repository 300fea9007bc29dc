//! Hook points of SAE files in our (TransformerLens) names: Hugging Face module paths as
//! Gemma Scope 2 names them, and whether an SAE's hooks and widths fit a model
//! ([`crate::sae::Sae::check_fits`]).
//!
//! Widths: an SAE reads a hook's last dimension, or, at a per-head hook (`attn.hook_z`,
//! `hook_q`, `hook_k`, `hook_v`, `hook_rot_q`, `hook_rot_k`, shape `[.., heads, d_head]`), the
//! heads and `d_head` flattened together as SAELens's `reshape_activations: "hook_z"` does
//! (`n_heads·d_head` for `hook_z`, which is also the width of `o_proj`'s input in Hugging Face
//! models).

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::HookedTransformer;
use crate::sae::autoencoder::Sae;

/// Hugging Face module paths (after `model.layers.L.`) and the hook point each one is.
const HF_HOOKS: &[(&str, &str)] = &[
    ("output", "hook_resid_post"),
    ("input_layernorm.output", "attn.hook_in"),
    ("self_attn.o_proj.input", "attn.hook_z"),
    ("post_attention_layernorm.output", "hook_attn_out"),
    ("pre_feedforward_layernorm.output", "mlp.hook_in"),
    ("mlp.down_proj.input", "mlp.hook_post"),
    ("post_feedforward_layernorm.output", "hook_mlp_out"),
];

/// Our hook name for a Hugging Face module path such as
/// `model.layers.5.pre_feedforward_layernorm.output` (→ `blocks.5.mlp.hook_in`); unknown paths
/// are refused by name with the ones we know.
pub fn hf_to_hook_name(hf: &str) -> Result<String> {
    let rest = hf
        .strip_prefix("model.layers.")
        .or_else(|| hf.strip_prefix("model.language_model.layers."))
        .or_else(|| hf.strip_prefix("language_model.model.layers."));
    if let Some((layer, tail)) = rest.and_then(|r| r.split_once('.')) {
        if let Ok(l) = layer.parse::<usize>() {
            if let Some((_, ours)) = HF_HOOKS.iter().find(|(h, _)| *h == tail) {
                return Ok(format!("blocks.{l}.{ours}"));
            }
        }
    }
    Err(Error::Invalid(format!(
        "Hugging Face hook point `{hf}` has no equivalent here; known: {}",
        HF_HOOKS
            .iter()
            .map(|(h, ours)| format!("model.layers.L.{h} (blocks.L.{ours})"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The width an SAE at `p` reads or writes in `model`, or why no SAE belongs there.
fn width_at(model: &HookedTransformer, p: HookPoint) -> Result<usize> {
    use HookPoint as P;
    let c = model.cfg();
    Ok(match p {
        P::Z(_) | P::Q(_) | P::RotQ(_) => c.n_heads * c.d_head,
        P::K(_) | P::V(_) | P::RotK(_) => c.n_kv_heads * c.d_head,
        P::MlpPre(_) | P::MlpPreLinear(_) | P::MlpPost(_) => c.d_mlp,
        P::UnembedOut => c.d_vocab,
        P::AttnScores(_)
        | P::Pattern(_)
        | P::Result(_)
        | P::Ln1Scale(_)
        | P::Ln2Scale(_)
        | P::Ln1PostScale(_)
        | P::Ln2PostScale(_)
        | P::LnFinalScale
        | P::QNormScale(_)
        | P::KNormScale(_)
        | P::QNormNormalized(_)
        | P::KNormNormalized(_) => {
            return Err(Error::Invalid(format!(
                "`{p}` ({}) is not a hook an SAE can read or write here: its activation is not one vector per position",
                p.shape_doc()
            )))
        }
        _ => c.d_model,
    })
}

/// Checks that `sae`'s hooks exist in `model` and carry vectors of its widths.
pub(crate) fn check_fits(sae: &Sae, model: &HookedTransformer) -> Result<()> {
    let cfg = sae.cfg();
    let sides = [
        ("reads", &cfg.hook_name, "d_in", cfg.d_in),
        ("writes", &cfg.hook_name_out, "d_out", cfg.d_out),
    ];
    for (verb, hook, dim, want) in sides {
        let p: HookPoint = hook.parse().map_err(|e| {
            Error::Invalid(format!(
                "this SAE {verb} `{hook}`, which is not a hook point of this crate ({e})"
            ))
        })?;
        model.check_hook_point(p)?;
        let have = width_at(model, p)?;
        if have != want {
            return Err(Error::Invalid(format!(
                "this SAE {verb} `{hook}` with {dim} = {want}, but that hook carries vectors of width {have} in this model ({}, d_model {}): it was made for another model",
                model.cfg().architecture,
                model.cfg().d_model
            )));
        }
        if !cfg.architecture.is_transcoder() {
            break;
        }
    }
    Ok(())
}
