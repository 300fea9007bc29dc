//! The original translation score: attention on the "diagonal" from target-language tokens to
//! the source tokens they line up with, per head, against a random-pairing control; and an
//! alignment-aware variant.
//!
//! For a prompt `"{SRC}: {src} {TGT}: {tgt}"` (BOS first), t is the position of the token of
//! `" {TGT}"` (searched from position 3), and each head's pattern is cropped to
//! `pattern[h][t.., bos..t]` with bos = 1: rows from the target tag to the end, columns from
//! after BOS to just before the tag, so row 0 (" FR") faces column 0 ("EN"), row 1 (":")
//! column 1 (":"), and the sentences face each other from there. The score is the mean of that
//! rectangle's main diagonal and of its ±1 … ±bandwidth off-diagonals, each averaged
//! separately, then averaged together.
//!
//! The score's parts live in their own modules (prompts, spans, attention, the diagonal, head
//! scores, the aligned variant); this one holds the options and names every part in one place.

pub use crate::translation::aligned::{aligned_scores, AlignedScores};
pub use crate::translation::attend::{attend, attend_at, PromptAttention};
pub use crate::translation::diagonal::{
    diagonal_score, diagonal_scores, mean_table, score_pattern,
};
pub use crate::translation::heads::{
    name_format_scores, score_heads, translation_scores, HeadScores,
};
pub use crate::translation::prompt::{forced_prompt, language_name, prompt};
pub use crate::translation::spans::{locate_target, Spans};

/// Options for scoring.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Off-diagonals on each side of the main one (the original uses 1).
    pub bandwidth: usize,
    /// Prompts per batched forward.
    pub batch: usize,
    /// No progress output.
    pub quiet: bool,
    /// Re-pair random prompts that could be translations (a source with its own target or a
    /// target of the same text). `false` keeps the original study's pairing exactly.
    pub clean_control: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            bandwidth: 1,
            batch: 8,
            quiet: false,
            clean_control: true,
        }
    }
}
