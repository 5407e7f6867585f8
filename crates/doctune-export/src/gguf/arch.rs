//! What llama.cpp calls each supported family: its architecture name, the GGUF name of every
//! Hugging Face tensor (gguf-py's `tensor_mapping.py`), the hyper-parameter keys it reads
//! (`llama-model.cpp`), the tensors it expects besides the weights (Llama 3's `rope_freqs`,
//! Phi-3's LongRoPE factors), and how a weight must change on the way (the q/k row permutation
//! of the `llama` architecture, Gemma's `1 + w` norms, and an attention-scale correction where
//! llama.cpp's Gemma 2 scale differs from the model's `query_pre_attn_scalar`).

use super::file::Value;
use crate::ExportError;
use doctune_core::Family;
use doctune_models::config::RopeScaling;
use doctune_models::ModelConfig;

/// A family as llama.cpp runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// `general.architecture`.
    pub name: &'static str,
    /// The `llama` architecture rotates q/k in interleaved pairs: rows are permuted.
    pub permute_qk: bool,
    /// Gemma's norms multiply by `1 + w`; llama.cpp by `w`.
    pub norm_plus_one: bool,
    /// A factor on the query weights so llama.cpp's fixed attention scale gives the model's.
    pub q_scale: f64,
}

impl Arch {
    pub fn of(cfg: &ModelConfig) -> Self {
        let (name, permute_qk) = match cfg.family {
            Family::Llama | Family::Mistral => ("llama", true),
            Family::Qwen2 => ("qwen2", false),
            Family::Qwen3 => ("qwen3", false),
            Family::Phi3 => ("phi3", false),
            Family::Gemma2 => ("gemma2", false),
        };
        let q_scale = if cfg.family == Family::Gemma2 {
            // llama.cpp's Gemma 2: 1/√(hidden/heads) for the 46-layer (27B) model, else 1/√head_dim.
            let llama_cpp = if cfg.num_layers == 46 {
                (cfg.hidden_size as f64 / cfg.num_heads as f64).powf(-0.5)
            } else {
                (cfg.head_dim as f64).powf(-0.5)
            };
            cfg.attn_scale / llama_cpp
        } else {
            1.0
        };
        Self {
            name,
            permute_qk,
            norm_plus_one: cfg.gemma_norms,
            q_scale,
        }
    }
}

/// The GGUF name of a Hugging Face tensor of `family` (`None`: not part of a GGUF file).
pub fn tensor_name(hf: &str, family: Family) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let (module, suffix) = tail.rsplit_once('.')?;
    let gemma = family == Family::Gemma2;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if gemma => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" | "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}.{suffix}"))
}

/// The layer of a GGUF tensor name (`blk.3.attn_v.weight` → 3).
pub fn layer_of(gguf: &str) -> Option<usize> {
    gguf.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The row permutation llama.cpp's `llama` architecture expects of q and k (and their
/// biases): within each head, the two halves of the rotary pairs interleaved
/// (`convert_hf_to_gguf.py`'s `LlamaModel.permute`). `data` holds `rows` rows of `cols`.
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let per_head = rows / heads;
    let half = per_head / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for which in 0..2 {
            for i in 0..half {
                let src = h * per_head + which * half + i;
                let dst = h * per_head + i * 2 + which;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Changes a tensor needs on its way into GGUF, by its Hugging Face name: the permuted q/k of the
/// `llama` architecture, Gemma's `1 + w` norms, the query scale correction. `data` is the
/// tensor's f32 values (rows of `cols`).
pub fn transform(arch: &Arch, cfg: &ModelConfig, hf: &str, data: &mut Vec<f32>, cols: usize) {
    let rows = data.len() / cols.max(1);
    let is = |m: &str| hf.ends_with(&format!("{m}.weight")) || hf.ends_with(&format!("{m}.bias"));
    if arch.permute_qk {
        if is("self_attn.q_proj") {
            *data = permute_rows(data, rows, cols, cfg.num_heads);
        } else if is("self_attn.k_proj") {
            *data = permute_rows(data, rows, cols, cfg.num_kv_heads);
        }
    }
    if arch.norm_plus_one && hf.ends_with("norm.weight") {
        data.iter_mut().for_each(|x| *x += 1.0);
    }
    if (arch.q_scale - 1.0).abs() > 1e-9 && is("self_attn.q_proj") {
        let s = arch.q_scale as f32;
        data.iter_mut().for_each(|x| *x *= s);
    }
}

/// A tensor llama.cpp reads that is no model weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    pub name: String,
    pub data: Vec<f32>,
}

/// An architecture's metadata, extra tensors and warnings.
pub type Hparams = (Vec<(String, Value)>, Vec<Extra>, Vec<String>);

/// The hyper-parameter metadata of `cfg` for `arch`, the extra tensors, and what the user should
/// know about settings llama.cpp does not apply.
pub fn hparams(
    cfg: &ModelConfig,
    config_json: &serde_json::Value,
    arch: &Arch,
) -> Result<Hparams, ExportError> {
    let a = arch.name;
    let u = |n: usize| Value::U32(n as u32);
    let mut m: Vec<(String, Value)> = vec![
        (
            format!("{a}.context_length"),
            u(cfg.max_position_embeddings),
        ),
        (format!("{a}.embedding_length"), u(cfg.hidden_size)),
        (format!("{a}.block_count"), u(cfg.num_layers)),
        (format!("{a}.feed_forward_length"), u(cfg.intermediate_size)),
        (format!("{a}.attention.head_count"), u(cfg.num_heads)),
        (format!("{a}.attention.head_count_kv"), u(cfg.num_kv_heads)),
        (format!("{a}.attention.key_length"), u(cfg.head_dim)),
        (format!("{a}.attention.value_length"), u(cfg.head_dim)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (
            format!("{a}.rope.freq_base"),
            Value::F32(cfg.rope_theta as f32),
        ),
    ];
    let mut extras = Vec::new();
    let mut warnings = Vec::new();
    let rot = cfg.rotary_dim();
    match cfg.family {
        Family::Llama | Family::Mistral => {
            m.push((format!("{a}.vocab_size"), u(cfg.vocab_size)));
            if rot != cfg.head_dim {
                return Err(ExportError::Unsupported(format!(
                    "a {} model with partial rotary embeddings cannot be written for llama.cpp's llama architecture",
                    cfg.family.label()
                )));
            }
            m.push((format!("{a}.rope.dimension_count"), u(rot)));
            if let Some(w) = cfg.layer_windows.iter().flatten().next() {
                if *w < cfg.max_position_embeddings {
                    warnings.push(format!("the model attends within a sliding window of {w} tokens, which llama.cpp's llama architecture does not apply: past {w} tokens of context its output differs from the model's"));
                }
            }
        }
        Family::Qwen2 | Family::Qwen3 => {
            if rot != cfg.head_dim {
                return Err(ExportError::Unsupported(
                    "partial rotary embeddings are not supported for Qwen in llama.cpp".into(),
                ));
            }
            if cfg.layer_windows.iter().any(Option::is_some) {
                warnings.push(
                    "llama.cpp does not apply this Qwen model's sliding-window layers".into(),
                );
            }
        }
        Family::Phi3 => {
            m.push((format!("{a}.rope.dimension_count"), u(rot)));
            let original = config_json
                .get("original_max_position_embeddings")
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize)
                .or(match &cfg.rope_scaling {
                    RopeScaling::LongRope {
                        original_max_position_embeddings,
                        ..
                    } => Some(*original_max_position_embeddings),
                    _ => None,
                })
                .unwrap_or(cfg.max_position_embeddings);
            m.push((
                format!("{a}.rope.scaling.original_context_length"),
                u(original),
            ));
            let window = cfg
                .layer_windows
                .iter()
                .flatten()
                .next()
                .copied()
                .unwrap_or(0);
            m.push((format!("{a}.attention.sliding_window"), u(window)));
        }
        Family::Gemma2 => {
            m.push((
                format!("{a}.attn_logit_softcapping"),
                Value::F32(cfg.attn_logit_softcapping.unwrap_or(0.0) as f32),
            ));
            m.push((
                format!("{a}.final_logit_softcapping"),
                Value::F32(cfg.final_logit_softcapping.unwrap_or(0.0) as f32),
            ));
            let window = cfg
                .layer_windows
                .iter()
                .flatten()
                .next()
                .copied()
                .unwrap_or(0);
            m.push((format!("{a}.attention.sliding_window"), u(window)));
            if (arch.q_scale - 1.0).abs() > 1e-9 {
                warnings.push(format!("query_pre_attn_scalar differs from the attention scale llama.cpp uses for Gemma 2; the query weights were scaled by {:.6} so llama.cpp computes the model's attention", arch.q_scale));
            }
        }
    }
    match &cfg.rope_scaling {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => {
            m.push((
                format!("{a}.rope.scaling.type"),
                Value::Str("linear".into()),
            ));
            m.push((
                format!("{a}.rope.scaling.factor"),
                Value::F32(*factor as f32),
            ));
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            if arch.name != "llama" {
                return Err(ExportError::Unsupported(format!(
                    "Llama 3 rope scaling on a {} model is not supported by llama.cpp",
                    cfg.family.label()
                )));
            }
            // `rope_freqs.weight`: the factor each frequency is divided by (the converter's
            // `generate_extra_tensors`).
            let data = doctune_models::rope::base_inv_freq(cfg.rope_theta, rot)
                .into_iter()
                .map(|f| {
                    let divisor = match doctune_models::rope::llama3_smooth(
                        f,
                        *low_freq_factor,
                        *high_freq_factor,
                        *old,
                    ) {
                        1.0 => 1.0,
                        0.0 => *factor,
                        smooth => 1.0 / ((1.0 - smooth) / factor + smooth),
                    };
                    divisor as f32
                })
                .collect();
            extras.push(Extra {
                name: "rope_freqs.weight".into(),
                data,
            });
        }
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            attention_factor,
            ..
        } => {
            if cfg.family != Family::Phi3 {
                return Err(ExportError::Unsupported(
                    "LongRoPE is supported by llama.cpp for Phi-3 only".into(),
                ));
            }
            m.push((
                format!("{a}.rope.scaling.attn_factor"),
                Value::F32(*attention_factor as f32),
            ));
            extras.push(Extra {
                name: "rope_factors_long.weight".into(),
                data: long_factor.iter().map(|&f| f as f32).collect(),
            });
            extras.push(Extra {
                name: "rope_factors_short.weight".into(),
                data: short_factor.iter().map(|&f| f as f32).collect(),
            });
            warnings.push("llama.cpp picks Phi-3's long or short rope factors by the context size it runs with (long above the original context), not by each sequence's length as transformers does".into());
        }
    }
    Ok((m, extras, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gguf_py() {
        use Family::*;
        let n = |h: &str, f| tensor_name(h, f);
        assert_eq!(
            n("model.embed_tokens.weight", Llama).unwrap(),
            "token_embd.weight"
        );
        assert_eq!(n("lm_head.weight", Qwen2).unwrap(), "output.weight");
        assert_eq!(
            n("model.layers.3.self_attn.q_proj.bias", Qwen2).unwrap(),
            "blk.3.attn_q.bias"
        );
        assert_eq!(
            n("model.layers.0.self_attn.qkv_proj.weight", Phi3).unwrap(),
            "blk.0.attn_qkv.weight"
        );
        assert_eq!(
            n("model.layers.0.mlp.gate_up_proj.weight", Phi3).unwrap(),
            "blk.0.ffn_up.weight"
        );
        assert_eq!(
            n("model.layers.1.post_attention_layernorm.weight", Llama).unwrap(),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(
            n("model.layers.1.post_attention_layernorm.weight", Gemma2).unwrap(),
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(
            n("model.layers.1.pre_feedforward_layernorm.weight", Gemma2).unwrap(),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(
            n("model.layers.1.post_feedforward_layernorm.weight", Gemma2).unwrap(),
            "blk.1.post_ffw_norm.weight"
        );
        assert_eq!(
            n("model.layers.2.self_attn.k_norm.weight", Qwen3).unwrap(),
            "blk.2.attn_k_norm.weight"
        );
        assert_eq!(n("model.rotary_emb.inv_freq", Llama), None);
        assert_eq!(layer_of("blk.12.attn_v.weight"), Some(12));
    }

    #[test]
    fn permutation_matches_the_converter() {
        // 2 heads of 4 rows (pairs 0..1 | 2..3), 1 column: each head's halves interleaved.
        let data: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rows(&data, 8, 1, 2),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
        let two_cols: Vec<f32> = (0..8).flat_map(|i| [i as f32, 10.0 + i as f32]).collect();
        let p = permute_rows(&two_cols, 8, 2, 2);
        assert_eq!(&p[2..4], &[2.0, 12.0]);
    }
}
