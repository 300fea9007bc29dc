//! Translation-head discovery: the original study's score and random control, reproduced
//! exactly, plus bootstrap intervals, permutation tests with FDR control, an alignment-aware
//! variant, and causal checks by ablation and path patching.

pub mod causal;
pub mod data;
pub mod report;
pub mod score;
pub mod stats;

pub use causal::{ablation_check, path_ranking, CausalOptions, CausalResult, PathRanking};
pub use data::{filter_pairs, load_pairs, load_tsv, parse_tsv, random_pairing, SentencePair};
pub use report::{run, run_direction, DirectionResult, RunOptions};
pub use score::{
    diagonal_score, locate_target, prompt, score_heads, score_pattern, translation_scores,
    HeadScores, ScoreOptions,
};
pub use stats::{benjamini_hochberg, head_stats, HeadStats};
