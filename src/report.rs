//! The main job written to disk: per direction a folder with `scores.json` and figures, and
//! one `report.md` over all directions. The numbers come from `translation::analyse_direction`.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::translation::{analyse_direction, DirectionResult, RunOptions};

pub mod dashboard_html;
pub mod graph_html;
mod json;
mod markdown;

pub use markdown::write_report;

/// Runs one direction and writes its folder.
pub fn run_direction(
    model: &HookedTransformer,
    src: &str,
    tgt: &str,
    opts: &RunOptions,
) -> Result<DirectionResult> {
    let result = analyse_direction(model, src, tgt, opts)?;
    write_direction(model, &result, opts)?;
    Ok(result)
}

fn write_direction(
    model: &HookedTransformer,
    r: &DirectionResult,
    opts: &RunOptions,
) -> Result<()> {
    let dir = opts.out.join(format!("{}-{}", r.src, r.tgt));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let title = format!(
        "{}→{}: attention on the diagonal ({} pairs)",
        r.src.to_uppercase(),
        r.tgt.to_uppercase(),
        r.n_pairs
    );
    let panels = r.scores.panels(&title)?;
    panels.render()?.save_svg(dir.join("heatmap.svg"))?;
    if let Some(p) = &r.path {
        p.importance
            .heatmap()?
            .title("path patching to logits (normalised drop)")
            .render()?
            .save_svg(dir.join("path_patching.svg"))?;
    }
    std::fs::write(
        dir.join("scores.json"),
        json::scores_json(model.cfg().n_heads, r, opts)?,
    )
    .map_err(|e| Error::io(format!("writing {}", dir.join("scores.json").display()), e))
}

/// Runs every direction and writes the report; returns the results and the report's path.
pub fn run(
    model: &HookedTransformer,
    opts: &RunOptions,
) -> Result<(Vec<DirectionResult>, PathBuf)> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::io(format!("creating {}", opts.out.display()), e))?;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (i, (s, t)) in opts.directions.iter().enumerate() {
        if !opts.score.quiet {
            eprintln!("[{}/{}] {s}→{t}", i + 1, opts.directions.len());
        }
        // One direction's failure is reported, not allowed to hide the others' results.
        match run_direction(model, s, t, opts) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{s}→{t} failed: {e}");
                failed.push((format!("{s}→{t}"), e.to_string()));
            }
        }
    }
    let p = write_report(&results, &failed, opts, t0.elapsed().as_secs_f64())?;
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(d, _)| d.as_str()).collect();
        return Err(Error::Invalid(format!(
            "{} of {} directions failed ({}); the causes are above and in {}",
            failed.len(),
            opts.directions.len(),
            names.join(", "),
            p.display()
        )));
    }
    Ok((results, p))
}
