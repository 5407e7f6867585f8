//! A decoder layer's self-attention, `o(attention(rope(q(h)), rope(k(h)), v(h)))`, as one op on
//! the CPU ([`self_attention`]).
//!
//! Composed, it is eleven ops (three projections, three reshapes, two rotations, attention, a
//! reshape and the o projection), and candle's backward pass gives every one of their inputs a
//! zeroed gradient buffer and an addition into it: a dozen passes over [tokens, hidden] buffers
//! per layer and step, about a tenth of a bf16 LoRA step on the benchmark's 100M model. As one
//! op ([`crate::block`]) the graph holds `h` and the output; the op keeps the rotated queries
//! and keys, the values, the attention's output and its log-sum-exps (the unrotated projections
//! are not kept at all), rotates in place, and computes `∂h` as `∂q·W_q + ∂k·W_k + ∂v·W_v`
//! accumulated in one buffer.
//!
//! It applies on the CPU to f32 activations without a KV cache (training and evaluation), with
//! separate `q_proj`/`k_proj`/`v_proj` and no q/k norms (Llama, Mistral, Qwen2, Gemma 2), frozen
//! base weights (f32, or bf16 with the attention's products in bf16 too) with their biases and
//! any LoRA adapters with their dropout, drawn in the composed layer's order (q, k, v, o).
//! Phi-3's fused projection, Qwen3's q/k norms, generation with a cache and other devices take
//! the composed layer, which is also what the tests compare this op with.

use crate::attention::{self, Block, Columns, Dims};
use crate::block::{anchor, finish, take_saved, Backward, Graph, PreNorm, Proj};
use crate::gemm::bf16::Rows;
use crate::linear::Linear;
use crate::ops::frozen::product_vec;
use crate::ops::with_slice;
use crate::rng::ModelRng;
use crate::rope::rope_in_place;
use candle_core::{DType, Result, Tensor, Var};

/// The four projections of a self-attention block.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) q: &'a Linear,
    pub(crate) k: &'a Linear,
    pub(crate) v: &'a Linear,
    pub(crate) o: &'a Linear,
}

/// What the attention needs besides the projections: query and KV heads, head dimension, the
/// rotation's tables [T, rot], the additive mask [T, T], the scale and the soft-capping.
pub(crate) struct Attn<'a> {
    pub(crate) heads: (usize, usize),
    pub(crate) head_dim: usize,
    pub(crate) cos: &'a Tensor,
    pub(crate) sin: &'a Tensor,
    pub(crate) mask: Option<&'a Tensor>,
    /// The pass's [`Columns`] of its masks.
    pub(crate) columns: &'a Columns,
    pub(crate) scale: f64,
    pub(crate) cap: Option<f64>,
}

/// The self-attention block as one op (see the module docs), or `None` where it does not apply
/// (then the caller composes it). Under `norm` (a frozen RMSNorm of a Llama-style layer), `h` is
/// the residual stream `x` and the op returns `x + block(rms(x)·w)`. `rng` draws LoRA dropout (training); `grad == false` records
/// no graph.
#[allow(clippy::too_many_arguments)]
pub(crate) fn self_attention(
    h: &Tensor,
    norm: Option<PreNorm>,
    parts: Parts<'_>,
    attn: &Attn<'_>,
    grad: bool,
    mut rng: Option<&mut ModelRng>,
    graph: Graph<'_>,
) -> Result<Option<Tensor>> {
    if !h.device().is_cpu() || h.dtype() != DType::F32 {
        return Ok(None);
    }
    let tables_f32 = [attn.cos, attn.sin]
        .iter()
        .all(|x| x.dtype() == DType::F32 && x.device().is_cpu());
    let (Some(mut q), Some(mut k), Some(mut v), Some(mut o), true) = (
        Proj::of(parts.q),
        Proj::of(parts.k),
        Proj::of(parts.v),
        Proj::of(parts.o),
        tables_f32,
    ) else {
        return Ok(None);
    };
    let (b, t, hidden) = h.dims3()?;
    let ((hq, hkv), d) = (attn.heads, attn.head_dim);
    let rot = attn.cos.dim(1)?;
    let fits = q.out_features()? == hq * d
        && k.out_features()? == hkv * d
        && v.out_features()? == hkv * d
        && o.w.dims2()? == (hidden, hq * d)
        && attn.cos.dims2()? == (t, rot)
        && attn.sin.dims2()? == (t, rot)
        && rot <= d
        && rot % 2 == 0
        && hkv > 0
        && hq % hkv == 0
        && attn
            .mask
            .map_or(Ok(true), |m| m.dims2().map(|s| s == (t, t)))?;
    if !fits || hidden == 0 || b * t == 0 {
        return Ok(None);
    }
    let m = b * t;
    // Under a norm, `h` is the residual stream and the block reads its norm.
    let hc = match &norm {
        Some(n) => n.input(h)?,
        None => h.detach().contiguous()?,
    };
    // Dropout in the composed layer's order: q's, k's and v's masks over h, then o's.
    for (p, lin) in [(&mut q, parts.q), (&mut k, parts.k), (&mut v, parts.v)] {
        p.draw_mask(lin, m * hidden, rng.as_deref_mut());
    }
    // bf16 weights: h rounded once for the three products.
    let bf16 = [&q, &k, &v].iter().all(|p| p.w.dtype() == DType::BF16);
    let (mut qs, mut ks, vs) = with_slice::<f32, _>(&hc, |x| {
        let rows = bf16.then(|| Rows::new(x, m, hidden));
        let rows = rows.as_ref();
        Ok((
            q.forward(x, rows, m)?,
            k.forward(x, rows, m)?,
            v.forward(x, rows, m)?,
        ))
    })?;
    let tables = Tables {
        cos: attn.cos.contiguous()?,
        sin: attn.sin.contiguous()?,
        rot,
    };
    tables.rotate(&mut qs, (t, hq, d), 1.0)?;
    tables.rotate(&mut ks, (t, hkv, d), 1.0)?;
    let dm = Dims {
        // Frozen bf16 weights under f32 activations: the attention's products in bf16 too.
        bf16: o.w.dtype() == DType::BF16,
        b,
        t,
        s: t,
        hq,
        hkv,
        d,
    };
    let mask = attn
        .mask
        .map(|m| m.to_dtype(DType::F32)?.contiguous())
        .transpose()?;
    let (scale, cap) = (attn.scale as f32, attn.cap.map(|c| c as f32));
    // The key columns each block of queries reads: worked out once per pass and mask.
    let ((out, lse), cols) = with_mask(mask.as_ref(), |mk| {
        let cols = mask
            .as_ref()
            .zip(mk)
            .map(|(mt, values)| attn.columns.of(mt, values, &dm));
        let run = attention::forward(dm, &qs, &ks, &vs, mk, cols.as_deref(), scale, cap);
        Ok((run, cols))
    })?;
    o.draw_mask(parts.o, m * hq * d, rng);
    let y = o.forward(&out, None, m)?;
    if !grad {
        return finish(
            "fused-self-attention",
            (h, hc, y),
            norm,
            false,
            (),
            None,
            graph,
        )
        .map(Some);
    }
    let anchor = anchor(&[&q, &k, &v, &o]);
    let inner = AttnGrads {
        saved: std::sync::Mutex::new(Some(Saved {
            q: qs,
            k: ks,
            v: vs,
            out,
            lse,
        })),
        projs: [q, k, v, o],
        dm,
        tables,
        mask,
        cols,
        scale,
        cap,
    };
    let out = (h, hc, y);
    finish(
        "fused-self-attention",
        out,
        norm,
        true,
        inner,
        anchor,
        graph,
    )
    .map(Some)
}

/// `f` with the mask's values, if there is a mask.
fn with_mask<R>(mask: Option<&Tensor>, f: impl FnOnce(Option<&[f32]>) -> Result<R>) -> Result<R> {
    match mask {
        Some(m) => with_slice::<f32, _>(m, |s| f(Some(s))),
        None => f(None),
    }
}

/// The rotation's tables, contiguous, and the rotated dimensions per head.
struct Tables {
    cos: Tensor,
    sin: Tensor,
    rot: usize,
}

impl Tables {
    /// Rotates `x` [B, T, heads, D] in place (`sign` −1: back).
    fn rotate(&self, x: &mut [f32], (t, heads, d): (usize, usize, usize), sign: f32) -> Result<()> {
        with_slice::<f32, _>(&self.cos, |c| {
            with_slice::<f32, _>(&self.sin, |s| {
                rope_in_place(x, c, s, (t, heads, d, self.rot), sign);
                Ok(())
            })
        })
    }
}

/// What the forward pass keeps: the rotated queries and keys, the values, the attention's
/// output and its log-sum-exps.
struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
}

/// The fused self-attention's backward pass.
struct AttnGrads {
    saved: std::sync::Mutex<Option<Saved>>,
    /// q, k, v, o.
    projs: [Proj; 4],
    dm: Dims,
    tables: Tables,
    mask: Option<Tensor>,
    cols: Option<std::sync::Arc<[Block]>>,
    scale: f32,
    cap: Option<f32>,
}

impl Backward for AttnGrads {
    fn backward(
        &self,
        x: &[f32],
        m: usize,
        gy: &[f32],
        want_dh: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>> {
        let Saved { q, k, v, out, lse } = take_saved(&self.saved, "fused self-attention")?;
        let [pq, pk, pv, po] = &self.projs;
        let dm = self.dm;
        // o's backward: ∂out = ∂y·W_o, and its adapter's gradients (its input is `out`).
        let mut dout = product_vec(gy, &po.w, false)?;
        po.adapter_backward(gy, &out, m, Some(&mut dout), grads)?;
        let (mut dq, mut dk, dv) = with_mask(self.mask.as_ref(), |mk| {
            Ok(attention::backward(
                dm,
                &q,
                &k,
                &v,
                &out,
                &dout,
                &lse,
                mk,
                self.cols.as_deref(),
                self.scale,
                self.cap,
            ))
        })?;
        drop((q, k, v, out, dout, lse));
        self.tables.rotate(&mut dq, (dm.t, dm.hq, dm.d), -1.0)?;
        self.tables.rotate(&mut dk, (dm.t, dm.hkv, dm.d), -1.0)?;
        let mut dh = if want_dh {
            Some(product_vec(&dq, &pq.w, false)?)
        } else {
            None
        };
        pq.adapter_backward(&dq, x, m, dh.as_deref_mut(), grads)?;
        pk.backward(&dk, x, m, dh.as_deref_mut().map(|d| (d, true)), grads)?;
        pv.backward(&dv, x, m, dh.as_deref_mut().map(|d| (d, true)), grads)?;
        Ok(dh)
    }
}
