//! The memory a run will need, estimated before it starts, and the preflight that refuses a run
//! that cannot fit with concrete suggestions.
//!
//! The estimate counts what DocTune's models keep for the backward pass (f32 on CPU): the
//! weights (bf16 in a bf16 run on the CPU, whose activations stay f32, plus the bf16 kernel's
//! packed copy of the head gradient); per trainable parameter the value, its gradient and AdamW's two moments; per token
//! and decoder layer the activations (counted op by op, in floats: the two RMSNorm outputs, the
//! query projection and its rotation, the attention output, the o projection, the down
//! projection and the two residual sums 9·h; key and value projections and the key's rotation
//! 3·kv — 8·h and 2·kv when the self-attention runs as one op, which keeps only the rotated
//! projections, and one h less per fused block that takes its residual sum in (Llama-style
//! layers); gate, up and SwiGLU 3·i (2·i when the SwiGLU MLP runs as one op, plus three
//! [tokens, intermediate] buffers while one layer's backward runs); and the gradients alive while
//! a layer's backward runs, about 2·h + i; fused ops keep nothing else — no attention scores — and a LoRA-adapted projection
//! keeps only its output, plus its dropout mask (h) when dropout is on); with gradient
//! checkpointing only each layer's input plus one layer's activations; the logits and their
//! gradient (2·vocab per token); and a fixed runtime overhead. The counts are checked against
//! the measured peak by `cargo bench -p doctune-train --bench train`.
//!
//! In half precision (and on GPUs) the fused CPU kernels do not apply and the model runs candle
//! compositions, which keep every intermediate: per token and layer, the RMSNorms in f32 (12·h
//! bytes each plus two half copies), the projections, RoPE's five products, the attention's
//! transposed copies, and per attention score a half product, its f32 copy and the softmax chain
//! (on the CPU the f32 softmax is still one fused op: 8 bytes + 2 half copies; on GPUs the
//! composition: 20 bytes + 2 half copies); the loss keeps about 48 bytes per logit. Weights are
//! counted in the run's precision; LoRA matrices, fully trained weights' f32 copies, gradients
//! and moments in f32. Checked on the CPU in f16 by the same benchmark
//! (`DOCTUNE_BENCH_PRECISION=f16`); on GPUs the allocator's caching comes on top.

use crate::{Method, RunConfig};
use doctune_models::ModelConfig;
use doctune_models::{DeviceKind, Precision};
use serde::Serialize;

/// Bytes the process needs besides tensors (binary, allocator, thread pools, tokenizer).
pub const RUNTIME_OVERHEAD: u64 = 40 << 20;

/// What a build with `--features cuda` adds to the process's memory on the CPU: the CUDA
/// libraries it links (cuBLAS, cuBLASLt, cuRAND, NVRTC, the runtime) are mapped and partly
/// resident from the start (measured: a CPU run of the benchmark's tiny config peaks 150 MB
/// higher in the CUDA build).
pub const CUDA_LIBRARIES_OVERHEAD: u64 = 150 << 20;

/// GPU memory a CUDA run needs besides tensors: the CUDA context, cuBLAS workspaces and the
/// kernels' modules (typically 0.3–0.6 GB on current GPUs; not yet measured with DocTune).
pub const CUDA_CONTEXT_OVERHEAD: u64 = 512 << 20;

/// The fixed part of a run's peak memory on `device` in this build.
pub fn overhead(device: DeviceKind) -> u64 {
    match device {
        DeviceKind::Cuda => CUDA_CONTEXT_OVERHEAD,
        _ if cfg!(feature = "cuda") => RUNTIME_OVERHEAD + CUDA_LIBRARIES_OVERHEAD,
        _ => RUNTIME_OVERHEAD,
    }
}

/// An estimate of a run's peak memory, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryEstimate {
    pub weights: u64,
    pub trainable: u64,
    pub activations: u64,
    pub overhead: u64,
    pub total: u64,
}

impl MemoryEstimate {
    fn new(weights: u64, trainable: u64, activations: u64, overhead: u64) -> Self {
        Self {
            weights,
            trainable,
            activations,
            overhead,
            total: weights + trainable + activations + overhead,
        }
    }
}

/// LoRA parameters a configuration adds (or, for full fine-tuning, every parameter).
pub fn trainable_parameters(cfg: &ModelConfig, method: &Method) -> u64 {
    let (h, i, hd) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.head_dim as u64,
    );
    let (q, kv) = (cfg.num_heads as u64 * hd, cfg.num_kv_heads as u64 * hd);
    match method {
        Method::Full => cfg.parameter_count(),
        Method::Lora { rank, targets, .. } => {
            let r = *rank as u64;
            let per_layer: u64 = targets
                .iter()
                .map(|t| {
                    let (inp, out) = match t {
                        doctune_models::Target::Q => (h, q),
                        doctune_models::Target::K | doctune_models::Target::V => (h, kv),
                        doctune_models::Target::O => (q, h),
                        doctune_models::Target::Gate | doctune_models::Target::Up => (h, i),
                        doctune_models::Target::Down => (i, h),
                    };
                    r * (inp + out)
                })
                .sum();
            per_layer * cfg.num_layers as u64
        }
    }
}

/// The estimate for `run` on a model with `cfg`, at sequences of `seq_len` tokens.
pub fn estimate(cfg: &ModelConfig, run: &RunConfig, seq_len: usize) -> MemoryEstimate {
    const F: u64 = 4; // f32
    let e = run.precision.bytes();
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let kv = (cfg.num_kv_heads * cfg.head_dim) as u64;
    let (t, v) = (seq_len as u64, cfg.vocab_size as u64);
    let tokens = run.micro_batch as u64 * t;
    let weights = cfg.parameter_count() * e;
    let n_train = trainable_parameters(cfg, &run.method);
    // Value + gradient + two moments, in f32. Full fine-tuning in f32: the value is the weight
    // already counted; in half precision the f32 copy comes on top of the half weight.
    let full_f32 = matches!(run.method, Method::Full) && e == F;
    let trainable = n_train * F * if full_f32 { 3 } else { 4 };
    // f32 on the CPU, and bf16 there (bf16 matrices under f32 activations).
    let fused =
        run.device == DeviceKind::Cpu && matches!(run.precision, Precision::F32 | Precision::Bf16);
    if !fused {
        return composed(cfg, run, seq_len, weights, trainable);
    }
    // Floats kept per token and layer (see the module docs).
    let dropout_masks = match &run.method {
        Method::Lora {
            targets, dropout, ..
        } if *dropout > 0.0 => targets.len() as u64,
        _ => 0,
    };
    // The fused SwiGLU MLP (under LoRA, with separate gate/up projections) keeps gate and up
    // but not SwiGLU's output, which its backward pass recomputes: one [tokens, intermediate]
    // buffer less per layer, and about three of them alive while one layer's backward runs.
    let fused_mlp = matches!(run.method, Method::Lora { .. }) && cfg.fused_mlp();
    let mlp_kept = if fused_mlp { 3 } else { 4 };
    // The fused self-attention keeps the rotated queries and keys, not the projections before
    // the rotation: one h and one kv less.
    let fused_attention =
        u64::from(matches!(run.method, Method::Lora { .. }) && cfg.fused_attention());
    // Llama-style layers: a fused block takes its norm and residual sum in, so its output is
    // the residual sum (one h less per fused block).
    let residual = u64::from(!cfg.gemma_norms) * (fused_attention + u64::from(fused_mlp));
    let per_layer = (11 - fused_attention - residual) * h
        + (3 - fused_attention) * kv
        + mlp_kept * i
        + h * dropout_masks;
    let layers = cfg.num_layers as u64;
    let kept_layers = if run.gradient_checkpointing {
        tokens * h * layers + tokens * per_layer
    } else {
        tokens * per_layer * layers
    };
    let logits = tokens * v * 2;
    let transient = if fused_mlp { 3 * tokens * i } else { 0 };
    let mut activations = (kept_layers + logits + transient) * F;
    if run.precision == Precision::Bf16 {
        // The bf16 kernel's packed copy of its left operand, largest for the head's input
        // gradient: the logits' gradient in bf16.
        activations += tokens * v * 2;
    }
    MemoryEstimate::new(weights, trainable, activations, overhead(run.device))
}

/// [`estimate`] for the composed (unfused) path: half precision, or a GPU (see the module docs).
fn composed(
    cfg: &ModelConfig,
    run: &RunConfig,
    seq_len: usize,
    weights: u64,
    trainable: u64,
) -> MemoryEstimate {
    let e = run.precision.bytes();
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let kv = (cfg.num_kv_heads * cfg.head_dim) as u64;
    let heads = cfg.num_heads as u64;
    let (t, v) = (seq_len as u64, cfg.vocab_size as u64);
    let tokens = run.micro_batch as u64 * t;
    let norms = if cfg.gemma_norms { 4 } else { 2 };
    let mut per_layer = norms * (12 + 2 * e) * h // RMSNorms
        + e * (2 * h + 2 * kv) // q, k, v, o projections
        + 5 * e * (h + kv) // RoPE on q and k
        + e * (4 * h + 2 * kv) // attention's transposed and scaled copies, its output
        + 2 * e * h // residual sums
        + e * (3 * i + h); // gate, up, SwiGLU, down
    if cfg.qk_norm {
        per_layer += (12 + 2 * e) * (h + kv);
    }
    if let Method::Lora {
        targets, dropout, ..
    } = &run.method
    {
        if *dropout > 0.0 {
            per_layer += 4 * h * targets.len() as u64;
        }
    }
    let per_score = if run.device == DeviceKind::Cpu {
        8 + 2 * e
    } else {
        20 + 2 * e
    };
    // Each token's row of scores is as long as the sequence (the causal half is computed too).
    per_layer += per_score * heads * t;
    let layers = cfg.num_layers as u64;
    let kept = if run.gradient_checkpointing {
        tokens * e * h * layers + tokens * per_layer
    } else {
        tokens * per_layer * layers
    };
    let activations = kept + tokens * v * 48;
    MemoryEstimate::new(weights, trainable, activations, overhead(run.device))
}

/// Ways to make a run that does not fit smaller, most effective first.
pub fn suggestions(run: &RunConfig, seq_len: usize) -> Vec<String> {
    let mut out = Vec::new();
    if run.micro_batch > 1 {
        out.push(format!(
            "micro-batch {} with gradient accumulation {} (the same effective batch)",
            (run.micro_batch / 2).max(1),
            run.grad_accum * 2
        ));
    }
    if !run.gradient_checkpointing {
        out.push("turn on gradient checkpointing (about a third more time)".into());
    }
    if seq_len > 256 {
        out.push(format!(
            "a shorter sequence length ({} instead of {seq_len}; rebuild the dataset)",
            seq_len / 2
        ));
    }
    if matches!(run.method, Method::Full) {
        out.push("LoRA instead of full fine-tuning".into());
    }
    out.push("a smaller base model".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use doctune_models::Target;

    fn cfg() -> ModelConfig {
        let v = serde_json::json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 512, "intermediate_size": 1408,
            "num_hidden_layers": 6, "num_attention_heads": 8, "vocab_size": 8192, "tie_word_embeddings": true});
        ModelConfig::from_json(&v, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn checkpointing_and_smaller_batches_need_less() {
        let run = RunConfig {
            micro_batch: 4,
            ..Default::default()
        };
        let base = estimate(&cfg(), &run, 512);
        let ckpt = estimate(
            &cfg(),
            &RunConfig {
                gradient_checkpointing: true,
                ..run.clone()
            },
            512,
        );
        let small = estimate(
            &cfg(),
            &RunConfig {
                micro_batch: 2,
                ..run.clone()
            },
            512,
        );
        assert!(ckpt.activations < base.activations / 2);
        assert!(small.total < base.total);
        assert_eq!(base.weights, cfg().parameter_count() * 4);
        let lora = trainable_parameters(
            &cfg(),
            &Method::Lora {
                rank: 8,
                alpha: 16.0,
                dropout: 0.0,
                rslora: false,
                targets: vec![Target::Q, Target::V],
            },
        );
        assert_eq!(lora, 6 * 2 * 8 * (512 + 512));
        assert!(suggestions(&run, 512)
            .iter()
            .any(|s| s.contains("gradient accumulation 2")));
    }

    #[test]
    fn half_precision_halves_the_weights_and_gpus_keep_the_softmax_chain() {
        let run = RunConfig::default();
        let f32_cpu = estimate(&cfg(), &run, 512);
        let f16_cpu = estimate(
            &cfg(),
            &RunConfig {
                precision: Precision::F16,
                ..run.clone()
            },
            512,
        );
        let bf16_gpu = estimate(
            &cfg(),
            &RunConfig {
                precision: Precision::Bf16,
                device: DeviceKind::Cuda,
                ..run.clone()
            },
            512,
        );
        assert_eq!(f16_cpu.weights * 2, f32_cpu.weights);
        assert_eq!(f16_cpu.trainable, f32_cpu.trainable, "LoRA stays f32");
        // Unfused, the graph keeps more activations than the fused f32 kernels.
        assert!(f16_cpu.activations > f32_cpu.activations);
        assert!(bf16_gpu.activations > f16_cpu.activations);
        // Full fine-tuning in half precision: f32 copy, gradient and moments on top of the half
        // weights.
        let full = |precision| {
            estimate(
                &cfg(),
                &RunConfig {
                    method: Method::Full,
                    precision,
                    device: DeviceKind::Cuda,
                    ..run.clone()
                },
                512,
            )
        };
        let n = cfg().parameter_count();
        assert_eq!(full(Precision::Bf16).trainable, n * 16);
        assert_eq!(full(Precision::F32).trainable, n * 12);
    }

    #[test]
    fn bf16_on_the_cpu_halves_the_weights_and_keeps_the_fused_activations() {
        let run = RunConfig::default();
        let f32_cpu = estimate(&cfg(), &run, 512);
        let bf16_cpu = estimate(
            &cfg(),
            &RunConfig {
                precision: Precision::Bf16,
                ..run.clone()
            },
            512,
        );
        assert_eq!(bf16_cpu.weights * 2, f32_cpu.weights);
        assert_eq!(bf16_cpu.trainable, f32_cpu.trainable, "LoRA stays f32");
        // f32 activations through the fused kernels, plus the packed bf16 head gradient.
        let tokens = (run.micro_batch * 512) as u64;
        assert_eq!(
            bf16_cpu.activations,
            f32_cpu.activations + tokens * cfg().vocab_size as u64 * 2
        );
    }
}
