//! Models where local tools keep them: an Ollama store laid out as Ollama lays it out
//! (manifests naming sha256 blobs), a llama.cpp / LM Studio file path, and what a missing model
//! says; and the CLI's BOS switch, which `tokenize` explains.

use std::path::{Path, PathBuf};
use std::process::Command;

use mechinterp::model::load::ollama;
use mechinterp::prelude::*;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    crate::common::repo()
        .join("tests/fixtures/models")
        .join(name)
        .join("model.gguf")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mechinterp"))
}

/// Puts `gguf` into an Ollama store at `root` as `host/namespace/name:tag`.
fn install(root: &Path, gguf: &Path, manifest_path: &[&str]) {
    let bytes = std::fs::read(gguf).unwrap();
    let hex = format!("{:x}", Sha256::digest(&bytes));
    let blobs = root.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("sha256-{hex}")), &bytes).unwrap();
    let config = b"{\"model_format\":\"gguf\"}";
    let chex = format!("{:x}", Sha256::digest(config));
    std::fs::write(blobs.join(format!("sha256-{chex}")), config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": format!("sha256:{chex}"), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:0000", "size": 10},
            {"mediaType": "application/vnd.ollama.image.model",
             "digest": format!("sha256:{hex}"), "size": bytes.len()},
        ]
    });
    let mut p = root.join("manifests");
    for part in manifest_path {
        p.push(part);
    }
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, manifest.to_string()).unwrap();
}

#[test]
fn ollama_names_resolve_to_their_gguf_blobs() {
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    install(
        root,
        &fixture("qwen2"),
        &["registry.ollama.ai", "library", "tiny-qwen", "latest"],
    );
    install(
        root,
        &fixture("llama"),
        &["registry.ollama.ai", "someone", "tiny-llama", "q8"],
    );
    install(
        root,
        &fixture("gemma3"),
        &["hf.co", "org", "tiny-gemma", "latest"],
    );
    let direct =
        HookedTransformer::from_spec(fixture("qwen2"), &LoadOptions::from_env().unwrap()).unwrap();
    let p = ollama::resolve_in(root, "tiny-qwen").unwrap();
    let via = HookedTransformer::from_spec(&p, &LoadOptions::from_env().unwrap()).unwrap();
    assert_eq!(via.cfg().architecture, direct.cfg().architecture);
    assert!(ollama::resolve_in(root, "tiny-qwen:latest").unwrap() == p);
    assert!(ollama::resolve_in(root, "someone/tiny-llama:q8").is_ok());
    assert!(ollama::resolve_in(root, "hf.co/org/tiny-gemma").is_ok());

    // A missing model says where it looked.
    let e = ollama::resolve_in(root, "nope:7b").unwrap_err().to_string();
    assert!(
        e.contains("nope:7b") && e.contains(&root.display().to_string()),
        "{e}"
    );
    assert!(
        e.contains("manifests/registry.ollama.ai/library/nope/7b"),
        "{e}"
    );
    // A manifest whose blob is gone names the blob.
    let blob = p.clone();
    std::fs::rename(&blob, root.join("moved")).unwrap();
    let e = ollama::resolve_in(root, "tiny-qwen")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256-") && e.contains("missing"), "{e}");
    std::fs::rename(root.join("moved"), &blob).unwrap();

    // From the command line, with OLLAMA_MODELS pointing at the store.
    let out = bin()
        .args([
            "run",
            "hello",
            "--top-k",
            "2",
            "--model",
            "ollama:tiny-qwen",
        ])
        .env("OLLAMA_MODELS", root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["run", "hello", "--model", "ollama:absent"])
        .env("OLLAMA_MODELS", root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("absent:latest"),
        "{err}"
    );
}

#[test]
fn a_gguf_path_with_any_name_just_works() {
    // LM Studio keeps files as models/<publisher>/<repo>/<file>.gguf; llama.cpp users pass a path.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("publisher").join("repo");
    std::fs::create_dir_all(&p).unwrap();
    let file = p.join("Tiny-Llama-F32.gguf");
    std::fs::copy(fixture("llama"), &file).unwrap();
    let m = HookedTransformer::from_spec(file.to_str().unwrap(), &LoadOptions::from_env().unwrap())
        .unwrap();
    assert_eq!(m.cfg().architecture, "llama");
    let e = HookedTransformer::from_spec("/no/such/model.gguf", &LoadOptions::from_env().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/no/such/model.gguf"), "{e}");
}

#[test]
fn tokenize_shows_the_bos_rule_and_no_bos_gives_hfs_ids() {
    // Qwen's vocabulary has no BOS: TransformerLens's default prepends EOS; HF adds nothing.
    let q = fixture("qwen2");
    let run = |extra: &[&str]| {
        let out = bin()
            .args(["tokenize", "hello world", "--model"])
            .arg(&q)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let with = run(&[]);
    assert!(
        with.contains("prepended EOS <|endoftext|>") && with.contains("prepends nothing"),
        "{with}"
    );
    let without = run(&["--no-bos"]);
    assert!(without.contains("no BOS prepended"), "{without}");
    assert_eq!(with.lines().count(), without.lines().count() + 1);

    let hf_dir = q.parent().unwrap();
    let hf = Tokenizer::from_file(hf_dir.join("tokenizer.json"), None, None, 0, false).unwrap();
    let m = HookedTransformer::from_spec(&q, &LoadOptions::from_env().unwrap())
        .unwrap()
        .with_prepend_bos(false);
    let ids = m
        .to_tokens("hello world")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(ids, hf.encode("hello world", false).unwrap());
    // The hub folder reads the same rule from tokenizer.json and tokenizer_config.json.
    let h = HookedTransformer::from_local_dir(hf_dir).unwrap();
    assert!(!h.tokenizer().unwrap().add_bos);
    assert_eq!(
        h.to_tokens("hi")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()[0],
        0
    );
    // Llama's tokenizer adds its BOS by its own rule.
    let l = HookedTransformer::from_local_dir(fixture("llama").parent().unwrap()).unwrap();
    assert!(l.tokenizer().unwrap().add_bos);
    assert!(l.bos_rule().unwrap().contains("also prepends it"));
}
