//! Sentence pairs: loading `src<TAB>tgt` files and the original study's filter. The random
//! control's pairing is [`crate::translation::pairing`], named here too for older paths.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
pub use crate::translation::pairing::{
    clean_random_pairing, random_pairing, random_pairing_indexed,
};

/// One source sentence and its translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentencePair {
    /// Source-language sentence.
    pub src: String,
    /// Target-language sentence.
    pub tgt: String,
}

/// Reads a `source<TAB>target` file; blank lines are skipped, anything else malformed is an
/// error naming the file and line.
pub fn load_tsv(path: impl AsRef<Path>) -> Result<Vec<SentencePair>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse_tsv(&text, path)
}

/// Parses `source<TAB>target` lines; `path` only names the origin in errors.
pub fn parse_tsv(text: &str, path: &Path) -> Result<Vec<SentencePair>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('\t').collect();
        let bad =
            |why: &str| Error::Invalid(format!("{}:{}: {why}: {line:?}", path.display(), i + 1));
        if parts.len() != 2 {
            return Err(bad(&format!(
                "expected `source<TAB>target`, found {} tab-separated fields",
                parts.len()
            )));
        }
        let (s, t) = (parts[0].trim(), parts[1].trim());
        if s.is_empty() || t.is_empty() {
            return Err(bad("empty sentence"));
        }
        out.push(SentencePair {
            src: s.into(),
            tgt: t.into(),
        });
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no sentence pairs (expected `source<TAB>target` lines)",
            path.display()
        )));
    }
    Ok(out)
}

/// The file for a direction in a data folder: `{src}-{tgt}.tsv` or `{src}_{tgt}.tsv`, or the
/// reverse direction's file with its columns swapped. Returns the path and whether to swap.
pub fn find_pair_file(dir: &Path, src: &str, tgt: &str) -> Result<(PathBuf, bool)> {
    for (a, b, swap) in [(src, tgt, false), (tgt, src, true)] {
        for sep in ["-", "_"] {
            let p = dir.join(format!("{a}{sep}{b}.tsv"));
            if p.is_file() {
                return Ok((p, swap));
            }
        }
    }
    Err(Error::Invalid(format!(
        "no sentence pairs for {src}→{tgt} in {}: expected {src}-{tgt}.tsv (or {src}_{tgt}.tsv, or the reverse {tgt}-{src}.tsv)",
        dir.display()
    )))
}

/// Loads the pairs of a direction from a data folder (see [`find_pair_file`]).
pub fn load_pairs(dir: impl AsRef<Path>, src: &str, tgt: &str) -> Result<Vec<SentencePair>> {
    let (p, swap) = find_pair_file(dir.as_ref(), src, tgt)?;
    let pairs = load_tsv(&p)?;
    Ok(if swap {
        pairs
            .into_iter()
            .map(|p| SentencePair {
                src: p.tgt,
                tgt: p.src,
            })
            .collect()
    } else {
        pairs
    })
}

/// How many pairs the filter kept and why it dropped the others.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FilterReport {
    /// Pairs read.
    pub total: usize,
    /// Pairs kept.
    pub kept: usize,
    /// Dropped for digits or `% - _ \ / * & ♪` or U+3000.
    pub bad_chars: usize,
    /// Dropped for a side outside 3..=50 words.
    pub word_count: usize,
    /// Dropped for sides more than 5 tokens apart.
    pub length_gap: usize,
}

/// Characters the original study drops pairs for.
fn has_bad_char(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_ascii_digit() || "%-_\\/*&♪\u{3000}".contains(c))
}

/// The original filter: the English side has 3 to 50 words (for pairs without English, the
/// side written with spaces between words; Chinese and Japanese sides are not counted), the
/// two sides differ by at most 5 tokens, and no side contains digits or `% - _ \ / * & ♪`
/// or U+3000.
pub fn filter_pairs(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
) -> Result<(Vec<SentencePair>, FilterReport)> {
    let tok = model.tokenizer()?;
    let spaced = |lang: &str| !matches!(lang, "zh" | "ja");
    let word_side = if src == "en" {
        Some(0)
    } else if tgt == "en" {
        Some(1)
    } else if spaced(src) {
        Some(0)
    } else if spaced(tgt) {
        Some(1)
    } else {
        None
    };
    let mut rep = FilterReport {
        total: pairs.len(),
        ..Default::default()
    };
    let mut kept = Vec::new();
    for p in pairs {
        if has_bad_char(&p.src) || has_bad_char(&p.tgt) {
            rep.bad_chars += 1;
            continue;
        }
        if let Some(side) = word_side {
            let words = if side == 0 { &p.src } else { &p.tgt }
                .split_whitespace()
                .count();
            if !(3..=50).contains(&words) {
                rep.word_count += 1;
                continue;
            }
        }
        let a = tok.encode(&p.src, false)?.len();
        let b = tok.encode(&p.tgt, false)?.len();
        if a.abs_diff(b) > 5 {
            rep.length_gap += 1;
            continue;
        }
        kept.push(p.clone());
    }
    rep.kept = kept.len();
    Ok((kept, rep))
}

/// The project's own data folder (`data/` at the crate root).
pub fn shipped_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}
