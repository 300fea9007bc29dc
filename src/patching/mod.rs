//! Patching: activation patching ([`activation`]), path patching ([`path`]) and attribution
//! patching ([`attribution`]) between a clean and a corrupted prompt, exact under
//! grouped-query attention.
//!
//! A [`Patcher`] runs both prompts once, caches what the techniques need, and then answers
//! sweeps. Every patched run starts from the cached residual stream at the first layer it
//! changes (the layers below are identical to the base run), several patched runs share one
//! batched forward, and logits are computed only at the metric's position.
//!
//! Directions follow TransformerLens: **denoising** patches clean activations into the
//! corrupted run; **noising** patches corrupted activations into the clean run. Tables hold
//! the raw metric of each patched run; [`PatchResult::normalized`] rescales them.

pub mod activation;
pub mod attribution;
pub mod path;

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::metrics::Metric;
use crate::model::{HookedTransformer, Pass};
use crate::table::Table;

pub use activation::PatchTarget;
pub use attribution::{Agreement, Attribution};
pub use path::{Receiver, Receivers};

/// Which run receives the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Clean activations into the corrupted run (how much does this restore?).
    Denoise,
    /// Corrupted activations into the clean run (how much does this break?).
    Noise,
}

impl Direction {
    /// `denoise` or `noise`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Denoise => "denoise",
            Direction::Noise => "noise",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "denoise" | "denoising" => Ok(Direction::Denoise),
            "noise" | "noising" => Ok(Direction::Noise),
            _ => Err(Error::Invalid(format!(
                "direction `{s}`: use `denoise` or `noise`"
            ))),
        }
    }
}

/// A table of patched metric values with the run it came from.
#[derive(Debug, Clone)]
pub struct PatchResult {
    /// The metric's name.
    pub metric: String,
    /// What was patched, e.g. `head-out`.
    pub what: String,
    /// Denoise or noise.
    pub direction: Direction,
    /// The metric on the clean run.
    pub clean_value: f32,
    /// The metric on the corrupted run.
    pub corrupted_value: f32,
    /// Raw patched metric values.
    pub table: Table,
}

impl PatchResult {
    /// (patched − corrupted) / (clean − corrupted) for every entry.
    pub fn normalized(&self) -> Table {
        let (c, k) = (self.clean_value, self.corrupted_value);
        let mut t = self.table.map(|v| crate::metrics::normalized(v, c, k));
        t.title = format!("normalized {}", t.title);
        t
    }

    /// The damage a noising patch does, 1 − normalized for every entry: 0 where the patched
    /// component does not matter (the clean behaviour is kept), 1 where patching it alone
    /// breaks the behaviour as much as the whole corruption.
    pub fn damage(&self) -> Table {
        let mut t = self.normalized().map(|v| 1.0 - v);
        t.title = format!("damage (1 − normalized) {}", self.table.title);
        t
    }

    /// What a figure should show: for denoising the normalized table (1 = clean behaviour
    /// restored), for noising the [`damage`](Self::damage) (0 = no effect), so that either way
    /// the components that matter stand out from a background of 0; with its value label.
    pub fn effect(&self) -> (Table, &'static str) {
        match self.direction {
            Direction::Denoise => (self.normalized(), "normalized (1 = restored)"),
            Direction::Noise => (self.damage(), "damage (1 − normalized)"),
        }
    }

    /// JSON with the metric, the clean and corrupted values, the axes and the raw values.
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = self.table.to_json();
        j["metric"] = serde_json::json!(self.metric);
        j["what"] = serde_json::json!(self.what);
        j["direction"] = serde_json::json!(self.direction.name());
        j["clean_value"] = serde_json::json!(self.clean_value);
        j["corrupted_value"] = serde_json::json!(self.corrupted_value);
        j
    }
}

/// One prompt's run: tokens, cached activations, and the metric value.
pub(crate) struct Side {
    pub(crate) tokens: Tensor,
    pub(crate) cache: ActivationCache,
    pub(crate) value: f32,
}

/// Runs a clean and a corrupted prompt once and answers patching questions about them. It
/// holds a (cheap, shared) clone of the model, so it can live in its own notebook cell.
pub struct Patcher {
    pub(crate) model: HookedTransformer,
    pub(crate) clean: Side,
    pub(crate) corrupt: Side,
    pub(crate) metric: Arc<dyn Metric>,
    pub(crate) pos: usize,
    /// Rows per batched forward; `None` sizes activation sweeps by prompt length.
    pub(crate) batch: Option<usize>,
    pub(crate) quiet: bool,
    pub(crate) str_tokens: Vec<String>,
}

impl std::fmt::Debug for Patcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patcher")
            .field("metric", &self.metric.name())
            .field("position", &self.pos)
            .field("clean_value", &self.clean.value)
            .field("corrupted_value", &self.corrupt.value)
            .field("tokens", &self.str_tokens)
            .finish()
    }
}

/// Hook names the patcher caches: everything a technique here patches or reads.
fn wanted(name: &str) -> bool {
    [
        "hook_resid_pre",
        "hook_attn_out",
        "hook_mlp_out",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_pattern",
        "attn.hook_z",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

impl Patcher {
    /// Runs both prompts (texts). They must tokenize to the same length.
    pub fn new(
        model: &HookedTransformer,
        clean: &str,
        corrupt: &str,
        metric: impl Metric + 'static,
    ) -> Result<Self> {
        let c = model.to_tokens(clean)?;
        let k = model.to_tokens(corrupt)?;
        Self::from_tokens(model, &c, &k, metric)
    }

    /// Runs both prompts (token ids [1, s]); they must have the same length.
    pub fn from_tokens(
        model: &HookedTransformer,
        clean: &Tensor,
        corrupt: &Tensor,
        metric: impl Metric + 'static,
    ) -> Result<Self> {
        let (c, k) = (one_row(clean)?, one_row(corrupt)?);
        if c.dims() != k.dims() {
            let show = |t: &Tensor| -> String {
                let ids = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<u32>())
                    .unwrap_or_default();
                match model.ids_to_str_tokens(&ids) {
                    Ok(s) => format!("{} tokens {s:?}", s.len()),
                    Err(_) => format!("{} tokens {ids:?}", ids.len()),
                }
            };
            return Err(Error::Shape(format!(
                "clean and corrupted prompts must have the same number of tokens, so positions line up:\n  clean:     {}\n  corrupted: {}",
                show(&c),
                show(&k)
            )));
        }
        let metric: Arc<dyn Metric> = Arc::new(metric);
        let (cl, cc) = model.run_with_cache_filtered(&c, wanted)?;
        let (kl, kc) = model.run_with_cache_filtered(&k, wanted)?;
        let s = c.dim(1)?;
        let pos = s - 1;
        let value = |l: &Tensor| -> Result<f32> {
            first(&metric.compute(&l.narrow(1, pos, 1)?.squeeze(1)?)?)
        };
        let ids = c.flatten_all()?.to_vec1::<u32>()?;
        let str_tokens = model
            .ids_to_str_tokens(&ids)
            .unwrap_or_else(|_| ids.iter().map(|i| i.to_string()).collect());
        Ok(Patcher {
            model: model.clone(),
            clean: Side {
                value: value(&cl)?,
                tokens: c,
                cache: cc,
            },
            corrupt: Side {
                value: value(&kl)?,
                tokens: k,
                cache: kc,
            },
            metric,
            pos,
            batch: None,
            quiet: false,
            str_tokens,
        })
    }

    /// Builds a patcher from existing runs (e.g. a cache perturbed on purpose); each cache
    /// must hold resid_pre, attn_out, mlp_out, q, k, v, pattern and z of every layer. The
    /// metric values come from forwarding the tokens.
    pub fn from_caches(
        model: &HookedTransformer,
        clean: (&Tensor, ActivationCache),
        corrupt: (&Tensor, ActivationCache),
        metric: impl Metric + 'static,
    ) -> Result<Self> {
        let mut p = Self::from_tokens(model, clean.0, corrupt.0, metric)?;
        p.clean.cache = clean.1;
        p.corrupt.cache = corrupt.1;
        Ok(p)
    }

    /// Measures the metric at `pos` instead of the last position (the base runs are re-read).
    pub fn at_position(mut self, pos: usize) -> Result<Self> {
        let s = self.clean.tokens.dim(1)?;
        if pos >= s {
            return Err(Error::Invalid(format!(
                "position {pos} is out of range for {s} tokens"
            )));
        }
        self.pos = pos;
        for side in [&mut self.clean, &mut self.corrupt] {
            let l = self
                .model
                .pass(&side.tokens)
                .logits_at(&[pos])
                .run()?
                .logits;
            side.value = first(&self.metric.compute(&l.squeeze(1)?)?)?;
        }
        Ok(self)
    }

    /// Patched runs per batched forward. By default activation sweeps hold up to 4096 token
    /// rows per forward (at least 16 runs) and path patching 16 runs.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.batch = Some(b.max(1));
        self
    }

    /// Silences progress output.
    pub fn quiet(mut self, q: bool) -> Self {
        self.quiet = q;
        self
    }

    /// The metric on the clean run.
    pub fn clean_value(&self) -> f32 {
        self.clean.value
    }

    /// The metric on the corrupted run.
    pub fn corrupted_value(&self) -> f32 {
        self.corrupt.value
    }

    /// The prompts' token strings (clean).
    pub fn str_tokens(&self) -> &[String] {
        &self.str_tokens
    }

    /// Logits [1, s, d_vocab] of the base run with the whole activation at each of `points`
    /// taken from the source run (every position and head), e.g. all of `hook_z` at once.
    pub fn run_patched(&self, points: &[HookPoint], direction: Direction) -> Result<Tensor> {
        let cfg = self.model.cfg();
        let (base, source) = self.sides(direction);
        let mut owned: Vec<(HookPoint, Tensor)> = Vec::new();
        for p in points {
            p.check_layers(cfg.n_layers)?;
            owned.push((*p, source.cache.get(&p.name())?));
        }
        let start = points
            .iter()
            .map(|p| p.layer().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let hooks: Vec<(HookPoint, Box<HookFnRef<'_>>)> = owned
            .into_iter()
            .map(|(p, src)| {
                let f: Box<HookFnRef<'_>> = Box::new(move |x: &Tensor, _: &HookContext| {
                    Ok(src
                        .to_dtype(x.dtype())?
                        .broadcast_as(x.shape())?
                        .contiguous()?)
                });
                (p, f)
            })
            .collect();
        let resid = base.cache.get(&HookPoint::ResidPre(start).name())?;
        let mut pass = self.model.pass_from(start, resid);
        for (p, f) in &hooks {
            pass = pass.hook(*p, f.as_ref());
        }
        Ok(pass.run()?.logits)
    }

    /// The metric of logits [b, s, v] at the patcher's position, per row.
    pub fn metric_of(&self, logits: &Tensor) -> Result<Vec<f32>> {
        let at = logits.narrow(1, self.pos, 1)?.squeeze(1)?;
        Ok(self
            .metric
            .compute(&at)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }

    /// (base, source) for a direction.
    pub(crate) fn sides(&self, d: Direction) -> (&Side, &Side) {
        match d {
            Direction::Denoise => (&self.corrupt, &self.clean),
            Direction::Noise => (&self.clean, &self.corrupt),
        }
    }

    pub(crate) fn result(&self, what: &str, d: Direction, table: Table) -> PatchResult {
        PatchResult {
            metric: self.metric.name(),
            what: what.into(),
            direction: d,
            clean_value: self.clean.value,
            corrupted_value: self.corrupt.value,
            table,
        }
    }

    /// Runs `b` copies of the base run from `layer` with `hooks`, returning the metric per copy.
    pub(crate) fn run_batch(
        &self,
        base: &Side,
        layer: usize,
        b: usize,
        hooks: &[(HookPoint, &HookFnRef<'_>)],
    ) -> Result<Vec<f32>> {
        let resid = base.resid_rows(layer, b)?;
        self.run_rows(self.model.pass_from(layer, resid), b, hooks)
    }

    /// One batched forward of `rows` rows of `pass` with `hooks`: the metric per row.
    pub(crate) fn run_rows<'a>(
        &self,
        pass: Pass<'a>,
        rows: usize,
        hooks: &[(HookPoint, &'a HookFnRef<'a>)],
    ) -> Result<Vec<f32>> {
        let pos = vec![self.pos; rows];
        let mut pass = pass.logits_at(&pos);
        for (p, f) in hooks {
            pass = pass.hook(*p, *f);
        }
        let logits = pass.run()?.logits;
        Ok(self
            .metric
            .compute(&logits.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
}

impl Side {
    /// `b` copies of this run's residual stream entering `layer`, [b, s, d].
    pub(crate) fn resid_rows(&self, layer: usize, b: usize) -> Result<Tensor> {
        let resid = self.cache.get(&HookPoint::ResidPre(layer).name())?;
        let (_, s, d) = resid.dims3()?;
        Ok(resid.broadcast_as((b, s, d))?.contiguous()?)
    }
}

/// A hook as the patcher passes it to a run.
pub(crate) type HookFnRef<'a> = dyn Fn(&Tensor, &HookContext) -> Result<Tensor> + 'a;

/// Replaces, in each batch row, the entries where `mask` (u8, broadcastable to the
/// activation) is 1 by `source` (broadcastable). Exact: values are selected, not mixed.
pub(crate) fn splice(x: &Tensor, mask: &Tensor, source: &Tensor) -> Result<Tensor> {
    let shape = x.shape();
    let m = mask.broadcast_as(shape)?;
    let src = source.to_dtype(x.dtype())?.broadcast_as(shape)?;
    Ok(m.where_cond(&src, x)?)
}

/// A u8 mask of `shape` with ones where `on(index)` holds.
pub(crate) fn mask(
    shape: &[usize],
    device: &candle_core::Device,
    on: impl Fn(&[usize]) -> bool,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut v = Vec::with_capacity(n);
    for mut i in 0..n {
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        v.push(on(&idx) as u8);
    }
    Ok(Tensor::from_vec(v, shape, device)?)
}

fn one_row(t: &Tensor) -> Result<Tensor> {
    let t = if t.rank() == 1 {
        t.unsqueeze(0)?
    } else {
        t.clone()
    };
    if t.rank() != 2 || t.dim(0)? != 1 {
        return Err(Error::Shape(format!(
            "patching takes one prompt at a time ([1, s] tokens), got shape {:?}",
            t.dims()
        )));
    }
    Ok(t)
}

fn first(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .first()
        .copied()
        .unwrap_or(f32::NAN))
}
