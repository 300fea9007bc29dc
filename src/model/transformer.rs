//! `HookedTransformer`: the weights, the config and the tokenizer of a model, its constructor
//! and accessors. The forward pass is in `forward.rs`, the run API (forward, caches, hooks) in
//! `run_api.rs`, tokens and batches in `tokens.rs`.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::hooks::{HookPoint, Hooks};
use crate::model::config::Config;
use crate::model::matrix::{Matrix, WeightMode};
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
    pub w_q: Matrix,
    /// Key projection [n_kv_heads*d_head, d_model].
    pub w_k: Matrix,
    /// Value projection [n_kv_heads*d_head, d_model].
    pub w_v: Matrix,
    /// Output projection [d_model, n_heads*d_head].
    pub w_o: Matrix,
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
    pub w_gate: Matrix,
    /// MLP up projection [d_mlp, d_model].
    pub w_up: Matrix,
    /// MLP down projection [d_model, d_mlp].
    pub w_down: Matrix,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding [d_vocab, d_model]. Dense matrices share the model's dtype (GGUF ones
    /// may stay quantised, see [`WeightMode`]); norm weights and biases are dense, norms in f32
    /// (with any +1 offset already added), as HF computes norms in f32.
    pub embed: Matrix,
    /// Unembedding [d_vocab, d_model]; `None` when tied to the embedding.
    pub unembed: Option<Matrix>,
    /// Final RMSNorm weight.
    pub ln_final: Tensor,
    /// Blocks, in order.
    pub blocks: Vec<BlockWeights>,
}

/// A transformer whose every activation can be read and replaced by name. Cloning is cheap:
/// weights and tokenizer are shared.
#[derive(Debug, Clone)]
pub struct HookedTransformer {
    pub(crate) cfg: Arc<Config>,
    pub(crate) w: Arc<Weights>,
    // Shared so that clones (patchers, lenses) are cheap: the vocabulary is large.
    pub(crate) tokenizer: Option<std::sync::Arc<Tokenizer>>,
    // Per layer, [W_q; W_k; W_v] in one matrix: one projection instead of three. Dense
    // blocks' w_q, w_k and w_v are views into it, quantised ones share its blocks, so the
    // weights are not held twice.
    pub(crate) qkv: Arc<Vec<Matrix>>,
    pub(crate) device: Device,
    pub(crate) check_finite: bool,
    // TransformerLens's default: prepend BOS (else EOS) to every text.
    pub(crate) prepend_bos: bool,
    // The view's hooks (see `with_hooks`): every pass of this value runs them first.
    pub(crate) hooks: Hooks,
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
    /// New token ids [b, s] after the positions held in a KV cache, which the pass extends.
    Continue {
        /// The new ids.
        tokens: &'t Tensor,
        /// Keys and values of the positions before them.
        kv: &'t mut crate::model::kv_cache::KvCache,
    },
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
    /// Row i's positions start..start + len, zero-padded to the longest: [b, max len, d_vocab].
    Spans(&'a [(usize, usize)]),
    /// None (activations only): [b, 0, d_vocab].
    None,
}

/// Row i's positions `spans[i].0 .. spans[i].0 + spans[i].1` of [b, s, d], each zero-padded
/// to the longest span: [b, max len, d].
pub fn select_spans(x: &Tensor, spans: &[(usize, usize)]) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    if spans.len() != b {
        return Err(Error::Shape(format!(
            "{} spans for a batch of {b}",
            spans.len()
        )));
    }
    if let Some((start, len)) = spans.iter().find(|(p, n)| p + n > s || *n == 0) {
        return Err(Error::Invalid(format!(
            "positions {start}..{} are not a non-empty range of the {s} positions",
            start + len
        )));
    }
    let longest = spans.iter().map(|sp| sp.1).max().unwrap_or(1);
    let rows = spans
        .iter()
        .enumerate()
        .map(|(i, &(start, len))| {
            let r = x.narrow(0, i, 1)?.narrow(1, start, len)?;
            if len == longest {
                return Ok(r);
            }
            let pad = Tensor::zeros((1, longest - len, d), x.dtype(), x.device())?;
            Tensor::cat(&[&r, &pad], 1)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Rows `x[i, pos[i]]` of [b, s, d] as [b, 1, d].
pub fn select_positions(x: &Tensor, pos: &[usize]) -> Result<Tensor> {
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

impl HookedTransformer {
    /// Assembles a model from a config, weights and (optionally) a tokenizer, checking shapes.
    pub fn new(cfg: Config, w: Weights, tokenizer: Option<Tokenizer>) -> Result<Self> {
        cfg.validate()?;
        let device = w.embed.device();
        let mut w = w;
        check_weights(&cfg, &w)?;
        let (nh, kh) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let mut qkv = Vec::with_capacity(w.blocks.len());
        for b in w.blocks.iter_mut() {
            let fused = Matrix::stack_rows(&[&b.w_q, &b.w_k, &b.w_v])?;
            if let Matrix::Dense(f) = &fused {
                b.w_q = Matrix::Dense(f.narrow(0, 0, nh)?);
                b.w_k = Matrix::Dense(f.narrow(0, nh, kh)?);
                b.w_v = Matrix::Dense(f.narrow(0, nh + kh, kh)?);
            }
            qkv.push(fused);
        }
        Ok(HookedTransformer {
            cfg: Arc::new(cfg),
            w: Arc::new(w),
            tokenizer: tokenizer.map(Arc::new),
            qkv: Arc::new(qkv),
            device,
            check_finite: false,
            prepend_bos: true,
            hooks: Hooks::new(),
        })
    }

    /// A view of this model with `hooks` active: every forward pass of the view (`forward`,
    /// `run_with_cache`, `generate`, the partial [`pass`](Self::pass)…) and every technique
    /// given the view (metrics, ablation, lenses, patching, the translation pipeline) runs
    /// them. Cheap: weights and tokenizer are shared, the hooks' closures too.
    ///
    /// Views nest: `model.with_hooks(&a).with_hooks(&b)` runs `a`'s hooks, then `b`'s, at every
    /// point they share (the outer view's hooks see what the inner ones returned), and a
    /// technique's own hooks (a patch, an ablation) run after the view's.
    ///
    /// ```no_run
    /// # use mechinterp::prelude::*;
    /// # fn main() -> Result<()> {
    /// let model = HookedTransformer::gemma3_270m()?;
    /// let ablated = model.with_hooks(&Hooks::new().intervene("blocks.5.attn.hook_z", Intervention::ZeroHead(3))?);
    /// let lp = continuation_logprob(&ablated, "English: green\nFrench:", " vert")?;
    /// # Ok(()) }
    /// ```
    pub fn with_hooks(&self, hooks: &Hooks) -> Self {
        let mut m = self.clone();
        m.hooks = std::mem::take(&mut m.hooks).then(hooks);
        m
    }

    /// The same model with no view hooks (the weights are shared).
    pub fn without_hooks(&self) -> Self {
        let mut m = self.clone();
        m.hooks = Hooks::new();
        m
    }

    /// The hooks this view runs in every pass (empty for a plain model).
    pub fn active_hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Whether this model has the hook point `p`: q/k-norm points need a q/k norm, the
    /// `ln*_post` points Gemma's post-norms.
    pub fn has_hook_point(&self, p: HookPoint) -> bool {
        p.layer().is_none_or(|l| l < self.cfg.n_layers)
            && (!p.is_qk_norm() || self.cfg.qk_norm)
            && (!p.is_post_norm() || self.cfg.post_norms)
    }

    /// Checks that this model has the hook point `p`, saying why not.
    pub fn check_hook_point(&self, p: HookPoint) -> Result<()> {
        p.check_layers(self.cfg.n_layers)?;
        if self.has_hook_point(p) {
            return Ok(());
        }
        let what = if p.is_qk_norm() {
            "no q/k norm"
        } else {
            "no post-attention or post-MLP norm"
        };
        Err(Error::HookNotInModel {
            name: p.name(),
            why: format!("this {} model has {what}", self.cfg.architecture),
            suggestions: vec![],
        })
    }
}

/// Checks every weight's shape against the config.
fn check_weights(c: &Config, w: &Weights) -> Result<()> {
    let (d, nh, kh, m) = (
        c.d_model,
        c.n_heads * c.d_head,
        c.n_kv_heads * c.d_head,
        c.d_mlp,
    );
    let want = |name: String, dims: &[usize], shape: &[usize]| -> Result<()> {
        if dims != shape {
            return Err(Error::Load(format!(
                "weight {name} has shape {dims:?}, expected {shape:?} from the config"
            )));
        }
        Ok(())
    };
    want("embed".into(), &w.embed.dims(), &[c.d_vocab, d])?;
    if let Some(u) = &w.unembed {
        want("unembed".into(), &u.dims(), &[c.d_vocab, d])?;
    }
    want("ln_final".into(), w.ln_final.dims(), &[d])?;
    if w.blocks.len() != c.n_layers {
        return Err(Error::Load(format!(
            "{} blocks of weights for {} layers",
            w.blocks.len(),
            c.n_layers
        )));
    }
    for (l, b) in w.blocks.iter().enumerate() {
        want(format!("blocks.{l}.w_q"), &b.w_q.dims(), &[nh, d])?;
        want(format!("blocks.{l}.w_k"), &b.w_k.dims(), &[kh, d])?;
        want(format!("blocks.{l}.w_v"), &b.w_v.dims(), &[kh, d])?;
        want(format!("blocks.{l}.w_o"), &b.w_o.dims(), &[d, nh])?;
        want(format!("blocks.{l}.w_gate"), &b.w_gate.dims(), &[m, d])?;
        want(format!("blocks.{l}.w_up"), &b.w_up.dims(), &[m, d])?;
        want(format!("blocks.{l}.w_down"), &b.w_down.dims(), &[d, m])?;
        want(format!("blocks.{l}.ln1"), b.ln1.dims(), &[d])?;
        want(format!("blocks.{l}.ln2"), b.ln2.dims(), &[d])?;
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

impl HookedTransformer {
    /// A copy (cheap: weights are shared) that checks every activation for NaN and infinity
    /// and fails at the first hook point where they appear, naming it.
    pub fn with_check_finite(&self, on: bool) -> Self {
        let mut m = self.clone();
        m.check_finite = on;
        m
    }

    /// The model's configuration (n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab…).
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// The model's weights.
    pub fn weights(&self) -> &Weights {
        &self.w
    }

    /// How the weight matrices are held (dense, or a GGUF file's blocks kept quantised).
    pub fn weight_mode(&self) -> WeightMode {
        self.w.embed.mode()
    }

    /// Bytes the weights take in memory (quantised matrices at their stored size).
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let o = |x: &Option<Tensor>| x.as_ref().map_or(0, t);
        let w = &self.w;
        let blocks: usize = w
            .blocks
            .iter()
            .zip(self.qkv.iter())
            .map(|(b, qkv)| {
                // w_q, w_k and w_v are views into (or share the blocks of) the fused qkv.
                qkv.bytes()
                    + [&b.w_o, &b.w_gate, &b.w_up, &b.w_down]
                        .iter()
                        .map(|m| m.bytes())
                        .sum::<usize>()
                    + t(&b.ln1)
                    + t(&b.ln2)
                    + [
                        &b.ln1_post,
                        &b.ln2_post,
                        &b.b_q,
                        &b.b_k,
                        &b.b_v,
                        &b.b_o,
                        &b.q_norm,
                        &b.k_norm,
                    ]
                    .iter()
                    .map(|x| o(x))
                    .sum::<usize>()
            })
            .sum();
        w.embed.bytes() + w.unembed.as_ref().map_or(0, Matrix::bytes) + t(&w.ln_final) + blocks
    }

    /// The unembedding [d_vocab, d_model] (the embedding when they are tied).
    pub fn unembed(&self) -> &Matrix {
        self.w.unembed.as_ref().unwrap_or(&self.w.embed)
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

    /// Every hook point of this model, in forward order (q/k-norm and post-norm points only
    /// where the architecture has those norms).
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.cfg.n_layers)
            .into_iter()
            .filter(|p| self.has_hook_point(*p))
            .collect()
    }

    /// Every hook name of this model, in forward order.
    pub fn hook_names(&self) -> Vec<String> {
        self.hook_points().iter().map(|p| p.name()).collect()
    }
}
