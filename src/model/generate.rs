//! Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seeded),
//! stop strings and EOS, batches of prompts left-padded so that each row generates what it
//! generates alone, and a view's hooks (`model.with_hooks(&hooks).generate(…)`) act at every step (steering, ablation while writing).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::kv_cache::KvCache;
use crate::model::transformer::HookedTransformer;
use crate::stats::Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// The most likely token (the first, on a tie).
    Greedy,
    /// A token drawn from softmax(logits / temperature), restricted to the `top_k` most likely
    /// tokens and then to the smallest set whose probability reaches `top_p`.
    Sample {
        /// Divides the logits (> 0); below 1 sharpens, above 1 flattens.
        temperature: f64,
        /// Keep only the k most likely tokens (`None`: all).
        top_k: Option<usize>,
        /// Keep the most likely tokens until their probability reaches p (`None`: all).
        top_p: Option<f64>,
        /// Seed: row r of a batch draws from stream r of it, so row 0 of any batch equals a
        /// single-prompt run with the same seed.
        seed: u64,
    },
}

/// Options of [`HookedTransformer::generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// At most this many new tokens per row.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Stop a row once its output contains one of these strings (the text is cut before it).
    pub stop: Vec<String>,
    /// Stop a row at the tokenizer's end-of-sequence token.
    pub stop_at_eos: bool,
    /// Keep each step's logits ([`Generation::logits`]): 4 bytes × vocabulary per token.
    pub keep_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            stop: Vec::new(),
            stop_at_eos: true,
            keep_logits: false,
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding of at most `n` tokens.
    pub fn greedy(n: usize) -> Self {
        GenerateOptions {
            max_new_tokens: n,
            ..Default::default()
        }
    }

    /// These options, stopping at `s` too.
    pub fn stop_at(mut self, s: &str) -> Self {
        self.stop.push(s.to_string());
        self
    }

    fn check(&self) -> Result<()> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = &self.sampling
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(Error::Invalid(format!(
                    "temperature must be a positive number, got {temperature}; use greedy decoding for temperature 0 (Sampling::Greedy; on the command line, omit --temperature)"
                )));
            }
            if *top_k == Some(0) {
                return Err(Error::Invalid(
                    "top_k = 0 keeps no token; use None to keep all".into(),
                ));
            }
            if let Some(p) = top_p {
                if !(*p > 0.0 && *p <= 1.0) {
                    return Err(Error::Invalid(format!("top_p must be in (0, 1], got {p}")));
                }
            }
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::Invalid(
                "an empty stop string would stop before the first token".into(),
            ));
        }
        Ok(())
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// It wrote `max_new_tokens` tokens.
    MaxTokens,
    /// It wrote the end-of-sequence token (kept in `tokens`, not in `text`).
    Eos,
    /// Its output contained this stop string (the last token completed it).
    Stop(String),
    /// The model's context is full.
    Context,
}

/// One row's output.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt's ids (with BOS, as the model's rule adds it).
    pub prompt: Vec<u32>,
    /// The new ids, in order.
    pub tokens: Vec<u32>,
    /// The new text, cut before a stop string, without special tokens.
    pub text: String,
    /// The log-probability of each new token under the (hooked) model, before temperature.
    pub logprobs: Vec<f32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Each step's logits [new tokens, vocabulary] (f32), when asked for.
    pub logits: Option<Tensor>,
}

/// The state of a batch being generated, one entry per row.
struct Rows {
    /// The outputs so far.
    out: Vec<Generation>,
    /// Each step's logits, where kept.
    kept: Vec<Vec<Tensor>>,
    /// Whether the row has stopped.
    done: Vec<bool>,
    /// The row's random stream, when sampling.
    rngs: Vec<Option<Rng>>,
}

impl Rows {
    /// Empty outputs for `prompts`, row r sampling from stream r of the seed.
    fn new(prompts: &[Vec<u32>], sampling: &Sampling) -> Self {
        let b = prompts.len();
        let rngs = (0..b)
            .map(|r| match sampling {
                Sampling::Sample { seed, .. } => Some(Rng::new(
                    seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )),
                Sampling::Greedy => None,
            })
            .collect();
        let out = prompts
            .iter()
            .map(|p| Generation {
                prompt: p.clone(),
                tokens: Vec::new(),
                text: String::new(),
                logprobs: Vec::new(),
                stop: StopReason::MaxTokens,
                logits: None,
            })
            .collect();
        Rows {
            out,
            kept: vec![Vec::new(); b],
            done: vec![false; b],
            rngs,
        }
    }

    /// Stops every row still running, for `reason`.
    fn stop_running(&mut self, reason: StopReason) {
        for (g, d) in self.out.iter_mut().zip(&mut self.done) {
            if !*d {
                g.stop = reason.clone();
                *d = true;
            }
        }
    }
}

impl HookedTransformer {
    /// Continues `prompt`: see [`GenerateOptions`]. `model.generate("…", &GenerateOptions::greedy(20))`.
    pub fn generate(&self, prompt: &str, opts: &GenerateOptions) -> Result<Generation> {
        let mut out = self.generate_batch(&[prompt], opts)?;
        Ok(out.remove(0))
    }

    /// Continues several prompts together; each row's tokens equal its single run's.
    pub fn generate_batch(
        &self,
        prompts: &[impl AsRef<str>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let ids = prompts
            .iter()
            .map(|p| self.encode(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.generate_ids(&ids, opts)
    }
    /// Continues prompts given as token ids (BOS included where wanted).
    pub fn generate_ids(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        opts.check()?;
        if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::Invalid(
                "generate needs at least one prompt, each of at least one token".into(),
            ));
        }
        let (next, kv) = self.left_padded(prompts, opts.max_new_tokens)?;
        let mut rows = Rows::new(prompts, &opts.sampling);
        self.decode(&mut rows, next, kv, opts)?;
        self.finish(rows, opts)
    }

    /// The prompts left-padded to ids [b, longest], and a KV cache with room for them and up
    /// to `max_new` tokens more (as the context allows).
    fn left_padded(&self, prompts: &[Vec<u32>], max_new: usize) -> Result<(Tensor, KvCache)> {
        let b = prompts.len();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let mut flat = Vec::with_capacity(b * longest);
        for (p, &n) in prompts.iter().zip(&pad) {
            flat.extend(std::iter::repeat_n(self.cfg.pad_token_id, n));
            flat.extend_from_slice(p);
        }
        let budget = max_new.min(self.cfg.max_position.saturating_sub(longest));
        let kv = KvCache::new(self.cfg.n_layers, pad, longest + budget);
        let next = Tensor::from_vec(flat, (b, longest), &self.device)?;
        Ok((next, kv))
    }

    /// Decodes up to `max_new_tokens` steps from ids `next`, until every row has stopped or
    /// the context is full.
    fn decode(
        &self,
        rows: &mut Rows,
        mut next: Tensor,
        mut kv: KvCache,
        opts: &GenerateOptions,
    ) -> Result<()> {
        for _ in 0..opts.max_new_tokens {
            if rows.done.iter().all(|&d| d) {
                break;
            }
            if kv.len() + next.dim(1)? > self.cfg.max_position {
                rows.stop_running(StopReason::Context);
                break;
            }
            let logits = self.forward_cached(&next, &mut kv)?; // [b, v]
            let chosen = self.step(rows, &logits, opts)?;
            next = Tensor::from_vec(chosen, (rows.done.len(), 1), &self.device)?;
        }
        Ok(())
    }

    /// Each row's next token from its logits [b, v], recorded in the rows still running.
    fn step(&self, rows: &mut Rows, logits: &Tensor, opts: &GenerateOptions) -> Result<Vec<u32>> {
        let values = logits.to_vec2::<f32>()?;
        let mut chosen = Vec::with_capacity(values.len());
        for (r, row) in values.iter().enumerate() {
            let id = if rows.done[r] {
                // A finished row keeps decoding its last token; nothing reads it.
                *rows.out[r].tokens.last().unwrap_or(&self.cfg.pad_token_id)
            } else {
                self.take_token(rows, r, row, logits, opts)?
            };
            chosen.push(id);
        }
        Ok(chosen)
    }

    /// Chooses running row `r`'s next token from its logits `row`, records it, and stops the
    /// row where it ends the output.
    fn take_token(
        &self,
        rows: &mut Rows,
        r: usize,
        row: &[f32],
        logits: &Tensor,
        opts: &GenerateOptions,
    ) -> Result<u32> {
        let id = match rows.rngs[r].as_mut() {
            None => argmax(row),
            Some(rng) => sample(row, &opts.sampling, rng),
        };
        let g = &mut rows.out[r];
        g.tokens.push(id);
        g.logprobs.push(log_softmax_at(row, id));
        if opts.keep_logits {
            rows.kept[r].push(logits.get(r)?);
        }
        if self.stops(g, id, opts)? {
            rows.done[r] = true;
        }
        Ok(id)
    }

    /// Whether the row's new token `id` stops it (EOS, or a stop string in its text); sets
    /// its reason.
    fn stops(&self, g: &mut Generation, id: u32, opts: &GenerateOptions) -> Result<bool> {
        if opts.stop_at_eos && id == self.cfg.eos_token_id {
            g.stop = StopReason::Eos;
            return Ok(true);
        }
        if !opts.stop.is_empty() {
            let text = self.to_string(&g.tokens)?;
            if let Some(s) = opts.stop.iter().find(|s| text.contains(s.as_str())) {
                g.stop = StopReason::Stop(s.clone());
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rows' outputs, with their text (cut before a stop string) and kept logits.
    fn finish(&self, rows: Rows, opts: &GenerateOptions) -> Result<Vec<Generation>> {
        let Rows { mut out, kept, .. } = rows;
        for (g, k) in out.iter_mut().zip(kept) {
            let text = self.to_string(&g.tokens)?;
            g.text = match &g.stop {
                StopReason::Stop(s) => text
                    .find(s.as_str())
                    .map_or(text.clone(), |i| text[..i].to_string()),
                _ => text,
            };
            if opts.keep_logits {
                g.logits = Some(if k.is_empty() {
                    Tensor::zeros((0, self.cfg.d_vocab), DType::F32, &self.device)?
                } else {
                    Tensor::stack(&k, 0)?
                });
            }
        }
        Ok(out)
    }

    /// One incremental step: runs ids [b, s] after the positions in `kv` (which it extends),
    /// with the view's hooks active on the new positions, and returns the last position's
    /// logits [b, v]. The building block of `generate`, as TransformerLens's `past_kv_cache`.
    pub fn forward_cached(&self, tokens: &Tensor, kv: &mut KvCache) -> Result<Tensor> {
        let s = tokens.dim(tokens.rank().saturating_sub(1))?;
        let out = self
            .pass_after(tokens, kv)
            .logits_from(s.saturating_sub(1))
            .run()?;
        Ok(out.logits.squeeze(1)?)
    }
}

/// The index of the largest value (the first, on a tie).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// log softmax(row)[id], in f64.
fn log_softmax_at(row: &[f32], id: u32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    (row[id as usize] as f64 - lse) as f32
}

/// Draws a token: temperature, then top-k, then top-p, then one uniform draw.
fn sample(row: &[f32], sampling: &Sampling, rng: &mut Rng) -> u32 {
    let Sampling::Sample {
        temperature,
        top_k,
        top_p,
        ..
    } = sampling
    else {
        return argmax(row);
    };
    let mut idx: Vec<usize> = (0..row.len()).collect();
    // Most likely first; ties by id, so the draw does not depend on the sort.
    let by_logit = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if let Some(k) = top_k.filter(|&k| k < idx.len()) {
        idx.select_nth_unstable_by(k - 1, by_logit);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit);
    let max = row[idx[0]] as f64;
    let mut p: Vec<f64> = idx
        .iter()
        .map(|&i| ((row[i] as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    if let Some(top_p) = top_p {
        let mut acc = 0.0;
        let keep = p
            .iter()
            .position(|&x| {
                acc += x;
                acc >= *top_p
            })
            .map_or(p.len(), |i| i + 1);
        p.truncate(keep);
        idx.truncate(keep);
    }
    let total: f64 = p.iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for (&i, &x) in idx.iter().zip(&p) {
        acc += x;
        if u < acc {
            return i as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_top_k_and_top_p() {
        let row = [0.0f32, 3.0, 2.9, -1.0, 1.0];
        let mut rng = Rng::new(7);
        let s = |k, p| Sampling::Sample {
            temperature: 1.0,
            top_k: k,
            top_p: p,
            seed: 0,
        };
        for _ in 0..200 {
            let a = sample(&row, &s(Some(2), None), &mut rng);
            assert!(a == 1 || a == 2, "{a}");
            // The top token alone has probability < 0.5, so p = 0.5 keeps two.
            let b = sample(&row, &s(None, Some(0.5)), &mut rng);
            assert!(b == 1 || b == 2, "{b}");
            assert_eq!(sample(&row, &s(Some(1), None), &mut rng), 1);
        }
        // At a high temperature every token is drawn sometimes.
        let hot = Sampling::Sample {
            temperature: 100.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        let mut seen = [false; 5];
        for _ in 0..500 {
            seen[sample(&row, &hot, &mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
        assert!((log_softmax_at(&[0.0, 0.0], 0) - (0.5f32).ln()).abs() < 1e-6);
    }
}
