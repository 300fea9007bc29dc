//! Everything a notebook needs, in one `use mechinterp::prelude::*;`.

pub use crate::ablation::{ablate, Ablation, Component};
pub use crate::cache::ActivationCache;
pub use crate::corpus::{Corpus, Doc, Split};
pub use crate::error::{Error, Result};
pub use crate::fetch::{default_model_path, fetch_default_model, FetchOptions};
pub use crate::graph::{
    attribute, graph_scores, linear_replacement, load_transcoders, prune, AttributionOptions,
    Frozen, Graph, NodeKind, PerLayer, Transcoders,
};
pub use crate::hooks::{act_name, HookContext, HookPoint, Hooks, Intervention, SharedHook};
pub use crate::lens::{decompose_resid, direct_logit_attribution, head_contributions, LogitLens};
pub use crate::metrics::{
    continuation_logprob, continuation_logprobs, logit_diff, normalized, swap_averaged_logit_diff,
    LogitDiff, Metric,
};
pub use crate::model::{
    Activation, Config, GenerateOptions, Generation, HookedTransformer, KvCache, LoadOptions,
    Logits, Norm, Pass, PassOutput, Sampling, StopReason, WeightMode,
};
pub use crate::patching::{Direction, PatchResult, PatchTarget, Patcher, Receiver, Receivers};
pub use crate::plot::{
    attention_grid, attention_pattern, attention_view, attention_view_with, Annotation, BarChart,
    Colormap, Figure, GraphPlot, Heatmap, Html, LinePlot, Panels, ScatterPlot,
};
pub use crate::sae::dashboard::{DashboardOptions, Dashboards};
pub use crate::sae::{
    Architecture as SaeArchitecture, FeatureEdit, Sae, SaeConfig, SaeHook, SpliceOptions,
};
pub use crate::table::{Axis, Table};
pub use crate::tokenizer::Tokenizer;
pub use crate::translation::{
    diagonal_score, filter_pairs, load_pairs, score_heads, translation_scores, HeadScores,
    ScoreOptions, SentencePair,
};
pub use candle_core::{DType, Device, IndexOp, Tensor, D};
