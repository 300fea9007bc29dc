//! Times the 72-head activation-patching sweep (head-out, denoising) of the default model on
//! an IOI-style prompt pair of about 40 tokens, and prints the strongest heads.
//!
//! `cargo run --release --example head_sweep`

use mechinterp::prelude::*;

const CLEAN: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to the small house by the river, John gave a warm drink to";
const CORRUPT: &str = "After a long and tiring day at the busy market in the old town, when Mary and John finally went back to the small house by the river, Mary gave a warm drink to";

fn main() -> Result<()> {
    let model = HookedTransformer::gemma3_270m()?;
    let metric = LogitDiff::from_strs(&model, " Mary", " John")?;
    let t0 = std::time::Instant::now();
    let p = Patcher::new(&model, CLEAN, CORRUPT, metric)?;
    let setup = t0.elapsed().as_secs_f64();
    println!(
        "{} tokens; clean {:.3}, corrupted {:.3} (setup {setup:.2} s)",
        p.str_tokens().len(),
        p.clean_value(),
        p.corrupted_value()
    );
    let t1 = std::time::Instant::now();
    let r = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
    let sweep = t1.elapsed().as_secs_f64();
    println!(
        "72-head sweep: {sweep:.2} s ({} patched runs)",
        r.table.values.len()
    );
    for (idx, v) in r.normalized().top_k(5) {
        println!("  L{}H{}: {v:.3}", idx[0], idx[1]);
    }
    Ok(())
}
