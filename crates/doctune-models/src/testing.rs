//! Random model folders for tests and benchmarks (nothing can be downloaded where DocTune is
//! built and tested): a Llama-style model in Hugging Face layout with seeded N(0, 0.02) weights;
//! the benchmarks' process helpers (peak memory, running a worker, their options); and the
//! largest difference between two tensors, which the tests of several crates compare by.

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
                crate::rng::normal_vec(n, 0.02, k as u64)
            };
            Ok((
                name,
                candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(std::io::Error::other)?;
    crate::save_safetensors(&dir.join("model.safetensors"), &tensors).map_err(std::io::Error::other)
}

/// This process's peak resident memory (`VmHWM`), where the OS tells; 0 elsewhere. For the
/// benchmarks, which run each side in its own process.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs a benchmark worker and parses the JSON object on the last line of its output; `None`
/// (with the worker's last error line on stderr) if it fails.
pub fn run_json(cmd: &mut std::process::Command) -> Option<serde_json::Value> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "  failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last()?).ok()
}

/// The largest absolute difference between two tensors of the same shape and any float dtype
/// (computed in f64).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let diff = || -> candle_core::Result<f64> {
        (a.to_dtype(candle_core::DType::F64)? - b.to_dtype(candle_core::DType::F64)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()
    };
    diff().expect("tensors on the CPU")
}

/// A benchmark option from the environment (`None` when unset; a value that does not parse is
/// a mistake worth stopping for).
pub fn bench_env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
    )
}

/// `DOCTUNE_BENCH_THREADS`, by default every core.
pub fn bench_threads() -> usize {
    bench_env("DOCTUNE_BENCH_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
