//! New models from nothing: a Llama-architecture model of a size preset ("tiny", "small") or of
//! explicit dimensions, written as a Hugging Face model folder (`config.json`,
//! `generation_config.json`, `model.safetensors`) that transformers loads as a
//! `LlamaForCausalLM`, initialised as transformers initialises a new one
//! (`LlamaPreTrainedModel._init_weights`): every linear and embedding weight drawn from
//! N(0, `initializer_range`²), the padding token's embedding row zero, RMSNorm weights one.
//! The tokenizer files come from `doctune-tokenizer`'s trainer.

use crate::ModelError;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The dimensions of a new model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScratchDims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    pub intermediate: usize,
    /// The longest sequence the model is made for (`max_position_embeddings`).
    pub context: usize,
}

/// A size preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScratchSize {
    /// ≈ 6M parameters with a 4,096-token vocabulary: trains in minutes on two CPU cores.
    Tiny,
    /// ≈ 36M parameters with an 8,192-token vocabulary.
    Small,
}

impl ScratchSize {
    pub fn dims(self) -> ScratchDims {
        match self {
            Self::Tiny => ScratchDims {
                hidden: 256,
                layers: 6,
                heads: 4,
                kv_heads: 4,
                intermediate: 768,
                context: 512,
            },
            Self::Small => ScratchDims {
                hidden: 512,
                layers: 10,
                heads: 8,
                kv_heads: 4,
                intermediate: 1536,
                context: 1024,
            },
        }
    }

    /// The vocabulary size the preset is meant for.
    pub fn vocab_size(self) -> usize {
        match self {
            Self::Tiny => 4096,
            Self::Small => 8192,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
        }
    }
}

/// Everything `config.json` says of a new model.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLlama {
    pub dims: ScratchDims,
    pub vocab_size: usize,
    pub bos_token_id: u32,
    /// End-of-sequence ids (the first is `config.json`'s; all stop generation).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub initializer_range: f64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Share the embedding with the output layer (`lm_head`), as small models usually do.
    pub tie_word_embeddings: bool,
}

impl NewLlama {
    /// Checks the dimensions before anything is allocated.
    pub fn validate(&self) -> Result<(), ModelError> {
        let d = &self.dims;
        let bad = |m: String| ModelError::Config {
            path: "config.json".into(),
            message: m,
        };
        for (name, v, max) in [
            ("hidden", d.hidden, 16_384),
            ("layers", d.layers, 256),
            ("heads", d.heads, 256),
            ("kv heads", d.kv_heads, 256),
            ("intermediate", d.intermediate, 65_536),
            ("context", d.context, 131_072),
            ("vocabulary size", self.vocab_size, 1 << 20),
        ] {
            if v == 0 || v > max {
                return Err(bad(format!("{name} must be between 1 and {max}, not {v}")));
            }
        }
        if !d.hidden.is_multiple_of(d.heads) || !(d.hidden / d.heads).is_multiple_of(2) {
            return Err(bad(format!(
                "hidden ({}) must split into {} heads of an even size",
                d.hidden, d.heads
            )));
        }
        if !d.heads.is_multiple_of(d.kv_heads) {
            return Err(bad(format!(
                "heads ({}) must be a multiple of the key/value heads ({})",
                d.heads, d.kv_heads
            )));
        }
        let ids = std::iter::once(self.bos_token_id)
            .chain(self.eos_token_ids.iter().copied())
            .chain(self.pad_token_id);
        for id in ids {
            if id as usize >= self.vocab_size {
                return Err(bad(format!(
                    "special token id {id} is outside the vocabulary ({})",
                    self.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// `config.json`, as transformers writes it for a `LlamaConfig`.
    pub fn config_json(&self) -> serde_json::Value {
        let d = &self.dims;
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": d.hidden,
            "intermediate_size": d.intermediate,
            "num_hidden_layers": d.layers,
            "num_attention_heads": d.heads,
            "num_key_value_heads": d.kv_heads,
            "head_dim": d.hidden / d.heads,
            "max_position_embeddings": d.context,
            "vocab_size": self.vocab_size,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids.first(),
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
            "use_cache": true,
        })
    }

    /// The tensors' names and shapes, in the order they are initialised.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = &self.dims;
        let (h, i) = (d.hidden, d.intermediate);
        let kv = d.kv_heads * (h / d.heads);
        let mut s = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..d.layers {
            let p = format!("model.layers.{l}");
            s.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
            s.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            s.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            s.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
            s.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            s.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            s.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
            s.push((format!("{p}.input_layernorm.weight"), vec![h]));
            s.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        }
        s.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            s.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        s
    }

    /// The number of parameters.
    pub fn parameter_count(&self) -> u64 {
        self.shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// The initial weights, from `seed` (the same seed gives the same weights).
    pub fn init(&self, seed: u64) -> Result<Vec<(String, Tensor)>, ModelError> {
        self.validate()?;
        let std = self.initializer_range as f32;
        self.shapes()
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n: usize = shape.iter().product();
                let v = if shape.len() == 1 {
                    vec![1.0; n]
                } else {
                    let mut v = crate::rng::normal_vec(n, std, seed.wrapping_add(k as u64));
                    if name == "model.embed_tokens.weight" {
                        if let Some(pad) = self.pad_token_id {
                            let row = pad as usize * shape[1];
                            v[row..row + shape[1]].fill(0.0);
                        }
                    }
                    v
                };
                Ok((name, Tensor::from_vec(v, shape, &Device::Cpu)?))
            })
            .collect::<Result<_, candle_core::Error>>()
            .map_err(|e| ModelError::Weights {
                path: "model.safetensors".into(),
                message: e.to_string(),
            })
    }

    /// Writes `config.json`, `generation_config.json` and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path, seed: u64) -> Result<(), ModelError> {
        let tensors = self.init(seed)?;
        let io = |path: &Path, e: std::io::Error| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        };
        let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, json(&self.config_json())).map_err(|e| io(&cfg, e))?;
        let gen = dir.join("generation_config.json");
        let gen_json = serde_json::json!({
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        });
        std::fs::write(&gen, json(&gen_json)).map_err(|e| io(&gen, e))?;
        crate::save_safetensors(&dir.join("model.safetensors"), &tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(size: ScratchSize) -> NewLlama {
        NewLlama {
            dims: size.dims(),
            vocab_size: size.vocab_size(),
            bos_token_id: 1,
            eos_token_ids: vec![2, 4],
            pad_token_id: Some(0),
            initializer_range: 0.02,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn presets_have_the_sizes_they_promise() {
        let tiny = new(ScratchSize::Tiny).parameter_count();
        let small = new(ScratchSize::Small).parameter_count();
        assert!((5_000_000..10_000_000).contains(&tiny), "{tiny}");
        assert!((30_000_000..50_000_000).contains(&small), "{small}");
    }

    #[test]
    fn written_folders_load_and_start_as_transformers_starts() {
        let d = tempfile::tempdir().unwrap();
        let mut m = new(ScratchSize::Tiny);
        m.dims.layers = 1;
        m.vocab_size = 64;
        m.write(d.path(), 3).unwrap();
        let cfg = crate::ModelConfig::load(d.path()).unwrap();
        assert_eq!(cfg.num_layers, 1);
        assert_eq!(cfg.vocab_size, 64);
        assert!(cfg.tie_word_embeddings);
        let w = candle_core::safetensors::load(d.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
        let emb = w["model.embed_tokens.weight"].to_vec2::<f32>().unwrap();
        assert!(emb[0].iter().all(|&x| x == 0.0), "the padding row is zero");
        let rest: Vec<f32> = emb[1..].concat();
        let mean = rest.iter().sum::<f32>() / rest.len() as f32;
        let sd = (rest.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / rest.len() as f32).sqrt();
        assert!(mean.abs() < 2e-3 && (sd - 0.02).abs() < 1e-3, "{mean} {sd}");
        let norm = w["model.norm.weight"].to_vec1::<f32>().unwrap();
        assert!(norm.iter().all(|&x| x == 1.0));
        assert!(!w.contains_key("lm_head.weight"));
        // The same seed, the same weights; another seed, others.
        let again = new_weights(&m, 3);
        let other = new_weights(&m, 4);
        assert_eq!(
            again,
            w["model.layers.0.mlp.up_proj.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        assert_ne!(again, other);
    }

    fn new_weights(m: &NewLlama, seed: u64) -> Vec<f32> {
        let t = m.init(seed).unwrap();
        let (_, up) = t
            .iter()
            .find(|(n, _)| n.ends_with("0.mlp.up_proj.weight"))
            .unwrap();
        up.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn impossible_dimensions_are_refused_before_allocating() {
        let mut m = new(ScratchSize::Tiny);
        m.dims.heads = 3;
        assert!(m.validate().unwrap_err().to_string().contains("heads"));
        let mut m = new(ScratchSize::Tiny);
        m.dims.hidden = 1 << 40;
        assert!(m.validate().is_err());
        let mut m = new(ScratchSize::Tiny);
        m.pad_token_id = Some(9999);
        assert!(m.validate().unwrap_err().to_string().contains("9999"));
    }
}
