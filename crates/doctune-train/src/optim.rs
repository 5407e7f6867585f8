//! AdamW as `torch.optim.AdamW` computes it (decoupled weight decay applied first, bias
//! correction, `eps` added after the square root), global gradient-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`, and the learning-rate schedules of transformers
//! (`get_cosine_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
//! `get_constant_schedule_with_warmup`). Checked against goldens from PyTorch and transformers.

use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of AdamW.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Whether a parameter is decayed: not biases and not norm weights (the transformers Trainer's
/// rule).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm"))
}

/// AdamW over named variables.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimiser steps taken.
    pub step: u64,
    pub params: AdamWParams,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            params,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One step with learning rate `lr`; `grads[i]` is the gradient of `vars()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            candle_core::bail!(
                "{} gradients for {} variables",
                grads.len(),
                self.vars.len()
            );
        }
        self.step += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - p.beta2.powi(self.step as i32)).sqrt();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let g = grads[i].to_dtype(var.dtype())?;
            let wd = if decays(name) { p.weight_decay } else { 0.0 };
            let decayed = if wd > 0.0 {
                (var.as_tensor() * (1.0 - lr * wd))?
            } else {
                var.as_tensor().clone()
            };
            let m = ((&self.m[i] * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + p.eps)?;
            let update = (m.div(&denom)? * (lr / bc1))?;
            var.set(&(decayed - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moment estimates, named `m.<var>` and `v.<var>`, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.vars.len() * 2);
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].clone()));
            out.push((format!("v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores moment estimates saved by [`state`](Self::state).
    pub fn load_state(&mut self, get: impl Fn(&str) -> Option<Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (which, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t = get(&format!("{which}.{name}")).ok_or_else(|| {
                    candle_core::Error::Msg(format!("checkpoint has no {which}.{name}"))
                })?;
                if t.dims() != var.dims() {
                    candle_core::bail!(
                        "checkpoint {which}.{name} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    );
                }
                *slot = t.to_dtype(var.dtype())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The global L2 norm of `grads`.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads {
        sum += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}

/// Scales `grads` so their global norm is at most `max_norm`, as `clip_grad_norm_` does
/// (coefficient `max_norm / (norm + 1e-6)`, never above 1). Returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    clip_to(grads, norm, max_norm)?;
    Ok(norm)
}

/// [`clip_grad_norm`] for gradients whose global norm is already known.
pub fn clip_to(grads: &mut [Tensor], norm: f64, max_norm: f64) -> Result<()> {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(())
}

/// Dynamic loss scaling for f16 training, as PyTorch's `GradScaler` does it with its defaults:
/// the loss is multiplied by `scale` before the backward pass (so small gradients do not
/// underflow f16) and the gradients divided by it after; a step whose gradients overflowed is
/// skipped and the scale halved; after `GROWTH_INTERVAL` good steps in a row it doubles.
/// bf16 has f32's range and needs none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: u32,
    /// Steps skipped for overflowed gradients, in the whole run.
    pub skipped: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: Self::INIT,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScaler {
    pub const INIT: f64 = 65536.0;
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// Records whether this step's (unscaled) gradients were finite; returns whether the
    /// optimiser should apply them.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
        }
        finite
    }
}

/// How the learning rate changes over the run (after linear warmup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// The multiplier of the base learning rate at optimiser step `step` (0-based), as transformers'
/// `get_*_schedule_with_warmup` lambdas compute it.
pub fn lr_multiplier(schedule: Schedule, step: u64, warmup: u64, total: u64) -> f64 {
    let (s, w, t) = (step as f64, warmup as f64, total as f64);
    if step < warmup {
        return s / w.max(1.0);
    }
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
        Schedule::Cosine => {
            let progress = (s - w) / (t - w).max(1.0);
            (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_a_good_stretch() {
        let mut s = LossScaler::default();
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        // An overflow restarts the count.
        s.update(true);
        s.update(false);
        assert_eq!((s.scale, s.good_steps, s.skipped), (32768.0, 0, 2));
    }

    #[test]
    fn clipping_with_a_known_norm_is_clip_grad_norm() {
        let dev = candle_core::Device::Cpu;
        let g = || vec![Tensor::new(&[3f32, 4.0], &dev).unwrap()];
        let mut a = g();
        let norm = clip_grad_norm(&mut a, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let mut b = g();
        let norm_b = grad_norm(&b).unwrap();
        clip_to(&mut b, norm_b, 1.0).unwrap();
        assert_eq!(
            a[0].to_vec1::<f32>().unwrap(),
            b[0].to_vec1::<f32>().unwrap()
        );
        // Under the limit nothing changes.
        let mut c = g();
        clip_to(&mut c, 5.0, 10.0).unwrap();
        assert_eq!(c[0].to_vec1::<f32>().unwrap(), vec![3.0, 4.0]);
    }
}
