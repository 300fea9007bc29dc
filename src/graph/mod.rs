//! Attribution graphs, as circuit-tracer (0.5.0) builds them: every MLP replaced by a
//! transcoder plus a frozen error, attention patterns and norm scales frozen, so that the model
//! is linear in its feature activations; the direct effect of every active feature, error node
//! and input token on every feature and on the most likely logits; pruning, graph scores, and
//! exports in circuit-tracer's formats (`graph.json` for its frontend, `graph.safetensors` with
//! its `Graph` fields).
//!
//! ```no_run
//! # use mechinterp::prelude::*;
//! # use mechinterp::graph::{attribute, graph_scores, AttributionOptions, PerLayer};
//! # fn main() -> Result<()> {
//! # let saes: Vec<mechinterp::sae::Sae> = vec![];
//! let model = HookedTransformer::gemma3_270m()?;
//! let toks = model.encode("The capital of France is")?; // BOS first
//! let graph = attribute(&model, &toks, &PerLayer::new(saes)?, &AttributionOptions::default())?;
//! graph.save_safetensors("graph.safetensors")?;
//! graph.write_json("graph.json", "my-graph", "my-transcoders", 0.8, 0.98)?;
//! let (replacement, completeness) = graph_scores(&graph)?;
//! # Ok(()) }
//! ```
//!
//! The backward pass through the frozen model is written out as linear maps
//! ([`backward`]), many targets at once, instead of autograd.

pub mod attribute;
pub mod backward;
pub mod cross_layer;
pub mod effects;
pub mod export;
pub mod frozen;
pub mod load;
pub mod prune;
pub mod replacement;
pub mod targets;
pub mod transcoders;

pub use attribute::{attribute, attribute_frozen, AttributionOptions};
pub use cross_layer::CrossLayer;
pub use effects::NodeKind;
pub use frozen::Frozen;
pub use load::{load_transcoders, TranscoderSet};
pub use prune::{graph_scores, prune, PruneResult};
pub use replacement::linear_replacement;
pub use transcoders::{FeatureInput, PerLayer, Transcoders};

/// An unpruned attribution graph, holding circuit-tracer's `Graph` fields. Nodes are in its
/// order: selected features, error nodes (layer by layer, position by position), one token node
/// per position, logit nodes (most likely first). As in circuit-tracer, an edge is the source's
/// vector (a feature's decoder row times its activation, an error vector, a token's raw
/// embedding row) dotted with the gradient of the target's pre-activation (encoder row) or
/// demeaned logit in the frozen model; logit rows are not weighted by probability (pruning
/// weights them). Token columns of models that scale their embeddings (Gemma) are therefore
/// the direct effect divided by that scale, exactly as circuit-tracer's are.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The prompt, decoded (special tokens included, as circuit-tracer's `input_string`).
    pub input_string: String,
    /// The prompt's token ids.
    pub input_tokens: Vec<u32>,
    /// Each prompt token decoded on its own.
    pub input_token_strs: Vec<String>,
    /// Every active feature as (layer, position, feature), in that order of sorting.
    pub active_features: Vec<[i64; 3]>,
    /// Every active feature's activation.
    pub activation_values: Vec<f32>,
    /// Indices into `active_features` of the feature nodes, ascending.
    pub selected_features: Vec<i64>,
    /// The logit nodes' token ids.
    pub logit_tokens: Vec<u32>,
    /// The logit nodes' tokens decoded.
    pub logit_token_strs: Vec<String>,
    /// The logit nodes' probabilities.
    pub logit_probabilities: Vec<f32>,
    /// Direct effects [n_nodes × n_nodes] row-major: row = target, column = source.
    pub adjacency: Vec<f32>,
    /// The model's layers.
    pub n_layers: usize,
    /// The model's vocabulary size.
    pub vocab_size: usize,
}

impl Graph {
    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.selected_features.len()
            + (self.n_layers + 1) * self.input_tokens.len()
            + self.logit_tokens.len()
    }

    /// Number of positions.
    pub fn n_pos(&self) -> usize {
        self.input_tokens.len()
    }

    /// The edge weight from `source` to `target` (node indices).
    pub fn edge(&self, target: usize, source: usize) -> f32 {
        self.adjacency[target * self.n_nodes() + source]
    }

    /// The node index of error node (layer, position).
    pub fn error_node(&self, layer: usize, pos: usize) -> usize {
        self.selected_features.len() + layer * self.n_pos() + pos
    }

    /// The node index of the token node at `pos`.
    pub fn token_node(&self, pos: usize) -> usize {
        self.selected_features.len() + self.n_layers * self.n_pos() + pos
    }

    /// The node index of logit node `i`.
    pub fn logit_node(&self, i: usize) -> usize {
        self.n_nodes() - self.logit_tokens.len() + i
    }
}
