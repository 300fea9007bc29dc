//! `mechinterp sae encode --sae DIR --acts IN.safetensors --out OUT.safetensors`: an SAE's
//! latents and output for stored activations.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use mechinterp::sae::Sae;
use mechinterp::LoadOptions;

/// Arguments of `sae encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// The SAE or transcoder (any format `mechinterp sae info` reads).
    #[arg(long)]
    pub sae: PathBuf,
    /// Activations: a safetensors file whose tensor `acts` (or only tensor) is [n, d_in].
    #[arg(long)]
    pub acts: PathBuf,
    /// Where to write `feature_acts` [n, d_sae] and `output` [n, d_out] (the reconstruction,
    /// or a transcoder's output).
    #[arg(long)]
    pub out: PathBuf,
}

/// Encodes and writes the file.
pub fn run(args: EncodeArgs, out: &mut impl std::io::Write) -> Result<()> {
    let device = LoadOptions::from_env()?.device;
    let sae = Sae::load(&args.sae)?.to_device(&device)?;
    let acts = read_acts(&args.acts)?.to_device(&device)?;
    if acts.rank() != 2 || acts.dim(1)? != sae.d_in() {
        bail!(
            "{}: the activations have shape {:?}, but this SAE (at `{}`) reads [n, {}]",
            args.acts.display(),
            acts.dims(),
            sae.hook_name(),
            sae.d_in()
        );
    }
    let feature_acts = sae.encode(&acts)?;
    let output = sae.forward(&acts)?;
    let mut t = HashMap::new();
    t.insert(
        "feature_acts".to_string(),
        feature_acts.to_device(&Device::Cpu)?,
    );
    t.insert("output".to_string(), output.to_device(&Device::Cpu)?);
    candle_core::safetensors::save(&t, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(
        out,
        "{}: {} rows → feature_acts [{}, {}], output [{}, {}]",
        args.out.display(),
        acts.dim(0)?,
        acts.dim(0)?,
        sae.d_sae(),
        acts.dim(0)?,
        sae.d_out()
    )?;
    Ok(())
}

/// The tensor `acts`, or the file's only tensor, as f32.
fn read_acts(path: &std::path::Path) -> Result<Tensor> {
    let mut t = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let x = match t.remove("acts") {
        Some(x) => x,
        None if t.len() == 1 => t.into_values().next().context("empty file")?,
        None => {
            let mut names: Vec<String> = t.into_keys().collect();
            names.sort();
            bail!(
                "{} has no tensor `acts` and more than one tensor ({}): name the activations `acts`",
                path.display(),
                names.join(", ")
            )
        }
    };
    Ok(x.to_dtype(DType::F32)?)
}
