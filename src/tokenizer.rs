//! Tokenizers: from GGUF metadata (llama.cpp's two kinds: `llama`, a SentencePiece vocabulary
//! rebuilt as a BPE whose merges come from the scores, and `gpt2`, a byte-level BPE with its
//! merges and the pre-tokenizer named by `tokenizer.ggml.pre`), and hub models' `tokenizer.json`.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper};

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
    /// Whether the file's own rule (HF's post-processor, GGUF's `add_bos_token`) prepends BOS.
    /// The model prepends it whatever this says unless told not to (TransformerLens's default).
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

/// llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp), by `tokenizer.ggml.pre` name.
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The `tokenizer.ggml.pre` names we implement, with the regexes llama.cpp applies in turn.
const PRE_TOKENIZERS: &[(&[&str], &[&str])] = &[
    (
        &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"],
        &[LLAMA3_RE],
    ),
    (&["qwen2", "deepseek-r1-qwen", "stablelm2"], &[QWEN2_RE]),
    (&["smollm", "codeshell", "exaone"], &[r"\p{N}", GPT2_RE]),
    (
        &[
            "gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "olmo", "mpt",
        ],
        &[GPT2_RE],
    ),
];

/// The tokenizer section of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `llama` (SentencePiece) or `gpt2` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a `gpt2` vocabulary.
    pub pre: String,
    /// Merges of a `gpt2` vocabulary, "left right" by rank.
    pub merges: Vec<String>,
    /// Whether a SentencePiece vocabulary prepends a space to the text (llama.cpp's default).
    pub add_space_prefix: bool,
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

/// A tokenizer.json, with its path in the error.
fn read_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::Tokenizer(format!("reading {}: {e}", path.display())))
}

/// llama.cpp splits user-defined tokens out of the raw text before anything else; control
/// tokens are only parsed when asked, so they are special (skipped when decoding) and
/// encoded as text.
fn add_gguf_tokens(inner: &mut tokenizers::Tokenizer, v: &GgufVocab) {
    let of_type = |t: i32, special: bool| -> Vec<AddedToken> {
        (0..v.tokens.len())
            .filter(|&i| v.types[i] == t)
            .map(|i| AddedToken::from(v.tokens[i].clone(), special).normalized(false))
            .collect()
    };
    inner.add_tokens(&of_type(TYPE_USER_DEFINED, false));
    inner.add_special_tokens(&of_type(TYPE_CONTROL, true));
    inner.set_encode_special_tokens(true);
}

/// A SentencePiece vocabulary's BPE model: merges ranked by score, byte fallback, and its
/// unknown token.
fn spm_bpe(v: &GgufVocab) -> Result<BPE> {
    let vocab: HashMap<String, u32> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = spm_merges(v, &vocab);
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
    Ok(builder.build()?)
}

/// Every way to split a normal token into two normal tokens is a merge; llama.cpp merges the
/// adjacent pair whose result scores highest, which is BPE with ranks by score.
fn spm_merges(v: &GgufVocab, vocab: &HashMap<String, u32>) -> Vec<(String, String)> {
    let is_normal = |t: &str| {
        vocab
            .get(t)
            .is_some_and(|&id| v.types[id as usize] == TYPE_NORMAL)
    };
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
    merges
        .into_iter()
        .map(|(_, _, _, a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// SentencePiece's normalizer: spaces become '▁', with one prepended when `add_space_prefix`.
fn spm_normalizer(add_space_prefix: bool) -> Result<NormalizerWrapper> {
    let replace = NormalizerWrapper::Replace(Replace::new(" ", SPACE)?);
    Ok(if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPACE.into())),
            replace,
        ]))
    } else {
        replace
    })
}

/// SentencePiece's decoder: '▁' back to spaces, byte fallback, and the prepended space
/// dropped when `add_space_prefix`.
fn spm_decoder(add_space_prefix: bool) -> Result<DecoderWrapper> {
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new(SPACE, " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        // The space the encoder prepended is not part of the text.
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    Ok(DecoderWrapper::Sequence(DecoderSequence::new(decoders)))
}

impl Tokenizer {
    /// Builds the tokenizer llama.cpp uses for the vocabulary of a GGUF file.
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self> {
        match v.model.as_str() {
            "llama" | "" => Self::from_spm_vocab(v),
            "gpt2" => Self::from_bpe_vocab(v),
            other => Err(Error::Tokenizer(format!(
                "GGUF tokenizer kind `{other}` (tokenizer.ggml.model) is not supported; supported: llama (SentencePiece), gpt2 (byte-level BPE)"
            ))),
        }
    }

    /// A SentencePiece vocabulary: spaces become '▁' (with one prepended when
    /// `add_space_prefix`); user-defined tokens (runs of spaces and newlines, HTML tags) are
    /// matched in the raw text first; the rest is BPE-merged by score with byte fallback.
    fn from_spm_vocab(v: &GgufVocab) -> Result<Self> {
        let n = v.tokens.len();
        if v.scores.len() != n || v.types.len() != n {
            return Err(Error::Tokenizer(format!(
                "GGUF vocabulary has {n} tokens, {} scores and {} types",
                v.scores.len(),
                v.types.len()
            )));
        }
        let mut inner = tokenizers::Tokenizer::new(spm_bpe(v)?);
        inner.with_normalizer(Some(spm_normalizer(v.add_space_prefix)?));
        inner.with_decoder(Some(spm_decoder(v.add_space_prefix)?));
        add_gguf_tokens(&mut inner, v);
        Ok(Tokenizer {
            inner,
            bos_token_id: v.bos,
            eos_token_id: v.eos,
            pad_token_id: v.pad.unwrap_or(0),
            add_bos: v.add_bos,
        })
    }

    /// A byte-level BPE vocabulary (Llama 3, Qwen, SmolLM, GPT-2): the text is split by the
    /// regexes of `tokenizer.ggml.pre`, mapped to GPT-2's byte alphabet, and merged by rank.
    /// Control tokens are matched as text, as llama.cpp does unless asked to parse them.
    fn from_bpe_vocab(v: &GgufVocab) -> Result<Self> {
        let n = v.tokens.len();
        if v.types.len() != n {
            return Err(Error::Tokenizer(format!(
                "GGUF vocabulary has {n} tokens and {} types",
                v.types.len()
            )));
        }
        let Some((_, regexes)) = PRE_TOKENIZERS
            .iter()
            .find(|(names, _)| names.contains(&v.pre.as_str()))
        else {
            let known: Vec<&str> = PRE_TOKENIZERS
                .iter()
                .flat_map(|(n, _)| n.iter().copied())
                .collect();
            return Err(Error::Tokenizer(format!(
                "GGUF pre-tokenizer `{}` (tokenizer.ggml.pre) is not supported; supported: {}",
                v.pre,
                known.join(", ")
            )));
        };
        let vocab: tokenizers::models::bpe::Vocab = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = v
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("GGUF merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build()?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
        for re in regexes.iter() {
            pre.push(if *re == r"\p{N}" {
                PreTokenizerWrapper::Digits(Digits::new(true))
            } else {
                PreTokenizerWrapper::Split(Split::new(
                    SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )?)
            });
        }
        pre.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSequence::new(pre))));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        add_gguf_tokens(&mut inner, v);
        Ok(Tokenizer {
            inner,
            bos_token_id: v.bos,
            eos_token_id: v.eos,
            pad_token_id: v.pad.or(v.eos).unwrap_or(0),
            add_bos: v.add_bos,
        })
    }

    /// Loads a `tokenizer.json` with the given special ids and BOS rule (`add_bos`: whether
    /// the file's own rule adds BOS). Any post-processor is dropped: the model prepends BOS or
    /// not. [`Tokenizer::from_hf_files`] reads the rule from the files instead.
    pub fn from_file(
        path: impl AsRef<Path>,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: u32,
        add_bos: bool,
    ) -> Result<Self> {
        Ok(Self::without_post_processor(
            read_tokenizer_json(path.as_ref())?,
            bos,
            eos,
            pad,
            add_bos,
        ))
    }

    /// BOS is the model's to prepend, so the file's post-processor goes.
    fn without_post_processor(
        mut inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: u32,
        add_bos: bool,
    ) -> Self {
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Tokenizer {
            inner,
            bos_token_id: bos,
            eos_token_id: eos,
            pad_token_id: pad,
            add_bos,
        }
    }

    /// Loads a hub `tokenizer.json` with its own BOS rule: the token its post-processor puts
    /// before the text (Llama 3, Gemma), which it then adds itself; else the `bos_token` of
    /// tokenizer_config.json, else `fallback_bos` (config.json's), which it does not add (Qwen
    /// names none). The post-processor is then dropped: the model prepends BOS or not.
    pub fn from_hf_files(
        tokenizer_json: impl AsRef<Path>,
        tokenizer_config: Option<&serde_json::Value>,
        fallback_bos: Option<u32>,
        eos: Option<u32>,
        pad: u32,
    ) -> Result<Self> {
        let inner = read_tokenizer_json(tokenizer_json.as_ref())?;
        let with = inner.encode_fast("a", true)?;
        let without = inner.encode_fast("a", false)?;
        let (bos, adds) =
            if with.len() > without.len() && with.get_ids().ends_with(without.get_ids()) {
                (with.get_ids().first().copied(), true)
            } else {
                let named = tokenizer_config
                    .and_then(|c| c.get("bos_token"))
                    .and_then(|b| {
                        b.as_str()
                            .or_else(|| b.get("content").and_then(|c| c.as_str()))
                    })
                    .and_then(|b| inner.token_to_id(b));
                (named.or(fallback_bos), false)
            };
        Ok(Self::without_post_processor(inner, bos, eos, pad, adds))
    }

    /// The id [`Tokenizer::encode`] prepends: BOS, else (as TransformerLens does, e.g. for
    /// Qwen) EOS.
    pub fn prepended_id(&self) -> Option<u32> {
        self.bos_token_id.or(self.eos_token_id)
    }

    /// In words: what `encode(text, true)` prepends and what the file's own rule does.
    pub fn bos_rule(&self, prepend: bool) -> String {
        let name = |id: u32| format!("{} (id {id})", self.id_to_token(id).unwrap_or_default());
        let own = if self.add_bos {
            "the tokenizer's own rule (HF transformers / llama.cpp) also prepends it"
        } else {
            "the tokenizer's own rule (HF transformers / llama.cpp) prepends nothing: use --no-bos / prepend_bos = false for its exact ids"
        };
        match (prepend, self.bos_token_id, self.eos_token_id) {
            (false, _, _) => format!(
                "no BOS prepended (prepend_bos = false){}",
                if self.add_bos {
                    "; the tokenizer's own rule would prepend one"
                } else {
                    ", as the tokenizer's own rule does"
                }
            ),
            (true, Some(b), _) => format!(
                "prepended BOS {}: TransformerLens's default; {own}",
                name(b)
            ),
            (true, None, Some(e)) => format!(
                "prepended EOS {}: TransformerLens's default where the vocabulary has no BOS; {own}",
                name(e)
            ),
            (true, None, None) => {
                "nothing prepended: the vocabulary has neither BOS nor EOS".to_string()
            }
        }
    }

    /// Token ids for `text`, with [`Tokenizer::prepended_id`] first when `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            if let Some(b) = self.prepended_id() {
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
    /// character as its `<0xNN>` name, or for byte-level vocabularies its raw form, since it is
    /// no text by itself).
    pub fn token_str(&self, id: u32) -> String {
        let raw = self.inner.id_to_token(id).unwrap_or_default();
        if self.byte_level() && !self.inner.get_added_vocabulary().is_special_token(&raw) {
            // GPT-2's byte alphabet ("Ġ" for a space…) back to text.
            return match self.inner.decode(&[id], false) {
                Ok(s) if !s.contains('\u{FFFD}') => s,
                _ => raw,
            };
        }
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

    /// Whether tokens are spelled in GPT-2's byte alphabet (a byte-level decoder).
    fn byte_level(&self) -> bool {
        match self.inner.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => true,
            Some(DecoderWrapper::Sequence(seq)) => seq
                .get_decoders()
                .iter()
                .any(|d| matches!(d, DecoderWrapper::ByteLevel(_))),
            _ => false,
        }
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
