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
    Tensor, WithDType, D,
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

/// The elements of a contiguous CPU storage as laid out by `l`.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let Some((a, z)) = l.contiguous_offsets() else {
        candle_core::bail!("fused op: contiguous tensors only");
    };
    Ok(&s.as_slice::<T>()?[a..z])
}

/// A contiguous CPU tensor's elements.
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(cs) = &*st else {
        candle_core::bail!("fused op: CPU tensors only");
    };
    let Some((a, z)) = l.contiguous_offsets() else {
        candle_core::bail!("fused op: contiguous tensors only");
    };
    f(&cs.as_slice::<T>()?[a..z])
}

/// An op's output computed beforehand without a graph (the forward of [`lora_linear`],
/// [`swiglu`] and checkpointed layers); the op's forward hands it over once, so the graph keeps
/// the op's inputs and this output but none of the intermediates that produced it.
pub(crate) struct Precomputed(std::sync::Mutex<Option<Tensor>>);

impl Precomputed {
    pub(crate) fn new(out: Tensor) -> Self {
        Self(std::sync::Mutex::new(Some(out)))
    }

    fn take<S: BackendStorage>(&self, pick: impl Fn(&Storage) -> Option<&S>) -> Result<(S, Shape)> {
        let out = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("precomputed output: lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("precomputed output taken twice".into()))?;
        let (storage, layout) = out.storage_and_layout();
        let s = pick(&storage)
            .ok_or_else(|| candle_core::Error::Msg("precomputed output: device mismatch".into()))?;
        Ok((s.try_clone(layout)?, out.shape().clone()))
    }

    pub(crate) fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    pub(crate) fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    pub(crate) fn metal(&self) -> Result<(MetalStorage, Shape)> {
        self.take(|s| match s {
            Storage::Metal(c) => Some(c),
            _ => None,
        })
    }
}

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
        let dx = (g2.matmul(&self.w)? + dlow.to_dtype(g.dtype())?)?.reshape(x.shape())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

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
        let (x, w, g) = (&x.detach(), &w.detach(), &g.detach());
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

/// Helpers the fused ops' tests share.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor};

    /// Seeded N(0, 1) values (f32).
    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let v = crate::rng::normal_vec(shape.iter().product(), 1.0, seed);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    pub use crate::testing::max_abs_diff as max_diff;

    /// Checks `grad`, the analytic gradient of `loss` at `x0` (f64), element by element against
    /// central differences (step 1e-6) within `tol`.
    pub fn assert_finite_differences(
        x0: &Tensor,
        grad: &Tensor,
        loss: impl Fn(&Tensor) -> f64,
        tol: f64,
        what: &str,
    ) {
        let x: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
        let g: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-6;
        for i in 0..x.len() {
            let at = |d: f64| {
                let mut v = x.clone();
                v[i] += d;
                loss(&Tensor::from_vec(v, x0.shape(), x0.device()).unwrap())
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < tol,
                "{what} element {i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }

    /// Fixed weights `sin(0.37·i)` (f64) that turn an output into a scalar loss.
    pub fn sin_weights(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        Tensor::from_vec(w, shape, &Device::Cpu).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{self, max_diff, randn, sin_weights};
    use super::*;
    use candle_core::{Device, Var};

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
        let x = Var::from_vec(x0, shape, &Device::Cpu).unwrap();
        let w = sin_weights(shape);
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
        test_util::assert_finite_differences(&x, grads.get(&x).unwrap(), loss, 1e-6, "x");
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

    /// Loss = Σ f(args) ⊙ w for fixed weights w, and its gradients with respect to `vars`.
    fn grads_of(f: &dyn Fn(&[Tensor]) -> Tensor, vars: &[Var]) -> (f64, Vec<Tensor>) {
        let args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&args);
        let w = sin_weights(y.dims());
        let loss = (y * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        (
            loss.to_scalar::<f64>().unwrap(),
            vars.iter().map(|v| grads.get(v).unwrap().clone()).collect(),
        )
    }

    /// `f`'s gradients against `reference`'s and against finite differences, in f64.
    fn check_op(
        f: &dyn Fn(&[Tensor]) -> Tensor,
        reference: &dyn Fn(&[Tensor]) -> Tensor,
        shapes: &[&[usize]],
    ) {
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Var::from_tensor(&randn(s, 70 + i as u64).to_dtype(DType::F64).unwrap()).unwrap()
            })
            .collect();
        let (l1, g1) = grads_of(f, &vars);
        let (l2, g2) = grads_of(reference, &vars);
        // Gradients carry no graph: a variable's gradient kept by the optimiser would otherwise
        // keep the whole step's graph alive.
        assert!(
            g1.iter().all(|g| !g.track_op()),
            "a gradient carries its graph"
        );
        assert!((l1 - l2).abs() < 1e-10, "values: {l1} vs {l2}");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let d = max_diff(a, b);
            assert!(
                d < 1e-10,
                "input {i}: gradients differ from the composition by {d}"
            );
        }
        for (which, g) in g1.iter().enumerate() {
            let loss = |x: &Tensor| {
                let mut args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach()).collect();
                args[which] = x.clone();
                let consts: Vec<Var> = args.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
                grads_of(f, &consts).0
            };
            test_util::assert_finite_differences(
                &vars[which],
                g,
                loss,
                1e-6,
                &format!("input {which}"),
            );
        }
    }

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

    #[test]
    fn swiglu_matches_the_composition_and_finite_differences() {
        check_op(
            &|a: &[Tensor]| swiglu(&a[0], &a[1]).unwrap(),
            &|a: &[Tensor]| (a[0].silu().unwrap() * &a[1]).unwrap(),
            &[&[3, 5], &[3, 5]],
        );
    }
}
