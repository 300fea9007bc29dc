//! How to load a model: device, dtype, weight mode, and where the hub's files come from.

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::model::matrix::WeightMode;

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// Dtype of the weights and activations: `F32` (default) or `BF16` (half the memory).
    pub dtype: DType,
    /// Where the model runs.
    pub device: Device,
    /// How GGUF weight matrices are held: dense (dequantised at load, the default), or kept
    /// quantised and streamed (exact) or multiplied as they are (fast, approximate). See
    /// [`WeightMode`]; safetensors checkpoints load dense.
    pub weights: WeightMode,
    /// Hub cache folder; `None` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache; `None` reads `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Access token; `None` reads `HF_TOKEN`, else the token file beside the cache.
    pub token: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            revision: "main".into(),
            dtype: DType::F32,
            device: Device::Cpu,
            weights: WeightMode::Dense,
            cache_dir: None,
            offline: None,
            token: None,
            progress: true,
        }
    }
}

impl LoadOptions {
    /// The defaults, on the device `MECHINTERP_DEVICE` names (`cpu`, the default, `cuda` or
    /// `cuda:N`): how the plain loaders (`from_gguf`, `from_spec`, …) and the CLI choose it,
    /// so that a test suite or a notebook runs on a GPU unchanged.
    pub fn from_env() -> Result<Self> {
        let device = match std::env::var("MECHINTERP_DEVICE")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("cpu") => Device::Cpu,
            Some(v) if v == "cuda" || v.starts_with("cuda:") => {
                let n = v
                    .strip_prefix("cuda:")
                    .map(|n| n.parse::<usize>())
                    .transpose()
                    .map_err(|_| {
                        Error::Invalid(format!(
                            "MECHINTERP_DEVICE={v}: expected cuda:N with N a GPU index"
                        ))
                    })?
                    .unwrap_or(0);
                Device::new_cuda(n).map_err(|e| {
                    Error::Invalid(format!(
                        "MECHINTERP_DEVICE={v}, but no CUDA device {n} could be opened ({e}); build with `--features cuda` on a machine with a GPU, or unset it"
                    ))
                })?
            }
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "MECHINTERP_DEVICE={v} is not a device: use cpu, cuda or cuda:N"
                )))
            }
        };
        Ok(LoadOptions {
            device,
            ..Default::default()
        })
    }

    /// Refuses combinations that cannot be honoured: a dtype other than f32 / bf16 / f16, or
    /// weights kept quantised with half-precision activations (their projections run in f32).
    pub(crate) fn check(&self) -> Result<()> {
        if !matches!(self.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!(
                "dtype {:?} is not supported: use F32, BF16 or F16",
                self.dtype
            )));
        }
        if self.weights != WeightMode::Dense && self.dtype != DType::F32 {
            return Err(Error::Invalid(format!(
                "weights `{}` compute in f32, but dtype {:?} was asked for; use dtype F32 with it, or dense weights for bf16 / f16",
                self.weights.name(),
                self.dtype
            )));
        }
        Ok(())
    }
}
