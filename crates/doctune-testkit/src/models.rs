//! Random model folders for tests and benchmarks (nothing can be downloaded where DocTune is
//! built and tested): a Llama-style model in Hugging Face layout with seeded N(0, 0.02) weights.

use std::path::Path;

/// The shape of a random Llama-style model (tied embeddings, multi-head attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomLlama {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

/// Writes `config.json` and `model.safetensors` of a random model into `dir`.
pub fn write_random_llama(dir: &Path, m: &RandomLlama) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": m.hidden, "intermediate_size": m.intermediate,
        "num_hidden_layers": m.layers, "num_attention_heads": m.heads, "num_key_value_heads": m.heads,
        "vocab_size": m.vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let (h, i) = (m.hidden, m.intermediate);
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![m.vocab, h])];
    for l in 0..m.layers {
        let p = format!("model.layers.{l}");
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            shapes.push((format!("{p}.self_attn.{name}.weight"), vec![h, h]));
        }
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        shapes.push((format!("{p}.input_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    let tensors = shapes
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                doctune_models::rng::normal_vec(n, 0.02, k as u64)
            };
            Ok((
                name,
                candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(std::io::Error::other)?;
    doctune_models::save_safetensors(&dir.join("model.safetensors"), &tensors)
        .map_err(std::io::Error::other)
}
