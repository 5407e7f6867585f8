//! RMSNorm: `x / √(mean(x²) + eps) · w` (or `· (1 + w)` for Gemma), fused on the CPU with a
//! hand-written backward, the composition elsewhere.

use super::{fused, rows};
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, D};
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

/// RMSNorm with weight, fused (see [`rms_norm`]). Backward:
/// `∂x = r·(g⊙w) − x·r³·mean(g⊙w⊙x)`, `∂w = Σ_rows g⊙x·r` with `r = 1/√(mean(x²)+eps)`.
#[derive(Debug)]
pub struct RmsNormOp {
    eps: f64,
}

pub(crate) fn rms_rows<T: Float + Send + Sync + 'static>(
    x: &[T],
    w: &[T],
    d: usize,
    eps: f64,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::zero(); x.len()];
    let eps = T::from(eps).unwrap_or_else(T::epsilon);
    let n = T::from(d).unwrap_or_else(T::one);
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| {
            let inv = inv_rms(r, n, eps);
            for ((o, &v), &w) in o.iter_mut().zip(r).zip(w) {
                *o = v * inv * w;
            }
        });
    out
}

/// `1 / √(mean(x²) + eps)` of one row of `n` values (the sums in vector lanes: one running
/// sum is a chain of dependent additions, a few cycles per value).
fn inv_rms<T: Float + 'static>(row: &[T], n: T, eps: T) -> T {
    T::one() / (crate::simd::dot_any(row, row) / n + eps).sqrt()
}

/// `o += ∂x` of one row of `rms(x)·w` for its output gradient `g`, with the row's
/// [`inv_rms`] `r`: `r·g·w − x·r³·mean(g·w·x)`.
fn add_row_grad<T: Float + 'static>(o: &mut [T], (x, g, w): (&[T], &[T], &[T]), r: T, n: T) {
    let dot = crate::simd::dot3_any(g, w, x) / n;
    let c = r * r * r * dot;
    for (((o, &xv), &gv), &wv) in o.iter_mut().zip(x).zip(g).zip(w) {
        *o = *o + r * gv * wv - xv * c;
    }
}

/// `dx += ∂x` of `rms(x)·w` for its output gradient `g`, over rows of `w.len()` (f32 slices:
/// the fused blocks that take the norm in, [`crate::block::PreNorm`]).
pub(crate) fn rms_dx_add(x: &[f32], w: &[f32], g: &[f32], eps: f64, dx: &mut [f32]) {
    use rayon::prelude::*;
    let d = w.len().max(1);
    let (eps, n) = (eps as f32, d as f32);
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .for_each(|(o, (xr, gr))| add_row_grad(o, (xr, gr, w), inv_rms(xr, n, eps), n));
}

/// The backward pass in one pass over the rows: `∂x` row by row, and `∂w` (when wanted) as
/// per-task partial sums over rows, added up.
fn rms_bwd<T: Float + std::ops::AddAssign + candle_core::WithDType + Send + Sync>(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    eps: f64,
    want_dw: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    use rayon::prelude::*;
    let d = w.dim(0)?;
    let (dx, dw) = super::with_slice::<T, _>(x, |x| {
        super::with_slice::<T, _>(w, |w| {
            super::with_slice::<T, _>(g, |g| {
                let eps = T::from(eps).unwrap_or_else(T::epsilon);
                let n = T::from(d).unwrap_or_else(T::one);
                // Each row's 1/√(mean(x²)+eps), once for both gradients.
                let rs: Vec<T> = x.par_chunks(d).map(|r| inv_rms(r, n, eps)).collect();
                let mut dx = vec![T::zero(); x.len()];
                dx.par_chunks_mut(d)
                    .zip(x.par_chunks(d).zip(g.par_chunks(d)))
                    .zip(rs.par_iter())
                    .for_each(|((o, (xr, gr)), &r)| add_row_grad(o, (xr, gr, w), r, n));
                let dw = want_dw.then(|| {
                    // 64 rows per task: partial sums of g⊙x·r, then their sum.
                    x.par_chunks(64 * d)
                        .zip(g.par_chunks(64 * d))
                        .zip(rs.par_chunks(64))
                        .map(|((xs, gs), rs)| {
                            let mut acc = vec![T::zero(); d];
                            for ((xr, gr), &r) in xs.chunks(d).zip(gs.chunks(d)).zip(rs) {
                                for ((a, &xv), &gv) in acc.iter_mut().zip(xr).zip(gr) {
                                    *a += gv * xv * r;
                                }
                            }
                            acc
                        })
                        .reduce(
                            || vec![T::zero(); d],
                            |mut a, b| {
                                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                                a
                            },
                        )
                });
                Ok((dx, dw))
            })
        })
    })?;
    Ok((
        Some(Tensor::from_vec(dx, x.shape(), x.device())?),
        dw.map(|dw| Tensor::from_vec(dw, d, x.device()))
            .transpose()?,
    ))
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
        // A weight outside the graph (a frozen norm under LoRA) gets no gradient.
        let want_dw = w.track_op();
        let (x, w, g) = (&x.detach(), &w.detach(), &g.detach());
        if fused(x) && w.dtype() == x.dtype() && g.dtype() == x.dtype() {
            let (x, w, g) = (x.contiguous()?, w.contiguous()?, g.contiguous()?);
            return match x.dtype() {
                DType::F32 => rms_bwd::<f32>(&x, &w, &g, self.eps, want_dw),
                _ => rms_bwd::<f64>(&x, &w, &g, self.eps, want_dw),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{check_grad, max_diff, randn};
    use candle_core::{Device, Var};

    #[test]
    fn composition_has_correct_gradients() {
        let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.1], 4, &Device::Cpu).unwrap();
        check_grad(|x| rms_norm(x, &w, 1e-6, false), &[3, 4]);
        check_grad(|x| rms_norm(x, &w, 1e-6, true), &[3, 4]);
    }

    #[test]
    fn fused_op_matches_the_composition_and_finite_differences() {
        let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.1], 4, &Device::Cpu).unwrap();
        // f64 inputs take the fused path: these are gradient checks of the fused op.
        check_grad(|x| rms_norm(x, &w, 1e-6, false), &[3, 4]);
        check_grad(|x| rms_norm(x, &w, 1e-6, true), &[3, 4]);
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
        // More rows than one task's share, f32: the same; a frozen weight gets no gradient.
        let x = Var::from_tensor(&randn(&[3, 50, 4], 8)).unwrap();
        let target = randn(&[3, 50, 4], 9);
        let frozen = randn(&[4], 10);
        for w in [wv.as_tensor(), &frozen] {
            let g1 = (rms_norm(&x, w, 1e-5, false).unwrap() * &target)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (rms_norm_composed(&x, w, 1e-5, false).unwrap() * &target)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
            if w.track_op() {
                assert!(max_diff(g1.get(&wv).unwrap(), g2.get(&wv).unwrap()) < 1e-4);
            }
        }
    }
}
