//! The crate's house rules, read from its source: top-level modules import each other without
//! cycles and only downwards (model ← techniques ← study ← plot/report ← binary), techniques
//! use only the model's public API (no `Run`, `Start`, `LogitRows` or `forward_inner`), and
//! everything that draws (SVG, `evcxr_display`) lives under `plot/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
pub fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
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
    let src = crate::common::repo().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
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

/// The top-level modules a file's code names: `crate::x::…` paths and every item of
/// `crate::{x, y::z, …}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut out: BTreeSet<String> = re.captures_iter(code).map(|c| c[1].to_string()).collect();
    for (i, _) in code.match_indices("crate::{") {
        let body = &code[i + "crate::{".len()..];
        // The group up to its matching brace; items split at commas outside inner braces.
        let (mut depth, mut item, mut end) = (0i32, String::new(), body.len());
        let mut items = Vec::new();
        for (j, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = j;
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                _ => {}
            }
            if ch != ',' || depth > 0 {
                item.push(ch);
            }
        }
        items.push(item);
        let _ = end;
        for it in items {
            let first: String = it
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !first.is_empty() && first != "self" {
                out.insert(first);
            }
        }
    }
    out
}

/// Each top-level module's layer: a module imports only from its own layer or below.
fn layer_of(top: &str) -> usize {
    match top {
        "error" | "progress" | "table" | "stats" | "corpus" => 0,
        "model" | "hooks" | "cache" | "tokenizer" | "fetch" => 1,
        "metrics" | "ablation" | "lens" | "patching" | "steering" | "sae" | "graph" => 2,
        "translation" => 3,
        "plot" | "report" => 4,
        other => panic!("module `{other}` has no layer in tests/it/layering.rs: give it one"),
    }
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, code, _) in library() {
        let e = deps.entry(top.clone()).or_default();
        for d in imports(&code) {
            if d != top {
                e.insert(d);
            }
        }
    }
    deps
}

#[test]
fn imports_point_down_the_layers() {
    for (top, ds) in dependencies() {
        for d in ds {
            assert!(
                layer_of(&d) <= layer_of(&top),
                "`{top}` (layer {}) imports `{d}` (layer {}): dependencies point model ← techniques ← study ← plot/report",
                layer_of(&top),
                layer_of(&d)
            );
        }
    }
}

#[test]
fn group_imports_are_read() {
    let got =
        imports("use crate::{cache::ActivationCache, model::{Pass, HookedTransformer}, hooks};");
    let want: BTreeSet<String> = ["cache", "model", "hooks"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn techniques_use_only_the_public_model_api() {
    let private = regex::Regex::new(
        r"\b(forward_inner|LogitRows|model::run|hooked_run|new_run)\b|\bStart::|\bRun::",
    )
    .unwrap();
    for (top, code, path) in library() {
        if layer_of(&top) < 2 {
            continue;
        }
        if let Some(m) = private.find(&code) {
            panic!(
                "{} uses the model's private `{}`: techniques use the public pass (`HookedTransformer::pass…`)",
                path.display(),
                m.as_str()
            );
        }
    }
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    if let Some(cycle) = find_cycle(&dependencies()) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
}

/// A path of edges from some node back to itself, found depth first, if there is one.
pub fn find_cycle<T: Ord + Clone>(deps: &BTreeMap<T, BTreeSet<T>>) -> Option<Vec<T>> {
    for start in deps.keys() {
        let mut stack: Vec<Vec<T>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last()?;
            for d in deps.get(last).into_iter().flatten() {
                let mut p = path.clone();
                p.push(d.clone());
                if d == start {
                    return Some(p);
                }
                if seen.insert(d.clone()) {
                    stack.push(p);
                }
            }
        }
    }
    None
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
