//! Path patching with the "freeze everything else" semantics of Wang et al. (IOI): the effect
//! of sender heads on the metric through chosen receivers only.
//!
//! 1. Base run again, with the senders' outputs (`hook_z`) taken from the source run and
//!    every other head's output frozen to its base value (MLPs recompute unless
//!    `freeze_mlps`). For the logits receiver, the metric of this run is the answer.
//! 2. For head receivers, the receivers' q / k / v inputs from step 1 are patched into a
//!    fresh base run (nothing else frozen), and its metric is the answer.
//!
//! Direction picks the runs: denoise injects clean senders into the corrupted run, noise
//! injects corrupted senders into the clean run (as Zhang et al. 2025 do for translation).
//! k / v receivers are kv heads: patching one feeds every query head sharing it.

use candle_core::Tensor;

use super::{mask, splice, Direction, HookFnRef, PatchResult, Patcher};
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::progress::Progress;
use crate::table::{Axis, Table};

/// One receiver input of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// The query input of (layer, query head).
    Q(usize, usize),
    /// The key input of (layer, kv head).
    K(usize, usize),
    /// The value input of (layer, kv head).
    V(usize, usize),
}

impl Receiver {
    fn layer(self) -> usize {
        match self {
            Receiver::Q(l, _) | Receiver::K(l, _) | Receiver::V(l, _) => l,
        }
    }
    fn head(self) -> usize {
        match self {
            Receiver::Q(_, h) | Receiver::K(_, h) | Receiver::V(_, h) => h,
        }
    }
    fn point(self) -> HookPoint {
        match self {
            Receiver::Q(l, _) => HookPoint::Q(l),
            Receiver::K(l, _) => HookPoint::K(l),
            Receiver::V(l, _) => HookPoint::V(l),
        }
    }
}

/// Where the senders' effect is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receivers {
    /// The final logits (the direct path through the residual stream, plus MLPs unless frozen).
    Logits,
    /// These heads' q / k / v inputs.
    Heads(Vec<Receiver>),
}

impl Patcher {
    /// The metric when `senders` (layer, head) are patched along paths to `receivers`.
    pub fn path(
        &self,
        senders: &[(usize, usize)],
        receivers: &Receivers,
        direction: Direction,
        freeze_mlps: bool,
    ) -> Result<f32> {
        self.check_path(senders, receivers)?;
        let vals = self.path_batch(&[senders.to_vec()], receivers, direction, freeze_mlps)?;
        Ok(vals[0])
    }

    /// Path patching with each head alone as the sender, [layer][head]; heads that cannot
    /// reach any receiver (at or after the last receiver's layer) are NaN. With receivers in
    /// several layers, a sender between them acts on the receivers after it only (ARENA's
    /// definition): the earlier ones read the residual before the sender writes to it.
    pub fn path_sweep(
        &self,
        receivers: &Receivers,
        direction: Direction,
        freeze_mlps: bool,
    ) -> Result<PatchResult> {
        let cfg = self.model.cfg();
        let last = match receivers {
            Receivers::Logits => cfg.n_layers,
            Receivers::Heads(r) => r.iter().map(|r| r.layer()).max().unwrap_or(0),
        };
        self.check_path(&[], receivers)?;
        let senders: Vec<(usize, usize)> = (0..last)
            .flat_map(|l| (0..cfg.n_heads).map(move |h| (l, h)))
            .collect();
        let what = match receivers {
            Receivers::Logits => "path to logits".to_string(),
            Receivers::Heads(r) => format!("path to {r:?}"),
        };
        let mut table = Table::new(
            format!("{what}: {} ({})", self.metric.name(), direction.name()),
            vec![
                Axis::numbered("layer", cfg.n_layers),
                Axis::numbered("head", cfg.n_heads),
            ],
        );
        let mut progress = Progress::new("path patching", senders.len(), self.quiet);
        // Chunks stay within one layer, so each batch starts as late as it can.
        for l in 0..last {
            let row: Vec<Vec<(usize, usize)>> = senders
                .iter()
                .filter(|s| s.0 == l)
                .map(|s| vec![*s])
                .collect();
            for chunk in row.chunks(self.batch.unwrap_or(16)) {
                let vals = self.path_batch(chunk, receivers, direction, freeze_mlps)?;
                for (s, v) in chunk.iter().zip(vals) {
                    table.set(&[s[0].0, s[0].1], v)?;
                }
                progress.inc(chunk.len());
            }
        }
        progress.finish();
        Ok(self.result(&what, direction, table))
    }

    fn check_path(&self, senders: &[(usize, usize)], receivers: &Receivers) -> Result<()> {
        let cfg = self.model.cfg();
        for &(l, h) in senders {
            if l >= cfg.n_layers || h >= cfg.n_heads {
                return Err(Error::Invalid(format!(
                    "sender head ({l}, {h}) does not exist ({} layers × {} heads)",
                    cfg.n_layers, cfg.n_heads
                )));
            }
        }
        if let Receivers::Heads(rs) = receivers {
            if rs.is_empty() {
                return Err(Error::Invalid("no receivers given".into()));
            }
            for r in rs {
                let max = match r {
                    Receiver::Q(..) => cfg.n_heads,
                    _ => cfg.n_kv_heads,
                };
                if r.layer() >= cfg.n_layers || r.head() >= max {
                    return Err(Error::Invalid(format!(
                        "receiver {r:?} does not exist (q has {} heads, k/v have {} kv heads, {} layers)",
                        cfg.n_heads, cfg.n_kv_heads, cfg.n_layers
                    )));
                }
            }
            if let Some(last) = rs.iter().max_by_key(|r| r.layer()) {
                if let Some(&(sl, sh)) = senders.iter().find(|s| s.0 >= last.layer()) {
                    return Err(Error::Invalid(format!(
                        "sender ({sl}, {sh}) is not before receiver {last:?}, the last one: a head only reaches later layers"
                    )));
                }
            }
        }
        Ok(())
    }

    /// One batch row per sender set.
    fn path_batch(
        &self,
        rows: &[Vec<(usize, usize)>],
        receivers: &Receivers,
        direction: Direction,
        freeze_mlps: bool,
    ) -> Result<Vec<f32>> {
        let cfg = self.model.cfg();
        let (base, source) = self.sides(direction);
        let b = rows.len();
        let dev = self.model.device();
        let start = rows.iter().flatten().map(|s| s.0).min().unwrap_or(0);

        // Step 1: senders from the source, every other head frozen to the base.
        let mut owned: Vec<(HookPoint, Box<HookFnRef<'_>>)> = Vec::new();
        for l in start..cfg.n_layers {
            let m = mask(&[b, 1, cfg.n_heads, 1], dev, |i| {
                rows[i[0]].contains(&(l, i[2]))
            })?;
            let src = source.cache.get(&HookPoint::Z(l).name())?;
            let frozen = base.cache.get(&HookPoint::Z(l).name())?;
            owned.push((
                HookPoint::Z(l),
                Box::new(move |x: &Tensor, _: &HookContext| {
                    let _ = x;
                    splice(&frozen.broadcast_as(x.shape())?, &m, &src)
                }),
            ));
            if freeze_mlps {
                let frozen = base.cache.get(&HookPoint::MlpOut(l).name())?;
                owned.push((
                    HookPoint::MlpOut(l),
                    Box::new(move |x: &Tensor, _: &HookContext| {
                        Ok(frozen.broadcast_as(x.shape())?.contiguous()?)
                    }),
                ));
            }
        }
        let hooks: Vec<(HookPoint, &HookFnRef<'_>)> =
            owned.iter().map(|(p, f)| (*p, f.as_ref())).collect();
        let recv = match receivers {
            Receivers::Logits => return self.run_batch(base, start, b, &hooks),
            Receivers::Heads(r) => r,
        };
        let points: Vec<HookPoint> = {
            let mut v: Vec<HookPoint> = recv.iter().map(|r| r.point()).collect();
            v.sort();
            v.dedup();
            v
        };
        let step1 = self.capture(base, start, b, &hooks, &points)?;

        // Step 2: the receivers' inputs from step 1 into a fresh base run.
        let first = recv.iter().map(|r| r.layer()).min().unwrap_or(0);
        let mut owned2: Vec<(HookPoint, Box<HookFnRef<'_>>)> = Vec::new();
        for (p, captured) in points.iter().zip(step1) {
            let heads: Vec<usize> = recv
                .iter()
                .filter(|r| r.point() == *p)
                .map(|r| r.head())
                .collect();
            let nh = captured.dim(2)?;
            let m = mask(&[1, 1, nh, 1], dev, |i| heads.contains(&i[2]))?;
            owned2.push((
                *p,
                Box::new(move |x: &Tensor, _: &HookContext| splice(x, &m, &captured)),
            ));
        }
        let hooks2: Vec<(HookPoint, &HookFnRef<'_>)> =
            owned2.iter().map(|(p, f)| (*p, f.as_ref())).collect();
        self.run_batch(base, first, b, &hooks2)
    }

    /// Runs the base with hooks and returns the activations at `points` (after the hooks).
    fn capture(
        &self,
        base: &super::Side,
        layer: usize,
        b: usize,
        hooks: &[(HookPoint, &HookFnRef<'_>)],
        points: &[HookPoint],
    ) -> Result<Vec<Tensor>> {
        // Receivers before the first patched layer read the base run's values, unchanged.
        let before: Vec<HookPoint> = points
            .iter()
            .copied()
            .filter(|p| p.layer().is_some_and(|l| l < layer))
            .collect();
        let resid = base.resid_rows(layer, b)?;
        let names: Vec<String> = points.iter().map(|p| p.name()).collect();
        let filter = |n: &str| names.iter().any(|x| x == n);
        // Only the cache matters here.
        let mut pass = self
            .model
            .pass_from(layer, resid)
            .cache(&filter)
            .no_logits();
        for (p, f) in hooks {
            pass = pass.hook(*p, *f);
        }
        let cache = pass.run()?.cache;
        points
            .iter()
            .map(|p| {
                if before.contains(p) {
                    let t = base.cache.get(&p.name())?;
                    let mut dims = t.dims().to_vec();
                    dims[0] = b;
                    Ok(t.broadcast_as(dims)?.contiguous()?)
                } else {
                    cache.get(&p.name())
                }
            })
            .collect()
    }
}
