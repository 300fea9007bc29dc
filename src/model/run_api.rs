//! The run API: forward, caches (all, filtered, activations only), hooks given as closures or
//! as a `Hooks` set, and the cache-size estimate; each builds a `Run` and calls the forward pass.

use candle_core::Tensor;

use crate::cache::ActivationCache;
use crate::error::Result;
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::model::logits::Logits;
use crate::model::run::Run;
use crate::model::transformer::{HookedTransformer, LogitRows, Start};

impl HookedTransformer {
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
        let mut run = self.hooked_run(hooks)?;
        self.forward_inner(Start::Tokens(tokens), &mut run, LogitRows::From(from))
    }

    /// Logits at row i's positions `spans[i].0 .. +spans[i].1` ([b, longest span, d_vocab],
    /// zero past each row's span), with a [`Hooks`] set applied: teacher-forced scoring of a
    /// right-padded batch of continuations without unembedding prompts or padding.
    pub fn logits_at_spans(
        &self,
        tokens: &Tensor,
        spans: &[(usize, usize)],
        hooks: &Hooks,
    ) -> Result<Tensor> {
        let mut run = self.hooked_run(hooks)?;
        self.forward_inner(Start::Tokens(tokens), &mut run, LogitRows::Spans(spans))
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
        let mut run = self.hooked_run(hooks)?;
        run.cache_when(&filter);
        let logits = self.forward_run(tokens, &mut run)?;
        let mut cache = run.into_cache();
        cache.set_seq_lengths(logits.lengths().to_vec());
        Ok((logits, cache))
    }
    /// A run with every hook of `hooks` registered (each checked against the model's layers).
    pub(crate) fn hooked_run<'h>(&self, hooks: &'h Hooks) -> Result<Run<'h>> {
        let mut run = Run::new(self.cfg.n_heads, self.cfg.n_kv_heads);
        for (p, fs) in &hooks.map {
            p.check_layers(self.cfg.n_layers)?;
            for f in fs {
                run.hook(*p, f.as_ref());
            }
        }
        Ok(run)
    }

    pub(crate) fn forward_run(&self, tokens: &Tensor, run: &mut Run) -> Result<Logits> {
        let logits = self.forward_inner(Start::Tokens(tokens), run, LogitRows::All)?;
        Logits::new(logits, self.seq_lengths(tokens)?)
    }
}
