//! The run API: forward, caches (all, filtered, activations only, with gradients) and the
//! cache-size estimate; each builds a `Run` holding the view's hooks and calls the forward pass.

use candle_core::{Tensor, Var};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::logits::Logits;
use crate::model::run::Run;
use crate::model::transformer::{HookedTransformer, LogitRows, Start};

impl HookedTransformer {
    /// Logits [b, s, d_vocab] (f32) for token ids [b, s], knowing each row's real length
    /// (see [`Logits`]).
    pub fn forward(&self, tokens: &Tensor) -> Result<Logits> {
        let mut run = self.new_run()?;
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
        let mut run = self.new_run()?;
        run.cache_when(&filter);
        let logits = self.forward_run(tokens, &mut run)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(logits.lengths().to_vec());
        Ok((logits, cache))
    }

    /// Logits, every activation, and the gradient of `metric` (a function of the logits,
    /// summed to a scalar) with respect to every activation, keyed by the same hook names:
    /// TransformerLens's `run_with_cache(incl_bwd=True)`. Each gradient is the total effect
    /// through everything after its point (as a backward hook there sees it).
    pub fn run_with_cache_and_grads(
        &self,
        tokens: &Tensor,
        metric: impl Fn(&Logits) -> Result<Tensor>,
    ) -> Result<(Logits, ActivationCache, ActivationCache)> {
        self.run_with_cache_and_grads_filtered(tokens, |_: &str| true, metric)
    }

    /// [`run_with_cache_and_grads`](Self::run_with_cache_and_grads) for the hook points whose
    /// names pass `filter` only (less memory).
    pub fn run_with_cache_and_grads_filtered(
        &self,
        tokens: &Tensor,
        filter: impl Fn(&str) -> bool,
        metric: impl Fn(&Logits) -> Result<Tensor>,
    ) -> Result<(Logits, ActivationCache, ActivationCache)> {
        use std::sync::Mutex;
        self.warn_cache_size(tokens, &filter)?;
        // activation + 0·var at each point: the var's gradient is the activation's.
        let vars: Mutex<Vec<(HookPoint, Var)>> = Mutex::new(Vec::new());
        let add_var = |x: &Tensor, ctx: &HookContext| -> Result<Tensor> {
            let v = Var::zeros(x.shape(), x.dtype(), x.device())?;
            let y = (x + v.as_tensor())?;
            vars.lock()
                .map_err(|_| Error::Invalid("a gradient hook panicked".into()))?
                .push((ctx.point, v));
            Ok(y)
        };
        let mut run = self.new_run()?;
        let points: Vec<HookPoint> = self
            .hook_points()
            .into_iter()
            .filter(|p| filter(&p.name()))
            .collect();
        for p in &points {
            run.hook(*p, &add_var);
        }
        run.cache_when(&filter);
        let logits = self.forward_run(tokens, &mut run)?;
        let value = metric(&logits)?.sum_all()?;
        let grads = value.backward()?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(logits.lengths().to_vec());
        let vars = vars
            .into_inner()
            .map_err(|_| Error::Invalid("a gradient hook panicked".into()))?;
        let mut out = ActivationCache::default();
        for (p, v) in vars {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                // Nothing after this point reaches the metric (e.g. a position after the one
                // it reads): the gradient is zero.
                None => v.as_tensor().zeros_like()?,
            };
            out.insert(p.name(), g);
        }
        out.set_seq_lengths(logits.lengths().to_vec());
        let cache = cache.detached()?;
        let logits = Logits::new(logits.detach(), logits.lengths().to_vec())?;
        Ok((logits, cache, out))
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
                Q(_) | QNormNormalized(_) | RotQ(_) | Z(_) => c.n_heads * c.d_head,
                K(_) | V(_) | KNormNormalized(_) | RotK(_) => c.n_kv_heads * c.d_head,
                UnembedOut => c.d_vocab,
                QNormScale(_) => c.n_heads,
                KNormScale(_) => c.n_kv_heads,
                AttnScores(_) | Pattern(_) => c.n_heads * s,
                Result(_) => c.n_heads * c.d_model,
                MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => c.d_mlp,
                Ln1Scale(_) | Ln2Scale(_) | Ln1PostScale(_) | Ln2PostScale(_) | LnFinalScale => 1,
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
        let mut run = self.new_run()?;
        run.cache_when(&filter);
        self.forward_inner(Start::Tokens(tokens), &mut run, LogitRows::None)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(self.seq_lengths(tokens)?);
        Ok(cache)
    }

    /// A run with the view's hooks registered (each checked against the model).
    pub(crate) fn new_run(&self) -> Result<Run<'_>> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        if !self.hooks.is_empty() {
            self.check_hook_set(&self.hooks)?;
            run.hook_set(&self.hooks, &self.hook_points());
        }
        Ok(run)
    }

    /// Checks that every typed point of `hooks` exists in this model.
    pub(crate) fn check_hook_set(&self, hooks: &Hooks) -> Result<()> {
        hooks.points().try_for_each(|p| self.check_hook_point(p))
    }

    pub(crate) fn forward_run(&self, tokens: &Tensor, run: &mut Run) -> Result<Logits> {
        let logits = self.forward_inner(Start::Tokens(tokens), run, LogitRows::All)?;
        Logits::new(logits, self.seq_lengths(tokens)?)
    }
}
