//! The causal check the original study could not make: does ablating the found heads hurt
//! translation more than ablating as many random heads? And which heads does path patching
//! from every head to the logits (corrupted into clean, as Zhang et al. 2025) single out?

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::metrics::LogitDiff;
use crate::model::HookedTransformer;
use crate::patching::{Direction, Patcher, Receivers};
use crate::progress::Progress;
use crate::stats::{normal_cdf, spearman, Rng};
use crate::table::Table;
use crate::translation::data::SentencePair;

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
    let tok = model.tokenizer()?;
    let mut ids = tok.encode(
        &format!("{}: {} {}:", src.to_uppercase(), p.src, tgt.to_uppercase()),
        model.prepend_bos(),
    )?;
    let n_prompt = ids.len();
    ids.extend(tok.encode(&format!(" {}", p.tgt), false)?);
    Ok((ids, n_prompt))
}

/// Where a forced prompt's parts start: (source, separator, target), or `None` when the parts
/// do not tokenize on their own boundaries (the prompt then has no role-aligned donor).
fn segments(
    model: &HookedTransformer,
    src: &str,
    p: &SentencePair,
    ids: &[u32],
    n_prompt: usize,
) -> Result<Option<(usize, usize, usize)>> {
    let tok = model.tokenizer()?;
    let head = tok.encode(&format!("{}:", src.to_uppercase()), model.prepend_bos())?;
    let with_src = tok.encode(
        &format!("{}: {}", src.to_uppercase(), p.src),
        model.prepend_bos(),
    )?;
    let ok = ids.starts_with(&head) && ids.starts_with(&with_src) && with_src.len() <= n_prompt;
    Ok(ok.then_some((head.len(), with_src.len(), n_prompt)))
}

/// For recipient segments `r` and donor segments `d` (each (source, separator, target) starts,
/// plus total lengths), the donor position for every recipient position, or `None` when the
/// donor's parts are shorter or its prefix and separator differ in length.
fn role_map(
    r: (usize, usize, usize),
    rs: usize,
    d: (usize, usize, usize),
    ds: usize,
) -> Option<Vec<i64>> {
    let (r_src, r_sep, r_tgt) = r;
    let (d_src, d_sep, d_tgt) = d;
    if r_src != d_src
        || r_tgt - r_sep != d_tgt - d_sep
        || d_sep - d_src < r_sep - r_src
        || ds - d_tgt < rs - r_tgt
    {
        return None;
    }
    Some(
        (0..rs)
            .map(|i| {
                (if i < r_src {
                    i
                } else if i < r_sep {
                    d_src + (i - r_src)
                } else if i < r_tgt {
                    d_sep + (i - r_sep)
                } else {
                    d_tgt + (i - r_tgt)
                }) as i64
            })
            .collect(),
    )
}

/// Mean log-probability of ids[from+1..] per row of a batch, from logits at positions from.. .
fn row_logprobs(logits: &Tensor, ids: &[u32], from: usize) -> Result<Vec<f32>> {
    let cont = ids.len() - from - 1;
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, cont)?, D::Minus1)?; // [r, cont, v]
    let r = lp.dim(0)?;
    let idx = Tensor::from_vec(ids[from + 1..].to_vec(), (1, cont, 1), logits.device())?
        .broadcast_as((r, cont, 1))?
        .contiguous()?;
    let picked = lp.gather(&idx, 2)?.squeeze(2)?.mean(1)?;
    Ok(picked.to_vec1::<f32>()?)
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
    let cfg = model.cfg();
    let (nl, nh, hd) = (cfg.n_layers, cfg.n_heads, cfg.d_head);
    if heads.is_empty() {
        return Err(Error::Invalid("no heads to ablate".into()));
    }
    let pairs = &pairs[..opts.pairs.min(pairs.len())];
    if pairs.len() < 2 {
        return Err(Error::Invalid(
            "the causal check needs at least two sentence pairs".into(),
        ));
    }
    let mut rng = Rng::new(opts.seed);
    // Each prompt's z at every layer: the dataset for mean and resample ablation.
    let seqs = pairs
        .iter()
        .map(|p| forced(model, src, tgt, p))
        .collect::<Result<Vec<_>>>()?;
    let mut zs: Vec<Vec<Tensor>> = Vec::with_capacity(seqs.len()); // [prompt][layer] -> [s, n, hd]
    for (ids, _) in &seqs {
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
    // BOS is an attention sink with activations unlike any other position's: left out.
    let skip = usize::from(model.prepend_bos());
    let pooled: Vec<Tensor> = (0..nl)
        .map(|l| {
            let all = zs
                .iter()
                .map(|z| Ok(z[l].narrow(0, skip, z[l].dim(0)? - skip)?))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&all, 0)?.mean(0)?) // [n, hd]
        })
        .collect::<Result<_>>()?;
    let segs = pairs
        .iter()
        .zip(&seqs)
        .map(|(p, (ids, n))| segments(model, src, p, ids, *n))
        .collect::<Result<Vec<_>>>()?;
    // Each prompt's role-aligned donors with their position maps, found once for every layer
    // and head set.
    let donors = (0..seqs.len())
        .map(|i| {
            (0..seqs.len())
                .filter(|&j| j != i)
                .filter_map(|j| match (segs[i], segs[j]) {
                    (Some(a), Some(b)) => role_map(a, seqs[i].0.len(), b, seqs[j].0.len())
                        .map(|m| Ok((j, Tensor::from_vec(m, seqs[i].0.len(), model.device())?))),
                    _ => None,
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let fallbacks = donors.iter().filter(|d| d.is_empty()).count();

    // Conditions: baseline, then (found, random draws...) × (mean, resample).
    let mut sets: Vec<Vec<(usize, usize)>> = vec![heads.to_vec()];
    for _ in 0..opts.random_draws {
        // The same number of heads in each layer as the found set, none of them found.
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
    let singles: Vec<Vec<(usize, usize)>> = heads.iter().map(|&x| vec![x]).collect();
    let modes = ["mean", "resample"];
    let rows = 1 + sets.len() * modes.len() + singles.len();
    let mut per_pair: Vec<Vec<f32>> = Vec::with_capacity(seqs.len());
    let mut progress = Progress::new(&format!("causal check {src}→{tgt}"), seqs.len(), opts.quiet);
    for (i, (ids, n_prompt)) in seqs.iter().enumerate() {
        let s = ids.len();
        // Per layer: which (row, head) is ablated, and the replacement z per row.
        let mut hooks = Hooks::new();
        for (l, pooled_l) in pooled.iter().enumerate() {
            let mut mask = vec![0u8; rows * nh];
            let mut repl: Vec<Tensor> = Vec::with_capacity(rows);
            let mean_l = pooled_l
                .unsqueeze(0)?
                .broadcast_as((s, nh, hd))?
                .contiguous()?;
            repl.push(mean_l.clone()); // baseline row: never used
            let mut any = false;
            for set in &sets {
                for mode in modes {
                    let r = repl.len();
                    for &(sl, sh) in set {
                        if sl == l {
                            mask[r * nh + sh] = 1;
                            any = true;
                        }
                    }
                    let rep = if mode == "mean" {
                        mean_l.clone()
                    } else {
                        // A random role-aligned donor's z on this prompt's positions; else the mean.
                        match donors[i].as_slice() {
                            [] => mean_l.clone(),
                            d => {
                                let (j, idx) = &d[rng.below(d.len())];
                                zs[*j][l].index_select(idx, 0)?
                            }
                        }
                    };
                    repl.push(rep);
                }
            }
            for single in &singles {
                let r = repl.len();
                for &(sl, sh) in single {
                    if sl == l {
                        mask[r * nh + sh] = 1;
                        any = true;
                    }
                }
                repl.push(mean_l.clone());
            }
            if !any {
                continue;
            }
            let m = Tensor::from_vec(mask, (rows, 1, nh, 1), model.device())?;
            let rep = Tensor::stack(&repl, 0)?; // [rows, s, n, hd]
            hooks = hooks.add_point(HookPoint::Z(l), move |x: &Tensor, _: &HookContext| {
                crate::patching::splice(x, &m, &rep)
            });
        }
        let t = Tensor::from_vec(ids.clone(), (1, s), model.device())?
            .broadcast_as((rows, s))?
            .contiguous()?;
        let from = n_prompt - 1;
        let logits = model.pass(&t).hooks(&hooks).logits_from(from).run()?.logits;
        per_pair.push(row_logprobs(&logits, ids, from)?);
        progress.inc(1);
    }
    progress.finish();
    let n = seqs.len() as f32;
    let means: Vec<f32> = (0..rows)
        .map(|r| per_pair.iter().map(|v| v[r]).sum::<f32>() / n)
        .collect();
    let baseline = means[0];
    let mut effects = Vec::new();
    for (mi, mode) in modes.iter().enumerate() {
        let eff = |set: usize| means[1 + set * modes.len() + mi] - baseline;
        let found = eff(0);
        let random: Vec<f32> = (1..sets.len()).map(eff).collect();
        let m = random.iter().sum::<f32>() / random.len().max(1) as f32;
        let sd = (random.iter().map(|x| (x - m).powi(2)).sum::<f32>()
            / (random.len().max(2) - 1) as f32)
            .sqrt();
        let worse = random.iter().filter(|&&x| x <= found).count();
        let z = if sd > 0.0 { (found - m) / sd } else { f32::NAN };
        effects.push(AblationEffect {
            mode: mode.to_string(),
            found,
            z,
            p_normal: normal_cdf(z as f64) as f32,
            p: (worse + 1) as f32 / (random.len() + 1) as f32,
            p_resolution: 1.0 / (random.len() + 1) as f32,
            fallbacks: if *mode == "resample" { fallbacks } else { 0 },
            random,
        });
    }
    let first_single = 1 + sets.len() * modes.len();
    let per_head = heads
        .iter()
        .enumerate()
        .map(|(k, &(layer, head))| {
            let d: Vec<Vec<f32>> = per_pair
                .iter()
                .map(|v| vec![v[first_single + k] - v[0]])
                .collect();
            let st = crate::translation::stats::paired_stats(&d, 1000, 0, 0.95, opts.seed);
            HeadEffect {
                layer,
                head,
                effect: st.diff[0],
                ci_low: st.ci_low[0],
                ci_high: st.ci_high[0],
            }
        })
        .collect();
    Ok(CausalResult {
        heads: heads.to_vec(),
        heads_note: heads_note.into(),
        n_pairs: seqs.len(),
        baseline,
        effects,
        per_head,
    })
}

/// How path patching ranks heads, against the attention score.
#[derive(Debug, Clone)]
pub struct PathRanking {
    /// Mean normalised drop of the metric when the head's path to the logits carries the
    /// corrupted source, [layers × heads] (1 = the whole clean − corrupted gap).
    pub importance: Table,
    /// Spearman correlation with the attention score's difference.
    pub spearman_vs_attention: f32,
    /// How many of the attention score's top 10 heads are in path patching's top 10.
    pub top10_overlap: usize,
    /// Prompt pairs used.
    pub n_pairs: usize,
}

/// Path patching from every head to the logits, corrupted into clean: the clean prompt
/// `"{SRC}: {src} {TGT}:"` should continue with its translation's first token; the corrupted
/// one has another source sentence of the same token length (whose translation starts
/// differently). The metric is the logit difference between the two first tokens.
pub fn path_ranking(
    model: &HookedTransformer,
    pairs: &[SentencePair],
    src: &str,
    tgt: &str,
    attention_diff: &Table,
    opts: &CausalOptions,
) -> Result<PathRanking> {
    let tok = model.tokenizer()?;
    let prompt =
        |p: &SentencePair| format!("{}: {} {}:", src.to_uppercase(), p.src, tgt.to_uppercase());
    let enc = pairs
        .iter()
        .map(|p| {
            Ok((
                tok.encode(&prompt(p), model.prepend_bos())?,
                tok.encode(&format!(" {}", p.tgt), false)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sum: Option<Table> = None;
    let mut used = 0usize;
    let mut progress = Progress::new(
        &format!("path patching {src}→{tgt}"),
        opts.path_pairs,
        opts.quiet,
    );
    for i in 0..pairs.len() {
        if used >= opts.path_pairs {
            break;
        }
        let Some(j) = (0..pairs.len()).find(|&j| {
            j != i && enc[j].0.len() == enc[i].0.len() && enc[j].1.first() != enc[i].1.first()
        }) else {
            continue;
        };
        let (Some(&answer), Some(&wrong)) = (enc[i].1.first(), enc[j].1.first()) else {
            continue;
        };
        let clean = Tensor::from_vec(enc[i].0.clone(), (1, enc[i].0.len()), model.device())?;
        let corrupt = Tensor::from_vec(enc[j].0.clone(), (1, enc[j].0.len()), model.device())?;
        let p = Patcher::from_tokens(model, &clean, &corrupt, LogitDiff::new(answer, wrong))?
            .quiet(true);
        let gap = p.clean_value() - p.corrupted_value();
        if gap.abs() < 1e-3 {
            continue;
        }
        let r = p.path_sweep(&Receivers::Logits, Direction::Noise, false)?;
        let drop = r.table.map(|v| (p.clean_value() - v) / gap);
        sum = Some(match sum {
            None => drop,
            Some(s) => Table {
                values: s
                    .values
                    .iter()
                    .zip(&drop.values)
                    .map(|(a, b)| a + b)
                    .collect(),
                ..s
            },
        });
        used += 1;
        progress.inc(1);
    }
    progress.finish();
    let mut importance = sum.ok_or_else(|| {
        Error::Invalid(format!(
            "no usable prompt pairs for path patching {src}→{tgt}"
        ))
    })?;
    importance = importance.map(|v| v / used as f32);
    importance.title =
        format!("path patching to logits, corrupted into clean ({src}→{tgt}): normalised drop");
    let top = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        idx.truncate(10);
        idx
    };
    let (a, b) = (top(&importance.values), top(&attention_diff.values));
    Ok(PathRanking {
        spearman_vs_attention: spearman(&importance.values, &attention_diff.values),
        top10_overlap: a.iter().filter(|x| b.contains(x)).count(),
        importance,
        n_pairs: used,
    })
}
