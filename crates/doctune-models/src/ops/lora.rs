//! The LoRA projection as one op (see [`lora_linear`]).

use super::{frozen_matmul, Precomputed};
use candle_core::{CpuStorage, CudaStorage, Layout, MetalStorage, Result, Shape, Tensor};

/// `x·Wᵀ + scale · ((x ⊙ mask)·Aᵀ)·Bᵀ` for a frozen `W` [out, in] and LoRA factors `A` [r, in],
/// `B` [out, r] (`mask`: the dropout mask of the LoRA branch's input, already scaled by
/// 1/(1-p)). One op: the graph keeps `x`, `A`, `B` and the output, not the base product, the
/// low-rank product and their sum. Backward:
/// `∂x = g·W + scale · (g·B)·A ⊙ mask`, `∂A = scale · (g·B)ᵀ·(x ⊙ mask)`,
/// `∂B = scale · gᵀ·((x ⊙ mask)·Aᵀ)`.
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let xd = x.detach();
    // The low-rank branch runs in the adapter's dtype (f32 on a half-precision base); the two
    // products are summed there and rounded once to `x`'s dtype, as PEFT does.
    let ad = a.dtype();
    let xa = xd.to_dtype(ad)?;
    let xm = match mask {
        Some(m) => (&xa * m)?,
        None => xa,
    };
    let low = (xm
        .broadcast_matmul(&a.detach().t()?)?
        .broadcast_matmul(&b.detach().t()?)?
        * scale)?;
    let y = (frozen_matmul(&xd, w)?.to_dtype(ad)? + low)?.to_dtype(x.dtype())?;
    x.apply_op3(
        a,
        b,
        LoraOp {
            w: w.clone(),
            mask: mask.cloned(),
            scale,
            out: Precomputed::new(y),
        },
    )
}

struct LoraOp {
    w: Tensor,
    mask: Option<Tensor>,
    scale: f64,
    out: Precomputed,
}

impl candle_core::CustomOp3 for LoraOp {
    fn name(&self) -> &'static str {
        "lora-linear"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }
    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        self.out.metal()
    }
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached: the gradients must not carry the forward graph (a trainable variable's
        // gradient is kept by the optimiser, and would keep the whole step's graph alive).
        let (x, a, b, g) = (&x.detach(), &a.detach(), &b.detach(), &g.detach());
        let (inp, out) = (a.dim(1)?, b.dim(0)?);
        let g2 = g.reshape(((), out))?;
        // The adapter's gradients in its own dtype (see the forward).
        let ga = g2.to_dtype(a.dtype())?;
        let x2 = x.reshape(((), inp))?.to_dtype(a.dtype())?;
        let xm = match &self.mask {
            Some(m) => (&x2 * m.reshape(((), inp))?)?,
            None => x2,
        };
        let gb = ga.matmul(b)?;
        let da = (gb.t()?.matmul(&xm)? * self.scale)?;
        let db = (ga.t()?.matmul(&xm.matmul(&a.t()?)?)? * self.scale)?;
        let mut dlow = (gb.matmul(a)? * self.scale)?;
        if let Some(m) = &self.mask {
            dlow = (dlow * m.reshape(((), inp))?)?;
        }
        let dx = (super::frozen::input_grad(&g2, &self.w)? + dlow.to_dtype(g.dtype())?)?
            .reshape(x.shape())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{check_op, max_diff, randn};
    use candle_core::{DType, Device, Var};

    #[test]
    fn lora_linear_matches_the_composition_and_finite_differences() {
        let w = randn(&[5, 4], 80).to_dtype(DType::F64).unwrap();
        let mask = Tensor::from_vec(
            vec![
                2.0f64, 0.0, 2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0,
                0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0,
            ],
            (2, 3, 4),
            &Device::Cpu,
        )
        .unwrap();
        for m in [None, Some(&mask)] {
            // args: x [2, 3, 4], A [2, 4], B [5, 2]
            let fused = |a: &[Tensor]| lora_linear(&a[0], &w, &a[1], &a[2], 0.75, m).unwrap();
            let composed = |a: &[Tensor]| {
                let xm = match m {
                    Some(m) => (&a[0] * m).unwrap(),
                    None => a[0].clone(),
                };
                let low = xm
                    .broadcast_matmul(&a[1].t().unwrap())
                    .unwrap()
                    .broadcast_matmul(&a[2].t().unwrap())
                    .unwrap();
                (a[0].broadcast_matmul(&w.t().unwrap()).unwrap() + (low * 0.75).unwrap()).unwrap()
            };
            check_op(&fused, &composed, &[&[2, 3, 4], &[2, 4], &[5, 2]]);
        }
    }

    #[test]
    fn lora_linear_keeps_an_f32_adapter_on_a_half_base() {
        // Mixed precision: x and W in f16, A and B (and the dropout mask) in f32. The reference
        // is the same computation in f32 from the same (f16-representable) values.
        let half = |t: Tensor| t.to_dtype(DType::F16).unwrap();
        let x16 = Var::from_tensor(&half(randn(&[2, 3, 8], 90))).unwrap();
        let w16 = half(randn(&[6, 8], 91));
        let a = Var::from_tensor(&randn(&[2, 8], 92)).unwrap();
        let b = Var::from_tensor(&randn(&[6, 2], 93)).unwrap();
        let mask = (randn(&[2, 3, 8], 94)
            .ge(0.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            * 1.25)
            .unwrap();
        let target = half(randn(&[2, 3, 6], 95));
        let y = lora_linear(&x16, &w16, &a, &b, 0.5, Some(&mask)).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        let g = (y.to_dtype(DType::F32).unwrap() * target.to_dtype(DType::F32).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let x32 = Var::from_tensor(&x16.to_dtype(DType::F32).unwrap()).unwrap();
        let a32 = Var::from_tensor(a.as_tensor()).unwrap();
        let b32 = Var::from_tensor(b.as_tensor()).unwrap();
        let w32 = w16.to_dtype(DType::F32).unwrap();
        let low = (&*x32 * &mask)
            .unwrap()
            .broadcast_matmul(&a32.t().unwrap())
            .unwrap()
            .broadcast_matmul(&b32.t().unwrap())
            .unwrap();
        let y_ref =
            (x32.broadcast_matmul(&w32.t().unwrap()).unwrap() + (low * 0.5).unwrap()).unwrap();
        let g_ref = (&y_ref * target.to_dtype(DType::F32).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // One f16 rounding of outputs of magnitude ~10.
        assert!(max_diff(&y, &y_ref) < 2e-2, "{}", max_diff(&y, &y_ref));
        let (ga, gb) = (g.get(&a).unwrap(), g.get(&b).unwrap());
        assert_eq!((ga.dtype(), gb.dtype()), (DType::F32, DType::F32));
        assert!(max_diff(ga, g_ref.get(&a32).unwrap()) < 1e-4);
        assert!(max_diff(gb, g_ref.get(&b32).unwrap()) < 1e-4);
        let gx = g.get(&x16).unwrap();
        assert_eq!(gx.dtype(), DType::F16);
        assert!(max_diff(gx, g_ref.get(&x32).unwrap()) < 2e-2);
    }
}
