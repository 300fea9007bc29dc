//! `mechinterp sae info DIR`: an SAE's or transcoder's config as this crate read it.

use std::path::PathBuf;

use anyhow::Result;
use mechinterp::sae::{CrossLayerTranscoder, Sae};
use serde_json::{json, Value};

/// Arguments of `sae info`.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// A SAELens or Gemma Scope 2 folder, a circuit-tracer `layer_N.safetensors`, or a
    /// circuit-tracer cross-layer transcoder folder.
    pub dir: PathBuf,
}

/// Prints the config as read (JSON), with the log feature sparsity's summary when present.
pub fn run(args: InfoArgs, out: &mut impl std::io::Write) -> Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&describe(&args.dir)?)?
    )?;
    Ok(())
}

fn describe(dir: &std::path::Path) -> Result<Value> {
    let sae = match Sae::load(dir) {
        Ok(s) => s,
        Err(e) => {
            // A cross-layer transcoder is not one SAE; say what it is instead.
            if dir.join("W_enc_0.safetensors").is_file() {
                return Ok(CrossLayerTranscoder::load(dir)?.describe());
            }
            return Err(e.into());
        }
    };
    let mut v = serde_json::to_value(sae.cfg())?;
    let sparsity = match sae.log_sparsity() {
        Some(s) => {
            let s = s.to_vec1::<f32>()?;
            let dead = s.iter().filter(|x| !x.is_finite() || **x <= -10.0).count();
            let mean = s.iter().filter(|x| x.is_finite()).sum::<f32>() / s.len().max(1) as f32;
            json!({"latents": s.len(), "mean_log10_frequency": mean, "never_or_below_1e-10": dead})
        }
        None => Value::Null,
    };
    if let Value::Object(m) = &mut v {
        // SAELens's names, as its cfg.json spells them.
        let c = sae.cfg();
        m.insert("architecture".into(), json!(c.architecture.saelens_name()));
        m.insert(
            "normalize_activations".into(),
            json!(c.normalize_activations.saelens_name()),
        );
        m.insert("log_sparsity".into(), sparsity);
    }
    Ok(v)
}
