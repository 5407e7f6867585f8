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
    Trainable(Var),
}

impl Param {
    /// The value; with `grad == false` a trainable parameter is detached, so the computation
    /// records no graph (used for recomputation under gradient checkpointing and for inference).
    pub fn get(&self, grad: bool) -> Tensor {
        match self {
            Param::Frozen(t) => t.clone(),
            Param::Trainable(v) if grad => v.as_tensor().clone(),
            Param::Trainable(v) => v.as_detached_tensor(),
        }
    }

    pub fn var(&self) -> Option<&Var> {
        match self {
            Param::Trainable(v) => Some(v),
            Param::Frozen(_) => None,
        }
    }

    /// The tensor without graph (for saving and merging).
    pub fn value(&self) -> Tensor {
        self.get(false)
    }

    /// Makes this parameter trainable (full fine-tuning).
    pub fn make_trainable(&mut self) -> Result<()> {
        if let Param::Frozen(t) = self {
            *self = Param::Trainable(Var::from_tensor(t)?);
        }
        Ok(())
    }

    fn set(&mut self, t: Tensor) -> Result<()> {
        match self {
            Param::Frozen(old) => *old = t,
            Param::Trainable(v) => v.set(&t)?,
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

/// A dropout mask for `x` from our seeded generator: 0 for dropped elements, 1/(1-p) for kept
/// ones.
pub fn dropout_mask(x: &Tensor, p: f32, rng: &mut ModelRng) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())
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

    /// Sets the adapter to given `A` [r, in] and `B` [out, r] (a saved adapter).
    pub fn set_lora(&mut self, a: Tensor, b: Tensor, spec: &LoraSpec) -> Result<()> {
        let dtype = self.weight.value().dtype();
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
        let mask = match (lora, rng) {
            (Some(l), Some(rng)) if l.dropout > 0.0 => Some(dropout_mask(x, l.dropout, rng)?),
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
            (Param::Trainable(_), _) => {
                let mut y = x.broadcast_matmul(&self.weight.get(grad).t()?)?;
                if let Some(l) = lora {
                    let xm = match &mask {
                        Some(m) => (x * m)?,
                        None => x.clone(),
                    };
                    let (a, b) = (l.a.as_tensor(), l.b.as_tensor());
                    let delta = xm.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
                    y = (y + (delta * l.scale)?)?;
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
