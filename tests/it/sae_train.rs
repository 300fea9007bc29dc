//! SAE training on the default model: the activation store (packing with BOS, special tokens
//! left out, the seeded shuffle, the massive-activation rule, the safetensors shard cache) and
//! the quick recipe (a 2 048-latent TopK SAE on 60k tokens at layer 6 explains ≥ 0.6 of the
//! variance of ordinary held-out tokens, and its folder loads back).

use candle_core::Tensor;
use mechinterp::corpus::Split;
use mechinterp::prelude::*;
use mechinterp::sae::train::run::corpus_texts;
use mechinterp::sae::train::store::{median, special_ids, Packer};
use mechinterp::sae::train::trainer::TrainArch;
use mechinterp::sae::train::{
    evaluate, train, ActivationStore, EvalOptions, MassiveRule, StoreOptions, TrainOptions,
};

const HOOK: &str = "blocks.6.hook_resid_post";

fn texts() -> Vec<String> {
    corpus_texts(None, Split::Train, 0).unwrap()
}

/// A small store: contexts of 32, two per forward, batches of 64.
fn small(hook: &str, seed: u64) -> StoreOptions {
    let mut o = StoreOptions::new(hook);
    o.context_size = 32;
    o.contexts_per_forward = 2;
    o.batch_size = 64;
    o.buffer_batches = 4;
    o.seed = seed;
    o.massive.calibration_tokens = 1;
    o
}

#[test]
fn packer_starts_every_context_with_bos_and_joins_documents_with_it() {
    let m = crate::common::gemma();
    let tok = m.tokenizer().unwrap();
    let bos = tok.prepended_id().unwrap();
    let docs = vec![
        "The cat sat on the mat.".to_string(),
        "Le chat dort.".into(),
    ];
    let mut p = Packer::new(docs.clone(), 8, bos).unwrap();
    let a = tok.encode(&docs[0], false).unwrap();
    let b = tok.encode(&docs[1], false).unwrap();
    let mut stream: Vec<u32> = Vec::new();
    for _ in 0..4 {
        stream.extend(&a);
        stream.push(bos);
        stream.extend(&b);
        stream.push(bos);
    }
    // The contexts continue the stream of documents joined by BOS; a separator that would
    // follow a context's own BOS is dropped.
    let mut at = 0;
    for _ in 0..3 {
        let c = p.next_context(tok).unwrap();
        assert_eq!(c.len(), 8);
        assert_eq!(c[0], bos, "every context starts with BOS");
        if stream[at] == bos {
            at += 1;
        }
        assert_eq!(&c[1..], &stream[at..at + 7]);
        at += 7;
    }
    assert!(
        Packer::new(vec![" ".into()], 8, bos).is_err(),
        "empty corpus refused"
    );
    assert!(
        Packer::new(docs, 1, bos).is_err(),
        "context of one token refused"
    );
}

#[test]
fn store_leaves_out_bos_and_special_tokens_and_matches_a_plain_forward() {
    let m = crate::common::gemma();
    let docs = texts();
    let opts = small(HOOK, 0);
    let mut store = ActivationStore::new(m, docs.clone(), opts.clone()).unwrap();
    let (chunk, _) = store.next_classified().unwrap();
    let st = store.stats().clone();
    assert_eq!(st.contexts, 2);
    assert!(st.special_left_out >= 2, "each context's BOS is left out");
    assert_eq!(chunk.rows() + st.special_left_out, 2 * 32);

    // The same contexts by hand: every non-special position of a plain forward, in order.
    let tok = m.tokenizer().unwrap();
    let bos = tok.prepended_id().unwrap();
    let mut p = Packer::new(docs, 32, bos).unwrap();
    let ids: Vec<u32> = (0..2).flat_map(|_| p.next_context(tok).unwrap()).collect();
    let special = special_ids(m).unwrap();
    assert!(special.contains(&bos));
    let toks = Tensor::from_vec(ids.clone(), (2, 32), m.device()).unwrap();
    let (_, cache) = m.run_with_cache(&toks).unwrap();
    let acts = cache.get(HOOK).unwrap().reshape((64, 640)).unwrap();
    let keep: Vec<u32> = (0..64u32)
        .filter(|&i| !special.contains(&ids[i as usize]))
        .collect();
    assert_eq!(keep.len(), chunk.rows());
    let want = acts
        .index_select(&Tensor::new(keep.as_slice(), m.device()).unwrap(), 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let worst = want
        .iter()
        .zip(&chunk.x)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "store rows differ from a plain forward by {worst}"
    );
}

#[test]
fn store_shuffle_is_deterministic_with_its_seed() {
    let m = crate::common::gemma();
    let batches = |seed: u64| -> Vec<Vec<f32>> {
        let mut s = ActivationStore::new(m, texts(), small(HOOK, seed)).unwrap();
        (0..3)
            .map(|_| {
                let (x, y) = s.next_batch().unwrap();
                assert!(y.is_none());
                assert_eq!(x.dims(), &[64, 640]);
                x.flatten_all().unwrap().to_vec1().unwrap()
            })
            .collect()
    };
    let a = batches(7);
    assert_eq!(a, batches(7), "same seed, same batches");
    assert_ne!(a, batches(8), "another seed, another order");
}

#[test]
fn massive_rule_flags_a_few_tokens_and_leaves_them_out_unless_kept() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    let rule = MassiveRule::default();
    assert!(rule.is_massive(5.0, 1.0) && !rule.is_massive(4.99, 1.0));
    assert!(rule.describe(Some(2.0)).contains("5× the median"));

    let m = crate::common::gemma();
    let mut o = small(HOOK, 0);
    o.massive.calibration_tokens = 256;
    let mut dropped = ActivationStore::new(m, texts(), o.clone()).unwrap();
    for _ in 0..8 {
        dropped.next_batch().unwrap();
    }
    let d = dropped.stats().clone();
    assert!(d.median_norm.unwrap() > 0.0);
    assert_eq!(d.massive, d.massive_dropped, "left out by default");
    o.massive.keep = true;
    let mut kept = ActivationStore::new(m, texts(), o).unwrap();
    for _ in 0..8 {
        kept.next_batch().unwrap();
    }
    assert_eq!(kept.stats().massive_dropped, 0, "--keep-massive keeps them");
    // At layer 6 a few percent at most of ordinary tokens are massive.
    assert!(
        (d.massive as f64) < 0.05 * d.tokens as f64,
        "{} of {} tokens massive",
        d.massive,
        d.tokens
    );
}

#[test]
fn store_shards_on_disk_read_back_the_same_rows() {
    let m = crate::common::gemma();
    let dir = tempfile::tempdir().unwrap();
    let mut o = small(HOOK, 0);
    o.cache_dir = Some(dir.path().join("acts"));
    o.shard_rows = 50;
    let first: Vec<Vec<f32>> = {
        let mut s = ActivationStore::new(m, texts(), o.clone()).unwrap();
        let v = (0..3).map(|_| s.next_classified().unwrap().0.x).collect();
        s.flush().unwrap();
        v
    };
    assert!(dir.path().join("acts/store.json").is_file());
    assert!(dir.path().join("acts/shard_00000.safetensors").is_file());
    let mut again = ActivationStore::new(m, texts(), o.clone()).unwrap();
    for want in &first {
        assert_eq!(&again.next_classified().unwrap().0.x, want);
    }
    assert!(again.stats().disk_rows > 0 && again.stats().model_tokens == 0);
    // Past the shards it runs the model on from where the shards end.
    again.next_classified().unwrap();
    assert!(again.stats().model_tokens > 0);
    // Another context size is other activations: refused, naming the folder.
    o.context_size = 16;
    let err = ActivationStore::new(m, texts(), o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("acts") && err.contains("context size"),
        "{err}"
    );
}

#[test]
fn store_refuses_hooks_that_are_not_one_vector_per_token() {
    let m = crate::common::gemma();
    let err = ActivationStore::new(m, texts(), small("blocks.6.attn.hook_pattern", 0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("hook_pattern"), "{err}");
}

#[test]
fn folding_the_training_scale_gives_the_same_outputs_on_raw_activations() {
    use mechinterp::sae::train::run::fold_scales;
    use mechinterp::sae::Architecture;
    let cases = [
        (Architecture::TopK, HOOK, HOOK),
        (Architecture::JumpRelu, HOOK, HOOK),
        (Architecture::Standard, HOOK, HOOK),
        (
            Architecture::SkipTranscoder,
            "blocks.6.mlp.hook_in",
            "blocks.6.hook_mlp_out",
        ),
    ];
    for (arch, h_in, h_out) in cases {
        let base = crate::sae_splice::random_sae(Architecture::Standard, h_in, h_out, 16, 24, 3);
        let (mut cfg, mut w) = (base.cfg().clone(), base.weights().clone());
        cfg.architecture = arch;
        match arch {
            Architecture::TopK => {
                cfg.k = Some(5);
                cfg.rescale_acts_by_decoder_norm = true;
            }
            Architecture::JumpRelu => {
                w.threshold = Some(Tensor::full(0.05f32, 24, &candle_core::Device::Cpu).unwrap())
            }
            Architecture::SkipTranscoder => {
                cfg.apply_b_dec_to_input = false;
                w.w_skip =
                    Some(Tensor::randn(0f32, 0.1, (16, 16), &candle_core::Device::Cpu).unwrap());
            }
            _ => {}
        }
        let sae = Sae::new(cfg, w).unwrap();
        let (c_in, c_out) = if arch.is_transcoder() {
            (0.5, 0.02)
        } else {
            (0.05, 0.05)
        };
        let folded = fold_scales(&sae, c_in, c_out).unwrap();
        let x = Tensor::randn(0f32, 40.0, (8, 16), &candle_core::Device::Cpu).unwrap();
        let want = (sae.forward(&x.affine(c_in, 0.0).unwrap()).unwrap() / c_out).unwrap();
        let got = folded.forward(&x).unwrap();
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let top = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err <= 1e-4 * top, "{arch:?}: {err} vs {top}");
    }
}

#[test]
fn quick_recipe_topk_explains_ordinary_held_out_tokens() {
    let m = crate::common::gemma();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sae");
    let mut o = TrainOptions::new(HOOK, TrainArch::TopK, 2048, 60_000, &out);
    o.k = Some(32);
    o.checkpoint_every = Some(200);
    // CI's budget: fewer held-out tokens than the CLI's default 100k.
    o.eval_tokens = 20_000;
    o.eval_ce_tokens = 256;
    let r = train(m, &o).unwrap();
    eprintln!("{r}");
    let e = r.eval.as_ref().unwrap();
    assert!(
        e.explained_variance_ordinary >= 0.6,
        "explained variance on ordinary held-out tokens {:.3} < 0.6",
        e.explained_variance_ordinary
    );
    assert!(e.l0_ordinary <= 32.0 + 1e-6);
    let ce = e.ce.as_ref().unwrap();
    assert!(ce.clean < ce.spliced_ordinary && ce.spliced < ce.zero_ablated);
    assert!(out.join("sparsity.safetensors").is_file());
    assert!(out.join("checkpoints/step_200").is_dir());
    let back = Sae::load(&out).unwrap();
    assert_eq!(back.d_sae(), 2048);
    assert_eq!(back.hook_name(), HOOK);
    // The folder's SAE is the one evaluated: the same held-out figures.
    let mut eo = EvalOptions::new(corpus_texts(None, Split::HeldOut, 0).unwrap());
    eo.tokens = 2_000;
    eo.ce_tokens = 0;
    let a = evaluate(m, &back, &eo).unwrap();
    let b = evaluate(m, &r.sae, &eo).unwrap();
    assert!((a.explained_variance_ordinary - b.explained_variance_ordinary).abs() < 1e-4);
}

#[test]
fn a_short_transcoder_run_writes_a_folder_that_loads_back() {
    let m = crate::common::gemma();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tc");
    let mut o = TrainOptions::new(
        "blocks.3.mlp.hook_in",
        TrainArch::SkipTranscoder,
        128,
        1024,
        &out,
    );
    o.batch_size = 128;
    o.context_size = 64;
    o.contexts_per_forward = 4;
    o.eval_tokens = 1000;
    o.eval_ce_tokens = 0;
    o.massive.calibration_tokens = 256;
    let r = train(m, &o).unwrap();
    assert_eq!(r.steps, 8);
    let back = Sae::load(&out).unwrap();
    assert_eq!(back.hook_name(), "blocks.3.mlp.hook_in");
    assert_eq!(
        back.hook_name_out(),
        "blocks.3.hook_mlp_out",
        "the default output hook"
    );
    assert!(out.join("sparsity.safetensors").is_file() && out.join("training.json").is_file());
    let e = r.eval.unwrap();
    assert!(e.tokens >= 1000 && e.explained_variance_ordinary.is_finite());
    // An SAE does not take an output hook.
    let mut bad = TrainOptions::new(HOOK, TrainArch::TopK, 64, 1024, dir.path().join("x"));
    bad.hook_out = Some("blocks.6.hook_mlp_out".into());
    let err = train(m, &bad).err().unwrap().to_string();
    assert!(err.contains("--hook-out"), "{err}");
}
