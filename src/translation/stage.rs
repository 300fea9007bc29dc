//! When a stage of the study has too little data to run: a shortfall, which the pipeline
//! reports as a skipped stage, unlike a failure, which leaves the run incomplete.

use crate::error::Error;

/// Too little data for a stage: why, how many sentence pairs it needs and how many it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// What was missing, in words.
    pub reason: String,
    /// Sentence pairs the stage needs (of the kind `reason` names).
    pub needs: usize,
    /// Sentence pairs it was given.
    pub had: usize,
}

impl From<Shortfall> for Error {
    fn from(s: Shortfall) -> Self {
        Error::Invalid(s.reason)
    }
}

/// A stage that did not run for lack of data, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The stage, e.g. `path patching`.
    pub stage: String,
    /// Why it did not run.
    pub reason: String,
    /// Sentence pairs it needs.
    pub needs: usize,
    /// Sentence pairs it had.
    pub had: usize,
}

impl Skipped {
    /// The stage `stage` skipped for `s`.
    pub fn new(stage: &str, s: Shortfall) -> Self {
        Skipped {
            stage: stage.into(),
            reason: s.reason,
            needs: s.needs,
            had: s.had,
        }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} skipped: {} (needs {} such pairs; {} given)",
            self.stage, self.reason, self.needs, self.had
        )
    }
}
