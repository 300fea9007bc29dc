//! Sentence pairs: loading `src<TAB>tgt` files, the original study's filter, and its random
//! control pairing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;

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

/// The original random control: pairs sorted by the target's token count (longest first);
/// neighbours swap targets (source i with target i+1 and source i+1 with target i); with an
/// odd count, the three longest rotate (s1+t2, s2+t3, s3+t1). Every source and every target
/// is used once, next to a sentence of about the same length that is not its translation.
pub fn random_pairing(
    pairs: &[SentencePair],
    target_tokens: &[usize],
) -> Result<Vec<SentencePair>> {
    Ok(random_pairing_indexed(pairs, target_tokens)?
        .into_iter()
        .map(|(s, t)| SentencePair {
            src: pairs[s].src.clone(),
            tgt: pairs[t].tgt.clone(),
        })
        .collect())
}

/// [`random_pairing`] as (source index, target index) per random prompt, in its order.
pub fn random_pairing_indexed(
    pairs: &[SentencePair],
    target_tokens: &[usize],
) -> Result<Vec<(usize, usize)>> {
    if pairs.len() != target_tokens.len() {
        return Err(Error::Shape(format!(
            "{} pairs but {} token counts",
            pairs.len(),
            target_tokens.len()
        )));
    }
    if pairs.len() < 2 {
        return Err(Error::Invalid(
            "the random control needs at least two sentence pairs".into(),
        ));
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    // Stable, longest first: equal lengths keep file order.
    order.sort_by(|&a, &b| target_tokens[b].cmp(&target_tokens[a]));
    let mut out = Vec::with_capacity(pairs.len());
    let mut i = 0;
    if order.len() % 2 == 1 {
        let (a, b, c) = (order[0], order[1], order[2]);
        out.extend([(a, b), (b, c), (c, a)]);
        i = 3;
    }
    while i + 1 < order.len() {
        let (a, b) = (order[i], order[i + 1]);
        out.extend([(a, b), (b, a)]);
        i += 2;
    }
    Ok(out)
}

/// Whether a random prompt (source `s`, target `t`) could be a translation: the source's own
/// target, or a target with the same text (case and spacing aside).
fn could_translate(pairs: &[SentencePair], s: usize, t: usize) -> bool {
    let norm = |x: &str| {
        x.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    s == t || norm(&pairs[s].tgt) == norm(&pairs[t].tgt)
}

/// The original pairing with every prompt that could be a translation re-paired: its target
/// is swapped with the nearest prompt's (in length order) for which both results are clean.
/// Returns the pairing and how many swaps were needed; refuses a data set where none exists.
pub fn clean_random_pairing(
    pairs: &[SentencePair],
    target_tokens: &[usize],
) -> Result<(Vec<(usize, usize)>, usize)> {
    let mut out = random_pairing_indexed(pairs, target_tokens)?;
    let mut swaps = 0;
    for j in 0..out.len() {
        if !could_translate(pairs, out[j].0, out[j].1) {
            continue;
        }
        let candidate = (1..out.len())
            .flat_map(|d| [j.checked_add(d), j.checked_sub(d)])
            .flatten()
            .filter(|&k| k < out.len())
            .find(|&k| {
                !could_translate(pairs, out[j].0, out[k].1)
                    && !could_translate(pairs, out[k].0, out[j].1)
            });
        let Some(k) = candidate else {
            return Err(Error::Invalid(format!(
                "the random control cannot pair source {:?} with a target that is not its translation: every other target has the same text; remove the duplicates from the data",
                pairs[out[j].0].src
            )));
        };
        let t = out[j].1;
        out[j].1 = out[k].1;
        out[k].1 = t;
        swaps += 1;
    }
    Ok((out, swaps))
}

/// The project's own data folder (`data/` at the crate root).
pub fn shipped_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}
