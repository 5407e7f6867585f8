//! `config.json` of a supported family, read into one [`ModelConfig`] with the family's defaults
//! applied as transformers applies them.
//!
//! Both generations of the rope keys are read: transformers 4.x writes a top-level `rope_theta`
//! and an optional `rope_scaling` object (keyed `type` or `rope_type`); transformers 5 writes
//! everything, `rope_theta` included, into `rope_parameters`. Reading only one of them makes a
//! model silently use θ = 10000 (candle-transformers' Llama does), which is why this is our code.

use crate::ModelError;
use doctune_core::families::{supported_list, Family};
use serde_json::Value;
use std::path::Path;

/// How rotary embeddings are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Phi-3.5's LongRoPE: per-frequency factors, long ones past the original context.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        attention_factor: f64,
    },
}

/// The activation of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact (erf) form.
    Gelu,
}

/// Everything the model code needs from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Fraction of `head_dim` that is rotated (Phi-3 family: may be < 1).
    pub partial_rotary_factor: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q, k, v (Qwen2 always; Llama/Qwen3/Gemma2 with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama/Qwen3/Gemma2 with `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    pub activation: Activation,
    /// The sliding window of each layer (`None`: full causal attention).
    pub layer_windows: Vec<Option<usize>>,
    /// Qwen3: RMSNorm over each head of q and k.
    pub qk_norm: bool,
    /// Gemma 2: embeddings × √hidden, norms as `1 + w`, pre/post norms around the MLP too.
    pub gemma_norms: bool,
    /// Attention scores are multiplied by this (1/√head_dim, or Gemma's
    /// 1/√query_pre_attn_scalar).
    pub attn_scale: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    /// Phi-3: `qkv_proj` and `gate_up_proj` are fused.
    pub fused_projections: bool,
}

fn err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn usize_of(cfg: &Value, key: &str, path: &Path) -> Result<usize, ModelError> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| {
            err(
                path,
                format!("`{key}` is missing or not a positive integer"),
            )
        })
}

fn opt_usize(cfg: &Value, key: &str) -> Option<usize> {
    cfg.get(key).and_then(Value::as_u64).map(|n| n as usize)
}

fn opt_f64(cfg: &Value, key: &str) -> Option<f64> {
    cfg.get(key).and_then(Value::as_f64)
}

fn opt_bool(cfg: &Value, key: &str) -> Option<bool> {
    cfg.get(key).and_then(Value::as_bool)
}

fn f64_list(v: Option<&Value>) -> Option<Vec<f64>> {
    v?.as_array()?.iter().map(Value::as_f64).collect()
}

/// The largest sizes DocTune accepts, so a hostile config cannot ask for absurd allocations.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_DIM: usize = 2048;
const MAX_POSITIONS: usize = 1 << 24;

impl ModelConfig {
    /// Reads `config.json` (the path is for error messages).
    pub fn from_json(cfg: &Value, path: &Path) -> Result<Self, ModelError> {
        if cfg.get("auto_map").is_some() {
            return Err(err(
                path,
                "has `auto_map`: the model needs its own Python code, which DocTune never runs",
            ));
        }
        let architecture = cfg
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| err(path, "`architectures` is missing"))?
            .to_owned();
        let family =
            Family::from_architecture(&architecture).ok_or_else(|| ModelError::Unsupported {
                architecture: architecture.clone(),
                supported: supported_list(),
            })?;

        let hidden_size = usize_of(cfg, "hidden_size", path)?;
        let num_heads = usize_of(cfg, "num_attention_heads", path)?;
        let num_kv_heads = opt_usize(cfg, "num_key_value_heads").unwrap_or(num_heads);
        let num_layers = usize_of(cfg, "num_hidden_layers", path)?;
        let vocab_size = usize_of(cfg, "vocab_size", path)?;
        let intermediate_size = usize_of(cfg, "intermediate_size", path)?;
        if !(1..=MAX_HEADS).contains(&num_heads) {
            return Err(err(
                path,
                format!(
                    "`num_attention_heads` is {num_heads}; it must be between 1 and {MAX_HEADS}"
                ),
            ));
        }
        let head_dim = opt_usize(cfg, "head_dim")
            .filter(|&d| d > 0)
            .unwrap_or(hidden_size / num_heads);
        if hidden_size > MAX_DIM
            || intermediate_size > MAX_DIM
            || num_layers > MAX_LAYERS
            || vocab_size > MAX_VOCAB
        {
            return Err(err(path, "sizes beyond what DocTune accepts (hidden/intermediate ≤ 2^20, layers ≤ 1024, vocab ≤ 2^22)"));
        }
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(err(
                path,
                format!("num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads ({num_kv_heads})"),
            ));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(err(
                path,
                format!("head_dim {head_dim} must be even and positive"),
            ));
        }

        // Rope: transformers 5's `rope_parameters`, else 4.x's `rope_theta` + `rope_scaling`.
        let rope = cfg
            .get("rope_parameters")
            .filter(|v| v.is_object())
            .or_else(|| cfg.get("rope_scaling").filter(|v| v.is_object()));
        let rope_theta = rope
            .and_then(|r| opt_f64(r, "rope_theta"))
            .or_else(|| opt_f64(cfg, "rope_theta"))
            .unwrap_or(10000.0);
        let partial_rotary_factor = rope
            .and_then(|r| opt_f64(r, "partial_rotary_factor"))
            .or_else(|| opt_f64(cfg, "partial_rotary_factor"))
            .unwrap_or(1.0);
        let max_position_embeddings = opt_usize(cfg, "max_position_embeddings").unwrap_or(4096);
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let need = |key: &str| -> Result<f64, ModelError> {
            rope.and_then(|r| opt_f64(r, key))
                .ok_or_else(|| err(path, format!("rope scaling `{rope_type}` needs `{key}`")))
        };
        let rope_scaling = match rope_type {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            },
            "longrope" | "su" => {
                let r = rope.expect("a rope type implies the object");
                let rot_half = ((head_dim as f64 * partial_rotary_factor) as usize) / 2;
                let short_factor = f64_list(r.get("short_factor"))
                    .ok_or_else(|| err(path, "longrope needs `short_factor`"))?;
                let long_factor = f64_list(r.get("long_factor"))
                    .ok_or_else(|| err(path, "longrope needs `long_factor`"))?;
                if short_factor.len() != rot_half || long_factor.len() != rot_half {
                    return Err(err(path, format!("longrope factors must have {rot_half} entries (half the rotary dimension)")));
                }
                let original = opt_usize(r, "original_max_position_embeddings")
                    .or_else(|| opt_usize(cfg, "original_max_position_embeddings"))
                    .ok_or_else(|| err(path, "longrope needs `original_max_position_embeddings`"))?;
                let factor = opt_f64(r, "factor")
                    .unwrap_or(max_position_embeddings as f64 / original as f64);
                let attention_factor = opt_f64(r, "attention_factor").unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / (original as f64).ln()).sqrt()
                });
                RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: original,
                    attention_factor,
                }
            }
            other => {
                return Err(err(
                    path,
                    format!("rope scaling `{other}` is not supported (supported: default, linear, llama3, longrope)"),
                ))
            }
        };

        let act_name = cfg
            .get("hidden_activation")
            .or_else(|| cfg.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or(if family == Family::Gemma2 {
                "gelu_pytorch_tanh"
            } else {
                "silu"
            });
        let activation = match act_name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return Err(err(
                    path,
                    format!(
                        "activation `{other}` is not supported (silu, gelu, gelu_pytorch_tanh)"
                    ),
                ))
            }
        };

        // Sliding windows per layer, as each family's config class derives them.
        let window = opt_usize(cfg, "sliding_window").filter(|&w| w > 0);
        let window = match family {
            Family::Qwen2 | Family::Qwen3 if opt_bool(cfg, "use_sliding_window") != Some(true) => {
                None
            }
            _ => window,
        };
        let layer_types: Option<Vec<String>> = cfg.get("layer_types").and_then(|v| {
            v.as_array()?
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect()
        });
        let layer_windows = match (&layer_types, window) {
            (_, None) => vec![None; num_layers],
            (Some(types), Some(w)) => {
                if types.len() != num_layers {
                    return Err(err(path, "`layer_types` does not have one entry per layer"));
                }
                types
                    .iter()
                    .map(|t| (t == "sliding_attention").then_some(w))
                    .collect()
            }
            (None, Some(w)) => (0..num_layers)
                .map(|i| match family {
                    // Even layers slide (transformers: `bool((i + 1) % 2)`).
                    Family::Gemma2 => (i % 2 == 0).then_some(w),
                    Family::Qwen2 | Family::Qwen3 => {
                        (i >= opt_usize(cfg, "max_window_layers").unwrap_or(0)).then_some(w)
                    }
                    _ => Some(w),
                })
                .collect(),
        };

        let attention_bias = opt_bool(cfg, "attention_bias").unwrap_or(false);
        let (qkv_bias, o_bias) = match family {
            Family::Qwen2 => (true, false),
            Family::Mistral | Family::Phi3 => (false, false),
            _ => (attention_bias, attention_bias),
        };
        let gemma = family == Family::Gemma2;
        let attn_scale = if gemma {
            opt_f64(cfg, "query_pre_attn_scalar").unwrap_or(head_dim as f64)
        } else {
            head_dim as f64
        }
        .powf(-0.5);
        let tie_default = matches!(family, Family::Gemma2 | Family::Qwen2);

        let config = ModelConfig {
            family,
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f64(cfg, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            partial_rotary_factor,
            max_position_embeddings,
            tie_word_embeddings: opt_bool(cfg, "tie_word_embeddings").unwrap_or(tie_default),
            qkv_bias,
            o_bias,
            mlp_bias: family == Family::Llama && opt_bool(cfg, "mlp_bias").unwrap_or(false),
            activation,
            layer_windows,
            qk_norm: family == Family::Qwen3,
            gemma_norms: gemma,
            attn_scale,
            attn_logit_softcapping: if gemma {
                opt_f64(cfg, "attn_logit_softcapping")
            } else {
                None
            },
            final_logit_softcapping: if gemma {
                opt_f64(cfg, "final_logit_softcapping")
            } else {
                None
            },
            fused_projections: family == Family::Phi3,
        };
        config.check_ranges(path)?;
        Ok(config)
    }

    /// Every dimension, ratio and count in a sane range and consistent, checked before anything
    /// is allocated from them; the error names the field. (A config can pass the weight-shape
    /// checks and still carry a `partial_rotary_factor` of 1e30 or a NaN epsilon.)
    fn check_ranges(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |field: &str, value: String, want: &str| {
            Err(err(
                path,
                format!("`{field}` is {value}; it must be {want}"),
            ))
        };
        for (field, v, max) in [
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("intermediate_size", self.intermediate_size, MAX_DIM),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            if v == 0 || v > max {
                return bad(field, v.to_string(), &format!("between 1 and {max}"));
            }
        }
        if self.num_kv_heads > self.num_heads {
            return bad(
                "num_key_value_heads",
                self.num_kv_heads.to_string(),
                "at most num_attention_heads",
            );
        }
        if !matches!(self.num_heads.checked_mul(self.head_dim), Some(n) if n <= MAX_DIM) {
            return bad(
                "head_dim",
                self.head_dim.to_string(),
                &format!("such that num_attention_heads × head_dim ≤ {MAX_DIM}"),
            );
        }
        let prf = self.partial_rotary_factor;
        if !(prf.is_finite() && prf > 0.0 && prf <= 1.0) {
            return bad("partial_rotary_factor", prf.to_string(), "in (0, 1]");
        }
        if self.rotary_dim() < 2 {
            return bad(
                "partial_rotary_factor",
                prf.to_string(),
                "large enough to rotate at least 2 dimensions of head_dim",
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0 && self.rope_theta <= 1e12) {
            return bad("rope_theta", self.rope_theta.to_string(), "in (1, 1e12]");
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return bad("rms_norm_eps", self.rms_norm_eps.to_string(), "in (0, 1)");
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return bad(
                "query_pre_attn_scalar",
                self.attn_scale.to_string(),
                "positive (the attention scale is its inverse square root)",
            );
        }
        for (field, cap) in [
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
        ] {
            if let Some(c) = cap.filter(|c| !(c.is_finite() && *c > 0.0)) {
                return bad(field, c.to_string(), "positive");
            }
        }
        if let Some(w) = self
            .layer_windows
            .iter()
            .flatten()
            .find(|&&w| w > MAX_POSITIONS)
        {
            return bad(
                "sliding_window",
                w.to_string(),
                &format!("at most {MAX_POSITIONS}"),
            );
        }
        let factor_ok = |f: f64| f.is_finite() && f > 0.0 && f <= 1e6;
        let factors: Vec<(&str, f64)> = match &self.rope_scaling {
            RopeScaling::Default => vec![],
            RopeScaling::Linear { factor } => vec![("rope_scaling.factor", *factor)],
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let o = *original_max_position_embeddings;
                if !(o.is_finite() && o >= 1.0 && o <= MAX_POSITIONS as f64) {
                    return bad(
                        "rope_scaling.original_max_position_embeddings",
                        o.to_string(),
                        &format!("between 1 and {MAX_POSITIONS}"),
                    );
                }
                vec![
                    ("rope_scaling.factor", *factor),
                    ("rope_scaling.low_freq_factor", *low_freq_factor),
                    ("rope_scaling.high_freq_factor", *high_freq_factor),
                ]
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let o = *original_max_position_embeddings;
                if o == 0 || o > MAX_POSITIONS {
                    return bad(
                        "rope_scaling.original_max_position_embeddings",
                        o.to_string(),
                        &format!("between 1 and {MAX_POSITIONS}"),
                    );
                }
                short_factor
                    .iter()
                    .map(|&f| ("rope_scaling.short_factor", f))
                    .chain(long_factor.iter().map(|&f| ("rope_scaling.long_factor", f)))
                    .chain([("rope_scaling.attention_factor", *attention_factor)])
                    .collect()
            }
        };
        if let Some((field, f)) = factors.into_iter().find(|&(_, f)| !factor_ok(f)) {
            return bad(field, f.to_string(), "a positive, finite number up to 1e6");
        }
        if let RopeScaling::Llama3 {
            low_freq_factor,
            high_freq_factor,
            ..
        } = &self.rope_scaling
        {
            if high_freq_factor <= low_freq_factor {
                return bad(
                    "rope_scaling.high_freq_factor",
                    high_freq_factor.to_string(),
                    "greater than low_freq_factor",
                );
            }
        }
        Ok(())
    }

    /// Reads and parses `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let value = doctune_tokenizer::read_json(&path)
            .map_err(|e| err(&path, e.to_string()))?
            .ok_or_else(|| err(&path, "not found: a model folder needs config.json"))?;
        Self::from_json(&value, &path)
    }

    /// Rotated dimensions per head.
    pub fn rotary_dim(&self) -> usize {
        ((self.head_dim as f64 * self.partial_rotary_factor) as usize) & !1
    }

    /// Whether this model's MLP can run as one op on the CPU (`crate::mlp`: separate
    /// `gate_proj`/`up_proj` and SiLU); it does under LoRA, with f32 activations. The layer and
    /// the memory estimate both ask this.
    pub fn fused_mlp(&self) -> bool {
        !self.fused_projections && self.activation == Activation::Silu
    }

    /// Whether this model's self-attention can run as one op on the CPU (`crate::self_attn`:
    /// separate q/k/v projections, no q/k norms); it does under LoRA, with f32 activations,
    /// without a KV cache. The layer and the memory estimate both ask this.
    pub fn fused_attention(&self) -> bool {
        !self.fused_projections && !self.qk_norm
    }

    /// Parameters of the base model (for estimates and reports).
    pub fn parameter_count(&self) -> u64 {
        let (h, i, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let (q, kv) = (
            (self.num_heads * self.head_dim) as u64,
            (self.num_kv_heads * self.head_dim) as u64,
        );
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * i;
        let norms = if self.gemma_norms { 4 * h } else { 2 * h };
        let layer = attn + mlp + norms;
        let embed = v * h * if self.tie_word_embeddings { 1 } else { 2 };
        embed + self.num_layers as u64 * layer + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 128
        })
    }

    fn parse(v: Value) -> Result<ModelConfig, ModelError> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn reads_rope_theta_in_both_layouts() {
        let mut old = base();
        old["rope_theta"] = json!(500000.0);
        old["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = parse(old).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });

        let mut new = base();
        new["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = parse(new).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(parse(base()).unwrap().rope_theta, 10000.0);
    }

    #[test]
    fn unsupported_architecture_lists_the_supported_ones() {
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("GPT2LMHeadModel"), "{e}");
        assert!(
            e.contains("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"),
            "{e}"
        );
    }

    #[test]
    fn absurd_values_are_refused_by_field_before_anything_is_allocated() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "partial_rotary_factor",
                json!(1e30),
                "`partial_rotary_factor` is 1000000000000000000000000000000; it must be in (0, 1]",
            ),
            (
                "partial_rotary_factor",
                json!(-0.5),
                "`partial_rotary_factor`",
            ),
            (
                "partial_rotary_factor",
                json!(0.001),
                "at least 2 dimensions",
            ),
            ("head_dim", json!(1u64 << 40), "`head_dim`"),
            ("num_attention_heads", json!(0), "`num_attention_heads`"),
            (
                "num_attention_heads",
                json!(1u64 << 33),
                "`num_attention_heads`",
            ),
            ("num_key_value_heads", json!(8), "num_key_value_heads"),
            ("rope_theta", json!(-1.0), "`rope_theta`"),
            ("rms_norm_eps", json!(0.0), "`rms_norm_eps`"),
            (
                "max_position_embeddings",
                json!(1u64 << 40),
                "`max_position_embeddings`",
            ),
            ("vocab_size", json!(0), "`vocab_size`"),
            ("num_hidden_layers", json!(0), "`num_hidden_layers`"),
        ];
        for (field, value, want) in cases {
            let mut v = base();
            v[field] = value.clone();
            let e = parse(v).expect_err(field).to_string();
            assert!(e.contains(want), "{field} = {value}: {e}");
        }
        let mut v = base();
        v["num_attention_heads"] = json!(1024);
        v["head_dim"] = json!(2048);
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("num_attention_heads × head_dim"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "linear", "factor": f64::MAX});
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("rope_scaling.factor"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 8192});
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("high_freq_factor"));
    }

    #[test]
    fn refuses_remote_code_and_unknown_rope() {
        let mut v = base();
        v["auto_map"] = json!({"AutoModelForCausalLM": "modeling.Foo"});
        assert!(parse(v).unwrap_err().to_string().contains("auto_map"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("`yarn` is not supported"));
    }

    #[test]
    fn family_defaults() {
        let mut q = base();
        q["architectures"] = json!(["Qwen2ForCausalLM"]);
        q["sliding_window"] = json!(4096);
        q["use_sliding_window"] = json!(false);
        let c = parse(q).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert_eq!(c.layer_windows, vec![None, None]);

        let mut g = base();
        g["architectures"] = json!(["Gemma2ForCausalLM"]);
        g["sliding_window"] = json!(16);
        g["query_pre_attn_scalar"] = json!(256);
        let c = parse(g).unwrap();
        assert_eq!(c.layer_windows, vec![Some(16), None]);
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(c.tie_word_embeddings);

        let mut m = base();
        m["architectures"] = json!(["MistralForCausalLM"]);
        m["sliding_window"] = json!(8);
        assert_eq!(parse(m).unwrap().layer_windows, vec![Some(8), Some(8)]);
    }

    #[test]
    fn bad_head_counts_are_named() {
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads (3)"));
    }
}
