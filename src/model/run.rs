//! The state of one forward pass: which hooks run at which hook point, what is cached, and the
//! checks made on the way (hook output shapes, optional finiteness).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::{
    HookContext, HookPoint, Hooks, SharedHook, SubPoints, SubTarget, Target, SUB_POINT_SUFFIXES,
};

/// A borrowed hook, as a run holds it.
pub(crate) type HookRef<'a> = &'a dyn Fn(&Tensor, &HookContext) -> Result<Tensor>;

/// The state of one forward pass: which hooks run where, and what is cached.
pub(crate) struct Run<'a> {
    hooks: HashMap<HookPoint, Vec<HookRef<'a>>>,
    /// Hooks at sub-points (an SAE's `hook_sae_*`), by host point, and name filters that may
    /// match sub-point names.
    sub_hooks: HashMap<HookPoint, Vec<(SubTarget, SharedHook)>>,
    sub_filters: Vec<(SubTarget, SharedHook)>,
    cache_filter: Option<&'a dyn Fn(&str) -> bool>,
    cache: ActivationCache,
    n_heads: usize,
    n_kv_heads: usize,
    check_finite: bool,
    offset: usize,
    stop_after: Option<usize>,
}

impl<'a> Run<'a> {
    /// Makes every hook point fail on NaN or infinite values (−∞ in attention scores is the
    /// mask and allowed), naming the first hook point where they appear.
    pub(crate) fn check_finite(&mut self, on: bool) {
        self.check_finite = on;
    }

    pub(crate) fn new(n_heads: usize, n_kv_heads: usize) -> Self {
        Run {
            hooks: HashMap::new(),
            sub_hooks: HashMap::new(),
            sub_filters: Vec::new(),
            cache_filter: None,
            cache: ActivationCache::default(),
            n_heads,
            n_kv_heads,
            check_finite: false,
            offset: 0,
            stop_after: None,
        }
    }

    /// The slot of this pass's first position (the cached slots, when continuing a KV cache).
    pub(crate) fn set_offset(&mut self, offset: usize) {
        self.offset = offset;
    }

    /// Ends the pass after this layer's block: no later block, final norm or logits run.
    pub(crate) fn set_stop_after(&mut self, layer: usize) {
        self.stop_after = Some(layer);
    }

    /// The last layer this pass runs, if it stops early.
    pub(crate) fn stop_after(&self) -> Option<usize> {
        self.stop_after
    }

    pub(crate) fn hook(
        &mut self,
        p: HookPoint,
        f: &'a dyn Fn(&Tensor, &HookContext) -> Result<Tensor>,
    ) {
        self.hooks.entry(p).or_default().push(f);
    }

    /// Registers every hook of `hooks`, in order: a typed point as it is, a name filter at
    /// each of `points` (the model's) whose name passes it.
    pub(crate) fn hook_set(&mut self, hooks: &'a Hooks, points: &[HookPoint]) {
        for (target, f) in &hooks.entries {
            match target {
                Target::Point(p) => self.hook(*p, f.as_ref()),
                Target::Filter(keep) => {
                    for p in points.iter().filter(|p| keep(&p.name())) {
                        self.hook(*p, f.as_ref());
                    }
                    self.sub_filters
                        .push((SubTarget::Filter(keep.clone()), f.clone()));
                }
                Target::Sub(p, suffix) => self
                    .sub_hooks
                    .entry(*p)
                    .or_default()
                    .push((SubTarget::Suffix(suffix), f.clone())),
            }
        }
    }

    pub(crate) fn cache_when(&mut self, f: &'a dyn Fn(&str) -> bool) {
        self.cache_filter = Some(f);
    }

    /// Whether anything (hook or cache) wants the activation at `p`; lets the forward pass
    /// skip optional work such as `hook_result`.
    pub(crate) fn wants(&self, p: HookPoint) -> bool {
        self.hooks.contains_key(&p) || self.cache_filter.is_some_and(|f| f(&p.name()))
    }

    /// Runs the hooks at `p` on `x`, caches the result if asked, and returns it.
    pub(crate) fn at(&mut self, p: HookPoint, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        if let Some(fs) = self.hooks.get(&p) {
            let name = p.name();
            let subs = self.sub_points(&name, p);
            let ctx = HookContext {
                name,
                point: p,
                layer: p.layer(),
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
                offset: self.offset,
                subs: subs.clone(),
            };
            for f in fs {
                let y = f(&x, &ctx)?;
                if y.dims() != x.dims() {
                    return Err(Error::HookShape {
                        hook: ctx.name.clone(),
                        expected: x.dims().to_vec(),
                        got: y.dims().to_vec(),
                    });
                }
                x = if y.dtype() != x.dtype() {
                    y.to_dtype(x.dtype())?
                } else {
                    y
                };
            }
            if let Some(subs) = subs {
                let recorded = match subs.recorded.lock() {
                    Ok(mut r) => std::mem::take(&mut *r),
                    Err(_) => Vec::new(),
                };
                for (n, t) in recorded {
                    self.cache.insert(n, t);
                }
            }
        }
        if self.check_finite {
            let f = x.to_dtype(candle_core::DType::F32)?;
            let nan = f
                .ne(&f)?
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let abs = f.abs()?;
            let inf = abs
                .eq(f32::INFINITY as f64)?
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let masked_ok = matches!(p, HookPoint::AttnScores(_));
            let pos_inf = f
                .eq(f32::INFINITY as f64)?
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            if nan > 0.0 || (!masked_ok && inf > 0.0) || pos_inf > 0.0 {
                return Err(Error::Invalid(format!(
                    "non-finite values at `{p}`: {nan} NaN and {inf} infinite entries (shape {:?}); this is the first hook point where they appear",
                    x.dims()
                )));
            }
        }
        if let Some(f) = self.cache_filter {
            let name = p.name();
            if f(&name) {
                self.cache.insert(name, x.clone());
            }
        }
        Ok(x)
    }

    /// The sub-point hooks and cache wishes for one hook point's hooks in this pass; `None`
    /// (nothing allocated) on the plain patched runs that neither hook nor cache sub-points.
    fn sub_points(&self, name: &str, p: HookPoint) -> Option<Arc<SubPoints>> {
        if self.cache_filter.is_none()
            && self.sub_filters.is_empty()
            && !self.sub_hooks.contains_key(&p)
        {
            return None;
        }
        let mut hooks = self.sub_hooks.get(&p).cloned().unwrap_or_default();
        hooks.extend(self.sub_filters.iter().cloned());
        let cache = match self.cache_filter {
            Some(f) => SUB_POINT_SUFFIXES
                .iter()
                .map(|s| format!("{name}.{s}"))
                .filter(|n| f(n))
                .collect(),
            None => Vec::new(),
        };
        Some(Arc::new(SubPoints {
            hooks,
            cache,
            recorded: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn into_cache(self) -> ActivationCache {
        self.cache
    }
}
