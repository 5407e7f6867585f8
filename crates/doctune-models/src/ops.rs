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

/// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · w` (or `· (1 + w)` for Gemma),
/// computed in f32 as transformers computes it.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, one_plus: bool) -> Result<Tensor> {
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

/// Softmax over the last dimension, as `exp(x - max) / Σ exp(x - max)` (the max is a constant
/// for the gradient, which is exact: softmax is shift-invariant).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
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
