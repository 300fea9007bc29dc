//! Models: one config, one hooked forward pass, and loaders that map files onto them.

pub mod config;
pub mod gguf;
pub mod transformer;

pub use config::{Activation, Config, LayerConfig};
pub use transformer::{BlockWeights, HookedTransformer, Weights};
