//! Training SAEs and transcoders in Rust, as SAELens does it: an activation store streaming a
//! hook's activations from a corpus ([`store`]), the optimiser and losses ([`trainer`]), the
//! driver that ties them to a SAELens folder ([`run`]) and held-out evaluation ([`eval`]); a
//! transcoder for every layer in one streaming pass ([`set`], [`set_store`], [`set_eval`]).

pub mod eval;
pub mod run;
pub mod set;
pub mod set_eval;
pub mod set_store;
pub mod store;
pub mod trainer;

pub use eval::{evaluate, CeReport, EvalOptions, EvalReport};
pub use run::{train, TrainOptions, TrainOutcome};
pub use set::{parse_set_arch, train_transcoders, TranscoderSetOptions, TranscoderSetOutcome};
pub use set_eval::{evaluate_set, ReplacementReport, SetEvalReport};
pub use store::{ActivationStore, MassiveRule, StoreOptions, StoreStats};
pub use trainer::{TrainArch, TrainConfig, Trainer};
