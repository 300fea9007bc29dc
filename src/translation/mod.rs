//! Translation-head discovery: the original study's score and random control, reproduced
//! exactly, then a paired design (per source: translation − random) with discovery on one half
//! of the sources and confirmation on the other, a clean random control, a model-free
//! alignment-aware variant, a second prompt format, and causal checks by ablation (against
//! layer-matched random heads) and path patching. `crate::report` writes the results to disk
//! and `crate::plot` draws them.

pub mod align;
pub mod aligned;
pub mod attend;
pub mod causal;
pub mod data;
pub mod diagonal;
pub mod donors;
pub mod heads;
pub mod pairing;
pub mod path;
pub mod pipeline;
pub mod prompt;
pub mod score;
pub mod spans;
pub mod stage;
pub mod stats;

pub use crate::stats::benjamini_hochberg;
pub use causal::{
    ablation_check, path_ranking, try_ablation_check, try_path_ranking, CausalOptions,
    CausalResult, PathRanking,
};
pub use data::{
    clean_random_pairing, filter_pairs, load_pairs, load_tsv, parse_tsv, random_pairing,
    random_pairing_indexed, shipped_data_dir, SentencePair,
};
pub use pipeline::{
    analyse_direction, parse_direction, DirectionResult, FormatCheck, HeadList, Method, RunOptions,
    DEFAULT_DIRECTIONS,
};
pub use score::{
    attend_at, diagonal_score, forced_prompt, language_name, locate_target, name_format_scores,
    prompt, score_heads, score_pattern, translation_scores, HeadScores, ScoreOptions, Spans,
};
pub use stage::{Shortfall, Skipped};
pub use stats::{
    head_stats, paired_stats, select_heads, split_sources, FoundHead, HeadSelection, HeadStats,
    SelectOptions,
};
