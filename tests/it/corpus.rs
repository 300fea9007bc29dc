//! The shipped corpus (every language in both splits, held-out disjoint from training, sizes
//! as its README says) and the loader on the user's own TSV, JSONL and folders.

use std::collections::HashSet;

use crate::common::repo;
use mechinterp::corpus::{Corpus, Split};

const LANGS: [&str; 7] = ["ar", "de", "en", "es", "fr", "ja", "zh"];

#[test]
fn shipped_corpus_has_every_language_in_both_splits() {
    for split in [Split::Train, Split::HeldOut] {
        let c = Corpus::shipped(split).unwrap();
        assert_eq!(c.languages(), LANGS, "{split:?}");
        for lang in LANGS {
            let part = c.filter_lang(lang).unwrap();
            // Training text: 130-300 KB a language; held-out: 30-150 KB.
            let (lo, hi) = match split {
                Split::Train => (100_000, 310_000),
                Split::HeldOut => (30_000, 160_000),
            };
            let bytes = part.total_bytes();
            assert!(
                (lo..=hi).contains(&bytes),
                "{lang} {split:?}: {bytes} bytes"
            );
            assert!(
                part.len() >= 50,
                "{lang} {split:?}: {} documents",
                part.len()
            );
        }
        for d in c.docs() {
            assert!(
                !d.text.is_empty() && !d.text.contains(['\t', '\n']),
                "{:?}",
                d.text
            );
        }
    }
}

#[test]
fn shipped_held_out_is_disjoint_from_training() {
    let train = Corpus::shipped(Split::Train).unwrap();
    let held = Corpus::shipped(Split::HeldOut).unwrap();
    let seen: HashSet<&str> = train.texts().collect();
    let shared: Vec<&str> = held.texts().filter(|t| seen.contains(t)).collect();
    assert!(
        shared.is_empty(),
        "{} shared documents: {:?}",
        shared.len(),
        &shared[..1]
    );
    let total = train.total_bytes() + held.total_bytes();
    assert!(
        (1_500_000..=5_000_000).contains(&total),
        "{total} bytes in all"
    );
    // The loader reads the shipped files the same way as a user's folder (untagged).
    let folder = Corpus::from_path(repo().join("data/corpus")).unwrap();
    assert_eq!(folder.len(), train.len() + held.len());
}

#[test]
fn shuffling_is_seeded_and_keeps_every_document() {
    let c = Corpus::shipped(Split::HeldOut).unwrap();
    let a = c.shuffled(1);
    assert_eq!(a, c.shuffled(1));
    assert_ne!(a, c.shuffled(2));
    let mut x: Vec<&str> = a.texts().collect();
    let mut y: Vec<&str> = c.texts().collect();
    x.sort();
    y.sort();
    assert_eq!(x, y);
}

#[test]
fn from_path_reads_tsv_jsonl_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("pairs.tsv");
    std::fs::write(
        &tsv,
        "The cat sleeps.\tLe chat dort.\n\nIt rains.\tIl pleut.\n",
    )
    .unwrap();
    let c = Corpus::from_path(&tsv).unwrap();
    assert_eq!(
        c.texts().collect::<Vec<_>>(),
        ["The cat sleeps.", "Le chat dort.", "It rains.", "Il pleut."]
    );
    assert!(c.languages().is_empty());

    let jsonl = dir.path().join("nested/docs.jsonl");
    std::fs::create_dir_all(jsonl.parent().unwrap()).unwrap();
    std::fs::write(
        &jsonl,
        "{\"text\": \"Guten Morgen.\", \"lang\": \"de\"}\n{\"content\": \"早上好。\", \"id\": 3}\n",
    )
    .unwrap();
    let c = Corpus::from_path(&jsonl).unwrap();
    assert_eq!(c.texts().collect::<Vec<_>>(), ["Guten Morgen.", "早上好。"]);
    assert_eq!(c.languages(), ["de"]);

    std::fs::write(dir.path().join("a.txt"), "first line\nsecond line\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "# not read\n").unwrap();
    let c = Corpus::from_path(dir.path()).unwrap();
    // Path order: a.txt, nested/docs.jsonl, pairs.tsv.
    let texts: Vec<&str> = c.texts().collect();
    assert_eq!(texts.len(), 2 + 2 + 4);
    assert_eq!(texts[..3], ["first line", "second line", "Guten Morgen."]);
    assert_eq!(texts[7], "Il pleut.");
}

#[test]
fn from_path_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-corpus.txt");
    let e = Corpus::from_path(&missing).unwrap_err().to_string();
    assert!(e.contains("no-such-corpus.txt"), "{e}");

    let empty = dir.path().join("blank.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let e = Corpus::from_path(&empty).unwrap_err().to_string();
    assert!(e.contains("blank.txt"), "{e}");

    let bad = dir.path().join("broken.jsonl");
    std::fs::write(
        &bad,
        "{\"text\": \"fine\"}\n{\"text\": \"fine\"}\n{\"text\": \n",
    )
    .unwrap();
    let e = Corpus::from_path(&bad).unwrap_err().to_string();
    assert!(e.contains("broken.jsonl line 3"), "{e}");

    let binary = dir.path().join("latin1.txt");
    std::fs::write(&binary, [0x63, 0x61, 0x66, 0xe9, b'\n']).unwrap();
    let e = Corpus::from_path(&binary).unwrap_err().to_string();
    assert!(e.contains("latin1.txt") && e.contains("UTF-8"), "{e}");

    let e = Corpus::from_path(dir.path().join("sub"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sub"), "{e}");
}
