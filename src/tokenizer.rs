//! Tokenizers: the default model's, rebuilt from the GGUF vocabulary as a BPE whose merges come
//! from the scores (they are negative merge ranks), and hub models' `tokenizer.json`.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper};

use crate::error::{Error, Result};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// SentencePiece's visible space.
const SPACE: &str = "\u{2581}";

/// A tokenizer plus the special ids the model needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence id, prepended by [`Tokenizer::encode`] when `add_bos` is set.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_token_id: Option<u32>,
    /// Padding id used by batched tokenization.
    pub pad_token_id: u32,
    /// Whether `encode` prepends BOS by default.
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .field("pad_token_id", &self.pad_token_id)
            .finish()
    }
}

/// The tokenizer section of a GGUF file (llama.cpp's SentencePiece-style "llama" vocabulary).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// Token strings, by id.
    pub tokens: Vec<String>,
    /// Scores, by id (negative merge ranks for normal tokens).
    pub scores: Vec<f32>,
    /// Token types, by id (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte).
    pub types: Vec<i32>,
    /// BOS id.
    pub bos: Option<u32>,
    /// EOS id.
    pub eos: Option<u32>,
    /// Padding id.
    pub pad: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Whether BOS is prepended.
    pub add_bos: bool,
}

impl Tokenizer {
    /// Builds the tokenizer llama.cpp uses for a SentencePiece vocabulary stored in a GGUF:
    /// spaces become '▁'; user-defined tokens (runs of spaces and newlines, HTML tags) are
    /// matched in the raw text first; the rest is BPE-merged by score with byte fallback.
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self> {
        let n = v.tokens.len();
        if v.scores.len() != n || v.types.len() != n {
            return Err(Error::Tokenizer(format!(
                "GGUF vocabulary has {n} tokens, {} scores and {} types",
                v.scores.len(),
                v.types.len()
            )));
        }
        let vocab: HashMap<String, u32> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let is_normal = |t: &str| {
            vocab
                .get(t)
                .is_some_and(|&id| v.types[id as usize] == TYPE_NORMAL)
        };
        // Every way to split a normal token into two normal tokens is a merge; llama.cpp merges
        // the adjacent pair whose result scores highest, which is BPE with ranks by score.
        let mut merges: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
        for (id, tok) in v.tokens.iter().enumerate() {
            if v.types[id] != TYPE_NORMAL {
                continue;
            }
            for (pos, _) in tok.char_indices().skip(1) {
                let (a, b) = tok.split_at(pos);
                if is_normal(a) && is_normal(b) {
                    merges.push((v.scores[id], id as u32, pos, a, b));
                }
            }
        }
        merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        let merges: Vec<(String, String)> = merges
            .into_iter()
            .map(|(_, _, _, a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut builder = BPE::builder()
            .vocab_and_merges(
                vocab
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(unk) = v.unk.and_then(|u| v.tokens.get(u as usize)) {
            builder = builder.unk_token(unk.clone());
        }
        let bpe = builder.build()?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_normalizer(Some(NormalizerWrapper::Replace(Replace::new(" ", SPACE)?)));
        inner.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
            DecoderWrapper::Replace(Replace::new(SPACE, " ")?),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ]))));
        // llama.cpp splits user-defined tokens out of the raw text before anything else;
        // control tokens are only parsed when asked, so they are special and encoded as text.
        let user: Vec<AddedToken> = (0..n)
            .filter(|&i| v.types[i] == TYPE_USER_DEFINED)
            .map(|i| AddedToken::from(v.tokens[i].clone(), false).normalized(false))
            .collect();
        inner.add_tokens(&user);
        let control: Vec<AddedToken> = (0..n)
            .filter(|&i| v.types[i] == TYPE_CONTROL)
            .map(|i| AddedToken::from(v.tokens[i].clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&control);
        inner.set_encode_special_tokens(true);
        Ok(Tokenizer {
            inner,
            bos_token_id: v.bos,
            eos_token_id: v.eos,
            pad_token_id: v.pad.unwrap_or(0),
            add_bos: v.add_bos,
        })
    }

    /// Loads a hub `tokenizer.json`. BOS handling comes from the caller (the model config),
    /// and any post-processor in the file is ignored so that BOS is added exactly once.
    pub fn from_file(
        path: impl AsRef<Path>,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: u32,
        add_bos: bool,
    ) -> Result<Self> {
        let path = path.as_ref();
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("reading {}: {e}", path.display())))?;
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Ok(Tokenizer {
            inner,
            bos_token_id: bos,
            eos_token_id: eos,
            pad_token_id: pad,
            add_bos,
        })
    }

    /// Token ids for `text`, with BOS first when `add_bos` is set and the model has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            if let Some(b) = self.bos_token_id {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text for ids; special tokens (BOS, padding…) are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        Ok(self.inner.decode(ids, skip_special)?)
    }

    /// How one token reads on its own (spaces shown as spaces; a lone byte of a multi-byte
    /// character as its `<0xNN>` name, since it is no text by itself).
    pub fn token_str(&self, id: u32) -> String {
        let raw = self.inner.id_to_token(id).unwrap_or_default();
        if raw.starts_with("<0x") && raw.len() == 6 {
            if let Ok(b) = u8::from_str_radix(&raw[3..5], 16) {
                if b.is_ascii() {
                    return (b as char).to_string();
                }
            }
            return raw;
        }
        raw.replace(SPACE, " ")
    }

    /// The raw vocabulary string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a raw vocabulary string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers::Tokenizer`, e.g. to save it as `tokenizer.json`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
