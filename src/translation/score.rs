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
use crate::translation::align::{anchor_agreement, Model1};
use crate::translation::data::{clean_random_pairing, random_pairing_indexed, SentencePair};

/// Options for scoring.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Off-diagonals on each side of the main one (the original uses 1).
    pub bandwidth: usize,
    /// Prompts per batched forward.
    pub batch: usize,
    /// No progress output.
    pub quiet: bool,
    /// Re-pair random prompts that could be translations (a source with its own target or a
    /// target of the same text). `false` keeps the original study's pairing exactly.
    pub clean_control: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            bandwidth: 1,
            batch: 8,
            quiet: false,
            clean_control: true,
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
fn code_spans(
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

/// Each prompt's cropped attention patterns, in batches (`opts.batch`), for prompts in the
/// original `"{SRC}: {src} {TGT}: {tgt}"` format.
pub fn attend(
    model: &HookedTransformer,
    prompts: &[String],
    src_lang: &str,
    tgt_lang: &str,
    opts: &ScoreOptions,
) -> Result<Vec<PromptAttention>> {
    let spans = code_spans(model, prompts, src_lang, tgt_lang)?;
    attend_at(
        model,
        prompts,
        &spans,
        &format!("{src_lang}→{tgt_lang}"),
        opts,
    )
}

/// Each prompt's cropped attention patterns at the given spans: rows from the target's tag
/// on, columns 1..t (every key after BOS before the tag).
pub fn attend_at(
    model: &HookedTransformer,
    prompts: &[String],
    spans: &[Spans],
    label: &str,
    opts: &ScoreOptions,
) -> Result<Vec<PromptAttention>> {
    let cfg = model.cfg();
    if spans.len() != prompts.len() {
        return Err(Error::Shape(format!(
            "{} spans for {} prompts",
            spans.len(),
            prompts.len()
        )));
    }
    // Prompts of similar length share a batch, since every row is padded to the longest one:
    // in the data's order a batch of 8 wastes about a third of its positions.
    let tok = model.tokenizer()?;
    let lens = prompts
        .iter()
        .map(|p| Ok(tok.encode(p, model.prepend_bos())?.len()))
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut out: Vec<Option<PromptAttention>> = (0..prompts.len()).map(|_| None).collect();
    let mut progress = Progress::new(&format!("attention {label}"), prompts.len(), opts.quiet);
    for chunk in order.chunks(opts.batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(|&i| prompts[i].as_str()).collect();
        let batch = model.to_tokens_batch(&refs)?;
        let lens = model.seq_lengths(&batch)?;
        let cache = model.cache_activations(&batch, |n: &str| n.ends_with("attn.hook_pattern"))?;
        let ids = batch.to_vec2::<u32>()?;
        let mut per_layer: Vec<Tensor> = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            per_layer.push(cache.pattern(l)?.to_dtype(DType::F32)?);
        }
        for (b, &i) in chunk.iter().enumerate() {
            let sp = &spans[i];
            let n = lens[b];
            let tokens = ids[b][..n].to_vec();
            let t = sp.t;
            if t < 2 || t >= n {
                return Err(Error::Invalid(format!(
                    "the target tag of {:?} is at position {t} of {n}; it must follow the source and precede the target",
                    prompts[i]
                )));
            }
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
            out[i] = Some(PromptAttention {
                tokens,
                t,
                src_span: (sp.src_start.min(t), t),
                tgt_span: (sp.tgt_start.min(n), n),
                rows,
                cols,
                crops,
            });
        }
        progress.inc(chunk.len());
    }
    progress.finish();
    Ok(out.into_iter().flatten().collect())
}

/// The English name of a language code, for the `Names` prompt format.
pub fn language_name(code: &str) -> Option<&'static str> {
    Some(match code.to_lowercase().as_str() {
        "en" => "English",
        "fr" => "French",
        "de" => "German",
        "es" => "Spanish",
        "it" => "Italian",
        "pt" => "Portuguese",
        "nl" => "Dutch",
        "ru" => "Russian",
        "pl" => "Polish",
        "uk" => "Ukrainian",
        "tr" => "Turkish",
        "ja" => "Japanese",
        "zh" | "cmn" => "Chinese",
        "ko" => "Korean",
        "ar" => "Arabic",
        "he" => "Hebrew",
        "hi" => "Hindi",
        "vi" => "Vietnamese",
        "sv" => "Swedish",
        "fi" => "Finnish",
        "el" => "Greek",
        "cs" => "Czech",
        "hu" => "Hungarian",
        "id" => "Indonesian",
        _ => return None,
    })
}

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
    let tok = model.tokenizer()?;
    let lens = pairs
        .iter()
        .map(|p| Ok(tok.encode(&p.tgt, false)?.len()))
        .collect::<Result<Vec<_>>>()?;
    let (random, repairings) = if opts.clean_control {
        clean_random_pairing(pairs, &lens)?
    } else {
        (random_pairing_indexed(pairs, &lens)?, 0)
    };
    let tp: Vec<String> = pairs.iter().map(|p| prompt(src, tgt, p)).collect();
    let rp: Vec<String> = random
        .iter()
        .map(|&(s, t)| {
            let p = SentencePair {
                src: pairs[s].src.clone(),
                tgt: pairs[t].tgt.clone(),
            };
            prompt(src, tgt, &p)
        })
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
