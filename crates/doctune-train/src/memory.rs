//! The memory a run will need, estimated before it starts, and the preflight that refuses a run
//! that cannot fit with concrete suggestions.
//!
//! The estimate counts what DocTune's models keep for the backward pass (f32 on CPU): the
//! weights; per trainable parameter the value, its gradient and AdamW's two moments; per token
//! and decoder layer the activations (counted op by op, in floats: the two RMSNorm outputs, the
//! query projection and its rotation, the attention output, the o projection, the down
//! projection and the two residual sums 9·h; key and value projections and the key's rotation
//! 3·kv; gate, up and SwiGLU 3·i; and the gradients alive while a layer's backward runs, about
//! 2·h + i; fused ops keep nothing else — no attention scores — and a LoRA-adapted projection
//! keeps only its output, plus its dropout mask (h) when dropout is on); with gradient
//! checkpointing only each layer's input plus one layer's activations; the logits and their
//! gradient (2·vocab per token); and a fixed runtime overhead. The counts are checked against
//! the measured peak by `cargo bench -p doctune-train --bench train`.

use crate::{Method, RunConfig};
use doctune_models::ModelConfig;
use serde::Serialize;

/// Bytes the process needs besides tensors (binary, allocator, thread pools, tokenizer).
pub const RUNTIME_OVERHEAD: u64 = 40 << 20;

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
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let kv = (cfg.num_kv_heads * cfg.head_dim) as u64;
    let (t, v) = (seq_len as u64, cfg.vocab_size as u64);
    let tokens = run.micro_batch as u64 * t;
    let weights = cfg.parameter_count() * F;
    let n_train = trainable_parameters(cfg, &run.method);
    // Value + gradient + two moments (full fine-tuning: the value is the weight already counted).
    let trainable = n_train
        * F
        * if matches!(run.method, Method::Full) {
            3
        } else {
            4
        };
    // Floats kept per token and layer (see the module docs).
    let dropout_masks = match &run.method {
        Method::Lora {
            targets, dropout, ..
        } if *dropout > 0.0 => targets.len() as u64,
        _ => 0,
    };
    let per_layer = 11 * h + 3 * kv + 4 * i + h * dropout_masks;
    let layers = cfg.num_layers as u64;
    let kept_layers = if run.gradient_checkpointing {
        tokens * h * layers + tokens * per_layer
    } else {
        tokens * per_layer * layers
    };
    let logits = tokens * v * 2;
    let activations = (kept_layers + logits) * F;
    let overhead = RUNTIME_OVERHEAD;
    MemoryEstimate {
        weights,
        trainable,
        activations,
        overhead,
        total: weights + trainable + activations + overhead,
    }
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
}
