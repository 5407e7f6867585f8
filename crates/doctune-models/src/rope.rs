//! Rotary position embeddings, all of them: the inverse frequencies of each scaling type,
//! computed as transformers' `ROPE_INIT_FUNCTIONS` compute them, and the cos/sin tables for a
//! range of positions ([`Rotary`]); their application to queries and keys in the projections'
//! `[B, T, H, D]` layout ([`rope`]: one fused CPU op whose backward is the inverse rotation),
//! and the composition of candle ops it is tested against and falls back to elsewhere
//! ([`apply_rope`], transformers' `apply_rotary_pos_emb`).

use crate::config::{ModelConfig, RopeScaling};
use crate::ops::{fused, slice, with_slice};
use candle_core::{
    CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, WithDType, D,
};
use num_traits::Float;
use rayon::prelude::*;

/// Inverse frequencies and post-scaling of one model.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f64>,
    /// LongRoPE: used instead of `inv_freq` once a forward pass reaches past
    /// `original` positions.
    long: Option<(Vec<f64>, usize)>,
    scaling: f64,
}

/// Llama 3 rope scaling's weight of the unscaled frequency `freq` (transformers'
/// `_compute_llama3_parameters`): 1 for wavelengths shorter than `old / high`, 0 for those
/// longer than `old / low` (divided by the full factor), linear in `old / wavelength` between.
/// Shared with the GGUF export, which stores the resulting divisors as `rope_freqs`.
pub fn llama3_smooth(freq: f64, low: f64, high: f64, old: f64) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < old / high {
        1.0
    } else if wavelen > old / low {
        0.0
    } else {
        (old / wavelen - low) / (high - low)
    }
}

/// The unscaled inverse frequencies of a model (`1 / theta^(2i / rot_dim)`).
pub fn base_inv_freq(theta: f64, rot_dim: usize) -> Vec<f64> {
    (0..rot_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / rot_dim as f64))
        .collect()
}

impl Rotary {
    pub fn new(cfg: &ModelConfig) -> Self {
        let rot_dim = cfg.rotary_dim();
        let base = base_inv_freq(cfg.rope_theta, rot_dim);
        match &cfg.rope_scaling {
            RopeScaling::Default => Self {
                inv_freq: base,
                long: None,
                scaling: 1.0,
            },
            RopeScaling::Linear { factor } => Self {
                inv_freq: base.iter().map(|f| f / factor).collect(),
                long: None,
                scaling: 1.0,
            },
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let inv_freq = base
                    .iter()
                    .map(
                        |&f| match llama3_smooth(f, *low_freq_factor, *high_freq_factor, *old) {
                            1.0 => f,
                            0.0 => f / factor,
                            smooth => (1.0 - smooth) * f / factor + smooth * f,
                        },
                    )
                    .collect();
                Self {
                    inv_freq,
                    long: None,
                    scaling: 1.0,
                }
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let with = |ext: &[f64]| base.iter().zip(ext).map(|(f, e)| f / e).collect();
                Self {
                    inv_freq: with(short_factor),
                    long: Some((with(long_factor), *original_max_position_embeddings)),
                    scaling: *attention_factor,
                }
            }
        }
    }

    /// `(cos, sin)`, each [len, rot_dim] in `dtype`, for positions `start..start + len`.
    /// LongRoPE picks its long factors when this pass reaches beyond the original context (as
    /// transformers decides per forward call from the largest position id).
    pub fn cos_sin(
        &self,
        start: usize,
        len: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let inv_freq = match &self.long {
            Some((long, original)) if start + len > *original => long,
            _ => &self.inv_freq,
        };
        // In f32, as torch computes `inv_freq @ positions` and `cos`.
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let half = inv.len();
        let mut cos = Vec::with_capacity(len * 2 * half);
        let mut sin = Vec::with_capacity(len * 2 * half);
        let scale = self.scaling as f32;
        for p in start..start + len {
            let row: Vec<f32> = inv.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos() * scale));
                sin.extend(row.iter().map(|a| a.sin() * scale));
            }
        }
        let cos = Tensor::from_vec(cos, (len, 2 * half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, 2 * half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Rotary embedding on the first `cos.dim(-1)` dimensions of `x` [.., T, head_dim] (the rest
/// pass through): `x·cos + rotate_half(x)·sin`, with `cos`/`sin` [T, rot] already holding both
/// halves, as transformers' `apply_rotary_pos_emb`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let head_dim = x.dim(D::Minus1)?;
    let rot = cos.dim(D::Minus1)?;
    let (x_rot, x_pass) = if rot == head_dim {
        (x.clone(), None)
    } else {
        (
            x.narrow(D::Minus1, 0, rot)?,
            Some(x.narrow(D::Minus1, rot, head_dim - rot)?),
        )
    };
    let half = rot / 2;
    let x1 = x_rot.narrow(D::Minus1, 0, half)?;
    let x2 = x_rot.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let out = (x_rot.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    match x_pass {
        None => Ok(out),
        Some(pass) => Tensor::cat(&[&out, &pass], D::Minus1),
    }
}

/// Rotary embedding of `x` [B, T, H, D] with `cos`/`sin` [T, rot] (both halves, as
/// [`apply_rope`] takes them; the last `D − rot` dimensions pass through).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, t, _, _) = x.dims4()?;
    let rot = cos.dim(1)?;
    if fused(x) && cos.dtype() == x.dtype() && sin.dtype() == x.dtype() {
        return x.contiguous()?.apply_op1(RopeOp {
            cos: cos.contiguous()?,
            sin: sin.contiguous()?,
        });
    }
    apply_rope(x, &cos.reshape((t, 1, rot))?, &sin.reshape((t, 1, rot))?)
}

/// The fused rotary embedding. Per pair (x₁, x₂) of the two halves: y₁ = x₁·c − x₂·s,
/// y₂ = x₂·c + x₁·s, a rotation; its backward is the rotation by −s. The tables' two halves are
/// equal (as every rope type builds them), so the first half's angles serve both.
struct RopeOp {
    cos: Tensor,
    sin: Tensor,
}

fn rope_rows<T: Float + Send + Sync>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    (t, h, d, rot): (usize, usize, usize, usize),
    sign: T,
) -> Vec<T> {
    let mut out = x.to_vec();
    rope_in_place(&mut out, cos, sin, (t, h, d, rot), sign);
    out
}

/// The rotation of [`RopeOp`] (`sign` −1: its inverse) over `x` [.., T, H, D] in place, with
/// `cos`/`sin` [T, rot].
pub(crate) fn rope_in_place<T: Float + Send + Sync>(
    x: &mut [T],
    cos: &[T],
    sin: &[T],
    (t, h, d, rot): (usize, usize, usize, usize),
    sign: T,
) {
    let half = rot / 2;
    x.par_chunks_mut(h * d).enumerate().for_each(|(row, o)| {
        let pos = row % t;
        let (c, s) = (
            &cos[pos * rot..pos * rot + half],
            &sin[pos * rot..pos * rot + half],
        );
        for head in o.chunks_mut(d) {
            for i in 0..half {
                let (x1, x2) = (head[i], head[i + half]);
                let sn = s[i] * sign;
                head[i] = x1 * c[i] - x2 * sn;
                head[i + half] = x2 * c[i] + x1 * sn;
            }
        }
    });
}

impl RopeOp {
    fn run<T: WithDType + Float>(&self, x: &[T], shape: &Shape, sign: T) -> Result<Vec<T>> {
        let (_, t, h, d) = shape.dims4()?;
        let rot = self.cos.dim(1)?;
        if self.cos.dim(0)? != t || rot > d || rot % 2 != 0 {
            candle_core::bail!("rope: tables {:?} for {:?}", self.cos.dims(), shape.dims());
        }
        with_slice::<T, _>(&self.cos, |c| {
            with_slice::<T, _>(&self.sin, |s| Ok(rope_rows(x, c, s, (t, h, d, rot), sign)))
        })
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(slice(s, l)?, l.shape(), 1f32)?),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(slice(s, l)?, l.shape(), 1f64)?),
            _ => candle_core::bail!("fused rope: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        let dx = match g.dtype() {
            DType::F32 => with_slice::<f32, _>(&g, |s| self.run(s, g.shape(), -1f32))
                .and_then(|v| Tensor::from_vec(v, g.shape(), g.device()))?,
            DType::F64 => with_slice::<f64, _>(&g, |s| self.run(s, g.shape(), -1f64))
                .and_then(|v| Tensor::from_vec(v, g.shape(), g.device()))?,
            dt => candle_core::bail!("fused rope: {dt:?} not supported"),
        };
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{self, check_grad, max_diff, sin_weights};
    use candle_core::Var;

    fn randn(shape: &[usize], seed: u64) -> Var {
        Var::from_tensor(&test_util::randn(shape, seed).to_dtype(DType::F64).unwrap()).unwrap()
    }

    #[test]
    fn composition_has_correct_gradients() {
        let cos = Tensor::from_vec(
            vec![0.3f64, 0.8, 0.3, 0.8, -0.5, 0.1, -0.5, 0.1],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let sin = Tensor::from_vec(
            vec![0.9f64, 0.6, 0.9, 0.6, 0.8, 0.99, 0.8, 0.99],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        check_grad(|x| apply_rope(x, &cos, &sin), &[2, 2, 4]);
        // Partial rotary: the last 2 of 6 dimensions pass through.
        check_grad(|x| apply_rope(x, &cos, &sin), &[2, 2, 6]);
    }

    #[test]
    fn fused_rope_matches_the_composition_and_inverts_in_backward() {
        let rotary_tables = |t: usize, rot: usize| {
            let half = rot / 2;
            let mut cos = Vec::new();
            let mut sin = Vec::new();
            for p in 0..t {
                for _ in 0..2 {
                    for i in 0..half {
                        let a = p as f64 / 10f64.powf(i as f64 / half as f64);
                        cos.push(a.cos());
                        sin.push(a.sin());
                    }
                }
            }
            (
                Tensor::from_vec(cos, (t, rot), &Device::Cpu).unwrap(),
                Tensor::from_vec(sin, (t, rot), &Device::Cpu).unwrap(),
            )
        };
        for (d, rot) in [(4, 4), (6, 4)] {
            let (t, h) = (5, 3);
            let (cos, sin) = rotary_tables(t, rot);
            let x = randn(&[2, t, h, d], 60);
            let fused = rope(&x, &cos, &sin).unwrap();
            let composed = apply_rope(
                &x,
                &cos.reshape((t, 1, rot)).unwrap(),
                &sin.reshape((t, 1, rot)).unwrap(),
            )
            .unwrap();
            assert!(max_diff(&fused, &composed) < 1e-12);
            let w = sin_weights(&[2, t, h, d]);
            let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (composed * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-12);
        }
    }
}
