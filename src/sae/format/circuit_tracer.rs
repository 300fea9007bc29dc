//! circuit-tracer's transcoders, in its own file layout and math (circuit-tracer 0.5,
//! `transcoder/single_layer_transcoder.py` and `cross_layer_transcoder.py`):
//!
//! - a transcoder set: a folder with `config.yaml` (`model_kind: transcoder_set`,
//!   `feature_input_hook`, `feature_output_hook`) and one `layer_N.safetensors` per layer
//!   holding `W_enc` [d_transcoder, d_model], `W_dec` [d_transcoder, d_model], `b_enc`, `b_dec`,
//!   optionally `activation_function.threshold` (JumpReLU) and `W_skip` [d_model, d_model]
//!   (added as `x @ W_skip.T`). Each layer reads as a [`Sae`] transcoder.
//! - a cross-layer transcoder (CLT): `config.yaml` (`model_kind: cross_layer_transcoder`) and,
//!   per layer i, `W_enc_i.safetensors` (`W_enc_i` [d_transcoder, d_model], `b_enc_i`,
//!   `b_dec_i`, optionally `threshold_i`) and `W_dec_i.safetensors` (`W_dec_i`
//!   [d_transcoder, n_layers − i, d_model]: layer i's latents write to layers i..n). See
//!   [`CrossLayerTranscoder`].
//! - a Gemma Scope 2 cross-layer transcoder, as circuit-tracer's `load_gemma_scope_2_clt`
//!   reads it: one file per layer with `w_enc` [d_model, d_transcoder], `w_dec`
//!   [d_transcoder, n_layers, d_model] (entries before the layer unused), `b_enc`, `b_dec`,
//!   `threshold` and optionally `affine_skip_connection` [d_model, d_model] (added as
//!   `x @ A`); it reads `mlp.hook_in` and writes `hook_mlp_out`, the hooks SAELens gives
//!   Gemma Scope 2's `clt` folders. See [`CrossLayerTranscoder::load_gemma_scope_2`].
//!
//! circuit-tracer's JumpReLU is `x·1[x > θ]` without a ReLU, unlike SAELens's
//! `ReLU(x)·1[x > θ]`: the two differ where θ < 0. SAEs read from these files keep
//! circuit-tracer's (their config's `format` says so), and saving one with a negative θ as a
//! SAELens folder is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, D};
use serde_json::{json, Map, Value};

use super::{read_tensors, refuse_leftover_tensors, take};
use crate::error::{Error, Result};
use crate::sae::autoencoder::{matmul_last, Sae, SaeWeights};
use crate::sae::config::{Architecture, Format, Normalization, SaeConfig};

/// The keys of circuit-tracer's `config.yaml`.
const YAML_KEYS: &[&str] = &[
    "model_kind",
    "model_name",
    "feature_input_hook",
    "feature_output_hook",
    "transcoders",
    "scan",
    "scan_name",
    "activation",
    "k",
    "repo_id",
    "revision",
    "subfolder",
];

/// A parsed `config.yaml`: flat `key: value` pairs and lists of strings.
#[derive(Debug, Clone, Default)]
struct YamlConfig {
    values: HashMap<String, String>,
    lists: HashMap<String, Vec<String>>,
}

impl YamlConfig {
    fn get(&self, k: &str) -> Option<&str> {
        self.values
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && *v != "null" && *v != "~")
    }

    fn need(&self, k: &str, file: &Path) -> Result<&str> {
        self.get(k)
            .ok_or_else(|| Error::Invalid(format!("{}: no `{k}`", file.display())))
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let s = match s.find(" #") {
        Some(i) if !s.starts_with('"') && !s.starts_with('\'') => s[..i].trim(),
        _ => s,
    };
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Reads the subset of YAML circuit-tracer's configs use; anything else is refused.
fn read_yaml(file: &Path) -> Result<YamlConfig> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    let mut cfg = YamlConfig::default();
    let mut list: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t.trim().is_empty() || t.trim_start().starts_with('#') {
            continue;
        }
        if let Some(item) = t.trim_start().strip_prefix("- ") {
            match &list {
                Some(k) => cfg.lists.entry(k.clone()).or_default().push(unquote(item)),
                None => {
                    return Err(Error::Invalid(format!(
                        "{}:{}: a list item outside a list",
                        file.display(),
                        i + 1
                    )))
                }
            }
            continue;
        }
        let Some((k, v)) = t.split_once(':').filter(|_| !t.starts_with(' ')) else {
            return Err(Error::Invalid(format!(
                "{}:{}: `{t}` is not a `key: value` line (circuit-tracer configs are flat)",
                file.display(),
                i + 1
            )));
        };
        let k = k.trim().to_string();
        if !YAML_KEYS.contains(&k.as_str()) {
            return Err(Error::Invalid(format!(
                "{}: unknown circuit-tracer config key `{k}`; known: {}",
                file.display(),
                YAML_KEYS.join(", ")
            )));
        }
        let v = unquote(v);
        if v.is_empty() {
            list = Some(k.clone());
            cfg.lists.entry(k.clone()).or_default();
        } else {
            list = None;
        }
        cfg.values.insert(k, v);
    }
    Ok(cfg)
}

/// The `model_kind` of the circuit-tracer folder `dir` (`transcoder_set`,
/// `cross_layer_transcoder`), when its `config.yaml` says.
pub fn model_kind(dir: &Path) -> Option<String> {
    read_yaml(&dir.join("config.yaml"))
        .ok()
        .and_then(|c| c.get("model_kind").map(String::from))
}

/// The error for a circuit-tracer folder given where one SAE was expected.
pub(crate) fn folder_hint(dir: &Path) -> Error {
    if model_kind(dir).as_deref() == Some("transcoder_set") {
        Error::Invalid(format!(
            "{} is a circuit-tracer transcoder set (one transcoder per layer): load one layer with Sae::load(\"{}\"), or all of them with sae::format::circuit_tracer::load_transcoder_set",
            dir.display(),
            dir.join("layer_0.safetensors").display()
        ))
    } else {
        Error::Invalid(format!(
            "{} is a circuit-tracer cross-layer transcoder: read it with CrossLayerTranscoder::load, not as one SAE",
            dir.display()
        ))
    }
}

/// The `config.yaml` beside a transcoder file, checked to be a transcoder set's.
fn set_config(dir: &Path) -> Result<(YamlConfig, PathBuf)> {
    let file = dir.join("config.yaml");
    if !file.is_file() {
        return Err(Error::Invalid(format!(
            "{}: no config.yaml beside the transcoder files; circuit-tracer keeps the hooks they read and write there (feature_input_hook, feature_output_hook)",
            dir.display()
        )));
    }
    let cfg = read_yaml(&file)?;
    match cfg.get("activation") {
        None | Some("relu") | Some("jump_relu") | Some("jumprelu") => {}
        Some(a) => {
            return Err(Error::Invalid(format!(
                "{}: activation `{a}` is not supported (relu and JumpReLU are; a topk transcoder has no SAELens architecture)",
                file.display()
            )))
        }
    }
    Ok((cfg, file))
}

/// Every layer of a circuit-tracer transcoder set, in layer order.
pub fn load_transcoder_set(dir: &Path) -> Result<Vec<Sae>> {
    let (cfg, file) = set_config(dir)?;
    if cfg.get("model_kind") != Some("transcoder_set") {
        return Err(Error::Invalid(format!(
            "{}: model_kind is {:?}, not transcoder_set",
            file.display(),
            cfg.get("model_kind")
        )));
    }
    let paths: Vec<PathBuf> = match cfg.lists.get("transcoders") {
        Some(l) if !l.is_empty() => l
            .iter()
            .map(|p| local_path(dir, p))
            .collect::<Result<_>>()?,
        _ => {
            let mut v = Vec::new();
            while dir.join(format!("layer_{}.safetensors", v.len())).is_file() {
                v.push(dir.join(format!("layer_{}.safetensors", v.len())));
            }
            v
        }
    };
    if paths.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no layer_0.safetensors",
            dir.display()
        )));
    }
    paths
        .iter()
        .enumerate()
        .map(|(l, p)| load_layer(p, l, &cfg, &file))
        .collect()
}

fn local_path(dir: &Path, p: &str) -> Result<PathBuf> {
    if p.starts_with("hf://") {
        return Err(Error::Invalid(format!(
            "{}: `{p}` is on the Hugging Face hub; download it (e.g. with huggingface-cli) and list the local file",
            dir.join("config.yaml").display()
        )));
    }
    Ok(dir.join(p))
}

/// One circuit-tracer per-layer transcoder file, with the hooks of the `config.yaml` beside
/// it; the layer is the file's place in the config's `transcoders` list, else its name's N.
pub(crate) fn load_layer_file(path: &Path) -> Result<Sae> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (cfg, file) = set_config(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let listed = cfg.lists.get("transcoders").and_then(|l| {
        l.iter()
            .position(|p| Path::new(p).file_name().and_then(|n| n.to_str()) == Some(name))
    });
    let layer = match listed {
        Some(l) => l,
        None => name
            .strip_prefix("layer_")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: cannot tell which layer this is (neither listed in config.yaml's `transcoders` nor named layer_N.safetensors)",
                    path.display()
                ))
            })?,
    };
    load_layer(path, layer, &cfg, &file)
}

fn load_layer(path: &Path, layer: usize, cfg: &YamlConfig, cfg_file: &Path) -> Result<Sae> {
    let hook_in = cfg.need("feature_input_hook", cfg_file)?;
    let hook_out = cfg.need("feature_output_hook", cfg_file)?;
    let mut t = read_tensors(path)?;
    for bad in ["k", "log_thresholds"] {
        if t.contains_key(bad) {
            return Err(Error::Invalid(format!(
                "{}: tensor `{bad}` (a {} transcoder), which is not supported",
                path.display(),
                if bad == "k" {
                    "topk"
                } else {
                    "log-threshold JumpReLU"
                }
            )));
        }
    }
    let w_enc = take(&mut t, "W_enc", path, "the encoder [d_transcoder, d_model]")?;
    let w_dec = take(&mut t, "W_dec", path, "the decoder [d_transcoder, d_model]")?;
    let b_enc = take(&mut t, "b_enc", path, "the encoder bias")?;
    let b_dec = take(&mut t, "b_dec", path, "the decoder bias")?;
    let threshold = t.remove("activation_function.threshold");
    let w_skip = t.remove("W_skip");
    refuse_leftover_tensors(&t, path, "circuit-tracer transcoder")?;
    if cfg.get("activation") == Some("relu") && threshold.is_some() {
        return Err(Error::Invalid(format!(
            "{}: config.yaml says activation relu, but the file has a JumpReLU threshold",
            path.display()
        )));
    }
    let (d_sae, d_in) = w_enc.dims2()?;
    let d_out = w_dec.dim(1)?;
    let architecture = match (threshold.is_some(), w_skip.is_some()) {
        (false, false) => Architecture::Transcoder,
        (false, true) => Architecture::SkipTranscoder,
        (true, false) => Architecture::JumpReluTranscoder,
        (true, true) => Architecture::JumpReluSkipTranscoder,
    };
    let hook_name = format!("blocks.{layer}.{hook_in}");
    let hook_name_out = format!("blocks.{layer}.{hook_out}");
    let model_name = cfg.get("model_name").map(String::from);
    let metadata = json!({
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_name_out": hook_name_out,
        "hook_head_index": null,
        "model_from_pretrained_kwargs": {"fold_ln": false},
    });
    let sae_cfg = SaeConfig {
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
        context_size: None,
        exclude_special_tokens: None,
        format: Format::CircuitTracer,
        metadata,
    };
    let w = SaeWeights {
        w_enc: w_enc.t()?.contiguous()?,
        b_enc: Some(b_enc),
        w_dec,
        b_dec,
        threshold,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip,
    };
    Sae::new(sae_cfg, w).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// circuit-tracer's cross-layer transcoder: per layer an encoder reading that layer's input
/// hook, and decoders from that layer's latents to the output hook of it and every later
/// layer. Layer ℓ's output is `Σ_{s ≤ ℓ} acts_s · W_dec[s→ℓ] + b_dec_ℓ`.
#[derive(Debug, Clone)]
pub struct CrossLayerTranscoder {
    /// Per layer: `W_enc` as [d_model, d_transcoder] (transposed from the file).
    w_enc: Vec<Tensor>,
    b_enc: Vec<Tensor>,
    threshold: Option<Vec<Tensor>>,
    /// Per source layer s: [d_transcoder, n_layers − s, d_model].
    w_dec: Vec<Tensor>,
    /// Per output layer: [d_model].
    b_dec: Vec<Tensor>,
    /// Per layer: [d_model, d_model], added as `x_ℓ @ W_skip_ℓ` (Gemma Scope 2's affine path).
    w_skip: Option<Vec<Tensor>>,
    input_hook: String,
    output_hook: String,
    model_name: Option<String>,
}

impl CrossLayerTranscoder {
    /// Reads a CLT folder in circuit-tracer's layout (see the module docs).
    pub fn load(dir: &Path) -> Result<CrossLayerTranscoder> {
        let cfg_file = dir.join("config.yaml");
        if !cfg_file.is_file() {
            return Err(Error::Invalid(format!(
                "{}: no config.yaml; circuit-tracer keeps a CLT's hooks there (feature_input_hook, feature_output_hook)",
                dir.display()
            )));
        }
        let cfg = read_yaml(&cfg_file)?;
        if cfg.get("model_kind") != Some("cross_layer_transcoder") {
            return Err(Error::Invalid(format!(
                "{}: model_kind is {:?}, not cross_layer_transcoder",
                cfg_file.display(),
                cfg.get("model_kind")
            )));
        }
        let mut n = 0;
        while dir.join(format!("W_enc_{n}.safetensors")).is_file() {
            n += 1;
        }
        if n == 0 {
            return Err(Error::Invalid(format!(
                "{}: no W_enc_0.safetensors",
                dir.display()
            )));
        }
        let mut clt = CrossLayerTranscoder {
            w_enc: Vec::new(),
            b_enc: Vec::new(),
            threshold: None,
            w_dec: Vec::new(),
            b_dec: Vec::new(),
            w_skip: None,
            input_hook: cfg.need("feature_input_hook", &cfg_file)?.to_string(),
            output_hook: cfg.need("feature_output_hook", &cfg_file)?.to_string(),
            model_name: cfg.get("model_name").map(String::from),
        };
        let mut thresholds = Vec::new();
        for i in 0..n {
            let enc = dir.join(format!("W_enc_{i}.safetensors"));
            let mut t = read_tensors(&enc)?;
            clt.w_enc.push(
                take(&mut t, &format!("W_enc_{i}"), &enc, "the encoder")?
                    .t()?
                    .contiguous()?,
            );
            clt.b_enc.push(take(
                &mut t,
                &format!("b_enc_{i}"),
                &enc,
                "the encoder bias",
            )?);
            clt.b_dec.push(take(
                &mut t,
                &format!("b_dec_{i}"),
                &enc,
                "the decoder bias",
            )?);
            if let Some(th) = t.remove(&format!("threshold_{i}")) {
                thresholds.push(th);
            }
            refuse_leftover_tensors(&t, &enc, "cross-layer transcoder encoder")?;
            let dec = dir.join(format!("W_dec_{i}.safetensors"));
            let mut t = read_tensors(&dec)?;
            clt.w_dec
                .push(take(&mut t, &format!("W_dec_{i}"), &dec, "the decoders")?);
            refuse_leftover_tensors(&t, &dec, "cross-layer transcoder decoder")?;
        }
        if !thresholds.is_empty() {
            if thresholds.len() != n {
                return Err(Error::Invalid(format!(
                    "{}: some layers have a JumpReLU threshold and some do not",
                    dir.display()
                )));
            }
            clt.threshold = Some(thresholds);
        }
        clt.check_shapes(dir)?;
        Ok(clt)
    }

    /// Reads a Gemma Scope 2 cross-layer transcoder from its per-layer files, in layer order
    /// (see the module docs).
    pub fn load_gemma_scope_2(files: &[PathBuf]) -> Result<CrossLayerTranscoder> {
        let n = files.len();
        if n == 0 {
            return Err(Error::Invalid(
                "a Gemma Scope 2 cross-layer transcoder needs one file per layer; got none".into(),
            ));
        }
        let mut clt = CrossLayerTranscoder {
            w_enc: Vec::new(),
            b_enc: Vec::new(),
            threshold: Some(Vec::new()),
            w_dec: Vec::new(),
            b_dec: Vec::new(),
            w_skip: None,
            input_hook: "mlp.hook_in".into(),
            output_hook: "hook_mlp_out".into(),
            model_name: None,
        };
        let mut skips = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let mut t = read_tensors(f)?;
            clt.w_enc.push(take(&mut t, "w_enc", f, "the encoder")?);
            let w_dec = take(&mut t, "w_dec", f, "the decoders [d_sae, n_layers, d_out]")?;
            if w_dec.rank() != 3 || w_dec.dim(1)? != n {
                return Err(Error::Invalid(format!(
                    "{}: `w_dec` has shape {:?}, expected [d_sae, {n}, d_out] for {n} layer files",
                    f.display(),
                    w_dec.dims()
                )));
            }
            clt.w_dec.push(w_dec.narrow(1, i, n - i)?.contiguous()?);
            clt.b_enc
                .push(take(&mut t, "b_enc", f, "the encoder bias")?);
            clt.b_dec
                .push(take(&mut t, "b_dec", f, "the decoder bias")?);
            if let Some(th) = clt.threshold.as_mut() {
                th.push(take(&mut t, "threshold", f, "JumpReLU's threshold")?);
            }
            if let Some(a) = t.remove("affine_skip_connection") {
                skips.push(a);
            }
            refuse_leftover_tensors(&t, f, "Gemma Scope 2 cross-layer transcoder")?;
        }
        if !skips.is_empty() {
            if skips.len() != n {
                return Err(Error::Invalid(
                    "some Gemma Scope 2 CLT layer files have an affine skip connection and some do not".into(),
                ));
            }
            clt.w_skip = Some(skips);
        }
        clt.check_shapes(files[0].parent().unwrap_or(Path::new(".")))?;
        Ok(clt)
    }

    fn check_shapes(&self, dir: &Path) -> Result<()> {
        let (d, f, n) = (self.d_model(), self.d_transcoder(), self.n_layers());
        for i in 0..n {
            let bad = |what: &str, got: &[usize], want: &[usize]| {
                Error::Invalid(format!(
                    "{}: layer {i}'s {what} has shape {got:?}, expected {want:?} (n_layers {n}, d_transcoder {f}, d_model {d})",
                    dir.display()
                ))
            };
            let checks: [(&str, &Tensor, Vec<usize>); 4] = [
                ("W_enc (transposed)", &self.w_enc[i], vec![d, f]),
                ("b_enc", &self.b_enc[i], vec![f]),
                ("b_dec", &self.b_dec[i], vec![d]),
                ("W_dec", &self.w_dec[i], vec![f, n - i, d]),
            ];
            for (what, t, want) in checks {
                if t.dims() != want.as_slice() {
                    return Err(bad(what, t.dims(), &want));
                }
            }
            if let Some(th) = &self.threshold {
                if th[i].dims() != [f] {
                    return Err(bad("threshold", th[i].dims(), &[f]));
                }
            }
            if let Some(sk) = &self.w_skip {
                if sk[i].dims() != [d, d] {
                    return Err(bad("skip connection", sk[i].dims(), &[d, d]));
                }
            }
        }
        Ok(())
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.w_enc.len()
    }

    /// Residual width.
    pub fn d_model(&self) -> usize {
        self.b_dec[0].dim(0).unwrap_or(0)
    }

    /// Latents per layer.
    pub fn d_transcoder(&self) -> usize {
        self.b_enc[0].dim(0).unwrap_or(0)
    }

    /// The model it was trained on, when its config says.
    pub fn model_name(&self) -> Option<&str> {
        self.model_name.as_deref()
    }

    /// The hook layer `layer`'s encoder reads, e.g. `blocks.3.hook_resid_mid`.
    pub fn input_hook(&self, layer: usize) -> String {
        format!("blocks.{layer}.{}", self.input_hook)
    }

    /// The hook layer `layer`'s output replaces, e.g. `blocks.3.hook_mlp_out`.
    pub fn output_hook(&self, layer: usize) -> String {
        format!("blocks.{layer}.{}", self.output_hook)
    }

    /// Layer `layer`'s encoder [d_model, d_transcoder] (column i is latent i's encoder row).
    pub fn w_enc(&self, layer: usize) -> Result<&Tensor> {
        self.check_layer(layer)?;
        Ok(&self.w_enc[layer])
    }

    /// Layer `layer`'s encoder bias [d_transcoder].
    pub fn b_enc(&self, layer: usize) -> Result<&Tensor> {
        self.check_layer(layer)?;
        Ok(&self.b_enc[layer])
    }

    /// Layer `layer`'s output bias [d_model].
    pub fn b_dec(&self, layer: usize) -> Result<&Tensor> {
        self.check_layer(layer)?;
        Ok(&self.b_dec[layer])
    }

    /// Layer `layer`'s skip matrix [d_model, d_model] (added as `x @ W_skip`), when it has one.
    pub fn w_skip(&self, layer: usize) -> Result<Option<&Tensor>> {
        self.check_layer(layer)?;
        Ok(self.w_skip.as_ref().map(|w| &w[layer]))
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer < self.n_layers() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "layer {layer} is out of range: this cross-layer transcoder has {} layers",
                self.n_layers()
            )))
        }
    }

    /// Layer `layer`'s encoder pre-activations of `x` [.., d_model] → [.., d_transcoder].
    pub fn encode_pre(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.check_layer(layer)?;
        let x = x.to_dtype(DType::F32)?;
        if x.dim(D::Minus1)? != self.d_model() {
            return Err(Error::Invalid(format!(
                "the cross-layer transcoder reads vectors of width {}, got shape {:?}",
                self.d_model(),
                x.dims()
            )));
        }
        Ok(matmul_last(&x, &self.w_enc[layer])?.broadcast_add(&self.b_enc[layer])?)
    }

    /// Layer `layer`'s latent activations (circuit-tracer's JumpReLU `x·1[x > θ]`, or ReLU).
    pub fn encode(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        let pre = self.encode_pre(layer, x)?;
        Ok(match &self.threshold {
            Some(th) => (&pre * pre.broadcast_gt(&th[layer])?.to_dtype(DType::F32)?)?,
            None => pre.relu()?,
        })
    }

    /// `W_dec[source → target]` [d_transcoder, d_model]: how source-layer latents write to
    /// the target layer's output (target ≥ source).
    pub fn decoder(&self, source: usize, target: usize) -> Result<Tensor> {
        self.check_layer(target)?;
        if source > target {
            return Err(Error::Invalid(format!(
                "layer {source}'s latents write only to layers {source}.., not to {target}"
            )));
        }
        Ok(self.w_dec[source]
            .narrow(1, target - source, 1)?
            .squeeze(1)?)
    }

    /// Layer `target`'s output from the latent activations of layers `0..=target` (`acts[s]`
    /// [.., d_transcoder]; later entries are ignored), without the skip path
    /// ([`CrossLayerTranscoder::skip`]).
    pub fn decode(&self, target: usize, acts: &[Tensor]) -> Result<Tensor> {
        self.check_layer(target)?;
        if acts.len() <= target {
            return Err(Error::Invalid(format!(
                "decoding layer {target} needs the activations of layers 0..={target}; got {}",
                acts.len()
            )));
        }
        let mut out: Option<Tensor> = None;
        for (s, a) in acts.iter().enumerate().take(target + 1) {
            let y = matmul_last(&a.to_dtype(DType::F32)?, &self.decoder(s, target)?)?;
            out = Some(match out {
                Some(o) => (o + y)?,
                None => y,
            });
        }
        let out = out.ok_or_else(|| Error::Invalid("no layers to decode".into()))?;
        Ok(out.broadcast_add(&self.b_dec[target])?)
    }

    /// Layer `layer`'s linear skip path `x @ W_skip` (Gemma Scope 2's affine connection), if
    /// it has one.
    pub fn skip(&self, layer: usize, x: &Tensor) -> Result<Option<Tensor>> {
        self.check_layer(layer)?;
        match &self.w_skip {
            Some(w) => Ok(Some(matmul_last(&x.to_dtype(DType::F32)?, &w[layer])?)),
            None => Ok(None),
        }
    }

    /// Every layer's output from every layer's input (`xs[l]` at layer l's input hook),
    /// with the skip path.
    pub fn forward(&self, xs: &[Tensor]) -> Result<Vec<Tensor>> {
        if xs.len() != self.n_layers() {
            return Err(Error::Invalid(format!(
                "the cross-layer transcoder needs one input per layer ({}), got {}",
                self.n_layers(),
                xs.len()
            )));
        }
        let acts = xs
            .iter()
            .enumerate()
            .map(|(l, x)| self.encode(l, x))
            .collect::<Result<Vec<_>>>()?;
        (0..self.n_layers())
            .map(|l| {
                let out = self.decode(l, &acts)?;
                Ok(match self.skip(l, &xs[l])? {
                    Some(s) => (out + s)?,
                    None => out,
                })
            })
            .collect()
    }

    /// A summary for `mechinterp sae info`.
    pub fn describe(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "format".into(),
            json!("circuit-tracer cross-layer transcoder"),
        );
        m.insert("n_layers".into(), json!(self.n_layers()));
        m.insert("d_model".into(), json!(self.d_model()));
        m.insert("d_transcoder".into(), json!(self.d_transcoder()));
        m.insert(
            "activation".into(),
            json!(if self.threshold.is_some() {
                "jump_relu"
            } else {
                "relu"
            }),
        );
        m.insert("skip_connection".into(), json!(self.w_skip.is_some()));
        m.insert("feature_input_hook".into(), json!(self.input_hook));
        m.insert("feature_output_hook".into(), json!(self.output_hook));
        m.insert("model_name".into(), json!(self.model_name));
        Value::Object(m)
    }
}

/// Writes a transcoder set in circuit-tracer's per-layer format: `dir/layer_L.safetensors`
/// (`W_enc` [d_transcoder, d_model], `W_dec` [d_transcoder, d_model], `b_enc`, `b_dec`,
/// `activation_function.threshold` for JumpReLU, `W_skip` [d_model, d_model] if any, f32) and
/// `dir/config.yaml` (`model_kind: transcoder_set` and the hooks). `saes[L]` must read
/// `blocks.L.<in>` and write `blocks.L.<out>` with the same `<in>`, `<out>` for every layer,
/// with no input normalisation, no `b_dec` subtracted from the input, and JumpReLU thresholds
/// ≥ 0 (circuit-tracer's JumpReLU has no ReLU, so the two agree only there).
pub fn save_transcoder_set(dir: &Path, saes: &[Sae], model_name: &str) -> Result<()> {
    if saes.is_empty() {
        return Err(Error::Invalid(
            "a transcoder set needs at least one layer".into(),
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating the folder {}", dir.display()), e))?;
    let suffix = |h: &str, l: usize| -> Result<String> {
        h.strip_prefix(&format!("blocks.{l}."))
            .map(String::from)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "transcoder {l} hooks `{h}`, not a point of block {l}: circuit-tracer's set has one transcoder per layer, in order"
                ))
            })
    };
    let hooks = |l: usize, s: &Sae| -> Result<(String, String)> {
        Ok((suffix(s.hook_name(), l)?, suffix(s.hook_name_out(), l)?))
    };
    let (hook_in, hook_out) = hooks(0, &saes[0])?;
    for (l, s) in saes.iter().enumerate() {
        let c = s.cfg();
        if hooks(l, s)? != (hook_in.clone(), hook_out.clone()) {
            return Err(Error::Invalid(format!(
                "transcoder {l} reads `{}` and writes `{}`; layer 0's read blocks.0.{hook_in} and write blocks.0.{hook_out}, and circuit-tracer's config.yaml has one pair for all",
                s.hook_name(),
                s.hook_name_out()
            )));
        }
        let ok_arch = matches!(
            c.architecture,
            Architecture::Transcoder
                | Architecture::SkipTranscoder
                | Architecture::JumpReluTranscoder
                | Architecture::JumpReluSkipTranscoder
        );
        if !ok_arch || c.normalize_activations != Normalization::None || c.apply_b_dec_to_input {
            return Err(Error::Invalid(format!(
                "transcoder {l} is a `{}`{}{}: circuit-tracer's per-layer format holds ReLU and JumpReLU transcoders that read raw activations (fold the normalisation into the weights first)",
                c.architecture.saelens_name(),
                if c.normalize_activations != Normalization::None { " with input normalisation" } else { "" },
                if c.apply_b_dec_to_input { " that subtracts b_dec from its input" } else { "" },
            )));
        }
        let w = s.weights();
        let f32c = |t: &Tensor| -> Result<Tensor> {
            Ok(t.to_dtype(DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .contiguous()?)
        };
        let mut ts: HashMap<String, Tensor> = HashMap::new();
        ts.insert("W_enc".into(), f32c(&w.w_enc.t()?)?);
        ts.insert("W_dec".into(), f32c(&w.w_dec)?);
        let b_enc = match &w.b_enc {
            Some(b) => f32c(b)?,
            None => Tensor::zeros(c.d_sae, DType::F32, &candle_core::Device::Cpu)?,
        };
        ts.insert("b_enc".into(), b_enc);
        ts.insert("b_dec".into(), f32c(&w.b_dec)?);
        if let Some(th) = &w.threshold {
            let min = th.to_dtype(DType::F32)?.min_all()?.to_scalar::<f32>()?;
            if min < 0.0 {
                return Err(Error::Invalid(format!(
                    "transcoder {l} has a negative JumpReLU threshold ({min}); circuit-tracer's JumpReLU (x·1[x > θ], no ReLU) would read it differently"
                )));
            }
            ts.insert("activation_function.threshold".into(), f32c(th)?);
        }
        if let Some(ws) = &w.w_skip {
            ts.insert("W_skip".into(), f32c(ws)?);
        }
        let path = dir.join(format!("layer_{l}.safetensors"));
        candle_core::safetensors::save(&ts, &path).map_err(|e| Error::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    let yaml = format!(
        "model_name: {model_name}\nmodel_kind: transcoder_set\nfeature_input_hook: {hook_in}\nfeature_output_hook: {hook_out}\nscan: mechinterp-{}\n",
        model_name.replace('/', "-")
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).map_err(|e| Error::Write {
        path,
        reason: e.to_string(),
    })
}
