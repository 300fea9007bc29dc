//! The key/value cache of incremental decoding: per layer, the keys (after RoPE) and values of
//! every position seen so far, and each row's left padding, so that a batch of prompts of
//! different lengths decodes together with every row computing what it computes alone.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Keys and values of the positions a model has already run, per layer, for a batch whose
/// rows are left-padded to a common length. Made by [`KvCache::new`] and filled by
/// [`crate::model::HookedTransformer::forward_cached`] (and `generate`).
#[derive(Debug, Clone)]
pub struct KvCache {
    // candle-nn's cache grows its buffers in steps instead of copying on every append.
    layers: Vec<candle_nn::kv_cache::KvCache>,
    pad: Vec<usize>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers and a batch whose row r starts with `pad[r]`
    /// padding slots, with room reserved for `capacity` positions (it grows past that).
    pub fn new(n_layers: usize, pad: Vec<usize>, capacity: usize) -> Self {
        KvCache {
            // Keys and values are kept as [b, kv_heads, slots, d_head]: dim 2 grows.
            layers: (0..n_layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, capacity.max(1)))
                .collect(),
            pad,
            len: 0,
        }
    }

    /// Slots filled so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.pad.len()
    }

    /// Each row's left-padding slots: row r's position p is at slot `pad[r] + p`.
    pub fn pad(&self) -> &[usize] {
        &self.pad
    }

    /// Row r's real positions so far.
    pub fn positions(&self, r: usize) -> usize {
        self.len
            .saturating_sub(self.pad.get(r).copied().unwrap_or(0))
    }

    /// Each row's position ids for the next `s` slots, [b, s] u32 (padding slots get 0).
    pub(crate) fn position_ids(&self, s: usize, device: &candle_core::Device) -> Result<Tensor> {
        let ids: Vec<u32> = self
            .pad
            .iter()
            .flat_map(|&p| (self.len..self.len + s).map(move |i| i.saturating_sub(p) as u32))
            .collect();
        Ok(Tensor::from_vec(ids, (self.pad.len(), s), device)?)
    }

    /// Appends layer `l`'s new keys and values [b, kv_heads, s, d_head] and returns all of
    /// them so far.
    pub(crate) fn append(&mut self, l: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = self.layers.len();
        let layer = self
            .layers
            .get_mut(l)
            .ok_or_else(|| Error::Invalid(format!("a KV cache for {n} layers has no layer {l}")))?;
        Ok(layer.append(&k.contiguous()?, &v.contiguous()?)?)
    }

    /// Records that a pass added `s` slots (after every layer appended them).
    pub(crate) fn advance(&mut self, s: usize) {
        self.len += s;
    }
}
