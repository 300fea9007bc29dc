//! Models: one config, one hooked forward pass, and loaders that map files onto them.

pub mod arch;
pub mod config;
pub mod gguf;
pub mod hf_config;
pub mod hub;
pub mod logits;
pub mod ollama;
pub mod ops;
pub(crate) mod run;
pub mod transformer;

pub use config::{Activation, Config, LayerConfig, RopeScaling};
pub use hub::LoadOptions;
pub use logits::{Logits, LogitsView};
pub use transformer::{BlockWeights, HookedTransformer, Weights};
