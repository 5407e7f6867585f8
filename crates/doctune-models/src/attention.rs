//! Attention and rotary embedding in the projections' own `[batch, seq, heads, head_dim]`
//! layout, fused on the CPU.
//!
//! [`attention`] computes `softmax(softcap(scale · q·kᵀ) + mask) · v` per (batch, head) with
//! its own GEMMs, FlashAttention-style: the `[T, S]` scores of one block of query rows exist
//! only while that block is computed, and the op keeps nothing for the backward pass but its
//! inputs, its output and one log-sum-exp per query row; the backward pass recomputes the
//! probabilities block by block. Blocks skip the key columns the mask blocks for all of their
//! rows (the upper triangle of a causal mask, what lies outside a sliding window). Grouped-query
//! attention reads the shared K/V head in place. Work is spread over (batch, KV head) pairs,
//! each running single-threaded GEMMs (`gemm`, the kernels candle's matmul uses), which keeps
//! both cores busy where one `[T, S]` GEMM per head is too small to split.
//!
//! When the model trains in bf16 on the CPU (frozen bf16 weights, f32 activations), the
//! products round their operands to bf16 and sum in f32 ([`crate::gemm::bf16::gemm_rounded`]),
//! as PyTorch's autocast runs attention; the softmax, the log-sum-exps and the gradients' sums
//! stay f32. Each (batch, KV head) packs its keys and values once, in the layouts the products
//! read (Kᵀ and V forward, Kᵀ, Vᵀ and K backward), and blocks start at a multiple of the
//! packed panels' width (the columns a block gains that way are masked for all its rows).
//!
//! It runs fused on the CPU in f32/f64 and falls back to compositions of candle ops elsewhere
//! (GPU, half precision), which are also the references the tests compare them with.

use crate::ops::{fused, masked_softmax, slice, softcap, softmax_last_dim, with_slice};
use candle_core::{
    CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, TensorId, WithDType,
};
use num_traits::Float;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Query rows per block.
const BLOCK: usize = 64;

/// Attention for `q` [B, T, Hq, D] and `k`, `v` [B, S, Hkv, D] (Hq a multiple of Hkv), with an
/// additive `mask` [T, S] (0 or −∞), `scale` applied to the scores and optional soft-capping of
/// the scaled scores (Gemma 2). Returns [B, T, Hq, D]. With `bf16`, the fused op's products
/// round f32 operands to bf16 (see the module docs).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    cap: Option<f64>,
    bf16: bool,
) -> Result<Tensor> {
    let (b, t, hq, d) = q.dims4()?;
    let (bk, s, hkv, dk) = k.dims4()?;
    if bk != b || dk != d || v.dims4()? != (b, s, hkv, d) || hkv == 0 || hq % hkv != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit together",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if let Some(m) = mask {
        if m.dims2()? != (t, s) {
            candle_core::bail!("attention: mask {:?} for {t} queries, {s} keys", m.dims());
        }
    }
    if fused(q) && k.dtype() == q.dtype() && v.dtype() == q.dtype() {
        let mask = mask
            .map(|m| m.to_dtype(q.dtype())?.contiguous())
            .transpose()?;
        let op = AttentionOp {
            mask,
            bf16: bf16 && q.dtype() == DType::F32,
            scale,
            cap,
            lse: Mutex::new(None),
        };
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op);
    }
    attention_composed(q, k, v, mask, scale, cap)
}

/// The same as a composition of candle ops (the GPU path and the tests' reference).
pub fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    cap: Option<f64>,
) -> Result<Tensor> {
    let (b, t, hq, d) = q.dims4()?;
    let hkv = k.dim(2)?;
    let n_rep = hq / hkv;
    // Grouped-query attention without copying K/V n_rep times: the n_rep query heads that share
    // a KV head are stacked along the rows.
    let q = (q.transpose(1, 2)?.contiguous()? * scale)?.reshape((b, hkv, n_rep * t, d))?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let v = v.transpose(1, 2)?.contiguous()?;
    // Soft-capping and softmax in f32 for half-precision inputs, as transformers' eager
    // attention computes them (`softmax(..., dtype=torch.float32).to(query.dtype)`).
    let dtype = q.dtype();
    let wide = crate::linear::master_dtype(dtype);
    let mut scores = q.matmul(&k.t()?)?.to_dtype(wide)?;
    if let Some(cap) = cap {
        scores = softcap(&scores, cap)?;
    }
    // Rows of `scores` are (batch, kv head, query head in group, query position): the mask row
    // of each is its index modulo t.
    let probs = match mask {
        Some(mask) => masked_softmax(&scores, &mask.to_dtype(wide)?)?,
        None => softmax_last_dim(&scores)?,
    };
    probs
        .to_dtype(dtype)?
        .matmul(&v)?
        .reshape((b, hq, t, d))?
        .transpose(1, 2)?
        .contiguous()
}

use crate::gemm::bf16::PackedRhs;
use crate::gemm::View;

/// The right operand of a product: values through a view, or (bf16) the part of a packed key
/// or value matrix from (row, column).
enum Rhs<'a, T> {
    Values(&'a [T], View),
    Packed(&'a PackedRhs, (usize, usize)),
}

/// `x` as f32 values when `T` is f32.
fn f32s<T: 'static>(x: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32 (checked just above).
        .then(|| {
            #[allow(unsafe_code)]
            unsafe {
                &*(x as *const [T] as *const [f32])
            }
        })
}

/// `dst[m×n] = (acc ? dst : 0) + beta · lhs[m×k] · rhs[k×n]`, single-threaded, bounds-checked;
/// with f32 operands rounded to bf16 when `bf16` ([`crate::gemm::bf16::gemm_rounded`]).
#[allow(clippy::too_many_arguments)]
fn gemm<T: Float + 'static>(
    bf16: bool,
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dv: View,
    acc: bool,
    lhs: &[T],
    lv: View,
    rhs: Rhs<'_, T>,
    beta: T,
) {
    if m == 0 || n == 0 {
        return;
    }
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above), so the slices are f32 slices.
        #[allow(unsafe_code)]
        let (dst, beta) = unsafe {
            (
                &mut *(dst as *mut [T] as *mut [f32]),
                *(&beta as *const T as *const f32),
            )
        };
        let lhs = f32s(lhs).expect("T is f32");
        match rhs {
            Rhs::Packed(p, at) => crate::gemm::bf16::gemm_rounded_packed(
                (m, n, k),
                dst,
                dv,
                acc,
                lhs,
                lv,
                p,
                at,
                beta,
            ),
            Rhs::Values(rhs, rv) => {
                let rhs = f32s(rhs).expect("T is f32");
                if bf16 {
                    crate::gemm::bf16::gemm_rounded(
                        (m, n, k),
                        dst,
                        dv,
                        acc,
                        lhs,
                        lv,
                        rhs,
                        rv,
                        beta,
                    );
                } else {
                    // DocTune's kernels (the family chosen for the process); one task per
                    // thread already.
                    crate::gemm::sgemm((m, n, k), dst, dv, acc, lhs, lv, rhs, rv, beta, false);
                }
            }
        }
        return;
    }
    let Rhs::Values(rhs, rv) = rhs else {
        unreachable!("packed operands are f32");
    };
    assert!(dv.end(m, n) <= dst.len() && lv.end(m, k) <= lhs.len() && rv.end(k, n) <= rhs.len());
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    dst[dv.off + i * dv.rs + j * dv.cs] = T::zero();
                }
            }
        }
        return;
    }
    // SAFETY: the assertion above keeps every element the three matrices address inside its
    // slice; `dst` is borrowed mutably and does not alias `lhs` or `rhs`.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dv.off),
            dv.cs as isize,
            dv.rs as isize,
            acc,
            lhs.as_ptr().add(lv.off),
            lv.cs as isize,
            lv.rs as isize,
            rhs.as_ptr().add(rv.off),
            rv.cs as isize,
            rv.rs as isize,
            T::one(),
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Shapes and strides of one attention call: batch, queries, keys, query heads, KV heads, head
/// dimension, and whether the products are bf16 (f32 operands only).
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) bf16: bool,
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) s: usize,
    pub(crate) hq: usize,
    pub(crate) hkv: usize,
    pub(crate) d: usize,
}

impl Dims {
    fn n_rep(&self) -> usize {
        self.hq / self.hkv
    }
    /// What blocks' first key columns are a multiple of: packed keys and values are read from
    /// their panels' first columns.
    fn align(&self) -> usize {
        if self.bf16 {
            PackedRhs::ALIGN
        } else {
            1
        }
    }
    /// Row (b, pos) of query head h, in [B, T, Hq, D].
    fn q(&self, b: usize, pos: usize, h: usize) -> View {
        View::at(
            ((b * self.t + pos) * self.hq + h) * self.d,
            self.hq * self.d,
            1,
        )
    }
    /// Row (b, pos) of KV head g, in [B, S, Hkv, D].
    fn kv(&self, b: usize, pos: usize, g: usize) -> View {
        View::at(
            ((b * self.s + pos) * self.hkv + g) * self.d,
            self.hkv * self.d,
            1,
        )
    }
    /// Kᵀ's block starting at key `pos`: element (dim, key) .
    fn kv_t(&self, b: usize, pos: usize, g: usize) -> View {
        let v = self.kv(b, pos, g);
        View::at(v.off, 1, v.rs)
    }
}

/// The four ways the products read keys and values: Kᵀ [D, S] and V [S, D] (forward), Vᵀ and
/// K (backward).
#[derive(Clone, Copy)]
enum Read {
    Kt,
    V,
    Vt,
    K,
}

impl Read {
    fn keys(self) -> bool {
        matches!(self, Read::Kt | Read::K)
    }
    fn transposed(self) -> bool {
        matches!(self, Read::Kt | Read::Vt)
    }
}

/// The keys and values of one (batch, KV head) as the products read them: through views, or,
/// when the products are bf16, rounded and packed once for all the blocks of query rows.
struct Kv<'a, T> {
    dm: Dims,
    b: usize,
    g: usize,
    k: &'a [T],
    v: &'a [T],
    /// Packed, per [`Read`] (the ones its pass uses).
    packed: [Option<PackedRhs>; 4],
}

impl<'a, T: Float + 'static> Kv<'a, T> {
    fn new(dm: Dims, (b, g): (usize, usize), k: &'a [T], v: &'a [T], backward: bool) -> Self {
        let mut kv = Kv {
            dm,
            b,
            g,
            k,
            v,
            packed: [None, None, None, None],
        };
        let used: &[Read] = if backward {
            &[Read::Kt, Read::Vt, Read::K]
        } else {
            &[Read::Kt, Read::V]
        };
        for &read in used {
            let (x, view) = kv.values(read, 0);
            let packed = f32s(x).filter(|_| dm.bf16).map(|x| {
                let dims = if read.transposed() {
                    (dm.d, dm.s)
                } else {
                    (dm.s, dm.d)
                };
                PackedRhs::new(dims, x, view)
            });
            kv.packed[read as usize] = packed;
        }
        kv
    }

    /// The values `read` reads from key `c0` on, and their view.
    fn values(&self, read: Read, c0: usize) -> (&'a [T], View) {
        let (dm, b, g) = (&self.dm, self.b, self.g);
        let x = if read.keys() { self.k } else { self.v };
        let view = if read.transposed() {
            dm.kv_t(b, c0, g)
        } else {
            dm.kv(b, c0, g)
        };
        (x, view)
    }

    /// The operand `read` from key `c0` on: packed where it was, else through a view.
    fn rhs(&self, read: Read, c0: usize) -> Rhs<'_, T> {
        match &self.packed[read as usize] {
            Some(p) if read.transposed() => Rhs::Packed(p, (0, c0)),
            Some(p) => Rhs::Packed(p, (c0, 0)),
            None => {
                let (x, view) = self.values(read, c0);
                Rhs::Values(x, view)
            }
        }
    }
}

/// The key columns one block of query rows needs, `c0..c1` (from the first column any of its
/// rows can see to one past the last; all of them without a mask), and `m0..m1` within it, the
/// columns where the mask is not 0 for some row (the only ones it must be added to: the causal
/// diagonal, a sliding window's edge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Block {
    c0: usize,
    c1: usize,
    m0: usize,
    m1: usize,
}

/// Each block's columns (see [`Block`]), starting at a multiple of `align` (the columns
/// before the first a block sees are masked for all its rows, so they join the masked range).
fn column_ranges<T: Float>(mask: Option<&[T]>, t: usize, s: usize, align: usize) -> Vec<Block> {
    let mut blocks = visible_columns(mask, t, s);
    for b in blocks
        .iter_mut()
        .filter(|b| b.c1 > b.c0 && b.c0 % align != 0)
    {
        let start = b.c0 - b.c0 % align;
        if b.m0 >= b.m1 {
            b.m1 = b.c0;
        }
        (b.c0, b.m0) = (start, start);
    }
    blocks
}

/// The [`Block`]s of the masks a pass reads, each worked out once: every layer reads the same
/// mask (a scan of its [T, S] values), with the same kind of product.
#[derive(Debug, Default)]
pub(crate) struct Columns(Mutex<Vec<ColumnsOf>>);

/// The blocks of one mask (by id) for one alignment.
type ColumnsOf = ((TensorId, usize), Arc<[Block]>);

impl Columns {
    /// The blocks of `mask` (its values `values`) for the products of `dm`.
    pub(crate) fn of(&self, mask: &Tensor, values: &[f32], dm: &Dims) -> Arc<[Block]> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (mask.id(), dm.align());
        if let Some((_, cols)) = seen.iter().find(|(k, _)| *k == key) {
            return cols.clone();
        }
        let cols: Arc<[Block]> = column_ranges(Some(values), dm.t, dm.s, dm.align()).into();
        seen.push((key, cols.clone()));
        cols
    }
}

/// Each block's columns, from the first any of its rows sees.
fn visible_columns<T: Float>(mask: Option<&[T]>, t: usize, s: usize) -> Vec<Block> {
    (0..t.div_ceil(BLOCK))
        .map(|blk| {
            let rows = blk * BLOCK..((blk + 1) * BLOCK).min(t);
            let Some(m) = mask else {
                return Block {
                    c0: 0,
                    c1: s,
                    m0: 0,
                    m1: 0,
                };
            };
            let (mut lo, mut hi) = (s, 0);
            for r in rows.clone() {
                let row = &m[r * s..(r + 1) * s];
                if let Some(first) = row.iter().position(|v| v.is_finite()) {
                    lo = lo.min(first);
                    let last = row.iter().rposition(|v| v.is_finite()).unwrap_or(first);
                    hi = hi.max(last + 1);
                }
            }
            if lo >= hi {
                return Block {
                    c0: 0,
                    c1: 0,
                    m0: 0,
                    m1: 0,
                };
            }
            let (mut m0, mut m1) = (hi, lo);
            for r in rows {
                let row = &m[r * s + lo..r * s + hi];
                if let Some(first) = row.iter().position(|v| *v != T::zero()) {
                    m0 = m0.min(lo + first);
                    let last = row.iter().rposition(|v| *v != T::zero()).unwrap_or(first);
                    m1 = m1.max(lo + last + 1);
                }
            }
            if m0 >= m1 {
                (m0, m1) = (lo, lo);
            }
            Block {
                c0: lo,
                c1: hi,
                m0,
                m1,
            }
        })
        .collect()
}

/// Scores of rows `r0..r1` against keys `c0..c1` into `sc` ([rows × w]): scaled, soft-capped
/// (the tanh kept in `tanh` for the backward pass when asked) and masked.
#[allow(clippy::too_many_arguments)]
fn scores<T: Float + 'static>(
    dm: &Dims,
    q: &[T],
    kv: &Kv<'_, T>,
    mask: Option<&[T]>,
    (b, h, r0, r1): (usize, usize, usize, usize),
    blk: Block,
    scale: T,
    cap: Option<T>,
    sc: &mut [T],
    mut tanh: Option<&mut [T]>,
) {
    let Block { c0, c1, m0, m1 } = blk;
    let (rows, w) = (r1 - r0, c1 - c0);
    gemm(
        dm.bf16,
        (rows, w, dm.d),
        sc,
        View::at(0, w, 1),
        false,
        q,
        dm.q(b, r0, h),
        kv.rhs(Read::Kt, c0),
        scale,
    );
    if let Some(cap) = cap {
        for (i, x) in sc[..rows * w].iter_mut().enumerate() {
            let th = (*x / cap).tanh();
            if let Some(t) = tanh.as_deref_mut() {
                t[i] = th;
            }
            *x = th * cap;
        }
    }
    if let Some(m) = mask {
        for i in 0..rows {
            let mrow = &m[(r0 + i) * dm.s + m0..(r0 + i) * dm.s + m1];
            crate::simd::add_assign_any(&mut sc[i * w + (m0 - c0)..i * w + (m1 - c0)], mrow);
        }
    }
}

/// Forward: the output [B, T, Hq, D] and the log-sum-exp of every (b, h, row) [B, Hq, T].
/// `cols`: the mask's [`Columns`] when known (computed here otherwise).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float + Send + Sync + 'static>(
    dm: Dims,
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    cols: Option<&[Block]>,
    scale: T,
    cap: Option<T>,
) -> (Vec<T>, Vec<T>) {
    let cols = cols.map_or_else(
        || column_ranges(mask, dm.t, dm.s, dm.align()).into(),
        Cow::from,
    );
    // One (b, h) per task; each returns its [T, D] output and [T] log-sum-exps.
    // The scores' buffer is made once per rayon job, not per task: every block writes the part
    // it reads.
    // Keys and values once per (batch, KV head), shared by its query heads.
    let kvs: Vec<Kv<'_, T>> = (0..dm.b * dm.hkv)
        .into_par_iter()
        .map(|i| Kv::new(dm, (i / dm.hkv, i % dm.hkv), k, v, false))
        .collect();
    let parts: Vec<(Vec<T>, Vec<T>)> = (0..dm.b * dm.hq)
        .into_par_iter()
        .map_init(
            || vec![T::zero(); BLOCK * dm.s],
            |sc, item| {
                let (b, h) = (item / dm.hq, item % dm.hq);
                let kv = &kvs[b * dm.hkv + h / dm.n_rep()];
                let mut out = vec![T::zero(); dm.t * dm.d];
                let mut lse = vec![T::neg_infinity(); dm.t];
                for (blk, &block) in cols.iter().enumerate() {
                    let (r0, r1) = (blk * BLOCK, ((blk + 1) * BLOCK).min(dm.t));
                    let c0 = block.c0;
                    let (rows, w) = (r1 - r0, block.c1 - c0);
                    if w == 0 {
                        continue;
                    }
                    scores(
                        &dm,
                        q,
                        kv,
                        mask,
                        (b, h, r0, r1),
                        block,
                        scale,
                        cap,
                        sc,
                        None,
                    );
                    for i in 0..rows {
                        if let Some((max, sum)) =
                            crate::simd::softmax_row(&mut sc[i * w..(i + 1) * w])
                        {
                            lse[r0 + i] = max + sum.ln();
                        }
                    }
                    gemm(
                        dm.bf16,
                        (rows, dm.d, w),
                        &mut out,
                        View::at(r0 * dm.d, dm.d, 1),
                        false,
                        sc,
                        View::at(0, w, 1),
                        kv.rhs(Read::V, c0),
                        T::one(),
                    );
                }
                (out, lse)
            },
        )
        .collect();
    // [B, T, Hq, D] from the (b, h) parts.
    let out = interleave(&dm, dm.t, dm.hq, |b, pos, h| {
        &parts[b * dm.hq + h].0[pos * dm.d..(pos + 1) * dm.d]
    });
    let lse = parts.into_iter().flat_map(|(_, l)| l).collect();
    (out, lse)
}

/// Gradients (dq, dk, dv) from the output's gradient `go`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float + Send + Sync + 'static>(
    dm: Dims,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    go: &[T],
    lse: &[T],
    mask: Option<&[T]>,
    cols: Option<&[Block]>,
    scale: T,
    cap: Option<T>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let cols = cols.map_or_else(
        || column_ranges(mask, dm.t, dm.s, dm.align()).into(),
        Cow::from,
    );
    let n_rep = dm.n_rep();
    // One (b, KV head) per task, through the query heads that share it: dk and dv of a KV head
    // are written by one task only.
    type Part<T> = (Vec<T>, Vec<T>, Vec<T>);
    // The probabilities', their gradient's and the soft-capping's buffers are made once per
    // rayon job, not per task: every block writes the parts it reads.
    let scratch = || {
        let th = if cap.is_some() { BLOCK * dm.s } else { 0 };
        (
            vec![T::zero(); BLOCK * dm.s],
            vec![T::zero(); BLOCK * dm.s],
            vec![T::zero(); th],
        )
    };
    let parts: Vec<Part<T>> = (0..dm.b * dm.hkv)
        .into_par_iter()
        .map_init(scratch, |(p, dp, th), item| {
            let (b, g) = (item / dm.hkv, item % dm.hkv);
            let kv = Kv::new(dm, (b, g), k, v, true);
            let mut dq = vec![T::zero(); n_rep * dm.t * dm.d];
            let mut dk = vec![T::zero(); dm.s * dm.d];
            let mut dv = vec![T::zero(); dm.s * dm.d];
            let mut delta = [T::zero(); BLOCK];
            for r in 0..n_rep {
                let h = g * n_rep + r;
                for (blk, &block) in cols.iter().enumerate() {
                    let (r0, r1) = (blk * BLOCK, ((blk + 1) * BLOCK).min(dm.t));
                    let c0 = block.c0;
                    let (rows, w) = (r1 - r0, block.c1 - c0);
                    if w == 0 {
                        continue;
                    }
                    let tanh = cap.is_some().then_some(&mut th[..]);
                    scores(
                        &dm,
                        q,
                        &kv,
                        mask,
                        (b, h, r0, r1),
                        block,
                        scale,
                        cap,
                        p,
                        tanh,
                    );
                    for i in 0..rows {
                        let l = lse[(b * dm.hq + h) * dm.t + r0 + i];
                        let row = &mut p[i * w..(i + 1) * w];
                        if l == T::neg_infinity() {
                            row.iter_mut().for_each(|x| *x = T::zero());
                        } else {
                            crate::simd::exp_sub_sum_any(row, l);
                        }
                        let qo = dm.q(b, r0 + i, h).off;
                        delta[i] = crate::simd::dot_any(&go[qo..qo + dm.d], &out[qo..qo + dm.d]);
                    }
                    // dV[c0..c1] += Pᵀ · dO
                    gemm(
                        dm.bf16,
                        (w, dm.d, rows),
                        &mut dv,
                        View::at(c0 * dm.d, dm.d, 1),
                        true,
                        p,
                        View::at(0, 1, w),
                        Rhs::Values(go, dm.q(b, r0, h)),
                        T::one(),
                    );
                    // dP = dO · V[c0..c1]ᵀ
                    gemm(
                        dm.bf16,
                        (rows, w, dm.d),
                        dp,
                        View::at(0, w, 1),
                        false,
                        go,
                        dm.q(b, r0, h),
                        kv.rhs(Read::Vt, c0),
                        T::one(),
                    );
                    // dS = P ⊙ (dP − Δ), through the soft-capping's tanh.
                    for (i, &di) in delta.iter().enumerate().take(rows) {
                        let (dr, pr) = (&mut dp[i * w..(i + 1) * w], &p[i * w..(i + 1) * w]);
                        crate::simd::softmax_grad_row_any(dr, pr, di);
                        if cap.is_some() {
                            for (d, t) in dr.iter_mut().zip(&th[i * w..(i + 1) * w]) {
                                *d = *d * (T::one() - *t * *t);
                            }
                        }
                    }
                    // dQ rows = scale · dS · K[c0..c1]
                    gemm(
                        dm.bf16,
                        (rows, dm.d, w),
                        &mut dq,
                        View::at((r * dm.t + r0) * dm.d, dm.d, 1),
                        false,
                        dp,
                        View::at(0, w, 1),
                        kv.rhs(Read::K, c0),
                        scale,
                    );
                    // dK[c0..c1] += scale · dSᵀ · Q rows
                    gemm(
                        dm.bf16,
                        (w, dm.d, rows),
                        &mut dk,
                        View::at(c0 * dm.d, dm.d, 1),
                        true,
                        dp,
                        View::at(0, 1, w),
                        Rhs::Values(q, dm.q(b, r0, h)),
                        scale,
                    );
                }
            }
            (dq, dk, dv)
        })
        .collect();
    // The layouts [B, T, Hq, D] and [B, S, Hkv, D] from the (b, KV head) parts.
    let d = dm.d;
    let dq = interleave(&dm, dm.t, dm.hq, |b, pos, h| {
        let from = ((h % n_rep) * dm.t + pos) * d;
        &parts[b * dm.hkv + h / n_rep].0[from..from + d]
    });
    let dk = interleave(&dm, dm.s, dm.hkv, |b, pos, g| {
        &parts[b * dm.hkv + g].1[pos * d..(pos + 1) * d]
    });
    let dv = interleave(&dm, dm.s, dm.hkv, |b, pos, g| {
        &parts[b * dm.hkv + g].2[pos * d..(pos + 1) * d]
    });
    (dq, dk, dv)
}

/// A [B, len, heads, D] tensor's values from per-head rows: `row(b, pos, head)` (D values),
/// rows of positions copied in parallel.
fn interleave<'p, T: Float + Send + Sync + 'static>(
    dm: &Dims,
    len: usize,
    heads: usize,
    row: impl Fn(usize, usize, usize) -> &'p [T] + Sync,
) -> Vec<T> {
    let width = heads * dm.d;
    let mut out = vec![T::zero(); dm.b * len * width];
    out.par_chunks_mut(width.max(1))
        .enumerate()
        .for_each(|(i, dst)| {
            for (h, dst) in dst.chunks_exact_mut(dm.d.max(1)).enumerate() {
                dst.copy_from_slice(row(i / len, i % len, h));
            }
        });
    out
}

/// The fused attention op (see the module docs). Keeps the mask and, after the forward pass,
/// the log-sum-exp of every row.
struct AttentionOp {
    mask: Option<Tensor>,
    bf16: bool,
    scale: f64,
    cap: Option<f64>,
    lse: Mutex<Option<Tensor>>,
}

impl AttentionOp {
    fn dims(&self, q: &Shape, k: &Shape) -> Result<Dims> {
        let (b, t, hq, d) = q.dims4()?;
        let (_, s, hkv, _) = k.dims4()?;
        Ok(Dims {
            bf16: self.bf16,
            b,
            t,
            s,
            hq,
            hkv,
            d,
        })
    }

    fn fwd<T: WithDType + Float>(&self, dm: Dims, q: &[T], k: &[T], v: &[T]) -> Result<Vec<T>> {
        let run = |mask: Option<&[T]>| {
            let scale = T::from(self.scale).unwrap_or_else(T::one);
            let cap = self.cap.and_then(T::from);
            forward(dm, q, k, v, mask, None, scale, cap)
        };
        let (out, lse) = match &self.mask {
            Some(m) => with_slice::<T, _>(m, |m| Ok(run(Some(m))))?,
            None => run(None),
        };
        let lse = Tensor::from_vec(lse, (dm.b, dm.hq, dm.t), &candle_core::Device::Cpu)?;
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(lse);
        Ok(out)
    }

    fn bwd_typed<T: WithDType + Float>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        go: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dm = self.dims(q.shape(), k.shape())?;
        let lse = self
            .lse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("attention: backward before forward".into()))?;
        let go = go.contiguous()?;
        let scale = T::from(self.scale).unwrap_or_else(T::one);
        let cap = self.cap.and_then(T::from);
        let (dq, dk, dv) = with_slice::<T, _>(q, |qs| {
            with_slice::<T, _>(k, |ks| {
                with_slice::<T, _>(v, |vs| {
                    with_slice::<T, _>(out, |os| {
                        with_slice::<T, _>(&go, |gs| {
                            with_slice::<T, _>(&lse, |ls| match &self.mask {
                                Some(m) => with_slice::<T, _>(m, |ms| {
                                    Ok(backward(
                                        dm,
                                        qs,
                                        ks,
                                        vs,
                                        os,
                                        gs,
                                        ls,
                                        Some(ms),
                                        None,
                                        scale,
                                        cap,
                                    ))
                                }),
                                None => {
                                    Ok(backward(dm, qs, ks, vs, os, gs, ls, None, None, scale, cap))
                                }
                            })
                        })
                    })
                })
            })
        })?;
        let dev = q.device();
        Ok((
            Tensor::from_vec(dq, q.shape(), dev)?,
            Tensor::from_vec(dk, k.shape(), dev)?,
            Tensor::from_vec(dv, v.shape(), dev)?,
        ))
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(l1.shape(), l2.shape())?;
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.fwd::<f32>(
                dm,
                slice(s1, l1)?,
                slice(s2, l2)?,
                slice(s3, l3)?,
            )?),
            CpuStorage::F64(_) => CpuStorage::F64(self.fwd::<f64>(
                dm,
                slice(s1, l1)?,
                slice(s2, l2)?,
                slice(s3, l3)?,
            )?),
            _ => candle_core::bail!("fused attention: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => self.bwd_typed::<f32>(q, k, v, res, grad)?,
            DType::F64 => self.bwd_typed::<f64>(q, k, v, res, grad)?,
            dt => candle_core::bail!("fused attention: {dt:?} not supported"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{self, max_diff, sin_weights};
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Var {
        Var::from_tensor(&test_util::randn(shape, seed).to_dtype(DType::F64).unwrap()).unwrap()
    }

    /// Additive mask for `t` queries at positions `start..start + t` over `start + t` keys.
    fn mask(t: usize, start: usize, window: Option<usize>) -> Tensor {
        let s = start + t;
        let mut m = vec![0f64; t * s];
        for qi in 0..t {
            let q = start + qi;
            for k in 0..s {
                if k > q || window.is_some_and(|w| q - k >= w) {
                    m[qi * s + k] = f64::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (t, s), &Device::Cpu).unwrap()
    }

    /// Fused against composed: output and the three gradients, for a case of each kind.
    #[test]
    fn fused_attention_matches_the_composition() {
        // (batch, queries, start, q heads, kv heads, head dim, window, cap)
        let cases = [
            (2, 5, 0, 2, 2, 4, None, None),
            (1, 70, 0, 4, 2, 8, None, None), // two blocks, grouped-query
            (2, 130, 0, 2, 1, 4, Some(40), None), // sliding window: blocks skip columns
            (1, 9, 0, 3, 3, 6, Some(4), Some(2.0)), // Gemma 2: window and soft-capping
            (1, 3, 6, 2, 1, 4, None, None),  // with a cache: 3 queries over 9 keys
        ];
        for (i, &(b, t, start, hq, hkv, d, window, cap)) in cases.iter().enumerate() {
            let s = start + t;
            let q = randn(&[b, t, hq, d], 1 + i as u64);
            let k = randn(&[b, s, hkv, d], 10 + i as u64);
            let v = randn(&[b, s, hkv, d], 20 + i as u64);
            let m = mask(t, start, window);
            let scale = 1.0 / (d as f64).sqrt();
            let fused = attention(&q, &k, &v, Some(&m), scale, cap, false).unwrap();
            let composed = attention_composed(&q, &k, &v, Some(&m), scale, cap).unwrap();
            assert!(max_diff(&fused, &composed) < 1e-12, "case {i}: values");
            let w = sin_weights(&[b, t, hq, d]);
            let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (composed * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let d = max_diff(g1.get(x).unwrap(), g2.get(x).unwrap());
                assert!(d < 1e-12, "case {i}: d{name} differs by {d}");
            }
        }
        // Without a mask (bidirectional), in f32.
        let q = randn(&[1, 4, 2, 4], 40).to_dtype(DType::F32).unwrap();
        let k = randn(&[1, 4, 2, 4], 41).to_dtype(DType::F32).unwrap();
        let v = randn(&[1, 4, 2, 4], 42).to_dtype(DType::F32).unwrap();
        let a = attention(&q, &k, &v, None, 0.5, None, false).unwrap();
        let c = attention_composed(&q, &k, &v, None, 0.5, None).unwrap();
        let d = max_diff(&a, &c);
        assert!(d < 1e-6, "{d}");
    }

    /// With `bf16`, the products round their operands (the output and the gradients move by
    /// bf16's rounding, no more) over every block kind: several query blocks, a sliding window,
    /// grouped-query heads, a 64-wide head as the models have.
    #[test]
    fn bf16_products_stay_within_rounding_of_f64() {
        for (i, &(t, hq, hkv, d, window)) in [(130, 4, 2, 64, None), (70, 2, 1, 9, Some(40))]
            .iter()
            .enumerate()
        {
            let q = randn(&[1, t, hq, d], 60 + i as u64);
            let k = randn(&[1, t, hkv, d], 61 + i as u64);
            let v = randn(&[1, t, hkv, d], 62 + i as u64);
            let m = mask(t, 0, window);
            let scale = 1.0 / (d as f64).sqrt();
            let w = sin_weights(&[1, t, hq, d]);
            let run = |dtype: DType, bf16: bool| {
                let vars: Vec<Var> = [&q, &k, &v]
                    .iter()
                    .map(|x| Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap())
                    .collect();
                let (q, k, v) = (&vars[0], &vars[1], &vars[2]);
                let mask = m.to_dtype(dtype).unwrap();
                let out = attention(q, k, v, Some(&mask), scale, None, bf16).unwrap();
                let grads = (&out * &w.to_dtype(dtype).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let f64s = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
                let mut all = vec![f64s(&out)];
                all.extend(vars.iter().map(|x| f64s(grads.get(x).unwrap())));
                all
            };
            let exact = run(DType::F64, false);
            let bf16 = run(DType::F32, true);
            let f32s = run(DType::F32, false);
            for (j, name) in ["output", "dq", "dk", "dv"].iter().enumerate() {
                let big = exact[j]
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                let rounded = max_diff(&bf16[j], &exact[j]) / big;
                let single = max_diff(&f32s[j], &exact[j]) / big;
                assert!(
                    rounded < 2e-2,
                    "case {i}: {name} off by {rounded} of its largest value"
                );
                // It did round: bf16's error is far above f32's.
                assert!(
                    rounded > 50.0 * single,
                    "case {i}: {name}: {rounded} vs f32's {single}"
                );
            }
        }
    }

    /// The fused op's gradients against finite differences of its own forward pass.
    #[test]
    fn fused_attention_gradients_match_finite_differences() {
        let (b, t, hq, hkv, d) = (1, 5, 2, 1, 3);
        let m = mask(t, 0, Some(3));
        let shapes = [vec![b, t, hq, d], vec![b, t, hkv, d], vec![b, t, hkv, d]];
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| randn(s, 50 + i as u64))
            .collect();
        let w = sin_weights(&[b, t, hq, d]);
        let f = |q: &Tensor, k: &Tensor, v: &Tensor| {
            (attention(q, k, v, Some(&m), 0.7, Some(1.5), false).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = f(&vars[0], &vars[1], &vars[2]).backward().unwrap();
        for (which, var) in vars.iter().enumerate() {
            let loss = |x: &Tensor| {
                let mut args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach()).collect();
                args[which] = x.clone();
                f(&args[0], &args[1], &args[2]).to_scalar::<f64>().unwrap()
            };
            let g = grads.get(var).unwrap();
            test_util::assert_finite_differences(var, g, loss, 1e-6, &format!("input {which}"));
        }
    }
}
