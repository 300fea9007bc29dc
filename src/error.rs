//! The crate's error type: every failure says what was wrong and, where it can, what to do.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in mechinterp.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A hook name that no model has; lists the nearest valid names.
    #[error("unknown hook point `{name}`{}", suggest(.suggestions))]
    UnknownHook {
        /// The name as given.
        name: String,
        /// Nearest valid names, best first.
        suggestions: Vec<String>,
    },

    /// A hook name that is valid in general but not for this model (e.g. layer out of range).
    #[error("hook point `{name}` does not exist in this model: {why}{}", suggest(.suggestions))]
    HookNotInModel {
        /// The name as given.
        name: String,
        /// Why it is not there.
        why: String,
        /// Nearest valid names, best first.
        suggestions: Vec<String>,
    },

    /// A hook returned a tensor whose shape differs from its input.
    #[error("hook at `{hook}` returned shape {got:?}, but the activation there has shape {expected:?}; a hook must return its input or a replacement of the same shape")]
    HookShape {
        /// Hook point name.
        hook: String,
        /// Shape of the activation given to the hook.
        expected: Vec<usize>,
        /// Shape the hook returned.
        got: Vec<usize>,
    },

    /// An activation that the cache does not hold.
    #[error("the cache holds no activation `{name}`{}{}", suggest(.suggestions), .hint)]
    NotCached {
        /// The name asked for.
        name: String,
        /// Nearest cached names.
        suggestions: Vec<String>,
        /// Extra advice.
        hint: String,
    },

    /// A tensor argument had the wrong shape or type.
    #[error("{0}")]
    Shape(String),

    /// Fetching the default model failed.
    #[error("fetching the default model failed: {0}")]
    Fetch(String),

    /// A model file is missing.
    #[error("model file not found: {path}\n{hint}")]
    ModelNotFound {
        /// Where we looked.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },

    /// The model file or config is not one we can load.
    #[error("cannot load model: {0}")]
    Load(String),

    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A user argument was out of range or malformed.
    #[error("{0}")]
    Invalid(String),

    /// A file could not be written at the path the user gave.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The user's path (never a temporary file beside it).
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean one of: {}?", s.join(", "))
    }
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Tokenizer(e.to_string())
    }
}
