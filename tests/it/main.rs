//! Every integration test, in one binary: one link of candle instead of one per file, and the
//! default model loaded once for all of them (`common::gemma`). One module per former
//! `tests/*.rs` file, with the same test names (run one with `cargo test --release --test it
//! hooks::`). The tests run as threads of one process: none may change process-wide state
//! (environment variables, the current directory); pass configuration explicitly instead.
//!
//! The binary belongs to the CLI crate (`cli/Cargo.toml`), the only package whose tests can
//! run the `mechinterp` and `mechinterp-bench` binaries; `cargo test --release` at the root
//! runs it. Paths into the repository go through `common::repo()`.

mod common;

mod bad_inputs;
mod batches;
mod calibration;
mod checkpoints;
mod cli;
mod corpus;
mod fetch;
mod generate;
mod hooks;
mod hub;
mod layering;
mod load_layering;
mod local_stores;
mod plots;
mod reference;
mod sae_dashboard;
mod tokenizer;
mod toolkit;
mod translation;
mod weights;
// main engineer's modules below
mod grads;
mod graph;
mod graph_clt;
mod graph_ct;
mod graph_effects;
mod graph_html;
mod path_patching;
mod sae_formats;
mod sae_splice;
mod sae_train;
mod sae_trainer;
mod steering;
mod tl_hooks;
mod transcoders_train;
mod view;
