//! SwiGLU, `silu(gate) ⊙ up`, as one op (see [`swiglu`]).

use super::Precomputed;
use candle_core::{CpuStorage, CudaStorage, Layout, MetalStorage, Result, Shape, Tensor};

/// `silu(gate) ⊙ up` as one op (SwiGLU): the graph keeps `gate`, `up` and the output, not
/// `silu(gate)`. Backward: `∂gate = g ⊙ up ⊙ σ(gate)·(1 + gate·(1 − σ(gate)))`,
/// `∂up = g ⊙ silu(gate)`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let y = (gate.detach().silu()? * up.detach())?;
    gate.apply_op2(up, SwiGluOp(Precomputed::new(y)))
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
}
