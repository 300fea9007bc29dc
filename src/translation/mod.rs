//! Translation-head discovery: the original study's score and random control, reproduced
//! exactly, plus bootstrap intervals, permutation tests with FDR control, an alignment-aware
//! variant, and causal checks by ablation and path patching. `crate::report` writes the
//! results to disk and `crate::plot` draws them.

pub mod causal;
pub mod data;
pub mod pipeline;
pub mod score;
pub mod stats;

pub use crate::stats::benjamini_hochberg;
pub use causal::{ablation_check, path_ranking, CausalOptions, CausalResult, PathRanking};
pub use data::{
    filter_pairs, load_pairs, load_tsv, parse_tsv, random_pairing, shipped_data_dir, SentencePair,
};
pub use pipeline::{
    analyse_direction, parse_direction, DirectionResult, HeadList, RunOptions, DEFAULT_DIRECTIONS,
};
pub use score::{
    diagonal_score, locate_target, prompt, score_heads, score_pattern, translation_scores,
    HeadScores, ScoreOptions,
};
pub use stats::{head_stats, HeadStats};
