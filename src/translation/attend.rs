//! Attention extraction: each prompt's patterns from batched forwards, cropped to the rows from
//! the target's tag on and the columns between BOS and the tag.

use candle_core::{DType, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::translation::score::ScoreOptions;
use crate::translation::spans::{code_spans, Spans};

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
