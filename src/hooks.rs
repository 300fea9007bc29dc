//! Hook points with TransformerLens names, hook closures and declarative interventions. The
//! state of one forward pass that applies them lives with the model (`model/run.rs`).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Declares [`HookPoint`] from one table of per-layer hook points, in forward order: the enum,
/// its order, each point's index, its TransformerLens suffix and the short alias `act_name`
/// accepts all come from the same line, so adding a hook point is a one-line change.
macro_rules! hook_points {
    ($( $(#[$doc:meta])* $variant:ident => $alias:literal, $suffix:literal; )*) => {
        /// One named place in the forward pass where an activation can be read or replaced.
        ///
        /// Shapes (b = batch, s = positions, d = d_model, n = query heads, k = kv heads,
        /// h = d_head): see [`HookPoint::shape_doc`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum HookPoint {
            /// `hook_embed` [b,s,d]: token embeddings, after any embedding scale.
            Embed,
            $( $(#[$doc])* $variant(usize), )*
            /// `ln_final.hook_scale` [b,s,1]
            LnFinalScale,
            /// `ln_final.hook_normalized` [b,s,d]: `x / scale`, before the final norm's weight.
            LnFinalNormalized,
            /// `unembed.hook_in` [b,s,d]: the final norm's output (after its weight), at the
            /// positions whose logits the pass computes.
            UnembedIn,
            /// `unembed.hook_out` [b,s,d_vocab]: the logits before any final soft-cap.
            UnembedOut,
        }

        /// The per-layer hook points' short aliases and suffixes, in forward order.
        const LAYER_HOOKS: &[(&str, &str)] = &[ $( ($alias, $suffix), )* ];

        /// The per-layer hook points' constructors, in forward order.
        const LAYER_POINTS: &[fn(usize) -> HookPoint] = &[ $( HookPoint::$variant, )* ];

        impl HookPoint {
            /// The layer this point belongs to, if any.
            pub fn layer(&self) -> Option<usize> {
                match *self {
                    $( HookPoint::$variant(l) => Some(l), )*
                    HookPoint::Embed
                    | HookPoint::LnFinalScale
                    | HookPoint::LnFinalNormalized
                    | HookPoint::UnembedIn
                    | HookPoint::UnembedOut => None,
                }
            }

            /// Position of a per-layer point in [`LAYER_HOOKS`].
            fn layer_index(&self) -> Option<usize> {
                let l = self.layer()?;
                LAYER_POINTS.iter().position(|f| f(l) == *self)
            }
        }
    };
}

hook_points! {
    /// `blocks.{l}.hook_resid_pre` [b,s,d]
    ResidPre => "resid_pre", "hook_resid_pre";
    /// `blocks.{l}.ln1.hook_scale` [b,s,1]: the RMS the block input is divided by. A
    /// replacement is used (a frozen scale), as in TransformerLens.
    Ln1Scale => "ln1_scale", "ln1.hook_scale";
    /// `blocks.{l}.ln1.hook_normalized` [b,s,d]: `x / scale`, *before* the norm's weight.
    Ln1Normalized => "ln1", "ln1.hook_normalized";
    /// `blocks.{l}.attn.hook_in` [b,s,d] (not a TransformerLens name): the attention's input,
    /// after the norm's weight.
    AttnIn => "attn.hook_in", "attn.hook_in";
    /// `blocks.{l}.attn.hook_q` [b,s,n,h]: after projection (and bias), before any q-norm.
    Q => "q", "attn.hook_q";
    /// `blocks.{l}.attn.hook_k` [b,s,k,h]: after projection (and bias), before any k-norm.
    K => "k", "attn.hook_k";
    /// `blocks.{l}.attn.hook_v` [b,s,k,h]
    V => "v", "attn.hook_v";
    /// `blocks.{l}.attn.q_norm.hook_scale` [b,s,n,1] (models with a q-norm).
    QNormScale => "q_norm_scale", "attn.q_norm.hook_scale";
    /// `blocks.{l}.attn.q_norm.hook_normalized` [b,s,n,h]: before the q-norm's weight.
    QNormNormalized => "q_norm", "attn.q_norm.hook_normalized";
    /// `blocks.{l}.attn.k_norm.hook_scale` [b,s,k,1] (models with a k-norm).
    KNormScale => "k_norm_scale", "attn.k_norm.hook_scale";
    /// `blocks.{l}.attn.k_norm.hook_normalized` [b,s,k,h]: before the k-norm's weight.
    KNormNormalized => "k_norm", "attn.k_norm.hook_normalized";
    /// `blocks.{l}.attn.hook_rot_q` [b,s,n,h]: after the q-norm (with its weight) and RoPE.
    RotQ => "rot_q", "attn.hook_rot_q";
    /// `blocks.{l}.attn.hook_rot_k` [b,s,k,h]: after the k-norm (with its weight) and RoPE.
    RotK => "rot_k", "attn.hook_rot_k";
    /// `blocks.{l}.attn.hook_attn_scores` [b,n,s,s]: scaled, soft-capped and masked, before softmax.
    AttnScores => "attn_scores", "attn.hook_attn_scores";
    /// `blocks.{l}.attn.hook_pattern` [b,n,s,s]
    Pattern => "pattern", "attn.hook_pattern";
    /// `blocks.{l}.attn.hook_z` [b,s,n,h]
    Z => "z", "attn.hook_z";
    /// `blocks.{l}.attn.hook_result` [b,s,n,d]: each head through its slice of W_O, before any
    /// post-attention norm. Computed only when hooked or cached.
    Result => "result", "attn.hook_result";
    /// `blocks.{l}.ln1_post.hook_scale` [b,s,1] (Gemma 2/3): the RMS of the attention output.
    Ln1PostScale => "ln1_post_scale", "ln1_post.hook_scale";
    /// `blocks.{l}.ln1_post.hook_normalized` [b,s,d]: before the post-norm's weight.
    Ln1PostNormalized => "ln1_post", "ln1_post.hook_normalized";
    /// `blocks.{l}.hook_attn_out` [b,s,d]: exactly what the attention adds to the residual
    /// (after any post-attention norm).
    AttnOut => "attn_out", "hook_attn_out";
    /// `blocks.{l}.hook_resid_mid` [b,s,d]
    ResidMid => "resid_mid", "hook_resid_mid";
    /// `blocks.{l}.hook_mlp_in` [b,s,d]: the residual entering `ln2` (TransformerLens's, with
    /// `use_hook_mlp_in`); a replacement changes the MLP's input, not the residual stream.
    MlpInResid => "mlp_in", "hook_mlp_in";
    /// `blocks.{l}.ln2.hook_scale` [b,s,1]
    Ln2Scale => "ln2_scale", "ln2.hook_scale";
    /// `blocks.{l}.ln2.hook_normalized` [b,s,d]: `x / scale`, *before* the norm's weight.
    Ln2Normalized => "ln2", "ln2.hook_normalized";
    /// `blocks.{l}.mlp.hook_in` [b,s,d] (circuit-tracer's name, not TransformerLens's
    /// `hook_mlp_in`): the MLP's input, after the norm's weight; transcoders read here.
    MlpIn => "mlp.hook_in", "mlp.hook_in";
    /// `blocks.{l}.mlp.hook_pre` [b,s,d_mlp]: gate pre-activation.
    MlpPre => "pre", "mlp.hook_pre";
    /// `blocks.{l}.mlp.hook_pre_linear` [b,s,d_mlp]: up projection.
    MlpPreLinear => "pre_linear", "mlp.hook_pre_linear";
    /// `blocks.{l}.mlp.hook_post` [b,s,d_mlp]: act(gate) × up.
    MlpPost => "post", "mlp.hook_post";
    /// `blocks.{l}.ln2_post.hook_scale` [b,s,1] (Gemma 2/3): the RMS of the MLP output.
    Ln2PostScale => "ln2_post_scale", "ln2_post.hook_scale";
    /// `blocks.{l}.ln2_post.hook_normalized` [b,s,d]: before the post-norm's weight.
    Ln2PostNormalized => "ln2_post", "ln2_post.hook_normalized";
    /// `blocks.{l}.hook_mlp_out` [b,s,d]: exactly what the MLP adds to the residual (after any
    /// post-MLP norm).
    MlpOut => "mlp_out", "hook_mlp_out";
    /// `blocks.{l}.hook_resid_post` [b,s,d]
    ResidPost => "resid_post", "hook_resid_post";
}

/// The points after the blocks, with their names, in forward order.
const GLOBAL_TAIL: &[(&str, HookPoint)] = &[
    ("ln_final.hook_scale", HookPoint::LnFinalScale),
    ("ln_final.hook_normalized", HookPoint::LnFinalNormalized),
    ("unembed.hook_in", HookPoint::UnembedIn),
    ("unembed.hook_out", HookPoint::UnembedOut),
];

impl HookPoint {
    fn from_layer_index(i: usize, l: usize) -> Option<HookPoint> {
        LAYER_POINTS.get(i).map(|f| f(l))
    }

    /// Every hook point of a model with `n_layers` layers, in the order the forward pass visits them.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for l in 0..n_layers {
            v.extend((0..LAYER_HOOKS.len()).filter_map(|i| Self::from_layer_index(i, l)));
        }
        v.extend(GLOBAL_TAIL.iter().map(|(_, p)| *p));
        v
    }

    /// The TransformerLens name of this point, e.g. `blocks.3.attn.hook_pattern`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The shape of the activation at this point, in TransformerLens letters.
    pub fn shape_doc(&self) -> &'static str {
        use HookPoint::*;
        match self {
            Q(_) | RotQ(_) | Z(_) => "[batch, pos, n_heads, d_head]",
            K(_) | V(_) | RotK(_) => "[batch, pos, n_kv_heads, d_head]",
            QNormScale(_) => "[batch * pos * n_heads, 1]",
            QNormNormalized(_) => "[batch * pos * n_heads, d_head]",
            KNormScale(_) => "[batch * pos * n_kv_heads, 1]",
            KNormNormalized(_) => "[batch * pos * n_kv_heads, d_head]",
            UnembedOut => "[batch, pos, d_vocab]",
            AttnScores(_) | Pattern(_) => "[batch, n_heads, query_pos, key_pos]",
            Result(_) => "[batch, pos, n_heads, d_model]",
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => "[batch, pos, d_mlp]",
            Ln1Scale(_) | Ln2Scale(_) | Ln1PostScale(_) | Ln2PostScale(_) | LnFinalScale => {
                "[batch, pos, 1]"
            }
            _ => "[batch, pos, d_model]",
        }
    }

    /// Checks that this point exists in a model with `n_layers` layers.
    pub fn check_layers(&self, n_layers: usize) -> Result<()> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(Error::HookNotInModel {
                name: self.name(),
                why: format!(
                    "the model has {n_layers} layers (0..={})",
                    n_layers.saturating_sub(1)
                ),
                suggestions: self
                    .layer_index()
                    .and_then(|i| Self::from_layer_index(i, n_layers.saturating_sub(1)))
                    .map(|p| vec![p.name()])
                    .unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this point belongs to a q/k norm (only models with one have it).
    pub fn is_qk_norm(&self) -> bool {
        use HookPoint::*;
        matches!(
            self,
            QNormScale(_) | QNormNormalized(_) | KNormScale(_) | KNormNormalized(_)
        )
    }

    /// Whether this point belongs to a post-attention or post-MLP norm (Gemma 2/3).
    pub fn is_post_norm(&self) -> bool {
        use HookPoint::*;
        matches!(
            self,
            Ln1PostScale(_) | Ln1PostNormalized(_) | Ln2PostScale(_) | Ln2PostNormalized(_)
        )
    }

    /// Parses a TransformerLens name, with suggestions on failure, and checks it against
    /// a model with `n_layers` layers.
    pub fn parse_for(name: &str, n_layers: usize) -> Result<HookPoint> {
        let p: HookPoint = name.parse()?;
        p.check_layers(n_layers)?;
        Ok(p)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => write!(f, "hook_embed"),
            p if p.layer().is_none() => {
                let name = GLOBAL_TAIL
                    .iter()
                    .find(|(_, q)| q == p)
                    .map_or("", |(n, _)| n);
                write!(f, "{name}")
            }
            p => {
                // layer() and layer_index() are Some for every other variant.
                let l = p.layer().unwrap_or(0);
                let i = p.layer_index().unwrap_or(0);
                write!(f, "blocks.{l}.{}", LAYER_HOOKS[i].1)
            }
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t == "hook_embed" {
            return Ok(HookPoint::Embed);
        }
        if let Some((_, p)) = GLOBAL_TAIL.iter().find(|(n, _)| *n == t) {
            return Ok(*p);
        }
        if let Some(rest) = t.strip_prefix("blocks.") {
            if let Some((l, suffix)) = rest.split_once('.') {
                if let Ok(l) = l.parse::<usize>() {
                    if let Some(i) = LAYER_HOOKS.iter().position(|(_, s)| *s == suffix) {
                        if let Some(p) = HookPoint::from_layer_index(i, l) {
                            return Ok(p);
                        }
                    }
                }
            }
        }
        Err(Error::UnknownHook {
            name: s.to_string(),
            suggestions: suggest_names(t, &candidate_names(t)),
        })
    }
}

/// Names to compare an unknown name against: every per-layer hook at the layer the name
/// mentions (or layer 0), plus the global ones.
fn candidate_names(name: &str) -> Vec<String> {
    let layer = name
        .split('.')
        .find_map(|p| p.parse::<usize>().ok())
        .unwrap_or(0);
    let mut v: Vec<String> = vec!["hook_embed".into()];
    v.extend(GLOBAL_TAIL.iter().map(|(n, _)| n.to_string()));
    v.extend(
        LAYER_HOOKS
            .iter()
            .map(|(_, s)| format!("blocks.{layer}.{s}")),
    );
    v
}

/// The (up to) three names nearest to `name` by edit distance, best first.
pub(crate) fn suggest_names(name: &str, candidates: &[String]) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = candidates
        .iter()
        .map(|c| {
            // Jaro-Winkler rewards shared prefixes (the layer), the suffix match catches
            // `pattern` vs `hook_pattern`.
            let mut s = strsim::jaro_winkler(name, c);
            let last = name.rsplit('.').next().unwrap_or(name);
            if !last.is_empty() && c.ends_with(last) {
                s += 0.5;
            } else if !last.is_empty() && c.contains(last.trim_start_matches("hook_")) {
                s += 0.2;
            }
            (s, c)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, c)| c.clone()).collect()
}

/// Builds a hook name the way TransformerLens's `get_act_name` does: `act_name("pattern", 3)`
/// is `blocks.3.attn.hook_pattern`. Accepts the short names (`resid_pre`, `q`, `k`, `v`, `rot_q`,
/// `rot_k`, `attn_scores`, `pattern`/`attn`, `z`, `result`, `attn_out`, `resid_mid`, `ln1`,
/// `ln2`, `pre`, `pre_linear`, `post`, `mlp_out`, `resid_post`, `embed`, `ln_final`,
/// `scale`) and full suffixes; an unknown short name is passed through and rejected, with
/// suggestions, when it is used.
pub fn act_name(name: &str, layer: usize) -> String {
    let short = name.trim();
    match short {
        "embed" | "hook_embed" => return "hook_embed".into(),
        "ln_final" | "ln_final.hook_normalized" | "normalized" => {
            return "ln_final.hook_normalized".into()
        }
        "ln_final_scale" | "ln_final.hook_scale" => return "ln_final.hook_scale".into(),
        "unembed_in" | "unembed.hook_in" => return "unembed.hook_in".into(),
        "logits" | "unembed_out" | "unembed.hook_out" => return "unembed.hook_out".into(),
        "attn" => return format!("blocks.{layer}.attn.hook_pattern"),
        _ => {}
    }
    if let Some((_, suffix)) = LAYER_HOOKS
        .iter()
        .find(|(s, full)| *s == short || *full == short || full.rsplit('.').next() == Some(short))
    {
        return format!("blocks.{layer}.{suffix}");
    }
    format!("blocks.{layer}.{short}")
}

/// What a hook learns about where it runs.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// The hook point's full name.
    pub name: String,
    /// The typed hook point.
    pub point: HookPoint,
    /// Layer index, `None` for `hook_embed` and `ln_final.*`.
    pub layer: Option<usize>,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (k/v hooks carry this many heads).
    pub n_kv_heads: usize,
    /// The slot of the activation's first position: 0 in a forward pass; while generating
    /// with a KV cache, the slots already cached (each step's hooks see only the new
    /// positions; rows of a batch are left-padded, see [`crate::model::KvCache::pad`]).
    pub offset: usize,
    /// The sub-points of this hook point for this pass (see [`HookContext::sub`]).
    pub(crate) subs: Option<Arc<SubPoints>>,
}

/// The hook sub-points a spliced module (an SAE) exposes under its host's name, as SAELens's
/// `HookedSAETransformer` does: `blocks.6.hook_resid_post.hook_sae_acts_post` and so on.
pub const SUB_POINT_SUFFIXES: [&str; 6] = [
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_recons",
    "hook_sae_error",
    "hook_sae_output",
];

/// The hooks registered at one hook point's sub-points for one pass, and what the pass caches
/// there (filled while the host's hooks run, moved into the cache afterwards).
pub(crate) struct SubPoints {
    pub(crate) hooks: Vec<(SubTarget, SharedHook)>,
    pub(crate) cache: Vec<String>,
    pub(crate) recorded: Mutex<Vec<(String, Tensor)>>,
}

/// Which sub-points a hook runs at.
#[derive(Clone)]
pub(crate) enum SubTarget {
    Suffix(&'static str),
    Filter(NameFilter),
}

impl fmt::Debug for SubPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubPoints")
            .field("hooks", &self.hooks.len())
            .field("cache", &self.cache)
            .finish()
    }
}

impl HookContext {
    /// Runs the hooks registered at the sub-point `{this point}.{suffix}` on `x` (a spliced
    /// module's internal activation, e.g. `hook_sae_acts_post`), caches it when the pass
    /// caches that name, and returns it or the hooks' replacement.
    pub fn sub(&self, suffix: &str, x: Tensor) -> Result<Tensor> {
        let Some(subs) = &self.subs else {
            return Ok(x);
        };
        let name = format!("{}.{suffix}", self.name);
        let mut x = x;
        let ctx = HookContext {
            name: name.clone(),
            subs: None,
            ..self.clone()
        };
        for (target, f) in &subs.hooks {
            let hit = match target {
                SubTarget::Suffix(s) => *s == suffix,
                SubTarget::Filter(keep) => keep(&name),
            };
            if !hit {
                continue;
            }
            let y = f(&x, &ctx)?;
            if y.dims() != x.dims() {
                return Err(Error::HookShape {
                    hook: name,
                    expected: x.dims().to_vec(),
                    got: y.dims().to_vec(),
                });
            }
            x = y;
        }
        if subs.cache.contains(&name) {
            if let Ok(mut rec) = subs.recorded.lock() {
                rec.push((name, x.clone()));
            }
        }
        Ok(x)
    }
}

/// A hook: reads the activation and returns it, or a replacement of the same shape. Shared, so
/// that [`Hooks`] (and every view that holds them) clones cheaply.
pub type SharedHook = Arc<dyn Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync>;

/// A hook-name predicate, as TransformerLens's `(lambda name: …, fn)` pairs take.
pub type NameFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A declarative intervention, the common hooks without writing a closure.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// Replace the activation by zeros.
    Zero,
    /// Replace the activation by this tensor (same shape, or broadcastable to it).
    Replace(Tensor),
    /// Add this tensor (broadcastable) to the activation, e.g. a steering vector.
    Add(Tensor),
    /// Multiply the activation by a scalar.
    Scale(f64),
    /// Zero one query head (dim 2 of q/z/result, dim 1 of scores/pattern) or one kv head for
    /// k/v hooks; the other heads, including those sharing its kv head, are untouched.
    ZeroHead(usize),
}

impl Intervention {
    /// Applies the intervention to an activation.
    pub fn apply(&self, x: &Tensor, ctx: &HookContext) -> Result<Tensor> {
        Ok(match self {
            Intervention::Zero => x.zeros_like()?,
            Intervention::Replace(t) => t
                .broadcast_as(x.shape())?
                .to_dtype(x.dtype())?
                .contiguous()?,
            Intervention::Add(t) => x.broadcast_add(&t.to_dtype(x.dtype())?)?,
            Intervention::Scale(s) => (x * *s)?,
            Intervention::ZeroHead(h) => {
                let dim = match ctx.point {
                    HookPoint::AttnScores(_) | HookPoint::Pattern(_) => 1,
                    HookPoint::Q(_)
                    | HookPoint::K(_)
                    | HookPoint::V(_)
                    | HookPoint::QNormScale(_)
                    | HookPoint::QNormNormalized(_)
                    | HookPoint::KNormScale(_)
                    | HookPoint::KNormNormalized(_)
                    | HookPoint::RotQ(_)
                    | HookPoint::RotK(_)
                    | HookPoint::Z(_)
                    | HookPoint::Result(_) => 2,
                    p => {
                        return Err(Error::Invalid(format!(
                            "ZeroHead applies to per-head hook points (q, k, v, rot_q, rot_k, attn_scores, pattern, z, result), not `{p}`"
                        )))
                    }
                };
                let n = x.dim(dim)?;
                if *h >= n {
                    return Err(Error::Invalid(format!(
                        "ZeroHead({h}) at `{}`: that activation has {n} heads on dim {dim} (shape {:?}); k/v hooks carry the {} kv heads",
                        ctx.name,
                        x.dims(),
                        ctx.n_kv_heads
                    )));
                }
                let mut m = vec![1f32; n];
                m[*h] = 0.0;
                let mut shape = vec![1usize; x.rank()];
                shape[dim] = n;
                let m = Tensor::from_vec(m, shape, x.device())?.to_dtype(x.dtype())?;
                x.broadcast_mul(&m)?
            }
        })
    }
}

/// Where a hook in a [`Hooks`] set runs: one point, or every point whose name passes a filter.
#[derive(Clone)]
pub(crate) enum Target {
    Point(HookPoint),
    Filter(NameFilter),
    /// A sub-point of a hook point (`blocks.6.hook_resid_post.hook_sae_acts_post`).
    Sub(HookPoint, &'static str),
}

/// Splits `blocks.6.hook_resid_post.hook_sae_acts_post` into its host point and sub-point.
pub(crate) fn parse_sub_point(name: &str) -> Option<(HookPoint, &'static str)> {
    let (host, suffix) = name.trim().rsplit_once('.')?;
    let suffix = SUB_POINT_SUFFIXES.iter().find(|s| **s == suffix)?;
    Some((host.parse().ok()?, suffix))
}

/// A set of hooks, in the order they were added, built by name with validation. Cloning is
/// cheap (the closures are shared). Activate a set with
/// [`HookedTransformer::with_hooks`](crate::HookedTransformer::with_hooks): every forward pass
/// of the returned view, and every technique given the view, runs them.
///
/// ```no_run
/// # use mechinterp::prelude::*;
/// # fn main() -> Result<()> {
/// let model = HookedTransformer::gemma3_270m()?;
/// let hooks = Hooks::new()
///     .intervene("blocks.5.attn.hook_z", Intervention::ZeroHead(3))?
///     .observe("blocks.5.hook_resid_post", |x, _| Ok(println!("{:?}", x.dims())))?
///     .add_filter(|name| name.ends_with("hook_pattern"), |x, _| Ok(x.clone()));
/// let logits = model.with_hooks(&hooks).forward(&model.to_tokens("EN: green FR:")?)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Hooks {
    pub(crate) entries: Vec<(Target, SharedHook)>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|(t, _)| match t {
                Target::Point(p) => p.name(),
                Target::Filter(_) => "<name filter>".to_string(),
                Target::Sub(p, s) => format!("{p}.{s}"),
            })
            .collect();
        f.debug_struct("Hooks").field("points", &names).finish()
    }
}

impl Hooks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hook at the named point that returns the activation or a same-shape replacement
    /// (an unknown name is an error with suggestions). A spliced SAE's sub-points
    /// (`blocks.6.hook_resid_post.hook_sae_acts_post`, see [`SUB_POINT_SUFFIXES`]) are named
    /// the same way; they fire only where an SAE is spliced.
    pub fn add<F>(mut self, name: &str, f: F) -> Result<Self>
    where
        F: Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync + 'static,
    {
        if let Some((p, suffix)) = parse_sub_point(name) {
            self.entries.push((Target::Sub(p, suffix), Arc::new(f)));
            return Ok(self);
        }
        let p: HookPoint = name.parse()?;
        Ok(self.add_point(p, f))
    }

    /// Adds a hook at a typed point.
    pub fn add_point<F>(mut self, p: HookPoint, f: F) -> Self
    where
        F: Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync + 'static,
    {
        self.entries.push((Target::Point(p), Arc::new(f)));
        self
    }

    /// Adds a hook at every point whose name passes `filter`, as TransformerLens's
    /// `(lambda name: name.endswith("hook_z"), fn)`.
    pub fn add_filter<P, F>(mut self, filter: P, f: F) -> Self
    where
        P: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync + 'static,
    {
        self.entries
            .push((Target::Filter(Arc::new(filter)), Arc::new(f)));
        self
    }

    /// Adds a read-only hook at the named point: it sees the activation and changes nothing.
    pub fn observe<F>(self, name: &str, f: F) -> Result<Self>
    where
        F: Fn(&Tensor, &HookContext) -> Result<()> + Send + Sync + 'static,
    {
        self.add(name, move |x, ctx| {
            f(x, ctx)?;
            Ok(x.clone())
        })
    }

    /// Adds a read-only hook at every point whose name passes `filter`.
    pub fn observe_filter<P, F>(self, filter: P, f: F) -> Self
    where
        P: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(&Tensor, &HookContext) -> Result<()> + Send + Sync + 'static,
    {
        self.add_filter(filter, move |x, ctx| {
            f(x, ctx)?;
            Ok(x.clone())
        })
    }

    /// Adds a declarative intervention at the named point.
    pub fn intervene(self, name: &str, iv: Intervention) -> Result<Self> {
        self.add(name, move |x, ctx| iv.apply(x, ctx))
    }

    /// This set followed by every hook of `other` (at a shared point, this set's run first).
    pub fn then(mut self, other: &Hooks) -> Self {
        self.entries.extend(other.entries.iter().cloned());
        self
    }

    /// Number of hooks (a filter hook counts once).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The typed points named in this set (filters excluded).
    pub(crate) fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.entries.iter().filter_map(|(t, _)| match t {
            Target::Point(p) | Target::Sub(p, _) => Some(*p),
            Target::Filter(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in HookPoint::all(3) {
            let s = p.name();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
        }
        assert_eq!(
            HookPoint::all(2).len(),
            1 + 2 * LAYER_HOOKS.len() + GLOBAL_TAIL.len()
        );
    }

    #[test]
    fn the_table_drives_order_index_and_names() {
        let all = HookPoint::all(4);
        // Forward order is the enum's order within a layer, and every index round-trips.
        for w in all.windows(2) {
            if w[0].layer() == w[1].layer() && w[0].layer().is_some() {
                assert!(w[0] < w[1], "{} before {}", w[0], w[1]);
            }
        }
        for p in &all {
            if let (Some(l), Some(i)) = (p.layer(), p.layer_index()) {
                assert_eq!(HookPoint::from_layer_index(i, l), Some(*p));
                assert_eq!(p.name(), format!("blocks.{l}.{}", LAYER_HOOKS[i].1));
                assert_eq!(act_name(LAYER_HOOKS[i].0, l), p.name());
            }
        }
        assert_eq!(LAYER_POINTS.len(), LAYER_HOOKS.len());
    }

    #[test]
    fn act_name_matches_transformer_lens() {
        assert_eq!(act_name("pattern", 3), "blocks.3.attn.hook_pattern");
        assert_eq!(act_name("attn", 3), "blocks.3.attn.hook_pattern");
        assert_eq!(act_name("resid_pre", 0), "blocks.0.hook_resid_pre");
        assert_eq!(act_name("z", 11), "blocks.11.attn.hook_z");
        assert_eq!(act_name("post", 2), "blocks.2.mlp.hook_post");
        assert_eq!(act_name("embed", 5), "hook_embed");
        assert_eq!(act_name("ln1", 1), "blocks.1.ln1.hook_normalized");
        assert_eq!(
            act_name("hook_attn_scores", 4),
            "blocks.4.attn.hook_attn_scores"
        );
    }

    #[test]
    fn unknown_names_suggest_neighbours() {
        let e = "blocks.3.attn.hook_patern"
            .parse::<HookPoint>()
            .unwrap_err();
        match &e {
            Error::UnknownHook { suggestions, .. } => {
                assert_eq!(
                    suggestions[0], "blocks.3.attn.hook_pattern",
                    "{suggestions:?}"
                )
            }
            _ => panic!("{e}"),
        }
        let e = "blocks.3.hook_pattern".parse::<HookPoint>().unwrap_err();
        assert!(e.to_string().contains("blocks.3.attn.hook_pattern"), "{e}");
        let e = "blocks.2.hook_resid".parse::<HookPoint>().unwrap_err();
        assert!(e.to_string().contains("blocks.2.hook_resid_"), "{e}");
        let e = HookPoint::parse_for("blocks.40.hook_resid_pre", 18).unwrap_err();
        assert!(e.to_string().contains("18 layers"), "{e}");
        assert!(e.to_string().contains("blocks.17.hook_resid_pre"), "{e}");
    }
}
