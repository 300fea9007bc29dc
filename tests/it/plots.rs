//! Every chart renders to well-formed SVG with the expected cells, points, bars and labels,
//! including Japanese, Chinese and Arabic tick labels; the attention viewer is self-contained;
//! and, from each SVG's geometry, every text lies on the canvas and no two texts overlap, for
//! every chart type at small and large sizes (set MECHINTERP_PLOT_DUMP=dir to keep the SVGs).

use candle_core::{Device, Tensor};
use mechinterp::prelude::*;

fn parse(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{}", &svg[..svg.len().min(500)]))
}

fn count_class(doc: &roxmltree::Document, class: &str) -> usize {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .count()
}

fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect()
}

#[test]
fn heatmap_has_cells_labels_colorbar_and_hover_values() {
    let t = Table::from_values(
        "patching",
        vec![
            Axis::numbered("layer", 3),
            Axis::labelled(
                "position",
                vec!["<bos>".into(), "猫".into(), "قط".into(), "狗 & co".into()],
            ),
        ],
        vec![
            0.1,
            -0.2,
            0.3,
            f32::NAN,
            0.5,
            0.6,
            -0.7,
            0.8,
            0.9,
            1.0,
            1.1,
            -1.2,
        ],
    )
    .unwrap();
    let fig = t.heatmap().unwrap().render().unwrap();
    let doc = parse(fig.svg());
    assert_eq!(count_class(&doc, "cell"), 11, "NaN cells stay blank");
    let labels = texts(&doc);
    for l in [
        "猫", "قط", "狗 & co", "<bos>", "layer", "position", "patching",
    ] {
        assert!(
            labels.iter().any(|x| x == l),
            "missing label {l:?} in {labels:?}"
        );
    }
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        titles.contains(&"layer: 2, position: 狗 & co = -1.2000"),
        "{titles:?}"
    );
    // Diverging map centred on 0: the colour bar runs from -1.2 to 1.2.
    assert!(
        labels.iter().any(|x| x == "1.20") && labels.iter().any(|x| x == "-1.20"),
        "{labels:?}"
    );
}

#[test]
fn panels_share_one_scale_in_one_svg() {
    let a = Heatmap::new(
        vec![0.0, 1.0, 2.0, 3.0],
        Axis::numbered("layer", 2),
        Axis::numbered("head", 2),
    )
    .unwrap()
    .title("Translation");
    let b = Heatmap::new(
        vec![0.0, 0.5, 0.5, 0.0],
        Axis::numbered("layer", 2),
        Axis::numbered("head", 2),
    )
    .unwrap()
    .title("Random");
    let c = Heatmap::new(
        vec![0.0, 0.5, 1.5, 3.0],
        Axis::numbered("layer", 2),
        Axis::numbered("head", 2),
    )
    .unwrap()
    .title("Diff");
    let fig = Panels::new(vec![a, b, c]).title("EN→FR").render().unwrap();
    let doc = parse(fig.svg());
    assert_eq!(
        doc.descendants().filter(|n| n.has_tag_name("svg")).count(),
        1
    );
    assert_eq!(count_class(&doc, "cell"), 12);
    let labels = texts(&doc);
    for l in ["Translation", "Random", "Diff", "EN→FR", "3.00", "-3.00"] {
        assert!(labels.iter().any(|x| x == l), "missing {l:?} in {labels:?}");
    }
    // The same value has the same colour in every panel (shared scale).
    let fill_of = |panel: &str, title_end: &str| {
        doc.descendants()
            .filter(|n| {
                n.attribute("class") == Some("cells") && n.attribute("data-panel") == Some(panel)
            })
            .flat_map(|g| g.children())
            .find(|r| {
                r.children()
                    .any(|t| t.text().is_some_and(|x| x.ends_with(title_end)))
            })
            .and_then(|r| r.attribute("fill"))
            .map(String::from)
    };
    assert_eq!(
        fill_of("0", "head: 0 = 0.0000"),
        fill_of("1", "head: 0 = 0.0000")
    );
}

#[test]
fn attention_patterns_blank_the_future() {
    let toks: Vec<String> = ["<bos>", "私", "は", "猫"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = Tensor::new(
        &[
            [1.0f32, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.2, 0.3, 0.5, 0.0],
            [0.1, 0.2, 0.3, 0.4],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let doc_src = attention_pattern(&toks, &p).unwrap().render().unwrap();
    let doc = parse(doc_src.svg());
    assert_eq!(count_class(&doc, "cell"), 10, "4·5/2 visible cells");
    assert!(texts(&doc).iter().any(|x| x == "猫 (3)"));
    let grid = attention_grid(
        &toks,
        &Tensor::stack(&[&p, &p, &p], 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        &["a".into(), "b".into(), "c".into()],
    )
    .unwrap();
    let g = grid.render().unwrap();
    assert_eq!(count_class(&parse(g.svg()), "cell"), 30);
    assert!(
        attention_pattern(&toks[..3], &p).is_err(),
        "token count must match"
    );
}

#[test]
fn line_scatter_and_bar_charts() {
    let x: Vec<String> = (0..5).map(|l| format!("{l}_pre")).collect();
    let lp = LinePlot::new(x)
        .series(" Paris", vec![0.0, 0.1, 0.4, 0.8, 0.9])
        .unwrap()
        .series(" Rome", vec![0.0, 0.05, 0.1, 0.05, 0.01])
        .unwrap()
        .labels("logit lens", "layer", "probability");
    let doc_s = lp.render().unwrap();
    let doc = parse(doc_s.svg());
    assert_eq!(count_class(&doc, "point"), 10);
    let t = texts(&doc);
    for l in [
        "Paris",
        "Rome",
        "logit lens",
        "layer",
        "probability",
        "3_pre",
    ] {
        assert!(t.iter().any(|x| x.trim() == l), "missing {l:?} in {t:?}");
    }
    assert!(LinePlot::new(vec!["a".into()])
        .series("s", vec![1.0, 2.0])
        .is_err());

    let sc = ScatterPlot::new(vec![
        ("L0H1".into(), 0.1, 0.12),
        ("L3H2".into(), -0.5, -0.4),
        ("L9H0".into(), 2.0, 1.8),
    ]);
    let s = sc.render().unwrap();
    let doc = parse(s.svg());
    assert_eq!(count_class(&doc, "point"), 3);
    assert!(doc
        .descendants()
        .any(|n| n.has_tag_name("title") && n.text() == Some("L3H2: (-0.5000, -0.4000)")));
    assert!(
        doc.descendants().any(|n| n.has_tag_name("polyline")
            || n.has_tag_name("line")
            || n.has_tag_name("path")),
        "y = x line"
    );

    let bars = BarChart::new(vec![
        ("embed".into(), 0.2),
        ("0_attn_out".into(), -1.0),
        ("0_mlp_out".into(), 3.0),
    ]);
    let b = bars.render().unwrap();
    let doc = parse(b.svg());
    assert_eq!(count_class(&doc, "bar"), 3);
    assert!(texts(&doc).iter().any(|x| x == "0_attn_out"));
}

#[test]
fn files_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = Table::from_values(
        "dla",
        vec![Axis::labelled("component", vec!["a".into(), "b".into()])],
        vec![1.0, -2.0],
    )
    .unwrap();
    let f = t1.render().unwrap();
    assert_eq!(count_class(&parse(f.svg()), "bar"), 2);
    let p = dir.path().join("x.svg");
    f.save_svg(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), f.svg());
    let t3 = Table::new(
        "by pos",
        vec![
            Axis::numbered("layer", 2),
            Axis::numbered("head", 2),
            Axis::numbered("position", 3),
        ],
    )
    .map(|_| 0.5);
    assert_eq!(count_class(&parse(t3.render().unwrap().svg()), "cell"), 12);
}

#[test]
fn attention_view_is_self_contained_html() {
    let toks: Vec<String> = ["<bos>", "EN", ":", " I", "</script>", "私"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = candle_nn::ops::softmax(
        &Tensor::randn(0f32, 1.0, (2, 6, 6), &Device::Cpu).unwrap(),
        2,
    )
    .unwrap();
    let h = attention_view(&toks, &p.unsqueeze(0).unwrap()).unwrap();
    let html = h.html();
    assert!(
        !html.contains("http://")
            && !html.contains("https://")
            && !html.contains("<link")
            && !html.contains("src="),
        "must not load anything"
    );
    assert_eq!(html.matches("<option").count(), 2, "one option per head");
    assert_eq!(
        html.matches("</script>").count(),
        1,
        "a token cannot end the script early"
    );
    let data = html
        .split("const data = ")
        .nth(1)
        .unwrap()
        .split(";\n")
        .next()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&data.replace("<\\/", "</")).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 6);
    assert_eq!(v["pattern"].as_array().unwrap().len(), 2);
    assert_eq!(v["pattern"][1][5].as_array().unwrap().len(), 6);
    // Two views in one notebook do not clash.
    let h2 = attention_view(&toks, &p).unwrap();
    let id = |s: &str| {
        s.split("id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(id(html), id(h2.html()));
    assert!(attention_view(&toks[..2], &p).is_err());
}

/// A text element's box in canvas pixels, from its position, anchor, baseline shift, font size
/// and rotation; the width is estimated generously (0.62 em per Latin character, 1 em for CJK).
#[derive(Debug)]
struct TextBox {
    text: String,
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

fn text_boxes(doc: &roxmltree::Document) -> Vec<TextBox> {
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| {
            let text = n.text()?.trim().to_string();
            if text.is_empty() {
                return None;
            }
            let fs = num(&n, "font-size").unwrap_or(12.0);
            let (x, y) = (num(&n, "x")?, num(&n, "y")?);
            let w: f64 = text
                .chars()
                .map(|c| if (c as u32) >= 0x2E80 { 1.0 } else { 0.62 })
                .sum::<f64>()
                * fs;
            let (a, b) = match n.attribute("text-anchor").unwrap_or("start") {
                "middle" => (x - w / 2.0, x + w / 2.0),
                "end" => (x - w, x),
                _ => (x, x + w),
            };
            let (c, d) = match n.attribute("dy").unwrap_or("") {
                "0.76em" => (y, y + fs),
                "0.5ex" => (y - fs / 2.0, y + fs / 2.0),
                "-0.5ex" => (y - fs, y),
                _ => (y - 0.8 * fs, y + 0.2 * fs),
            };
            let corners = [(a, c), (b, c), (a, d), (b, d)];
            let t = n.attribute("transform").unwrap_or("");
            let rotated: Vec<(f64, f64)> = if let Some(r) = t.strip_prefix("rotate(") {
                let v: Vec<f64> = r
                    .trim_end_matches(')')
                    .split(',')
                    .map(|p| p.trim().parse().unwrap())
                    .collect();
                let (ang, cx, cy) = (v[0].to_radians(), v[1], v[2]);
                corners
                    .iter()
                    .map(|&(px, py)| {
                        let (dx, dy) = (px - cx, py - cy);
                        (
                            cx + dx * ang.cos() - dy * ang.sin(),
                            cy + dx * ang.sin() + dy * ang.cos(),
                        )
                    })
                    .collect()
            } else {
                corners.to_vec()
            };
            let f = |g: fn(f64, f64) -> f64, i: usize| {
                rotated
                    .iter()
                    .map(|p| if i == 0 { p.0 } else { p.1 })
                    .reduce(g)
                    .unwrap()
            };
            Some(TextBox {
                text,
                x0: f(f64::min, 0),
                x1: f(f64::max, 0),
                y0: f(f64::min, 1),
                y1: f(f64::max, 1),
            })
        })
        .collect()
}

/// Every text lies inside the canvas, covers no cell, bar or point, and no two texts overlap
/// (a 1 px tolerance).
fn assert_clean(name: &str, svg: &str) {
    let doc = parse(svg);
    let root = doc.root_element();
    let px = |a: &str| {
        root.attribute(a)
            .and_then(|v| v.trim_end_matches("px").parse::<f64>().ok())
            .unwrap()
    };
    let (w, h) = (px("width"), px("height"));
    let boxes = text_boxes(&doc);
    assert!(!boxes.is_empty(), "{name}: no text");
    for b in &boxes {
        assert!(
            b.x0 >= -1.0 && b.y0 >= -1.0 && b.x1 <= w + 1.0 && b.y1 <= h + 1.0,
            "{name}: {:?} leaves the {w} × {h} canvas",
            b
        );
    }
    // Labels never cover the data: heatmap cells, bars and points (cell annotations excepted).
    let marks: Vec<(f64, f64, f64, f64)> = doc
        .descendants()
        .filter_map(|n| {
            let f = |a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
            match n.attribute("class") {
                Some("cell") | Some("bar") => {
                    let (x, y) = (f("x")?, f("y")?);
                    Some((x, y, x + f("width")?, y + f("height")?))
                }
                Some("point") => {
                    let (x, y, r) = (f("cx")?, f("cy")?, f("r")?);
                    Some((x - r, y - r, x + r, y + r))
                }
                _ => None,
            }
        })
        .collect();
    let annotations: Vec<String> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("annotation"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for b in boxes.iter().filter(|b| !annotations.contains(&b.text)) {
        for m in &marks {
            let overlap =
                b.x0 < m.2 - 1.0 && m.0 < b.x1 - 1.0 && b.y0 < m.3 - 1.0 && m.1 < b.y1 - 1.0;
            assert!(!overlap, "{name}: {b:?} covers a data mark at {m:?}");
        }
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let overlap =
                a.x0 < b.x1 - 1.0 && b.x0 < a.x1 - 1.0 && a.y0 < b.y1 - 1.0 && b.y0 < a.y1 - 1.0;
            assert!(!overlap, "{name}: {a:?} overlaps {b:?}");
        }
    }
}

fn long_title() -> String {
    "head outputs normalized logit diff ( Mary −  John) (denoise): clean 3.214, corrupted -2.876"
        .into()
}

fn heatmaps() -> Vec<(String, Heatmap)> {
    let patch: Vec<f32> = (0..72)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let tokens: Vec<String> =
        "<bos> EN : ▁I ▁like ▁green ▁apples . ▁FR : ▁J ' aime ▁les ▁pommes ▁vertes ."
            .split(' ')
            .map(String::from)
            .collect();
    let n = tokens.len();
    let lens: Vec<f32> = (0..6 * n).map(|i| (i % 7) as f32 / 7.0).collect();
    let mut out = vec![
        (
            "patching 18×4, long title".to_string(),
            Heatmap::new(
                patch.clone(),
                Axis::numbered("layer", 18),
                Axis::numbered("head", 4),
            )
            .unwrap()
            .title(long_title()),
        ),
        (
            "patching annotated".to_string(),
            Heatmap::new(
                patch,
                Axis::numbered("layer", 18),
                Axis::numbered("head", 4),
            )
            .unwrap()
            .title(long_title())
            .annotate_values(2)
            .value_label("Δ metric (estimate)"),
        ),
        (
            "token columns, annotated with tokens".to_string(),
            Heatmap::new(
                lens,
                Axis::numbered("layer", 6),
                Axis::labelled("position", tokens.clone()),
            )
            .unwrap()
            .title("logit lens")
            .annotate_text((0..6 * n).map(|i| tokens[i % n].clone()).collect())
            .unwrap(),
        ),
    ];
    let mut tiny = Heatmap::new(
        vec![0.5, -0.5],
        Axis::numbered("l", 1),
        Axis::numbered("h", 2),
    )
    .unwrap()
    .title(long_title())
    .annotate_values(3);
    tiny.cell = Some((6, 6));
    out.push(("tiny cells".into(), tiny));
    out
}

fn bar_labels(n: usize) -> Vec<(String, f32)> {
    let names = [
        "embed",
        "L0 attn",
        "L0 mlp",
        "L17 attn",
        "L17 mlp",
        "猫の手",
        "direct path",
    ];
    (0..n)
        .map(|i| {
            (
                format!("{} {i}", names[i % names.len()]),
                (i as f32 - n as f32 / 2.0) * 0.3,
            )
        })
        .collect()
}

#[test]
fn every_chart_keeps_its_text_on_the_canvas_without_overlaps() {
    let dump = std::env::var("MECHINTERP_PLOT_DUMP").ok();
    let mut figs: Vec<(String, Figure)> = Vec::new();
    for (name, h) in heatmaps() {
        figs.push((name.clone(), h.render().unwrap()));
        figs.push((
            format!("{name}, two panels with a figure title"),
            Panels::new(vec![h.clone(), h.title("second")])
                .title(long_title() + " " + &long_title())
                .render()
                .unwrap(),
        ));
    }
    for (w, h) in [(240u32, 200u32), (420, 300), (1400, 900)] {
        for n in [3usize, 14, 60] {
            figs.push((
                format!("bars {n} at {w}×{h}"),
                BarChart::new(bar_labels(n))
                    .labels(&long_title(), "component", "logit contribution")
                    .size(w, h)
                    .render()
                    .unwrap(),
            ));
            let x: Vec<String> = bar_labels(n).into_iter().map(|b| b.0).collect();
            figs.push((
                format!("lines {n} at {w}×{h}"),
                LinePlot::new(x)
                    .series("a", (0..n).map(|i| i as f32).collect())
                    .unwrap()
                    .series("b", (0..n).map(|i| (n - i) as f32).collect())
                    .unwrap()
                    .labels(&long_title(), "token", "logit")
                    .size(w, h)
                    .render()
                    .unwrap(),
            ));
        }
        figs.push((
            format!("scatter at {w}×{h}"),
            ScatterPlot::new(vec![("a".into(), 0.1, 0.2), ("b".into(), -3.0, 2.0)])
                .labels(
                    &long_title(),
                    "attribution estimate",
                    "activation patching change",
                )
                .size(w, h)
                .render()
                .unwrap(),
        ));
    }
    for (name, f) in &figs {
        if let Some(dir) = &dump {
            let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
            f.save_svg(format!("{dir}/{file}.svg")).unwrap();
        }
        assert_clean(name, f.svg());
    }
}

#[test]
fn annotations_pick_a_readable_colour() {
    let h = Heatmap::new(
        vec![-1.0, 0.0, 1.0],
        Axis::numbered("l", 1),
        Axis::numbered("h", 3),
    )
    .unwrap()
    .annotate_values(1);
    let fig = h.render().unwrap();
    let doc = parse(fig.svg());
    let ann: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("annotation"))
        .map(|n| {
            (
                n.text().unwrap().to_string(),
                n.attribute("fill").unwrap().to_string(),
            )
        })
        .collect();
    // Dark blue and dark red ends get white text, the pale middle black.
    assert_eq!(
        ann,
        vec![
            ("-1.0".to_string(), "#ffffff".to_string()),
            ("0.0".to_string(), "#000000".to_string()),
            ("1.0".to_string(), "#ffffff".to_string())
        ]
    );
    assert!(h.clone().annotate_text(vec!["x".into()]).is_err());
}
