//! Path patching from every head to the logits, corrupted into clean (as Zhang et al. 2025),
//! and how its ranking of heads compares with the attention score's.

use candle_core::Tensor;

use crate::error::Result;
use crate::metrics::LogitDiff;
use crate::model::HookedTransformer;
use crate::patching::{Direction, Patcher, Receivers};
use crate::progress::Progress;
use crate::stats::spearman;
use crate::table::Table;
use crate::translation::causal::CausalOptions;
use crate::translation::data::SentencePair;
use crate::translation::prompt::forced_prompt;
use crate::translation::stage::Shortfall;

/// How path patching ranks heads, against the attention score.
#[derive(Debug, Clone)]
pub struct PathRanking {
    /// Mean normalised drop of the metric when the head's path to the logits carries the
    /// corrupted source, [layers × heads] (1 = the whole clean − corrupted gap).
    pub importance: Table,
    /// Spearman correlation with the attention score's difference.
    pub spearman_vs_attention: f32,
    /// How many of the attention score's top 10 heads are in path patching's top 10.
    pub top10_overlap: usize,
    /// Prompt pairs used.
    pub n_pairs: usize,
}

/// Path patching from every head to the logits, corrupted into clean: the clean prompt
/// `"{SRC}: {src} {TGT}:"` should continue with its translation's first token; the corrupted
/// one has another source sentence of the same token length (whose translation starts
/// differently). The metric is the logit difference between the two first tokens. Too few
/// usable prompt pairs is an error here; [`try_path_ranking`] tells it apart.
pub fn path_ranking(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    attention_diff: &Table,
    opts: &CausalOptions,
) -> Result<PathRanking> {
    Ok(try_path_ranking(
        model,
        pairs,
        src,
        tgt,
        attention_diff,
        opts,
    )??)
}

/// [`path_ranking`], with a [`Shortfall`] when no prompt pair is usable: none of the
/// sources has a partner of the same prompt length whose translation starts differently,
/// or every such pair's clean and corrupted runs score alike.
pub fn try_path_ranking(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    attention_diff: &Table,
    opts: &CausalOptions,
) -> Result<Result<PathRanking, Shortfall>> {
    let tok = model.tokenizer()?;
    let enc = pairs
        .iter()
        .map(|p| {
            Ok((
                model.encode(&forced_prompt(src, tgt, p))?,
                tok.encode(&format!(" {}", p.tgt), false)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sum: Option<Table> = None;
    let mut used = 0usize;
    let mut progress = Progress::new(
        &format!("path patching {src}→{tgt}"),
        opts.path_pairs,
        opts.quiet,
    );
    for i in 0..pairs.len() {
        if used >= opts.path_pairs {
            break;
        }
        let Some(drop) = normalised_drop(model, &enc, i)? else {
            continue;
        };
        sum = Some(match sum {
            None => drop,
            Some(s) => Table {
                values: s
                    .values
                    .iter()
                    .zip(&drop.values)
                    .map(|(a, b)| a + b)
                    .collect(),
                ..s
            },
        });
        used += 1;
        progress.inc(1);
    }
    progress.finish();
    let Some(sum) = sum else {
        return Ok(Err(Shortfall {
            reason: format!(
                "no usable prompt pairs for path patching {src}→{tgt}: it needs two pairs whose prompts have the same token length and whose translations start with different tokens"
            ),
            needs: 2,
            had: pairs.len(),
        }));
    };
    let mut importance = sum.map(|v| v / used as f32);
    importance.title =
        format!("path patching to logits, corrupted into clean ({src}→{tgt}): normalised drop");
    Ok(Ok(ranking(importance, attention_diff, used)))
}

/// Each head's normalised drop with source `i` clean and the first other source of the same
/// prompt length whose translation starts differently corrupted; `None` when there is no such
/// source or the two runs' metrics differ by less than 1e-3. `enc` holds each pair's prompt
/// and continuation ids.
fn normalised_drop(
    model: &HookedTransformer,
    enc: &[(Vec<u32>, Vec<u32>)],
    i: usize,
) -> Result<Option<Table>> {
    let Some(j) = (0..enc.len()).find(|&j| {
        j != i && enc[j].0.len() == enc[i].0.len() && enc[j].1.first() != enc[i].1.first()
    }) else {
        return Ok(None);
    };
    let (Some(&answer), Some(&wrong)) = (enc[i].1.first(), enc[j].1.first()) else {
        return Ok(None);
    };
    let clean = Tensor::from_vec(enc[i].0.clone(), (1, enc[i].0.len()), model.device())?;
    let corrupt = Tensor::from_vec(enc[j].0.clone(), (1, enc[j].0.len()), model.device())?;
    let p =
        Patcher::from_tokens(model, &clean, &corrupt, LogitDiff::new(answer, wrong))?.quiet(true);
    let gap = p.clean_value() - p.corrupted_value();
    if gap.abs() < 1e-3 {
        return Ok(None);
    }
    let r = p.path_sweep(&Receivers::Logits, Direction::Noise, false)?;
    Ok(Some(r.table.map(|v| (p.clean_value() - v) / gap)))
}

/// The ranking's agreement with the attention score's difference: Spearman, and the overlap
/// of the two top-10 lists.
fn ranking(importance: Table, attention_diff: &Table, used: usize) -> PathRanking {
    let top = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        idx.truncate(10);
        idx
    };
    let (a, b) = (top(&importance.values), top(&attention_diff.values));
    PathRanking {
        spearman_vs_attention: spearman(&importance.values, &attention_diff.values),
        top10_overlap: a.iter().filter(|x| b.contains(x)).count(),
        importance,
        n_pairs: used,
    }
}
