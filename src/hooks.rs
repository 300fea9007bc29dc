//! Hook points with TransformerLens names, hook closures and declarative interventions. The
//! state of one forward pass that applies them lives with the model (`model/run.rs`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

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
            /// `ln_final.hook_normalized` [b,s,d]
            LnFinalNormalized,
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
                    HookPoint::Embed | HookPoint::LnFinalScale | HookPoint::LnFinalNormalized => None,
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
    /// `blocks.{l}.ln1.hook_scale` [b,s,1]: the RMS the block input is divided by.
    Ln1Scale => "ln1_scale", "ln1.hook_scale";
    /// `blocks.{l}.ln1.hook_normalized` [b,s,d]
    Ln1Normalized => "ln1", "ln1.hook_normalized";
    /// `blocks.{l}.attn.hook_q` [b,s,n,h]: after projection and q-norm, before RoPE.
    Q => "q", "attn.hook_q";
    /// `blocks.{l}.attn.hook_k` [b,s,k,h]: after projection and k-norm, before RoPE.
    K => "k", "attn.hook_k";
    /// `blocks.{l}.attn.hook_v` [b,s,k,h]
    V => "v", "attn.hook_v";
    /// `blocks.{l}.attn.hook_rot_q` [b,s,n,h]: after RoPE.
    RotQ => "rot_q", "attn.hook_rot_q";
    /// `blocks.{l}.attn.hook_rot_k` [b,s,k,h]: after RoPE.
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
    /// `blocks.{l}.hook_attn_out` [b,s,d]: exactly what the attention adds to the residual.
    AttnOut => "attn_out", "hook_attn_out";
    /// `blocks.{l}.hook_resid_mid` [b,s,d]
    ResidMid => "resid_mid", "hook_resid_mid";
    /// `blocks.{l}.ln2.hook_scale` [b,s,1]
    Ln2Scale => "ln2_scale", "ln2.hook_scale";
    /// `blocks.{l}.ln2.hook_normalized` [b,s,d]
    Ln2Normalized => "ln2", "ln2.hook_normalized";
    /// `blocks.{l}.mlp.hook_pre` [b,s,d_mlp]: gate pre-activation.
    MlpPre => "pre", "mlp.hook_pre";
    /// `blocks.{l}.mlp.hook_pre_linear` [b,s,d_mlp]: up projection.
    MlpPreLinear => "pre_linear", "mlp.hook_pre_linear";
    /// `blocks.{l}.mlp.hook_post` [b,s,d_mlp]: act(gate) × up.
    MlpPost => "post", "mlp.hook_post";
    /// `blocks.{l}.hook_mlp_out` [b,s,d]: exactly what the MLP adds to the residual.
    MlpOut => "mlp_out", "hook_mlp_out";
    /// `blocks.{l}.hook_resid_post` [b,s,d]
    ResidPost => "resid_post", "hook_resid_post";
}

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
        v.push(HookPoint::LnFinalScale);
        v.push(HookPoint::LnFinalNormalized);
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
            AttnScores(_) | Pattern(_) => "[batch, n_heads, query_pos, key_pos]",
            Result(_) => "[batch, pos, n_heads, d_model]",
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => "[batch, pos, d_mlp]",
            Ln1Scale(_) | Ln2Scale(_) | LnFinalScale => "[batch, pos, 1]",
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
            HookPoint::LnFinalScale => write!(f, "ln_final.hook_scale"),
            HookPoint::LnFinalNormalized => write!(f, "ln_final.hook_normalized"),
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
        match t {
            "hook_embed" => return Ok(HookPoint::Embed),
            "ln_final.hook_scale" => return Ok(HookPoint::LnFinalScale),
            "ln_final.hook_normalized" => return Ok(HookPoint::LnFinalNormalized),
            _ => {}
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
    let mut v: Vec<String> = vec![
        "hook_embed".into(),
        "ln_final.hook_scale".into(),
        "ln_final.hook_normalized".into(),
    ];
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
}

/// A hook closure: reads the activation and returns it, or a replacement of the same shape.
pub trait HookFn: Fn(&Tensor, &HookContext) -> Result<Tensor> {}
impl<F: Fn(&Tensor, &HookContext) -> Result<Tensor>> HookFn for F {}

/// A boxed hook, for lists of different closures.
pub type BoxedHook = Box<dyn Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync>;

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

/// A set of hooks keyed by hook point, built by name with validation.
#[derive(Default)]
pub struct Hooks {
    pub(crate) map: HashMap<HookPoint, Vec<BoxedHook>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self
            .map
            .iter()
            .map(|(p, v)| format!("{p} ×{}", v.len()))
            .collect();
        names.sort();
        f.debug_struct("Hooks").field("points", &names).finish()
    }
}

impl Hooks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a closure hook at the named point (an unknown name is an error with suggestions).
    pub fn add<F>(mut self, name: &str, f: F) -> Result<Self>
    where
        F: Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync + 'static,
    {
        let p: HookPoint = name.parse()?;
        self.map.entry(p).or_default().push(Box::new(f));
        Ok(self)
    }

    /// Adds a declarative intervention at the named point.
    pub fn intervene(self, name: &str, iv: Intervention) -> Result<Self> {
        self.add(name, move |x, ctx| iv.apply(x, ctx))
    }

    /// Adds a hook at a typed point.
    pub fn add_point<F>(mut self, p: HookPoint, f: F) -> Self
    where
        F: Fn(&Tensor, &HookContext) -> Result<Tensor> + Send + Sync + 'static,
    {
        self.map.entry(p).or_default().push(Box::new(f));
        self
    }

    /// Number of hook points with at least one hook.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
        assert_eq!(HookPoint::all(2).len(), 1 + 2 * LAYER_HOOKS.len() + 2);
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
