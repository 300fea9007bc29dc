//! Writes every chart type to `target/plots/` (SVG, plus PNG where `rsvg-convert` exists) so a
//! person can look at them: real data from the default model where it matters.
//!
//! `cargo run --release --example plots`

use mechinterp::prelude::*;

fn main() -> Result<()> {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots");
    std::fs::create_dir_all(&out).map_err(|e| Error::io("creating target/plots", e))?;
    let save = |name: &str, f: &Figure| -> Result<()> {
        f.save_svg(out.join(format!("{name}.svg")))?;
        if let Err(e) = f.save_png(out.join(format!("{name}.png"))) {
            eprintln!("{name}: no PNG ({e})");
        }
        println!("wrote {}", out.join(format!("{name}.svg")).display());
        Ok(())
    };
    let model = HookedTransformer::gemma3_270m()?;

    // Attention pattern with non-Latin tokens, one head and a grid of heads.
    let text = "EN: I like green apples. JA: 私は青りんごが好きです。 AR: أحب التفاح الأخضر";
    let toks = model.to_tokens(text)?;
    let strs = model.to_str_tokens(text)?;
    let (_, cache) = model.run_with_cache(&toks)?;
    let pattern = cache.pattern(5)?;
    save(
        "attention_head",
        &attention_pattern(&strs, &pattern.get(0)?.get(2)?)?
            .title("layer 5, head 2")
            .render()?,
    )?;
    let names: Vec<String> = (0..4).map(|h| format!("L5H{h}")).collect();
    save(
        "attention_grid",
        &attention_grid(&strs, &pattern, &names)?
            .title("layer 5")
            .render()?,
    )?;
    attention_view_with(&strs, &pattern, Some((2, 12)), "layer 5")?
        .save_html(out.join("attention_view.html"))?;

    // Patching heatmap, multi-panel with a shared scale, scatter.
    let clean = "When Mary and John went to the store, John gave a drink to";
    let corrupt = "When Mary and John went to the store, Mary gave a drink to";
    let p = Patcher::new(
        &model,
        clean,
        corrupt,
        LogitDiff::from_strs(&model, " Mary", " John")?,
    )?;
    let heads = p.activation(PatchTarget::HeadOut, Direction::Denoise)?;
    save("patch_heads", &heads.render()?)?;
    let resid = p.activation(PatchTarget::ResidPre, Direction::Denoise)?;
    save("patch_resid", &resid.render()?)?;
    let noise = p.activation(PatchTarget::HeadOut, Direction::Noise)?;
    let a = heads.normalized().heatmap()?.title("denoise");
    let b = noise.normalized().heatmap()?.title("noise");
    let diff = Table::from_values(
        "difference",
        vec![a.rows.clone(), a.cols.clone()],
        a.values.iter().zip(&b.values).map(|(x, y)| x - y).collect(),
    )?;
    let panels = Panels::new(vec![a, b, diff.heatmap()?.title("denoise − noise")])
        .title("head-out patching, normalized");
    save("panels", &panels.render()?)?;
    let attr = p.attribution(Direction::Denoise)?;
    save("scatter", &attr.agreement(&heads)?.scatter().render()?)?;

    // Logit lens lines and heatmap, DLA bars.
    let prompt = "The Eiffel Tower is in the city of";
    let lens = LogitLens::new(&model, prompt)?;
    let paris = mechinterp::metrics::single_token(&model, " Paris")?;
    let rome = mechinterp::metrics::single_token(&model, " Rome")?;
    let london = mechinterp::metrics::single_token(&model, " London")?;
    save(
        "lens_lines",
        &lens
            .probs(lens.n_positions() - 1, &[paris, rome, london])?
            .lines()?
            .render()?,
    )?;
    save("lens_heatmap", &lens.render()?)?;
    let (_, c2) = model.run_with_cache(&model.to_tokens(prompt)?)?;
    save(
        "dla_bars",
        &direct_logit_attribution(&model, &c2, paris, rome, None)?.render()?,
    )?;
    Ok(())
}
