//! Translation-head discovery: the original score and random pairing on hand-made inputs, the
//! data loader and filter, the statistics, and one end-to-end run on the default model.

use std::io::Write;

use crate::common::*;
use candle_core::IndexOp;
use mechinterp::prelude::*;
use mechinterp::report::run;
use mechinterp::translation::{
    benjamini_hochberg, clean_random_pairing, forced_prompt, head_stats, locate_target,
    random_pairing, random_pairing_indexed, score_pattern, try_ablation_check, try_path_ranking,
    CausalOptions,
};
use mechinterp::translation::{Method, RunOptions};

#[test]
fn diagonal_score_by_hand() {
    // 3 × 4 rectangle:
    //   1 2 3 4
    //   5 6 7 8
    //   9 10 11 12
    let r: Vec<f32> = (1..=12).map(|x| x as f32).collect();
    // main (1, 6, 11) = 6; +1 (2, 7, 12) = 7; −1 (5, 10) = 7.5; mean = 20.5 / 3.
    assert!((diagonal_score(&r, 3, 4, 1) - 20.5 / 3.0).abs() < 1e-6);
    assert!((diagonal_score(&r, 3, 4, 0) - 6.0).abs() < 1e-6);
    // bandwidth 2 adds +2 (3, 8) = 5.5 and −2 (9) = 9.
    assert!((diagonal_score(&r, 3, 4, 2) - (6.0 + 7.0 + 7.5 + 5.5 + 9.0) / 5.0).abs() < 1e-6);
}

#[test]
fn score_of_a_hand_built_pattern() {
    // 7 tokens: <bos> EN : a b FR : … with t = 5 (" FR"). A head that looks exactly one token
    // back from every target position onto the source diagonal.
    let s = 8;
    let mut p = vec![vec![0f32; s]; s];
    for (q, row) in p.iter_mut().enumerate() {
        row[0] = 1.0; // everything on BOS by default
        if q >= 5 {
            // crop row q−5 faces crop column q−5, i.e. key position q−4.
            row[0] = 0.0;
            row[q - 4] = 1.0;
        }
    }
    // crop = p[5.., 1..5] = 3 × 4 with ones on the main diagonal: main mean 1, ±1 means 0.
    assert!((score_pattern(&p, 5, 1) - 1.0 / 3.0).abs() < 1e-6);
    assert!((score_pattern(&p, 5, 0) - 1.0).abs() < 1e-6);
    assert_eq!(locate_target(&[2, 9, 1, 9, 5, 9, 3], 9, 3), Some(3));
    assert_eq!(locate_target(&[2, 9, 1], 9, 3), None);
}

#[test]
fn random_pairing_by_hand() {
    let pairs: Vec<SentencePair> = (0..5)
        .map(|i| SentencePair {
            src: format!("s{i}"),
            tgt: format!("t{i}"),
        })
        .collect();
    // Target lengths: t3 longest, then t1, t4, t0, t2.
    let lens = [3, 8, 1, 9, 5];
    let r = random_pairing(&pairs, &lens).unwrap();
    let got: Vec<(String, String)> = r.iter().map(|p| (p.src.clone(), p.tgt.clone())).collect();
    let want = [
        ("s3", "t1"),
        ("s1", "t4"),
        ("s4", "t3"),
        ("s0", "t2"),
        ("s2", "t0"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    // Even count: neighbours swap.
    let r = random_pairing(&pairs[..4], &lens[..4]).unwrap();
    let got: Vec<(String, String)> = r.iter().map(|p| (p.src.clone(), p.tgt.clone())).collect();
    assert_eq!(got[0], ("s3".into(), "t1".into()));
    assert_eq!(got[1], ("s1".into(), "t3".into()));
    assert_eq!(got[2], ("s0".into(), "t2".into()));
    assert!(
        r.iter().all(|p| p.src[1..] != p.tgt[1..]),
        "no pair keeps its own translation"
    );
    assert!(random_pairing(&pairs[..1], &lens[..1]).is_err());
}

#[test]
fn the_clean_random_control_never_pairs_a_possible_translation() {
    // t0 and t1 have the same text (a duplicate translation) and the same length, so the
    // original pairing swaps them: source 0 would get "its own" sentence back.
    let tgts = ["same text", "Same  text", "a b c d", "p q r s t"];
    let pairs: Vec<SentencePair> = tgts
        .iter()
        .enumerate()
        .map(|(i, t)| SentencePair {
            src: format!("s{i}"),
            tgt: t.to_string(),
        })
        .collect();
    let lens = [3, 3, 4, 5];
    let norm = |x: &str| {
        x.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let bad = |v: &[(usize, usize)]| {
        v.iter()
            .filter(|&&(s, t)| s == t || norm(&pairs[s].tgt) == norm(&pairs[t].tgt))
            .count()
    };
    let original = random_pairing_indexed(&pairs, &lens).unwrap();
    assert!(
        bad(&original) > 0,
        "the fixture must trip the original pairing: {original:?}"
    );
    let (clean, swaps) = clean_random_pairing(&pairs, &lens).unwrap();
    assert_eq!(bad(&clean), 0, "{clean:?}");
    assert!(swaps >= 1);
    // Still a pairing: every source once, every target once.
    let mut s: Vec<usize> = clean.iter().map(|p| p.0).collect();
    let mut t: Vec<usize> = clean.iter().map(|p| p.1).collect();
    s.sort_unstable();
    t.sort_unstable();
    assert_eq!(s, (0..4).collect::<Vec<_>>());
    assert_eq!(t, (0..4).collect::<Vec<_>>());
    // Clean data is left exactly as the original study paired it.
    let distinct: Vec<SentencePair> = (0..4)
        .map(|i| SentencePair {
            src: format!("s{i}"),
            tgt: format!("t{i}"),
        })
        .collect();
    let (c, n) = clean_random_pairing(&distinct, &lens).unwrap();
    assert_eq!(
        (c, n),
        (random_pairing_indexed(&distinct, &lens).unwrap(), 0)
    );
    // Nothing to pair with: refused by name.
    let same: Vec<SentencePair> = (0..3)
        .map(|i| SentencePair {
            src: format!("s{i}"),
            tgt: "one".into(),
        })
        .collect();
    let e = clean_random_pairing(&same, &[1, 1, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicates"), "{e}");
}

#[test]
fn loader_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("en_fr.tsv"),
        "I like green apples.\tJ'aime les pommes vertes.\n\nThe cat sleeps.\tLe chat dort.\n",
    )
    .unwrap();
    let p = mechinterp::translation::load_pairs(dir.path(), "en", "fr").unwrap();
    assert_eq!(p.len(), 2);
    let back = mechinterp::translation::load_pairs(dir.path(), "fr", "en").unwrap();
    assert_eq!(back[0].src, "J'aime les pommes vertes.");
    let mut f = std::fs::File::create(dir.path().join("en-de.tsv")).unwrap();
    writeln!(f, "Hello there friend.\tHallo Freund.\nno tab here").unwrap();
    let e = mechinterp::translation::load_pairs(dir.path(), "en", "de")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("en-de.tsv:2") && e.contains("no tab here"),
        "{e}"
    );
    let e = mechinterp::translation::load_pairs(dir.path(), "en", "ja")
        .unwrap_err()
        .to_string();
    assert!(e.contains("en-ja.tsv"), "{e}");

    let m = gemma();
    let raw = vec![
        SentencePair {
            src: "I have two cats.".into(),
            tgt: "J'ai deux chats.".into(),
        },
        SentencePair {
            src: "I have 2 cats.".into(),
            tgt: "J'ai 2 chats.".into(),
        },
        SentencePair {
            src: "A well-known fact.".into(),
            tgt: "Un fait connu.".into(),
        },
        SentencePair {
            src: "Hi.".into(),
            tgt: "Salut.".into(),
        },
        SentencePair {
            src: "The cat is sleeping on the sofa.".into(),
            tgt: "Le chat dort sur le canapé, et le chien aussi, comme toujours chaque après midi."
                .into(),
        },
        SentencePair {
            src: "私は猫が好き。".into(),
            tgt: "I like\u{3000}cats a lot.".into(),
        },
    ];
    let (kept, rep) = filter_pairs(m, &raw, "en", "fr").unwrap();
    assert_eq!(kept.len(), 1, "{rep:?}");
    assert_eq!(
        (rep.bad_chars, rep.word_count, rep.length_gap),
        (3, 1, 1),
        "digits, a hyphen and U+3000"
    );
    let (_, rep) = filter_pairs(m, &raw[5..], "ja", "en").unwrap();
    assert_eq!(rep.bad_chars, 1);
    // The shipped data: ≥ 150 pairs for every required direction, all loadable.
    let data = mechinterp::translation::shipped_data_dir();
    for d in [
        "en-fr", "en-de", "en-es", "en-ja", "en-ar", "en-zh", "zh-fr", "zh-de",
    ] {
        let (s, t) = d.split_once('-').unwrap();
        assert!(
            mechinterp::translation::load_pairs(&data, s, t)
                .unwrap()
                .len()
                >= 150,
            "{d}"
        );
    }
    // The Tatoeba files (`src_tgt.tsv`) load too.
    let tatoeba = crate::common::repo().join("../shared/data/tatoeba");
    assert_eq!(
        mechinterp::translation::load_pairs(&tatoeba, "zh", "fr")
            .unwrap()
            .len(),
        300
    );
}

#[test]
fn statistics_behave() {
    // BH by hand: p = [0.01, 0.04, 0.03, 0.5] → sorted 0.01, 0.03, 0.04, 0.5;
    // adjusted 0.04, 0.0533, 0.0533, 0.5.
    let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.5]);
    let want = [0.04, 0.053_333, 0.053_333, 0.5];
    for (a, b) in q.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{q:?}");
    }
    // Head 0 separates clearly, head 1 is the same in both groups.
    let t: Vec<Vec<f32>> = (0..30)
        .map(|i| vec![0.5 + 0.01 * (i % 5) as f32, 0.2 + 0.01 * (i % 3) as f32])
        .collect();
    let r: Vec<Vec<f32>> = (0..30)
        .map(|i| vec![0.1 + 0.01 * (i % 4) as f32, 0.2 + 0.01 * (i % 3) as f32])
        .collect();
    let s = head_stats(&t, &r, 500, 2000, 0.95, 1);
    assert!((s.p[0] - 1.0 / 2001.0).abs() < 1e-6, "{:?}", s.p);
    assert!(s.p[1] > 0.3, "{:?}", s.p);
    assert!(s.ci_low[0] <= s.diff[0] && s.diff[0] <= s.ci_high[0] && s.ci_low[0] > 0.3);
    assert!(s.q[0] < 0.05 && s.q[1] > 0.05);
    // Same seed, same numbers.
    assert_eq!(
        head_stats(&t, &r, 100, 100, 0.9, 3).ci_low,
        head_stats(&t, &r, 100, 100, 0.9, 3).ci_low
    );
}

#[test]
fn library_scores_match_the_pattern_by_hand() {
    let m = gemma();
    let pairs = vec![
        SentencePair {
            src: "I like green apples.".into(),
            tgt: "J'aime les pommes vertes.".into(),
        },
        SentencePair {
            src: "The cat is sleeping on the sofa.".into(),
            tgt: "Le chat dort sur le canapé.".into(),
        },
    ];
    let opts = ScoreOptions {
        quiet: true,
        ..Default::default()
    };
    let table = translation_scores(m, &pairs, "en", "fr", &opts).unwrap();
    assert_eq!(table.shape(), vec![18, 4]);
    // Head (9, 3) by hand from the cached pattern of each prompt.
    let fr = mechinterp::metrics::single_token(m, " FR").unwrap();
    let mut by_hand = 0f32;
    for p in &pairs {
        let text = mechinterp::translation::prompt("en", "fr", p);
        let toks = m.to_tokens(&text).unwrap();
        let ids = toks.i(0).unwrap().to_vec1::<u32>().unwrap();
        let t = locate_target(&ids, fr, 3).unwrap();
        let (_, cache) = m.run_with_cache(&toks).unwrap();
        let pat = cache
            .pattern(9)
            .unwrap()
            .i((0, 3))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        by_hand += score_pattern(&pat, t, 1) / 2.0;
    }
    let got = table.get(&[9, 3]).unwrap();
    assert!((got - by_hand).abs() < 1e-5, "{got} vs {by_hand}");
}

#[test]
fn end_to_end_on_the_default_model() {
    let m = gemma();
    let out = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::new(mechinterp::translation::shipped_data_dir(), out.path());
    opts.directions = vec![("en".into(), "fr".into()), ("ja".into(), "en".into())];
    opts.limit = Some(12);
    opts.n_perm = 500;
    opts.n_boot = 200;
    opts.score.quiet = true;
    opts.causal = Some(CausalOptions {
        pairs: 3,
        random_draws: 3,
        path_pairs: 1,
        quiet: true,
        ..Default::default()
    });
    let (results, report) = run(m, &opts).unwrap();
    assert_eq!(results.len(), 2);
    let md = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "## EN → FR",
        "## JA → EN",
        "en-fr/heatmap.svg",
        "Causal check",
        "Path patching",
        "Overlap across directions",
        "Translation heads",
        "by the original pooled statistics",
        "Each head alone",
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}");
    }
    for d in ["en-fr", "ja-en"] {
        let dir = out.path().join(d);
        let svg = std::fs::read_to_string(dir.join("heatmap.svg")).unwrap();
        assert!(svg.contains("Translation") && svg.contains("Random") && svg.contains("Diff"));
        assert_eq!(svg.matches("class=\"cell\"").count(), 3 * 72);
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("scores.json")).unwrap())
                .unwrap();
        let flat = |k: &str| -> Vec<f64> {
            j[k].as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        for k in ["translation", "random"] {
            assert!(flat(k).iter().all(|&x| (0.0..=1.0).contains(&x)), "{d} {k}");
        }
        let (diff, lo, hi) = (flat("diff"), flat("ci_low"), flat("ci_high"));
        assert_eq!(diff.len(), 72);
        for i in 0..72 {
            assert!(
                (-1.0..=1.0).contains(&diff[i])
                    && lo[i] <= diff[i] + 1e-6
                    && diff[i] <= hi[i] + 1e-6,
                "{d} head {i}"
            );
        }
        assert!(flat("p")
            .iter()
            .chain(flat("q").iter())
            .all(|&x| x > 0.0 && x <= 1.0));
        assert!(j["heads"]["fdr"].is_array() && j["heads"]["thresholds"]["0.04"].is_array());
        // The paired design: halves of the 12 sources, confirmed heads with held-out numbers.
        let paired = &j["paired"];
        assert_eq!(
            paired["discovery_sources"].as_array().unwrap().len(),
            6,
            "{d}"
        );
        assert_eq!(
            paired["confirmation_sources"].as_array().unwrap().len(),
            6,
            "{d}"
        );
        for h in j["heads"]["confirmed"].as_array().unwrap() {
            let (lo, hi) = (
                h["ci_low"].as_f64().unwrap(),
                h["ci_high"].as_f64().unwrap(),
            );
            assert!(
                lo > 0.0 && lo <= h["diff"].as_f64().unwrap() + 1e-6 && hi >= lo,
                "{h}"
            );
            assert!(h["layer"].as_u64().unwrap() < 18 && h["head"].as_u64().unwrap() < 4);
        }
        assert_eq!(j["causal_pairs"], "the 6 held-out pairs");
        assert_eq!(j["complete"], true, "{}", j["errors"]);
        assert!(j["aligned"]["spearman_vs_diagonal"].as_f64().unwrap().abs() <= 1.0);
        let c = &j["causal"];
        assert!(c["baseline"].as_f64().unwrap() < 0.0);
        assert_eq!(c["effects"].as_array().unwrap().len(), 2);
        assert!(c["effects"][0]["found"].as_f64().unwrap().is_finite());
        assert!(
            j["path_patching"]["spearman_vs_attention"]
                .as_f64()
                .unwrap()
                .abs()
                <= 1.0
        );
    }
}

#[test]
fn split_zero_and_the_original_method_say_what_they_did() {
    let m = gemma();
    for (method, split) in [(Method::Paired, 0.0), (Method::Original, 0.5)] {
        let out = tempfile::tempdir().unwrap();
        let mut opts = RunOptions::new(mechinterp::translation::shipped_data_dir(), out.path());
        opts.directions = vec![("en".into(), "fr".into())];
        opts.limit = Some(8);
        opts.n_perm = 300;
        opts.n_boot = 100;
        opts.score.quiet = true;
        opts.causal = None;
        opts.method = method;
        opts.split = split;
        let (results, report) = run(m, &opts).unwrap();
        let md = std::fs::read_to_string(&report).unwrap();
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("en-fr/scores.json")).unwrap(),
        )
        .unwrap();
        match method {
            Method::Paired => {
                assert!(md.contains("no held-out half (`--split 0`)"), "{md}");
                assert_eq!(
                    j["paired"]["discovery_sources"].as_array().unwrap().len(),
                    8
                );
                assert!(j["paired"]["confirmation_sources"]
                    .as_array()
                    .unwrap()
                    .is_empty());
                assert!(j["heads"]["confirmed"].as_array().unwrap().is_empty());
            }
            Method::Original => {
                assert!(md.contains("Method `original`"), "{md}");
                assert!(j["paired"].is_null() && j["heads"]["confirmed"].is_null());
                assert_eq!(results[0].scores.repairings, 0);
            }
        }
    }
}

#[test]
fn a_failed_direction_is_reported_and_fails_the_run() {
    let m = gemma();
    let data = tempfile::tempdir().unwrap();
    let src = mechinterp::translation::shipped_data_dir();
    let en_fr = ["en-fr.tsv", "en_fr.tsv"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .expect("the shipped data has en-fr");
    std::fs::copy(&en_fr, data.path().join("en-fr.tsv")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::new(data.path(), out.path());
    opts.directions = vec![("en".into(), "fr".into()), ("en".into(), "de".into())];
    opts.limit = Some(6);
    opts.n_perm = 200;
    opts.n_boot = 100;
    opts.score.quiet = true;
    opts.causal = None;
    let e = run(m, &opts).unwrap_err().to_string();
    assert!(e.contains("1 of 2 directions failed (en→de)"), "{e}");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        md.contains("## Failed directions") && md.contains("en→de"),
        "{md}"
    );
    assert!(
        md.contains("## EN → FR"),
        "the direction that worked is still reported"
    );
}

#[test]
fn the_causal_baseline_is_the_teacher_forced_logprob_of_metrics() {
    // The check scores every condition as a row of one forward; its unablated row must be
    // what `metrics::continuation_logprobs` gives for the same prompt and continuation.
    let m = gemma();
    let pairs = mechinterp::translation::load_pairs(
        mechinterp::translation::shipped_data_dir(),
        "en",
        "fr",
    )
    .unwrap();
    let pairs = &pairs[..3];
    let opts = CausalOptions {
        pairs: 3,
        random_draws: 1,
        quiet: true,
        ..Default::default()
    };
    let c = mechinterp::translation::ablation_check(m, pairs, "en", "fr", &[(9, 3)], "test", &opts)
        .unwrap();
    let items: Vec<(String, String)> = pairs
        .iter()
        .map(|p| (forced_prompt("en", "fr", p), format!(" {}", p.tgt)))
        .collect();
    let refs: Vec<(&str, &str)> = items
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let lp = mechinterp::metrics::continuation_logprobs(m, &refs).unwrap();
    let want = lp.iter().map(|x| x.mean()).sum::<f32>() / 3.0;
    assert!((c.baseline - want).abs() < 1e-3, "{} vs {want}", c.baseline);
}

#[test]
fn too_few_pairs_is_a_shortfall_not_a_failure() {
    let m = gemma();
    let opts = CausalOptions {
        quiet: true,
        ..Default::default()
    };
    let one = [SentencePair {
        src: "I like green apples.".into(),
        tgt: "J'aime les pommes vertes.".into(),
    }];
    let s = try_ablation_check(m, &one, "en", "fr", &[(9, 3)], "test", &opts)
        .unwrap()
        .unwrap_err();
    assert_eq!((s.needs, s.had), (2, 1));
    // The old entry point still fails, with the same words.
    let e = mechinterp::translation::ablation_check(m, &one, "en", "fr", &[(9, 3)], "t", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least two sentence pairs"), "{e}");
    // No two prompts of the same length: nothing for path patching to corrupt with.
    let two = [
        one[0].clone(),
        SentencePair {
            src: "The cat is sleeping on the sofa in the afternoon sun.".into(),
            tgt: "Le chat dort sur le canapé.".into(),
        },
    ];
    let diff = translation_scores(
        m,
        &two,
        "en",
        "fr",
        &ScoreOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    let s = try_path_ranking(m, &two, "en", "fr", &diff, &opts)
        .unwrap()
        .unwrap_err();
    assert!(s.reason.contains("no usable prompt pairs"), "{}", s.reason);
    assert_eq!(s.had, 2);
    // No heads is a real error.
    assert!(try_ablation_check(m, &two, "en", "fr", &[], "t", &opts).is_err());
}
