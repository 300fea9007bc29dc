//! Role-aligned donors for resample ablation: another prompt whose source, separator and
//! target line up with this prompt's, with the donor position for every position.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::HookedTransformer;
use crate::translation::data::SentencePair;

/// Where a forced prompt's parts start: (source, separator, target), or `None` when the parts
/// do not tokenize on their own boundaries (the prompt then has no role-aligned donor).
fn segments(
    model: &HookedTransformer,
    src: &str,
    p: &SentencePair,
    ids: &[u32],
    n_prompt: usize,
) -> Result<Option<(usize, usize, usize)>> {
    let tok = model.tokenizer()?;
    let head = tok.encode(&format!("{}:", src.to_uppercase()), model.prepend_bos())?;
    let with_src = tok.encode(
        &format!("{}: {}", src.to_uppercase(), p.src),
        model.prepend_bos(),
    )?;
    let ok = ids.starts_with(&head) && ids.starts_with(&with_src) && with_src.len() <= n_prompt;
    Ok(ok.then_some((head.len(), with_src.len(), n_prompt)))
}

/// For recipient segments `r` and donor segments `d` (each (source, separator, target) starts,
/// plus total lengths), the donor position for every recipient position, or `None` when the
/// donor's parts are shorter or its prefix and separator differ in length.
fn role_map(
    r: (usize, usize, usize),
    rs: usize,
    d: (usize, usize, usize),
    ds: usize,
) -> Option<Vec<i64>> {
    let (r_src, r_sep, r_tgt) = r;
    let (d_src, d_sep, d_tgt) = d;
    if r_src != d_src
        || r_tgt - r_sep != d_tgt - d_sep
        || d_sep - d_src < r_sep - r_src
        || ds - d_tgt < rs - r_tgt
    {
        return None;
    }
    Some(
        (0..rs)
            .map(|i| {
                (if i < r_src {
                    i
                } else if i < r_sep {
                    d_src + (i - r_src)
                } else if i < r_tgt {
                    d_sep + (i - r_sep)
                } else {
                    d_tgt + (i - r_tgt)
                }) as i64
            })
            .collect(),
    )
}

/// Each forced prompt's role-aligned donors (every other prompt whose parts fit it) with
/// their position maps, found once for every layer and head set. `seqs` holds each pair's
/// forced ids and prompt length.
pub fn role_donors(
    model: &HookedTransformer,
    src: &str,
    pairs: &[SentencePair],
    seqs: &[(Vec<u32>, usize)],
) -> Result<Vec<Vec<(usize, Tensor)>>> {
    let segs = pairs
        .iter()
        .zip(seqs)
        .map(|(p, (ids, n))| segments(model, src, p, ids, *n))
        .collect::<Result<Vec<_>>>()?;
    (0..seqs.len())
        .map(|i| {
            (0..seqs.len())
                .filter(|&j| j != i)
                .filter_map(|j| match (segs[i], segs[j]) {
                    (Some(a), Some(b)) => role_map(a, seqs[i].0.len(), b, seqs[j].0.len())
                        .map(|m| Ok((j, Tensor::from_vec(m, seqs[i].0.len(), model.device())?))),
                    _ => None,
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect()
}
