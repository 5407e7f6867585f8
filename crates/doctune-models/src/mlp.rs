//! A decoder layer's SwiGLU MLP, `down(silu(gate(h)) ⊙ up(h))`, as one op on the CPU ([`mlp`]).
//!
//! Run as five ops (three projections, SwiGLU, and the reshapes between), candle's backward pass
//! gives each of them a gradient of its own: a zeroed tensor the size of the op's input, then an
//! addition into it, for `gate` and `up` ([tokens, intermediate] each), SwiGLU's output, and two
//! contributions to `h` — about a fifth of a LoRA step's time on the benchmark's 100M model
//! went to these passes over memory (`docs/performance.md`). As one op the graph holds `h` and
//! the output; the op keeps the projections' outputs `gate` and `up` (SwiGLU's output is
//! recomputed in the backward pass, one pass over memory, instead of kept), and computes `∂h` as
//! `∂gate·W_g + ∂up·W_u` accumulated in one buffer by the GEMM.
//!
//! It applies on the CPU to f32 activations, with separate `gate_proj`/`up_proj` and SiLU
//! (Llama, Mistral, Qwen2, Qwen3), frozen base weights (f32, or bf16 through the bf16 kernel) and
//! any LoRA adapters on the three projections, with their dropout (drawn in the order the
//! composed layer draws it). The adapters' gradients reach the backward pass through
//! [`SideGrads`], except the first adapter's `A`, which is the op's second input: it makes the op
//! part of the graph even when `h` is not (a first layer under a frozen embedding). Full
//! fine-tuning, fused `gate_up_proj` (Phi-3), GELU (Gemma 2) and other devices take the composed
//! layer, which is also what the tests compare this op with.

use crate::linear::{dropout_values, Linear, Param};
use crate::ops::frozen::{product_into, product_vec};
use crate::ops::lora::with_low_rank;
use crate::ops::swiglu::{swiglu_grads_in_place, swiglu_into};
use crate::ops::{with_slice, Precomputed, SideGrads};
use crate::rng::ModelRng;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, MetalStorage, Result, Shape,
    Tensor, Var,
};

/// The three projections of a SwiGLU MLP.
#[derive(Clone, Copy)]
pub(crate) struct Mlp<'a> {
    pub(crate) gate: &'a Linear,
    pub(crate) up: &'a Linear,
    pub(crate) down: &'a Linear,
}

/// One projection as the fused op uses it: the frozen weight, its frozen bias, and the active
/// adapter (`A`, `B`, scale) with the dropout mask drawn for this pass.
#[derive(Clone)]
struct Proj {
    w: Tensor,
    bias: Option<Tensor>,
    lora: Option<(Var, Var, f32)>,
    mask: Option<Vec<f32>>,
}

impl Proj {
    /// The projection of `lin` if the fused op can run it: a frozen f32/bf16 weight, a frozen
    /// f32 bias, an f32 adapter.
    fn of(lin: &Linear) -> Option<Proj> {
        let Param::Frozen(w) = &lin.weight else {
            return None;
        };
        if !w.device().is_cpu() || !matches!(w.dtype(), DType::F32 | DType::BF16) {
            return None;
        }
        let bias = match &lin.bias {
            None => None,
            Some(Param::Frozen(b)) if b.dtype() == DType::F32 => Some(b.clone()),
            Some(_) => return None,
        };
        let lora = match lin.lora.as_ref().filter(|_| !lin.is_merged()) {
            None => None,
            Some(l) if l.a.dtype() == DType::F32 && l.b.dtype() == DType::F32 => {
                Some((l.a.clone(), l.b.clone(), l.scale as f32))
            }
            Some(_) => return None,
        };
        Some(Proj {
            w: w.clone(),
            bias,
            lora,
            mask: None,
        })
    }

    /// Draws this projection's dropout mask for `n` inputs, as `Linear::forward` does.
    fn draw_mask(&mut self, lin: &Linear, n: usize, rng: Option<&mut ModelRng>) {
        if let (Some(l), Some(rng)) = (lin.lora.as_ref().filter(|_| !lin.is_merged()), rng) {
            if l.dropout > 0.0 {
                self.mask = Some(dropout_values(n, l.dropout, rng));
            }
        }
    }

    fn out_features(&self) -> Result<usize> {
        Ok(self.w.dims2()?.0)
    }

    /// The adapter's input: `x ⊙ mask`, or `x` itself.
    fn masked<'x>(&self, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        match &self.mask {
            Some(mk) => x.iter().zip(mk).map(|(a, b)| a * b).collect(),
            None => x.into(),
        }
    }

    /// `x·Wᵀ + b + s·(x⊙mask)·Aᵀ·Bᵀ` for `m` rows of `x`.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let out = self.out_features()?;
        let mut y = product_vec(x, &self.w, true)?;
        if let Some((a, b, s)) = &self.lora {
            let xm = self.masked(x);
            with_low_rank(a.as_tensor(), b.as_tensor(), *s, |lr| {
                lr.add_to(&mut y, &xm, m);
                Ok(())
            })?;
        }
        if let Some(b) = &self.bias {
            with_slice::<f32, _>(b, |bv| {
                for row in y.chunks_mut(out) {
                    for (v, b) in row.iter_mut().zip(bv) {
                        *v += b;
                    }
                }
                Ok(())
            })?;
        }
        Ok(y)
    }

    /// The backward pass for the output gradient `g` of `m` rows: the adapter's gradients into
    /// `grads`, and `dx (+)= g·W + s·(g·B)·A ⊙ mask` when `dx` is given.
    fn backward(
        &self,
        g: &[f32],
        x: &[f32],
        m: usize,
        dx: Option<(&mut [f32], bool)>,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<()> {
        if let Some((dx, accumulate)) = dx {
            product_into(g, &self.w, false, dx, accumulate)?;
            self.adapter_backward(g, x, m, Some(dx), grads)
        } else {
            self.adapter_backward(g, x, m, None, grads)
        }
    }

    /// The adapter's part of [`Proj::backward`].
    fn adapter_backward(
        &self,
        g: &[f32],
        x: &[f32],
        m: usize,
        dx: Option<&mut [f32]>,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<()> {
        let Some((a, b, s)) = &self.lora else {
            return Ok(());
        };
        let xm = self.masked(x);
        let (da, db) = with_low_rank(a.as_tensor(), b.as_tensor(), *s, |lr| {
            let (gb, da, db) = lr.grads(g, &xm, m);
            if let Some(dx) = dx {
                lr.add_input_grad(dx, &gb, self.mask.as_deref(), m);
            }
            Ok((da, db))
        })?;
        grads.push((a.clone(), Tensor::from_vec(da, a.shape(), a.device())?));
        grads.push((b.clone(), Tensor::from_vec(db, b.shape(), b.device())?));
        Ok(())
    }
}

/// `down(silu(gate(h)) ⊙ up(h))` as one op (see the module docs), or `None` where it does not
/// apply (then the caller composes it). `rng` draws LoRA dropout (training); `grad == false`
/// records no graph.
pub(crate) fn mlp(
    h: &Tensor,
    parts: Mlp<'_>,
    grad: bool,
    mut rng: Option<&mut ModelRng>,
    side: &SideGrads,
) -> Result<Option<Tensor>> {
    if !h.device().is_cpu() || h.dtype() != DType::F32 {
        return Ok(None);
    }
    let (Some(mut gate), Some(mut up), Some(mut down)) = (
        Proj::of(parts.gate),
        Proj::of(parts.up),
        Proj::of(parts.down),
    ) else {
        return Ok(None);
    };
    let hidden = *h.dims().last().unwrap_or(&0);
    let inter = gate.out_features()?;
    if hidden == 0 || up.out_features()? != inter || down.w.dims2()? != (hidden, inter) {
        return Ok(None);
    }
    let hc = h.detach().contiguous()?;
    let m = hc.elem_count() / hidden;
    // Dropout in the composed layer's order: gate's and up's masks over h, then down's.
    gate.draw_mask(parts.gate, m * hidden, rng.as_deref_mut());
    up.draw_mask(parts.up, m * hidden, rng.as_deref_mut());
    let (g, u) = with_slice::<f32, _>(&hc, |x| Ok((gate.forward(x, m)?, up.forward(x, m)?)))?;
    let mut a = vec![0f32; m * inter];
    swiglu_into(&g, &u, &mut a);
    down.draw_mask(parts.down, m * inter, rng);
    let y = down.forward(&a, m)?;
    let y = Tensor::from_vec(y, h.shape(), h.device())?;
    if !grad {
        return Ok(Some(y));
    }
    let anchor = [&gate, &up, &down]
        .into_iter()
        .find_map(|p| p.lora.as_ref().map(|(a, _, _)| a.clone()));
    let op = MlpOp {
        gate,
        up,
        down,
        saved: std::sync::Mutex::new(Some((g, u))),
        anchor: anchor.clone(),
        side: side.clone(),
        out: Precomputed::new(y),
    };
    Ok(Some(match anchor {
        Some(a) => h.apply_op2(a.as_tensor(), op)?,
        None => h.apply_op1(op)?,
    }))
}

/// The fused MLP in the graph: `h` (and the first adapter's `A`) in, the output out.
struct MlpOp {
    gate: Proj,
    up: Proj,
    down: Proj,
    /// The projections' outputs `gate` and `up`, taken by the backward pass.
    saved: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
    anchor: Option<Var>,
    side: SideGrads,
    out: Precomputed,
}

impl MlpOp {
    /// `∂h` (when `h` is in the graph) and every adapter's gradient, the anchor's returned apart.
    fn grads(&self, h: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, u) = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused mlp: lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("fused mlp: backward ran twice".into()))?;
        let want_dh = h.track_op();
        let hc = h.detach().contiguous()?;
        let gy = gy.detach().contiguous()?;
        let hidden = *h.dims().last().unwrap_or(&0);
        let m = hc.elem_count() / hidden.max(1);
        let inter = g.len() / m.max(1);
        let mut grads = Vec::new();
        // Down's backward: ∂a = ∂y·W_down, and its adapter's gradients, which need down's input
        // (SwiGLU's output, computed again: it was not kept).
        let da = with_slice::<f32, _>(&gy, |gy| {
            let da = product_vec(gy, &self.down.w, false)?;
            if self.down.lora.is_some() {
                let mut a = vec![0f32; m * inter];
                swiglu_into(&g, &u, &mut a);
                let mut da = da;
                self.down
                    .adapter_backward(gy, &a, m, Some(&mut da), &mut grads)?;
                return Ok(da);
            }
            Ok(da)
        })?;
        // ∂gate and ∂up over gate and up themselves.
        let (mut dg, mut du) = (g, u);
        swiglu_grads_in_place(&mut dg, &mut du, &da);
        drop(da);
        let dh = with_slice::<f32, _>(&hc, |x| {
            let mut dh = if want_dh {
                Some(product_vec(&dg, &self.gate.w, false)?)
            } else {
                None
            };
            self.gate
                .adapter_backward(&dg, x, m, dh.as_deref_mut(), &mut grads)?;
            self.up
                .backward(&du, x, m, dh.as_deref_mut().map(|d| (d, true)), &mut grads)?;
            Ok(dh)
        })?;
        let mut anchor_grad = None;
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused mlp: side lock poisoned".into()))?;
        for (var, grad) in grads {
            match &self.anchor {
                Some(a) if a.id() == var.id() => anchor_grad = Some(grad),
                _ => side.push((var, grad)),
            }
        }
        let dh = dh
            .map(|d| Tensor::from_vec(d, h.shape(), h.device()))
            .transpose()?;
        Ok((dh, anchor_grad))
    }
}

impl CustomOp1 for MlpOp {
    fn name(&self) -> &'static str {
        "fused-mlp"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        candle_core::bail!("fused mlp: CPU only")
    }
    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        candle_core::bail!("fused mlp: CPU only")
    }
    fn bwd(&self, h: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.grads(h, gy)?.0)
    }
}

impl CustomOp2 for MlpOp {
    fn name(&self) -> &'static str {
        "fused-mlp"
    }
    fn cpu_fwd(
        &self,
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
    ) -> Result<(CudaStorage, Shape)> {
        candle_core::bail!("fused mlp: CPU only")
    }
    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        candle_core::bail!("fused mlp: CPU only")
    }
    fn bwd(
        &self,
        h: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(h, gy)
    }
}
