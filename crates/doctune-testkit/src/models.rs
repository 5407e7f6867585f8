//! Random model folders for tests and benchmarks (nothing can be downloaded where DocTune is
//! built and tested): a Llama-style model in Hugging Face layout with seeded N(0, 0.02) weights.

use std::path::Path;

/// The shape of a random Llama-style model (tied embeddings; grouped-query attention when
/// `kv_heads` < `heads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomLlama {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

/// Writes `config.json` and `model.safetensors` of a random model into `dir`.
pub fn write_random_llama(dir: &Path, m: &RandomLlama) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": m.hidden, "intermediate_size": m.intermediate,
        "num_hidden_layers": m.layers, "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads,
        "vocab_size": m.vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    // The weights as a new model's: N(0, 0.02) matrices (seeded per tensor), norms one.
    let new = doctune_models::scratch::NewLlama {
        dims: doctune_models::scratch::ScratchDims {
            hidden: m.hidden,
            layers: m.layers,
            heads: m.heads,
            kv_heads: m.kv_heads,
            intermediate: m.intermediate,
            context: 2048,
        },
        vocab_size: m.vocab,
        bos_token_id: 0,
        eos_token_ids: Vec::new(),
        pad_token_id: None,
        initializer_range: 0.02,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
    };
    let tensors = new.init(0).map_err(std::io::Error::other)?;
    doctune_models::save_safetensors(&dir.join("model.safetensors"), &tensors)
        .map_err(std::io::Error::other)
}
