//! What the fused CPU blocks ([`crate::mlp`], [`crate::self_attn`]) share: their
//! projections ([`Proj`]: a frozen weight, bias and LoRA adapter applied to slices), the op
//! that puts a block's precomputed output in candle's graph ([`attach`]), and, in Llama-style
//! layers, the RMSNorm before the block and the residual sum after it taken into that op
//! ([`PreNorm`], [`finish`]); in a training pass those Llama-style blocks join a [`Chain`] that
//! enters the graph as one op for the whole run of blocks.
//!
//! A block runs its forward pass on slices, without a graph, and enters the graph as one op of
//! its input `h`: candle's backward pass then makes one gradient buffer for the block instead of
//! one per op inside it (a zeroed tensor and an addition each). The block's backward
//! ([`Backward`]) returns `∂h` and its adapters' gradients; those reach `CausalLm::backward`
//! through [`SideGrads`], except the first adapter's `A`, which is the op's second input: it
//! makes the op part of the graph even when `h` is not (a first layer under a frozen embedding).

use crate::gemm::bf16::Rows;
use crate::linear::{dropout_values, Linear, Param};
use crate::ops::frozen::{product_into, product_rows, product_vec};
use crate::ops::lora::with_low_rank;
use crate::ops::{with_slice, Precomputed, SideGrads};
use crate::rng::ModelRng;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, MetalStorage, Result, Shape,
    Tensor, Var,
};

/// One projection as the fused op uses it: the frozen weight, its frozen bias, and the active
/// adapter (`A`, `B`, scale) with the dropout mask drawn for this pass.
#[derive(Clone)]
pub(crate) struct Proj {
    pub(crate) w: Tensor,
    bias: Option<Tensor>,
    pub(crate) lora: Option<(Var, Var, f32)>,
    mask: Option<Vec<f32>>,
    /// The adapter's `(x⊙mask)·Aᵀ` from the forward pass, for its backward.
    xa: Option<Vec<f32>>,
}

impl Proj {
    /// The projection of `lin` if the fused op can run it: a frozen f32/bf16 weight, a frozen
    /// f32 bias, an f32 adapter.
    pub(crate) fn of(lin: &Linear) -> Option<Proj> {
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
            xa: None,
        })
    }

    /// Draws this projection's dropout mask for `n` inputs, as `Linear::forward` does.
    pub(crate) fn draw_mask(&mut self, lin: &Linear, n: usize, rng: Option<&mut ModelRng>) {
        if let (Some(l), Some(rng)) = (lin.lora.as_ref().filter(|_| !lin.is_merged()), rng) {
            if l.dropout > 0.0 {
                self.mask = Some(dropout_values(n, l.dropout, rng));
            }
        }
    }

    pub(crate) fn out_features(&self) -> Result<usize> {
        Ok(self.w.dims2()?.0)
    }

    /// The adapter's input: `x ⊙ mask`, or `x` itself.
    fn masked<'x>(&self, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        match &self.mask {
            Some(mk) => x.iter().zip(mk).map(|(a, b)| a * b).collect(),
            None => x.into(),
        }
    }

    /// `x·Wᵀ + b + s·(x⊙mask)·Aᵀ·Bᵀ` for `m` rows of `x`, the frozen product from `rows` (`x`
    /// rounded to bf16 once for several projections) when given and `W` is bf16. With `rows`,
    /// `x` is read only by an adapter.
    pub(crate) fn forward(&mut self, x: &[f32], rows: Option<&Rows>, m: usize) -> Result<Vec<f32>> {
        let out = self.out_features()?;
        let mut y = match rows {
            Some(r) if self.w.dtype() == DType::BF16 => product_rows(r, &self.w, true)?,
            _ => product_vec(x, &self.w, true)?,
        };
        if let Some((a, b, s)) = &self.lora {
            let xm = self.masked(x);
            let xa = with_low_rank(a.as_tensor(), b.as_tensor(), *s, |lr| {
                Ok(lr.add_to(&mut y, &xm, m))
            })?;
            self.xa = Some(xa);
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
    pub(crate) fn backward(
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
    pub(crate) fn adapter_backward(
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
            let (gb, da, db) = lr.grads(g, &xm, self.xa.as_deref(), m);
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

/// The RMSNorm before a block and the residual sum after it, taken into the block's op
/// (Llama-style layers): the op's input is the residual stream `x`, the block runs on
/// `rms(x)·w`, and the op returns `x + block(rms(x)·w)`. Two fewer nodes in candle's graph per
/// block, so two fewer zeroed gradient buffers and additions in its backward pass.
pub(crate) struct PreNorm {
    pub(crate) w: Vec<f32>,
    pub(crate) eps: f64,
}

impl PreNorm {
    /// The norm of `lin`'s layer if it is frozen f32 on the CPU (a trained norm takes the
    /// composed path).
    pub(crate) fn of(w: &Param, eps: f64) -> Result<Option<PreNorm>> {
        let Param::Frozen(w) = w else {
            return Ok(None);
        };
        if !w.device().is_cpu() || w.dtype() != DType::F32 {
            return Ok(None);
        }
        Ok(Some(PreNorm {
            w: w.flatten_all()?.to_vec1::<f32>()?,
            eps,
        }))
    }

    /// The block's input rows for `x` [.., d] (d the norm's size): `rms(x)·w`, as a tensor of
    /// `x`'s shape.
    pub(crate) fn input(&self, x: &Tensor) -> Result<Tensor> {
        let xc = x.detach().contiguous()?;
        let d = self.w.len();
        let h = with_slice::<f32, _>(&xc, |xs| {
            Ok(crate::ops::norm::rms_rows(xs, &self.w, d, self.eps))
        })?;
        Tensor::from_vec(h, x.shape(), x.device())
    }
}

/// Where a block enters candle's graph: the side store its adapters' gradients go to, and, in
/// a training pass of Llama-style layers, the [`Chain`] it joins.
#[derive(Clone, Copy)]
pub(crate) struct Graph<'a> {
    pub(crate) side: &'a SideGrads,
    pub(crate) chain: Option<&'a Chain>,
}

/// Puts a block's output in the graph: as [`attach`] does, or, under a [`PreNorm`] (`h` its
/// input rows), as `x + y` with the norm's backward pass after the block's; in a [`Chain`], the
/// block joins it and `x + y` is returned outside the graph until the chain is flushed. `y`
/// becomes `x + y` here.
pub(crate) fn finish<B: Backward + 'static>(
    name: &'static str,
    (x, h, mut y): (&Tensor, Tensor, Vec<f32>),
    norm: Option<PreNorm>,
    grad: bool,
    inner: B,
    anchor: Option<Var>,
    graph: Graph<'_>,
) -> Result<Tensor> {
    if norm.is_some() {
        with_slice::<f32, _>(&x.detach().contiguous()?, |xs| {
            crate::simd::add_assign(&mut y, xs);
            Ok(())
        })?;
    }
    let y = Tensor::from_vec(y, x.shape(), x.device())?;
    if !grad {
        return Ok(y);
    }
    let Some(norm) = norm else {
        return attach(name, (x, y), inner, anchor, graph.side);
    };
    let res = Residual {
        inner: Box::new(inner),
        norm,
        h,
    };
    match graph.chain {
        Some(chain) => {
            chain.push(x, &y, res, anchor)?;
            Ok(y)
        }
        None => attach(name, (x, y), res, anchor, graph.side),
    }
}

/// No backward pass: a block run without a graph ([`finish`] with `grad` false).
impl Backward for () {
    fn backward(
        &self,
        _: &[f32],
        _: usize,
        _: &[f32],
        _: bool,
        _: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>> {
        candle_core::bail!("a block run without a graph has no backward pass")
    }
}

/// A block's backward under a [`PreNorm`]: `∂x = ∂y + ` the norm's input gradient for the
/// block's `∂h`.
struct Residual {
    inner: Box<dyn Backward>,
    norm: PreNorm,
    /// The block's input rows, `rms(x)·w`.
    h: Tensor,
}

impl Residual {
    /// The backward pass with `g` holding `∂y` and, after it, `∂x` (when `want_dx`; returns
    /// whether it was computed).
    fn backward_in_place(
        &self,
        x: &[f32],
        m: usize,
        g: &mut [f32],
        want_dx: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<bool> {
        let dh = with_slice::<f32, _>(&self.h, |h| self.inner.backward(h, m, g, want_dx, grads))?;
        let Some(dh) = dh else {
            return Ok(false);
        };
        crate::ops::norm::rms_dx_add(x, &self.norm.w, &dh, self.norm.eps, g);
        Ok(true)
    }
}

impl Backward for Residual {
    fn backward(
        &self,
        x: &[f32],
        m: usize,
        gy: &[f32],
        want_dx: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>> {
        let mut dx = gy.to_vec();
        Ok(self
            .backward_in_place(x, m, &mut dx, want_dx, grads)?
            .then_some(dx))
    }
}

/// Llama-style blocks of a training pass run back to back, entered in candle's graph as one op
/// when something else reads the last one's output ([`Chain::flush`]) instead of one op each:
/// candle's backward pass gives every op's input a zeroed gradient buffer and an addition into
/// it, and every op's output is copied into the graph — passes over a [tokens, hidden] buffer
/// that one op makes once for all the blocks. The op's backward pass runs the blocks' in
/// reverse, updating one residual gradient in place.
#[derive(Clone)]
pub(crate) struct Chain {
    side: SideGrads,
    links: std::sync::Arc<std::sync::Mutex<Option<Links>>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").finish_non_exhaustive()
    }
}

/// The blocks joined since the last flush.
struct Links {
    /// The first block's input, in the graph.
    root: Tensor,
    /// The last block's output, not yet in the graph.
    last: Tensor,
    /// Each block's input (the residual stream) and backward pass, the first adapter's `A`.
    blocks: Vec<(Tensor, Residual)>,
    anchor: Option<Var>,
}

impl Chain {
    pub(crate) fn new(side: SideGrads) -> Chain {
        Chain {
            side,
            links: Default::default(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Links>>> {
        self.links
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused blocks: chain lock poisoned".into()))
    }

    /// Joins a block that read `x` and returned `y` (outside the graph).
    fn push(&self, x: &Tensor, y: &Tensor, res: Residual, anchor: Option<Var>) -> Result<()> {
        let mut links = self.lock()?;
        let x_in = x.detach().contiguous()?;
        match links.as_mut() {
            Some(l) if l.last.id() == x.id() => {
                l.last = y.clone();
                l.blocks.push((x_in, res));
                l.anchor = l.anchor.take().or(anchor);
            }
            Some(_) => candle_core::bail!(
                "fused blocks: a block read a tensor other than the chain's last output (the chain was not flushed)"
            ),
            None => {
                *links = Some(Links {
                    root: x.clone(),
                    last: y.clone(),
                    blocks: vec![(x_in, res)],
                    anchor,
                })
            }
        }
        Ok(())
    }

    /// `x` as the graph has it: when `x` is the chain's last output, the blocks joined so far
    /// enter the graph as one op and its output is returned; otherwise `x` itself, which must
    /// then not be a joined block's output.
    pub(crate) fn flush(&self, x: &Tensor) -> Result<Tensor> {
        let Some(l) = self.lock()?.take() else {
            return Ok(x.clone());
        };
        if l.last.id() != x.id() {
            candle_core::bail!("fused blocks: the chain was flushed for a tensor it did not make");
        }
        let y = l.last.clone();
        attach(
            "fused-blocks",
            (&l.root, y),
            Blocks(l.blocks),
            l.anchor,
            &self.side,
        )
    }
}

/// The backward pass of a flushed [`Chain`]: the blocks' in reverse.
struct Blocks(Vec<(Tensor, Residual)>);

impl Backward for Blocks {
    fn backward(
        &self,
        _root: &[f32],
        m: usize,
        gy: &[f32],
        want_dx: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>> {
        let mut g = gy.to_vec();
        for (i, (x, res)) in self.0.iter().enumerate().rev() {
            let want = i > 0 || want_dx;
            let more =
                with_slice::<f32, _>(x, |xs| res.backward_in_place(xs, m, &mut g, want, grads))?;
            if !more {
                return Ok(None);
            }
        }
        Ok(Some(g))
    }
}

/// What a block's forward pass left for its backward pass, taken once.
pub(crate) fn take_saved<S>(saved: &std::sync::Mutex<Option<S>>, name: &str) -> Result<S> {
    saved
        .lock()
        .map_err(|_| candle_core::Error::Msg(format!("{name}: lock poisoned")))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: backward ran twice")))
}

/// A fused block's backward pass on slices.
pub(crate) trait Backward: Send + Sync {
    /// `∂h` for the output gradient `gy` of the block run on the `m` rows of `h` (when
    /// `want_dh`), with every adapter's gradient pushed to `grads`. Runs once.
    fn backward(
        &self,
        h: &[f32],
        m: usize,
        gy: &[f32],
        want_dh: bool,
        grads: &mut Vec<(Var, Tensor)>,
    ) -> Result<Option<Vec<f32>>>;
}

/// The first adapter's `A` among a block's projections: the op's second input.
pub(crate) fn anchor(projs: &[&Proj]) -> Option<Var> {
    projs
        .iter()
        .find_map(|p| p.lora.as_ref().map(|(a, _, _)| a.clone()))
}

/// `y`, computed by a block from `h`, as the output of one op in the graph whose backward is
/// `inner`'s (see the module docs), with the block's [`anchor`].
pub(crate) fn attach<B: Backward + 'static>(
    name: &'static str,
    (h, y): (&Tensor, Tensor),
    inner: B,
    anchor: Option<Var>,
    side: &SideGrads,
) -> Result<Tensor> {
    let op = BlockOp {
        name,
        inner,
        anchor: anchor.clone(),
        side: side.clone(),
        out: Precomputed::new(y),
    };
    match anchor {
        Some(a) => h.apply_op2(a.as_tensor(), op),
        None => h.apply_op1(op),
    }
}

/// A block in the graph: `h` (and the first adapter's `A`) in, the precomputed output out.
struct BlockOp<B> {
    name: &'static str,
    inner: B,
    anchor: Option<Var>,
    side: SideGrads,
    out: Precomputed,
}

impl<B: Backward> BlockOp<B> {
    /// `∂h` (when `h` is in the graph) and every adapter's gradient, the anchor's returned apart.
    fn grads(&self, h: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let hc = h.detach().contiguous()?;
        let gy = gy.detach().contiguous()?;
        let hidden = *h.dims().last().unwrap_or(&0);
        let m = hc.elem_count() / hidden.max(1);
        let mut grads = Vec::new();
        let dh = with_slice::<f32, _>(&hc, |x| {
            with_slice::<f32, _>(&gy, |g| {
                self.inner.backward(x, m, g, h.track_op(), &mut grads)
            })
        })?;
        let mut anchor_grad = None;
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: side lock poisoned", self.name)))?;
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

impl<B: Backward> CustomOp1 for BlockOp<B> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        candle_core::bail!("{}: CPU only", self.name)
    }
    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        candle_core::bail!("{}: CPU only", self.name)
    }
    fn bwd(&self, h: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.grads(h, gy)?.0)
    }
}

impl<B: Backward> CustomOp2 for BlockOp<B> {
    fn name(&self) -> &'static str {
        self.name
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
        candle_core::bail!("{}: CPU only", self.name)
    }
    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        candle_core::bail!("{}: CPU only", self.name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_chain_enters_the_graph_once_and_refuses_tensors_it_did_not_make() {
        let side = SideGrads::default();
        let chain = Chain::new(side.clone());
        let graph = Graph {
            side: &side,
            chain: Some(&chain),
        };
        let norm = || PreNorm {
            w: vec![1.0; 4],
            eps: 1e-6,
        };
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let h = x.clone();
        let block = |x: &Tensor| {
            finish(
                "t",
                (x, h.clone(), vec![0.5; 8]),
                Some(norm()),
                true,
                (),
                None,
                graph,
            )
        };
        let y1 = block(&x).unwrap();
        let y2 = block(&y1).unwrap();
        // Joined blocks are outside the graph until flushed: x + 0.5 + 0.5.
        assert_eq!(y2.to_vec2::<f32>().unwrap(), vec![vec![2.0; 4]; 2]);
        assert!(chain.lock().unwrap().as_ref().map(|l| l.blocks.len()) == Some(2));
        // A block reading anything but the last output, or a flush of it, is refused.
        assert!(block(&y1).unwrap_err().to_string().contains("not flushed"));
        assert!(chain
            .flush(&y1)
            .unwrap_err()
            .to_string()
            .contains("did not make"));
        // The flush gives the last output in the graph, once; afterwards tensors pass through.
        let z = block(&y2).unwrap();
        let out = chain.flush(&z).unwrap();
        assert_ne!(out.id(), z.id());
        assert_eq!(out.to_vec2::<f32>().unwrap(), vec![vec![2.5; 4]; 2]);
        assert_eq!(chain.flush(&out).unwrap().id(), out.id());
    }
}
