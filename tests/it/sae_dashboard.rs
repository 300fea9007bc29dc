//! Feature dashboards on the default model with an in-memory SAE at `blocks.6.hook_resid_post`:
//! the top contexts are the largest activations of a direct encode of each text's cache, the
//! histogram and density count the firing tokens, the output tokens are the top of
//! `W_dec · diag(ln_final) · W_U` computed here independently, and the page is offline HTML
//! with well-formed SVG (set MECHINTERP_DASHBOARD_DUMP=dir to keep it).

use candle_core::{DType, Device, IndexOp, Tensor};
use mechinterp::prelude::*;
use mechinterp::report::dashboard_html::dashboard_page;
use mechinterp::sae::dashboard::{dashboard, DashboardOptions, Dashboards};
use mechinterp::sae::{Architecture, Format, Normalization, Sae, SaeConfig, SaeWeights};

const HOOK: &str = "blocks.6.hook_resid_post";
const D_IN: usize = 640;
const D_SAE: usize = 48;
const LATENTS: [usize; 3] = [0, 7, 31];

/// Deterministic values in [-1, 1) (a linear congruential generator), so the test needs no
/// seeded RNG.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A ReLU SAE with random encoder directions and thresholds spread so that the latents fire
/// on anything from most tokens to a few.
fn sae() -> Sae {
    let dev = Device::Cpu;
    let scale = 1.0 / (D_IN as f32).sqrt();
    let w_enc: Vec<f32> = noise(D_IN * D_SAE, 1).iter().map(|v| v * scale).collect();
    let b_enc: Vec<f32> = (0..D_SAE).map(|i| -(i as f32) * 0.05).collect();
    let w_dec: Vec<f32> = noise(D_SAE * D_IN, 2).iter().map(|v| v * scale).collect();
    let cfg = SaeConfig {
        architecture: Architecture::Standard,
        d_in: D_IN,
        d_sae: D_SAE,
        d_out: D_IN,
        hook_name: HOOK.into(),
        hook_name_out: HOOK.into(),
        k: None,
        rescale_acts_by_decoder_norm: false,
        normalize_activations: Normalization::None,
        apply_b_dec_to_input: false,
        model_name: None,
        context_size: None,
        exclude_special_tokens: None,
        format: Format::InMemory,
        metadata: serde_json::Value::Null,
    };
    let w = SaeWeights {
        w_enc: Tensor::from_vec(w_enc, (D_IN, D_SAE), &dev).unwrap(),
        b_enc: Some(Tensor::from_vec(b_enc, D_SAE, &dev).unwrap()),
        w_dec: Tensor::from_vec(w_dec, (D_SAE, D_IN), &dev).unwrap(),
        b_dec: Tensor::zeros(D_IN, DType::F32, &dev).unwrap(),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    Sae::new(cfg, w).unwrap()
}

/// A few dozen short texts: both sides of the first EN→FR pairs.
fn texts() -> Vec<String> {
    let tsv = std::fs::read_to_string(crate::common::repo().join("data/en-fr.tsv")).unwrap();
    tsv.lines()
        .take(20)
        .flat_map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Each text's latent activations [position][latent] from its own unbatched forward pass.
fn direct_acts(model: &HookedTransformer, sae: &Sae, texts: &[String]) -> Vec<Vec<Vec<f32>>> {
    texts
        .iter()
        .map(|t| {
            let toks = model.to_tokens(t).unwrap();
            let filter = |n: &str| n == HOOK;
            let out = model.pass(&toks).cache(&filter).no_logits().run().unwrap();
            let x = out.cache.get(HOOK).unwrap().i(0).unwrap();
            sae.encode(&x).unwrap().to_vec2::<f32>().unwrap()
        })
        .collect()
}

fn run(opts: &DashboardOptions) -> (Dashboards, Vec<String>, Sae) {
    let model = crate::common::gemma();
    let sae = sae();
    let texts = texts();
    let d = dashboard(model, &sae, &LATENTS, &texts, opts).unwrap();
    (d, texts, sae)
}

#[test]
fn top_contexts_histogram_and_density_match_a_direct_encode() {
    let model = crate::common::gemma();
    // Several batches of texts of different lengths (right-padded).
    let opts = DashboardOptions {
        batch_size: 7,
        window: 3,
        ..DashboardOptions::default()
    };
    let (d, texts, sae) = run(&opts);
    let direct = direct_acts(model, &sae, &texts);
    let n_tokens: usize = direct.iter().map(|a| a.len() - 1).sum();
    assert_eq!(d.n_tokens, n_tokens, "every token but BOS is read");
    assert_eq!(d.dashboards.len(), LATENTS.len());
    let mut fired = 0;
    for (j, &l) in LATENTS.iter().enumerate() {
        let dash = &d.dashboards[j];
        assert_eq!(dash.latent, l);
        // Every (text, position, act) past BOS, largest first.
        let mut all: Vec<(f32, usize, usize)> = direct
            .iter()
            .enumerate()
            .flat_map(|(t, a)| (1..a.len()).map(move |p| (a[p][l], t, p)))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let firing: Vec<f32> = all.iter().map(|x| x.0).filter(|&v| v != 0.0).collect();
        assert_eq!(dash.n_firing, firing.len(), "latent {l}: firing tokens");
        assert!((dash.density - firing.len() as f64 / n_tokens as f64).abs() < 1e-12);
        assert_eq!(
            dash.histogram.counts.iter().sum::<usize>(),
            dash.n_firing,
            "latent {l}: histogram counts"
        );
        let bins = if dash.n_firing > 0 { opts.n_bins } else { 0 };
        assert_eq!(dash.histogram.counts.len(), bins);
        // The expected contexts: the largest activations, the same tokens up to the maximum
        // with the same activation kept once.
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.encode(t).unwrap()).collect();
        let mut expected: Vec<(f32, Vec<u32>)> = Vec::new();
        for &(a, t, p) in all.iter().filter(|x| x.0 > 0.0) {
            let win = ids[t][p.saturating_sub(opts.window).max(1)..=p].to_vec();
            if !expected
                .iter()
                .any(|(b, w)| *w == win && (a - b).abs() <= 1e-5 * a)
            {
                expected.push((a, win));
            }
            if expected.len() == opts.n_top {
                break;
            }
        }
        let want_top = expected.len();
        assert_eq!(dash.top.len(), want_top, "latent {l}: contexts");
        if want_top > 0 {
            fired += 1;
            let max = firing[0];
            assert!((dash.max_act - max).abs() <= 1e-4 * max.abs().max(1.0));
            let lo = dash.histogram.edges[0];
            let hi = *dash.histogram.edges.last().unwrap();
            let min = firing.iter().copied().fold(f32::INFINITY, f32::min);
            assert!((lo - min).abs() <= 1e-4 * max && (hi - max).abs() <= 1e-4 * max);
        }
        for (rank, c) in dash.top.iter().enumerate() {
            let want = expected[rank].0;
            let tol = 1e-4 * all[0].0.abs().max(1.0);
            assert!(
                (c.act - want).abs() <= tol,
                "latent {l}: context {rank} has {}, the direct encode's {rank}-th largest is {want}",
                c.act
            );
            assert!(c.position >= 1, "BOS is never a context's maximum");
            // The window is the text's own tokens and activations around the maximum.
            let a = &direct[c.text];
            let ids = model.encode(&texts[c.text]).unwrap();
            assert!((a[c.position][l] - c.act).abs() <= tol);
            let start = c.position - c.centre;
            assert!(start >= 1 && c.centre <= opts.window);
            assert!(c.ids.len() <= 2 * opts.window + 1);
            assert_eq!(c.ids, ids[start..start + c.ids.len()].to_vec());
            assert_eq!(c.tokens.len(), c.ids.len());
            for (k, &v) in c.acts.iter().enumerate() {
                assert!((v - a[start + k][l]).abs() <= tol);
            }
        }
        for w in dash.top.windows(2) {
            assert!(w[0].act >= w[1].act, "contexts are sorted, highest first");
        }
    }
    assert!(
        fired >= 2,
        "the test SAE should fire on most of its latents"
    );
}

#[test]
fn a_topk_sae_is_read_through_its_whole_encoder() {
    // TopK ranks every latent, so the pass cannot cut the SAE down to the latents shown.
    let model = crate::common::gemma();
    let base = sae();
    let mut cfg = base.cfg().clone();
    cfg.architecture = Architecture::TopK;
    cfg.k = Some(4);
    let topk = Sae::new(cfg, base.weights().clone()).unwrap();
    let texts: Vec<String> = texts().into_iter().take(10).collect();
    let d = dashboard(model, &topk, &LATENTS, &texts, &DashboardOptions::default()).unwrap();
    let direct = direct_acts(model, &topk, &texts);
    for (j, &l) in LATENTS.iter().enumerate() {
        let vals: Vec<f32> = direct
            .iter()
            .flat_map(|a| a[1..].iter().map(move |r| r[l]))
            .collect();
        let firing = vals.iter().filter(|&&v| v != 0.0).count();
        let max = vals.iter().copied().fold(0f32, f32::max);
        assert_eq!(d.dashboards[j].n_firing, firing, "latent {l}");
        assert!((d.dashboards[j].max_act - max).abs() <= 1e-4 * max.max(1.0));
    }
}

#[test]
fn sae_dashboard_reads_a_corpus_as_the_function_does() {
    use mechinterp::corpus::{Corpus, Doc};
    let model = crate::common::gemma();
    let sae = sae();
    let texts: Vec<String> = texts().into_iter().take(6).collect();
    let corpus = Corpus::new(
        texts
            .iter()
            .map(|t| Doc {
                lang: None,
                text: t.clone(),
            })
            .collect(),
    );
    let a = sae.dashboard(model, &[1, 5], corpus.texts()).unwrap();
    let b = dashboard(model, &sae, &[1, 5], &texts, &DashboardOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.n_texts, 6);
}

#[test]
fn long_texts_are_cut_into_contexts_that_each_start_with_bos() {
    let model = crate::common::gemma();
    let opts = DashboardOptions {
        context_len: 6,
        window: 2,
        ..DashboardOptions::default()
    };
    let (d, texts, _) = run(&opts);
    let n_tokens: usize = texts
        .iter()
        .map(|t| model.encode(t).unwrap().len() - 1)
        .sum();
    assert_eq!(d.n_tokens, n_tokens, "cutting loses no token and adds none");
    for dash in &d.dashboards {
        for c in &dash.top {
            // Positions are the text's own, past the chunk's BOS, and a window stays in its chunk.
            let ids = model.encode(&texts[c.text]).unwrap();
            let start = c.position - c.centre;
            assert_eq!(c.ids, ids[start..start + c.ids.len()].to_vec());
            assert!(c.ids.len() < opts.context_len);
            assert_eq!((start - 1) / 5, (start + c.ids.len() - 2) / 5);
        }
    }
}

#[test]
fn boosted_and_suppressed_tokens_are_the_top_of_w_dec_through_the_unembedding() {
    let model = crate::common::gemma();
    let (d, _, sae) = run(&DashboardOptions {
        max_tokens: Some(40),
        ..DashboardOptions::default()
    });
    assert!(d.n_tokens <= 40);
    let u = model
        .unembed()
        .dense()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap(); // [V, d]
    let ln = model.weights().ln_final.to_dtype(DType::F32).unwrap();
    for dash in &d.dashboards {
        let dir = sae.w_dec().i(dash.latent).unwrap().mul(&ln).unwrap();
        let logits: Vec<f32> = u
            .matmul(&dir.unsqueeze(1).unwrap())
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = logits.iter().map(|&v| v as f64).sum::<f64>() / logits.len() as f64;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let n = dash.boosted.len();
        assert_eq!(n, 10);
        let scale = logits[order[0]].abs().max(1e-6);
        for (k, e) in dash.boosted.iter().enumerate() {
            let want = order[k];
            assert!(
                e.id as usize == want
                    || (logits[e.id as usize] - logits[want]).abs() <= 1e-5 * scale,
                "latent {}: boosted #{k} is {} ({:?}), expected {want}",
                dash.latent,
                e.id,
                e.token
            );
            assert!(
                (e.value as f64 - (logits[e.id as usize] as f64 - mean)).abs()
                    <= 1e-4 * scale as f64
            );
        }
        for (k, e) in dash.suppressed.iter().enumerate() {
            let want = order[order.len() - 1 - k];
            assert!(
                e.id as usize == want
                    || (logits[e.id as usize] - logits[want]).abs() <= 1e-5 * scale,
                "latent {}: suppressed #{k} is {}, expected {want}",
                dash.latent,
                e.id
            );
        }
        assert!(dash.boosted[0].value > 0.0 && dash.suppressed[0].value < 0.0);
    }
}

#[test]
fn the_page_is_offline_html_with_well_formed_svg() {
    let (d, _, _) = run(&DashboardOptions {
        max_tokens: Some(120),
        ..DashboardOptions::default()
    });
    let page = dashboard_page(&d, "test <dashboard>").unwrap();
    // MECHINTERP_DASHBOARD_DUMP=dir keeps the page (for scripts/dashboard_screenshot.sh).
    if let Ok(dir) = std::env::var("MECHINTERP_DASHBOARD_DUMP") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join("dashboard.html"), &page).unwrap();
    }
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(
        page.contains("test &lt;dashboard&gt;"),
        "the title is escaped"
    );
    assert_eq!(
        page.matches("<section class=\"latent\"").count(),
        LATENTS.len()
    );
    for l in LATENTS {
        assert!(page.contains(&format!("id=\"mi-sae-latent-{l}\"")));
    }
    for tag in [
        "div", "section", "table", "tr", "td", "span", "svg", "style", "h3", "h4",
    ] {
        let open =
            page.matches(&format!("<{tag}>")).count() + page.matches(&format!("<{tag} ")).count();
        let close = page.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
    // Nothing is fetched: the only URL is the SVG namespace, which is a name, not a resource.
    let stripped = page.replace("http://www.w3.org/2000/svg", "");
    assert!(!stripped.contains("http://") && !stripped.contains("https://"));
    for bad in ["<script", "<link", "@import", "url(", " src="] {
        assert!(!page.contains(bad), "the page contains `{bad}`");
    }
    // The page (and so the fragment the notebook shows) is even well-formed XML.
    let doc = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the page parses as XML");
    let cards = doc
        .descendants()
        .filter(|n| n.has_tag_name("section") && n.attribute("class") == Some("latent"))
        .count();
    assert_eq!(cards, LATENTS.len());
    let fired = d.dashboards.iter().filter(|x| x.n_firing > 0).count();
    assert_eq!(page.matches("<svg").count(), fired);
    // Each histogram is well-formed SVG whose bins carry their counts on hover.
    for dash in d.dashboards.iter().filter(|x| x.n_firing > 0) {
        let fig = dash.histogram_figure().unwrap();
        let doc = roxmltree::Document::parse(fig.svg()).expect("histogram SVG parses");
        let bins = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bin"))
            .count();
        assert_eq!(
            bins,
            dash.histogram.counts.iter().filter(|&&c| c > 0).count()
        );
        // The notebook fragment holds the same card.
        let html = dash.html().unwrap();
        assert!(html.contains(&format!("data-latent=\"{}\"", dash.latent)));
    }
}

#[test]
fn bad_requests_are_refused_by_name() {
    let model = crate::common::gemma();
    let sae = sae();
    let texts = ["Hello world."];
    let opts = DashboardOptions::default();
    let e = dashboard(model, &sae, &[D_SAE], texts, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("latent {D_SAE}")) && e.contains("48 latents"),
        "{e}"
    );
    let e = dashboard(model, &sae, &[3, 3], texts, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("latent 3") && e.contains("twice"), "{e}");
    let e = dashboard(model, &sae, &[1], &[] as &[&str], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let e = dashboard(model, &sae, &[], texts, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one latent"), "{e}");
    // An SAE for another model's width at this hook.
    let mut cfg = sae.cfg().clone();
    let (d_in, n) = (64, 4);
    cfg.d_in = d_in;
    cfg.d_out = d_in;
    cfg.d_sae = n;
    let dev = Device::Cpu;
    let w = SaeWeights {
        w_enc: Tensor::zeros((d_in, n), DType::F32, &dev).unwrap(),
        b_enc: Some(Tensor::zeros(n, DType::F32, &dev).unwrap()),
        w_dec: Tensor::zeros((n, d_in), DType::F32, &dev).unwrap(),
        b_dec: Tensor::zeros(d_in, DType::F32, &dev).unwrap(),
        threshold: None,
        b_gate: None,
        r_mag: None,
        b_mag: None,
        w_skip: None,
    };
    let narrow = Sae::new(cfg.clone(), w.clone()).unwrap();
    let e = dashboard(model, &narrow, &[0], texts, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_in = 64") && e.contains(HOOK), "{e}");
    cfg.hook_name = "blocks.60.hook_resid_post".into();
    let far = Sae::new(cfg, w).unwrap();
    assert!(dashboard(model, &far, &[0], texts, &opts).is_err());
}
