//! The LoRA projection as one op (see [`lora_linear`]).

use super::{frozen_matmul, with_slice, Precomputed};
use crate::gemm::{sgemm, sgemm_new, View};
use candle_core::{CpuStorage, CudaStorage, DType, Layout, MetalStorage, Result, Shape, Tensor};

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
    let y = match cpu_forward(&xd, w, a, b, scale, mask)? {
        Some(y) => y,
        None => {
            // The low-rank branch runs in the adapter's dtype (f32 on a half-precision base);
            // the two products are summed there and rounded once to `x`'s dtype, as PEFT does.
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
            (frozen_matmul(&xd, w)?.to_dtype(ad)? + low)?.to_dtype(x.dtype())?
        }
    };
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

/// Whether the fused CPU passes apply: f32 activations and adapter on the CPU (the base weight
/// f32 or bf16, see [`super::frozen::cpu_product`]).
fn cpu_path(x: &Tensor, a: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && a.dtype() == DType::F32
        && matches!(w.dtype(), DType::F32 | DType::BF16)
}

/// An adapter's low-rank products on slices, for `m` rows: `A` [r, inp] and `B` [out, r]
/// row-major, `scale` on `B·A`. The LoRA op and the fused MLP both use it.
#[derive(Clone, Copy)]
pub(crate) struct LowRank<'a> {
    pub(crate) a: &'a [f32],
    pub(crate) b: &'a [f32],
    pub(crate) r: usize,
    pub(crate) inp: usize,
    pub(crate) out: usize,
    pub(crate) scale: f32,
}

impl LowRank<'_> {
    /// `y += scale · (xm·Aᵀ)·Bᵀ` (`xm`: the adapter's input, dropout applied); returns `xm·Aᵀ`
    /// [m, r], which [`LowRank::grads`] can take instead of computing it again.
    pub(crate) fn add_to(&self, y: &mut [f32], xm: &[f32], m: usize) -> Vec<f32> {
        let (r, inp, out) = (self.r, self.inp, self.out);
        let rows = View::row_major;
        let xa = sgemm_new((m, r, inp), xm, rows(inp), self.a, rows(inp).t(), true);
        sgemm(
            (m, out, r),
            y,
            rows(out),
            true,
            &xa,
            rows(r),
            self.b,
            rows(r).t(),
            self.scale,
            true,
        );
        xa
    }

    /// For the output gradient `g`: `g·B` [m, r] (for the input's gradient), `∂A = s·(g·B)ᵀ·xm`
    /// [r, inp] and `∂B = s·gᵀ·(xm·Aᵀ)` [out, r]; `xa` is `xm·Aᵀ` if the forward pass kept it.
    pub(crate) fn grads(
        &self,
        g: &[f32],
        xm: &[f32],
        xa: Option<&[f32]>,
        m: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (r, inp, out, s) = (self.r, self.inp, self.out, self.scale);
        let rows = View::row_major;
        let gb = sgemm_new((m, r, out), g, rows(out), self.b, rows(r), true);
        let mut da = vec![0f32; r * inp];
        sgemm(
            (r, inp, m),
            &mut da,
            rows(inp),
            false,
            &gb,
            rows(r).t(),
            xm,
            rows(inp),
            s,
            true,
        );
        let computed;
        let xa = match xa {
            Some(xa) => xa,
            None => {
                computed = sgemm_new((m, r, inp), xm, rows(inp), self.a, rows(inp).t(), true);
                &computed
            }
        };
        // ∂Bᵀ = s·(xm·Aᵀ)ᵀ·g [r, out], reading g in its own row-major layout, then transposed.
        let mut dbt = vec![0f32; r * out];
        sgemm(
            (r, out, m),
            &mut dbt,
            rows(out),
            false,
            xa,
            rows(r).t(),
            g,
            rows(out),
            s,
            true,
        );
        let db = (0..out * r).map(|i| dbt[(i % r) * out + i / r]).collect();
        (gb, da, db)
    }

    /// `dx += s · (g·B)·A ⊙ mask` from [`LowRank::grads`]' `g·B`.
    pub(crate) fn add_input_grad(
        &self,
        dx: &mut [f32],
        gb: &[f32],
        mask: Option<&[f32]>,
        m: usize,
    ) {
        let (r, inp, s) = (self.r, self.inp, self.scale);
        let rows = View::row_major;
        match mask {
            Some(mk) => {
                let low = sgemm_new((m, inp, r), gb, rows(r), self.a, rows(inp), true);
                for ((d, l), k) in dx.iter_mut().zip(&low).zip(mk) {
                    *d += s * l * k;
                }
            }
            None => sgemm(
                (m, inp, r),
                dx,
                rows(inp),
                true,
                gb,
                rows(r),
                self.a,
                rows(inp),
                s,
                true,
            ),
        }
    }
}

/// Runs `f` on the adapter `A`, `B` (f32 tensors) as a [`LowRank`].
pub(crate) fn with_low_rank<R>(
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    f: impl FnOnce(LowRank<'_>) -> Result<R>,
) -> Result<R> {
    let (r, inp) = a.dims2()?;
    let out = b.dims2()?.0;
    let (a, b) = (a.detach().contiguous()?, b.detach().contiguous()?);
    with_slice::<f32, _>(&a, |av| {
        with_slice::<f32, _>(&b, |bv| {
            f(LowRank {
                a: av,
                b: bv,
                r,
                inp,
                out,
                scale,
            })
        })
    })
}

/// The forward on the CPU: `y = x·Wᵀ` from DocTune's kernels, then `y += scale · (x⊙mask)·Aᵀ·Bᵀ`
/// accumulated into it (no output-sized temporaries).
fn cpu_forward(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !cpu_path(x, a, w) {
        return Ok(None);
    }
    let Some(mut y) = super::frozen::cpu_product(x, w, true)? else {
        return Ok(None);
    };
    let out = b.dims2()?.0;
    let m = y.len() / out.max(1);
    let xm = match mask {
        Some(mk) => (x * mk)?,
        None => x.contiguous()?,
    };
    with_slice::<f32, _>(&xm, |xm| {
        with_low_rank(a, b, scale as f32, |lr| {
            lr.add_to(&mut y, xm, m);
            Ok(())
        })
    })?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = out;
    Ok(Some(Tensor::from_vec(y, dims, x.device())?))
}

struct LoraOp {
    w: Tensor,
    mask: Option<Tensor>,
    scale: f64,
    out: Precomputed,
}

impl LoraOp {
    /// The backward pass on the CPU: the rank-r products through DocTune's GEMM, and the
    /// low-rank part of `∂x` accumulated into `g·W` (no output-sized temporaries without dropout).
    fn cpu_backward(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        g: &Tensor,
        x_needs_grad: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (r, inp) = a.dims2()?;
        let out = b.dim(0)?;
        let g = g.contiguous()?;
        let m = g.elem_count() / out.max(1);
        let xm = match &self.mask {
            Some(mk) => (x.reshape(mk.shape())? * mk)?,
            None => x.contiguous()?,
        };
        let mask = self
            .mask
            .as_ref()
            .map(|mk| mk.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        let base = if x_needs_grad {
            let g2 = g.reshape((m, out))?;
            Some(
                super::frozen::cpu_product(&g2, &self.w, false)?.ok_or_else(|| {
                    candle_core::Error::Msg("lora: no CPU product for the base".into())
                })?,
            )
        } else {
            None
        };
        let (da, db, dx) = with_slice::<f32, _>(&g, |gv| {
            with_slice::<f32, _>(&xm, |xm| {
                with_low_rank(a, b, self.scale as f32, |lr| {
                    let (gb, da, db) = lr.grads(gv, xm, None, m);
                    let dx = base.map(|mut dx| {
                        lr.add_input_grad(&mut dx, &gb, mask.as_deref(), m);
                        dx
                    });
                    Ok((da, db, dx))
                })
            })
        })?;
        let (da, db) = (
            Tensor::from_vec(da, (r, inp), a.device())?,
            Tensor::from_vec(db, (out, r), b.device())?,
        );
        let Some(dx) = dx else {
            return Ok((None, Some(da), Some(db)));
        };
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(da),
            Some(db),
        ))
    }
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
        // No gradient for an input outside the graph (the first layer's, under a frozen
        // embedding): its `g·W` product is skipped, as PyTorch's autograd skips it.
        let x_needs_grad = x.track_op();
        // Detached: the gradients must not carry the forward graph (a trainable variable's
        // gradient is kept by the optimiser, and would keep the whole step's graph alive).
        let (x, a, b, g) = (&x.detach(), &a.detach(), &b.detach(), &g.detach());
        let (inp, out) = (a.dim(1)?, b.dim(0)?);
        if cpu_path(x, a, &self.w) && g.dtype() == DType::F32 {
            return self.cpu_backward(x, a, b, g, x_needs_grad);
        }
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
        if !x_needs_grad {
            return Ok((None, Some(da), Some(db)));
        }
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

    /// The f32 CPU passes (DocTune's GEMMs, the low-rank part accumulated in place) against
    /// the composition of candle ops, with and without dropout, for an f32 base and a bf16 one
    /// (whose products round the activations to bf16: compared loosely), and without an input
    /// gradient when the input is outside the graph.
    #[test]
    fn the_f32_cpu_passes_match_the_composition() {
        let mask = (randn(&[2, 3, 8], 54)
            .ge(0.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            * 1.25)
            .unwrap();
        for wdtype in [DType::F32, DType::BF16] {
            for m in [None, Some(&mask)] {
                let x = Var::from_tensor(&randn(&[2, 3, 8], 50)).unwrap();
                let w = randn(&[6, 8], 51).to_dtype(wdtype).unwrap();
                let a = Var::from_tensor(&randn(&[2, 8], 52)).unwrap();
                let b = Var::from_tensor(&randn(&[6, 2], 53)).unwrap();
                let target = randn(&[2, 3, 6], 55);
                let y = lora_linear(&x, &w, &a, &b, 0.5, m).unwrap();
                let g = (&y * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let w32 = w.to_dtype(DType::F32).unwrap();
                let xm = match m {
                    Some(m) => (x.as_tensor() * m).unwrap(),
                    None => x.as_tensor().clone(),
                };
                let low = xm
                    .broadcast_matmul(&a.t().unwrap())
                    .unwrap()
                    .broadcast_matmul(&b.t().unwrap())
                    .unwrap();
                let y_ref = (x.broadcast_matmul(&w32.t().unwrap()).unwrap() + (low * 0.5).unwrap())
                    .unwrap();
                let g_ref = (&y_ref * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let tol = if wdtype == DType::F32 { 1e-5 } else { 5e-2 };
                assert!(
                    max_diff(&y, &y_ref) < tol,
                    "{wdtype:?} {}",
                    max_diff(&y, &y_ref)
                );
                for v in [&x, &a, &b] {
                    let d = max_diff(g.get(v).unwrap(), g_ref.get(v).unwrap());
                    assert!(d < tol, "{wdtype:?} mask {} gradient {d}", m.is_some());
                }
            }
        }
        // An input outside the graph gets no gradient; the adapter's are unchanged.
        let x = randn(&[2, 3, 8], 60);
        let w = randn(&[6, 8], 61);
        let a = Var::from_tensor(&randn(&[2, 8], 62)).unwrap();
        let b = Var::from_tensor(&randn(&[6, 2], 63)).unwrap();
        let y = lora_linear(&x, &w, &a, &b, 0.5, None).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        let xv = Var::from_tensor(&x).unwrap();
        let y2 = lora_linear(&xv, &w, &a, &b, 0.5, None).unwrap();
        let g2 = y2.sum_all().unwrap().backward().unwrap();
        assert!(g2.get(&xv).is_some());
        assert!(max_diff(g.get(&a).unwrap(), g2.get(&a).unwrap()) < 1e-6);
        assert!(max_diff(g.get(&b).unwrap(), g2.get(&b).unwrap()) < 1e-6);
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
