//! circuit-tracer's `attribute`: the active features (BOS zeroed), the error and token vectors,
//! the logit targets, then one row of direct effects per target (logits first, then features,
//! all of them or the `max_feature_nodes` most influential as its partial-influence queue
//! picks them), assembled into the graph in circuit-tracer's node order.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::graph::backward::{dot_rows, Backward};
use crate::graph::frozen::Frozen;
use crate::graph::prune::partial_influences;
use crate::graph::targets::{chosen, salient, LogitTargets};
use crate::graph::transcoders::Transcoders;
use crate::graph::Graph;
use crate::model::HookedTransformer;

/// How a graph is built; the defaults are circuit-tracer's.
#[derive(Debug, Clone)]
pub struct AttributionOptions {
    /// At most this many logit nodes (`max_n_logits`, 10).
    pub max_n_logits: usize,
    /// Logit nodes until their cumulative probability reaches this (`desired_logit_prob`, 0.95).
    pub desired_logit_prob: f32,
    /// Keep only this many feature nodes, chosen by estimated influence; `None` keeps all.
    pub max_feature_nodes: Option<usize>,
    /// circuit-tracer's `batch_size` (512): with `max_feature_nodes`, the influence ranking is
    /// refreshed every `update_interval · batch_size` features, which decides the selection.
    pub batch_size: usize,
    /// circuit-tracer's `update_interval` (4).
    pub update_interval: usize,
    /// Targets per backward pass of ours (memory: targets × positions × d_model floats). A
    /// pass runs to its targets' last position only, so small passes of nearby positions do
    /// less work; 16–48 is fastest on the default model.
    pub chunk: usize,
    /// circuit-tracer's `attribution_targets` as token ids: exactly these logit nodes, in this
    /// order, each with its own probability, instead of the most likely tokens.
    pub targets: Option<Vec<u32>>,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions {
            max_n_logits: 10,
            desired_logit_prob: 0.95,
            max_feature_nodes: None,
            batch_size: 512,
            update_interval: 4,
            chunk: 32,
            targets: None,
        }
    }
}

/// The columns and vectors of the sources writing one (layer, position), while collected.
type Written = (Vec<usize>, Vec<Tensor>);

/// Where a source's vector writes: its column and position, grouped by layer and position.
struct Sources {
    /// Per layer written to, per position: (columns, vectors [k, d] transposed to [d, k]).
    by_layer: Vec<BTreeMap<usize, (Vec<usize>, Tensor)>>,
}

/// Everything the rows are read from.
struct Context {
    back: Backward,
    sources: Sources,
    /// Error vectors [n_layers][s, d].
    errors: Vec<Tensor>,
    /// Token vectors [s, d] (the embedding matrix's rows, as circuit-tracer reads them).
    tokens: Tensor,
    n_layers: usize,
    n_pos: usize,
    d_model: usize,
    /// Columns per row: features, errors, tokens.
    n_cols: usize,
    n_feat: usize,
}

/// A target: its layer (n_layers for a logit), position and gradient at the residual stream
/// (`hook_resid_mid` of its layer, or `hook_resid_post` of the last layer for a logit).
struct Target<'v> {
    layer: usize,
    pos: usize,
    vec: &'v [f32],
}

impl Context {
    /// Rows of direct effects for `targets`, written into `out` (targets × n_cols).
    fn rows(&self, targets: &[Target], out: &mut [f32]) -> Result<()> {
        let t = targets.len();
        if t == 0 {
            return Ok(());
        }
        let (n, d) = (self.n_layers, self.d_model);
        let top = targets.iter().map(|x| x.layer).max().unwrap_or(0);
        let sp = targets.iter().map(|x| x.pos).max().unwrap_or(0) + 1;
        let dev = self.tokens.device();
        let inject = |layer: usize| -> Result<Option<Tensor>> {
            if !targets.iter().any(|x| x.layer == layer) {
                return Ok(None);
            }
            let mut v = vec![0f32; t * sp * d];
            for (i, x) in targets.iter().enumerate().filter(|(_, x)| x.layer == layer) {
                let at = (i * sp + x.pos) * d;
                v[at..at + d].copy_from_slice(x.vec);
            }
            Ok(Some(Tensor::from_vec(v, (t, sp, d), dev)?))
        };
        let mut g = match inject(n)? {
            Some(g) => g,
            None => Tensor::zeros((t, sp, d), DType::F32, dev)?,
        };
        for l in (0..n.min(top + 1)).rev() {
            if l < top {
                self.read_layer(l, &g, out)?;
            }
            let mut mid = g.clone();
            if let Some(s) = self.back.skip(l, &g)? {
                mid = (mid + s)?;
            }
            if let Some(i) = inject(l)? {
                mid = (mid + i)?;
            }
            g = self.back.through_attention(l, &mid)?;
        }
        let tok = dot_rows(&g, &self.tokens.narrow(0, 0, sp)?)?;
        let col = self.n_feat + n * self.n_pos;
        scatter_dense(&tok, col, self.n_cols, out)?;
        Ok(())
    }

    /// The columns of the sources writing layer `l` (its features and its errors) for the
    /// gradient `g` [t, sp, d] at its output.
    fn read_layer(&self, l: usize, g: &Tensor, out: &mut [f32]) -> Result<()> {
        let sp = g.dim(1)?;
        let err = dot_rows(g, &self.errors[l].narrow(0, 0, sp)?)?;
        scatter_dense(&err, self.n_feat + l * self.n_pos, self.n_cols, out)?;
        let by_pos = &self.sources.by_layer[l];
        if by_pos.is_empty() {
            return Ok(());
        }
        let gt = g.transpose(0, 1)?.contiguous()?;
        for (&p, (cols, dec_t)) in by_pos.range(..sp) {
            let vals: Vec<Vec<f32>> = gt.get(p)?.matmul(dec_t)?.to_vec2()?;
            for (r, row) in vals.iter().enumerate() {
                let base = r * self.n_cols;
                for (c, v) in cols.iter().zip(row) {
                    out[base + c] += v;
                }
            }
        }
        Ok(())
    }
}

/// `pending` features in runs of at most `chunk` that stay within one layer: a pass costs
/// its targets × its highest layer × its last position, so mixing layers wastes work.
fn chunks<'p>(pending: &'p [usize], active: &[[i64; 3]], chunk: usize) -> Vec<&'p [usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=pending.len() {
        if i == pending.len()
            || i - start == chunk
            || active[pending[i]][0] != active[pending[start]][0]
        {
            out.push(&pending[start..i]);
            start = i;
        }
    }
    out
}

/// Adds `x` [t, sp] into columns `col..col + sp` of each row of `out`.
fn scatter_dense(x: &Tensor, col: usize, n_cols: usize, out: &mut [f32]) -> Result<()> {
    let v: Vec<Vec<f32>> = x.to_vec2()?;
    for (r, row) in v.iter().enumerate() {
        let base = r * n_cols + col;
        for (o, x) in out[base..base + row.len()].iter_mut().zip(row) {
            *o += x;
        }
    }
    Ok(())
}

/// The attribution graph of `tokens` (circuit-tracer prepends a BOS token when the prompt has
/// none; pass the ids as the model should see them, usually with BOS first) for `model` with
/// its MLPs replaced by `transcoders`.
pub fn attribute(
    model: &HookedTransformer,
    tokens: &[u32],
    transcoders: &dyn Transcoders,
    opts: &AttributionOptions,
) -> Result<Graph> {
    let frozen = Frozen::run(model, tokens, transcoders)?;
    attribute_frozen(model, &frozen, transcoders, opts)
}

/// [`attribute`] from a clean run already made.
pub fn attribute_frozen(
    model: &HookedTransformer,
    frozen: &Frozen,
    transcoders: &dyn Transcoders,
    opts: &AttributionOptions,
) -> Result<Graph> {
    let cfg = model.cfg();
    let (n, s, d) = (cfg.n_layers, frozen.n_pos(), cfg.d_model);
    if opts.chunk == 0 || opts.batch_size == 0 || opts.update_interval == 0 {
        return Err(Error::Invalid(
            "chunk, batch_size and update_interval must be at least 1".into(),
        ));
    }
    let back = Backward::new(model, frozen, transcoders)?;

    // Active features, in (layer, position, feature) order, BOS zeroed.
    let mut active: Vec<[i64; 3]> = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut enc_vecs: Vec<f32> = Vec::new();
    let inputs: Vec<Tensor> = (0..n)
        .map(|l| frozen.input(transcoders, l))
        .collect::<Result<_>>()?;
    let mut per_layer: Vec<Vec<(usize, u32, f32)>> = Vec::with_capacity(n);
    for (l, x) in inputs.iter().enumerate() {
        let acts: Vec<Vec<f32>> = transcoders.encode(l, x)?.to_vec2()?;
        let mut here = Vec::new();
        for (p, row) in acts.iter().enumerate().skip(1) {
            for (f, &a) in row.iter().enumerate() {
                if a != 0.0 {
                    here.push((p, f as u32, a));
                }
            }
        }
        if !here.is_empty() {
            let feats: Vec<u32> = here.iter().map(|x| x.1).collect();
            let pos: Vec<u32> = here.iter().map(|x| x.0 as u32).collect();
            let map = back
                .input_map(l, s)?
                .index_select(&Tensor::new(pos.as_slice(), model.device())?, 0)?;
            let enc = (transcoders.encoder_rows(l, &feats)? * map)?;
            enc_vecs.extend(enc.flatten_all()?.to_vec1::<f32>()?);
        }
        for &(p, f, a) in &here {
            active.push([l as i64, p as i64, f as i64]);
            values.push(a);
        }
        per_layer.push(here);
    }
    let n_active = active.len();

    // Decoder vectors scaled by activations, grouped by the layer and position they write,
    // and each layer's reconstruction for the error vectors.
    let mut recon: Vec<Tensor> = (0..n)
        .map(|l| transcoders.output_bias(l, &inputs))
        .collect::<Result<_>>()?;
    let mut grouped: Vec<BTreeMap<usize, Written>> = vec![BTreeMap::new(); n];
    let mut col = 0usize;
    for (l, here) in per_layer.iter().enumerate() {
        if here.is_empty() {
            continue;
        }
        let feats: Vec<u32> = here.iter().map(|x| x.1).collect();
        let acts = Tensor::new(
            here.iter().map(|x| x.2).collect::<Vec<f32>>().as_slice(),
            model.device(),
        )?;
        let pos = Tensor::new(
            here.iter()
                .map(|x| x.0 as u32)
                .collect::<Vec<u32>>()
                .as_slice(),
            model.device(),
        )?;
        for (out, rows) in transcoders.decoder_rows(l, &feats)? {
            let scaled = rows.broadcast_mul(&acts.unsqueeze(1)?)?;
            recon[out] = recon[out].index_add(&pos, &scaled, 0)?;
            for (i, &(p, _, _)) in here.iter().enumerate() {
                let e = grouped[out].entry(p).or_default();
                e.0.push(col + i);
                e.1.push(scaled.get(i)?);
            }
        }
        col += here.len();
    }
    let by_layer = grouped
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|(p, (cols, vs))| Ok((p, (cols, Tensor::stack(&vs, 0)?.t()?.contiguous()?))))
                .collect::<Result<BTreeMap<_, _>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let errors: Vec<Tensor> = (0..n)
        .map(|l| {
            let e = (frozen.mlp_out(l)? - &recon[l])?;
            // circuit-tracer zeroes the BOS position's error too.
            let zero = Tensor::zeros((1, d), DType::F32, model.device())?;
            Ok(Tensor::cat(&[zero, e.narrow(0, 1, s - 1)?], 0)?)
        })
        .collect::<Result<_>>()?;
    // circuit-tracer's token vectors are the raw embedding rows, although the gradient is
    // taken after Gemma's sqrt(d_model) embedding scale: its token columns are the direct
    // effect divided by that scale. Kept, so that graphs agree entry for entry.
    let ids = Tensor::new(frozen.tokens.as_slice(), model.device())?;
    let token_vecs = model
        .weights()
        .embed
        .rows(&ids)?
        .to_dtype(DType::F32)?
        .reshape((s, d))?;

    let targets = match &opts.targets {
        Some(t) => chosen(model, &frozen.last_logits, t)?,
        None => salient(
            model,
            &frozen.last_logits,
            opts.max_n_logits,
            opts.desired_logit_prob,
        )?,
    };
    let ctx = Context {
        back,
        sources: Sources { by_layer },
        errors,
        tokens: token_vecs,
        n_layers: n,
        n_pos: s,
        d_model: d,
        n_cols: n_active + (n + 1) * s,
        n_feat: n_active,
    };
    build(
        &ctx, frozen, &targets, &active, &values, &enc_vecs, opts, model,
    )
}

/// Rows for the logits and the chosen features, then the graph.
#[allow(clippy::too_many_arguments)]
fn build(
    ctx: &Context,
    frozen: &Frozen,
    targets: &LogitTargets,
    active: &[[i64; 3]],
    values: &[f32],
    enc_vecs: &[f32],
    opts: &AttributionOptions,
    model: &HookedTransformer,
) -> Result<Graph> {
    let (n, s, d, n_cols) = (ctx.n_layers, ctx.n_pos, ctx.d_model, ctx.n_cols);
    let n_active = active.len();
    let n_logits = targets.tokens.len();
    let logit_vecs: Vec<f32> = (targets
        .vectors
        .broadcast_mul(&ctx.back.final_last.unsqueeze(0)?)?)
    .flatten_all()?
    .to_vec1()?;
    let max_feat = opts.max_feature_nodes.unwrap_or(n_active).min(n_active);

    // Rows in computation order: logits, then features as visited.
    let mut rows = vec![0f32; (n_logits + max_feat) * n_cols];
    let mut row_node: Vec<usize> = Vec::with_capacity(n_logits + max_feat);
    let logit_targets: Vec<Target> = (0..n_logits)
        .map(|i| Target {
            layer: n,
            pos: s - 1,
            vec: &logit_vecs[i * d..(i + 1) * d],
        })
        .collect();
    for (i, c) in logit_targets.chunks(opts.chunk).enumerate() {
        let at = i * opts.chunk * n_cols;
        ctx.rows(c, &mut rows[at..at + c.len() * n_cols])?;
    }
    row_node.extend((0..n_logits).map(|i| n_active + (n + 1) * s + i));

    let feature = |i: usize| Target {
        layer: active[i][0] as usize,
        pos: active[i][1] as usize,
        vec: &enc_vecs[i * d..(i + 1) * d],
    };
    let mut visited = vec![false; n_active];
    let mut n_visited = 0usize;
    while n_visited < max_feat {
        let pending: Vec<usize> = if max_feat == n_active {
            (0..n_active).collect()
        } else {
            let st = row_node.len();
            let infl = partial_influences(
                &rows[..st * n_cols],
                n_cols,
                &targets.probabilities,
                &row_node,
                n_active + (n + 1) * s + n_logits,
            )?;
            let mut rank: Vec<usize> = (0..n_active).collect();
            rank.sort_by(|&a, &b| infl[b].total_cmp(&infl[a]).then(a.cmp(&b)));
            let queue = (opts.update_interval * opts.batch_size).min(max_feat - n_visited);
            rank.into_iter()
                .filter(|&i| !visited[i])
                .take(queue)
                .collect()
        };
        // Rows are independent and the ranking is refreshed only between queues, so each
        // queue can run in node order, layer by layer.
        let mut pending = pending;
        pending.sort_unstable();
        for c in chunks(&pending, active, opts.chunk) {
            let st = row_node.len();
            let ts: Vec<Target> = c.iter().map(|&i| feature(i)).collect();
            ctx.rows(&ts, &mut rows[st * n_cols..(st + c.len()) * n_cols])?;
            for &i in c {
                visited[i] = true;
                row_node.push(i);
            }
            n_visited += c.len();
        }
    }

    // Square adjacency in node order: selected features, errors, tokens, logits.
    let selected: Vec<usize> = (0..n_active).filter(|&i| visited[i]).collect();
    let n_nodes = max_feat + (n + 1) * s + n_logits;
    let col_of = |c: usize| -> Option<usize> {
        if c < n_active {
            selected.binary_search(&c).ok()
        } else {
            Some(c - n_active + max_feat)
        }
    };
    let col_map: Vec<Option<usize>> = (0..n_cols).map(col_of).collect();
    let mut adj = vec![0f32; n_nodes * n_nodes];
    for (r, &node) in row_node.iter().enumerate() {
        let dst = if node < n_active {
            selected.binary_search(&node).map_err(|_| {
                Error::Invalid(format!(
                    "internal: feature {node} has a row but was not selected"
                ))
            })?
        } else {
            n_nodes - n_logits + (node - n_active - (n + 1) * s)
        };
        let src = &rows[r * n_cols..(r + 1) * n_cols];
        let dst_row = &mut adj[dst * n_nodes..(dst + 1) * n_nodes];
        for (c, &v) in src.iter().enumerate() {
            if let Some(j) = col_map[c] {
                dst_row[j] = v;
            }
        }
    }
    // As HF's `tokenizer.decode`, which circuit-tracer calls: special tokens kept.
    let decode = |ids: &[u32]| -> String {
        model
            .tokenizer()
            .and_then(|t| t.decode(ids, false))
            .unwrap_or_else(|_| format!("{ids:?}"))
    };
    let strs = |ids: &[u32]| -> Vec<String> { ids.iter().map(|&t| decode(&[t])).collect() };
    Ok(Graph {
        input_string: decode(&frozen.tokens),
        input_tokens: frozen.tokens.clone(),
        input_token_strs: strs(&frozen.tokens),
        active_features: active.to_vec(),
        activation_values: values.to_vec(),
        selected_features: selected.iter().map(|&i| i as i64).collect(),
        logit_tokens: targets.tokens.clone(),
        logit_token_strs: strs(&targets.tokens),
        logit_probabilities: targets.probabilities.clone(),
        adjacency: adj,
        n_layers: n,
        vocab_size: model.cfg().d_vocab,
    })
}
