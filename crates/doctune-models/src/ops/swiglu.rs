//! SwiGLU, `silu(gate) ⊙ up`, as one op (see [`swiglu`]).

use super::{fused, with_slice, Precomputed};
use crate::gemm::bf16::Rows;
use candle_core::{CpuStorage, CudaStorage, DType, Layout, MetalStorage, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// Elements per task of the fused CPU passes (16 KiB of f32: inputs and outputs stay in L1).
const CHUNK: usize = 4096;

/// `silu(gate) ⊙ up` as one op (SwiGLU): the graph keeps `gate`, `up` and the output, not
/// `silu(gate)`. Backward: `∂gate = g ⊙ up ⊙ σ(gate)·(1 + gate·(1 − σ(gate)))`,
/// `∂up = g ⊙ silu(gate)`. On the CPU in f32/f64 each direction is one pass over the elements
/// (the vectorised `exp` of [`crate::simd`]); elsewhere a composition of candle ops.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let y = if fused(gate) && up.dtype() == gate.dtype() && up.shape() == gate.shape() {
        let (g, u) = (gate.detach().contiguous()?, up.detach().contiguous()?);
        match gate.dtype() {
            DType::F32 => forward_cpu::<f32>(&g, &u)?,
            _ => forward_cpu::<f64>(&g, &u)?,
        }
    } else {
        (gate.detach().silu()? * up.detach())?
    };
    gate.apply_op2(up, SwiGluOp(Precomputed::new(y)))
}

/// `σ(x)` for a chunk: one vectorised pass for f32 ([`crate::simd::sigmoid`]); for f64
/// `e ← exp(−x)`, then `1 / (1 + e)`.
fn sigmoid_into<T: Float + 'static>(x: &[T], out: &mut [T]) {
    if let (Some(x), Some(out)) = (crate::simd::as_f32_ref(x), crate::simd::as_f32(out)) {
        crate::simd::sigmoid(x, out);
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = -v;
    }
    crate::simd::exp_sub_sum_any(out, T::zero());
    for o in out.iter_mut() {
        *o = T::one() / (T::one() + *o);
    }
}

/// `out = silu(gate) ⊙ up` over slices, in parallel chunks (the fused MLP's pass).
pub(crate) fn swiglu_into<T: Float + Send + Sync + 'static>(g: &[T], u: &[T], out: &mut [T]) {
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            sigmoid_into(g, o);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * *o * u;
            }
        });
}

/// `silu(g) ⊙ u` for [m, inter] `g` and `u` (`inter` even) straight into bf16 rows, for a bf16
/// product: the f32 result never goes to memory.
pub(crate) fn swiglu_rows(g: &[f32], u: &[f32], m: usize, inter: usize) -> Rows {
    Rows::from_chunks(m, inter, |first, out| {
        let (g, u) = (&g[first..first + out.len()], &u[first..first + out.len()]);
        sigmoid_into(g, out);
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g * *o * u;
        }
    })
}

/// [`swiglu_grads_in_place`] straight into bf16 rows (`inter` even), for bf16 products.
pub(crate) fn swiglu_grads_rows(
    x: &[f32],
    u: &[f32],
    gr: &[f32],
    m: usize,
    inter: usize,
) -> (Rows, Rows) {
    let fill = |first: usize, dg: &mut [f32], du: &mut [f32]| {
        let r = first..first + dg.len();
        let (x, u, gr) = (&x[r.clone()], &u[r.clone()], &gr[r]);
        sigmoid_into(x, dg);
        for i in 0..dg.len() {
            let sig = dg[i];
            let silu = x[i] * sig;
            let dsilu = sig * (1.0 + x[i] * (1.0 - sig));
            dg[i] = gr[i] * u[i] * dsilu;
            du[i] = gr[i] * silu;
        }
    };
    Rows::from_chunks2(m, inter, fill, true)
}

/// `(∂gate, ∂up)` of `silu(gate) ⊙ up` for the output gradient `gr`, written over `gate` and
/// `up` (the fused MLP's backward pass, which owns them and needs them no more).
pub(crate) fn swiglu_grads_in_place(gate: &mut [f32], up: &mut [f32], gr: &[f32]) {
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks_mut(CHUNK))
        .zip(gr.par_chunks(CHUNK))
        .for_each(|((x, u), gr)| {
            let mut sig = [0f32; CHUNK];
            let sig = &mut sig[..x.len()];
            sigmoid_into(x, sig);
            for i in 0..x.len() {
                let silu = x[i] * sig[i];
                let dsilu = sig[i] * (1.0 + x[i] * (1.0 - sig[i]));
                x[i] = gr[i] * u[i] * dsilu;
                u[i] = gr[i] * silu;
            }
        });
}

/// `(∂gate, ∂up)` of `silu(gate) ⊙ up` for the output gradient `gr`, over slices.
pub(crate) fn swiglu_grads_into<T: Float + Send + Sync + 'static>(
    x: &[T],
    u: &[T],
    gr: &[T],
    dgate: &mut [T],
    dup: &mut [T],
) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(x.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .zip(gr.par_chunks(CHUNK))
        .for_each(|(((dg, du), (x, u)), gr)| {
            sigmoid_into(x, dg);
            for i in 0..dg.len() {
                let sig = dg[i];
                let silu = x[i] * sig;
                let dsilu = sig * (T::one() + x[i] * (T::one() - sig));
                dg[i] = gr[i] * u[i] * dsilu;
                du[i] = gr[i] * silu;
            }
        });
}

fn forward_cpu<T: Float + candle_core::WithDType + Send + Sync + 'static>(
    gate: &Tensor,
    up: &Tensor,
) -> Result<Tensor> {
    let out = with_slice::<T, _>(gate, |g| {
        with_slice::<T, _>(up, |u| {
            let mut out = vec![T::zero(); g.len()];
            swiglu_into(g, u, &mut out);
            Ok(out)
        })
    })?;
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// Both gradients in one pass over the elements.
fn backward_cpu<T: Float + candle_core::WithDType + Send + Sync + 'static>(
    gate: &Tensor,
    up: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (dgate, dup) = with_slice::<T, _>(gate, |x| {
        with_slice::<T, _>(up, |u| {
            with_slice::<T, _>(grad, |gr| {
                let mut dgate = vec![T::zero(); x.len()];
                let mut dup = vec![T::zero(); x.len()];
                swiglu_grads_into(x, u, gr, &mut dgate, &mut dup);
                Ok((dgate, dup))
            })
        })
    })?;
    Ok((
        Tensor::from_vec(dgate, gate.shape(), gate.device())?,
        Tensor::from_vec(dup, gate.shape(), gate.device())?,
    ))
}

struct SwiGluOp(Precomputed);

impl candle_core::CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "swiglu"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.0.cuda()
    }
    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        self.0.metal()
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gate, up, g) = (&gate.detach(), &up.detach(), &g.detach());
        if fused(gate) && up.dtype() == gate.dtype() && g.dtype() == gate.dtype() {
            let (x, u, gr) = (gate.contiguous()?, up.contiguous()?, g.contiguous()?);
            let (dgate, dup) = match gate.dtype() {
                DType::F32 => backward_cpu::<f32>(&x, &u, &gr)?,
                _ => backward_cpu::<f64>(&x, &u, &gr)?,
            };
            return Ok((Some(dgate), Some(dup)));
        }
        let sig = candle_nn::ops::sigmoid(gate)?;
        let silu = (gate * &sig)?;
        let dsilu = (&sig * ((gate * sig.affine(-1.0, 1.0)?)? + 1.0)?)?;
        let dgate = ((g * up)? * dsilu)?;
        let dup = (g * silu)?;
        Ok((Some(dgate), Some(dup)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::check_op;

    #[test]
    fn swiglu_matches_the_composition_and_finite_differences() {
        check_op(
            &|a: &[Tensor]| swiglu(&a[0], &a[1]).unwrap(),
            &|a: &[Tensor]| (a[0].silu().unwrap() * &a[1]).unwrap(),
            &[&[3, 5], &[3, 5]],
        );
    }

    #[test]
    fn the_f32_pass_matches_the_composition_far_into_both_tails() {
        use candle_core::{Device, Var};
        // Two chunks' worth, from far below −87 (exp(−x) overflows f32) to far above.
        let n = 2 * CHUNK;
        let v: Vec<f32> = (0..n)
            .map(|i| -120.0 + i as f32 * (240.0 / n as f32))
            .collect();
        let up: Vec<f32> = v.iter().map(|x| (x * 0.1).cos()).collect();
        let gate = Var::from_vec(v, (2, CHUNK), &Device::Cpu).unwrap();
        let up = Var::from_vec(up, (2, CHUNK), &Device::Cpu).unwrap();
        let y = swiglu(&gate, &up).unwrap();
        let y_ref = (gate.silu().unwrap() * up.as_tensor()).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.flatten_all().unwrap().to_vec1().unwrap(),
                b.flatten_all().unwrap().to_vec1().unwrap(),
            );
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()) && x.is_finite())
        };
        assert!(close(&y, &y_ref));
        let w = crate::ops::test_util::randn(&[2, CHUNK], 3);
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (y_ref * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(close(g.get(&gate).unwrap(), g_ref.get(&gate).unwrap()));
        assert!(close(g.get(&up).unwrap(), g_ref.get(&up).unwrap()));
    }
}
