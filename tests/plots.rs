//! Every chart renders to well-formed SVG with the expected cells, points, bars and labels,
//! including Japanese, Chinese and Arabic tick labels; the attention viewer is self-contained.

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
