//! mechinterp: mechanistic interpretability for transformer language models, in Rust.
//!
//! A [`HookedTransformer`] exposes every internal activation under its TransformerLens name
//! (`blocks.3.attn.hook_pattern`…), to read ([`HookedTransformer::run_with_cache`]) or replace
//! through a hooked view ([`HookedTransformer::with_hooks`]) that every technique accepts, with
//! TransformerLens's meaning for every name. A public partial forward
//! ([`HookedTransformer::pass_from`]) starts at any layer and unembeds only where asked.
//! Grouped-query attention is first class: k/v hooks carry the kv heads. Notebooks start with
//! `use mechinterp::prelude::*;`.
//!
//! Dependencies point one way (`tests/it/layering.rs` checks it): [`model`] (with [`hooks`],
//! [`cache`], [`tokenizer`]) ← techniques ([`metrics`], [`ablation`], [`lens`], [`patching`],
//! [`translation`], sharing [`stats`]) ← [`plot`] (every figure and notebook display) and
//! [`report`] (the main job on disk) ← the `mechinterp` binary, which also holds the benchmarks.

pub mod ablation;
pub mod cache;
pub mod corpus;
pub mod error;
pub mod fetch;
pub mod graph;
pub mod hooks;
pub mod lens;
pub mod metrics;
pub mod model;
pub mod patching;
pub mod plot;
pub mod prelude;
pub mod progress;
pub mod report;
pub mod sae;
pub mod stats;
pub mod steering;
pub mod table;
pub mod tokenizer;
pub mod translation;

pub use cache::ActivationCache;
pub use error::{Error, Result};
pub use hooks::{act_name, HookContext, HookPoint, Hooks, Intervention};
pub use model::{Config, HookedTransformer, LoadOptions};
pub use tokenizer::Tokenizer;
