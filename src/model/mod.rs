//! Models: one config, one hooked forward pass, and loaders that map files onto them.

pub mod arch;
pub(crate) mod attention;
pub mod config;
pub(crate) mod forward;
pub(crate) mod generate;
pub mod kv_cache;
pub mod load;
pub mod logits;
pub(crate) mod masks;
pub mod matrix;
pub mod ops;
pub mod pass;
pub mod pieces;
pub(crate) mod rope;
pub(crate) mod run;
pub(crate) mod run_api;
pub(crate) mod tokens;
pub mod transformer;

pub use config::{Activation, Config, LayerConfig, RopeScaling};
pub use generate::{GenerateOptions, Generation, Sampling, StopReason};
pub use kv_cache::KvCache;
pub use load::LoadOptions;
pub use logits::{Logits, LogitsView};
pub use matrix::{Matrix, WeightMode};
pub use pass::{Pass, PassOutput};
pub use pieces::Norm;
pub use transformer::{BlockWeights, HookedTransformer, Weights};
