//! The original translation score: attention on the "diagonal" from target-language tokens to
//! the source tokens they line up with, per head, against a random-pairing control; and an
//! alignment-aware variant.
//!
//! For a prompt `"{SRC}: {src} {TGT}: {tgt}"` (BOS first), t is the position of the token of
//! `" {TGT}"` (searched from position 3), and each head's pattern is cropped to
//! `pattern[h][t.., bos..t]` with bos = 1: rows from the target tag to the end, columns from
//! after BOS to just before the tag, so row 0 (" FR") faces column 0 ("EN"), row 1 (":")
//! column 1 (":"), and the sentences face each other from there. The score is the mean of that
//! rectangle's main diagonal and of its ±1 … ±bandwidth off-diagonals, each averaged
//! separately, then averaged together.

use candle_core::{DType, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::stats::spearman;
use crate::table::{Axis, Table};
use crate::translation::data::{random_pairing, SentencePair};

/// Options for scoring.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Off-diagonals on each side of the main one (the original uses 1).
    pub bandwidth: usize,
    /// Prompts per batched forward.
    pub batch: usize,
    /// No progress output.
    pub quiet: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            bandwidth: 1,
            batch: 8,
            quiet: false,
        }
    }
}

/// The prompt of the original study: `"{SRC}: {src} {TGT}: {tgt}"`, codes in capitals.
pub fn prompt(src_lang: &str, tgt_lang: &str, pair: &SentencePair) -> String {
    format!(
        "{}: {} {}: {}",
        src_lang.to_uppercase(),
        pair.src,
        tgt_lang.to_uppercase(),
        pair.tgt
    )
}

/// The position of the first `tag` token at or after `from`.
pub fn locate_target(tokens: &[u32], tag: u32, from: usize) -> Option<usize> {
    tokens
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, &t)| t == tag)
        .map(|(i, _)| i)
}

/// Mean of the main diagonal and the ±1…±bandwidth off-diagonals of a [rows × cols]
/// rectangle (row-major), each diagonal averaged on its own first; diagonals that fall
/// outside the rectangle are skipped. NaN when none fits.
pub fn diagonal_score(rect: &[f32], rows: usize, cols: usize, bandwidth: usize) -> f32 {
    let mut means = Vec::new();
    let b = bandwidth as isize;
    for k in -b..=b {
        let (mut sum, mut n) = (0f32, 0usize);
        for i in 0..rows as isize {
            let j = i + k;
            if j >= 0 && (j as usize) < cols {
                sum += rect[i as usize * cols + j as usize];
                n += 1;
            }
        }
        if n > 0 {
            means.push(sum / n as f32);
        }
    }
    if means.is_empty() {
        f32::NAN
    } else {
        means.iter().sum::<f32>() / means.len() as f32
    }
}

/// The original score of one head's full pattern ([s × s], rows = queries): crop
/// `pattern[t.., 1..t]` and take [`diagonal_score`].
pub fn score_pattern(pattern: &[Vec<f32>], t: usize, bandwidth: usize) -> f32 {
    let s = pattern.len();
    if t < 2 || t >= s {
        return f32::NAN;
    }
    let (rows, cols) = (s - t, t - 1);
    let rect: Vec<f32> = (t..s)
        .flat_map(|q| (1..t).map(move |k| pattern[q][k]))
        .collect();
    diagonal_score(&rect, rows, cols, bandwidth)
}

/// One scored prompt: its tokens, where things are, and every head's cropped pattern.
#[derive(Debug, Clone)]
pub struct PromptAttention {
    /// Token ids, BOS first.
    pub tokens: Vec<u32>,
    /// Position of the target-language tag.
    pub t: usize,
    /// Source sentence positions [start, end).
    pub src_span: (usize, usize),
    /// Target sentence positions [start, end).
    pub tgt_span: (usize, usize),
    /// Rows of each crop (len − t).
    pub rows: usize,
    /// Columns of each crop (t − 1).
    pub cols: usize,
    /// Crops, [layer × head][rows × cols].
    pub crops: Vec<Vec<f32>>,
}

impl PromptAttention {
    /// Attention of head `lh` from absolute position `q` to absolute position `k` (k ≥ 1, q ≥ t).
    pub fn at(&self, lh: usize, q: usize, k: usize) -> f32 {
        self.crops[lh][(q - self.t) * self.cols + (k - 1)]
    }
}

/// Runs the prompts (batched, right-padded, no logits) and crops every head's pattern.
pub fn attend(
    model: &HookedTransformer,
    prompts: &[String],
    src_lang: &str,
    tgt_lang: &str,
    opts: &ScoreOptions,
) -> Result<Vec<PromptAttention>> {
    let tok = model.tokenizer()?;
    let cfg = model.cfg();
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
    let mut out = Vec::with_capacity(prompts.len());
    let mut progress = Progress::new(
        &format!("attention {src_lang}→{tgt_lang}"),
        prompts.len(),
        opts.quiet,
    );
    for chunk in prompts.chunks(opts.batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let batch = model.to_tokens_batch(&refs)?;
        let lens = model.seq_lengths(&batch)?;
        let cache = model.cache_activations(&batch, |n: &str| n.ends_with("attn.hook_pattern"))?;
        let ids = batch.to_vec2::<u32>()?;
        let mut per_layer: Vec<Tensor> = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            per_layer.push(cache.pattern(l)?.to_dtype(DType::F32)?);
        }
        for (b, text) in chunk.iter().enumerate() {
            let n = lens[b];
            let tokens = ids[b][..n].to_vec();
            let t = locate_target(&tokens, tag, 3).ok_or_else(|| {
                Error::Invalid(format!(
                    "no {:?} tag token (id {tag}) at position 3 or later in {text:?}",
                    format!(" {}", tgt_lang.to_uppercase())
                ))
            })?;
            // The target sentence starts after the tag's own tokens (" FR", ":").
            let tag_len = tok
                .encode(&format!(" {}:", tgt_lang.to_uppercase()), false)?
                .len();
            let (rows, cols) = (n - t, t - 1);
            let mut crops = Vec::with_capacity(cfg.n_layers * cfg.n_heads);
            for pl in &per_layer {
                let p = pl.i(b)?; // [heads, s, s]
                let p = p.narrow(1, t, rows)?.narrow(2, 1, cols)?.contiguous()?;
                let v = p.flatten_all()?.to_vec1::<f32>()?;
                for h in 0..cfg.n_heads {
                    crops.push(v[h * rows * cols..(h + 1) * rows * cols].to_vec());
                }
            }
            out.push(PromptAttention {
                tokens,
                t,
                src_span: (src_head.min(t), t),
                tgt_span: ((t + tag_len).min(n), n),
                rows,
                cols,
                crops,
            });
        }
        progress.inc(chunk.len());
    }
    progress.finish();
    Ok(out)
}

/// Diagonal scores of scored prompts, [prompt][layer × head].
pub fn diagonal_scores(attn: &[PromptAttention], bandwidth: usize) -> Vec<Vec<f32>> {
    attn.iter()
        .map(|a| {
            a.crops
                .iter()
                .map(|c| diagonal_score(c, a.rows, a.cols, bandwidth))
                .collect()
        })
        .collect()
}

/// Mean over prompts, as a [layers × heads] table.
pub fn mean_table(
    model: &HookedTransformer,
    per_prompt: &[Vec<f32>],
    title: &str,
) -> Result<Table> {
    let cfg = model.cfg();
    let n = per_prompt.len().max(1) as f32;
    let mut v = vec![0f32; cfg.n_layers * cfg.n_heads];
    for row in per_prompt {
        for (a, x) in v.iter_mut().zip(row) {
            *a += x / n;
        }
    }
    Table::from_values(
        title,
        vec![
            Axis::numbered("layer", cfg.n_layers),
            Axis::numbered("head", cfg.n_heads),
        ],
        v,
    )
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
    /// Cropped patterns of the translation prompts (for the alignment-aware variant).
    pub attention: Vec<PromptAttention>,
    /// Cropped patterns of the random prompts.
    pub random_attention: Vec<PromptAttention>,
}

impl HeadScores {
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
    let tok = model.tokenizer()?;
    let lens = pairs
        .iter()
        .map(|p| Ok(tok.encode(&p.tgt, false)?.len()))
        .collect::<Result<Vec<_>>>()?;
    let random = random_pairing(pairs, &lens)?;
    let tp: Vec<String> = pairs.iter().map(|p| prompt(src, tgt, p)).collect();
    let rp: Vec<String> = random.iter().map(|p| prompt(src, tgt, p)).collect();
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
        attention,
        random_attention,
    })
}

/// Which source position each target token aligns with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentSource {
    /// The same token (names, numbers, cognates, punctuation) in the source.
    Identical,
    /// The source token most attended by the heads that score best on the other half.
    Model,
}

/// The alignment-aware score: the attention from each target token to its aligned source token.
#[derive(Debug, Clone)]
pub struct AlignedScores {
    /// Mean aligned-attention score on translation prompts, [layers × heads].
    pub translation: Table,
    /// The same on the random control.
    pub random: Table,
    /// translation − random.
    pub diff: Table,
    /// Share of target tokens aligned by identical tokens (the rest by the model).
    pub identical_share: f32,
    /// Spearman rank correlation of `diff` with the diagonal score's difference.
    pub spearman_vs_diagonal: f32,
}

/// The alignment-aware variant. Alignment uses identical tokens where there are any, else the
/// source token most attended (on average) by the `k` heads with the highest diagonal
/// difference on the *other* half of the pairs (cross-fitting, so no head is chosen and scored
/// on the same data). The random control is aligned the same way.
pub fn aligned_scores(
    model: &HookedTransformer,
    hs: &HeadScores,
    k: usize,
) -> Result<AlignedScores> {
    let cfg = model.cfg();
    let nh = cfg.n_layers * cfg.n_heads;
    // Top-k heads by diagonal difference computed on each half.
    let half_mean = |rows: &[Vec<f32>], parity: usize| -> Vec<f32> {
        let mut sum = vec![0f32; nh];
        let mut n = 0f32;
        for row in rows.iter().skip(parity).step_by(2) {
            for (a, x) in sum.iter_mut().zip(row) {
                *a += x;
            }
            n += 1.0;
        }
        sum.iter().map(|x| x / n.max(1.0)).collect()
    };
    let half_top = |parity: usize| -> Vec<usize> {
        let d = half_mean(&hs.per_pair_translation, parity);
        let r = half_mean(&hs.per_pair_random, parity);
        let mut idx: Vec<usize> = (0..nh).collect();
        idx.sort_by(|&a, &b| (d[b] - r[b]).total_cmp(&(d[a] - r[a])));
        idx.truncate(k.max(1));
        idx
    };
    let tops = [half_top(1), half_top(0)]; // heads for prompts of parity 0 come from half 1
    let identical = std::cell::Cell::new(0usize);
    let total = std::cell::Cell::new(0usize);
    let score = |attn: &[PromptAttention]| -> Vec<Vec<f32>> {
        attn.iter()
            .enumerate()
            .map(|(i, a)| {
                let heads = &tops[i % 2];
                let (s0, s1) = a.src_span;
                let (t0, t1) = a.tgt_span;
                let mut align = Vec::new();
                for q in t0..t1 {
                    if s1 <= s0 {
                        break;
                    }
                    let same: Vec<usize> =
                        (s0..s1).filter(|&k| a.tokens[k] == a.tokens[q]).collect();
                    let target = if !same.is_empty() {
                        identical.set(identical.get() + 1);
                        // The occurrence at the most similar relative position.
                        let rel = (q - t0) as f32 / (t1 - t0).max(1) as f32;
                        *same
                            .iter()
                            .min_by(|&&x, &&y| {
                                let rx = ((x - s0) as f32 / (s1 - s0) as f32 - rel).abs();
                                let ry = ((y - s0) as f32 / (s1 - s0) as f32 - rel).abs();
                                rx.total_cmp(&ry)
                            })
                            .unwrap_or(&s0)
                    } else {
                        (s0..s1)
                            .max_by(|&x, &y| {
                                let ax: f32 = heads.iter().map(|&h| a.at(h, q, x)).sum();
                                let ay: f32 = heads.iter().map(|&h| a.at(h, q, y)).sum();
                                ax.total_cmp(&ay)
                            })
                            .unwrap_or(s0)
                    };
                    total.set(total.get() + 1);
                    align.push((q, target));
                }
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
        spearman_vs_diagonal,
    })
}
