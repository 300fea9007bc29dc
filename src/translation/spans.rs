//! Where a prompt's parts are: the source sentence, the target-language tag (where the score's
//! query rows start) and the target sentence.

use crate::error::{Error, Result};
use crate::model::HookedTransformer;

/// The position of the first `tag` token at or after `from`.
pub fn locate_target(tokens: &[u32], tag: u32, from: usize) -> Option<usize> {
    tokens
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, &t)| t == tag)
        .map(|(i, _)| i)
}

/// Where one prompt's parts are: source tokens from `src_start`, the target's tag from `t`
/// (the score's query rows start there), the target sentence from `tgt_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// First token after the source's tag.
    pub src_start: usize,
    /// First token of the target's tag (" FR", or "\nFrench").
    pub t: usize,
    /// First token of the target sentence.
    pub tgt_start: usize,
}

/// The original study's spans: the target starts at the first `" {TGT}"` tag token at
/// position 3 or later, its sentence after the tag's own tokens (" FR", ":").
pub(crate) fn code_spans(
    model: &HookedTransformer,
    prompts: &[String],
    src_lang: &str,
    tgt_lang: &str,
) -> Result<Vec<Spans>> {
    let tok = model.tokenizer()?;
    let tag_ids = tok.encode(&format!(" {}", tgt_lang.to_uppercase()), false)?;
    let tag = match tag_ids.as_slice() {
        [id] => *id,
        _ => {
            return Err(Error::Invalid(format!(
                "the language tag {:?} is {} tokens {:?}; the score needs a tag that is one token (use a two-letter code such as FR)",
                format!(" {}", tgt_lang.to_uppercase()),
                tag_ids.len(),
                tag_ids.iter().map(|&i| tok.token_str(i)).collect::<Vec<_>>()
            )))
        }
    };
    let src_head = tok
        .encode(
            &format!("{}:", src_lang.to_uppercase()),
            model.prepend_bos(),
        )?
        .len();
    let tag_len = tok
        .encode(&format!(" {}:", tgt_lang.to_uppercase()), false)?
        .len();
    prompts
        .iter()
        .map(|text| {
            let tokens = tok.encode(text, model.prepend_bos())?;
            let t = locate_target(&tokens, tag, 3).ok_or_else(|| {
                Error::Invalid(format!(
                    "no {:?} tag token (id {tag}) at position 3 or later in {text:?}",
                    format!(" {}", tgt_lang.to_uppercase())
                ))
            })?;
            Ok(Spans {
                src_start: src_head.min(t),
                t,
                tgt_start: (t + tag_len).min(tokens.len()),
            })
        })
        .collect()
}
