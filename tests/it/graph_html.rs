//! A graph you explore (issue 25, item 5): the offline page draws every node of a known graph
//! (circuit-tracer's own `capital` graph, from the fixtures: no model needed) and answers a
//! click, checked in headless Chromium where it is installed (structurally everywhere); the
//! notebook SVG draws the same nodes; `load_transcoders` reads both folder layouts and refuses
//! duplicate or missing layers by name; `--target` attributes exactly the named token, as
//! circuit-tracer's `attribution_targets` does; and `mechinterp graph` writes its three files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use mechinterp::graph::{
    attribute, load_transcoders, prune, AttributionOptions, Graph, Transcoders,
};
use mechinterp::plot::GraphPlot;
use mechinterp::report::graph_html::GraphPage;
use mechinterp::sae::{Architecture, Format, Normalization, Sae, SaeConfig, SaeWeights};

fn fixtures() -> PathBuf {
    crate::common::repo().join("tests/fixtures/graph")
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// circuit-tracer's unpruned graph of "The capital of France is", as a [`Graph`].
fn capital() -> Graph {
    let t = candle_core::safetensors::load(fixtures().join("capital.safetensors"), &Device::Cpu)
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("capital.json")).unwrap())
            .unwrap();
    let strs = |k: &str| -> Vec<String> {
        meta[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let af: Vec<Vec<i64>> = t["active_features"].to_vec2().unwrap();
    let to_u32 = |v: Vec<i64>| v.into_iter().map(|x| x as u32).collect::<Vec<u32>>();
    Graph {
        input_string: meta["prompt"].as_str().unwrap().to_string(),
        input_tokens: to_u32(ints(&t["input_tokens"])),
        input_token_strs: strs("input_token_strings"),
        active_features: af.iter().map(|r| [r[0], r[1], r[2]]).collect(),
        activation_values: t["activation_values"].to_vec1().unwrap(),
        selected_features: ints(&t["selected_features"]),
        logit_tokens: to_u32(ints(&t["logit_tokens"])),
        logit_token_strs: strs("logit_token_strings"),
        logit_probabilities: t["logit_probabilities"].to_vec1().unwrap(),
        adjacency: t["adjacency_matrix"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
        n_layers: 18,
        vocab_size: 262_144,
    }
}

/// The node ids of a `graph.json` document, sorted (circuit-tracer's ids can repeat: a layer-0
/// feature `0_F_P` and the error node `0_L_P` of layer L = F).
fn json_ids(doc: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every `data-id` of a drawn node element (`<g class="node …" data-id="…">`), sorted.
fn drawn_ids(dom: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"<g class="node [a-z ]+" data-id="([^"]+)""#).unwrap();
    let mut ids: Vec<String> = re.captures_iter(dom).map(|c| c[1].to_string()).collect();
    ids.sort();
    ids
}

fn has_chromium() -> bool {
    Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The DOM headless Chromium built from `page` opened at `#fragment`.
fn chromium_dom(page: &Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}#{fragment}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_page_draws_every_node_and_answers_a_click() {
    let g = capital();
    let pruned = prune(&g, 0.8, 0.98).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&g.to_json("capital", "fixture", 0.8, 0.98).unwrap()).unwrap();
    let want = json_ids(&doc);
    assert_eq!(
        want.len(),
        69,
        "circuit-tracer keeps 69 nodes of this graph"
    );

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("graph.html");
    GraphPage::new(&g, &pruned)
        .title("capital")
        .note("fixture")
        .write(&page)
        .unwrap();
    let html = std::fs::read_to_string(&page).unwrap();

    // Offline: nothing is loaded from anywhere (the SVG namespace is a name, not a fetch).
    for bad in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "<link",
        "@import",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(!html.contains(bad), "the page holds `{bad}`");
    }
    // The data the script draws from holds every node of graph.json.
    let start = html.find("id=\"graph-data\">").unwrap() + "id=\"graph-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    let mut ids: Vec<String> = data["view"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, want);
    assert_eq!(
        data["view"]["edges"].as_array().unwrap().len(),
        doc["links"].as_array().unwrap().len()
    );

    if !has_chromium() {
        eprintln!(
            "chromium is not on PATH: skipped the browser part (the page was checked structurally)"
        );
        return;
    }
    // A feature deep in the graph and the top logit: each click pins it and lights its paths.
    let logit = format!("19_{}_5", g.logit_tokens[0]);
    let feature = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["feature_type"] == "cross layer transcoder" && n["layer"] == "7")
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .unwrap();
    let count = regex::Regex::new(r#"data-highlighted-edges="(\d+)""#).unwrap();
    let hl = regex::Regex::new(r#"class="edge( weak)? hl""#).unwrap();
    for (pin, kind) in [(logit.as_str(), "logit"), (feature.as_str(), "feature")] {
        let dom = chromium_dom(&page, &format!("pin={pin}"));
        assert_eq!(drawn_ids(&dom), want, "every node of graph.json is drawn");
        assert!(
            dom.contains(&format!(
                "<g class=\"node {kind} pinned\" data-id=\"{pin}\""
            )),
            "the click on {pin} pinned it"
        );
        assert!(dom.contains(&format!("data-pinned=\"{pin}\"")));
        let n: usize = count.captures(&dom).unwrap()[1].parse().unwrap();
        assert!(n > 0, "a pinned node lights up its strongest paths");
        assert_eq!(hl.find_iter(&dom).count(), n, "{pin}");
        assert!(
            dom.contains("id=\"pinned\"><h2>"),
            "the side panel shows it"
        );
    }
}

#[test]
fn the_notebook_svg_draws_the_same_nodes() {
    let g = capital();
    let pruned = prune(&g, 0.8, 0.98).unwrap();
    let plot = GraphPlot::new(&g, &pruned).unwrap().title("capital");
    let fig = plot.render().unwrap();
    let doc = roxmltree::Document::parse(fig.svg()).expect("the SVG is well-formed XML");
    let titles = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .count();
    assert_eq!(titles, 69, "one hover title per node");
    let paths = doc.descendants().filter(|n| n.has_tag_name("path")).count();
    assert_eq!(paths, 760);
    assert_eq!(plot.view().nodes.len(), 69);
    // Embeddings at the bottom, logits at the top, columns left to right by position.
    let v = plot.view();
    let y = |kind: &str| {
        v.nodes
            .iter()
            .filter(|n| format!("{:?}", n.kind).to_lowercase() == kind)
            .map(|n| n.y)
            .fold(f32::NAN, f32::max)
    };
    assert!(y("token") > y("feature") && y("feature") > y("logit"));
    assert!(v.columns.windows(2).all(|w| w[1].0 >= w[0].0 + w[0].1));
}

/// A small random transcoder for `layer` (d_model 8).
fn tiny_transcoder(layer: usize, seed: u64) -> Sae {
    let d = 8;
    let mut rng = mechinterp::stats::Rng::new(seed);
    let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gaussian() as f32).collect() };
    let cfg = SaeConfig {
        architecture: Architecture::Transcoder,
        d_in: d,
        d_sae: 4,
        d_out: d,
        hook_name: format!("blocks.{layer}.mlp.hook_in"),
        hook_name_out: format!("blocks.{layer}.hook_mlp_out"),
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: false,
        model_name: None,
        context_size: None,
        exclude_special_tokens: None,
        format: Format::InMemory,
        metadata: serde_json::json!({}),
    };
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &Device::Cpu).unwrap();
    let w = SaeWeights {
        w_enc: t(r(d * 4), &[d, 4]),
        b_enc: Some(t(r(4), &[4])),
        w_dec: t(r(4 * d), &[4, d]),
        b_dec: t(r(d), &[d]),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    Sae::new(cfg, w).unwrap()
}

#[test]
fn load_transcoders_reads_both_layouts_and_refuses_gaps_by_name() {
    // circuit-tracer's per-layer files.
    let ct = load_transcoders(&fixtures().join("transcoders")).unwrap();
    assert_eq!(ct.n_layers(), 18);
    let ct = ct.per_layer().expect("a per-layer set");
    assert_eq!(ct.saes()[5].hook_name(), "blocks.5.mlp.hook_in");

    // Cross-layer transcoders: circuit-tracer's folder, and Gemma Scope 2's per-layer files.
    for name in ["clt/ct", "clt/gs2"] {
        let clt = load_transcoders(&fixtures().join(name)).unwrap();
        assert!(clt.per_layer().is_none(), "{name}");
        assert_eq!(clt.n_layers(), 6, "{name}");
    }

    // SAELens folders under names that do not sort by layer: the hook names decide.
    let dir = tempfile::tempdir().unwrap();
    let names = ["zeta", "alpha", "mid"];
    for (l, name) in [(0usize, names[0]), (1, names[1]), (2, names[2])] {
        tiny_transcoder(l, 7 + l as u64)
            .save(dir.path().join(name))
            .unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not a transcoder").unwrap();
    let set = load_transcoders(dir.path()).unwrap();
    assert_eq!(set.n_layers(), 3);
    let set = set.per_layer().expect("a per-layer set");
    for l in 0..3 {
        let want = tiny_transcoder(l, 7 + l as u64);
        let got = &set.saes()[l];
        assert_eq!(got.hook_name(), format!("blocks.{l}.mlp.hook_in"));
        let (a, b): (Vec<f32>, Vec<f32>) = (
            got.w_enc().flatten_all().unwrap().to_vec1().unwrap(),
            want.w_enc().flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b, "layer {l}");
    }

    // A layer twice: both folders named.
    tiny_transcoder(1, 99)
        .save(dir.path().join("again"))
        .unwrap();
    let e = load_transcoders(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("layer 1 is given twice") && e.contains("alpha") && e.contains("again"),
        "{e}"
    );
    std::fs::remove_dir_all(dir.path().join("again")).unwrap();

    // A gap: the missing layer named, and the user's path.
    std::fs::remove_dir_all(dir.path().join("alpha")).unwrap();
    let e = load_transcoders(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("no transcoder for layer 1") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );

    // Nothing there, or nothing that is a transcoder.
    let e = load_transcoders(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("no such folder"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = load_transcoders(empty.path()).unwrap_err().to_string();
    assert!(e.contains("found neither"), "{e}");
}

#[test]
fn target_attributes_exactly_the_named_token() {
    let m = crate::common::gemma();
    let tc = load_transcoders(&fixtures().join("transcoders")).unwrap();
    let toks = m.encode("The capital of France is").unwrap();
    let full = attribute(m, &toks, &tc, &AttributionOptions::default()).unwrap();
    let paris = m.tokenizer().unwrap().encode(" Paris", false).unwrap()[0];
    let opts = AttributionOptions {
        targets: Some(vec![paris]),
        ..Default::default()
    };
    let one = attribute(m, &toks, &tc, &opts).unwrap();
    assert_eq!(one.logit_tokens, vec![paris]);
    let k = full.logit_tokens.iter().position(|&t| t == paris).unwrap();
    assert_eq!(one.logit_probabilities[0], full.logit_probabilities[k]);
    // Its row is the full graph's row for " Paris" (same features, errors and tokens).
    let (n1, nf) = (one.n_nodes(), full.n_nodes());
    let cols = nf - full.logit_tokens.len();
    let row_one = &one.adjacency[(n1 - 1) * n1..(n1 - 1) * n1 + cols];
    let at = full.logit_node(k);
    let row_full = &full.adjacency[at * nf..at * nf + cols];
    let scale = row_full.iter().fold(0f32, |a, x| a.max(x.abs()));
    for (a, b) in row_one.iter().zip(row_full) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
    // Out-of-vocabulary ids are refused by name.
    let bad = AttributionOptions {
        targets: Some(vec![u32::MAX]),
        ..Default::default()
    };
    let e = attribute(m, &toks, &tc, &bad).unwrap_err().to_string();
    assert!(e.contains(&u32::MAX.to_string()), "{e}");
}

#[test]
fn cli_graph_writes_json_safetensors_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("capital");
    let out = Command::new(env!("CARGO_BIN_EXE_mechinterp"))
        .args(["graph", "The capital of France is", "--transcoders"])
        .arg(fixtures().join("transcoders"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replacement 0.02"), "{stdout}");
    assert!(stdout.contains("→ 69 after pruning"), "{stdout}");
    assert!(stdout.contains("edges: 11329 → 760"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("graph.json")).unwrap())
            .unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 69);
    assert_eq!(doc["metadata"]["prompt_tokens"][2], " capital");
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(out_dir.join("graph.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(t["adjacency_matrix"].dims(), &[259, 259]);
    let html = std::fs::read_to_string(out_dir.join("graph.html")).unwrap();
    assert!(html.contains("id=\"graph-data\""));
}
