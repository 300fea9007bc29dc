//! Per-head scores of a direction: translation prompts against the random control, in the
//! original format and in the second (language-name) format.

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::table::Table;
use crate::translation::attend::{attend, attend_at, PromptAttention};
use crate::translation::data::SentencePair;
use crate::translation::diagonal::{diagonal_scores, mean_table};
use crate::translation::pairing::{control_pairing, mixed_pair};
use crate::translation::prompt::{language_name, prompt};
use crate::translation::score::ScoreOptions;
use crate::translation::spans::Spans;

/// Diagonal scores, per pair, in the second prompt format `"{Source}: {src}\n{Target}: {tgt}"`
/// (language names, one line each): [pair][layer × head]. Spans come from tokenizing the
/// prompt's prefixes, which must tokenize as prefixes of the whole prompt.
pub fn name_format_scores(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    opts: &ScoreOptions,
) -> Result<Vec<Vec<f32>>> {
    let name = |c: &str| {
        language_name(c).ok_or_else(|| {
            Error::Invalid(format!(
                "no English name known for language code {c:?}; the second prompt format needs one"
            ))
        })
    };
    let (sn, tn) = (name(src)?, name(tgt)?);
    let tok = model.tokenizer()?;
    let bos = model.prepend_bos();
    let mut prompts = Vec::with_capacity(pairs.len());
    let mut spans = Vec::with_capacity(pairs.len());
    for p in pairs {
        let head = format!("{sn}:");
        let with_src = format!("{sn}: {}", p.src);
        let with_tag = format!("{with_src}\n{tn}:");
        let full = format!("{with_tag} {}", p.tgt);
        let ids = tok.encode(&full, bos)?;
        let prefix = |x: &str| -> Result<usize> {
            let v = tok.encode(x, bos)?;
            if ids.starts_with(&v) {
                Ok(v.len())
            } else {
                Err(Error::Invalid(format!(
                    "{x:?} does not tokenize as a prefix of {full:?}; the spans of the second format cannot be found"
                )))
            }
        };
        spans.push(Spans {
            src_start: prefix(&head)?,
            t: prefix(&with_src)?,
            tgt_start: prefix(&with_tag)?,
        });
        prompts.push(full);
    }
    let attn = attend_at(model, &prompts, &spans, &format!("{sn}→{tn} (names)"), opts)?;
    Ok(diagonal_scores(&attn, opts.bandwidth))
}

/// The original score averaged over pairs, [layers × heads].
pub fn translation_scores(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    opts: &ScoreOptions,
) -> Result<Table> {
    let prompts: Vec<String> = pairs.iter().map(|p| prompt(src, tgt, p)).collect();
    let attn = attend(model, &prompts, src, tgt, opts)?;
    mean_table(
        model,
        &diagonal_scores(&attn, opts.bandwidth),
        &format!("translation score {src}→{tgt}"),
    )
}

/// Translation and random-control scores of a direction, per pair and averaged.
#[derive(Debug, Clone)]
pub struct HeadScores {
    /// Mean translation score, [layers × heads].
    pub translation: Table,
    /// Mean random-control score.
    pub random: Table,
    /// translation − random.
    pub diff: Table,
    /// Per pair, [pair][layer × head].
    pub per_pair_translation: Vec<Vec<f32>>,
    /// Per random prompt, [prompt][layer × head].
    pub per_pair_random: Vec<Vec<f32>>,
    /// (source, target) indices into the pairs of each random prompt: random prompt j shares
    /// its source with translation prompt `random_pairing[j].0`.
    pub random_pairing: Vec<(usize, usize)>,
    /// Random prompts re-paired because they could have been translations.
    pub repairings: usize,
    /// Cropped patterns of the translation prompts (for the alignment-aware variant).
    pub attention: Vec<PromptAttention>,
    /// Cropped patterns of the random prompts.
    pub random_attention: Vec<PromptAttention>,
}

impl HeadScores {
    /// Per source sentence, translation − random for the prompts that share it:
    /// [source][layer × head], the unit of the paired design.
    pub fn paired_differences(&self) -> Vec<Vec<f32>> {
        let mut d = self.per_pair_translation.clone();
        for (j, &(s, _)) in self.random_pairing.iter().enumerate() {
            for (a, r) in d[s].iter_mut().zip(&self.per_pair_random[j]) {
                *a -= r;
            }
        }
        d
    }

    /// Heads whose difference exceeds `threshold`, as (layer, head, difference), largest first.
    pub fn heads_above(&self, threshold: f32) -> Vec<(usize, usize, f32)> {
        let h = self.diff.axes[1].len();
        let mut v: Vec<(usize, usize, f32)> = self
            .diff
            .values
            .iter()
            .enumerate()
            .filter(|(_, &d)| d > threshold)
            .map(|(i, &d)| (i / h, i % h, d))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }
}

/// Scores a direction: translation prompts, the random control, and their difference.
pub fn score_heads(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    opts: &ScoreOptions,
) -> Result<HeadScores> {
    let (random, repairings) = control_pairing(model, pairs, opts.clean_control)?;
    let tp: Vec<String> = pairs.iter().map(|p| prompt(src, tgt, p)).collect();
    let rp: Vec<String> = random
        .iter()
        .map(|&(s, t)| prompt(src, tgt, &mixed_pair(pairs, s, t)))
        .collect();
    let attention = attend(model, &tp, src, tgt, opts)?;
    let random_attention = attend(model, &rp, src, tgt, opts)?;
    let per_pair_translation = diagonal_scores(&attention, opts.bandwidth);
    let per_pair_random = diagonal_scores(&random_attention, opts.bandwidth);
    let translation = mean_table(
        model,
        &per_pair_translation,
        &format!("translation {src}→{tgt}"),
    )?;
    let random_t = mean_table(model, &per_pair_random, &format!("random {src}→{tgt}"))?;
    let diff = translation.minus(&random_t, format!("translation − random {src}→{tgt}"))?;
    Ok(HeadScores {
        translation,
        random: random_t,
        diff,
        per_pair_translation,
        per_pair_random,
        random_pairing: random.clone(),
        repairings,
        attention,
        random_attention,
    })
}
