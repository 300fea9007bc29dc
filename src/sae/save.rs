//! Writing an SAE as a SAELens 6 folder, as `SAE.save_model` writes one: `cfg.json` (its key
//! set, hook names in `metadata.hook_name` as they are: ours are TransformerLens's, which
//! SAELens uses), `sae_weights.safetensors` under SAELens's tensor names, and
//! `sparsity.safetensors` when the log feature sparsity is known.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};

use super::autoencoder::Sae;
use super::config::{Architecture, Format};
use crate::error::{Error, Result};

/// The SAELens version written when the SAE did not come from a SAELens 6 file: SAELens reads
/// a folder as 6.x only when its `metadata.sae_lens_version` is at least 6.
const SAELENS_VERSION: &str = "6.0.0";

impl Sae {
    /// Writes this SAE as a SAELens 6 folder at `dir` (created if needed), with
    /// `sparsity.safetensors` when [`Sae::log_sparsity`] is known. `SAE.load_from_disk(dir)`
    /// reads it back and gives the same outputs.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        self.write_folder(dir)?;
        if let Some(s) = self.log_sparsity() {
            write_sparsity(dir, s)?;
        }
        Ok(())
    }

    /// [`Sae::save`] with a log10 feature sparsity [d_sae] (SAELens's `sparsity.safetensors`).
    pub fn save_with_sparsity(
        &self,
        dir: impl AsRef<Path>,
        log_feature_sparsity: &Tensor,
    ) -> Result<()> {
        let dir = dir.as_ref();
        if log_feature_sparsity.dims() != [self.d_sae()] {
            return Err(Error::Invalid(format!(
                "the log feature sparsity has shape {:?}, but this SAE has d_sae = {}",
                log_feature_sparsity.dims(),
                self.d_sae()
            )));
        }
        self.write_folder(dir)?;
        write_sparsity(dir, log_feature_sparsity)
    }

    /// SAELens 6's `cfg.json` for this SAE.
    pub fn saelens_config(&self) -> Result<Value> {
        let c = self.cfg();
        let mut m = Map::new();
        m.insert("d_in".into(), json!(c.d_in));
        m.insert("d_sae".into(), json!(c.d_sae));
        m.insert("dtype".into(), json!("float32"));
        m.insert("device".into(), json!("cpu"));
        m.insert("apply_b_dec_to_input".into(), json!(c.apply_b_dec_to_input));
        m.insert(
            "normalize_activations".into(),
            json!(c.normalize_activations.saelens_name()),
        );
        // TransformerLens's hook_z is [.., n_heads, d_head]: SAELens flattens it only when told.
        let reshape = if c.hook_name.ends_with("hook_z") {
            "hook_z"
        } else {
            "none"
        };
        m.insert("reshape_activations".into(), json!(reshape));
        m.insert("metadata".into(), Value::Object(self.saelens_metadata()));
        if c.architecture == Architecture::TopK {
            let k =
                c.k.ok_or_else(|| Error::Invalid("a topk SAE without k".into()))?;
            m.insert("k".into(), json!(k));
            m.insert(
                "rescale_acts_by_decoder_norm".into(),
                json!(c.rescale_acts_by_decoder_norm),
            );
        }
        if c.architecture.is_transcoder() {
            m.insert("d_out".into(), json!(c.d_out));
        }
        m.insert("architecture".into(), json!(c.architecture.saelens_name()));
        Ok(Value::Object(m))
    }

    fn saelens_metadata(&self) -> Map<String, Value> {
        let c = self.cfg();
        let mut md = match &c.metadata {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let v6 = md
            .get("sae_lens_version")
            .and_then(Value::as_str)
            .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            .is_some_and(|major| major >= 6);
        if !v6 {
            md.insert("sae_lens_version".into(), json!(SAELENS_VERSION));
            md.insert("sae_lens_training_version".into(), json!(SAELENS_VERSION));
        }
        md.insert("hook_name".into(), json!(c.hook_name));
        if c.architecture.is_transcoder() {
            md.insert("hook_name_out".into(), json!(c.hook_name_out));
        }
        md.entry("hook_head_index").or_insert(Value::Null);
        if let Some(n) = &c.model_name {
            md.insert("model_name".into(), json!(n));
        }
        if let Some(n) = c.context_size {
            md.insert("context_size".into(), json!(n));
        }
        if let Some(b) = c.exclude_special_tokens {
            md.insert("exclude_special_tokens".into(), json!(b));
        }
        md
    }

    /// The weights under SAELens's names, on the CPU.
    fn saelens_state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let w = self.weights();
        let mut t = HashMap::new();
        let cpu = |x: &Tensor| -> Result<Tensor> {
            Ok(x.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .contiguous()?)
        };
        t.insert("W_enc".to_string(), cpu(&w.w_enc)?);
        t.insert("W_dec".to_string(), cpu(&w.w_dec)?);
        t.insert("b_dec".to_string(), cpu(&w.b_dec)?);
        let opt = [
            ("b_enc", &w.b_enc),
            ("threshold", &w.threshold),
            ("b_gate", &w.b_gate),
            ("r_mag", &w.r_mag),
            ("b_mag", &w.b_mag),
            ("W_skip", &w.w_skip),
        ];
        for (name, x) in opt {
            if let Some(x) = x {
                t.insert(name.to_string(), cpu(x)?);
            }
        }
        Ok(t)
    }

    /// Refuses what SAELens would run differently.
    fn check_saveable(&self) -> Result<()> {
        let c = self.cfg();
        if c.architecture.is_transcoder() && c.apply_b_dec_to_input {
            return Err(Error::Invalid(format!(
                "this `{}` applies b_dec to its input, which SAELens refuses for transcoders (TranscoderConfig raises on load): a SAELens folder cannot hold it",
                c.architecture.saelens_name()
            )));
        }
        if c.jumprelu_without_relu() && c.architecture.has_threshold() {
            let th = self.weights().threshold.as_ref();
            if let Some(th) = th {
                let min = th.flatten_all()?.min(0)?.to_scalar::<f32>()?;
                if min < 0.0 {
                    return Err(Error::Invalid(format!(
                        "this {} transcoder has negative JumpReLU thresholds (min {min}): its JumpReLU keeps negative pre-activations above them and SAELens's zeroes them, so a SAELens folder would change its outputs",
                        if c.format == Format::CircuitTracer { "circuit-tracer" } else { "circuit-tracer CLT" }
                    )));
                }
            }
        }
        Ok(())
    }

    fn write_folder(&self, dir: &Path) -> Result<()> {
        self.check_saveable()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Write {
            path: dir.to_path_buf(),
            reason: format!("cannot create the folder: {e}"),
        })?;
        let cfg = serde_json::to_string(&self.saelens_config()?)
            .map_err(|e| Error::Invalid(format!("cannot serialise the config: {e}")))?;
        let cfg_path = dir.join("cfg.json");
        std::fs::write(&cfg_path, cfg).map_err(|e| Error::Write {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        let weights = dir.join("sae_weights.safetensors");
        candle_core::safetensors::save(&self.saelens_state_dict()?, &weights).map_err(|e| {
            Error::Write {
                path: weights.clone(),
                reason: e.to_string(),
            }
        })
    }
}

fn write_sparsity(dir: &Path, s: &Tensor) -> Result<()> {
    let path = dir.join("sparsity.safetensors");
    let mut t = HashMap::new();
    t.insert(
        "sparsity".to_string(),
        s.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?,
    );
    candle_core::safetensors::save(&t, &path).map_err(|e| Error::Write {
        path: path.clone(),
        reason: e.to_string(),
    })
}
