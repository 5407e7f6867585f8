//! Differentiable building blocks.
//!
//! candle 0.11's fused `candle_nn::ops::{rms_norm, layer_norm, softmax_last_dim}`, the
//! `RmsNorm`/`LayerNorm` modules (on contiguous input) and `rotary_emb::rope*` have **no backward
//! pass**: gradients silently stop at them. DocTune's forward path therefore uses compositions of
//! ops that all have one — [`rms_norm`], [`softmax_last_dim`], [`apply_rope`], [`softcap`] — and
//! the tests check that every trainable variable receives a gradient. `ops::sdpa` has no CPU
//! implementation, so attention is written out (see `model.rs`).
//!
//! [`frozen_matmul`] is a custom op for `x · Wᵀ` with a frozen `W`: its backward returns only the
//! input's gradient. candle's own matmul backward always computes both operands' gradients,
//! which for a frozen base weight is a full GEMM per projection thrown away.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, MetalStorage, Result, Shape, Storage,
    Tensor, D,
};
use num_traits::Float;

/// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · w` (or `· (1 + w)` for Gemma),
/// computed in f32 as transformers computes it. On the CPU in f32/f64 this is one fused op with
/// a hand-written backward ([`RmsNormOp`]); elsewhere the composition [`rms_norm_composed`].
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, one_plus: bool) -> Result<Tensor> {
    if fused(x) && x.dtype() == weight.dtype() {
        let w = if one_plus {
            (weight + 1.0)?
        } else {
            weight.clone()
        };
        return x
            .contiguous()?
            .apply_op2(&w.contiguous()?, RmsNormOp { eps });
    }
    rms_norm_composed(x, weight, eps, one_plus)
}

/// Whether the fused CPU kernels apply to `x`.
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// RMSNorm as a composition of differentiable candle ops (the reference the fused op is
/// tested against, and the path on GPUs).
pub fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64, one_plus: bool) -> Result<Tensor> {
    let dtype = x.dtype();
    let wide = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let x = x.to_dtype(wide)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_mul(&(ms + eps)?.sqrt()?.recip()?)?;
    let w = weight.to_dtype(wide)?;
    let w = if one_plus { (w + 1.0)? } else { w };
    if one_plus {
        normed.broadcast_mul(&w)?.to_dtype(dtype)
    } else {
        // Llama: `weight * hidden.to(input_dtype)`.
        normed.to_dtype(dtype)?.broadcast_mul(&w.to_dtype(dtype)?)
    }
}

/// Softmax over the last dimension. On the CPU in f32/f64 one fused op that keeps only its
/// output for the backward pass ([`SoftmaxOp`]: `∂x = y ⊙ (g − Σ g⊙y)`); elsewhere the
/// composition [`softmax_composed`].
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(SoftmaxOp);
    }
    softmax_composed(x)
}

/// `softmax(x + mask)` over the last dimension, where `x` is [.., R, S] with rows whose index
/// modulo `mask.dim(0)` is their query position and `mask` is an additive [T, S] mask (0 or
/// −∞). On the CPU one fused op that keeps only its output ([`MaskedSoftmaxOp`]) — the masked
/// scores are never materialised; elsewhere the broadcast addition and [`softmax_last_dim`].
pub fn masked_softmax(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (t, s) = mask.dims2()?;
    let rows = x.elem_count() / s.max(1);
    let ok =
        fused(x) && x.dtype() == mask.dtype() && x.dim(D::Minus1)? == s && rows.is_multiple_of(t);
    if ok {
        return x
            .contiguous()?
            .apply_op2(&mask.contiguous()?, MaskedSoftmaxOp);
    }
    let dims = x.dims().to_vec();
    let grouped = x.reshape(((), t, s))?.broadcast_add(mask)?.reshape(dims)?;
    softmax_last_dim(&grouped)
}

/// Softmax as `exp(x - max) / Σ exp(x - max)` (the max is a constant for the gradient, which is
/// exact: softmax is shift-invariant).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Rows of a contiguous CPU tensor as a slice (f32 or f64), with the row length.
fn rows<'a, T: candle_core::WithDType>(data: &'a [T], l: &Layout) -> Result<(&'a [T], usize)> {
    if !l.is_contiguous() {
        candle_core::bail!("fused op: input must be contiguous");
    }
    let d = *l.dims().last().unwrap_or(&1);
    let n = l.shape().elem_count();
    Ok((&data[l.start_offset()..l.start_offset() + n], d.max(1)))
}

/// Softmax over the last dimension, fused (see [`softmax_last_dim`]).
#[derive(Debug)]
pub struct SoftmaxOp;

fn softmax_rows<T: Float + Send + Sync>(x: &[T], d: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| {
            let max = r.iter().copied().fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for (o, &v) in o.iter_mut().zip(r) {
                *o = (v - max).exp();
                sum = sum + *o;
            }
            for o in o.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let (x, d) = rows(v, l)?;
                CpuStorage::F32(softmax_rows(x, d))
            }
            CpuStorage::F64(v) => {
                let (x, d) = rows(v, l)?;
                CpuStorage::F64(softmax_rows(x, d))
            }
            _ => candle_core::bail!("fused softmax: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad.broadcast_sub(&dot)?)?))
    }
}

/// Softmax of scores plus an additive mask, fused (see [`masked_softmax`]).
#[derive(Debug)]
pub struct MaskedSoftmaxOp;

fn masked_softmax_rows<T: Float + Send + Sync>(x: &[T], mask: &[T], s: usize, t: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .enumerate()
        .for_each(|(r, (o, row))| {
            let m = &mask[(r % t) * s..(r % t + 1) * s];
            let mut max = T::neg_infinity();
            for (o, (&v, &mv)) in o.iter_mut().zip(row.iter().zip(m)) {
                *o = v + mv;
                max = max.max(*o);
            }
            let mut sum = T::zero();
            for o in o.iter_mut() {
                *o = (*o - max).exp();
                sum = sum + *o;
            }
            for o in o.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

impl candle_core::CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (t, s) = l2.shape().dims2()?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(m)) => {
                let (x, _) = rows(x, l1)?;
                let (m, _) = rows(m, l2)?;
                CpuStorage::F32(masked_softmax_rows(x, m, s, t))
            }
            (CpuStorage::F64(x), CpuStorage::F64(m)) => {
                let (x, _) = rows(x, l1)?;
                let (m, _) = rows(m, l2)?;
                CpuStorage::F64(masked_softmax_rows(x, m, s, t))
            }
            _ => candle_core::bail!("fused masked softmax: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is a constant: only the scores get a gradient.
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok((Some((res * grad.broadcast_sub(&dot)?)?), None))
    }
}

/// RMSNorm with weight, fused (see [`rms_norm`]). Backward:
/// `∂x = r·(g⊙w) − x·r³·mean(g⊙w⊙x)`, `∂w = Σ_rows g⊙x·r` with `r = 1/√(mean(x²)+eps)`.
#[derive(Debug)]
pub struct RmsNormOp {
    eps: f64,
}

fn rms_rows<T: Float + Send + Sync>(x: &[T], w: &[T], d: usize, eps: f64) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::zero(); x.len()];
    let eps = T::from(eps).unwrap_or_else(T::epsilon);
    let n = T::from(d).unwrap_or_else(T::one);
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| {
            let ms = r.iter().fold(T::zero(), |a, &v| a + v * v) / n;
            let inv = T::one() / (ms + eps).sqrt();
            for ((o, &v), &w) in o.iter_mut().zip(r).zip(w) {
                *o = v * inv * w;
            }
        });
    out
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                let (x, d) = rows(x, l1)?;
                let (w, _) = rows(w, l2)?;
                if w.len() != d {
                    candle_core::bail!("rms norm: weight of {} for rows of {d}", w.len());
                }
                CpuStorage::F32(rms_rows(x, w, d, self.eps))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                let (x, d) = rows(x, l1)?;
                let (w, _) = rows(w, l2)?;
                if w.len() != d {
                    candle_core::bail!("rms norm: weight of {} for rows of {d}", w.len());
                }
                CpuStorage::F64(rms_rows(x, w, d, self.eps))
            }
            _ => candle_core::bail!("fused rms norm: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let gw = g.broadcast_mul(w)?;
        let dot = (&gw * x)?.mean_keepdim(D::Minus1)?;
        let dx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * dot)?)?)?;
        let d = w.dim(0)?;
        let dw = (g * x.broadcast_mul(&r)?)?.reshape(((), d))?.sum(0)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `tanh(x / cap) · cap` (Gemma 2's logit soft-capping).
pub fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    (x / cap)?.tanh()? * cap
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

/// `x · Wᵀ` for `x` [.., in] and a frozen `W` [out, in]. The backward pass computes only
/// `∂L/∂x = ∂L/∂y · W`: no gradient is computed or stored for `W`.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op1_arc(std::sync::Arc::new(Box::new(FrozenMatmul {
        weight: weight.detach(),
    })))
}

struct FrozenMatmul {
    weight: Tensor,
}

impl FrozenMatmul {
    /// Forward on any back end: `x` viewed as [m, k], `W` as the transposed view [k, n].
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        x_l: &Layout,
        w: &S,
        w_l: &Layout,
    ) -> Result<(S, Shape)> {
        if !x_l.is_contiguous() || !w_l.is_contiguous() {
            candle_core::bail!("frozen_matmul: inputs must be contiguous");
        }
        let dims = x_l.dims();
        let k = *dims.last().expect("rank ≥ 1");
        let (n, wk) = w_l.shape().dims2()?;
        if wk != k {
            candle_core::bail!("frozen_matmul: input has {k} features, weight expects {wk}");
        }
        let m = x_l.shape().elem_count() / k.max(1);
        let lhs = Layout::contiguous_with_offset((m, k), x_l.start_offset());
        let rhs = Layout::contiguous_with_offset((n, k), w_l.start_offset()).transpose(0, 1)?;
        let out = x.matmul(w, (1, m, n, k), &lhs, &rhs)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 1") = n;
        Ok((out, Shape::from(out_dims)))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (w, w_l) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cpu(w) => self.fwd(s, l, w, w_l),
            _ => candle_core::bail!("frozen_matmul: weight and input on different devices"),
        }
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (w, w_l) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cuda(w) => self.fwd(s, l, w, w_l),
            _ => candle_core::bail!("frozen_matmul: weight and input on different devices"),
        }
    }

    fn metal_fwd(&self, s: &MetalStorage, l: &Layout) -> Result<(MetalStorage, Shape)> {
        let (w, w_l) = self.weight.storage_and_layout();
        match &*w {
            Storage::Metal(w) => self.fwd(s, l, w, w_l),
            _ => candle_core::bail!("frozen_matmul: weight and input on different devices"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // ∂L/∂x = ∂L/∂y · W (W is a plain tensor: no graph is recorded for it).
        let g = grad_res.contiguous()?;
        let n = self.weight.dim(0)?;
        let m = g.elem_count() / n;
        let dx = g.reshape((m, n))?.matmul(&self.weight)?;
        Ok(Some(dx.reshape(arg.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let v = crate::rng::normal_vec(shape.iter().product(), 1.0, seed);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn frozen_matmul_matches_matmul_and_only_grads_the_input() {
        let x = Var::from_tensor(&randn(&[2, 3, 5], 1)).unwrap();
        let w = Var::from_tensor(&randn(&[4, 5], 2)).unwrap();
        let y = frozen_matmul(&x, &w).unwrap();
        let y_ref = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&y, &y_ref) < 1e-6);
        let target = randn(&[2, 3, 4], 3);
        let grads = (y * &target)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grads_ref = (y_ref * &target)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx = grads.get(&x).unwrap();
        assert!(max_diff(gx, grads_ref.get(&x).unwrap()) < 1e-5);
        // The weight is a variable here, yet the frozen op leaves it without a gradient.
        assert!(grads.get(&w).is_none());
        assert!(grads_ref.get(&w).is_some());
    }

    /// Each composition against finite differences of itself (f64).
    fn check_grad(f: impl Fn(&Tensor) -> Result<Tensor>, shape: &[usize]) {
        let x0: Vec<f64> = crate::rng::normal_vec(shape.iter().product(), 1.0, 9)
            .into_iter()
            .map(f64::from)
            .collect();
        let x = Var::from_vec(x0.clone(), shape, &Device::Cpu).unwrap();
        let w = Tensor::from_vec(
            (0..x0.len())
                .map(|i| (i as f64 * 0.37).sin())
                .collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap();
        let loss = |t: &Tensor| -> f64 {
            (f(t).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = (f(&x).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<f64> = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let eps = 1e-6;
        for i in 0..x0.len() {
            let mut plus = x0.clone();
            plus[i] += eps;
            let mut minus = x0.clone();
            minus[i] -= eps;
            let t = |v: Vec<f64>| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            let fd = (loss(&t(plus)) - loss(&t(minus))) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-6,
                "element {i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn compositions_have_correct_gradients() {
        let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.1], 4, &Device::Cpu).unwrap();
        check_grad(|x| rms_norm(x, &w, 1e-6, false), &[3, 4]);
        check_grad(|x| rms_norm(x, &w, 1e-6, true), &[3, 4]);
        check_grad(softmax_last_dim, &[3, 4]);
        check_grad(|x| softcap(x, 2.0), &[3, 4]);
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
    fn fused_ops_match_their_compositions_and_finite_differences() {
        let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.1], 4, &Device::Cpu).unwrap();
        // f64 inputs take the fused path: these are gradient checks of the fused ops.
        check_grad(|x| rms_norm(x, &w, 1e-6, false), &[3, 4]);
        check_grad(|x| rms_norm(x, &w, 1e-6, true), &[3, 4]);
        check_grad(softmax_last_dim, &[3, 4]);
        // The weight's gradient of the fused RMSNorm, against the composition's.
        let x = Var::from_tensor(&randn(&[2, 3, 4], 5)).unwrap();
        let wv = Var::from_tensor(&randn(&[4], 6)).unwrap();
        let target = randn(&[2, 3, 4], 7);
        for one_plus in [false, true] {
            let fused = rms_norm(&x, &wv, 1e-5, one_plus).unwrap();
            let composed = rms_norm_composed(&x, &wv, 1e-5, one_plus).unwrap();
            assert!(max_diff(&fused, &composed) < 1e-5);
            let g1 = (fused * &target)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (composed * &target)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
            assert!(max_diff(g1.get(&wv).unwrap(), g2.get(&wv).unwrap()) < 1e-5);
        }
        let s = Var::from_tensor(&randn(&[3, 7], 8)).unwrap();
        let t = randn(&[3, 7], 9);
        let g1 = (softmax_last_dim(&s).unwrap() * &t)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (softmax_composed(&s).unwrap() * &t)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&s).unwrap(), g2.get(&s).unwrap()) < 1e-6);
    }

    #[test]
    fn masked_softmax_matches_the_composition() {
        // Rows grouped as [2 heads, T = 3 queries]; a causal mask.
        let ninf = f64::NEG_INFINITY;
        let mask = Tensor::from_vec(
            vec![0.0, ninf, ninf, 0.0, 0.0, ninf, 0.0, 0.0, 0.0],
            (3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let x0: Vec<f64> = crate::rng::normal_vec(18, 1.0, 3)
            .into_iter()
            .map(f64::from)
            .collect();
        let x = Var::from_vec(x0, (2, 3, 3), &Device::Cpu).unwrap();
        let t = Tensor::from_vec(
            (0..18).map(|i| (i as f64 * 0.7).cos()).collect::<Vec<_>>(),
            (2, 3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let fused = masked_softmax(&x, &mask).unwrap();
        let composed = softmax_composed(&x.broadcast_add(&mask).unwrap()).unwrap();
        let d = (&fused - &composed)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "{d}");
        let g1 = (fused * &t).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composed * &t)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = (g1.get(&x).unwrap() - g2.get(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "{d}");
    }

    #[test]
    fn softmax_matches_candle_and_masks() {
        let x = randn(&[2, 7], 4);
        let ours = softmax_last_dim(&x).unwrap();
        let theirs = candle_nn::ops::softmax_last_dim(&x).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let masked =
            Tensor::from_vec(vec![1f32, f32::NEG_INFINITY, 2.0], (1, 3), &Device::Cpu).unwrap();
        let p: Vec<f32> = softmax_last_dim(&masked)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(p[1], 0.0);
    }
}
