//! Activation patching sweeps with TransformerLens's `patching` semantics: one patched run
//! per table entry, batched.
//!
//! k and v have one entry per **kv head**: under grouped-query attention, patching a kv head
//! changes every query head that shares it (n_heads / n_kv_heads of them). q, z and pattern
//! have one entry per query head and never touch the others.

use candle_core::{DType, Tensor};

use super::{mask, splice, Direction, HookFnRef, PatchResult, Patcher, Side};
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::progress::Progress;
use crate::table::{Axis, Table};

/// What an activation-patching sweep patches; each gives one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchTarget {
    /// `hook_resid_pre`, [layer][position].
    ResidPre,
    /// `hook_attn_out`, [layer][position].
    AttnOut,
    /// `hook_mlp_out`, [layer][position].
    MlpOut,
    /// Each head's output (`hook_z`) at every position, [layer][head].
    HeadOut,
    /// Each head's output at one position, [layer][head][position].
    HeadOutByPos,
    /// Each head's query (`hook_q`), [layer][head].
    HeadQ,
    /// Each kv head's key (`hook_k`), [layer][kv_head].
    HeadK,
    /// Each kv head's value (`hook_v`), [layer][kv_head].
    HeadV,
    /// Each head's attention pattern, [layer][head].
    HeadPattern,
}

impl PatchTarget {
    /// Every target, in the order above.
    pub const ALL: [PatchTarget; 9] = [
        PatchTarget::ResidPre,
        PatchTarget::AttnOut,
        PatchTarget::MlpOut,
        PatchTarget::HeadOut,
        PatchTarget::HeadOutByPos,
        PatchTarget::HeadQ,
        PatchTarget::HeadK,
        PatchTarget::HeadV,
        PatchTarget::HeadPattern,
    ];

    /// The CLI name, e.g. `head-out`.
    pub fn name(self) -> &'static str {
        match self {
            PatchTarget::ResidPre => "resid-pre",
            PatchTarget::AttnOut => "attn-out",
            PatchTarget::MlpOut => "mlp-out",
            PatchTarget::HeadOut => "head-out",
            PatchTarget::HeadOutByPos => "head-out-by-pos",
            PatchTarget::HeadQ => "head-q",
            PatchTarget::HeadK => "head-k",
            PatchTarget::HeadV => "head-v",
            PatchTarget::HeadPattern => "head-pattern",
        }
    }

    fn point(self, l: usize) -> HookPoint {
        match self {
            PatchTarget::ResidPre => HookPoint::ResidPre(l),
            PatchTarget::AttnOut => HookPoint::AttnOut(l),
            PatchTarget::MlpOut => HookPoint::MlpOut(l),
            PatchTarget::HeadOut | PatchTarget::HeadOutByPos => HookPoint::Z(l),
            PatchTarget::HeadQ => HookPoint::Q(l),
            PatchTarget::HeadK => HookPoint::K(l),
            PatchTarget::HeadV => HookPoint::V(l),
            PatchTarget::HeadPattern => HookPoint::Pattern(l),
        }
    }
}

impl std::str::FromStr for PatchTarget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PatchTarget::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown patch target `{s}`; use one of: {}",
                    PatchTarget::ALL
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// One table entry: the indices it fills and its mask over the activation (minus batch).
struct Entry {
    idx: Vec<usize>,
    /// (position, head) selected; `None` means all.
    pos: Option<usize>,
    head: Option<usize>,
}

impl Entry {
    /// The entry of position `p`.
    fn at(p: usize) -> Self {
        Entry {
            idx: vec![p],
            pos: Some(p),
            head: None,
        }
    }

    /// The entry of head `h` (all positions).
    fn head(h: usize) -> Self {
        Entry {
            idx: vec![h],
            pos: None,
            head: Some(h),
        }
    }

    /// The entry of head `h` at position `p`.
    fn head_at(h: usize, p: usize) -> Self {
        Entry {
            idx: vec![h, p],
            pos: Some(p),
            head: Some(h),
        }
    }
}

/// Groups each layer's entries (in chunks of at most `max_rows`) into waves: consecutive
/// layers share a wave while their rows fit in `max_rows`.
fn plan_waves(
    n_layers: usize,
    per_layer: &[Entry],
    max_rows: usize,
) -> Vec<Vec<(usize, &[Entry])>> {
    let mut waves: Vec<Vec<(usize, &[Entry])>> = Vec::new();
    let mut rows = 0;
    for l in 0..n_layers {
        for chunk in per_layer.chunks(max_rows) {
            match waves.last_mut() {
                Some(w)
                    if rows + chunk.len() <= max_rows
                        && w.last().is_some_and(|&(pl, _)| pl < l) =>
                {
                    w.push((l, chunk));
                    rows += chunk.len();
                }
                _ => {
                    waves.push(vec![(l, chunk)]);
                    rows = chunk.len();
                }
            }
        }
    }
    waves
}

impl Patcher {
    /// Patches every entry of `target` in `direction`, one patched run per entry.
    pub fn activation(&self, target: PatchTarget, direction: Direction) -> Result<PatchResult> {
        let n_layers = self.model.cfg().n_layers;
        let s = self.clean.tokens.dim(1)?;
        let (axes, per_layer) = self.entries(target, s);
        let mut table = Table::new(
            format!(
                "{} patching {} ({})",
                target.name(),
                self.metric.name(),
                direction.name()
            ),
            axes,
        );
        let (base, source) = self.sides(direction);
        let mut progress = Progress::new(
            &format!("patching {}", target.name()),
            n_layers * per_layer.len(),
            self.quiet,
        );
        // Waves: the entries of consecutive layers share one pass, each layer's rows joining
        // the batch at their own layer (see `HookedTransformer::pass_waves`), so the blocks run on bigger
        // batches and the unembedding is read once per wave instead of once per layer.
        let max_rows = self
            .batch
            .unwrap_or_else(|| (WAVE_TOKENS / s.max(1)).max(16));
        for wave in &plan_waves(n_layers, &per_layer, max_rows) {
            let vals = self.run_wave(base, source, target, wave)?;
            fill_wave(&mut table, wave, vals, &mut progress)?;
        }
        progress.finish();
        Ok(self.result(target.name(), direction, table))
    }

    /// The table's axes for `target` over `s` positions, and the entries of one layer.
    fn entries(&self, target: PatchTarget, s: usize) -> (Vec<Axis>, Vec<Entry>) {
        let cfg = self.model.cfg();
        let (n_layers, n, k) = (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads);
        let layers = Axis::numbered("layer", n_layers);
        let positions = Axis::labelled("position", self.str_tokens.clone());
        match target {
            PatchTarget::ResidPre | PatchTarget::AttnOut | PatchTarget::MlpOut => {
                (vec![layers, positions], (0..s).map(Entry::at).collect())
            }
            PatchTarget::HeadOut | PatchTarget::HeadQ | PatchTarget::HeadPattern => (
                vec![layers, Axis::numbered("head", n)],
                (0..n).map(Entry::head).collect(),
            ),
            PatchTarget::HeadK | PatchTarget::HeadV => (
                vec![layers, Axis::numbered("kv_head", k)],
                (0..k).map(Entry::head).collect(),
            ),
            PatchTarget::HeadOutByPos => (
                vec![layers, Axis::numbered("head", n), positions],
                (0..n)
                    .flat_map(|h| (0..s).map(move |p| Entry::head_at(h, p)))
                    .collect(),
            ),
        }
    }
}

/// Sets a wave's values (in wave order) at its entries' cells of `table`.
fn fill_wave(
    table: &mut Table,
    wave: &[(usize, &[Entry])],
    vals: Vec<f32>,
    progress: &mut Progress,
) -> Result<()> {
    let mut vals = vals.into_iter();
    for &(l, chunk) in wave {
        for e in chunk {
            let mut idx = vec![l];
            idx.extend_from_slice(&e.idx);
            let v = vals
                .next()
                .ok_or_else(|| Error::Shape("a wave returned too few values".into()))?;
            table.set(&idx, v)?;
        }
        progress.inc(chunk.len());
    }
    Ok(())
}

/// Token rows (batch rows × positions) one wave of patched runs may hold at once.
const WAVE_TOKENS: usize = 4096;

impl Patcher {
    /// One pass for a wave of (layer, entries): each layer's rows start from the base run's
    /// residual at that layer and get its patch; returns the metric per row, in wave order.
    fn run_wave(
        &self,
        base: &Side,
        source: &Side,
        target: PatchTarget,
        wave: &[(usize, &[Entry])],
    ) -> Result<Vec<f32>> {
        let dev = self.model.device();
        let mut joining = Vec::with_capacity(wave.len());
        let mut hooks: Vec<(HookPoint, Box<HookFnRef<'_>>)> = Vec::with_capacity(wave.len());
        let mut before = 0;
        for &(l, chunk) in wave {
            let b = chunk.len();
            joining.push((l, base.resid_rows(l, b)?));
            let point = target.point(l);
            let src = source.cache.get(&point.name())?;
            // Rows that joined at earlier layers are left alone: their mask rows are 0.
            let m = entry_mask(target, src.dims(), chunk, dev)?;
            let m = if before > 0 {
                let mut zd = m.dims().to_vec();
                zd[0] = before;
                Tensor::cat(&[&Tensor::zeros(zd, DType::U8, dev)?, &m], 0)?
            } else {
                m
            };
            hooks.push((
                point,
                Box::new(move |x: &Tensor, _: &HookContext| splice(x, &m, &src)),
            ));
            before += b;
        }
        let refs: Vec<(HookPoint, &HookFnRef<'_>)> =
            hooks.iter().map(|(p, f)| (*p, f.as_ref())).collect();
        self.run_rows(self.model.pass_waves(joining), before, &refs)
    }
}

/// The batch mask for entries of a target: shape [b, ...] broadcastable to the activation.
fn entry_mask(
    target: PatchTarget,
    dims: &[usize],
    chunk: &[Entry],
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let b = chunk.len();
    match target {
        // [1, s, d] activations: select a position.
        PatchTarget::ResidPre | PatchTarget::AttnOut | PatchTarget::MlpOut => {
            mask(&[b, dims[1], 1], dev, |i| Some(i[1]) == chunk[i[0]].pos)
        }
        // [1, s, heads, h]: select a head (all positions), or a head at a position.
        PatchTarget::HeadOut | PatchTarget::HeadQ | PatchTarget::HeadK | PatchTarget::HeadV => {
            mask(&[b, 1, dims[2], 1], dev, |i| Some(i[2]) == chunk[i[0]].head)
        }
        PatchTarget::HeadOutByPos => mask(&[b, dims[1], dims[2], 1], dev, |i| {
            Some(i[2]) == chunk[i[0]].head && Some(i[1]) == chunk[i[0]].pos
        }),
        // [1, n, s, s]: select a head's whole pattern.
        PatchTarget::HeadPattern => {
            mask(&[b, dims[1], 1, 1], dev, |i| Some(i[1]) == chunk[i[0]].head)
        }
    }
}
