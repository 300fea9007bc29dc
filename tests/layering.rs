//! The crate's house rules, read from its source: top-level modules import each other without
//! cycles, and everything that draws (SVG, `evcxr_display`) lives under `plot/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library's files as (top-level module, code without comments or unit tests).
fn library() -> Vec<(String, String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter(|p| !p.starts_with(src.join("bin")))
        .filter(|p| !p.ends_with("lib.rs") && !p.ends_with("prelude.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            (top, code.join("\n"), p)
        })
        .collect()
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, code, _) in library() {
        let e = deps.entry(top.clone()).or_default();
        for c in re.captures_iter(&code) {
            if c[1] != top {
                e.insert(c[1].to_string());
            }
        }
    }
    // Depth-first search for a path back to the start.
    for start in deps.keys() {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for d in deps.get(last).into_iter().flatten() {
                let mut p = path.clone();
                p.push(d.clone());
                assert_ne!(d, start, "import cycle: {}", p.join(" → "));
                if seen.insert(d.clone()) {
                    stack.push(p);
                }
            }
        }
    }
}

#[test]
fn drawing_lives_under_plot() {
    for (top, code, path) in library() {
        if top == "plot" {
            continue;
        }
        for needle in ["evcxr_display", "crate::plot", "<svg"] {
            assert!(
                !code.contains(needle),
                "{} contains `{needle}`: figures and notebook display belong under src/plot/",
                path.display()
            );
        }
    }
}
