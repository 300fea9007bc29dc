//! The activation store of a transcoder set: one forward pass per batch of contexts caches
//! every layer's `blocks.L.mlp.hook_in` (input) and `blocks.L.hook_mlp_out` (target), and each
//! layer keeps its own shuffle buffer (fill, shuffle, hand out half, as [`ActivationStore`]
//! does), so the forward pass, the bottleneck, runs once per batch for all layers.
//!
//! The rules are [`ActivationStore`]'s, applied per layer: special tokens are left out, and a
//! token is massive at layer L when the norm of its *target* (`hook_mlp_out` of L, as the
//! single-layer store and `evaluate` decide for transcoders) is ≥ factor × that layer's median,
//! calibrated on the first non-special tokens.
//!
//! [`ActivationStore`]: super::store::ActivationStore

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::store::Packer;
use super::store::{append, median, permutation, select_rows, special_ids, Chunk, MassiveRule};
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::HookedTransformer;
use crate::stats::Rng;

/// The hook a layer's transcoder reads.
pub fn set_hook_in(layer: usize) -> String {
    HookPoint::MlpIn(layer).to_string()
}

/// The hook a layer's transcoder writes.
pub fn set_hook_out(layer: usize) -> String {
    HookPoint::MlpOut(layer).to_string()
}

/// Runs `n` contexts from `packer` through the whole model once and returns, per layer, the
/// rows of `mlp.hook_in` (x) and `hook_mlp_out` (y) with the target norms; special tokens are
/// left out unless `keep_special` (then flagged). Also returns the token ids.
pub(crate) fn forward_layers(
    model: &HookedTransformer,
    packer: &mut Packer,
    special: &HashSet<u32>,
    n: usize,
    keep_special: bool,
) -> Result<(Vec<Chunk>, Vec<u32>)> {
    let tok = model.tokenizer()?;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.extend(packer.next_context(tok)?);
    }
    let s = ids.len() / n;
    let keep: Vec<u32> = ids
        .iter()
        .enumerate()
        .filter(|(_, t)| keep_special || !special.contains(t))
        .map(|(i, _)| i as u32)
        .collect();
    let flags: Vec<bool> = keep
        .iter()
        .map(|&i| special.contains(&ids[i as usize]))
        .collect();
    let n_layers = model.cfg().n_layers;
    let names: HashSet<String> = (0..n_layers)
        .flat_map(|l| [set_hook_in(l), set_hook_out(l)])
        .collect();
    let filter = |name: &str| names.contains(name);
    let toks = Tensor::from_vec(ids.clone(), (n, s), model.device())?;
    let out = model.pass(&toks).cache(&filter).no_logits().run()?;
    let idx = Tensor::from_vec(keep.clone(), keep.len(), model.device())?;
    let d = model.cfg().d_model;
    let rows = |name: &str| -> Result<Tensor> {
        Ok(out
            .cache
            .get(name)?
            .reshape((n * s, d))?
            .index_select(&idx, 0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?)
    };
    let mut chunks = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let x = rows(&set_hook_in(l))?;
        let y = rows(&set_hook_out(l))?;
        let norms = y.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
        chunks.push(Chunk {
            x: x.flatten_all()?.to_vec1()?,
            y: Some(y.flatten_all()?.to_vec1()?),
            norms,
            special: flags.clone(),
        });
    }
    Ok((chunks, ids))
}

/// Per-layer calibration and counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerStoreStats {
    /// The median target norm the massive rule uses.
    pub median_norm: f32,
    /// Mean input norm of the ordinary calibration tokens.
    pub mean_norm_in: f32,
    /// Mean target norm of the same tokens.
    pub mean_norm_out: f32,
    /// Non-special tokens the rule flagged massive.
    pub massive: usize,
    /// Massive tokens left out (0 when kept).
    pub massive_dropped: usize,
}

/// What the set store has seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetStoreStats {
    /// Contexts run through the model.
    pub contexts: usize,
    /// Forward passes run.
    pub forwards: usize,
    /// Non-special tokens produced per layer (before the massive rule).
    pub tokens: usize,
    /// Special tokens left out.
    pub special_left_out: usize,
    /// Seconds in the model's forward passes.
    pub model_seconds: f64,
    /// Per layer.
    pub layers: Vec<LayerStoreStats>,
}

impl SetStoreStats {
    /// Non-special tokens per second of the model's forward passes.
    pub fn model_tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.model_seconds.max(1e-9)
    }
}

/// One layer's queue of filtered chunks and its shuffle buffer.
struct LayerBuf {
    pending: VecDeque<Chunk>,
    buffer: Chunk,
    ready: Chunk,
    ready_at: usize,
    rng: Rng,
}

/// Streams every layer's (input, target) rows in shuffled batches, from one forward pass per
/// batch of contexts.
pub struct SetStore<'a> {
    model: &'a HookedTransformer,
    packer: Packer,
    special: HashSet<u32>,
    d: usize,
    batch_size: usize,
    buffer_batches: usize,
    contexts_per_forward: usize,
    massive: MassiveRule,
    layers: Vec<LayerBuf>,
    stats: SetStoreStats,
}

impl<'a> SetStore<'a> {
    /// A store over `texts`; calibrates the massive rule and the mean norms of every layer on
    /// the first `massive.calibration_tokens` non-special tokens (those rows are then trained
    /// on first).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'a HookedTransformer,
        texts: Vec<String>,
        context_size: usize,
        contexts_per_forward: usize,
        batch_size: usize,
        buffer_batches: usize,
        seed: u64,
        massive: MassiveRule,
    ) -> Result<SetStore<'a>> {
        if batch_size == 0 || contexts_per_forward == 0 || buffer_batches < 2 {
            return Err(Error::Invalid(format!(
                "store sizes: batch size {batch_size}, contexts per forward {contexts_per_forward}, buffer batches {buffer_batches}: each must be ≥ 1 (the buffer ≥ 2)"
            )));
        }
        let bos = model
            .tokenizer()?
            .prepended_id()
            .unwrap_or(model.cfg().bos_token_id);
        let n_layers = model.cfg().n_layers;
        let mut st = SetStore {
            model,
            packer: Packer::new(texts, context_size, bos)?,
            special: special_ids(model)?,
            d: model.cfg().d_model,
            batch_size,
            buffer_batches,
            contexts_per_forward,
            massive,
            layers: (0..n_layers)
                .map(|l| LayerBuf {
                    pending: VecDeque::new(),
                    buffer: Chunk::default(),
                    ready: Chunk::default(),
                    ready_at: 0,
                    rng: Rng::new(seed.wrapping_add(1000 * l as u64)),
                })
                .collect(),
            stats: SetStoreStats {
                layers: vec![LayerStoreStats::default(); n_layers],
                ..Default::default()
            },
        };
        st.calibrate()?;
        Ok(st)
    }

    /// What it has seen.
    pub fn stats(&self) -> &SetStoreStats {
        &self.stats
    }

    fn forward(&mut self) -> Result<Vec<Chunk>> {
        let t0 = Instant::now();
        let n = self.contexts_per_forward;
        let (chunks, ids) = forward_layers(self.model, &mut self.packer, &self.special, n, false)?;
        let rows = chunks.first().map_or(0, Chunk::rows);
        self.stats.contexts += n;
        self.stats.forwards += 1;
        self.stats.tokens += rows;
        self.stats.special_left_out += ids.len() - rows;
        self.stats.model_seconds += t0.elapsed().as_secs_f64();
        Ok(chunks)
    }

    fn calibrate(&mut self) -> Result<()> {
        let mut got: Vec<Vec<Chunk>> = Vec::new();
        let mut n = 0;
        while n < self.massive.calibration_tokens.max(1) {
            let c = self.forward()?;
            n += c.first().map_or(0, Chunk::rows);
            got.push(c);
        }
        let d = self.d;
        for l in 0..self.layers.len() {
            let norms: Vec<f32> = got.iter().flat_map(|c| c[l].norms.clone()).collect();
            let m = median(&norms);
            let (mut k, mut sx, mut sy) = (0usize, 0f64, 0f64);
            for c in got.iter().map(|c| &c[l]) {
                for (i, &norm) in c.norms.iter().enumerate() {
                    if self.massive.is_massive(norm, m) {
                        continue;
                    }
                    let row = &c.x[i * d..(i + 1) * d];
                    sx += row.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
                    sy += norm as f64;
                    k += 1;
                }
            }
            let s = &mut self.stats.layers[l];
            s.median_norm = m;
            s.mean_norm_in = (sx / k.max(1) as f64) as f32;
            s.mean_norm_out = (sy / k.max(1) as f64) as f32;
        }
        for c in got {
            self.push(c);
        }
        Ok(())
    }

    /// Files a forward pass's chunks into every layer's queue, massive rows left out by the
    /// layer's own rule unless kept.
    fn push(&mut self, chunks: Vec<Chunk>) {
        let d = self.d;
        for (l, c) in chunks.into_iter().enumerate() {
            let s = &mut self.stats.layers[l];
            let massive: Vec<bool> = c
                .norms
                .iter()
                .map(|&n| self.massive.is_massive(n, s.median_norm))
                .collect();
            let n_massive = massive.iter().filter(|&&m| m).count();
            s.massive += n_massive;
            let c = if n_massive > 0 && !self.massive.keep {
                s.massive_dropped += n_massive;
                let keep: Vec<usize> = (0..c.rows()).filter(|&i| !massive[i]).collect();
                select_rows(&c, &keep, d, d)
            } else {
                c
            };
            self.layers[l].pending.push_back(c);
        }
    }

    /// The next training batch of `layer`: `x` [batch, d_model] and `y` [batch, d_model] on
    /// the model's device. Runs the model (for every layer) only when this layer's queue is
    /// empty.
    pub fn next_batch(&mut self, layer: usize) -> Result<(Tensor, Tensor)> {
        let (b, d) = (self.batch_size, self.d);
        if layer >= self.layers.len() {
            return Err(Error::Invalid(format!(
                "layer {layer}: the model has {} layers",
                self.layers.len()
            )));
        }
        while self.layers[layer].ready.rows() - self.layers[layer].ready_at < b {
            let cap = b * self.buffer_batches;
            while self.layers[layer].buffer.rows() < cap {
                let c = match self.layers[layer].pending.pop_front() {
                    Some(c) => c,
                    None => {
                        let cs = self.forward()?;
                        self.push(cs);
                        continue;
                    }
                };
                append(&mut self.layers[layer].buffer, &c);
            }
            let lb = &mut self.layers[layer];
            let perm = permutation(&mut lb.rng, lb.buffer.rows());
            let shuffled = select_rows(&lb.buffer, &perm, d, d);
            let half = shuffled.rows() / 2;
            let out: Vec<usize> = (0..half).collect();
            let keep: Vec<usize> = (half..shuffled.rows()).collect();
            let rest: Vec<usize> = (lb.ready_at..lb.ready.rows()).collect();
            let mut ready = select_rows(&lb.ready, &rest, d, d);
            append(&mut ready, &select_rows(&shuffled, &out, d, d));
            lb.ready = ready;
            lb.ready_at = 0;
            lb.buffer = select_rows(&shuffled, &keep, d, d);
        }
        let dev = self.model.device();
        let lb = &mut self.layers[layer];
        let a = lb.ready_at;
        lb.ready_at += b;
        let x = Tensor::from_slice(&lb.ready.x[a * d..(a + b) * d], (b, d), dev)?;
        let y = match &lb.ready.y {
            Some(y) => Tensor::from_slice(&y[a * d..(a + b) * d], (b, d), dev)?,
            None => return Err(Error::Invalid("the set store lost its targets".into())),
        };
        Ok((x, y))
    }
}
