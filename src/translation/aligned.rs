//! The alignment-aware score: attention from each target token to the source token a
//! model-free word alignment ([`crate::translation::align`]) pairs it with.

use crate::error::Result;
use crate::model::HookedTransformer;
use crate::stats::spearman;
use crate::table::Table;
use crate::translation::align::{anchor_agreement, Model1};
use crate::translation::attend::PromptAttention;
use crate::translation::diagonal::mean_table;
use crate::translation::heads::HeadScores;

/// The alignment-aware score: the attention from each target token to its aligned source
/// token, aligned by a model-free word alignment ([`crate::translation::align`]).
#[derive(Debug, Clone)]
pub struct AlignedScores {
    /// Mean aligned-attention score on translation prompts, [layers × heads].
    pub translation: Table,
    /// The same on the random control.
    pub random: Table,
    /// translation − random.
    pub diff: Table,
    /// Share of target tokens aligned by identical tokens (the rest by IBM Model 1).
    pub identical_share: f32,
    /// Where a target token has an identical source token, the share for which Model 1 alone
    /// also picks an identical token: how well the lexical alignment agrees with the anchors.
    pub anchor_agreement: f32,
    /// Spearman rank correlation of `diff` with the diagonal score's difference.
    pub spearman_vs_diagonal: f32,
}

/// The alignment-aware variant. IBM Model 1 with a diagonal prior is trained by EM on the
/// translation prompts' (source, target) tokens; each target token aligns with an identical
/// source token where there is one, else with Model 1's choice. No attention head takes part,
/// so the score's agreement with the diagonal score is evidence, not construction. The random
/// control is aligned by the same model.
pub fn aligned_scores(model: &HookedTransformer, hs: &HeadScores) -> Result<AlignedScores> {
    let cfg = model.cfg();
    let nh = cfg.n_layers * cfg.n_heads;
    let spans = |a: &PromptAttention| {
        let (s0, s1) = a.src_span;
        let (t0, t1) = a.tgt_span;
        (a.tokens[s0..s1].to_vec(), a.tokens[t0..t1].to_vec())
    };
    let training: Vec<(Vec<u32>, Vec<u32>)> = hs.attention.iter().map(spans).collect();
    let m1 = Model1::train(&training);
    let anchor_agreement = anchor_agreement(&m1, &training);
    let (identical, total) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let score = |attn: &[PromptAttention]| -> Vec<Vec<f32>> {
        attn.iter()
            .map(|a| {
                let (src, tgt) = spans(a);
                let align: Vec<(usize, usize)> = m1
                    .align(&src, &tgt)
                    .into_iter()
                    .enumerate()
                    .map(|(j, (i, same))| {
                        identical.set(identical.get() + usize::from(same));
                        total.set(total.get() + 1);
                        (a.tgt_span.0 + j, a.src_span.0 + i)
                    })
                    .collect();
                (0..nh)
                    .map(|h| {
                        if align.is_empty() {
                            f32::NAN
                        } else {
                            align.iter().map(|&(q, s)| a.at(h, q, s)).sum::<f32>()
                                / align.len() as f32
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let tr = score(&hs.attention);
    let identical_share = identical.get() as f32 / total.get().max(1) as f32;
    let rr = score(&hs.random_attention);
    let keep = |rows: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
        rows.into_iter()
            .filter(|r| r.iter().all(|x| x.is_finite()))
            .collect()
    };
    let translation = mean_table(model, &keep(tr), "aligned translation")?;
    let random = mean_table(model, &keep(rr), "aligned random")?;
    let diff = translation.minus(&random, "aligned translation − random")?;
    let spearman_vs_diagonal = spearman(&diff.values, &hs.diff.values);
    Ok(AlignedScores {
        translation,
        random,
        diff,
        identical_share,
        anchor_agreement,
        spearman_vs_diagonal,
    })
}
