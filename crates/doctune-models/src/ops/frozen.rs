//! `x · Wᵀ` with a frozen `W` (see [`frozen_matmul`]).

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, Layout, MetalStorage, Result, Shape, Storage, Tensor,
};

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
