//! Additive attention masks (0 or −∞): causal, with an optional sliding window (keys at
//! distance < window, as HF and llama.cpp), built once per window and shared by every layer,
//! whole or in the query blocks of blocked attention; and the per-row masks of a pass that
//! continues a left-padded KV cache, where each row's padding is hidden from its queries.

use std::cell::OnceCell;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::model::config::Config;

/// The additive attention masks (0 or -inf) of one window for `s` positions, built on first
/// use and shared by every layer with that window: the full [s, s] mask, and the masks of
/// blocked attention's query blocks.
pub(crate) struct Mask {
    pub(crate) window: Option<usize>,
    s: usize,
    device: Device,
    full: OnceCell<Tensor>,
    blocks: OnceCell<Vec<QueryBlock>>,
    // Continuing a KV cache: the queries are slots `offset..offset + s` against keys
    // `0..offset + s`, and row r's first `pad[r]` slots are left padding.
    cached: Option<(usize, Vec<usize>)>,
}

/// Queries q0..q0+nq of blocked attention, the keys k0..k0+nk they can see, and their mask.
pub(crate) struct QueryBlock {
    pub(crate) q0: usize,
    pub(crate) nq: usize,
    pub(crate) k0: usize,
    pub(crate) nk: usize,
    pub(crate) mask: Tensor,
}

impl Mask {
    /// One (lazily built) mask per distinct window among the layers, for `s` positions.
    pub(crate) fn for_layers(cfg: &Config, s: usize, device: &Device) -> Vec<Mask> {
        let mut masks: Vec<Mask> = Vec::new();
        for lc in &cfg.layers {
            if !masks.iter().any(|m| m.window == lc.sliding_window) {
                masks.push(Mask::new(lc.sliding_window, s, device));
            }
        }
        masks
    }

    /// One mask per distinct window for `s` new positions continuing a KV cache that holds
    /// `offset` slots, with `pad[r]` left-padding slots in row r.
    pub(crate) fn for_layers_cached(
        cfg: &Config,
        offset: usize,
        s: usize,
        pad: &[usize],
        device: &Device,
    ) -> Vec<Mask> {
        let mut masks = Mask::for_layers(cfg, s, device);
        for m in &mut masks {
            m.cached = Some((offset, pad.to_vec()));
        }
        masks
    }

    fn new(window: Option<usize>, s: usize, device: &Device) -> Self {
        Mask {
            window,
            s,
            device: device.clone(),
            full: OnceCell::new(),
            blocks: OnceCell::new(),
            cached: None,
        }
    }

    /// Whether attention may run in query blocks (not when continuing a cache: its masks
    /// differ per row).
    pub(crate) fn blockable(&self) -> bool {
        self.cached.is_none()
    }

    /// The [s, s] mask, or [b, 1, s, offset + s] when continuing a cache.
    pub(crate) fn full(&self) -> Result<&Tensor> {
        if let Some(m) = self.full.get() {
            return Ok(m);
        }
        let m = match &self.cached {
            None => mask_block(0, self.s, 0, self.s, self.window, &self.device)?,
            Some((offset, pad)) => cached_mask(*offset, self.s, pad, self.window, &self.device)?,
        };
        Ok(self.full.get_or_init(|| m))
    }

    /// The query blocks, each with only the keys it can see (causal, inside the window).
    pub(crate) fn blocks(&self) -> Result<&[QueryBlock]> {
        if let Some(b) = self.blocks.get() {
            return Ok(b);
        }
        let mut blocks = Vec::with_capacity(self.s.div_ceil(QUERY_BLOCK));
        for q0 in (0..self.s).step_by(QUERY_BLOCK) {
            let nq = QUERY_BLOCK.min(self.s - q0);
            // Query i sees keys j with j <= i and i - j < window.
            let k0 = self
                .window
                .map_or(0, |w| q0.saturating_sub(w.saturating_sub(1)));
            let nk = q0 + nq - k0;
            let mask = mask_block(q0, nq, k0, nk, self.window, &self.device)?;
            blocks.push(QueryBlock {
                q0,
                nq,
                k0,
                nk,
                mask,
            });
        }
        Ok(self.blocks.get_or_init(|| blocks))
    }
}

/// From this many positions on, attention runs in blocks of queries when nothing reads the
/// scores or the pattern: no s × s tensor is built, and each block only multiplies the keys it
/// can see (causal, and within the sliding window), which for Gemma 3's 512-token windows on a
/// 4k-token prompt skips most of the attention work.
pub(crate) const BLOCKED_ATTENTION_FROM: usize = 256;
/// Queries per block.
const QUERY_BLOCK: usize = 128;

/// Per-row masks [b, 1, s, offset + s] for query slots offset..offset+s: causal and within the
/// window as [`mask_block`], and never a padding key. A padding query sees only itself, so that
/// its (unused) row stays finite instead of a softmax over nothing.
fn cached_mask(
    offset: usize,
    s: usize,
    pad: &[usize],
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let t = offset + s;
    let mut m = Vec::with_capacity(pad.len() * s * t);
    for &p in pad {
        for i in offset..t {
            m.extend((0..t).map(|j| {
                let seen = if i < p {
                    j == i
                } else {
                    j >= p && j <= i && window.is_none_or(|w| i - j < w)
                };
                if seen {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Ok(Tensor::from_vec(m, (pad.len(), 1, s, t), device)?)
}

/// The additive causal (and sliding-window) mask for queries q0..q0+nq against keys
/// k0..k0+nk: 0 where visible, -inf elsewhere.
fn mask_block(
    q0: usize,
    nq: usize,
    k0: usize,
    nk: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let m: Vec<f32> = (q0..q0 + nq)
        .flat_map(|i| {
            (k0..k0 + nk).map(move |j| {
                if j <= i && window.is_none_or(|w| i - j < w) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (nq, nk), device)?)
}
