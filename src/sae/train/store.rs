//! The activation store SAE training reads: documents packed into contexts that start with
//! BOS, run through the model up to the hook's layer many contexts at a time, special tokens
//! left out, massive-activation tokens set aside by a stated rule, rows mixed in a shuffle
//! buffer (fill, shuffle, hand out half, as SAELens does), and optionally kept on disk as
//! safetensors shards that later runs re-read instead of running the model.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::HookedTransformer;
use crate::stats::Rng;
use crate::tokenizer::Tokenizer;

/// A seeded random permutation of 0..n (Fisher–Yates), the same on every machine.
pub fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// The token ids a store leaves out: BOS, EOS, padding (the tokenizer's and the model's) and
/// every token the tokenizer marks special.
pub fn special_ids(model: &HookedTransformer) -> Result<HashSet<u32>> {
    let t = model.tokenizer()?;
    let cfg = model.cfg();
    let mut s: HashSet<u32> = [cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id]
        .into_iter()
        .collect();
    s.extend(t.bos_token_id);
    s.extend(t.eos_token_id);
    s.insert(t.pad_token_id);
    s.extend(
        t.inner()
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, a)| a.special)
            .map(|(id, _)| id),
    );
    Ok(s)
}

/// Packs documents into contexts of `context_size` tokens, each starting with BOS: documents
/// are tokenised without BOS and joined with BOS as the separator (SAELens's packing), a
/// document longer than a context continues in the next one, and the corpus starts over
/// (a new epoch) when it runs out.
#[derive(Debug, Clone)]
pub struct Packer {
    texts: Vec<String>,
    next_doc: usize,
    epochs: usize,
    pending: VecDeque<u32>,
    context_size: usize,
    bos: u32,
}

/// Where a [`Packer`] stands, so a disk cache can resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackerState {
    /// The next document to tokenise.
    pub next_doc: usize,
    /// Completed passes over the corpus.
    pub epochs: usize,
    /// Tokens already tokenised but not yet packed.
    pub pending: Vec<u32>,
}

impl Packer {
    /// A packer over `texts` (at least one, with at least one token between them).
    pub fn new(texts: Vec<String>, context_size: usize, bos: u32) -> Result<Packer> {
        if texts.iter().all(|t| t.trim().is_empty()) {
            return Err(Error::Invalid(
                "the corpus has no text: give --corpus a text, TSV or JSONL file or folder with documents in it".into(),
            ));
        }
        if context_size < 2 {
            return Err(Error::Invalid(format!(
                "context size {context_size}: a context needs BOS and at least one token (try 128)"
            )));
        }
        Ok(Packer {
            texts,
            next_doc: 0,
            epochs: 0,
            pending: VecDeque::new(),
            context_size,
            bos,
        })
    }

    /// The next context: BOS, then `context_size − 1` tokens of the stream.
    pub fn next_context(&mut self, tok: &Tokenizer) -> Result<Vec<u32>> {
        let mut ctx = Vec::with_capacity(self.context_size);
        ctx.push(self.bos);
        while ctx.len() < self.context_size {
            let t = match self.pending.pop_front() {
                Some(t) => t,
                None => {
                    self.refill(tok)?;
                    continue;
                }
            };
            // A separator right after the context's own BOS would only repeat it.
            if t == self.bos && ctx.len() == 1 {
                continue;
            }
            ctx.push(t);
        }
        Ok(ctx)
    }

    /// Completed passes over the corpus.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// Where it stands.
    pub fn state(&self) -> PackerState {
        PackerState {
            next_doc: self.next_doc,
            epochs: self.epochs,
            pending: self.pending.iter().copied().collect(),
        }
    }

    /// Resumes from a saved state.
    pub fn restore(&mut self, s: &PackerState) {
        self.next_doc = s.next_doc.min(self.texts.len());
        self.epochs = s.epochs;
        self.pending = s.pending.iter().copied().collect();
    }

    fn refill(&mut self, tok: &Tokenizer) -> Result<()> {
        for _ in 0..=self.texts.len() {
            if self.next_doc >= self.texts.len() {
                self.next_doc = 0;
                self.epochs += 1;
            }
            let ids = tok.encode(&self.texts[self.next_doc], false)?;
            self.next_doc += 1;
            if !ids.is_empty() {
                self.pending.extend(ids);
                self.pending.push_back(self.bos);
                return Ok(());
            }
        }
        Err(Error::Invalid(
            "the corpus tokenises to nothing: give --corpus a file with text in it".into(),
        ))
    }
}

/// The median of some values (the mean of the middle two for an even count; 0 for none).
pub fn median(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// How tokens with massive activations are told apart and what is done with them.
#[derive(Debug, Clone, PartialEq)]
pub struct MassiveRule {
    /// A token is massive when its activation's L2 norm is ≥ `factor` × the median norm.
    pub factor: f32,
    /// The median is taken over the first this many ordinary (non-special) tokens.
    pub calibration_tokens: usize,
    /// Keep massive tokens in the training stream (default: leave them out).
    pub keep: bool,
}

impl Default for MassiveRule {
    fn default() -> Self {
        MassiveRule {
            factor: 5.0,
            calibration_tokens: 4096,
            keep: false,
        }
    }
}

impl MassiveRule {
    /// Whether a norm is massive against this median.
    pub fn is_massive(&self, norm: f32, median: f32) -> bool {
        norm >= self.factor * median
    }

    /// The rule in words, with the median once it is known.
    pub fn describe(&self, median: Option<f32>) -> String {
        let m = median.map_or(String::new(), |m| format!(" = {m:.2}"));
        format!(
            "massive token: activation L2 norm ≥ {}× the median norm{m} (median of the first {} non-special tokens)",
            self.factor, self.calibration_tokens
        )
    }
}

/// What the store reads and how it batches.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The hook the SAE reads, e.g. `blocks.6.hook_resid_post`.
    pub hook: String,
    /// For transcoders: the hook it writes (read from the same pass), e.g.
    /// `blocks.6.hook_mlp_out`.
    pub hook_out: Option<String>,
    /// Tokens per context, BOS included.
    pub context_size: usize,
    /// Contexts per forward pass.
    pub contexts_per_forward: usize,
    /// Rows per training batch.
    pub batch_size: usize,
    /// The shuffle buffer holds this many batches; half of it is handed out per refill.
    pub buffer_batches: usize,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Massive-activation rule.
    pub massive: MassiveRule,
    /// Keep activations here as safetensors shards, and re-read them on later runs.
    pub cache_dir: Option<PathBuf>,
    /// Rows per shard on disk.
    pub shard_rows: usize,
    /// Keep special tokens (flagged in [`Chunk::special`]) instead of leaving them out:
    /// evaluation does, to report figures over all tokens.
    pub keep_special: bool,
}

impl StoreOptions {
    /// Defaults for a hook: contexts of 128, 16 per forward, batches of 256, a 32-batch buffer,
    /// seed 0, massive tokens left out, no disk cache.
    pub fn new(hook: &str) -> StoreOptions {
        StoreOptions {
            hook: hook.into(),
            hook_out: None,
            context_size: 128,
            contexts_per_forward: 16,
            batch_size: 256,
            buffer_batches: 32,
            seed: 0,
            massive: MassiveRule::default(),
            cache_dir: None,
            shard_rows: 32768,
            keep_special: false,
        }
    }
}

/// Counts of what the store has seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Contexts run through the model.
    pub contexts: usize,
    /// Non-special tokens produced (from the model or from disk).
    pub tokens: usize,
    /// Special tokens (BOS, separators, padding) left out.
    pub special_left_out: usize,
    /// Special tokens kept ([`StoreOptions::keep_special`]).
    pub special_kept: usize,
    /// Tokens the massive rule flagged.
    pub massive: usize,
    /// Massive tokens left out of the training stream (0 when they are kept).
    pub massive_dropped: usize,
    /// The median norm the rule uses, once calibrated.
    pub median_norm: Option<f32>,
    /// Mean input norm of the ordinary (non-massive) calibration tokens.
    pub mean_norm_in: Option<f32>,
    /// Mean target norm (the output hook's for transcoders) of the same tokens.
    pub mean_norm_out: Option<f32>,
    /// Seconds spent in the model's forward passes.
    pub model_seconds: f64,
    /// Tokens the model produced (not read from disk).
    pub model_tokens: usize,
    /// Rows read back from disk shards.
    pub disk_rows: usize,
    /// Completed passes over the corpus.
    pub epochs: usize,
}

impl StoreStats {
    /// Tokens per second of the model's forward passes (non-special tokens).
    pub fn model_tokens_per_s(&self) -> f64 {
        if self.model_seconds > 0.0 {
            self.model_tokens as f64 / self.model_seconds
        } else {
            0.0
        }
    }
}

/// Rows of activations in stream order: `x` [rows, d_in] and, for transcoders, `y`
/// [rows, d_out], with the L2 norm of the target (`y`, else `x`) of each row.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// Input rows, flattened.
    pub x: Vec<f32>,
    /// Target rows (transcoders), flattened.
    pub y: Option<Vec<f32>>,
    /// Norm of each row's target.
    pub norms: Vec<f32>,
    /// Whether each row is a special token (only with [`StoreOptions::keep_special`]).
    pub special: Vec<bool>,
}

impl Chunk {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.norms.len()
    }
}

/// Streams activations of a hook (and for transcoders its output hook) from a corpus, in
/// shuffled batches for training ([`ActivationStore::next_batch`]) or in order for evaluation
/// ([`ActivationStore::next_classified`]).
pub struct ActivationStore<'a> {
    model: &'a HookedTransformer,
    opts: StoreOptions,
    hook: String,
    hook_out: Option<String>,
    stop_after: Option<usize>,
    d_in: usize,
    d_out: usize,
    packer: Packer,
    special: HashSet<u32>,
    rng: Rng,
    calibration: Vec<Chunk>,
    buffer: Chunk,
    ready: Chunk,
    ready_at: usize,
    stats: StoreStats,
    disk: Option<DiskCache>,
}

impl<'a> ActivationStore<'a> {
    /// A store over `texts` (documents, in the order given).
    pub fn new(
        model: &'a HookedTransformer,
        texts: Vec<String>,
        opts: StoreOptions,
    ) -> Result<ActivationStore<'a>> {
        let n_layers = model.cfg().n_layers;
        let p_in = HookPoint::parse_for(&opts.hook, n_layers)?;
        let p_out = opts
            .hook_out
            .as_deref()
            .map(|h| HookPoint::parse_for(h, n_layers))
            .transpose()?;
        let cfg = model.cfg();
        let width = |p: &HookPoint| -> Result<usize> {
            match p.shape_doc() {
                "[batch, pos, d_model]" => Ok(cfg.d_model),
                "[batch, pos, d_mlp]" => Ok(cfg.d_mlp),
                shape => Err(Error::Invalid(format!(
                    "the store reads one vector per token; `{p}` is {shape}: use a residual hook (hook_resid_pre/mid/post), hook_attn_out, hook_mlp_out, mlp.hook_in or mlp.hook_post"
                ))),
            }
        };
        let d_in = width(&p_in)?;
        let d_out = p_out.as_ref().map(width).transpose()?.unwrap_or(d_in);
        // The pass can end after the deepest block it reads; a global hook (the final norm's)
        // needs the whole model.
        let stop_after = [Some(&p_in), p_out.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| match p {
                HookPoint::Embed => Some(0),
                p => p.layer(),
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        if opts.keep_special && opts.cache_dir.is_some() {
            return Err(Error::Invalid(
                "a store that keeps special tokens (evaluation) does not cache activations on disk; drop the cache folder or keep_special".into(),
            ));
        }
        if opts.batch_size == 0 || opts.contexts_per_forward == 0 || opts.buffer_batches < 2 {
            return Err(Error::Invalid(format!(
                "store sizes: batch size {}, contexts per forward {}, buffer batches {}: each must be ≥ 1 (the buffer ≥ 2)",
                opts.batch_size, opts.contexts_per_forward, opts.buffer_batches
            )));
        }
        let bos = model
            .tokenizer()?
            .prepended_id()
            .unwrap_or(model.cfg().bos_token_id);
        let packer = Packer::new(texts, opts.context_size, bos)?;
        let hook = p_in.to_string();
        let hook_out = p_out.map(|p| p.to_string());
        let disk = match &opts.cache_dir {
            Some(dir) => Some(DiskCache::open(
                dir,
                Manifest::new(
                    model,
                    &hook,
                    hook_out.as_deref(),
                    d_in,
                    d_out,
                    &opts,
                    &packer,
                ),
                opts.shard_rows,
            )?),
            None => None,
        };
        Ok(ActivationStore {
            model,
            rng: Rng::new(opts.seed),
            special: special_ids(model)?,
            opts,
            hook,
            hook_out,
            stop_after,
            d_in,
            d_out,
            packer,
            calibration: Vec::new(),
            buffer: Chunk::default(),
            ready: Chunk::default(),
            ready_at: 0,
            stats: StoreStats::default(),
            disk,
        })
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Output width (the input's for an SAE).
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// The canonical name of the hook read.
    pub fn hook(&self) -> &str {
        &self.hook
    }

    /// The canonical name of the output hook, for transcoders.
    pub fn hook_out(&self) -> Option<&str> {
        self.hook_out.as_deref()
    }

    /// What the store has seen so far.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The options it runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// The next rows in stream order, special tokens left out: from disk shards first when a
    /// cache holds them, else from the model.
    fn next_chunk(&mut self) -> Result<Chunk> {
        if let Some(disk) = &mut self.disk {
            if let Some(c) = disk.read_next(self.d_in, self.hook_out.is_some())? {
                self.stats.disk_rows += c.rows();
                self.stats.tokens += c.rows();
                self.stats.epochs = self.stats.epochs.max(disk.epochs_read);
                return Ok(c);
            }
            if let Some(s) = disk.take_resume() {
                self.packer.restore(&s);
            }
        }
        let c = self.forward_chunk()?;
        if let Some(disk) = &mut self.disk {
            disk.append(&c, self.packer.state())?;
        }
        Ok(c)
    }

    /// Runs one batch of contexts through the model.
    fn forward_chunk(&mut self) -> Result<Chunk> {
        let t0 = Instant::now();
        let (n, s) = (self.opts.contexts_per_forward, self.opts.context_size);
        let tok = self.model.tokenizer()?;
        let mut ids = Vec::with_capacity(n * s);
        for _ in 0..n {
            ids.extend(self.packer.next_context(tok)?);
        }
        let keep_special = self.opts.keep_special;
        let keep: Vec<u32> = ids
            .iter()
            .enumerate()
            .filter(|(_, t)| keep_special || !self.special.contains(t))
            .map(|(i, _)| i as u32)
            .collect();
        let special: Vec<bool> = keep
            .iter()
            .map(|&i| self.special.contains(&ids[i as usize]))
            .collect();
        let toks = Tensor::from_vec(ids, (n, s), self.model.device())?;
        let (hook, hook_out) = (self.hook.as_str(), self.hook_out.as_deref());
        let filter = |name: &str| name == hook || Some(name) == hook_out;
        let mut pass = self.model.pass(&toks).cache(&filter).no_logits();
        if let Some(l) = self.stop_after {
            pass = pass.stop_after(l);
        }
        let out = pass.run()?;
        let idx = Tensor::from_vec(keep.clone(), keep.len(), self.model.device())?;
        let rows = |name: &str, d: usize| -> Result<Tensor> {
            Ok(out
                .cache
                .get(name)?
                .reshape((n * s, d))?
                .index_select(&idx, 0)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?)
        };
        let x = rows(hook, self.d_in)?;
        let y = hook_out.map(|h| rows(h, self.d_out)).transpose()?;
        let norms = y
            .as_ref()
            .unwrap_or(&x)
            .sqr()?
            .sum(1)?
            .sqrt()?
            .to_vec1::<f32>()?;
        let c = Chunk {
            x: x.flatten_all()?.to_vec1()?,
            y: y.map(|y| y.flatten_all()?.to_vec1()).transpose()?,
            norms,
            special,
        };
        self.stats.contexts += n;
        self.stats.tokens += c.rows();
        self.stats.model_tokens += c.rows();
        self.stats.special_left_out += n * s - c.rows();
        self.stats.special_kept += c.special.iter().filter(|&&v| v).count();
        self.stats.model_seconds += t0.elapsed().as_secs_f64();
        self.stats.epochs = self.packer.epochs();
        Ok(c)
    }

    /// The median norm of the massive rule: calibrated on the first chunks (which are kept for
    /// the stream) the first time it is asked for.
    pub fn median_norm(&mut self) -> Result<f32> {
        if let Some(m) = self.stats.median_norm {
            return Ok(m);
        }
        let mut norms = Vec::new();
        while norms.len() < self.opts.massive.calibration_tokens.max(1) {
            let c = self.next_chunk()?;
            norms.extend(
                c.norms
                    .iter()
                    .zip(&c.special)
                    .filter(|(_, &s)| !s)
                    .map(|(n, _)| *n),
            );
            self.calibration.push(c);
        }
        let m = median(&norms);
        self.stats.median_norm = Some(m);
        // Mean norms of the ordinary tokens: the driver scales activations by √d / mean norm.
        let (d_in, d_out) = (self.d_in, self.d_out);
        let (mut n, mut sx, mut sy) = (0usize, 0f64, 0f64);
        for c in &self.calibration {
            for (i, &norm) in c.norms.iter().enumerate() {
                if c.special[i] || self.opts.massive.is_massive(norm, m) {
                    continue;
                }
                let row = &c.x[i * d_in..(i + 1) * d_in];
                sx += row.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
                sy += match &c.y {
                    Some(y) => y[i * d_out..(i + 1) * d_out]
                        .iter()
                        .map(|v| (v * v) as f64)
                        .sum::<f64>()
                        .sqrt(),
                    None => norm as f64,
                };
                n += 1;
            }
        }
        let n = n.max(1) as f64;
        self.stats.mean_norm_in = Some((sx / n) as f32);
        self.stats.mean_norm_out = Some((sy / n) as f32);
        Ok(m)
    }

    /// The next rows in stream order (special tokens left out unless kept), each with its
    /// massive flag; the rule's median is calibrated on the first chunks' non-special tokens,
    /// and those chunks are then handed out first.
    pub fn next_classified(&mut self) -> Result<(Chunk, Vec<bool>)> {
        let median = self.median_norm()?;
        let c = if self.calibration.is_empty() {
            self.next_chunk()?
        } else {
            self.calibration.remove(0)
        };
        let massive: Vec<bool> = c
            .norms
            .iter()
            .map(|&n| self.opts.massive.is_massive(n, median))
            .collect();
        self.stats.massive += massive
            .iter()
            .zip(&c.special)
            .filter(|(&m, &s)| m && !s)
            .count();
        Ok((c, massive))
    }

    /// The next chunk with the massive rule applied: massive rows left out unless kept.
    fn next_filtered(&mut self) -> Result<Chunk> {
        let (c, massive) = self.next_classified()?;
        let drop = |i: usize| c.special[i] || (massive[i] && !self.opts.massive.keep);
        let n_massive = (0..c.rows())
            .filter(|&i| massive[i] && !c.special[i])
            .count();
        if !self.opts.massive.keep {
            self.stats.massive_dropped += n_massive;
        }
        if !(0..c.rows()).any(drop) {
            return Ok(c);
        }
        let keep: Vec<usize> = (0..c.rows()).filter(|&i| !drop(i)).collect();
        Ok(select_rows(&c, &keep, self.d_in, self.d_out))
    }

    /// The next training batch: `x` [batch, d_in] and, for transcoders, `y` [batch, d_out], on
    /// the model's device, drawn from the shuffle buffer.
    pub fn next_batch(&mut self) -> Result<(Tensor, Option<Tensor>)> {
        let b = self.opts.batch_size;
        while self.ready.rows() - self.ready_at < b {
            let cap = b * self.opts.buffer_batches;
            while self.buffer.rows() < cap {
                let c = self.next_filtered()?;
                append(&mut self.buffer, &c);
            }
            let perm = permutation(&mut self.rng, self.buffer.rows());
            let shuffled = select_rows(&self.buffer, &perm, self.d_in, self.d_out);
            let half = shuffled.rows() / 2;
            let (out, keep): (Vec<usize>, Vec<usize>) =
                ((0..half).collect(), (half..shuffled.rows()).collect());
            let rest: Vec<usize> = (self.ready_at..self.ready.rows()).collect();
            let mut ready = select_rows(&self.ready, &rest, self.d_in, self.d_out);
            append(
                &mut ready,
                &select_rows(&shuffled, &out, self.d_in, self.d_out),
            );
            self.ready = ready;
            self.ready_at = 0;
            self.buffer = select_rows(&shuffled, &keep, self.d_in, self.d_out);
        }
        let (a, dev) = (self.ready_at, self.model.device());
        self.ready_at += b;
        let x = Tensor::from_slice(
            &self.ready.x[a * self.d_in..(a + b) * self.d_in],
            (b, self.d_in),
            dev,
        )?;
        let y = match &self.ready.y {
            Some(y) => Some(Tensor::from_slice(
                &y[a * self.d_out..(a + b) * self.d_out],
                (b, self.d_out),
                dev,
            )?),
            None => None,
        };
        Ok((x, y))
    }

    /// Writes what the disk cache holds but has not yet written (a partial shard).
    pub fn flush(&mut self) -> Result<()> {
        if let Some(d) = &mut self.disk {
            d.flush(self.packer.state())?;
        }
        Ok(())
    }
}

/// Rows `idx` of a chunk, in that order.
pub(crate) fn select_rows(c: &Chunk, idx: &[usize], d_in: usize, d_out: usize) -> Chunk {
    let pick = |v: &[f32], d: usize| -> Vec<f32> {
        let mut o = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            o.extend_from_slice(&v[i * d..(i + 1) * d]);
        }
        o
    };
    Chunk {
        x: pick(&c.x, d_in),
        y: c.y.as_ref().map(|y| pick(y, d_out)),
        norms: idx.iter().map(|&i| c.norms[i]).collect(),
        special: idx.iter().map(|&i| c.special[i]).collect(),
    }
}

/// Appends `b`'s rows to `a`.
pub(crate) fn append(a: &mut Chunk, b: &Chunk) {
    a.x.extend_from_slice(&b.x);
    if let Some(by) = &b.y {
        a.y.get_or_insert_with(Vec::new).extend_from_slice(by);
    }
    a.norms.extend_from_slice(&b.norms);
    a.special.extend_from_slice(&b.special);
}

/// FNV-1a over the documents, to tell one corpus (and order) from another.
fn fingerprint(texts: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in texts {
        for b in t.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}:{}", texts.len())
}

/// One shard file on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shard {
    file: String,
    rows: usize,
}

/// `store.json`: what the shards in a cache folder are activations of, and where the corpus
/// stood after the last one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    model: String,
    hook: String,
    hook_out: Option<String>,
    d_in: usize,
    d_out: usize,
    context_size: usize,
    corpus: String,
    shards: Vec<Shard>,
    resume: PackerState,
    /// The shards hold a whole pass over the corpus: later epochs re-read them.
    #[serde(default)]
    complete: bool,
}

impl Manifest {
    fn new(
        model: &HookedTransformer,
        hook: &str,
        hook_out: Option<&str>,
        d_in: usize,
        d_out: usize,
        opts: &StoreOptions,
        packer: &Packer,
    ) -> Manifest {
        let c = model.cfg();
        Manifest {
            version: 1,
            // Only the shape: two checkpoints of one architecture share a cache key.
            model: format!(
                "{} n_layers {} d_model {} d_vocab {}",
                c.architecture, c.n_layers, c.d_model, c.d_vocab
            ),
            hook: hook.into(),
            hook_out: hook_out.map(Into::into),
            d_in,
            d_out,
            context_size: opts.context_size,
            corpus: fingerprint(&packer.texts),
            shards: Vec::new(),
            resume: packer.state(),
            complete: false,
        }
    }

    /// What differs from another manifest's key (everything but the shards), in words.
    fn mismatch(&self, want: &Manifest) -> Option<String> {
        let pairs = [
            ("model", &self.model, &want.model),
            ("hook", &self.hook, &want.hook),
            (
                "output hook",
                &format!("{:?}", self.hook_out),
                &format!("{:?}", want.hook_out),
            ),
            (
                "context size",
                &self.context_size.to_string(),
                &want.context_size.to_string(),
            ),
            ("corpus (fingerprint)", &self.corpus, &want.corpus),
        ];
        pairs
            .iter()
            .find(|(_, a, b)| a != b)
            .map(|(k, a, b)| format!("its {k} is {a}, this run's is {b}"))
    }
}

/// A cache folder of activation shards: read back in order, then extended.
struct DiskCache {
    dir: PathBuf,
    manifest: Manifest,
    next_read: usize,
    resume: Option<PackerState>,
    pending: Chunk,
    shard_rows: usize,
    epochs_read: usize,
}

impl DiskCache {
    fn open(dir: &Path, fresh: Manifest, shard_rows: usize) -> Result<DiskCache> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating the cache folder {}", dir.display()), e))?;
        let path = dir.join("store.json");
        let manifest = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let m: Manifest = serde_json::from_str(&text).map_err(|e| {
                Error::Invalid(format!(
                    "{} is not an activation-store manifest ({e}); give --cache-dir an empty or new folder",
                    path.display()
                ))
            })?;
            if let Some(why) = m.mismatch(&fresh) {
                return Err(Error::Invalid(format!(
                    "the activation cache {} holds other activations: {why}; give --cache-dir another folder or delete this one",
                    dir.display()
                )));
            }
            m
        } else {
            fresh
        };
        let resume = (!manifest.shards.is_empty()).then(|| manifest.resume.clone());
        Ok(DiskCache {
            dir: dir.into(),
            manifest,
            next_read: 0,
            resume,
            pending: Chunk::default(),
            shard_rows,
            epochs_read: 0,
        })
    }

    /// The next shard, while there are any to re-read.
    fn read_next(&mut self, d_in: usize, transcoder: bool) -> Result<Option<Chunk>> {
        if self.next_read >= self.manifest.shards.len() && self.manifest.complete {
            // A whole epoch is on disk: the next epochs re-read it instead of the model.
            self.next_read = 0;
            self.epochs_read += 1;
        }
        let Some(sh) = self.manifest.shards.get(self.next_read).cloned() else {
            return Ok(None);
        };
        self.next_read += 1;
        let path = self.dir.join(&sh.file);
        let t = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the activation shard {}: {e}; delete the cache folder to rebuild it",
                path.display()
            ))
        })?;
        let get = |k: &str| -> Result<Tensor> {
            t.get(k).cloned().ok_or_else(|| {
                Error::Invalid(format!(
                    "the activation shard {} has no tensor `{k}`; delete the cache folder to rebuild it",
                    path.display()
                ))
            })
        };
        let x = get("acts")?;
        if x.dims() != [sh.rows, d_in] {
            return Err(Error::Invalid(format!(
                "the activation shard {} holds {:?}, the manifest says [{}, {d_in}]; delete the cache folder to rebuild it",
                path.display(),
                x.dims(),
                sh.rows
            )));
        }
        let y = transcoder.then(|| get("acts_out")).transpose()?;
        let norms = y.as_ref().unwrap_or(&x).sqr()?.sum(1)?.sqrt()?.to_vec1()?;
        Ok(Some(Chunk {
            x: x.flatten_all()?.to_vec1()?,
            y: y.map(|y| y.flatten_all()?.to_vec1()).transpose()?,
            special: vec![false; sh.rows],
            norms,
        }))
    }

    /// Once the shards are all read: where the corpus stood after the last one.
    fn take_resume(&mut self) -> Option<PackerState> {
        self.resume.take()
    }

    /// Adds freshly computed rows; writes a shard when enough have gathered.
    fn append(&mut self, c: &Chunk, state: PackerState) -> Result<()> {
        if self.manifest.complete {
            return Ok(());
        }
        append(&mut self.pending, c);
        // Once the corpus wraps, the shards hold a whole epoch: close them.
        let wrapped = state.epochs > 0;
        self.manifest.resume = state;
        if wrapped || self.pending.rows() >= self.shard_rows.max(1) {
            self.manifest.complete = wrapped;
            self.write_shard()?;
        }
        Ok(())
    }

    fn flush(&mut self, state: PackerState) -> Result<()> {
        if self.pending.rows() > 0 && !self.manifest.complete {
            self.manifest.resume = state;
            self.write_shard()?;
        }
        Ok(())
    }

    fn write_shard(&mut self) -> Result<()> {
        let rows = self.pending.rows();
        let (d_in, d_out) = (self.manifest.d_in, self.manifest.d_out);
        let file = format!("shard_{:05}.safetensors", self.manifest.shards.len());
        let path = self.dir.join(&file);
        let mut ts = std::collections::HashMap::new();
        ts.insert(
            "acts".to_string(),
            Tensor::from_slice(&self.pending.x, (rows, d_in), &Device::Cpu)?,
        );
        if let Some(y) = &self.pending.y {
            ts.insert(
                "acts_out".to_string(),
                Tensor::from_slice(y, (rows, d_out), &Device::Cpu)?,
            );
        }
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&ts, &tmp).map_err(|e| Error::Write {
            path: path.clone(),
            reason: format!("{e}; check the free space of the --cache-dir folder"),
        })?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
        self.manifest.shards.push(Shard { file, rows });
        // Everything written is now re-readable; a later run skips past it.
        self.next_read = self.manifest.shards.len();
        self.pending = Chunk::default();
        let m = self.dir.join("store.json");
        let tmp = self.dir.join("store.json.tmp");
        let text = serde_json::to_string_pretty(&self.manifest)
            .map_err(|e| Error::Invalid(format!("serialising the cache manifest: {e}")))?;
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &m).map_err(|e| Error::io(format!("writing {}", m.display()), e))?;
        Ok(())
    }
}
