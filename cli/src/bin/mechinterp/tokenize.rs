//! `mechinterp tokenize`: how a text is tokenized, and the model's BOS rule.

use std::io::Write;

use anyhow::Result;

use mechinterp_cli::args::ModelArgs;

/// Arguments of `tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// The text.
    text: String,
    #[command(flatten)]
    model: ModelArgs,
}

/// Prints one line per token: position, id and the token's text.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let m = a.model.load()?;
    let toks = m.to_tokens(&a.text)?;
    let ids = toks.squeeze(0)?.to_vec1::<u32>()?;
    let strs = m.to_str_tokens(&a.text)?;
    writeln!(out, "BOS: {}", m.bos_rule()?)?;
    for (i, (id, s)) in ids.iter().zip(strs).enumerate() {
        writeln!(out, "{i:>4}  {id:>8}  {s:?}")?;
    }
    Ok(())
}
