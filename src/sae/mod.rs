//! Sparse autoencoders and transcoders: SAELens / Gemma Scope 2 / circuit-tracer files read and
//! SAELens folders written ([`Sae::load`], [`Sae::save`]), SAELens 6.x's math, splicing into any
//! hook ([`crate::Hooks::sae`]), training in Rust, and feature dashboards.

pub mod autoencoder;
pub mod config;
pub mod dashboard;
pub mod format;
pub mod pretrained;
pub mod save;
pub mod splice;
pub mod train;

pub use autoencoder::{Sae, SaeHook, SaeWeights};
pub use config::{Architecture, Format, Normalization, SaeConfig};
pub use format::circuit_tracer::CrossLayerTranscoder;
pub use splice::{FeatureEdit, SpliceOptions};
