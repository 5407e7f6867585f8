//! The model layer: trainable candle implementations of the families DocTune supports.
//!
//! - [`load`] reads a Hugging Face model folder ([`folder`]): [`ModelConfig`] from
//!   `config.json`, weights from safetensors (memory-mapped; sharded or not), and the tokenizer
//!   through `doctune-tokenizer`.
//! - [`CausalLm`] ([`model`]) runs Llama, Mistral, Qwen2, Qwen3, Phi-3 and Gemma 2 exactly as
//!   transformers does (tested against its logits), returns logits for every position, and can
//!   be trained: base weights frozen without gradients ([`ops::frozen_matmul`]), LoRA on any
//!   projection ([`Target`], [`LoraSpec`]), full fine-tuning, gradient checkpointing.
//! - [`causal_lm_loss`] is transformers' shifted cross-entropy with an optional loss mask.
//! - [`adapter`] reads and writes PEFT adapters; [`generate()`] generates with a KV cache.
//! - [`scratch`] writes a new Llama model folder (size presets, transformers' initialisation).
//!
//! - [`DeviceKind`] and [`Precision`] name where a model computes and in what dtype (mixed
//!   precision: half-precision base, f32 trained values).
//! - [`cpu`] chooses the CPU kernel family (AVX-512 or AVX2; `DOCTUNE_CPU_KERNELS` forces one)
//!   and [`gemm`] is the f32 matrix product the frozen projections and attention run through
//!   ([`gemm::bf16`] the bf16 one, for a bf16 base under f32 activations).
//! - [`HeapGuard`] keeps freed tensor buffers in the process for the length of a training run.
//!
//! Randomness (LoRA init, dropout, sampling) comes from seeded generators ([`rng`]).

pub mod adapter;
pub mod attention;
pub(crate) mod block;
pub mod config;
pub mod cpu;
pub mod device;
mod error;
pub mod folder;
pub mod gemm;
pub mod generate;
mod heap;
mod kv_cache;
mod layer;
pub mod linear;
mod loss;
pub(crate) mod mlp;
pub mod model;
pub mod ops;
pub mod rng;
pub mod rope;
pub mod scratch;
pub(crate) mod self_attn;
pub mod simd;
mod target;

pub use adapter::{adapter_config, load_adapter, read_adapter_config, save_adapter, AdapterInfo};
pub use config::ModelConfig;
pub use device::{cpu_bf16, CpuBf16Error, DeviceKind, Precision};
pub use error::ModelError;
pub use folder::{load, load_model, save_safetensors, LoadOptions, LoadedModel, WeightReader};
pub use generate::{generate, GenerateOptions, Generation, Sampling, StopReason};
pub use heap::HeapGuard;
pub use kv_cache::KvCache;
pub use linear::LoraSpec;
pub use loss::{causal_lm_loss, log_softmax};
pub use model::CausalLm;
pub use target::{Target, TargetError};

/// Re-exported so callers need not depend on candle directly for the basic types.
pub use candle_core::{DType, Device, Tensor, Var};
