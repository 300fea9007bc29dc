//! `mechinterp fetch`: download the default model into the cache and verify it.

use std::io::Write;

use anyhow::Result;
use mechinterp::fetch::{fetch_default_model, FetchOptions};

/// Arguments of `fetch`.
#[derive(clap::Args)]
pub struct Args {
    /// Re-hash the cached file and fail if it is corrupt.
    #[arg(long)]
    verify: bool,
    /// Print only the path.
    #[arg(long, short)]
    quiet: bool,
}

/// Fetches (or finds) the default model and prints its path.
pub fn run(a: Args, out: &mut impl Write) -> Result<()> {
    let path = fetch_default_model(&FetchOptions {
        verify: a.verify,
        quiet: a.quiet,
        ..Default::default()
    })?;
    writeln!(out, "{}", path.display())?;
    Ok(())
}
