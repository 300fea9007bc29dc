//! Inside `src/model/`, files import each other without cycles: each file's
//! `crate::model::…`, `super::…`, `self::…` and child-module paths (re-exports of a `mod.rs`
//! followed to the file that defines the item; comments and unit tests left out) are its
//! edges, and no chain of edges leads back to where it started.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A module's path below `crate::model`: `["load", "gguf"]` for `src/model/load/gguf/mod.rs`.
type Module = Vec<String>;

fn model_dir() -> PathBuf {
    crate::common::repo().join("src/model")
}

/// Every file of `src/model/` as its module and its code without comments or unit tests.
fn modules() -> BTreeMap<Module, String> {
    let root = model_dir();
    let mut files = Vec::new();
    crate::layering::sources(&root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut m: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if m.last().is_some_and(|l| l == "mod") {
                m.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            (m, code.join("\n"))
        })
        .collect()
}

/// The paths a file's code names, each as segments: `a::b::{c, d::e}` gives `a::b::c` and
/// `a::b::d::e`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        // A prefix inside a longer name (`xsuper::`) is not one.
        if code[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        out.extend(expand(&code[i + prefix.len()..]));
    }
    out
}

/// The paths of one path expression at the start of `s`, groups expanded.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if n == 0 {
            break;
        }
        segs.push(rest[..n].to_string());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => return vec![segs],
        }
    }
    let Some(body) = rest.strip_prefix('{') else {
        return vec![segs];
    };
    // The group's items, split at commas outside inner braces.
    let (mut depth, mut item, mut items) = (0i32, String::new(), Vec::new());
    for ch in body.chars() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    items.push(item);
    let mut out = Vec::new();
    for it in items {
        for tail in expand(it.trim()) {
            let mut p = segs.clone();
            p.extend(tail.into_iter().filter(|s| s != "self"));
            out.push(p);
        }
    }
    if out.is_empty() {
        out.push(segs);
    }
    out
}

/// Each `mod.rs`'s `pub use child::…` re-exports: (module, item name) → child module.
fn reexports(mods: &BTreeMap<Module, String>) -> BTreeMap<(Module, String), Module> {
    let mut out = BTreeMap::new();
    for (m, code) in mods {
        for p in paths_after(code, "pub use ") {
            let Some(child) = p.first() else { continue };
            let mut target = m.clone();
            target.push(child.clone());
            if mods.contains_key(&target) {
                if let Some(name) = p.last() {
                    out.insert((m.clone(), name.clone()), target);
                }
            }
        }
    }
    out
}

/// The file a path below `crate::model` lands in: its longest prefix that is a module, then
/// through that module's re-exports.
fn resolve(
    path: &[String],
    mods: &BTreeMap<Module, String>,
    re: &BTreeMap<(Module, String), Module>,
) -> Module {
    let mut m: Module = Vec::new();
    for s in path {
        let mut next = m.clone();
        next.push(s.clone());
        if mods.contains_key(&next) {
            m = next;
        } else if let Some(t) = re.get(&(m.clone(), s.clone())) {
            m = t.clone();
        } else {
            break;
        }
    }
    m
}

/// Each file's imports of other files of `src/model/`.
fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules();
    let re = reexports(&mods);
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, code) in &mods {
        // A `mod.rs` is its folder's module, and only a folder has children.
        let is_dir = model_dir().join(m.join("/")).is_dir() && !m.is_empty();
        let mut targets = Vec::new();
        for p in paths_after(code, "crate::model::") {
            targets.push(p);
        }
        for p in paths_after(code, "self::") {
            let mut abs = m.clone();
            abs.extend(p);
            targets.push(abs);
        }
        for p in paths_after(code, "super::") {
            let mut base = m.clone();
            base.pop();
            let mut rest = p.as_slice();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            targets.push(base);
        }
        // `use child::…` in a folder's mod.rs.
        for p in paths_after(code, "use ") {
            if p.first().is_some_and(|c| {
                let mut child = m.clone();
                child.push(c.clone());
                is_dir && mods.contains_key(&child)
            }) {
                let mut abs = m.clone();
                abs.extend(p);
                targets.push(abs);
            }
        }
        let set = out.entry(m.clone()).or_default();
        for t in targets {
            let t = resolve(&t, &mods, &re);
            if &t != m && !t.is_empty() {
                set.insert(t);
            }
        }
    }
    out
}

fn show(m: &Module) -> String {
    format!("model::{}", m.join("::"))
}

#[test]
fn model_files_import_each_other_without_cycles() {
    if let Some(cycle) = crate::layering::find_cycle(&edges()) {
        let names: Vec<String> = cycle.iter().map(show).collect();
        panic!("import cycle inside src/model: {}", names.join(" → "));
    }
}

#[test]
fn the_edges_are_read() {
    let deps = edges();
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let has = |a: &str, b: &str| deps.get(&m(a)).is_some_and(|d| d.contains(&m(b)));
    // A `crate::model::load::{…}` group, a plain path, and a re-export followed.
    assert!(has("load::spec", "load::gguf"), "{deps:?}");
    assert!(has("load::spec", "load::ollama"), "{deps:?}");
    assert!(has("load::hf_config", "arch"), "{deps:?}");
    assert!(has("load::gguf", "load::gguf::file"), "{deps:?}");
    assert!(!has("arch", "load::hf_config"), "{deps:?}");
}

#[test]
fn paths_and_groups_expand() {
    let got = paths_after(
        "use crate::model::{arch::Arch, load::{gguf, hub::Files}};",
        "crate::model::",
    );
    let want: Vec<Vec<String>> = [
        vec!["arch", "Arch"],
        vec!["load", "gguf"],
        vec!["load", "hub", "Files"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
}
