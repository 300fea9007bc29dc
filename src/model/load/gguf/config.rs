//! A GGUF file's metadata onto the one [`Config`], every number read the way llama.cpp reads
//! it, or refused by name where the metadata cannot tell us.

use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device};

use crate::error::Result;
use crate::model::arch::{Arch, W};
use crate::model::config::{Config, LayerConfig, RopeScaling};
use crate::model::load::gguf::file::Gguf;
use crate::tokenizer::GgufVocab;

impl Gguf {
    /// The model's [`Config`], every number from the metadata as llama.cpp reads it.
    pub(super) fn config(&self, arch: Arch, vocab: &GgufVocab) -> Result<Config> {
        let p = arch.name();
        let k = |s: &str| format!("{p}.{s}");
        let n_layers = self.usize(&k("block_count"))?;
        let d_model = self.usize(&k("embedding_length"))?;
        let n_heads = self.usize(&k("attention.head_count"))?;
        let n_kv_heads = self
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(n_heads);
        let d_head = self
            .opt_usize(&k("attention.key_length"))?
            .unwrap_or(d_model / n_heads.max(1));
        if let Some(v) = self.opt_usize(&k("attention.value_length"))? {
            if v != d_head {
                return Err(self.err(format!(
                    "`{}` = {v} differs from the key length {d_head}, which is not supported",
                    k("attention.value_length")
                )));
            }
        }
        if let Some(r) = self.opt_usize(&k("rope.dimension_count"))? {
            if r != d_head {
                return Err(self.err(format!(
                    "`{}` = {r}: RoPE on {r} of {d_head} head dimensions is not supported",
                    k("rope.dimension_count")
                )));
            }
        }
        if let Some(e) = self.opt_usize(&k("expert_count"))?.filter(|&e| e > 0) {
            return Err(self.err(format!(
                "`{}` = {e}: mixture-of-experts models are not supported",
                k("expert_count")
            )));
        }
        if self.opt_bool(&k("attention.causal")) == Some(false) {
            return Err(self.err(format!(
                "`{}` = false: non-causal models are not supported",
                k("attention.causal")
            )));
        }
        let theta = self.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let scaling = self.rope_scaling(arch, &k)?;
        let (window, swa) = self.sliding(arch, n_layers, &k)?;
        let local = arch.local_rope_theta();
        let swa_theta = self
            .opt_f64(&k("rope.freq_base_swa"))?
            .unwrap_or(local.unwrap_or(theta));
        let layers = swa
            .iter()
            .map(|&s| LayerConfig {
                sliding_window: if s { window } else { None },
                rope_theta: if s { swa_theta } else { theta },
                rope_scaling: if s && local.is_some() {
                    None
                } else {
                    scaling.clone()
                },
            })
            .collect();
        let (attn_cap, final_cap) = arch.default_softcaps();
        let (attn_softcap, final_softcap) = match arch {
            Arch::Gemma2 => (
                self.opt_f64(&k("attn_logit_softcapping"))?.or(attn_cap),
                self.opt_f64(&k("final_logit_softcapping"))?.or(final_cap),
            ),
            // llama.cpp caps Gemma 3's final logits only.
            Arch::Gemma3 => (
                None,
                self.opt_f64(&k("final_logit_softcapping"))?.or(final_cap),
            ),
            _ => (None, None),
        };
        let (q_bias, o_bias) = (Arch::gguf_name(W::QBias, 0), Arch::gguf_name(W::OBias, 0));
        let d_vocab = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .unwrap_or(vocab.tokens.len());
        let cfg = Config {
            architecture: p.into(),
            n_layers,
            n_heads,
            n_kv_heads,
            d_model,
            d_head,
            d_mlp: self.usize(&k("feed_forward_length"))?,
            d_vocab,
            rms_norm_eps: self
                .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| {
                    self.err(format!(
                        "GGUF metadata has no `{}`",
                        k("attention.layer_norm_rms_epsilon")
                    ))
                })?,
            attn_scale: self.attn_scale(arch, n_layers, d_model, n_heads, d_head, &k)?,
            attn_softcap,
            final_softcap,
            embed_scale: arch.embed_scale(d_model),
            qk_norm: arch.has_qk_norm(),
            post_norms: arch.has_post_norms(),
            qkv_bias: self.has(&q_bias),
            o_bias: self.has(&o_bias),
            activation: arch.activation(),
            tied_embeddings: !self.has("output.weight"),
            layers,
            max_position: self.usize(&k("context_length"))?,
            bos_token_id: vocab.bos.or(vocab.eos).unwrap_or(0),
            eos_token_id: vocab.eos.unwrap_or(0),
            pad_token_id: vocab.pad.or(vocab.eos).unwrap_or(0),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// RoPE scaling: `rope.scaling.type` / `.factor`, or llama.cpp's `rope_freqs` tensor (its
    /// converter's form of Llama 3 scaling).
    pub(super) fn rope_scaling(
        &self,
        arch: Arch,
        k: &dyn Fn(&str) -> String,
    ) -> Result<Option<RopeScaling>> {
        let kind = self.opt_str(&k("rope.scaling.type")).unwrap_or("linear");
        let factor = match self.opt_f64(&k("rope.scaling.factor"))? {
            Some(f) => Some(f),
            None => self.opt_f64(&k("rope.scale_linear"))?,
        };
        let mut scaling = match kind {
            "none" => None,
            "linear" => factor
                .filter(|&f| f != 0.0 && f != 1.0)
                .map(|factor| RopeScaling::Linear { factor }),
            other => {
                return Err(self.err(format!(
                    "`{}` = {other} is not supported (supported: none, linear, and Llama 3's rope_freqs)",
                    k("rope.scaling.type")
                )))
            }
        };
        if self.has("rope_freqs.weight") {
            if arch != Arch::Llama || scaling.is_some() {
                return Err(self.err(format!(
                    "a `rope_freqs` tensor on a {} model{} is not supported",
                    arch.name(),
                    if scaling.is_some() {
                        " with linear scaling"
                    } else {
                        ""
                    }
                )));
            }
            let f = self.read("rope_freqs.weight", &Device::Cpu, DType::F32)?;
            let f: Vec<f64> = f
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            scaling = Some(RopeScaling::Factors(f));
        }
        Ok(scaling)
    }

    /// The sliding window and which layers use it, as llama.cpp decides per family.
    pub(super) fn sliding(
        &self,
        arch: Arch,
        n_layers: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(Option<usize>, Vec<bool>)> {
        let key = k("attention.sliding_window");
        let window = self.opt_usize(&key)?.filter(|&w| w > 0);
        let default_pattern = match (arch, arch.sliding_pattern()) {
            // Gemma 2 always slides (window 4096 when the file does not say).
            (Arch::Gemma2, Some(n)) => {
                return Ok((Some(window.unwrap_or(4096)), self.pattern(n_layers, n, k)?))
            }
            (_, Some(n)) => n,
            (_, None) => {
                if let Some(w) = window {
                    return Err(self.err(format!(
                        "`{key}` = {w} on a {} model: llama.cpp ignores a sliding window in this family, so what the file means is unclear; refusing rather than guessing",
                        arch.name()
                    )));
                }
                return Ok((None, vec![false; n_layers]));
            }
        };
        match window {
            Some(w) => Ok((Some(w), self.pattern(n_layers, default_pattern, k)?)),
            None => Ok((None, vec![false; n_layers])),
        }
    }

    /// `attention.sliding_window_pattern`: per-layer booleans, or n (every n-th layer global).
    pub(super) fn pattern(
        &self,
        n_layers: usize,
        default: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<Vec<bool>> {
        let key = k("attention.sliding_window_pattern");
        if let Some(Value::Array(a)) = self.get(&key) {
            let v: Vec<bool> = a.iter().filter_map(|x| x.to_bool().ok()).collect();
            if v.len() != n_layers {
                return Err(self.err(format!(
                    "`{key}` has {} booleans for {n_layers} layers",
                    v.len()
                )));
            }
            return Ok(v);
        }
        let n = self.opt_usize(&key)?.unwrap_or(default);
        Ok(Arch::sliding_layers(n_layers, n))
    }

    /// 1/√(query scale). Gemma's query_pre_attn_scalar is not in the metadata: llama.cpp knows it
    /// for the sizes it recognises by layer count (27B: d_model / n_heads; the others: the head
    /// size), and where both rules agree there is nothing to know; anything else is refused.
    pub(super) fn attn_scale(
        &self,
        arch: Arch,
        n_layers: usize,
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        k: &dyn Fn(&str) -> String,
    ) -> Result<f64> {
        let explicit = self.opt_f64(&k("attention.scale"))?;
        if !arch.is_gemma() {
            return Ok(match (arch, explicit) {
                (Arch::Llama, Some(s)) if s != 0.0 => s,
                (_, Some(s)) if s != 0.0 => {
                    return Err(self.err(format!(
                        "`{}` = {s} on a {} model is not supported",
                        k("attention.scale"),
                        arch.name()
                    )))
                }
                _ => arch.attn_scale(None, d_head),
            });
        }
        let per_head = d_model / n_heads.max(1);
        let known: &[(usize, bool)] = match arch {
            // (layers, is 27B)
            Arch::Gemma2 => &[(26, false), (42, false), (46, true)],
            _ => &[
                (18, false),
                (26, false),
                (32, false),
                (34, false),
                (48, false),
                (62, true),
            ],
        };
        let scalar = match known.iter().find(|(n, _)| *n == n_layers) {
            Some((_, true)) => per_head,
            Some((_, false)) => d_head,
            None if per_head == d_head => d_head,
            None => {
                return Err(self.err(format!(
                    "this {} file has {n_layers} layers, a size llama.cpp does not know, and its query scaling cannot be told from the metadata (head size {d_head}, d_model / n_heads = {per_head}); load the Hugging Face checkpoint instead, whose config.json has query_pre_attn_scalar",
                    arch.name()
                )))
            }
        };
        Ok(arch.attn_scale(Some(scalar as f64), d_head))
    }
}
