//! The random control's pairing: each source with a target of about the same length that is
//! not its translation, as the original study paired them, optionally cleaned of prompts that
//! could still be translations.

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::translation::data::SentencePair;

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
        .map(|(s, t)| mixed_pair(pairs, s, t))
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

/// A random prompt's sentences: the source of pair `s` with the target of pair `t`.
pub fn mixed_pair(pairs: &[SentencePair], s: usize, t: usize) -> SentencePair {
    SentencePair {
        src: pairs[s].src.clone(),
        tgt: pairs[t].tgt.clone(),
    }
}

/// The random control's (source, target) indices for `pairs`, ordered by the targets' token
/// counts, and how many prompts were re-paired: cleaned when `clean`, else exactly the
/// original study's pairing (no re-pairings).
pub fn control_pairing(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    clean: bool,
) -> Result<(Vec<(usize, usize)>, usize)> {
    let tok = model.tokenizer()?;
    let lens = pairs
        .iter()
        .map(|p| Ok(tok.encode(&p.tgt, false)?.len()))
        .collect::<Result<Vec<_>>>()?;
    if clean {
        clean_random_pairing(pairs, &lens)
    } else {
        Ok((random_pairing_indexed(pairs, &lens)?, 0))
    }
}
