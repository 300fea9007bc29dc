//! Reading a graph: what each node is, and the signed total effect of every node on one target
//! (the sum over all paths of the products of their edges). The adjacency holds direct effects
//! only; a feature's total effect on a logit is what zeroing that feature changes in the
//! frozen replacement model, to first order, when every later feature responds linearly.

use crate::error::{Error, Result};
use crate::graph::Graph;

/// What a node of a [`Graph`] stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeKind {
    /// An active transcoder feature.
    Feature {
        /// Its layer.
        layer: usize,
        /// Its position.
        pos: usize,
        /// Its index in the layer's transcoder.
        feature: usize,
        /// Its activation.
        activation: f32,
    },
    /// The reconstruction error of layer `layer`'s MLP at `pos`.
    Error {
        /// Its layer.
        layer: usize,
        /// Its position.
        pos: usize,
    },
    /// The input token at `pos` (its embedding).
    Token {
        /// Its position.
        pos: usize,
    },
    /// Logit node `index` (the `index`-th most likely token).
    Logit {
        /// Its rank among the logit nodes.
        index: usize,
        /// The token id.
        token: u32,
        /// Its probability.
        probability: f32,
    },
}

impl Graph {
    /// What node `i` stands for, or an error when the graph has no such node.
    pub fn node(&self, i: usize) -> Result<NodeKind> {
        let n = self.n_nodes();
        if i >= n {
            return Err(Error::Invalid(format!(
                "node {i} does not exist: this graph has {n} nodes"
            )));
        }
        let (nf, s) = (self.selected_features.len(), self.n_pos());
        Ok(if i < nf {
            let a = self.selected_features[i] as usize;
            let [layer, pos, feature] = self.active_features[a];
            NodeKind::Feature {
                layer: layer as usize,
                pos: pos as usize,
                feature: feature as usize,
                activation: self.activation_values[a],
            }
        } else if i < nf + self.n_layers * s {
            let j = i - nf;
            NodeKind::Error {
                layer: j / s,
                pos: j % s,
            }
        } else if i < nf + (self.n_layers + 1) * s {
            NodeKind::Token {
                pos: i - nf - self.n_layers * s,
            }
        } else {
            let index = i - (n - self.logit_tokens.len());
            NodeKind::Logit {
                index,
                token: self.logit_tokens[index],
                probability: self.logit_probabilities[index],
            }
        })
    }

    /// A short human label for node `i`: `L3/F120@5 " green"`, `err L3@5`, `tok@5 " green"`,
    /// `logit " vertes" (p=0.34)`.
    pub fn label(&self, i: usize) -> Result<String> {
        let tok = |p: usize| {
            self.input_token_strs
                .get(p)
                .map_or(String::new(), |t| format!(" {t:?}"))
        };
        Ok(match self.node(i)? {
            NodeKind::Feature {
                layer,
                pos,
                feature,
                ..
            } => format!("L{layer}/F{feature}@{pos}{}", tok(pos)),
            NodeKind::Error { layer, pos } => format!("err L{layer}@{pos}{}", tok(pos)),
            NodeKind::Token { pos } => format!("tok@{pos}{}", tok(pos)),
            NodeKind::Logit {
                index, probability, ..
            } => format!(
                "logit {:?} (p={probability:.2})",
                self.logit_token_strs.get(index).map_or("", String::as_str)
            ),
        })
    }

    /// The node index of the feature (layer, position, feature), when it is a node.
    pub fn feature_node(&self, layer: usize, pos: usize, feature: usize) -> Option<usize> {
        let want = [layer as i64, pos as i64, feature as i64];
        self.selected_features
            .iter()
            .position(|&a| self.active_features[a as usize] == want)
    }

    /// The signed total effect of every node on node `target`: entry j is the sum, over every
    /// path from j to `target`, of the product of its edges, each intermediate feature's
    /// outgoing edges divided by its activation (edges are from a feature at its activation,
    /// into its pre-activation). `target`'s own entry is 1. For a logit node, entry j is how
    /// much its demeaned logit falls when node j is removed (a feature zeroed, an error or
    /// token vector subtracted), with later features responding linearly.
    pub fn total_effects(&self, target: usize) -> Result<Vec<f32>> {
        let n = self.n_nodes();
        if target >= n {
            return Err(Error::Invalid(format!(
                "node {target} does not exist: this graph has {n} nodes"
            )));
        }
        // A feature's row is in units of its pre-activation, its column is its vector at its
        // activation: a path through feature i carries A[·, i] / activation_i per unit of it.
        let nf = self.selected_features.len();
        let per_unit: Vec<f64> = (0..n)
            .map(|i| {
                if i < nf && i != target {
                    let a = self.activation_values[self.selected_features[i] as usize];
                    1.0 / f64::from(a)
                } else {
                    1.0
                }
            })
            .collect();
        // Every edge goes from an earlier layer (or the embedding) to a later one, so each
        // product below is one layer longer: the sum ends after at most n_layers + 2 terms.
        let mut total = vec![0f64; n];
        let mut frontier = vec![0f64; n];
        frontier[target] = 1.0;
        for _ in 0..self.n_layers + 3 {
            total.iter_mut().zip(&frontier).for_each(|(t, f)| *t += f);
            let mut next = vec![0f64; n];
            for (i, &f) in frontier.iter().enumerate() {
                let w = f * per_unit[i];
                if w != 0.0 {
                    let row = &self.adjacency[i * n..(i + 1) * n];
                    next.iter_mut()
                        .zip(row)
                        .for_each(|(x, &a)| *x += w * f64::from(a));
                }
            }
            if next.iter().all(|&x| x == 0.0) {
                return Ok(total.into_iter().map(|x| x as f32).collect());
            }
            frontier = next;
        }
        Err(Error::Invalid(
            "this graph has a path longer than its layers allow: its adjacency is not a \
             circuit-tracer graph (edges must go from earlier layers to later ones)"
                .into(),
        ))
    }
}
