//! The public partial forward pass: start from token ids, from the residual stream entering
//! any layer, from a wavefront of residuals, or after a KV cache; add hooks for this pass only;
//! cache what a filter names; compute only the logits asked for. Patching, attribution and the
//! translation pipeline are built on it, and so can a user's own technique.
//!
//! ```no_run
//! # use mechinterp::prelude::*;
//! # fn main() -> Result<()> {
//! let model = HookedTransformer::gemma3_270m()?;
//! let toks = model.to_tokens("EN: I like green apples. FR: J'aime les pommes")?;
//! let (_, cache) = model.run_with_cache(&toks)?;
//! // Re-run layers 6.. from the cached residual, with layer 9's head 3 zeroed, logits only at
//! // the last position.
//! let zero = Hooks::new().intervene("blocks.9.attn.hook_z", Intervention::ZeroHead(3))?;
//! let last = toks.dim(1)? - 1;
//! let out = model
//!     .pass_from(6, cache.get("blocks.6.hook_resid_pre")?)
//!     .hooks(&zero)
//!     .logits_at(&[last])
//!     .run()?;
//! assert_eq!(out.logits.dims(), &[1, 1, model.cfg().d_vocab]);
//! # Ok(()) }
//! ```

use candle_core::Tensor;

use crate::cache::ActivationCache;
use crate::error::Result;
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::kv_cache::KvCache;
use crate::model::run::HookRef;
use crate::model::transformer::{HookedTransformer, LogitRows, Start};

/// One forward pass being set up: where it starts, its own hooks (after the view's), what it
/// caches and which logits it computes. [`Pass::run`] runs it.
pub struct Pass<'a> {
    model: &'a HookedTransformer,
    start: Start<'a>,
    rows: LogitRows<'a>,
    sets: Vec<&'a Hooks>,
    hooks: Vec<(HookPoint, HookRef<'a>)>,
    cache: Option<&'a dyn Fn(&str) -> bool>,
    stop_after: Option<usize>,
}

/// What a [`Pass`] returns.
#[derive(Debug, Clone)]
pub struct PassOutput {
    /// The logits asked for (f32): [b, s, v] for every position, [b, 1, v] at one position per
    /// row, [b, s − p, v] from position p, [b, longest span, v] for spans, [b, 0, v] for none.
    pub logits: Tensor,
    /// The activations the cache filter named (after the hooks ran).
    pub cache: ActivationCache,
}

impl HookedTransformer {
    /// A forward pass from token ids [b, s] (or [s]); see [`Pass`].
    pub fn pass<'a>(&'a self, tokens: &'a Tensor) -> Pass<'a> {
        Pass::new(self, Start::Tokens(tokens))
    }

    /// A forward pass from the residual stream [b, s, d] entering `layer` (the value of
    /// `blocks.{layer}.hook_resid_pre`; `layer` = n_layers runs only the final norm and the
    /// unembedding). Layers before `layer` are not run, so their hooks do not fire.
    pub fn pass_from(&self, layer: usize, resid: Tensor) -> Pass<'_> {
        Pass::new(self, Start::Resid { layer, resid })
    }

    /// A wavefront: residual streams [b_i, s, d] entering layers l_0 < l_1 < …; the rows that
    /// enter l_i join the batch (at its end) when the pass reaches l_i. One pass then serves
    /// patches at many layers, each running only the layers after its own.
    pub fn pass_waves(&self, waves: Vec<(usize, Tensor)>) -> Pass<'_> {
        Pass::new(self, Start::Waves(waves))
    }

    /// A pass over new token ids [b, s] after the positions held in `kv`, which it extends
    /// (hooks see only the new positions; [`HookContext::offset`] says where they start).
    pub fn pass_after<'a>(&'a self, tokens: &'a Tensor, kv: &'a mut KvCache) -> Pass<'a> {
        Pass::new(self, Start::Continue { tokens, kv })
    }
}

impl<'a> Pass<'a> {
    fn new(model: &'a HookedTransformer, start: Start<'a>) -> Self {
        Pass {
            model,
            start,
            rows: LogitRows::All,
            sets: Vec::new(),
            hooks: Vec::new(),
            cache: None,
            stop_after: None,
        }
    }

    /// Runs these hooks too, after the view's (and after sets added before).
    pub fn hooks(mut self, hooks: &'a Hooks) -> Self {
        self.sets.push(hooks);
        self
    }

    /// Runs a borrowed closure at `p` too (it may borrow local state, unlike [`Hooks`]).
    pub fn hook(
        mut self,
        p: HookPoint,
        f: &'a (dyn Fn(&Tensor, &HookContext) -> Result<Tensor> + 'a),
    ) -> Self {
        self.hooks.push((p, f));
        self
    }

    /// Caches the activations whose names pass `filter`.
    pub fn cache(mut self, filter: &'a dyn Fn(&str) -> bool) -> Self {
        self.cache = Some(filter);
        self
    }

    /// Logits at every position (the default).
    pub fn logits_all(mut self) -> Self {
        self.rows = LogitRows::All;
        self
    }

    /// Logits at one position per row, `pos[i]` for row i: [b, 1, v].
    pub fn logits_at(mut self, pos: &'a [usize]) -> Self {
        self.rows = LogitRows::At(pos);
        self
    }

    /// Logits from position `p` on: [b, s − p, v].
    pub fn logits_from(mut self, p: usize) -> Self {
        self.rows = LogitRows::From(p);
        self
    }

    /// Logits at row i's positions `spans[i].0 .. spans[i].0 + spans[i].1`, zero-padded to the
    /// longest span: [b, longest, v].
    pub fn logits_spans(mut self, spans: &'a [(usize, usize)]) -> Self {
        self.rows = LogitRows::Spans(spans);
        self
    }

    /// No logits (activations only, much cheaper): [b, 0, v].
    pub fn no_logits(mut self) -> Self {
        self.rows = LogitRows::None;
        self
    }

    /// Stops after `layer`'s block: later blocks, the final norm and the unembedding do not run
    /// and the logits are [b, 0, v]. Collecting activations at layer 6 of 18 then costs a third
    /// of a forward pass (SAE training does this).
    pub fn stop_after(mut self, layer: usize) -> Self {
        self.stop_after = Some(layer);
        self
    }

    /// Runs the pass.
    pub fn run(self) -> Result<PassOutput> {
        let mut run = self.model.new_run()?;
        // The model's points are only needed to expand name filters: not on every patched run.
        let points = if self.sets.is_empty() {
            Vec::new()
        } else {
            self.model.hook_points()
        };
        for set in self.sets {
            self.model.check_hook_set(set)?;
            run.hook_set(set, &points);
        }
        for (p, f) in self.hooks {
            self.model.check_hook_point(p)?;
            run.hook(p, f);
        }
        if let Some(filter) = self.cache {
            run.cache_when(filter);
        }
        if let Some(l) = self.stop_after {
            let n = self.model.cfg().n_layers;
            if l >= n {
                return Err(crate::error::Error::Invalid(format!(
                    "stop_after({l}): the model has {n} layers (0..={})",
                    n - 1
                )));
            }
            run.set_stop_after(l);
        }
        let logits = self.model.forward_inner(self.start, &mut run, self.rows)?;
        Ok(PassOutput {
            logits,
            cache: run.into_cache(),
        })
    }
}
