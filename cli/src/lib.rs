//! What the `mechinterp` command line and the `mechinterp-bench` harness share: the arguments
//! that pick and load a model, and JSON output.

pub mod args;
