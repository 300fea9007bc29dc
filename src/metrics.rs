//! Metrics on logits: logit difference (plain and swap-averaged), teacher-forced
//! log-probability of a continuation, and the normalised patching metric.

use candle_core::{DType, IndexOp, Tensor, D};

use crate::error::{Error, Result};
use crate::model::logits::at_positions;
use crate::model::{HookedTransformer, LogitsView};

/// A scalar per batch row, computed from the logits at the metric's position.
///
/// `compute` must be built from differentiable tensor ops, so attribution patching can
/// backpropagate through it.
pub trait Metric: Send + Sync {
    /// A short name for tables and JSON, e.g. `logit_diff(" Paris" - " Rome")`.
    fn name(&self) -> String;
    /// The metric of each row, [b], from logits [b, d_vocab].
    fn compute(&self, logits: &Tensor) -> Result<Tensor>;
}

/// logit[correct] − logit[incorrect].
#[derive(Debug, Clone)]
pub struct LogitDiff {
    /// Token that should win.
    pub correct: u32,
    /// Token it competes with.
    pub incorrect: u32,
    label: String,
}

impl LogitDiff {
    /// From token ids.
    pub fn new(correct: u32, incorrect: u32) -> Self {
        LogitDiff {
            correct,
            incorrect,
            label: format!("logit_diff({correct} - {incorrect})"),
        }
    }

    /// From answer strings, each of which must be one token (e.g. `" Paris"`, `" Rome"`).
    pub fn from_strs(model: &HookedTransformer, correct: &str, incorrect: &str) -> Result<Self> {
        let c = single_token(model, correct)?;
        let i = single_token(model, incorrect)?;
        Ok(LogitDiff {
            correct: c,
            incorrect: i,
            label: format!("logit_diff({correct:?} - {incorrect:?})"),
        })
    }
}

impl Metric for LogitDiff {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn compute(&self, logits: &Tensor) -> Result<Tensor> {
        let v = logits.dim(D::Minus1)?;
        for t in [self.correct, self.incorrect] {
            if t as usize >= v {
                return Err(Error::Invalid(format!(
                    "token id {t} is out of range for a vocabulary of {v}"
                )));
            }
        }
        let c = logits.narrow(D::Minus1, self.correct as usize, 1)?;
        let i = logits.narrow(D::Minus1, self.incorrect as usize, 1)?;
        Ok((c - i)?.squeeze(D::Minus1)?)
    }
}

/// The id of a string that must tokenize to exactly one token (without BOS).
pub fn single_token(model: &HookedTransformer, s: &str) -> Result<u32> {
    model.token_id(s)
}

/// Logits [b, s, v] at `pos`, as [b, v]. `None` is each row's own last real token, which
/// [`crate::model::Logits`] from a padded batch know; a position that is padding in some row is refused.
pub fn logits_at(logits: &(impl LogitsView + ?Sized), pos: Option<usize>) -> Result<Tensor> {
    at_positions(logits.logits_tensor(), logits.row_lengths(), pos)
}

/// Mean over the batch of logit[correct] − logit[incorrect] at `pos` (`None`: each row's
/// last real token).
pub fn logit_diff(
    logits: &(impl LogitsView + ?Sized),
    correct: u32,
    incorrect: u32,
    pos: Option<usize>,
) -> Result<f32> {
    let per_row = LogitDiff::new(correct, incorrect).compute(&logits_at(logits, pos)?)?;
    Ok(per_row
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?)
}

/// The swap-averaged logit difference for two prompts whose answers are reversed:
/// ½·(LD_a(x − y) + LD_b(y − x)), where prompt a's answer is x and prompt b's is y
/// ("Eiffel Tower → Paris vs Rome" and "Colosseum → Rome vs Paris"). A model's prior for x
/// over y adds to one term and subtracts from the other, so it cancels.
pub fn swap_averaged_logit_diff(
    logits_a: &(impl LogitsView + ?Sized),
    logits_b: &(impl LogitsView + ?Sized),
    x: u32,
    y: u32,
    pos: Option<usize>,
) -> Result<f32> {
    Ok(0.5 * (logit_diff(logits_a, x, y, pos)? + logit_diff(logits_b, y, x, pos)?))
}

/// (patched − corrupted) / (clean − corrupted): 0 is the corrupted run, 1 the clean one.
pub fn normalized(patched: f32, clean: f32, corrupted: f32) -> f32 {
    (patched - corrupted) / (clean - corrupted)
}

/// Teacher-forced log-probability of a continuation given a prompt.
#[derive(Debug, Clone)]
pub struct ContinuationLogProb {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub total: f32,
    /// Each continuation token with its log-probability.
    pub tokens: Vec<(String, f32)>,
}

impl ContinuationLogProb {
    /// Mean log-probability per token.
    pub fn mean(&self) -> f32 {
        self.total / self.tokens.len().max(1) as f32
    }
}

/// log p(continuation | prompt), teacher-forced: the prompt (with BOS) and the continuation
/// (without) are tokenized separately and concatenated, and each continuation token is scored
/// given everything before it.
pub fn continuation_logprob(
    model: &HookedTransformer,
    prompt: &str,
    continuation: &str,
) -> Result<ContinuationLogProb> {
    let (ids, p, cont) = prompt_and_continuation(model, prompt, continuation)?;
    let logits = model.forward(&row(model, ids)?)?.i(0)?; // [n, v]
                                                          // Position i predicts token i + 1.
    score_continuation(model, &logits.narrow(0, p - 1, cont.len())?, &cont)
}

/// Teacher-forced scoring: the log-probability of `targets[j]` under each row's logits at
/// position j, logits [r, n ≥ targets.len(), v] → [r, targets.len()] (every row scores the
/// same targets, e.g. one continuation under several interventions).
pub fn token_logprobs(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (r, _, _) = logits.dims3()?;
    let n = targets.len();
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, n)?, D::Minus1)?;
    let idx = Tensor::from_vec(targets.to_vec(), (1, n, 1), logits.device())?
        .broadcast_as((r, n, 1))?
        .contiguous()?;
    Ok(lp.gather(&idx, 2)?.squeeze(2)?)
}

/// Bytes of logits one batch of [`continuation_logprobs`] may hold.
const BATCH_LOGIT_BYTES: usize = 256 << 20;
/// Most (prompt, continuation) pairs in one batch of [`continuation_logprobs`].
const MAX_BATCH: usize = 32;

/// [`continuation_logprob`] for many (prompt, continuation) pairs, run as
/// right-padded batches (up to 32 rows, and at most 256 MB of logits each): one forward per
/// batch instead of one per pair, several times faster for short prompts. Each result equals
/// its single run up to float rounding (the batched matrix products add in another order).
/// Causal attention keeps the padding after a row from reaching it; a view's hooks see padded
/// rows.
pub fn continuation_logprobs(
    model: &HookedTransformer,
    items: &[(&str, &str)],
) -> Result<Vec<ContinuationLogProb>> {
    let encoded = items
        .iter()
        .map(|(p, c)| prompt_and_continuation(model, p, c))
        .collect::<Result<Vec<_>>>()?;
    let pad = model.tokenizer()?.pad_token_id;
    let vocab = model.cfg().d_vocab;
    let mut out = Vec::with_capacity(items.len());
    let mut rest = encoded.as_slice();
    while !rest.is_empty() {
        // As many rows as fit the logits budget, counted with the longest continuation so far.
        let mut n = 0;
        let mut longest = 0;
        while n < rest.len() && n < MAX_BATCH {
            let l = longest.max(rest[n].2.len());
            if n > 0 && (n + 1) * l * vocab * 4 > BATCH_LOGIT_BYTES {
                break;
            }
            longest = l;
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let width = chunk.iter().map(|(ids, _, _)| ids.len()).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(n * width);
        for (ids, _, _) in chunk {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, width - ids.len()));
        }
        let tokens = Tensor::from_vec(flat, (n, width), model.device())?;
        // Position i predicts token i + 1: a continuation is scored from its prompt's last token.
        let spans: Vec<(usize, usize)> = chunk.iter().map(|(_, p, c)| (p - 1, c.len())).collect();
        let logits = model.pass(&tokens).logits_spans(&spans).run()?.logits;
        for (i, (_, _, cont)) in chunk.iter().enumerate() {
            out.push(score_continuation(
                model,
                &logits.i(i)?.narrow(0, 0, cont.len())?,
                cont,
            )?);
        }
    }
    Ok(out)
}

/// Token ids as a batch of one row, [1, n].
fn row(model: &HookedTransformer, ids: Vec<u32>) -> Result<Tensor> {
    let n = ids.len();
    Ok(Tensor::from_vec(ids, (1, n), model.device())?)
}

/// The prompt's ids (with BOS) followed by the continuation's (without), the prompt's length,
/// and the continuation's ids.
fn prompt_and_continuation(
    model: &HookedTransformer,
    prompt: &str,
    continuation: &str,
) -> Result<(Vec<u32>, usize, Vec<u32>)> {
    let mut ids = model.encode(prompt)?;
    let cont = model.tokenizer()?.encode(continuation, false)?;
    if cont.is_empty() {
        return Err(Error::Invalid("the continuation is empty".into()));
    }
    let p = ids.len();
    if p == 0 {
        return Err(Error::Invalid(
            "the prompt is empty and no BOS is prepended: nothing predicts the continuation's first token".into(),
        ));
    }
    ids.extend_from_slice(&cont);
    Ok((ids, p, cont))
}

/// Each continuation token's log-probability from the logits [len, v] that predict it.
fn score_continuation(
    model: &HookedTransformer,
    logits: &Tensor,
    cont: &[u32],
) -> Result<ContinuationLogProb> {
    let picked = token_logprobs(&logits.unsqueeze(0)?, cont)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let tok = model.tokenizer()?;
    Ok(ContinuationLogProb {
        total: picked.iter().sum(),
        tokens: cont
            .iter()
            .map(|&id| tok.token_str(id))
            .zip(picked)
            .collect(),
    })
}
