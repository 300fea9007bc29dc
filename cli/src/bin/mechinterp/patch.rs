//! `mechinterp patch`: activation patching between a clean and a corrupted prompt.

use std::io::Write;

use anyhow::Result;
use mechinterp::prelude::*;

use mechinterp_cli::args::{write_json, PairArgs};

/// Arguments of `patch`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    /// What to patch.
    #[arg(long, default_value = "head-out", value_parser = ["head-out", "head-q", "head-k", "head-v", "head-pattern", "resid-pre", "attn-out", "mlp-out"])]
    what: String,
    /// For head-out: one entry per head and position.
    #[arg(long)]
    by_pos: bool,
}

/// Patches every component of the chosen kind; prints the table and writes JSON.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let p = a.pair.patcher()?;
    let mut target: PatchTarget = a.what.parse()?;
    if a.by_pos {
        anyhow::ensure!(
            target == PatchTarget::HeadOut,
            "--by-pos applies to --what head-out"
        );
        target = PatchTarget::HeadOutByPos;
    }
    let t0 = std::time::Instant::now();
    let r = p.activation(target, a.pair.direction.parse()?)?;
    writeln!(
        out,
        "clean {:.4}, corrupted {:.4}; {} patched runs in {:.2} s",
        r.clean_value,
        r.corrupted_value,
        r.table.values.len(),
        t0.elapsed().as_secs_f64()
    )?;
    write!(out, "{}", r.table)?;
    write_json(&a.pair.json, &r.to_json())
}
