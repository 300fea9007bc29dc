//! The causal check the original study could not make: does ablating the found heads hurt
//! translation more than ablating as many random heads? Path patching, the other causal
//! check, is [`crate::translation::path`] (its items are named here too).
//!
//! Teacher-forced scoring is `metrics::token_logprobs` and the masked replacement
//! `patching::splice`; the batching and the ablations themselves stay here, because the check
//! is a different computation: every condition (the baseline, each head set in each mode, each
//! head alone) is one row of a single batched forward per prompt, with a per-row head mask,
//! while `continuation_logprobs` splits rows into batches of its own and `ablation_hooks`
//! ablates every row alike; and its mean ablation
//! leaves BOS out of the mean and its resample ablation maps positions by role
//! ([`crate::translation::donors`]), which `Ablation::MeanPooled` and `Ablation::Resample` do
//! not.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::metrics::token_logprobs;
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::stats::{normal_cdf, Rng};
use crate::translation::data::SentencePair;
use crate::translation::donors::role_donors;
pub use crate::translation::path::{path_ranking, try_path_ranking, PathRanking};
use crate::translation::prompt::forced_prompt;
use crate::translation::stage::Shortfall;

/// Options for the causal check.
#[derive(Debug, Clone)]
pub struct CausalOptions {
    /// Sentence pairs scored (the first ones of the filtered set).
    pub pairs: usize,
    /// Random head sets drawn for the control.
    pub random_draws: usize,
    /// Prompt pairs for path patching.
    pub path_pairs: usize,
    /// Seed for donors and random heads.
    pub seed: u64,
    /// No progress output.
    pub quiet: bool,
}

impl Default for CausalOptions {
    fn default() -> Self {
        CausalOptions {
            pairs: 12,
            random_draws: 19,
            path_pairs: 4,
            seed: 7,
            quiet: false,
        }
    }
}

/// Effect of ablating a head set in one mode, against random head sets of the same size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AblationEffect {
    /// `mean` or `resample`.
    pub mode: String,
    /// Change in mean per-token log-probability of the target with the found heads ablated.
    pub found: f32,
    /// The same for each random head set.
    pub random: Vec<f32>,
    /// (found − mean(random)) / sd(random).
    pub z: f32,
    /// One-sided empirical p: share of random sets (plus one) that hurt at least as much
    /// (no smaller than 1 / (draws + 1)).
    pub p: f32,
    /// One-sided p from z under a normal approximation of the random sets' effects.
    pub p_normal: f32,
    /// The empirical p-value's resolution, 1 / (draws + 1).
    pub p_resolution: f32,
    /// Prompts for which no donor matched by role, ablated with the mean instead (resample).
    pub fallbacks: usize,
}

impl AblationEffect {
    /// The random head sets' mean effect.
    pub fn random_mean(&self) -> f32 {
        mean(&self.random)
    }
}

/// The mean of `v`, 0 for none.
fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// One head's own ablation effect (mean ablation of that head alone).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadEffect {
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Change in mean per-token log-probability of the target, averaged over pairs.
    pub effect: f32,
    /// Bootstrap interval over pairs (95%).
    pub ci_low: f32,
    /// Upper end.
    pub ci_high: f32,
}

/// The causal check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CausalResult {
    /// The ablated heads (layer, head).
    pub heads: Vec<(usize, usize)>,
    /// Where the heads came from.
    pub heads_note: String,
    /// Pairs scored.
    pub n_pairs: usize,
    /// Mean per-token log-probability of the target sentence given the source, unablated.
    pub baseline: f32,
    /// Mean ablation (pooled over the dataset's positions, BOS excluded) and resample ablation
    /// (donor prompts aligned by role), against random sets matched layer by layer.
    pub effects: Vec<AblationEffect>,
    /// Each ablated head on its own (mean ablation).
    pub per_head: Vec<HeadEffect>,
}

/// Teacher-forced prompt and continuation of a pair: `"{SRC}: {src} {TGT}:"` + `" {tgt}"`.
fn forced(
    model: &HookedTransformer,
    src: &str,
    tgt: &str,
    p: &SentencePair,
) -> Result<(Vec<u32>, usize)> {
    let mut ids = model.encode(&forced_prompt(src, tgt, p))?;
    let n_prompt = ids.len();
    ids.extend(model.tokenizer()?.encode(&format!(" {}", p.tgt), false)?);
    Ok((ids, n_prompt))
}

/// Mean log-probability of ids[from+1..] per row of a batch, from logits at positions from.. .
fn row_logprobs(logits: &Tensor, ids: &[u32], from: usize) -> Result<Vec<f32>> {
    Ok(token_logprobs(logits, &ids[from + 1..])?
        .mean(1)?
        .to_vec1::<f32>()?)
}

/// The ablation modes, in the order of their rows.
const MODES: [&str; 2] = ["mean", "resample"];

/// The prompts the check scores and what their ablations replace `hook_z` with.
struct Dataset {
    /// Each pair's forced ids and prompt length.
    seqs: Vec<(Vec<u32>, usize)>,
    /// Each prompt's z at every layer, [prompt][layer] → [s, n, hd].
    zs: Vec<Vec<Tensor>>,
    /// Each layer's mean z over every position of every prompt but BOS, [n, hd].
    pooled: Vec<Tensor>,
    /// Each prompt's role-aligned donors with their position maps.
    donors: Vec<Vec<(usize, Tensor)>>,
}

impl Dataset {
    fn new(
        model: &HookedTransformer,
        pairs: &[SentencePair],
        src: &str,
        tgt: &str,
    ) -> Result<Self> {
        let seqs = pairs
            .iter()
            .map(|p| forced(model, src, tgt, p))
            .collect::<Result<Vec<_>>>()?;
        let zs = prompt_zs(model, &seqs)?;
        let pooled = pooled_means(model, &zs)?;
        let donors = role_donors(model, src, pairs, &seqs)?;
        Ok(Dataset {
            seqs,
            zs,
            pooled,
            donors,
        })
    }

    /// Prompts with no role-aligned donor, which resample ablation mean-ablates instead.
    fn fallbacks(&self) -> usize {
        self.donors.iter().filter(|d| d.is_empty()).count()
    }
}

/// Each prompt's `hook_z` at every layer, [prompt][layer] → [s, n, hd].
fn prompt_zs(model: &HookedTransformer, seqs: &[(Vec<u32>, usize)]) -> Result<Vec<Vec<Tensor>>> {
    let nl = model.cfg().n_layers;
    let mut zs = Vec::with_capacity(seqs.len());
    for (ids, _) in seqs {
        let t = Tensor::from_vec(ids.clone(), (1, ids.len()), model.device())?;
        let c = model.cache_activations(&t, |n: &str| n.ends_with("attn.hook_z"))?;
        zs.push(
            (0..nl)
                .map(|l| {
                    Ok(c.get(&HookPoint::Z(l).name())?
                        .squeeze(0)?
                        .to_dtype(DType::F32)?)
                })
                .collect::<Result<_>>()?,
        );
    }
    Ok(zs)
}

/// Each layer's mean z over every position of every prompt, [n, hd].
fn pooled_means(model: &HookedTransformer, zs: &[Vec<Tensor>]) -> Result<Vec<Tensor>> {
    // BOS is an attention sink with activations unlike any other position's: left out.
    let skip = usize::from(model.prepend_bos());
    (0..model.cfg().n_layers)
        .map(|l| {
            let all = zs
                .iter()
                .map(|z| Ok(z[l].narrow(0, skip, z[l].dim(0)? - skip)?))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&all, 0)?.mean(0)?)
        })
        .collect()
}

/// The conditions, one batch row each: the unablated baseline, then every head set (the
/// found one first, then the random draws) in each mode, then each found head alone.
struct Conditions {
    sets: Vec<Vec<(usize, usize)>>,
    singles: Vec<Vec<(usize, usize)>>,
}

impl Conditions {
    fn rows(&self) -> usize {
        1 + self.sets.len() * MODES.len() + self.singles.len()
    }

    /// The row of head set `set` in mode `mode`.
    fn row(&self, set: usize, mode: usize) -> usize {
        1 + set * MODES.len() + mode
    }

    /// The row of found head `k` alone.
    fn single_row(&self, k: usize) -> usize {
        1 + self.sets.len() * MODES.len() + k
    }
}

/// `heads`, then `draws` random sets with the same number of heads in each layer as `heads`,
/// none of them in `heads`.
fn head_sets(
    heads: &[(usize, usize)],
    (nl, nh): (usize, usize),
    draws: usize,
    rng: &mut Rng,
) -> Vec<Vec<(usize, usize)>> {
    let mut sets: Vec<Vec<(usize, usize)>> = vec![heads.to_vec()];
    for _ in 0..draws {
        let mut set = Vec::with_capacity(heads.len());
        for l in 0..nl {
            let want = heads.iter().filter(|&&(hl, _)| hl == l).count();
            let mut pool: Vec<usize> = (0..nh).filter(|&h| !heads.contains(&(l, h))).collect();
            for _ in 0..want.min(pool.len()) {
                set.push((l, pool.swap_remove(rng.below(pool.len()))));
            }
        }
        sets.push(set);
    }
    sets
}

/// Marks the heads of `set` in layer `l` in row `r` of a [rows × nh] mask; whether any was.
fn mark(mask: &mut [u8], r: usize, nh: usize, set: &[(usize, usize)], l: usize) -> bool {
    let mut any = false;
    for &(sl, sh) in set {
        if sl == l {
            mask[r * nh + sh] = 1;
            any = true;
        }
    }
    any
}

/// For prompt `i` at layer `l`: which (row, head) is ablated, [rows, 1, n, 1], and every row's
/// replacement z, [rows, s, n, hd]; `None` when no row ablates a head of this layer. Draws a
/// random role-aligned donor per resample row (the mean where the prompt has none).
fn layer_replacement(
    model: &HookedTransformer,
    ds: &Dataset,
    conds: &Conditions,
    (i, l): (usize, usize),
    rng: &mut Rng,
) -> Result<Option<(Tensor, Tensor)>> {
    let cfg = model.cfg();
    let (nh, hd) = (cfg.n_heads, cfg.d_head);
    let (s, rows) = (ds.seqs[i].0.len(), conds.rows());
    let mut mask = vec![0u8; rows * nh];
    let mut repl: Vec<Tensor> = Vec::with_capacity(rows);
    let mean_l = ds.pooled[l]
        .unsqueeze(0)?
        .broadcast_as((s, nh, hd))?
        .contiguous()?;
    repl.push(mean_l.clone()); // baseline row: never used
    let mut any = false;
    for set in &conds.sets {
        for mode in MODES {
            any |= mark(&mut mask, repl.len(), nh, set, l);
            let rep = match (mode, ds.donors[i].as_slice()) {
                ("mean", _) | (_, []) => mean_l.clone(),
                (_, d) => {
                    let (j, idx) = &d[rng.below(d.len())];
                    ds.zs[*j][l].index_select(idx, 0)?
                }
            };
            repl.push(rep);
        }
    }
    for single in &conds.singles {
        any |= mark(&mut mask, repl.len(), nh, single, l);
        repl.push(mean_l.clone());
    }
    if !any {
        return Ok(None);
    }
    let m = Tensor::from_vec(mask, (rows, 1, nh, 1), model.device())?;
    Ok(Some((m, Tensor::stack(&repl, 0)?)))
}

/// Prompt `i`'s mean target log-probability under every condition, from one forward with a
/// row per condition.
fn condition_logprobs(
    model: &HookedTransformer,
    ds: &Dataset,
    conds: &Conditions,
    i: usize,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let (ids, n_prompt) = &ds.seqs[i];
    let (s, rows) = (ids.len(), conds.rows());
    let mut hooks = Hooks::new();
    for l in 0..model.cfg().n_layers {
        if let Some((m, rep)) = layer_replacement(model, ds, conds, (i, l), rng)? {
            hooks = hooks.add_point(HookPoint::Z(l), move |x: &Tensor, _: &HookContext| {
                crate::patching::splice(x, &m, &rep)
            });
        }
    }
    let t = Tensor::from_vec(ids.clone(), (1, s), model.device())?
        .broadcast_as((rows, s))?
        .contiguous()?;
    let from = n_prompt - 1;
    let logits = model.pass(&t).hooks(&hooks).logits_from(from).run()?.logits;
    row_logprobs(&logits, ids, from)
}

/// A mode's effect for the found set against the random sets.
fn ablation_effect(mode: &str, found: f32, random: Vec<f32>, fallbacks: usize) -> AblationEffect {
    let m = mean(&random);
    let sd = (random.iter().map(|x| (x - m).powi(2)).sum::<f32>()
        / (random.len().max(2) - 1) as f32)
        .sqrt();
    let worse = random.iter().filter(|&&x| x <= found).count();
    let z = if sd > 0.0 { (found - m) / sd } else { f32::NAN };
    AblationEffect {
        mode: mode.to_string(),
        found,
        z,
        p_normal: normal_cdf(z as f64) as f32,
        p: (worse + 1) as f32 / (random.len() + 1) as f32,
        p_resolution: 1.0 / (random.len() + 1) as f32,
        fallbacks,
        random,
    }
}

/// Each mode's effects, from the conditions' mean log-probabilities over prompts.
fn mode_effects(means: &[f32], conds: &Conditions, fallbacks: usize) -> Vec<AblationEffect> {
    let baseline = means[0];
    MODES
        .iter()
        .enumerate()
        .map(|(mi, mode)| {
            let eff = |set: usize| means[conds.row(set, mi)] - baseline;
            let random: Vec<f32> = (1..conds.sets.len()).map(eff).collect();
            let fallbacks = if *mode == "resample" { fallbacks } else { 0 };
            ablation_effect(mode, eff(0), random, fallbacks)
        })
        .collect()
}

/// Each found head's own effect, with a bootstrap interval over prompts.
fn head_effects(
    heads: &[(usize, usize)],
    per_pair: &[Vec<f32>],
    conds: &Conditions,
    seed: u64,
) -> Vec<HeadEffect> {
    heads
        .iter()
        .enumerate()
        .map(|(k, &(layer, head))| {
            let d: Vec<Vec<f32>> = per_pair
                .iter()
                .map(|v| vec![v[conds.single_row(k)] - v[0]])
                .collect();
            let st = crate::translation::stats::paired_stats(&d, 1000, 0, 0.95, seed);
            HeadEffect {
                layer,
                head,
                effect: st.diff[0],
                ci_low: st.ci_low[0],
                ci_high: st.ci_high[0],
            }
        })
        .collect()
}

/// Ablates `heads` (found), each of them alone, and `random_draws` random sets with the same
/// number of heads in each layer, by mean ablation (the dataset's mean `hook_z` over every
/// position but BOS) and resample ablation (another prompt's `hook_z`, source tokens from its
/// source and target tokens from its target), and measures the teacher-forced log-probability
/// of the target sentence.
pub fn ablation_check(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    heads: &[(usize, usize)],
    heads_note: &str,
    opts: &CausalOptions,
) -> Result<CausalResult> {
    Ok(try_ablation_check(
        model, pairs, src, tgt, heads, heads_note, opts,
    )??)
}

/// [`ablation_check`], with a [`Shortfall`] when fewer than two sentence pairs are given.
pub fn try_ablation_check(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    heads: &[(usize, usize)],
    heads_note: &str,
    opts: &CausalOptions,
) -> Result<Result<CausalResult, Shortfall>> {
    let cfg = model.cfg();
    if heads.is_empty() {
        return Err(Error::Invalid("no heads to ablate".into()));
    }
    let pairs = &pairs[..opts.pairs.min(pairs.len())];
    if pairs.len() < 2 {
        return Ok(Err(Shortfall {
            reason: "the causal check needs at least two sentence pairs".into(),
            needs: 2,
            had: pairs.len(),
        }));
    }
    let mut rng = Rng::new(opts.seed);
    let ds = Dataset::new(model, pairs, src, tgt)?;
    let conds = Conditions {
        sets: head_sets(
            heads,
            (cfg.n_layers, cfg.n_heads),
            opts.random_draws,
            &mut rng,
        ),
        singles: heads.iter().map(|&x| vec![x]).collect(),
    };
    let mut per_pair: Vec<Vec<f32>> = Vec::with_capacity(ds.seqs.len());
    let mut progress = Progress::new(
        &format!("causal check {src}→{tgt}"),
        ds.seqs.len(),
        opts.quiet,
    );
    for i in 0..ds.seqs.len() {
        per_pair.push(condition_logprobs(model, &ds, &conds, i, &mut rng)?);
        progress.inc(1);
    }
    progress.finish();
    let n = ds.seqs.len() as f32;
    let means: Vec<f32> = (0..conds.rows())
        .map(|r| per_pair.iter().map(|v| v[r]).sum::<f32>() / n)
        .collect();
    Ok(Ok(CausalResult {
        heads: heads.to_vec(),
        heads_note: heads_note.into(),
        n_pairs: ds.seqs.len(),
        baseline: means[0],
        effects: mode_effects(&means, &conds, ds.fallbacks()),
        per_head: head_effects(heads, &per_pair, &conds, opts.seed),
    }))
}
