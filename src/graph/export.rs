//! A graph on disk in circuit-tracer's two forms: the frontend JSON that its
//! `create_graph_files` writes (pruned; node ids `L_F_P`, error `0_L_P`, embedding `E_T_P`,
//! logit `{n_layers+1}_T_P`; `links` with `weight`; `metadata` with the prompt tokens), and the
//! unpruned `Graph` fields under its names in a safetensors file.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::graph::prune::{prune, PruneResult};
use crate::graph::Graph;

/// circuit-tracer's `Metadata`.
#[derive(Debug, Clone, Serialize)]
struct Metadata {
    slug: String,
    scan: String,
    transcoder_list: Vec<String>,
    prompt_tokens: Vec<String>,
    prompt: String,
    node_threshold: Option<f32>,
    schema_version: Option<i64>,
}

/// circuit-tracer's `QParams`.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)]
struct QParams {
    pinnedIds: Vec<String>,
    supernodes: Vec<Vec<String>>,
    linkType: String,
    clickedId: String,
    sg_pos: String,
}

/// circuit-tracer's `Node`, its fields in its order.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)]
struct Node {
    node_id: String,
    feature: i64,
    layer: String,
    ctx_idx: usize,
    feature_type: String,
    token_prob: f32,
    is_target_logit: bool,
    run_idx: i64,
    reverse_ctx_idx: i64,
    jsNodeId: String,
    clerp: String,
    influence: Option<f32>,
    activation: Option<f32>,
}

/// One link.
#[derive(Debug, Clone, Serialize)]
struct Link {
    source: String,
    target: String,
    weight: f32,
}

/// circuit-tracer's `Model`: the whole JSON document.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)]
struct Document {
    metadata: Metadata,
    qParams: QParams,
    nodes: Vec<Node>,
    links: Vec<Link>,
}

fn cantor(x: i64, y: i64) -> i64 {
    (x + y) * (x + y + 1) / 2 + y
}

impl Node {
    fn new(node_id: String, feature: i64, layer: String, ctx_idx: usize, kind: &str) -> Node {
        Node {
            jsNodeId: node_id.clone(),
            node_id,
            feature,
            layer,
            ctx_idx,
            feature_type: kind.into(),
            token_prob: 0.0,
            is_target_logit: false,
            run_idx: 0,
            reverse_ctx_idx: 0,
            clerp: String::new(),
            influence: None,
            activation: None,
        }
    }
}

impl Graph {
    /// The pruned graph as circuit-tracer's `create_graph_files` writes it (`{slug}.json`),
    /// pruned at `node_threshold` and `edge_threshold` (its defaults 0.8 and 0.98); `scan`
    /// names the transcoders.
    pub fn to_json(
        &self,
        slug: &str,
        scan: &str,
        node_threshold: f32,
        edge_threshold: f32,
    ) -> Result<String> {
        let pr = prune(self, node_threshold, edge_threshold)?;
        self.pruned_to_json(slug, scan, &pr, node_threshold)
    }

    /// [`Graph::to_json`] with the pruning already made (`pr`, from [`prune`] at
    /// `node_threshold`, which the JSON records).
    pub fn pruned_to_json(
        &self,
        slug: &str,
        scan: &str,
        pr: &PruneResult,
        node_threshold: f32,
    ) -> Result<String> {
        let n = self.n_nodes();
        let n_feat = self.selected_features.len();
        let s = self.n_pos();
        let l = self.n_layers;
        let error_end = n_feat + s * l;
        let token_end = error_end + s;
        let mut nodes: Vec<(usize, Node)> = Vec::new();
        for i in (0..n).filter(|&i| pr.node_mask[i]) {
            let infl = Some(pr.cumulative_scores[i]);
            let node = if i < n_feat {
                let a = self.selected_features[i] as usize;
                let [layer, pos, f] = self.active_features[a];
                let mut node = Node::new(
                    format!("{layer}_{f}_{pos}"),
                    cantor(layer, f),
                    layer.to_string(),
                    pos as usize,
                    "cross layer transcoder",
                );
                node.jsNodeId = format!("{layer}_{f}-0");
                node.influence = infl;
                node.activation = Some(self.activation_values[a]);
                node
            } else if i < error_end {
                let (layer, pos) = ((i - n_feat) / s, (i - n_feat) % s);
                let mut node = Node::new(
                    format!("0_{layer}_{pos}"),
                    -1,
                    layer.to_string(),
                    pos,
                    "mlp reconstruction error",
                );
                node.jsNodeId = format!("{layer}_{pos}-0");
                node.influence = infl;
                node
            } else if i < token_end {
                let pos = i - error_end;
                let tok = self.input_tokens[pos];
                let mut node = Node::new(
                    format!("E_{tok}_{pos}"),
                    pos as i64,
                    "E".into(),
                    pos,
                    "embedding",
                );
                node.jsNodeId = format!("E_{tok}-{pos}");
                node.influence = infl;
                node
            } else {
                let k = i - token_end;
                let tok = self.logit_tokens[k];
                let layer = (l + 1).to_string();
                let p = self.logit_probabilities[k];
                let mut node = Node::new(
                    format!("{layer}_{tok}_{}", s - 1),
                    tok as i64,
                    layer,
                    s - 1,
                    "logit",
                );
                node.jsNodeId = format!("L_{tok}-{}", s - 1);
                node.token_prob = p;
                node.is_target_logit = k == 0;
                let token = self.logit_token_strs.get(k).cloned().unwrap_or_default();
                node.clerp = format!("Output \"{token}\" (p={p:.3})");
                node
            };
            nodes.push((i, node));
        }
        let index: HashMap<usize, usize> = nodes
            .iter()
            .enumerate()
            .map(|(j, (i, _))| (*i, j))
            .collect();
        let mut links = Vec::new();
        for dst in 0..n {
            for src in 0..n {
                if !pr.edge_mask[dst * n + src] {
                    continue;
                }
                if let (Some(&a), Some(&b)) = (index.get(&src), index.get(&dst)) {
                    links.push(Link {
                        source: nodes[a].1.node_id.clone(),
                        target: nodes[b].1.node_id.clone(),
                        weight: self.adjacency[dst * n + src],
                    });
                }
            }
        }
        let connected: HashSet<&str> = links
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        let used: Vec<Node> = nodes
            .iter()
            .filter(|(_, nd)| {
                connected.contains(nd.node_id.as_str())
                    || nd.feature_type == "embedding"
                    || nd.feature_type == "logit"
            })
            .map(|(_, nd)| nd.clone())
            .collect();
        let doc = Document {
            metadata: Metadata {
                slug: slug.into(),
                scan: scan.into(),
                transcoder_list: Vec::new(),
                prompt_tokens: self.input_token_strs.clone(),
                prompt: self.input_string.clone(),
                node_threshold: Some(node_threshold),
                schema_version: Some(1),
            },
            qParams: QParams {
                pinnedIds: Vec::new(),
                supernodes: Vec::new(),
                linkType: "both".into(),
                clickedId: String::new(),
                sg_pos: String::new(),
            },
            nodes: used,
            links,
        };
        serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Invalid(format!("could not write the graph as JSON: {e}")))
    }

    /// Writes [`Graph::to_json`] to `path` (the CLI's `graph.json`).
    pub fn write_json(
        &self,
        path: impl AsRef<Path>,
        slug: &str,
        scan: &str,
        node_threshold: f32,
        edge_threshold: f32,
    ) -> Result<()> {
        let pr = prune(self, node_threshold, edge_threshold)?;
        self.write_pruned_json(path, slug, scan, &pr, node_threshold)
    }

    /// Writes [`Graph::pruned_to_json`] to `path`.
    pub fn write_pruned_json(
        &self,
        path: impl AsRef<Path>,
        slug: &str,
        scan: &str,
        pr: &PruneResult,
        node_threshold: f32,
    ) -> Result<()> {
        let path = path.as_ref();
        let text = self.pruned_to_json(slug, scan, pr, node_threshold)?;
        std::fs::write(path, text).map_err(|e| {
            Error::Invalid(format!(
                "could not write the graph JSON to {}: {e}",
                path.display()
            ))
        })
    }

    /// The unpruned graph under circuit-tracer's `Graph` field names: `adjacency_matrix`
    /// [n, n] (f32, rows targets), `active_features` [n_active, 3], `selected_features`,
    /// `activation_values`, `logit_tokens`, `logit_probabilities`, `input_tokens` (ids as i64).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let dev = Device::Cpu;
        let n = self.n_nodes();
        let ids = |v: &[u32]| -> Result<Tensor> {
            let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Ok(Tensor::from_vec(v.clone(), v.len(), &dev)?)
        };
        let flat: Vec<i64> = self.active_features.iter().flatten().copied().collect();
        let mut m: HashMap<String, Tensor> = HashMap::new();
        m.insert(
            "adjacency_matrix".into(),
            Tensor::from_vec(self.adjacency.clone(), (n, n), &dev)?,
        );
        m.insert(
            "active_features".into(),
            Tensor::from_vec(flat, (self.active_features.len(), 3), &dev)?,
        );
        m.insert(
            "selected_features".into(),
            Tensor::from_vec(
                self.selected_features.clone(),
                self.selected_features.len(),
                &dev,
            )?,
        );
        m.insert(
            "activation_values".into(),
            Tensor::from_vec(
                self.activation_values.clone(),
                self.activation_values.len(),
                &dev,
            )?,
        );
        m.insert("logit_tokens".into(), ids(&self.logit_tokens)?);
        m.insert(
            "logit_probabilities".into(),
            Tensor::from_vec(
                self.logit_probabilities.clone(),
                self.logit_probabilities.len(),
                &dev,
            )?,
        );
        m.insert("input_tokens".into(), ids(&self.input_tokens)?);
        candle_core::safetensors::save(&m, path).map_err(|e| {
            Error::Invalid(format!(
                "could not write the graph to {}: {e}",
                path.display()
            ))
        })
    }
}
