//! A decoder layer's SwiGLU MLP, `down(silu(gate(h)) ⊙ up(h))`, as one op on the CPU ([`mlp`]).
//!
//! Run as five ops (three projections, SwiGLU, and the reshapes between), candle's backward pass
//! gives each of them a gradient of its own: a zeroed tensor the size of the op's input, then an
//! addition into it, for `gate` and `up` ([tokens, intermediate] each), SwiGLU's output, and two
//! contributions to `h` — about a fifth of a LoRA step's time on the benchmark's 100M model
//! went to these passes over memory (`docs/performance.md`). As one op the graph holds `h` and
//! the output; the op keeps the projections' outputs `gate` and `up` (SwiGLU's output is not
//! kept: the backward pass computes it again only for an adapter on `down`), writes their
//! gradients over them, and computes `∂h` as `∂gate·W_g + ∂up·W_u` accumulated in one buffer by
//! the GEMM.
//!
//! It applies on the CPU to f32 activations, with separate `gate_proj`/`up_proj` and SiLU
//! (Llama, Mistral, Qwen2, Qwen3), frozen base weights (f32, or bf16 through the bf16 kernel) and
//! any LoRA adapters on the three projections, with their dropout (drawn in the order the
//! composed layer draws it); the op and its adapters' gradients are [`crate::block`]'s. Full
//! fine-tuning, fused `gate_up_proj` (Phi-3), GELU (Gemma 2) and other devices take the composed
//! layer, which is also what the tests compare this op with.

use crate::block::{anchor, finish, take_saved, Backward, Graph, PreNorm, Proj};
use crate::gemm::bf16::Rows;
use crate::linear::Linear;
use crate::ops::frozen::{product_rows, product_rows_into, product_vec};
use crate::ops::swiglu::{swiglu_grads_in_place, swiglu_grads_rows, swiglu_into, swiglu_rows};
use crate::ops::with_slice;
use crate::rng::ModelRng;
use candle_core::{DType, Result, Tensor, Var};

/// The three projections of a SwiGLU MLP.
#[derive(Clone, Copy)]
pub(crate) struct Mlp<'a> {
    pub(crate) gate: &'a Linear,
    pub(crate) up: &'a Linear,
    pub(crate) down: &'a Linear,
}

/// `down(silu(gate(h)) ⊙ up(h))` as one op (see the module docs), or `None` where it does not
/// apply (then the caller composes it). `rng` draws LoRA dropout (training); `grad == false`
/// records no graph.
/// Under `norm` (a frozen RMSNorm of a Llama-style layer), `h` is the residual stream `x` and the
/// op returns `x + mlp(rms(x)·w)`.
pub(crate) fn mlp(
    h: &Tensor,
    norm: Option<PreNorm>,
    parts: Mlp<'_>,
    grad: bool,
    mut rng: Option<&mut ModelRng>,
    graph: Graph<'_>,
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
    // Under a norm, `h` is the residual stream and the block reads its norm.
    let hc = match &norm {
        Some(n) => n.input(h)?,
        None => h.detach().contiguous()?,
    };
    let m = hc.elem_count() / hidden;
    // Dropout in the composed layer's order: gate's and up's masks over h, then down's.
    gate.draw_mask(parts.gate, m * hidden, rng.as_deref_mut());
    up.draw_mask(parts.up, m * hidden, rng.as_deref_mut());
    // bf16 weights: h rounded once for both products, SwiGLU's output made straight in bf16
    // when down has no adapter (which would read it in f32).
    let bf16 = [&gate, &up, &down]
        .iter()
        .all(|p| p.w.dtype() == DType::BF16);
    let (g, u) = with_slice::<f32, _>(&hc, |x| {
        let rows = bf16.then(|| Rows::new(x, m, hidden));
        Ok((
            gate.forward(x, rows.as_ref(), m)?,
            up.forward(x, rows.as_ref(), m)?,
        ))
    })?;
    down.draw_mask(parts.down, m * inter, rng);
    let y = if bf16 && down.lora.is_none() && inter.is_multiple_of(2) {
        down.forward(&[], Some(&swiglu_rows(&g, &u, m, inter)), m)?
    } else {
        let mut a = vec![0f32; m * inter];
        swiglu_into(&g, &u, &mut a);
        down.forward(&a, None, m)?
    };
    if !grad {
        return finish("fused-mlp", (h, hc, y), norm, false, (), None, graph).map(Some);
    }
    let anchor = anchor(&[&gate, &up, &down]);
    let inner = MlpGrads {
        saved: std::sync::Mutex::new(Some((g, u))),
        gate,
        up,
        down,
    };
    finish("fused-mlp", (h, hc, y), norm, true, inner, anchor, graph).map(Some)
}

/// The fused MLP's backward pass.
struct MlpGrads {
    /// The projections' outputs `gate` and `up`, taken by the backward pass.
    saved: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
    gate: Proj,
    up: Proj,
    down: Proj,
}

impl Backward for MlpGrads {
    fn backward(
        &self,
        x: &[f32],
        m: usize,
        gy: &[f32],
        want_dh: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>> {
        let (g, u) = take_saved(&self.saved, "fused mlp")?;
        let inter = g.len() / m.max(1);
        // Down's backward: ∂a = ∂y·W_down, and its adapter's gradients, which need down's input
        // (SwiGLU's output, computed again: it was not kept).
        let mut da = product_vec(gy, &self.down.w, false)?;
        if self.down.lora.is_some() {
            let mut a = vec![0f32; m * inter];
            swiglu_into(&g, &u, &mut a);
            self.down
                .adapter_backward(gy, &a, m, Some(&mut da), grads)?;
        }
        let bf16 = [&self.gate, &self.up]
            .iter()
            .all(|p| p.w.dtype() == DType::BF16 && p.lora.is_none());
        if bf16 && inter.is_multiple_of(2) {
            // No adapter reads them in f32: ∂gate and ∂up straight in bf16 for the products.
            let (dg, du) = swiglu_grads_rows(&g, &u, &da, m, inter);
            drop((g, u, da));
            if !want_dh {
                return Ok(None);
            }
            let mut dh = product_rows(&dg, &self.gate.w, false)?;
            product_rows_into(&du, &self.up.w, &mut dh, true)?;
            return Ok(Some(dh));
        }
        // ∂gate and ∂up over gate and up themselves.
        let (mut dg, mut du) = (g, u);
        swiglu_grads_in_place(&mut dg, &mut du, &da);
        drop(da);
        let mut dh = if want_dh {
            Some(product_vec(&dg, &self.gate.w, false)?)
        } else {
            None
        };
        self.gate
            .adapter_backward(&dg, x, m, dh.as_deref_mut(), grads)?;
        self.up
            .backward(&du, x, m, dh.as_deref_mut().map(|d| (d, true)), grads)?;
        Ok(dh)
    }
}
