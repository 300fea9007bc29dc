//! `HookedTransformer`: the one forward pass every architecture runs, read top to bottom,
//! with a hook point at every named activation.
//!
//! The pass is batch-first and uses only ops that candle can differentiate (no fused softmax,
//! RMSNorm or RoPE), so the same code serves attribution patching.
//!
//! Gemma's post-attention and post-MLP norms sit between the heads and the residual stream:
//! `hook_attn_out` / `hook_mlp_out` are after them (what is added to the residual), while the
//! per-head `hook_result` is before them, so for Gemma the heads' results do not sum to
//! `hook_attn_out`.

use std::cell::OnceCell;

use candle_core::{DType, Device, Tensor, D};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::config::{Activation, Config, RopeScaling};
use crate::model::logits::{at_positions, Logits, LogitsView};
use crate::model::ops;
use crate::model::run::Run;
use crate::tokenizer::Tokenizer;

/// Weights of one transformer block, PyTorch layout (out, in).
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// RMSNorm before attention (weight already includes any +1 offset).
    pub ln1: Tensor,
    /// RMSNorm after attention, before the residual add (Gemma 2/3).
    pub ln1_post: Option<Tensor>,
    /// RMSNorm before the MLP.
    pub ln2: Tensor,
    /// RMSNorm after the MLP, before the residual add (Gemma 2/3).
    pub ln2_post: Option<Tensor>,
    /// Query projection [n_heads*d_head, d_model].
    pub w_q: Tensor,
    /// Key projection [n_kv_heads*d_head, d_model].
    pub w_k: Tensor,
    /// Value projection [n_kv_heads*d_head, d_model].
    pub w_v: Tensor,
    /// Output projection [d_model, n_heads*d_head].
    pub w_o: Tensor,
    /// Query bias (Qwen 2).
    pub b_q: Option<Tensor>,
    /// Key bias (Qwen 2).
    pub b_k: Option<Tensor>,
    /// Value bias (Qwen 2).
    pub b_v: Option<Tensor>,
    /// Output-projection bias (Llama with attention_bias).
    pub b_o: Option<Tensor>,
    /// Per-head query RMSNorm weight [d_head].
    pub q_norm: Option<Tensor>,
    /// Per-head key RMSNorm weight [d_head].
    pub k_norm: Option<Tensor>,
    /// MLP gate projection [d_mlp, d_model].
    pub w_gate: Tensor,
    /// MLP up projection [d_mlp, d_model].
    pub w_up: Tensor,
    /// MLP down projection [d_model, d_mlp].
    pub w_down: Tensor,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding [d_vocab, d_model]. Matrices share the model's dtype; norm weights are
    /// kept in f32 (with any +1 offset already added), as HF computes norms in f32.
    pub embed: Tensor,
    /// Unembedding [d_vocab, d_model]; `None` when tied to the embedding.
    pub unembed: Option<Tensor>,
    /// Final RMSNorm weight.
    pub ln_final: Tensor,
    /// Blocks, in order.
    pub blocks: Vec<BlockWeights>,
}

/// A transformer whose every activation can be read and replaced by name. Cloning is cheap:
/// weights and tokenizer are shared.
#[derive(Debug, Clone)]
pub struct HookedTransformer {
    cfg: Config,
    w: Weights,
    // Shared so that clones (patchers, lenses) are cheap: the vocabulary is large.
    tokenizer: Option<std::sync::Arc<Tokenizer>>,
    // Per layer, [W_q; W_k; W_v] in one matrix: one projection instead of three. The blocks'
    // w_q, w_k and w_v are views into it, so the weights are not held twice.
    qkv: Vec<Tensor>,
    device: Device,
    check_finite: bool,
    // TransformerLens's default: prepend BOS (else EOS) to every text.
    prepend_bos: bool,
}

/// Where a forward pass starts.
pub(crate) enum Start<'t> {
    /// From token ids [b, s] (or [s]).
    Tokens(&'t Tensor),
    /// From the residual stream [b, s, d] entering `layer`.
    Resid {
        /// The first block to run.
        layer: usize,
        /// `blocks.{layer}.hook_resid_pre`.
        resid: Tensor,
    },
    /// A wavefront: residual streams [b_i, s, d] entering layers l_0 < l_1 < …; rows
    /// entering l_i join the batch (at its end) when the pass reaches l_i. One pass then
    /// serves patches at many layers, each running only the layers after its own.
    Waves(Vec<(usize, Tensor)>),
}

/// Which logits a forward pass computes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LogitRows<'a> {
    /// Every position: [b, s, d_vocab].
    All,
    /// One position per batch row: [b, 1, d_vocab].
    At(&'a [usize]),
    /// Positions p.. of every row: [b, s - p, d_vocab].
    From(usize),
    /// None (activations only): [b, 0, d_vocab].
    None,
}

/// Rows `x[i, pos[i]]` of [b, s, d] as [b, 1, d].
pub(crate) fn select_positions(x: &Tensor, pos: &[usize]) -> Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    if pos.len() != b {
        return Err(Error::Shape(format!(
            "{} positions for a batch of {b}",
            pos.len()
        )));
    }
    if let Some(&p) = pos.iter().find(|&&p| p >= s) {
        return Err(Error::Invalid(format!(
            "position {p} is out of range for {s} positions"
        )));
    }
    if pos.iter().all(|&p| p == pos[0]) {
        return Ok(x.narrow(1, pos[0], 1)?);
    }
    let rows = pos
        .iter()
        .enumerate()
        .map(|(i, &p)| x.narrow(0, i, 1)?.narrow(1, p, 1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// RoPE tables for one base frequency and scaling: cos and sin, [s, d_head/2].
struct Rope {
    theta: f64,
    scaling: Option<RopeScaling>,
    cos: Tensor,
    sin: Tensor,
}

/// The additive attention masks (0 or -inf) of one window for `s` positions, built on first
/// use and shared by every layer with that window: the full [s, s] mask, and the masks of
/// blocked attention's query blocks.
struct Mask {
    window: Option<usize>,
    s: usize,
    device: Device,
    full: OnceCell<Tensor>,
    blocks: OnceCell<Vec<QueryBlock>>,
}

/// Queries q0..q0+nq of blocked attention, the keys k0..k0+nk they can see, and their mask.
struct QueryBlock {
    q0: usize,
    nq: usize,
    k0: usize,
    nk: usize,
    mask: Tensor,
}

impl Mask {
    fn new(window: Option<usize>, s: usize, device: &Device) -> Self {
        Mask {
            window,
            s,
            device: device.clone(),
            full: OnceCell::new(),
            blocks: OnceCell::new(),
        }
    }

    /// The [s, s] mask.
    fn full(&self) -> Result<&Tensor> {
        if let Some(m) = self.full.get() {
            return Ok(m);
        }
        let m = mask_block(0, self.s, 0, self.s, self.window, &self.device)?;
        Ok(self.full.get_or_init(|| m))
    }

    /// The query blocks, each with only the keys it can see (causal, inside the window).
    fn blocks(&self) -> Result<&[QueryBlock]> {
        if let Some(b) = self.blocks.get() {
            return Ok(b);
        }
        let mut blocks = Vec::with_capacity(self.s.div_ceil(QUERY_BLOCK));
        for q0 in (0..self.s).step_by(QUERY_BLOCK) {
            let nq = QUERY_BLOCK.min(self.s - q0);
            // Query i sees keys j with j <= i and i - j < window.
            let k0 = self
                .window
                .map_or(0, |w| q0.saturating_sub(w.saturating_sub(1)));
            let nk = q0 + nq - k0;
            let mask = mask_block(q0, nq, k0, nk, self.window, &self.device)?;
            blocks.push(QueryBlock {
                q0,
                nq,
                k0,
                nk,
                mask,
            });
        }
        Ok(self.blocks.get_or_init(|| blocks))
    }
}

/// From this many positions on, attention runs in blocks of queries when nothing reads the
/// scores or the pattern: no s × s tensor is built, and each block only multiplies the keys it
/// can see (causal, and within the sliding window), which for Gemma 3's 512-token windows on a
/// 4k-token prompt skips most of the attention work.
pub(crate) const BLOCKED_ATTENTION_FROM: usize = 256;
/// Queries per block.
const QUERY_BLOCK: usize = 128;

impl HookedTransformer {
    /// Assembles a model from a config, weights and (optionally) a tokenizer, checking shapes.
    pub fn new(cfg: Config, w: Weights, tokenizer: Option<Tokenizer>) -> Result<Self> {
        cfg.validate()?;
        let device = w.embed.device().clone();
        let mut m = HookedTransformer {
            cfg,
            w,
            tokenizer: tokenizer.map(std::sync::Arc::new),
            qkv: Vec::new(),
            device,
            check_finite: false,
            prepend_bos: true,
        };
        m.check_weights()?;
        let (nh, kh) = (
            m.cfg.n_heads * m.cfg.d_head,
            m.cfg.n_kv_heads * m.cfg.d_head,
        );
        for b in m.w.blocks.iter_mut() {
            let fused = Tensor::cat(&[&b.w_q, &b.w_k, &b.w_v], 0)?;
            b.w_q = fused.narrow(0, 0, nh)?;
            b.w_k = fused.narrow(0, nh, kh)?;
            b.w_v = fused.narrow(0, nh + kh, kh)?;
            m.qkv.push(fused);
        }
        Ok(m)
    }

    fn check_weights(&self) -> Result<()> {
        let c = &self.cfg;
        let (d, nh, kh, m) = (
            c.d_model,
            c.n_heads * c.d_head,
            c.n_kv_heads * c.d_head,
            c.d_mlp,
        );
        let want = |name: String, t: &Tensor, shape: &[usize]| -> Result<()> {
            if t.dims() != shape {
                return Err(Error::Load(format!(
                    "weight {name} has shape {:?}, expected {shape:?} from the config",
                    t.dims()
                )));
            }
            Ok(())
        };
        want("embed".into(), &self.w.embed, &[c.d_vocab, d])?;
        if let Some(u) = &self.w.unembed {
            want("unembed".into(), u, &[c.d_vocab, d])?;
        }
        want("ln_final".into(), &self.w.ln_final, &[d])?;
        if self.w.blocks.len() != c.n_layers {
            return Err(Error::Load(format!(
                "{} blocks of weights for {} layers",
                self.w.blocks.len(),
                c.n_layers
            )));
        }
        for (l, b) in self.w.blocks.iter().enumerate() {
            want(format!("blocks.{l}.w_q"), &b.w_q, &[nh, d])?;
            want(format!("blocks.{l}.w_k"), &b.w_k, &[kh, d])?;
            want(format!("blocks.{l}.w_v"), &b.w_v, &[kh, d])?;
            want(format!("blocks.{l}.w_o"), &b.w_o, &[d, nh])?;
            want(format!("blocks.{l}.w_gate"), &b.w_gate, &[m, d])?;
            want(format!("blocks.{l}.w_up"), &b.w_up, &[m, d])?;
            want(format!("blocks.{l}.w_down"), &b.w_down, &[d, m])?;
            want(format!("blocks.{l}.ln1"), &b.ln1, &[d])?;
            want(format!("blocks.{l}.ln2"), &b.ln2, &[d])?;
            if c.qk_norm != (b.q_norm.is_some() && b.k_norm.is_some()) {
                return Err(Error::Load(format!(
                    "blocks.{l}: q/k norm weights do not match the config (qk_norm = {})",
                    c.qk_norm
                )));
            }
            if c.post_norms != (b.ln1_post.is_some() && b.ln2_post.is_some()) {
                return Err(Error::Load(format!(
                    "blocks.{l}: post-norm weights do not match the config (post_norms = {})",
                    c.post_norms
                )));
            }
        }
        Ok(())
    }

    /// A copy (cheap: weights are shared) that checks every activation for NaN and infinity
    /// and fails at the first hook point where they appear, naming it.
    pub fn with_check_finite(&self, on: bool) -> Self {
        let mut m = self.clone();
        m.check_finite = on;
        m
    }

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

    /// The model's configuration (n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab…).
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// The model's weights.
    pub fn weights(&self) -> &Weights {
        &self.w
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer, or an error saying the model was built without one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| {
            Error::Invalid("this model has no tokenizer; pass token ids instead of text".into())
        })
    }

    /// Every hook point of this model, in forward order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.cfg.n_layers)
    }

    /// Every hook name of this model, in forward order.
    pub fn hook_names(&self) -> Vec<String> {
        self.hook_points().iter().map(|p| p.name()).collect()
    }

    // ----- tokens -------------------------------------------------------------------------

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
    pub fn to_tokens_batch(&self, texts: &[&str]) -> Result<Tensor> {
        self.to_tokens_batch_with(texts, self.prepend_bos)
    }

    /// [`HookedTransformer::to_tokens_batch`] with BOS prepended or not for this call.
    pub fn to_tokens_batch_with(&self, texts: &[&str], prepend_bos: bool) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::Invalid(
                "to_tokens_batch needs at least one text".into(),
            ));
        }
        let t = self.tokenizer()?;
        let seqs = texts
            .iter()
            .map(|s| t.encode(s, prepend_bos))
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
        crate::metrics::single_token(self, s)
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn to_string(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?.decode(ids, true)
    }

    /// Accepts [s] or [b, s] integer ids and returns [b, s] u32, checking the ids.
    fn check_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
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

    // ----- running ------------------------------------------------------------------------

    /// Logits [b, s, d_vocab] (f32) for token ids [b, s], knowing each row's real length
    /// (see [`Logits`]).
    pub fn forward(&self, tokens: &Tensor) -> Result<Logits> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        self.forward_run(tokens, &mut run)
    }

    /// Logits and every activation.
    pub fn run_with_cache(&self, tokens: &Tensor) -> Result<(Logits, ActivationCache)> {
        self.run_with_cache_filtered(tokens, |_: &str| true)
    }

    /// Logits and the activations whose names pass `filter`.
    pub fn run_with_cache_filtered(
        &self,
        tokens: &Tensor,
        filter: impl Fn(&str) -> bool,
    ) -> Result<(Logits, ActivationCache)> {
        self.warn_cache_size(tokens, &filter)?;
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        run.cache_when(&filter);
        let logits = self.forward_run(tokens, &mut run)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(logits.lengths().to_vec());
        Ok((logits, cache))
    }

    /// Bytes a cache of the hook points passing `filter` would take for `tokens`.
    pub fn estimate_cache_bytes(
        &self,
        tokens: &Tensor,
        filter: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let (b, s) = match tokens.rank() {
            1 => (1, tokens.dim(0)?),
            _ => (tokens.dim(0)?, tokens.dim(1)?),
        };
        let c = &self.cfg;
        let per_pos = |p: &HookPoint| -> usize {
            use HookPoint::*;
            match p {
                Q(_) | RotQ(_) | Z(_) => c.n_heads * c.d_head,
                K(_) | V(_) | RotK(_) => c.n_kv_heads * c.d_head,
                AttnScores(_) | Pattern(_) => c.n_heads * s,
                Result(_) => c.n_heads * c.d_model,
                MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => c.d_mlp,
                Ln1Scale(_) | Ln2Scale(_) | LnFinalScale => 1,
                _ => c.d_model,
            }
        };
        let elem = self.w.embed.dtype().size_in_bytes();
        Ok(self
            .hook_points()
            .iter()
            .filter(|p| filter(&p.name()))
            .map(|p| b * s * per_pos(p) * elem)
            .sum())
    }

    /// Warns (once per call, on stderr) before caching more than `MECHINTERP_CACHE_WARN_MB`
    /// (default 2048) megabytes, with the way out.
    fn warn_cache_size(&self, tokens: &Tensor, filter: &impl Fn(&str) -> bool) -> Result<()> {
        let limit_mb: usize = std::env::var("MECHINTERP_CACHE_WARN_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048);
        let bytes = self.estimate_cache_bytes(tokens, filter)?;
        if bytes > limit_mb << 20 {
            eprintln!(
                "warning: this cache will hold about {:.1} GiB of activations (attention patterns and hook_result grow fastest); \
                 cache only what you need with run_with_cache_filtered(&toks, |n| n.ends_with(\"hook_pattern\")) \
                 or cache_activations (no logits); set MECHINTERP_CACHE_WARN_MB to change this threshold",
                bytes as f64 / (1u64 << 30) as f64
            );
        }
        Ok(())
    }

    /// The activations whose names pass `filter`, without computing logits (much cheaper
    /// when only activations are needed, e.g. attention patterns over a dataset).
    pub fn cache_activations(
        &self,
        tokens: &Tensor,
        filter: impl Fn(&str) -> bool,
    ) -> Result<ActivationCache> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        run.cache_when(&filter);
        self.forward_inner(Start::Tokens(tokens), &mut run, LogitRows::None)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(self.seq_lengths(tokens)?);
        Ok(cache)
    }

    /// Logits from position `from` on ([b, s − from, d_vocab]), with a [`Hooks`] set applied:
    /// what teacher-forced scoring of a continuation needs, without unembedding the prompt.
    pub fn logits_from(&self, tokens: &Tensor, from: usize, hooks: &Hooks) -> Result<Tensor> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        for (p, fs) in &hooks.map {
            p.check_layers(self.cfg.n_layers)?;
            for f in fs {
                run.hook(*p, f.as_ref());
            }
        }
        self.forward_inner(Start::Tokens(tokens), &mut run, LogitRows::From(from))
    }

    /// Logits with hooks applied, given as (hook name, closure) pairs. Each closure gets the
    /// activation and a [`HookContext`] and returns it or a same-shape replacement.
    /// Unknown names are errors with suggestions. For different closures in one call, box
    /// them ([`crate::hooks::BoxedHook`]) or use [`Hooks`].
    pub fn run_with_hooks<F>(&self, tokens: &Tensor, hooks: &[(&str, F)]) -> Result<Logits>
    where
        F: Fn(&Tensor, &HookContext) -> Result<Tensor>,
    {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        for (name, f) in hooks {
            let p = HookPoint::parse_for(name, self.cfg.n_layers)?;
            run.hook(p, f);
        }
        self.forward_run(tokens, &mut run)
    }

    /// Logits with a [`Hooks`] set applied.
    pub fn run_with_hook_set(&self, tokens: &Tensor, hooks: &Hooks) -> Result<Logits> {
        Ok(self
            .run_with_hook_set_and_cache(tokens, hooks, |_: &str| false)?
            .0)
    }

    /// Logits and cached activations (those passing `filter`) with a [`Hooks`] set applied;
    /// the cache records activations after the hooks ran.
    pub fn run_with_hook_set_and_cache(
        &self,
        tokens: &Tensor,
        hooks: &Hooks,
        filter: impl Fn(&str) -> bool,
    ) -> Result<(Logits, ActivationCache)> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        for (p, fs) in &hooks.map {
            p.check_layers(self.cfg.n_layers)?;
            for f in fs {
                run.hook(*p, f.as_ref());
            }
        }
        run.cache_when(&filter);
        let logits = self.forward_run(tokens, &mut run)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(logits.lengths().to_vec());
        Ok((logits, cache))
    }

    // ----- the forward pass ---------------------------------------------------------------

    pub(crate) fn forward_run(&self, tokens: &Tensor, run: &mut Run) -> Result<Logits> {
        let logits = self.forward_inner(Start::Tokens(tokens), run, LogitRows::All)?;
        Logits::new(logits, self.seq_lengths(tokens)?)
    }

    /// The forward pass. It starts from token ids, or from a residual stream entering a
    /// layer (sweeps reuse the unpatched prefix this way), and computes only the logits asked
    /// for: at this model size the unembedding costs more than all the blocks together.
    pub(crate) fn forward_inner(
        &self,
        start: Start,
        run: &mut Run,
        logits: LogitRows,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        if self.check_finite {
            run.check_finite(true);
        }
        let mut pending: Vec<(usize, Tensor)> = Vec::new();
        let (first, mut resid) = match start {
            Start::Tokens(tokens) => {
                let tokens = self.check_tokens(tokens)?;
                let (b, s) = tokens.dims2()?;
                let x = self
                    .w
                    .embed
                    .index_select(&tokens.flatten_all()?, 0)?
                    .reshape((b, s, cfg.d_model))?;
                // HF multiplies by the scale rounded to the activation dtype; so do we.
                let x = match cfg.embed_scale {
                    Some(scale) => x.broadcast_mul(
                        &Tensor::new(scale as f32, &self.device)?.to_dtype(x.dtype())?,
                    )?,
                    None => x,
                };
                (0, run.at(HookPoint::Embed, x)?)
            }
            Start::Resid { layer, resid } => {
                if layer > cfg.n_layers || resid.rank() != 3 || resid.dim(2)? != cfg.d_model {
                    return Err(Error::Shape(format!(
                        "cannot start layer {layer} from a residual of shape {:?} (model: {} layers, d_model {})",
                        resid.dims(),
                        cfg.n_layers,
                        cfg.d_model
                    )));
                }
                (layer, resid)
            }
            Start::Waves(mut waves) => {
                let ok = !waves.is_empty()
                    && waves.windows(2).all(|w| w[0].0 < w[1].0)
                    && waves.iter().all(|(l, r)| {
                        *l < cfg.n_layers
                            && r.rank() == 3
                            && r.dims()[1..] == waves[0].1.dims()[1..]
                            && r.dim(2).is_ok_and(|d| d == cfg.d_model)
                    });
                if !ok {
                    return Err(Error::Shape(
                        "waves must enter increasing layers with residuals of one [_, s, d_model] shape"
                            .into(),
                    ));
                }
                pending = waves.split_off(1);
                let (layer, resid) = waves.remove(0);
                (layer, resid)
            }
        };
        let (_, s, _) = resid.dims3()?;

        let (ropes, masks) = self.position_tables(s)?;
        for (l, blk) in self.w.blocks.iter().enumerate().skip(first) {
            let lc = &cfg.layers[l];
            let rope = ropes
                .iter()
                .find(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
                .ok_or_else(|| Error::Load(format!("no RoPE table for layer {l}")))?;
            let mask = masks
                .iter()
                .find(|m| m.window == lc.sliding_window)
                .ok_or_else(|| Error::Load(format!("no mask for layer {l}")))?;
            if pending.first().is_some_and(|(pl, _)| *pl == l) {
                let (_, joining) = pending.remove(0);
                resid = Tensor::cat(&[&resid, &joining], 0)?;
            }
            resid = self.block(l, blk, resid, rope, mask, run)?;
        }
        let b = resid.dim(0)?;

        let (scale, normed) = rms_norm(&resid, &self.w.ln_final, cfg.rms_norm_eps)?;
        run.at(HookPoint::LnFinalScale, scale)?;
        let normed = run.at(HookPoint::LnFinalNormalized, normed)?;
        let (normed, rows) = match logits {
            LogitRows::All => (normed, s),
            LogitRows::At(pos) => (select_positions(&normed, pos)?, 1),
            LogitRows::From(p) if p < s => (normed.narrow(1, p, s - p)?, s - p),
            LogitRows::From(p) => {
                return Err(Error::Invalid(format!(
                    "logits from position {p}, but there are {s} positions"
                )))
            }
            LogitRows::None => {
                return Ok(Tensor::zeros(
                    (b, 0, cfg.d_vocab),
                    DType::F32,
                    &self.device,
                )?)
            }
        };
        let unembed = self.w.unembed.as_ref().unwrap_or(&self.w.embed);
        let logits = linear(&normed.reshape((b * rows, cfg.d_model))?, unembed, None)?
            .reshape((b, rows, cfg.d_vocab))?;
        let logits = match cfg.final_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    fn block(
        &self,
        l: usize,
        w: &BlockWeights,
        resid_pre: Tensor,
        rope: &Rope,
        mask: &Mask,
        run: &mut Run,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, s, d) = resid_pre.dims3()?;
        let (n, k, h) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let resid_pre = run.at(HookPoint::ResidPre(l), resid_pre)?;

        // Attention.
        let (scale, x) = rms_norm(&resid_pre, &w.ln1, cfg.rms_norm_eps)?;
        run.at(HookPoint::Ln1Scale(l), scale)?;
        let x = run.at(HookPoint::Ln1Normalized(l), x)?;
        let x2 = x.reshape((b * s, d))?;
        let qkv = linear(&x2, &self.qkv[l], None)?;
        let part =
            |from: usize, len: usize, bias: Option<&Tensor>, heads: usize| -> Result<Tensor> {
                let y = qkv.narrow(1, from, len)?;
                let y = match bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                };
                Ok(y.reshape((b, s, heads, h))?)
            };
        let q = part(0, n * h, w.b_q.as_ref(), n)?;
        let kk = part(n * h, k * h, w.b_k.as_ref(), k)?;
        let v = part((n + k) * h, k * h, w.b_v.as_ref(), k)?;
        let (q, kk) = match (&w.q_norm, &w.k_norm) {
            (Some(qn), Some(kn)) => (
                rms_norm(&q, qn, cfg.rms_norm_eps)?.1,
                rms_norm(&kk, kn, cfg.rms_norm_eps)?.1,
            ),
            _ => (q, kk),
        };
        let q = run.at(HookPoint::Q(l), q)?;
        let kk = run.at(HookPoint::K(l), kk)?;
        let v = run.at(HookPoint::V(l), v)?;
        let q = run.at(HookPoint::RotQ(l), apply_rope(&q, rope)?)?;
        let kk = run.at(HookPoint::RotK(l), apply_rope(&kk, rope)?)?;

        // [b, heads, s, h]; each kv head serves n/k consecutive query heads.
        let qh = q.transpose(1, 2)?.contiguous()?;
        let kh = repeat_kv(&kk.transpose(1, 2)?, n / k)?;
        let vh = repeat_kv(&v.transpose(1, 2)?, n / k)?;
        let seen = run.wants(HookPoint::AttnScores(l)) || run.wants(HookPoint::Pattern(l));
        let z = if s >= BLOCKED_ATTENTION_FROM && !seen {
            self.blocked_attention(&qh, &kh, &vh, mask)?
        } else {
            let scores = self.attention_scores(&qh, &kh, mask.full()?)?;
            let scores = run.at(HookPoint::AttnScores(l), scores)?;
            let pattern = softmax_f32(&scores)?;
            let pattern = run.at(HookPoint::Pattern(l), pattern)?;
            pattern.matmul(&vh)?
        };
        let z = z.transpose(1, 2)?.contiguous()?; // [b, s, n, h]
        let z = run.at(HookPoint::Z(l), z)?;
        let attn = linear(&z.reshape((b * s, n * h))?, &w.w_o, None)?.reshape((b, s, d))?;
        let attn = if run.wants(HookPoint::Result(l)) {
            // Per-head outputs: result[b,s,i,:] = W_O[:, i*h..(i+1)*h] z[b,s,i,:].
            let zh = z.permute((2, 0, 1, 3))?.reshape((n, b * s, h))?;
            // [n, h, d] as a strided view: gemm takes the strides, a copy of W_O per layer
            // cost more than the product.
            let wo = w.w_o.reshape((d, n, h))?.permute((1, 2, 0))?;
            let result = zh
                .matmul(&wo)?
                .reshape((n, b, s, d))?
                .permute((1, 2, 0, 3))?
                .contiguous()?;
            let id = result.id();
            let result = run.at(HookPoint::Result(l), result)?;
            // Hooks that only read keep the fused sum, so reading never changes the logits.
            if result.id() == id {
                attn
            } else {
                result.sum(2)?
            }
        } else {
            attn
        };
        // The output bias belongs to no head: it is added after the heads are summed.
        let attn = match &w.b_o {
            Some(bias) => attn.broadcast_add(bias)?,
            None => attn,
        };
        let attn = match &w.ln1_post {
            Some(wn) => rms_norm(&attn, wn, cfg.rms_norm_eps)?.1,
            None => attn,
        };
        let attn_out = run.at(HookPoint::AttnOut(l), attn)?;
        let resid_mid = run.at(HookPoint::ResidMid(l), (&resid_pre + &attn_out)?)?;

        // MLP.
        let (scale, x) = rms_norm(&resid_mid, &w.ln2, cfg.rms_norm_eps)?;
        run.at(HookPoint::Ln2Scale(l), scale)?;
        let x = run.at(HookPoint::Ln2Normalized(l), x)?;
        let x2 = x.reshape((b * s, d))?;
        let gate = linear(&x2, &w.w_gate, None)?.reshape((b, s, cfg.d_mlp))?;
        let gate = run.at(HookPoint::MlpPre(l), gate)?;
        let up = linear(&x2, &w.w_up, None)?.reshape((b, s, cfg.d_mlp))?;
        let up = run.at(HookPoint::MlpPreLinear(l), up)?;
        let act = match cfg.activation {
            Activation::GeluTanh => ops::gelu_tanh(&gate)?,
            Activation::GeluErf => gate.gelu_erf()?,
            Activation::Silu => gate.silu()?,
        };
        let post = run.at(HookPoint::MlpPost(l), (act * up)?)?;
        let mlp =
            linear(&post.reshape((b * s, cfg.d_mlp))?, &w.w_down, None)?.reshape((b, s, d))?;
        let mlp = match &w.ln2_post {
            Some(wn) => rms_norm(&mlp, wn, cfg.rms_norm_eps)?.1,
            None => mlp,
        };
        let mlp_out = run.at(HookPoint::MlpOut(l), mlp)?;
        run.at(HookPoint::ResidPost(l), (&resid_mid + &mlp_out)?)
    }

    /// Scaled, soft-capped and masked attention scores of queries [b, n, q, h] against keys
    /// [b, n, k, h], with an additive mask [q, k].
    fn attention_scores(&self, q: &Tensor, k: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let scores = (q.matmul(&k.t()?.contiguous()?)? * self.cfg.attn_scale)?;
        let scores = match self.cfg.attn_softcap {
            Some(c) => ((scores / c)?.tanh()? * c)?,
            None => scores,
        };
        Ok(scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?)
    }

    /// softmax(scores) · V one block of queries at a time, each against only the keys it can
    /// see; the same numbers as the full computation, without the s × s tensors.
    fn blocked_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Result<Tensor> {
        let blocks = mask.blocks()?;
        let mut out = Vec::with_capacity(blocks.len());
        for b in blocks {
            let scores = self.attention_scores(
                &q.narrow(2, b.q0, b.nq)?,
                &k.narrow(2, b.k0, b.nk)?,
                &b.mask,
            )?;
            out.push(softmax_f32(&scores)?.matmul(&v.narrow(2, b.k0, b.nk)?.contiguous()?)?);
        }
        Ok(Tensor::cat(&out, 2)?)
    }

    /// RoPE tables for `s` positions, one per distinct base, and the (lazily built) masks, one
    /// per distinct window.
    fn position_tables(&self, s: usize) -> Result<(Vec<Rope>, Vec<Mask>)> {
        let mut ropes: Vec<Rope> = Vec::new();
        let mut masks: Vec<Mask> = Vec::new();
        let h = self.cfg.d_head;
        for lc in &self.cfg.layers {
            if !ropes
                .iter()
                .any(|r| r.theta == lc.rope_theta && r.scaling == lc.rope_scaling)
            {
                let half = h / 2;
                let mut cos = Vec::with_capacity(s * half);
                let mut sin = Vec::with_capacity(s * half);
                for p in 0..s {
                    for i in 0..half {
                        let mut inv = 1.0 / lc.rope_theta.powf((2 * i) as f64 / h as f64);
                        if let Some(sc) = &lc.rope_scaling {
                            inv = sc.apply(i, inv);
                        }
                        let a = p as f64 * inv;
                        cos.push(a.cos() as f32);
                        sin.push(a.sin() as f32);
                    }
                }
                ropes.push(Rope {
                    theta: lc.rope_theta,
                    scaling: lc.rope_scaling.clone(),
                    cos: Tensor::from_vec(cos, (s, half), &self.device)?,
                    sin: Tensor::from_vec(sin, (s, half), &self.device)?,
                });
            }
            if !masks.iter().any(|m| m.window == lc.sliding_window) {
                masks.push(Mask::new(lc.sliding_window, s, &self.device));
            }
        }
        Ok((ropes, masks))
    }
}

/// The additive causal (and sliding-window) mask for queries q0..q0+nq against keys
/// k0..k0+nk: 0 where visible, -inf elsewhere.
fn mask_block(
    q0: usize,
    nq: usize,
    k0: usize,
    nk: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let m: Vec<f32> = (q0..q0 + nq)
        .flat_map(|i| {
            (k0..k0 + nk).map(move |j| {
                if j <= i && window.is_none_or(|w| i - j < w) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (nq, nk), device)?)
}

/// x [.., in] @ w[out, in]^T (+ b); the backward skips the weight's gradient.
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(ops::linear(x, w, b)?)
}

/// RMSNorm over the last dim, computed in f32: returns (rms [.., 1], x / rms * w).
/// The scale is TransformerLens's `hook_scale`.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let rms = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    let y = xf
        .broadcast_div(&rms)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dtype)?;
    Ok((rms.to_dtype(dtype)?, y))
}

/// Softmax over the last dim in f32 (differentiable, unlike candle's fused kernel).
fn softmax_f32(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    Ok(candle_nn::ops::softmax(&x.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(dtype)?)
}

/// Rotate-half RoPE on [b, s, heads, h] with tables [s, h/2].
fn apply_rope(x: &Tensor, rope: &Rope) -> Result<Tensor> {
    let (_, s, _, h) = x.dims4()?;
    let half = h / 2;
    let cos = rope.cos.reshape((1, s, 1, half))?.to_dtype(x.dtype())?;
    let sin = rope.sin.reshape((1, s, 1, half))?.to_dtype(x.dtype())?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
}

/// [b, k, s, h] -> [b, k*groups, s, h], each kv head repeated for its group of query heads.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.contiguous()?);
    }
    let (b, k, s, h) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, k, groups, s, h))?
        .contiguous()?
        .reshape((b, k * groups, s, h))?)
}
