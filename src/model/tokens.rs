//! Text to token ids and back: the BOS rule, single prompts and right-padded batches with their
//! real lengths, token strings, and the checks every forward pass makes on its ids.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::model::logits::{at_positions, LogitsView};
use crate::model::transformer::HookedTransformer;

impl HookedTransformer {
    /// A copy (cheap: weights are shared) that prepends BOS to texts, or not. The default is
    /// TransformerLens's: prepend the tokenizer's BOS (its EOS where it has none, as for
    /// Qwen). HF's tokenizers follow their own rule instead ([`Tokenizer::add_bos`]); turn
    /// this off to reproduce their ids where that rule adds nothing.
    pub fn with_prepend_bos(&self, on: bool) -> Self {
        let mut m = self.clone();
        m.prepend_bos = on;
        m
    }

    /// Whether texts get BOS (else EOS) prepended.
    pub fn prepend_bos(&self) -> bool {
        self.prepend_bos
    }

    /// The model's BOS rule, in words (what is prepended and what the tokenizer itself does).
    pub fn bos_rule(&self) -> Result<String> {
        Ok(self.tokenizer()?.bos_rule(self.prepend_bos))
    }

    /// Token ids of `text` under the model's BOS rule.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer()?.encode(text, self.prepend_bos)
    }

    /// Token ids of `text` as a [1, s] u32 tensor, BOS first (see
    /// [`HookedTransformer::with_prepend_bos`]).
    pub fn to_tokens(&self, text: &str) -> Result<Tensor> {
        self.to_tokens_with(text, self.prepend_bos)
    }

    /// [`HookedTransformer::to_tokens`] with BOS prepended or not for this call.
    pub fn to_tokens_with(&self, text: &str, prepend_bos: bool) -> Result<Tensor> {
        let ids = self.tokenizer()?.encode(text, prepend_bos)?;
        let n = ids.len();
        Ok(Tensor::from_vec(ids, (1, n), &self.device)?)
    }

    /// Token ids of several texts as a [b, s_max] tensor, right-padded with the pad id.
    /// Right padding keeps every real position exact under causal attention; use
    /// [`HookedTransformer::seq_lengths`] or [`HookedTransformer::attention_mask`] to find them.
    pub fn to_tokens_batch(&self, texts: &[impl AsRef<str>]) -> Result<Tensor> {
        self.to_tokens_batch_with(texts, self.prepend_bos)
    }

    /// [`HookedTransformer::to_tokens_batch`] with BOS prepended or not for this call.
    pub fn to_tokens_batch_with(
        &self,
        texts: &[impl AsRef<str>],
        prepend_bos: bool,
    ) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::Invalid(
                "to_tokens_batch needs at least one text".into(),
            ));
        }
        let t = self.tokenizer()?;
        let seqs = texts
            .iter()
            .map(|s| t.encode(s.as_ref(), prepend_bos))
            .collect::<Result<Vec<_>>>()?;
        let s = seqs.iter().map(|v| v.len()).max().unwrap_or(0).max(1);
        let mut flat = Vec::with_capacity(texts.len() * s);
        for v in &seqs {
            flat.extend_from_slice(v);
            flat.extend(std::iter::repeat_n(t.pad_token_id, s - v.len()));
        }
        Ok(Tensor::from_vec(flat, (texts.len(), s), &self.device)?)
    }

    /// Length of each row of a right-padded batch: padding is the run of pad ids a row ends
    /// with beyond what every row ends with (a single row, or rows that all end in the pad id,
    /// are not padded); at least 1, since position 0 is BOS even where BOS and padding share an
    /// id, as in Qwen.
    pub fn seq_lengths(&self, tokens: &Tensor) -> Result<Vec<usize>> {
        let tokens = self.check_tokens(tokens)?;
        let pad = self.cfg.pad_token_id;
        let rows = tokens.to_vec2::<u32>()?;
        let s = tokens.dim(1)?;
        let runs: Vec<usize> = rows
            .iter()
            .map(|row| row.iter().rev().take_while(|&&t| t == pad).count())
            .collect();
        let common = runs.iter().copied().min().unwrap_or(0);
        Ok(runs.iter().map(|&r| (s - (r - common)).max(1)).collect())
    }

    /// 1 for real tokens and 0 for right padding, [b, s] f32.
    pub fn attention_mask(&self, tokens: &Tensor) -> Result<Tensor> {
        let tokens = self.check_tokens(tokens)?;
        let (b, s) = tokens.dims2()?;
        let lens = self.seq_lengths(&tokens)?;
        let m: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..s).map(move |i| if i < n { 1.0 } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(m, (b, s), &self.device)?)
    }

    /// The tokens of `text` as strings (BOS included), as TransformerLens's `to_str_tokens`.
    pub fn to_str_tokens(&self, text: &str) -> Result<Vec<String>> {
        let t = self.tokenizer()?;
        Ok(t.encode(text, self.prepend_bos)?
            .into_iter()
            .map(|id| t.token_str(id))
            .collect())
    }

    /// The strings of a row of token ids.
    pub fn ids_to_str_tokens(&self, ids: &[u32]) -> Result<Vec<String>> {
        let t = self.tokenizer()?;
        Ok(ids.iter().map(|&id| t.token_str(id)).collect())
    }

    /// The k most likely next tokens after the first row's last real token, with
    /// probabilities.
    pub fn top_next_tokens(
        &self,
        logits: &(impl LogitsView + ?Sized),
        k: usize,
    ) -> Result<Vec<(String, f32)>> {
        let t = logits.logits_tensor();
        let last = at_positions(t, logits.row_lengths(), None)?
            .get(0)?
            .to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax(&last, D::Minus1)?.to_vec1::<f32>()?;
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let tok = self.tokenizer()?;
        Ok(idx
            .into_iter()
            .take(k)
            .map(|i| (tok.token_str(i as u32), probs[i]))
            .collect())
    }

    /// The id of a string that must be exactly one token, e.g. `model.token_id(" Paris")?`.
    pub fn token_id(&self, s: &str) -> Result<u32> {
        let tok = self.tokenizer()?;
        let ids = tok.encode(s, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(Error::Invalid(format!(
                "answer {s:?} is {} tokens {:?}, not one; pick a single-token answer (mind the leading space)",
                ids.len(),
                ids.iter().map(|&i| tok.token_str(i)).collect::<Vec<_>>()
            ))),
        }
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn to_string(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?.decode(ids, true)
    }

    /// Accepts [s] or [b, s] integer ids and returns [b, s] u32, checking the ids.
    pub(crate) fn check_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let t = match tokens.rank() {
            1 => tokens.unsqueeze(0)?,
            2 => tokens.clone(),
            _ => {
                return Err(Error::Shape(format!(
                    "tokens must be [batch, pos] (or [pos]), got shape {:?}",
                    tokens.dims()
                )))
            }
        };
        let t = match t.dtype() {
            DType::U32 => t,
            DType::I64 | DType::U8 => t.to_dtype(DType::U32)?,
            d => {
                return Err(Error::Shape(format!(
                    "tokens must be integer ids (u32), got dtype {d:?}"
                )))
            }
        };
        if t.dim(1)? == 0 {
            return Err(Error::Shape(
                "tokens have no positions (shape [b, 0])".into(),
            ));
        }
        if t.dim(1)? > self.cfg.max_position {
            return Err(Error::Invalid(format!(
                "the prompt has {} tokens but the model's context is {}; shorten it or split it",
                t.dim(1)?,
                self.cfg.max_position
            )));
        }
        let max = t.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= self.cfg.d_vocab {
            return Err(Error::Invalid(format!(
                "token id {max} is out of range for a vocabulary of {}",
                self.cfg.d_vocab
            )));
        }
        Ok(t.to_device(&self.device)?)
    }
}
