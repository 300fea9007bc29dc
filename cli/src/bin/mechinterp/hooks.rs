//! `mechinterp hooks`: the model's shape and every hook point with its shape.

use std::io::Write;

use anyhow::Result;

use mechinterp_cli::args::ModelArgs;

/// Arguments of `hooks`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

/// Prints the configuration line, then one line per hook point.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let m = a.model.load()?;
    let c = m.cfg();
    writeln!(
        out,
        "{}: {} layers, {} heads, {} kv heads, d_model {}, d_head {}, d_mlp {}, d_vocab {}",
        c.architecture,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.d_model,
        c.d_head,
        c.d_mlp,
        c.d_vocab
    )?;
    for p in m.hook_points() {
        writeln!(out, "{:<36} {}", p.name(), p.shape_doc())?;
    }
    Ok(())
}
