//! Softmax over the last dimension, and softmax of scores plus an additive mask: fused on the
//! CPU (each keeps only its output for the backward pass), compositions elsewhere.

use super::{fused, rows};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use num_traits::Float;

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

/// Softmax over the last dimension, fused (see [`softmax_last_dim`]).
#[derive(Debug)]
pub struct SoftmaxOp;

fn softmax_rows<T: Float + Send + Sync + 'static>(x: &[T], d: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| {
            let max = crate::simd::max(r);
            o.copy_from_slice(r);
            let sum = crate::simd::exp_sub_sum_any(o, max);
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

fn masked_softmax_rows<T: Float + Send + Sync + 'static>(
    x: &[T],
    mask: &[T],
    s: usize,
    t: usize,
) -> Vec<T> {
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
            let sum = crate::simd::exp_sub_sum_any(o, max);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{check_grad, max_diff, randn};
    use candle_core::{Device, Var};

    #[test]
    fn compositions_have_correct_gradients() {
        check_grad(softmax_last_dim, &[3, 4]);
        check_grad(|x| crate::ops::softcap(x, 2.0), &[3, 4]);
    }

    #[test]
    fn fused_softmax_matches_the_composition_and_finite_differences() {
        check_grad(softmax_last_dim, &[3, 4]);
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
        let d = max_diff(&fused, &composed);
        assert!(d < 1e-12, "{d}");
        let g1 = (fused * &t).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composed * &t)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
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
