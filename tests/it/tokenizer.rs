//! The default model's tokenizer against llama.cpp's ids for 5 362 texts (shared fixture),
//! decoding round trips, and the tiny GGUF vocabulary's BPE rules.

use crate::common::*;
use mechinterp::prelude::*;

fn fixture_path() -> std::path::PathBuf {
    let p = crate::common::repo().join("../shared/fixtures/gemma3_270m_tokens.jsonl");
    assert!(
        p.exists(),
        "missing fixture {} (the shared/ folder beside the checkout)",
        p.display()
    );
    p
}

#[test]
fn matches_llama_cpp_on_every_fixture_text() {
    let tok = gemma().tokenizer().unwrap();
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    let mut n = 0;
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["text"].as_str().unwrap();
        let want: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(t, true).unwrap();
        if got != want {
            bad.push(format!("{t:?}\n  want {want:?}\n  got  {got:?}"));
        }
        n += 1;
    }
    assert_eq!(n, 5362, "fixture size");
    assert!(
        bad.is_empty(),
        "{} of {n} texts differ, e.g.:\n{}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn decoding_round_trips() {
    let tok = gemma().tokenizer().unwrap();
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["text"].as_str().unwrap();
        let ids = tok.encode(t, true).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), t);
        n += 1;
    }
    assert_eq!(n, 5362);
}

#[test]
fn str_tokens_read_as_text() {
    let m = gemma();
    let s = m.to_str_tokens("EN: I like green apples.\n").unwrap();
    assert_eq!(
        s,
        vec!["<bos>", "EN", ":", " I", " like", " green", " apples", ".", "\n"]
    );
    assert_eq!(s.concat(), "<bos>EN: I like green apples.\n");
}

#[test]
fn tiny_vocabulary_merges_by_score_with_byte_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let m = HookedTransformer::from_spec(
        write_tiny_gguf(dir.path(), &Tiny::default(), 1),
        &LoadOptions::from_env().unwrap(),
    )
    .unwrap();
    let tok = m.tokenizer().unwrap();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    // " the cat" -> ▁the ▁cat; "abc" -> abc (ab ranks before bc, which is absent).
    assert_eq!(
        tok.encode(" the cat", false).unwrap(),
        vec![id("\u{2581}the"), id("\u{2581}cat")]
    );
    assert_eq!(tok.encode("abc", true).unwrap(), vec![2, id("abc")]);
    // "z" is not in the vocabulary: byte fallback to <0x7A>; "\n" is a user-defined token.
    assert_eq!(
        tok.encode("z\n", false).unwrap(),
        vec![id("<0x7A>"), id("\n")]
    );
    assert_eq!(
        tok.decode(&tok.encode("z\n the cat", true).unwrap(), true)
            .unwrap(),
        "z\n the cat"
    );
}
