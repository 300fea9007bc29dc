//! `mechinterp attribute`: attribution patching, optionally checked against activation patching.

use std::io::Write;

use anyhow::Result;
use mechinterp::prelude::*;
use serde_json::json;

use mechinterp_cli::args::{write_json, PairArgs};

/// Arguments of `attribute`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    /// Also run activation patching of head-out and report the agreement.
    #[arg(long)]
    compare: bool,
}

/// One forward and backward; prints the head table and writes every component's estimate.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let p = a.pair.patcher()?;
    let dir: Direction = a.pair.direction.parse()?;
    let t0 = std::time::Instant::now();
    let attr = p.attribution(dir)?;
    writeln!(
        out,
        "base {:.4}; attribution in {:.2} s (estimated change of the metric)",
        attr.base_value,
        t0.elapsed().as_secs_f64()
    )?;
    write!(out, "{}", attr.head_out)?;
    let mut j = json!({
        "metric": attr.metric,
        "direction": dir.name(),
        "clean_value": p.clean_value(),
        "corrupted_value": p.corrupted_value(),
        "base_value": attr.base_value,
        "head_out": attr.head_out.to_json(),
        "resid_pre": attr.resid_pre.to_json(),
        "attn_out": attr.attn_out.to_json(),
        "mlp_out": attr.mlp_out.to_json(),
    });
    if a.compare {
        let act = p.activation(PatchTarget::HeadOut, dir)?;
        let ag = attr.agreement(&act)?;
        writeln!(
            out,
            "agreement with activation patching (head-out): pearson {:.3} over {} heads",
            ag.pearson, ag.n
        )?;
        j["agreement"] = json!({
            "pearson": ag.pearson,
            "points": ag.points.iter().map(|(l, e, a)| json!({"label": l, "estimate": e, "actual": a})).collect::<Vec<_>>(),
        });
    }
    write_json(&a.pair.json, &j)
}
