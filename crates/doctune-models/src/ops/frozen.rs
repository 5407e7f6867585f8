//! `x · Wᵀ` with a frozen `W` (see [`frozen_matmul`]).

use crate::gemm::bf16::Rows;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, MetalStorage, Result, Shape, Storage, Tensor,
};

/// `x · Wᵀ` for `x` [.., in] and a frozen `W` [out, in]. The backward pass computes only
/// `∂L/∂x = ∂L/∂y · W`: no gradient is computed or stored for `W`. On the CPU, f32 `x` with
/// an f32 `W` runs DocTune's f32 GEMM and with a bf16 `W` its bf16 kernel
/// ([`crate::gemm::bf16`]: `x` rounded to bf16, f32 sums, an f32 result).
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
        // f32 activations with an f32 or bf16 weight: DocTune's kernels, W read as its
        // transpose in place.
        let values = match (&*w, s) {
            (Storage::Cpu(CpuStorage::F32(wd)), CpuStorage::F32(_)) => WeightValues::F32(wd),
            (Storage::Cpu(CpuStorage::BF16(wd)), CpuStorage::F32(_)) => WeightValues::Bf16(wd),
            (Storage::Cpu(w), _) => return self.fwd(s, l, w, w_l),
            _ => candle_core::bail!("frozen_matmul: weight and input on different devices"),
        };
        let Some((wa, wz)) = w_l.contiguous_offsets() else {
            candle_core::bail!("frozen_matmul: the weight must be contiguous");
        };
        let x = super::slice::<f32>(s, l)?;
        let (n, k) = w_l.shape().dims2()?;
        let dims = l.dims();
        if *dims.last().unwrap_or(&0) != k {
            candle_core::bail!(
                "frozen_matmul: input has {} features, weight expects {k}",
                dims.last().unwrap_or(&0)
            );
        }
        let out = product_new(x, values.range(wa..wz), (n, k), true);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 1") = n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
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
        Ok(Some(
            input_grad(grad_res, &self.weight)?.reshape(arg.shape())?,
        ))
    }
}

/// `g · W` for `g` [.., out] and a frozen `W` [out, in], as [.., in]: the input gradient of
/// `x · Wᵀ`, through DocTune's GEMM on the CPU in f32 (and its bf16 kernel for a bf16 `W`) and
/// candle's matmul elsewhere.
pub fn input_grad(g: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let g = g.detach().contiguous()?;
    let (n, k) = weight.dims2()?;
    let m = g.elem_count() / n.max(1);
    let mut dims = g.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = k;
    if let Some(out) = cpu_product(&g, weight, false)? {
        return Tensor::from_vec(out, dims, g.device());
    }
    g.reshape((m, n))?.matmul(weight)?.reshape(dims)
}

/// `x · Wᵀ` (`transposed`, `x` [.., k]) or `x · W` (`x` [.., n]) for a row-major `W` [n, k],
/// as a row-major f32 `Vec`, where DocTune's CPU kernels apply: f32 `x` on the CPU with an f32
/// `W` (DocTune's f32 GEMM) or a bf16 one ([`crate::gemm::bf16`]). `None` elsewhere.
pub(crate) fn cpu_product(
    x: &Tensor,
    weight: &Tensor,
    transposed: bool,
) -> Result<Option<Vec<f32>>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, k) = weight.dims2()?;
    let inner = if transposed { k } else { n };
    if x.dims().last() != Some(&inner) {
        candle_core::bail!(
            "frozen product: input has {:?} features, weight {n}×{k}",
            x.dims().last()
        );
    }
    if !matches!(weight.dtype(), DType::F32 | DType::BF16) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    super::with_slice::<f32, _>(&x, |xs| product_vec(xs, weight, transposed).map(Some))
}

/// [`cpu_product`] on a slice of rows: a new buffer, never zeroed first (the product writes
/// every value). For the fused blocks.
pub(crate) fn product_vec(x: &[f32], weight: &Tensor, transposed: bool) -> Result<Vec<f32>> {
    let (n, k) = weight.dims2()?;
    let inner = if transposed { k } else { n };
    if !x.len().is_multiple_of(inner.max(1)) {
        candle_core::bail!("frozen product: {} values for rows of {inner}", x.len());
    }
    let w = weight.contiguous()?;
    let product = |values: WeightValues<'_>| Ok(product_new(x, values, (n, k), transposed));
    match w.dtype() {
        DType::F32 => super::with_slice::<f32, _>(&w, |ws| product(WeightValues::F32(ws))),
        DType::BF16 => super::with_slice::<half::bf16, _>(&w, |ws| product(WeightValues::Bf16(ws))),
        d => candle_core::bail!("frozen product: a {d:?} weight"),
    }
}

/// [`product_vec`] for activations already rounded to bf16 ([`Rows`]), with a bf16 `W`.
pub(crate) fn product_rows(x: &Rows, weight: &Tensor, transposed: bool) -> Result<Vec<f32>> {
    let (n, k) = weight.dims2()?;
    super::with_slice::<half::bf16, _>(&weight.contiguous()?, |w| {
        Ok(if transposed {
            crate::gemm::bf16::x_wt_rows(x, w, n)
        } else {
            crate::gemm::bf16::g_w_rows(x, w, k)
        })
    })
}

/// `out (+)= x · W` for activations already rounded to bf16 ([`Rows`], [m, n]) and a bf16 `W`
/// [n, k].
pub(crate) fn product_rows_into(
    x: &Rows,
    weight: &Tensor,
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (_, k) = weight.dims2()?;
    super::with_slice::<half::bf16, _>(&weight.contiguous()?, |w| {
        crate::gemm::bf16::g_w_rows_into(x, w, k, out, accumulate);
        Ok(())
    })
}

/// `out (+)= x · Wᵀ` (`transposed`: `x` [m, k], `out` [m, n]) or `x · W` (`x` [m, n], `out`
/// [m, k]) for a row-major `W` [n, k] in f32 or bf16, on slices: DocTune's f32 GEMM or its bf16
/// kernel. For the fused blocks, which keep their activations as slices.
pub(crate) fn product_into(
    x: &[f32],
    weight: &Tensor,
    transposed: bool,
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    use crate::gemm::{sgemm, View};
    let (n, k) = weight.dims2()?;
    let (inner, cols) = if transposed { (k, n) } else { (n, k) };
    let m = x.len() / inner.max(1);
    if x.len() != m * inner || out.len() != m * cols {
        candle_core::bail!("frozen product: {} values for rows of {inner}", x.len());
    }
    match weight.dtype() {
        DType::F32 => super::with_slice::<f32, _>(weight, |w| {
            let wv = if transposed {
                View::row_major(k).t()
            } else {
                View::row_major(k)
            };
            let (rows, lv) = (m, View::row_major(inner));
            sgemm(
                (rows, cols, inner),
                out,
                View::row_major(cols),
                accumulate,
                x,
                lv,
                w,
                wv,
                1.0,
                true,
            );
            Ok(())
        }),
        DType::BF16 => super::with_slice::<half::bf16, _>(weight, |w| {
            if transposed {
                crate::gemm::bf16::x_wt_into(x, w, (m, n, k), out, accumulate);
            } else {
                crate::gemm::bf16::g_w_into(x, w, (m, n, k), out, accumulate);
            }
            Ok(())
        }),
        d => candle_core::bail!("frozen product: a {d:?} weight"),
    }
}

/// A frozen weight's values on the CPU, in the dtypes DocTune's kernels take.
#[derive(Clone, Copy)]
enum WeightValues<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
}

impl<'a> WeightValues<'a> {
    fn range(self, r: std::ops::Range<usize>) -> WeightValues<'a> {
        match self {
            WeightValues::F32(w) => WeightValues::F32(&w[r]),
            WeightValues::Bf16(w) => WeightValues::Bf16(&w[r]),
        }
    }
}

/// `x · Wᵀ` (`transposed`, `x` [m, k], result [m, n]) or `x · W` (`x` [m, n], result [m, k]) for
/// a row-major `W` [n, k], as a new buffer on all of rayon's threads: DocTune's f32 GEMM, or its
/// bf16 kernel for a bf16 `W`.
fn product_new(
    x: &[f32],
    w: WeightValues<'_>,
    (n, k): (usize, usize),
    transposed: bool,
) -> Vec<f32> {
    use crate::gemm::{bf16, sgemm_new, View};
    let (inner, cols) = if transposed { (k, n) } else { (n, k) };
    let m = x.len() / inner.max(1);
    match (w, transposed) {
        (WeightValues::F32(w), true) => sgemm_new(
            (m, cols, inner),
            x,
            View::row_major(inner),
            w,
            View::row_major(k).t(),
            true,
        ),
        (WeightValues::F32(w), false) => sgemm_new(
            (m, cols, inner),
            x,
            View::row_major(inner),
            w,
            View::row_major(k),
            true,
        ),
        (WeightValues::Bf16(w), true) => bf16::x_wt(x, w, (m, n, k)),
        (WeightValues::Bf16(w), false) => bf16::g_w(x, w, (m, n, k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{max_diff, randn};
    use candle_core::Var;

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
}
