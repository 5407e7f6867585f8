//! Differentiable building blocks, one file per op family.
//!
//! candle 0.11's fused `candle_nn::ops::{rms_norm, layer_norm, softmax_last_dim}`, the
//! `RmsNorm`/`LayerNorm` modules (on contiguous input) and `rotary_emb::rope*` have **no backward
//! pass**: gradients silently stop at them. DocTune's forward path therefore uses ops that all
//! have one, fused on the CPU in f32/f64 with hand-written backward passes and compositions of
//! differentiable candle ops elsewhere (which are also what the fused ones are tested against):
//!
//! - [`norm`]: RMSNorm ([`rms_norm`]);
//! - [`softmax`]: softmax and masked softmax ([`softmax_last_dim`], [`masked_softmax`]);
//! - [`lora`]: the LoRA projection `x·Wᵀ + scale·((x⊙mask)·Aᵀ)·Bᵀ` ([`lora_linear`]);
//! - [`swiglu`](mod@swiglu): `silu(gate) ⊙ up`;
//! - [`frozen`]: `x · Wᵀ` with a frozen `W`, whose backward computes only the input's gradient
//!   (candle's own matmul backward always computes both, a full GEMM per projection thrown
//!   away for a frozen base weight);
//! - [`softcap`] here; rotary embeddings live in [`crate::rope`], attention in `attention.rs`, the
//!   loss in `loss.rs`.
//!
//! This file holds what the fused ops share: when they apply ([`fused`]), their views of CPU
//! storage, and [`Precomputed`] outputs.

pub mod frozen;
pub mod lora;
pub mod norm;
pub mod softmax;
pub mod swiglu;
#[cfg(test)]
pub(crate) mod test_util;

pub use frozen::frozen_matmul;
pub use lora::lora_linear;
pub use norm::{rms_norm, rms_norm_composed, RmsNormOp};
pub use softmax::{masked_softmax, softmax_composed, softmax_last_dim, MaskedSoftmaxOp, SoftmaxOp};
pub use swiglu::swiglu;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, DType, Layout, MetalStorage, Result, Shape, Storage, Tensor, WithDType,
};

/// Gradients of variables that are not inputs of the op that computed them, to be added to the
/// backward pass's store by `CausalLm::backward`: what gradient-checkpointed layers computed
/// while recomputing, and the adapters of the fused CPU blocks ([`crate::mlp`]).
pub(crate) type SideGrads = std::sync::Arc<std::sync::Mutex<Vec<(candle_core::Var, Tensor)>>>;

/// Whether the fused CPU kernels apply to `x`: on the CPU, in f32 or f64.
pub(crate) fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `tanh(x / cap) · cap` (Gemma 2's logit soft-capping).
pub fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// Rows of a contiguous CPU tensor as a slice (f32 or f64), with the row length.
pub(crate) fn rows<'a, T: candle_core::WithDType>(
    data: &'a [T],
    l: &Layout,
) -> Result<(&'a [T], usize)> {
    if !l.is_contiguous() {
        candle_core::bail!("fused op: input must be contiguous");
    }
    let d = *l.dims().last().unwrap_or(&1);
    let n = l.shape().elem_count();
    Ok((&data[l.start_offset()..l.start_offset() + n], d.max(1)))
}

/// The elements of a contiguous CPU storage as laid out by `l`.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let Some((a, z)) = l.contiguous_offsets() else {
        candle_core::bail!("fused op: contiguous tensors only");
    };
    Ok(&s.as_slice::<T>()?[a..z])
}

/// A contiguous CPU tensor's elements.
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(cs) = &*st else {
        candle_core::bail!("fused op: CPU tensors only");
    };
    let Some((a, z)) = l.contiguous_offsets() else {
        candle_core::bail!("fused op: contiguous tensors only");
    };
    f(&cs.as_slice::<T>()?[a..z])
}

/// An op's output computed beforehand without a graph (the forward of [`lora_linear`],
/// [`swiglu`] and checkpointed layers); the op's forward hands it over once, so the graph keeps
/// the op's inputs and this output but none of the intermediates that produced it.
pub(crate) struct Precomputed(std::sync::Mutex<Option<Tensor>>);

impl Precomputed {
    pub(crate) fn new(out: Tensor) -> Self {
        Self(std::sync::Mutex::new(Some(out)))
    }

    fn take<S: BackendStorage>(&self, pick: impl Fn(&Storage) -> Option<&S>) -> Result<(S, Shape)> {
        let out = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("precomputed output: lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("precomputed output taken twice".into()))?;
        let (storage, layout) = out.storage_and_layout();
        let s = pick(&storage)
            .ok_or_else(|| candle_core::Error::Msg("precomputed output: device mismatch".into()))?;
        Ok((s.try_clone(layout)?, out.shape().clone()))
    }

    pub(crate) fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    pub(crate) fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    pub(crate) fn metal(&self) -> Result<(MetalStorage, Shape)> {
        self.take(|s| match s {
            Storage::Metal(c) => Some(c),
            _ => None,
        })
    }
}
