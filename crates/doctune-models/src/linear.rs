//! Parameters and linear layers: a weight is either frozen (a plain tensor, multiplied through
//! [`frozen_matmul`] so no gradient is ever computed for it) or trainable (a `Var`), and a
//! linear layer may carry a LoRA adapter.
//!
//! LoRA follows PEFT: `y = x·Wᵀ + b + scale · dropout(x)·Aᵀ·Bᵀ` with `A` [r, in] initialised
//! Kaiming-uniform (a = √5, so U(±1/√in)), `B` [out, r] zero, `scale = alpha / r` (rsLoRA:
//! `alpha / √r`). Merging adds `scale · B·A` to `W`; unmerging subtracts it.

use crate::ops::{frozen_matmul, lora_linear};
use crate::rng::{uniform_from, ModelRng};
use candle_core::{DType, Result, Tensor, Var};
use rand::Rng;

/// A model parameter.
#[derive(Debug, Clone)]
pub enum Param {
    Frozen(Tensor),
    /// A trained weight: the optimiser's copy `var` (f32 when the model computes in half
    /// precision, so small updates are not rounded away) and the dtype the model computes in;
    /// the forward pass reads it cast to `dtype`, and the cast's backward brings the gradient
    /// back to `var`'s dtype.
    Trainable {
        var: Var,
        dtype: DType,
    },
}

/// The dtype trained values are kept in for a model computing in `dtype`: f32 for half
/// precision (mixed precision: PEFT's `autocast_adapter_dtype`, PyTorch AMP's master weights),
/// else `dtype` itself.
pub fn master_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

impl Param {
    /// The value; with `grad == false` a trainable parameter is detached, so the computation
    /// records no graph (used for recomputation under gradient checkpointing and for inference).
    pub fn get(&self, grad: bool) -> Tensor {
        match self {
            Param::Frozen(t) => t.clone(),
            Param::Trainable { var, dtype } => {
                let t = if grad {
                    var.as_tensor().clone()
                } else {
                    var.as_detached_tensor()
                };
                if t.dtype() == *dtype {
                    t
                } else {
                    // Only fails for an unsupported cast, which `make_trainable` has ruled out.
                    t.to_dtype(*dtype).unwrap_or(t)
                }
            }
        }
    }

    pub fn var(&self) -> Option<&Var> {
        match self {
            Param::Trainable { var, .. } => Some(var),
            Param::Frozen(_) => None,
        }
    }

    /// The tensor without graph, in the compute dtype (for saving and merging).
    pub fn value(&self) -> Tensor {
        self.get(false)
    }

    /// Makes this parameter trainable (full fine-tuning) in a model computing in `compute`,
    /// kept in [`master_dtype`]: a bf16 matrix under f32 activations becomes an f32 weight.
    pub fn make_trainable(&mut self, compute: DType) -> Result<()> {
        if let Param::Frozen(t) = self {
            let dtype = compute;
            let var = Var::from_tensor(&t.to_dtype(master_dtype(dtype))?)?;
            // Check the cast back once, so `get` cannot fail later.
            var.as_detached_tensor().to_dtype(dtype)?;
            *self = Param::Trainable { var, dtype };
        }
        Ok(())
    }

    fn set(&mut self, t: Tensor) -> Result<()> {
        match self {
            Param::Frozen(old) => *old = t,
            Param::Trainable { var, .. } => var.set(&t.to_dtype(var.dtype())?)?,
        }
        Ok(())
    }
}

/// LoRA options for one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub rslora: bool,
}

impl LoraSpec {
    /// The factor on `B·A`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// A LoRA adapter on one linear layer.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
    merged: bool,
}

/// A linear layer `y = x·Wᵀ + b`, optionally with LoRA.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The module's path in the Hugging Face model (`model.layers.0.self_attn.q_proj`).
    pub name: String,
    pub weight: Param,
    pub bias: Option<Param>,
    pub lora: Option<Lora>,
}

/// A dropout mask of `x`'s shape from our seeded generator, in `dtype`: 0 for dropped elements,
/// 1/(1-p) for kept ones.
pub fn dropout_mask(x: &Tensor, p: f32, rng: &mut ModelRng, dtype: DType) -> Result<Tensor> {
    let mask = dropout_values(x.elem_count(), p, rng);
    Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(dtype)
}

/// The values of [`dropout_mask`] for `n` elements (the same draws in the same order).
pub(crate) fn dropout_values(n: usize, p: f32, rng: &mut ModelRng) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    (0..n)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect()
}

impl Linear {
    pub fn new(name: String, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            name,
            weight: Param::Frozen(weight),
            bias: bias.map(Param::Frozen),
            lora: None,
        }
    }

    /// The module's last name (`q_proj`, `qkv_proj`, `gate_up_proj`, …).
    pub fn module(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// The dtype of this layer's adapter for its weight's dtype (f32 on a half-precision base).
    fn adapter_dtype(&self) -> DType {
        master_dtype(self.weight.value().dtype())
    }

    /// Adds a fresh adapter, initialised as PEFT does, from `rng`.
    pub fn add_lora(&mut self, spec: &LoraSpec, rng: &mut ModelRng) -> Result<()> {
        let w = self.weight.value();
        let (out, inp) = w.dims2()?;
        let bound = 1.0 / (inp as f32).sqrt();
        let a = Tensor::from_vec(
            uniform_from(rng, spec.rank * inp, bound),
            (spec.rank, inp),
            w.device(),
        )?
        .to_dtype(DType::F32)?;
        let b = Tensor::zeros((out, spec.rank), DType::F32, w.device())?;
        self.set_lora(a, b, spec)
    }

    /// Sets the adapter to given `A` [r, in] and `B` [out, r] (a saved adapter). The adapter is
    /// kept in f32 on a half-precision base, as PEFT does (`autocast_adapter_dtype`).
    pub fn set_lora(&mut self, a: Tensor, b: Tensor, spec: &LoraSpec) -> Result<()> {
        let dtype = self.adapter_dtype();
        self.lora = Some(Lora {
            a: Var::from_tensor(&a.to_dtype(dtype)?)?,
            b: Var::from_tensor(&b.to_dtype(dtype)?)?,
            scale: spec.scale(),
            dropout: spec.dropout,
            merged: false,
        });
        Ok(())
    }

    /// The forward pass; `rng` enables LoRA dropout (training), `grad == false` records no graph.
    pub fn forward(&self, x: &Tensor, grad: bool, rng: Option<&mut ModelRng>) -> Result<Tensor> {
        let lora = self.lora.as_ref().filter(|l| !l.merged);
        // The mask applies to the adapter's input, in the adapter's dtype.
        let mask = match (lora, rng) {
            (Some(l), Some(rng)) if l.dropout > 0.0 => {
                Some(dropout_mask(x, l.dropout, rng, l.a.dtype())?)
            }
            _ => None,
        };
        let mut y = match (&self.weight, lora) {
            // The adapted frozen projection as one op (see `lora_linear`).
            (Param::Frozen(w), Some(l)) => {
                let (a, b) = if grad {
                    (l.a.as_tensor().clone(), l.b.as_tensor().clone())
                } else {
                    (l.a.as_detached_tensor(), l.b.as_detached_tensor())
                };
                lora_linear(x, w, &a, &b, l.scale, mask.as_ref())?
            }
            (Param::Frozen(w), None) => frozen_matmul(x, w)?,
            (Param::Trainable { .. }, _) => {
                let mut y = x.broadcast_matmul(&self.weight.get(grad).t()?)?;
                if let Some(l) = lora {
                    // In the adapter's dtype, summed there and rounded once, as PEFT does.
                    let (a, b) = (l.a.as_tensor(), l.b.as_tensor());
                    let xa = x.to_dtype(a.dtype())?;
                    let xm = match &mask {
                        Some(m) => (xa * m)?,
                        None => xa,
                    };
                    let delta = xm.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
                    y = (y.to_dtype(a.dtype())? + (delta * l.scale)?)?.to_dtype(x.dtype())?;
                }
                y
            }
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.get(grad))?;
        }
        Ok(y)
    }

    /// `scale · B·A`, the adapter's change to `W`.
    pub fn lora_delta(&self) -> Result<Option<Tensor>> {
        let Some(l) = &self.lora else { return Ok(None) };
        let d = l.b.as_detached_tensor().matmul(&l.a.as_detached_tensor())?;
        Ok(Some((d * l.scale)?))
    }

    /// Folds the adapter into `W` (idempotent).
    pub fn merge(&mut self) -> Result<()> {
        if self.lora.as_ref().is_some_and(|l| !l.merged) {
            let delta = self.lora_delta()?.expect("adapter present");
            let w = (self.weight.value() + delta.to_dtype(self.weight.value().dtype())?)?;
            self.weight.set(w)?;
            self.lora.as_mut().expect("adapter present").merged = true;
        }
        Ok(())
    }

    /// Takes the adapter back out of `W` (idempotent).
    pub fn unmerge(&mut self) -> Result<()> {
        if self.lora.as_ref().is_some_and(|l| l.merged) {
            let delta = self.lora_delta()?.expect("adapter present");
            let w = (self.weight.value() - delta.to_dtype(self.weight.value().dtype())?)?;
            self.weight.set(w)?;
            self.lora.as_mut().expect("adapter present").merged = false;
        }
        Ok(())
    }

    pub fn is_merged(&self) -> bool {
        self.lora.as_ref().is_some_and(|l| l.merged)
    }
}
