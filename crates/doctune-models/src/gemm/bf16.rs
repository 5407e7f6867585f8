//! Products of f32 activations with frozen **bf16** weights on the CPU, for training with the
//! base model in bf16 (`--precision bf16` on a CPU with AVX-512 BF16): `x·Wᵀ` (a projection's
//! forward) and `g·W` (its input gradient) for a row-major bf16 `W` [n, k], as new row-major f32
//! matrices; from f32 activations or from [`Rows`], activations rounded once (shared by the
//! projections that read them, or made by the op that computes them without an f32 copy). And
//! the attention's products under bf16, both operands f32 in any strided layout rounded as they
//! are packed ([`gemm_rounded`]; keys and values packed once for many blocks, [`PackedRhs`]).
//!
//! The numbers are those of PyTorch's CPU autocast: the activations are rounded to bf16 (to
//! nearest, ties to even), each product of two bf16 values is exact in f32, and the sums are f32.
//! Where the CPU has AVX-512 BF16 ([`available`]) that is one `vdpbf16ps` per 32
//! multiply-adds, in a BLIS-style GEMM of our own: the rounded activations as rows of bf16
//! pairs, `W` packed per call into 32-column panels of the pairs the instruction
//! takes (16×16 transposes of 32-bit pairs for `x·Wᵀ`, two rows interleaved for `g·W`), a 12×32
//! micro-kernel with 24 accumulators that broadcasts the activations' pairs from their rows in
//! place, depth blocks of at most [`KC`] pairs and column blocks of [`NC`], the columns split
//! between rayon's threads. No crate offers this kernel (the `gemm` crate converts
//! f16 to f32 and has no bf16 dot products; candle's CPU matmul has no bf16 path), and packing
//! per call keeps one bf16 copy of each weight (the memory bf16 is chosen for) at a cost of a
//! few percent of the product.
//!
//! Elsewhere the same numbers come from a portable path (the rounded activations times the
//! weights widened to f32 through [`super::sgemm`]): slower than f32 training, so the trainer
//! refuses bf16 on such CPUs ([`crate::Precision::check`]), but it keeps a bf16 model usable and
//! testable on every machine.

use half::bf16;

/// Whether this CPU runs the bf16 kernel (AVX-512F, AVX-512BW and AVX-512 BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of the micro-kernel (activation rows per panel).
pub const MR: usize = 12;
/// Columns of the micro-kernel (two 16-lane vectors).
pub const NR: usize = 32;
/// The most bf16 pairs (2·KC values of the contraction) in one depth block.
pub const KC: usize = 256;
/// Columns per packed block of `W` (a multiple of [`NR`]): KC × NC pairs are 256 KiB, kept in L2.
pub const NC: usize = 256;

/// `x · Wᵀ` for `x` [m, k] (f32, row-major) and `W` [n, k] (bf16, row-major): [m, n] in f32.
///
/// # Panics
/// If `x` does not hold m·k values or `W` n·k (a caller's bug).
pub fn x_wt(x: &[f32], w: &[bf16], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    assert!(x.len() == m * k && w.len() == n * k, "bf16 x·Wᵀ: sizes");
    product(&Rows::new(x, m, k), Weights::Transposed { w, n, k })
}

/// `g · W` for `g` [m, n] (f32, row-major) and `W` [n, k] (bf16, row-major): [m, k] in f32.
///
/// # Panics
/// If `g` does not hold m·n values or `W` n·k (a caller's bug).
pub fn g_w(g: &[f32], w: &[bf16], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    assert!(g.len() == m * n && w.len() == n * k, "bf16 g·W: sizes");
    product(
        &Rows::new(g, m, n),
        Weights::Plain {
            w,
            rows: n,
            cols: k,
        },
    )
}

/// [`x_wt`] into `out` ([m, n]), added to what it holds when `accumulate`.
///
/// # Panics
/// As [`x_wt`], or if `out` does not hold m·n values.
pub fn x_wt_into(
    x: &[f32],
    w: &[bf16],
    (m, n, k): (usize, usize, usize),
    out: &mut [f32],
    accumulate: bool,
) {
    assert!(
        x.len() == m * k && w.len() == n * k && out.len() == m * n,
        "bf16 x·Wᵀ: sizes"
    );
    product_into(
        &Rows::new(x, m, k),
        Weights::Transposed { w, n, k },
        out,
        accumulate,
    )
}

/// [`g_w`] into `out` ([m, k]), added to what it holds when `accumulate`.
///
/// # Panics
/// As [`g_w`], or if `out` does not hold m·k values.
pub fn g_w_into(
    g: &[f32],
    w: &[bf16],
    (m, n, k): (usize, usize, usize),
    out: &mut [f32],
    accumulate: bool,
) {
    assert!(
        g.len() == m * n && w.len() == n * k && out.len() == m * k,
        "bf16 g·W: sizes"
    );
    let b = Weights::Plain {
        w,
        rows: n,
        cols: k,
    };
    product_into(&Rows::new(g, m, n), b, out, accumulate)
}

/// f32 activations [m, depth] rounded to bf16 once, as the products read them (rows of pairs:
/// pair p of row r holds values 2p and 2p+1): for several products of one left operand, or made
/// by the op that computes the values ([`Rows::from_chunks`]) without an f32 copy in memory.
#[derive(Debug)]
pub struct Rows {
    pairs: Vec<u32>,
    m: usize,
    depth: usize,
}

/// Values per task of [`Rows::from_chunks`] (16 KiB of f32: the chunk stays in L1).
pub const CHUNK: usize = 4096;

impl Rows {
    /// `a` [m, depth], rounded.
    ///
    /// # Panics
    /// If `a` does not hold m·depth values (a caller's bug).
    pub fn new(a: &[f32], m: usize, depth: usize) -> Rows {
        use rayon::prelude::*;
        assert_eq!(a.len(), m * depth, "bf16 rows: sizes");
        let per_row = depth.div_ceil(2);
        let mut pairs = Vec::with_capacity(m * per_row);
        if per_row > 0 {
            pairs.spare_capacity_mut()[..m * per_row]
                .par_chunks_mut(per_row)
                .zip(a.par_chunks(depth))
                .for_each(|(dst, src)| to_pairs(src, dst));
        }
        // SAFETY: `to_pairs` wrote all m·per_row pairs (each row's ⌈depth/2⌉).
        #[allow(unsafe_code)]
        unsafe {
            pairs.set_len(m * per_row)
        };
        Rows { pairs, m, depth }
    }

    /// The rows whose values `fill(first, chunk)` writes, chunk by chunk in parallel: `first`
    /// is the index of the chunk's first value in the row-major [m, depth] matrix, `chunk` at
    /// most [`CHUNK`] values long. `fill2` does the same for two matrices at once.
    ///
    /// # Panics
    /// If `depth` is odd (pairs would straddle rows; a caller's bug).
    pub fn from_chunks(m: usize, depth: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Rows {
        let (rows, _) = Self::from_chunks2(m, depth, |first, a, _| fill(first, a), false);
        rows
    }

    /// Two matrices' rows from one pass ([`Rows::from_chunks`]); the second is empty unless
    /// `both`.
    pub fn from_chunks2(
        m: usize,
        depth: usize,
        fill: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
        both: bool,
    ) -> (Rows, Rows) {
        use rayon::prelude::*;
        assert!(depth.is_multiple_of(2), "bf16 rows: an odd depth ({depth})");
        let n = m * depth;
        let mut a = Vec::with_capacity(n / 2);
        let mut b = Vec::with_capacity(if both { n / 2 } else { 0 });
        type Dst<'a> = &'a mut [std::mem::MaybeUninit<u32>];
        let run = |i: usize, dst: Dst<'_>, dst2: Option<Dst<'_>>| {
            let first = i * CHUNK;
            let len = CHUNK.min(n - first);
            let (mut va, mut vb) = ([0f32; CHUNK], [0f32; CHUNK]);
            fill(first, &mut va[..len], &mut vb[..len]);
            to_pairs(&va[..len], dst);
            if let Some(dst2) = dst2 {
                to_pairs(&vb[..len], dst2);
            }
        };
        let first = a.spare_capacity_mut()[..n / 2].par_chunks_mut(CHUNK / 2);
        if both {
            let second = b.spare_capacity_mut()[..n / 2].par_chunks_mut(CHUNK / 2);
            first
                .zip(second)
                .enumerate()
                .for_each(|(i, (d1, d2))| run(i, d1, Some(d2)));
        } else {
            first.enumerate().for_each(|(i, d1)| run(i, d1, None));
        }
        // SAFETY: every chunk of each matrix was written whole by `to_pairs` above.
        #[allow(unsafe_code)]
        unsafe {
            a.set_len(n / 2);
            if both {
                b.set_len(n / 2);
            }
        }
        (
            Rows { pairs: a, m, depth },
            Rows {
                pairs: b,
                m: if both { m } else { 0 },
                depth,
            },
        )
    }

    /// The rows' values widened back to f32, row-major (the portable path).
    fn widened(&self) -> Vec<f32> {
        let per_row = self.depth.div_ceil(2);
        let mut out = Vec::with_capacity(self.m * self.depth);
        for row in self.pairs.chunks(per_row.max(1)).take(self.m) {
            for (p, &v) in row.iter().enumerate() {
                out.push(f32::from_bits(v << 16));
                if 2 * p + 1 < self.depth {
                    out.push(f32::from_bits(v & 0xffff_0000));
                }
            }
        }
        out
    }
}

/// `src` rounded to bf16 pairs into `dst` (⌈len/2⌉ of them; a last odd value is paired with
/// 0): the kernel's conversion where the CPU has it, the same rounding elsewhere.
fn to_pairs(src: &[f32], dst: &mut [std::mem::MaybeUninit<u32>]) {
    assert_eq!(dst.len(), src.len().div_ceil(2), "bf16 pairs: sizes");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has the conversion's features (checked just above); `dst` has room
        // for every pair (asserted).
        #[allow(unsafe_code)]
        unsafe {
            avx512::to_pairs(src, dst.as_mut_ptr() as *mut u32)
        };
        return;
    }
    for (d, c) in dst.iter_mut().zip(src.chunks(2)) {
        d.write(pair(c[0], c.get(1).copied().unwrap_or(0.0)));
    }
}

/// `x · Wᵀ` for the rounded `x` [m, k] and `W` [n, k]: [m, n] in f32.
///
/// # Panics
/// If `W` does not hold n·k values (a caller's bug).
pub fn x_wt_rows(x: &Rows, w: &[bf16], n: usize) -> Vec<f32> {
    let k = x.depth;
    assert!(w.len() == n * k, "bf16 x·Wᵀ: sizes");
    product(x, Weights::Transposed { w, n, k })
}

/// `g · W` into `out` [m, k] (added to it when `accumulate`) for the rounded `g` [m, n] and
/// `W` [n, k].
///
/// # Panics
/// If `W` does not hold n·k values or `out` m·k (a caller's bug).
pub fn g_w_rows_into(g: &Rows, w: &[bf16], k: usize, out: &mut [f32], accumulate: bool) {
    let n = g.depth;
    assert!(w.len() == n * k && out.len() == g.m * k, "bf16 g·W: sizes");
    let b = Weights::Plain {
        w,
        rows: n,
        cols: k,
    };
    product_into(g, b, out, accumulate)
}

/// [`g_w_rows_into`] as a new buffer.
pub fn g_w_rows(g: &Rows, w: &[bf16], k: usize) -> Vec<f32> {
    let n = g.depth;
    assert!(w.len() == n * k, "bf16 g·W: sizes");
    let b = Weights::Plain {
        w,
        rows: n,
        cols: k,
    };
    product(g, b)
}

/// `dst (+)= beta · lhs · rhs` with both operands f32 in any strided layout, each value rounded
/// to bf16 as it is packed and the sums in f32, on the calling thread: the attention's products
/// when the model trains in bf16 (PyTorch's autocast runs attention in bf16 the same way).
/// `dst` [m, n] must have contiguous rows (`dv.cs == 1`).
///
/// # Panics
/// If a view reaches outside its slice or `dst`'s rows are not contiguous (a caller's bug).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rounded(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dv: super::View,
    acc: bool,
    lhs: &[f32],
    lv: super::View,
    rhs: &[f32],
    rv: super::View,
    beta: f32,
) {
    assert!(
        rv.end(k, n) <= rhs.len(),
        "bf16 gemm: a view reaches outside its slice"
    );
    if !checked((m, n, k), dst, dv, acc, lhs, lv) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel() {
        // SAFETY: the CPU has the kernel's features (checked just above); `checked` and the
        // assertion keep every element the views address inside their slices, and `dst`,
        // borrowed mutably, aliases neither operand.
        #[allow(unsafe_code)]
        unsafe {
            let out = dst.as_mut_ptr().add(dv.off);
            let rhs = avx512::Rhs::Values(rhs, rv);
            avx512::strided((m, n, k), out, dv.rs, acc, lhs, lv, rhs, beta)
        };
        return;
    }
    let b = rounded(rhs, rv, k, n);
    let bv = super::View::row_major(n);
    rounded_portable((m, n, k), dst, dv, acc, lhs, lv, &b, bv, beta)
}

/// An operand `B` [k, n] of [`gemm_rounded_packed`], rounded to bf16 and packed once for many
/// products with parts of it (the attention's keys and values, read by every block of queries).
#[derive(Debug)]
pub struct PackedRhs {
    k: usize,
    n: usize,
    values: Packed,
}

#[derive(Debug)]
enum Packed {
    /// The kernel's 32-column panels of pairs.
    #[cfg(target_arch = "x86_64")]
    Panels(Vec<u32>),
    /// Rounded values, row-major (the portable path).
    Rounded(Vec<f32>),
}

impl PackedRhs {
    /// Parts of the operand start at a multiple of this many columns.
    pub const ALIGN: usize = NR;

    /// `B` [k, n] read through `v` from `src`.
    ///
    /// # Panics
    /// If the view reaches outside `src` (a caller's bug).
    pub fn new((k, n): (usize, usize), src: &[f32], v: super::View) -> PackedRhs {
        assert!(
            v.end(k, n) <= src.len(),
            "bf16 gemm: a view reaches outside its slice"
        );
        #[cfg(target_arch = "x86_64")]
        if kernel() {
            let mut data = vec![0u32; n.div_ceil(NR) * NR * k.div_ceil(2)];
            // SAFETY: the CPU has the kernel's features; the assertion keeps the view inside
            // `src`; `data` holds every panel.
            #[allow(unsafe_code)]
            unsafe {
                avx512::pack_rhs((k, n), src, v, &mut data)
            };
            let values = Packed::Panels(data);
            return PackedRhs { k, n, values };
        }
        let values = Packed::Rounded(rounded(src, v, k, n));
        PackedRhs { k, n, values }
    }
}

/// [`gemm_rounded`] with `B` the k × n part of `rhs` from row `r0` (even) and column `c0` (a
/// multiple of [`PackedRhs::ALIGN`]). For an odd `k` short of `rhs`'s last row, the row after
/// the part is read and multiplied by 0: it must be finite.
///
/// # Panics
/// If a view or the part reaches outside its operand, the part is not aligned, or `dst`'s rows
/// are not contiguous (a caller's bug).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rounded_packed(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dv: super::View,
    acc: bool,
    lhs: &[f32],
    lv: super::View,
    rhs: &PackedRhs,
    (r0, c0): (usize, usize),
    beta: f32,
) {
    assert!(
        r0 % 2 == 0 && c0 % NR == 0 && r0 + k <= rhs.k && c0 + n <= rhs.n,
        "bf16 gemm: part {r0}+{k} × {c0}+{n} of a packed {} × {}",
        rhs.k,
        rhs.n
    );
    if !checked((m, n, k), dst, dv, acc, lhs, lv) {
        return;
    }
    match &rhs.values {
        #[cfg(target_arch = "x86_64")]
        Packed::Panels(data) => {
            let part = avx512::Rhs::Panels {
                data,
                pairs: rhs.k.div_ceil(2),
                p0: r0 / 2,
                j0: c0 / NR,
            };
            // SAFETY: the panels exist only where the CPU has the kernel (`PackedRhs::new`);
            // `checked` and the assertion keep every element addressed inside its slice.
            #[allow(unsafe_code)]
            unsafe {
                let out = dst.as_mut_ptr().add(dv.off);
                avx512::strided((m, n, k), out, dv.rs, acc, lhs, lv, part, beta)
            };
        }
        Packed::Rounded(b) => {
            let bv = super::View::at(r0 * rhs.n + c0, rhs.n, 1);
            rounded_portable((m, n, k), dst, dv, acc, lhs, lv, b, bv, beta)
        }
    }
}

/// Checks a product's output and left operand and takes care of empty ones: whether there is
/// a product to compute (false: nothing to do, or k = 0 and `dst` zeroed unless `acc`).
fn checked(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dv: super::View,
    acc: bool,
    lhs: &[f32],
    lv: super::View,
) -> bool {
    assert!(
        dv.cs == 1 && dv.end(m, n) <= dst.len() && lv.end(m, k) <= lhs.len(),
        "bf16 gemm: a view reaches outside its slice"
    );
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[dv.off + i * dv.rs..dv.off + i * dv.rs + n].fill(0.0);
            }
        }
        return false;
    }
    true
}

/// The `rows × cols` values `v` addresses in `src`, rounded to bf16, row-major.
fn rounded(src: &[f32], v: super::View, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| round(src[v.off + (i / cols) * v.rs + (i % cols) * v.cs]))
        .collect()
}

/// The products without the kernel: `lhs` rounded into a row-major copy, times the rounded
/// `b`, through [`super::sgemm`] on this thread.
#[allow(clippy::too_many_arguments)]
fn rounded_portable(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dv: super::View,
    acc: bool,
    lhs: &[f32],
    lv: super::View,
    b: &[f32],
    bv: super::View,
    beta: f32,
) {
    let a = rounded(lhs, lv, m, k);
    let av = super::View::row_major(k);
    super::sgemm((m, n, k), dst, dv, acc, &a, av, b, bv, beta, false);
}

/// Two values rounded to bf16 as one pair: `lo` in the low half (the pair's first value).
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16::from_f32(lo).to_bits()) | (u32::from(bf16::from_f32(hi).to_bits()) << 16)
}

/// The right-hand operand `B` [depth, cols] of a product, read from a row-major bf16 weight.
#[derive(Clone, Copy)]
enum Weights<'a> {
    /// `B = Wᵀ` for `W` [n, k]: depth k, n columns.
    Transposed { w: &'a [bf16], n: usize, k: usize },
    /// `B = W` for `W` [rows, cols]: depth rows.
    Plain {
        w: &'a [bf16],
        rows: usize,
        cols: usize,
    },
}

impl Weights<'_> {
    /// (depth, columns) of `B`.
    fn dims(self) -> (usize, usize) {
        match self {
            Weights::Transposed { n, k, .. } => (k, n),
            Weights::Plain { rows, cols, .. } => (rows, cols),
        }
    }

    /// `B` as f32, row-major [depth, cols] (the portable path).
    fn widened(self) -> (Vec<f32>, super::View) {
        match self {
            Weights::Transposed { w, k, .. } => (
                w.iter().map(|v| v.to_f32()).collect(),
                super::View::row_major(k).t(),
            ),
            Weights::Plain { w, cols, .. } => (
                w.iter().map(|v| v.to_f32()).collect(),
                super::View::row_major(cols),
            ),
        }
    }
}

/// Whether the kernel runs here (and the tests have not asked for the portable path).
#[cfg(target_arch = "x86_64")]
fn kernel() -> bool {
    available() && std::env::var_os(PORTABLE_ENV).is_none()
}

/// `a [m, depth] · B`, on the kernel where the CPU has it and the portable path elsewhere.
fn product(a: &Rows, b: Weights<'_>) -> Vec<f32> {
    let (depth, cols) = b.dims();
    let m = a.m;
    if m == 0 || cols == 0 || depth == 0 {
        return vec![0.0; m * cols];
    }
    #[cfg(target_arch = "x86_64")]
    if kernel() {
        let mut out: Vec<f32> = Vec::with_capacity(m * cols);
        // SAFETY: the CPU has the features the kernel is compiled for (checked just above), the
        // operands' sizes were checked by the public entry points, and `out` has room for the
        // m × cols values the kernel writes (every one of them: depth ≥ 1, not accumulating),
        // after which its length is set.
        #[allow(unsafe_code)]
        unsafe {
            avx512::product(&a.pairs, b, m, out.as_mut_ptr(), false);
            out.set_len(m * cols);
        }
        return out;
    }
    portable(a, b)
}

/// `out (+)= a [m, depth] · B`.
fn product_into(a: &Rows, b: Weights<'_>, out: &mut [f32], accumulate: bool) {
    let (depth, cols) = b.dims();
    let m = a.m;
    if m == 0 || cols == 0 {
        return;
    }
    if depth == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel() {
        // SAFETY: as in `product`; `out` holds the m × cols values (checked by the callers).
        #[allow(unsafe_code)]
        unsafe {
            avx512::product(&a.pairs, b, m, out.as_mut_ptr(), accumulate)
        };
        return;
    }
    let (w, wv) = b.widened();
    super::sgemm(
        (m, cols, depth),
        out,
        super::View::row_major(cols),
        accumulate,
        &a.widened(),
        super::View::row_major(depth),
        &w,
        wv,
        1.0,
        true,
    );
}

/// Set (to anything) to take the portable path on a CPU that has the kernel: for the tests and
/// the benchmark, which compare the two.
pub const PORTABLE_ENV: &str = "DOCTUNE_BF16_PORTABLE";

/// The same numbers without AVX-512 BF16: the activations rounded to bf16, times `W` in f32.
fn portable(a: &Rows, b: Weights<'_>) -> Vec<f32> {
    let (depth, cols) = b.dims();
    let (w, wv) = b.widened();
    super::sgemm_new(
        (a.m, cols, depth),
        &a.widened(),
        super::View::row_major(depth),
        &w,
        wv,
        true,
    )
}

/// `v` rounded to the nearest bf16 (ties to even), as an f32.
pub fn round(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    //! The AVX-512 BF16 kernel. Every function here is `unsafe` only because it is compiled for
    //! CPU features the caller must have checked ([`super::available`]); pointer arithmetic
    //! stays inside buffers whose sizes are computed beside it.

    use super::super::View;
    use super::{bf16, Weights, KC, MR, NC, NR};
    use crate::simd::lanes16 as lanes;
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// A raw pointer that may cross to rayon's threads: each thread writes only its own
    /// columns of the output.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: see the type's doc; the buffer outlives the scope that uses it.
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}

    impl Out {
        /// The element at `i` (a method, so closures capture the whole `Out`).
        fn at(self, i: usize) -> *mut f32 {
            self.0.wrapping_add(i)
        }
    }

    /// `out (+)= a · B` into the m × cols row-major values at `out`: every one written, added
    /// to when `accumulate`.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX-512BW and AVX-512 BF16; `ap` holds m·⌈depth/2⌉ pairs; `out` points
    /// to room for m·cols values (initialised when `accumulate`) that nothing else uses.
    pub(super) unsafe fn product(
        ap: &[u32],
        b: Weights<'_>,
        m: usize,
        out: *mut f32,
        accumulate: bool,
    ) {
        let (depth, cols) = b.dims();
        let pairs = depth.div_ceil(2);
        let panels = m.div_ceil(MR);
        // `ap`: the activations as rows of bf16 pairs (pair p of row r at r·pairs + p), which
        // the micro-kernel broadcasts from in place.
        assert_eq!(ap.len(), m * pairs, "bf16 product: sizes");
        let dst = Out(out);
        // Columns split between the threads in whole panels; each thread packs its own blocks
        // of W.
        let threads = rayon::current_num_threads().max(1);
        let per = cols.div_ceil(NR).div_ceil(threads) * NR;
        (0..cols.div_ceil(per)).into_par_iter().for_each(|t| {
            let (c0, c1) = (t * per, ((t + 1) * per).min(cols));
            let mut bp = vec![0u32; NC * KC];
            let mut jc = c0;
            while jc < c1 {
                let nc = NC.min(c1 - jc);
                // Depth blocks of equal size, at most KC pairs each.
                let blocks = pairs.div_ceil(KC);
                let kc_max = pairs.div_ceil(blocks);
                let mut pc = 0;
                while pc < pairs {
                    let kc = kc_max.min(pairs - pc);
                    pack(b, jc, nc, pc, kc, &mut bp);
                    for i in 0..panels {
                        let rows = MR.min(m - i * MR);
                        let a0 = ap.as_ptr().add(i * MR * pairs + pc);
                        let mut j = 0;
                        while j < nc {
                            let n = NR.min(nc - j);
                            let c = dst.at((i * MR) * cols + jc + j);
                            let b0 = bp.as_ptr().add(j * kc);
                            let acc = (accumulate || pc > 0, 1.0);
                            tile(rows, kc, a0, (pairs, 1), b0, c, cols, n, acc);
                            j += NR;
                        }
                    }
                    pc += kc;
                }
                jc += nc;
            }
        });
    }

    std::thread_local! {
        /// [`strided`]'s packed operands, kept between calls on this thread.
        static PACKED: std::cell::RefCell<(Vec<u32>, Vec<u32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }

    /// `len` slots of `buf`, grown when needed (every slot is written before it is read).
    fn room(buf: &mut Vec<u32>, len: usize) -> &mut [u32] {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        &mut buf[..len]
    }

    /// [`super::gemm_rounded`] on this thread: both operands packed as bf16 pairs (A as rows
    /// of pairs, or pairs of rows when its columns are contiguous; B in 32-column panels), then
    /// the micro-kernel over depth blocks, panels and row tiles.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX-512BW and AVX-512 BF16; the views address only elements of
    /// their slices; `out` points to the m × n values (row stride `ldc`) the product writes,
    /// initialised when `acc`, used by nothing else.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn strided(
        (m, n, k): (usize, usize, usize),
        out: *mut f32,
        ldc: usize,
        acc: bool,
        lhs: &[f32],
        lv: View,
        rhs: Rhs<'_>,
        beta: f32,
    ) {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        PACKED.with_borrow_mut(|(ap, bp)| {
            let ap = room(ap, m * pairs);
            // SAFETY: the caller's guarantees.
            let lda = unsafe { pack_lhs((m, k), lhs, lv, ap) };
            // Where panel 0's first pair is, and the distance between panels.
            let (base, stride) = match rhs {
                Rhs::Values(b, rv) => {
                    let bp = room(bp, panels * NR * pairs);
                    // SAFETY: the caller's guarantees.
                    unsafe { pack_rhs((k, n), b, rv, bp) };
                    (bp.as_ptr(), NR * pairs)
                }
                Rhs::Panels {
                    data,
                    pairs: all,
                    p0,
                    j0,
                } => (data.as_ptr().add(j0 * NR * all + p0 * NR), NR * all),
            };
            let blocks = pairs.div_ceil(KC);
            let kc_max = pairs.div_ceil(blocks);
            let mut pc = 0;
            while pc < pairs {
                let kc = kc_max.min(pairs - pc);
                for j in 0..panels {
                    let b0 = base.add(j * stride + pc * NR);
                    let cols = NR.min(n - j * NR);
                    let mut i = 0;
                    while i < m {
                        let rows = MR.min(m - i);
                        let a0 = ap.as_ptr().add(i * lda.0 + pc * lda.1);
                        let c = out.add(i * ldc + j * NR);
                        // SAFETY: the caller's guarantees; the tile lies inside the product.
                        unsafe { tile(rows, kc, a0, lda, b0, c, ldc, cols, (acc || pc > 0, beta)) };
                        i += MR;
                    }
                }
                pc += kc;
            }
        });
    }

    /// The right operand of [`strided`]: f32 values to pack, or panels packed before.
    pub(super) enum Rhs<'a> {
        Values(&'a [f32], View),
        /// The panels of a `B` with `pairs` pairs per column, from pair `p0` of panel `j0` on.
        Panels {
            data: &'a [u32],
            pairs: usize,
            p0: usize,
            j0: usize,
        },
    }

    /// Packs `A` [m, k] as bf16 pairs into `ap` (m · ⌈k/2⌉ slots) and returns its strides
    /// (row, pair): rows of pairs, or, where `A`'s columns are contiguous (a transposed
    /// operand), pair p of all rows together.
    ///
    /// # Safety
    /// As [`strided`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_lhs(
        (m, k): (usize, usize),
        a: &[f32],
        v: View,
        ap: &mut [u32],
    ) -> (usize, usize) {
        let pairs = k.div_ceil(2);
        if v.cs == 1 {
            for (r, row) in ap.chunks_exact_mut(pairs).enumerate() {
                to_pairs(&a[v.off + r * v.rs..v.off + r * v.rs + k], row.as_mut_ptr());
            }
            (pairs, 1)
        } else if v.rs == 1 {
            for (p, dst) in ap.chunks_exact_mut(m).enumerate() {
                let col = |c: usize| &a[v.off + c * v.cs..v.off + c * v.cs + m];
                interleave(col(2 * p), (2 * p + 1 < k).then(|| col(2 * p + 1)), dst);
            }
            (1, m)
        } else {
            let at = |r: usize, c: usize| {
                if c < k {
                    a[v.off + r * v.rs + c * v.cs]
                } else {
                    0.0
                }
            };
            for (i, slot) in ap.iter_mut().enumerate() {
                let (r, p) = (i / pairs, i % pairs);
                *slot = super::pair(at(r, 2 * p), at(r, 2 * p + 1));
            }
            (pairs, 1)
        }
    }

    /// Packs `B` [k, n] into 32-column panels of bf16 pairs (panel j's pair p of column c at
    /// j·NR·⌈k/2⌉ + p·NR + c, columns past n zero): two rows interleaved where its rows are
    /// contiguous, 16×16 transposes of pairs where its columns are.
    ///
    /// # Safety
    /// As [`strided`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_rhs((k, n): (usize, usize), b: &[f32], v: View, bp: &mut [u32]) {
        let pairs = k.div_ceil(2);
        if v.cs == 1 {
            for p in 0..pairs {
                let row = |q: usize| &b[v.off + q * v.rs..v.off + q * v.rs + n];
                let (r0, r1) = (row(2 * p), (2 * p + 1 < k).then(|| row(2 * p + 1)));
                for (j, panel) in bp.chunks_exact_mut(NR * pairs).enumerate() {
                    let cols = j * NR..(j * NR + NR).min(n);
                    let dst = &mut panel[p * NR..(p + 1) * NR];
                    interleave(&r0[cols.clone()], r1.map(|r| &r[cols]), dst);
                }
            }
        } else if v.rs == 1 {
            for (j, panel) in bp.chunks_exact_mut(NR * pairs).enumerate() {
                for half in 0..NR / 16 {
                    let mut p0 = 0;
                    while p0 < pairs {
                        let first = 2 * p0;
                        let left = k - first;
                        let mut r = [_mm512_setzero_si512(); 16];
                        for (i, x) in r.iter_mut().enumerate() {
                            let c = j * NR + half * 16 + i;
                            if c < n {
                                // Masked loads read only the column's values from `first` on.
                                let src = b.as_ptr().add(v.off + c * v.cs + first);
                                let lo = _mm512_maskz_loadu_ps(lanes(left), src);
                                let hi = _mm512_maskz_loadu_ps(
                                    lanes(left.saturating_sub(16)),
                                    src.wrapping_add(16),
                                );
                                *x = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(
                                    hi, lo,
                                ));
                            }
                        }
                        transpose16(&mut r);
                        for (q, x) in r.iter().enumerate().take(16.min(pairs - p0)) {
                            _mm512_storeu_si512(
                                panel.as_mut_ptr().add((p0 + q) * NR + half * 16) as *mut _,
                                *x,
                            );
                        }
                        p0 += 16;
                    }
                }
            }
        } else {
            let at = |q: usize, c: usize| {
                if q < k && c < n {
                    b[v.off + q * v.rs + c * v.cs]
                } else {
                    0.0
                }
            };
            for (j, panel) in bp.chunks_exact_mut(NR * pairs).enumerate() {
                for (i, slot) in panel.iter_mut().enumerate() {
                    let (p, c) = (i / NR, j * NR + i % NR);
                    *slot = super::pair(at(2 * p, c), at(2 * p + 1, c));
                }
            }
        }
    }

    /// Pairs of `x0[i]` (low half) and `x1[i]` (high half; 0 without `x1`) rounded to bf16, into
    /// every slot of `dst` (0 past `x0`'s length). `x1`, if any, is as long as `x0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn interleave(x0: &[f32], x1: Option<&[f32]>, dst: &mut [u32]) {
        // Lane 2i takes value i of the first operand (bf16 lanes 0..16), lane 2i+1 value i of
        // the second (lanes 16..32).
        let idx = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let n = x0.len();
        let mut i = 0;
        while i < dst.len() {
            // Masked loads read no lane past the end.
            let m = lanes(n.saturating_sub(i));
            let a = _mm512_maskz_loadu_ps(m, x0.as_ptr().wrapping_add(i));
            let b = match x1 {
                Some(x1) => _mm512_maskz_loadu_ps(m, x1.as_ptr().wrapping_add(i)),
                None => _mm512_setzero_ps(),
            };
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
            let v = _mm512_permutexvar_epi16(idx, v);
            _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(i) as *mut i32, lanes(dst.len() - i), v);
            i += 16;
        }
    }

    /// `src` (f32) as bf16 pairs, rounded to nearest even: pair p holds element 2p in its low
    /// half and 2p+1 (or 0 past the end) in its high half. `dst` has room for ⌈len/2⌉ pairs.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn to_pairs(src: &[f32], dst: *mut u32) {
        let n = src.len();
        let mut i = 0;
        while i < n {
            let left = n - i;
            // Masked loads read no lane past the end (a mask of 0 reads nothing).
            let lo = _mm512_maskz_loadu_ps(lanes(left), src.as_ptr().add(i));
            let hi = _mm512_maskz_loadu_ps(
                lanes(left.saturating_sub(16)),
                src.as_ptr().wrapping_add(i + 16),
            );
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_mask_storeu_epi32(
                dst.add(i / 2) as *mut i32,
                lanes(left.min(32).div_ceil(2)),
                v,
            );
            i += 32;
        }
    }

    /// Packs `B[pc.., jc..]` (kc pairs × nc columns) into 32-column panels: panel j's pair p
    /// of column c at j·NR·kc + p·NR + c, columns past nc zero.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pack(b: Weights<'_>, jc: usize, nc: usize, pc: usize, kc: usize, bp: &mut [u32]) {
        for (j, panel) in bp[..nc.div_ceil(NR) * NR * kc]
            .chunks_exact_mut(NR * kc)
            .enumerate()
        {
            let c0 = jc + j * NR;
            let width = NR.min(jc + nc - c0);
            match b {
                Weights::Transposed { w, k, .. } => pack_transposed(w, k, c0, width, pc, kc, panel),
                Weights::Plain { w, rows, cols } => {
                    pack_plain(w, rows, cols, c0, width, pc, kc, panel)
                }
            }
        }
    }

    /// A panel of `B = Wᵀ`: column c is row c0 + c of W [·, k], whose pairs are adjacent
    /// values; 16 rows × 16 pairs at a time, read as vectors and transposed in registers.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pack_transposed(
        w: &[bf16],
        k: usize,
        c0: usize,
        width: usize,
        pc: usize,
        kc: usize,
        panel: &mut [u32],
    ) {
        let wp = w.as_ptr() as *const u16;
        for half in 0..NR / 16 {
            let mut p0 = 0;
            while p0 < kc {
                let first = 2 * (pc + p0);
                // Values of a row from `first` on: at most 32, never past the row's end.
                let vmask = lanes32(k.saturating_sub(first).min(32));
                let mut r = [_mm512_setzero_si512(); 16];
                for (i, v) in r.iter_mut().enumerate() {
                    let c = half * 16 + i;
                    if c < width {
                        *v = _mm512_maskz_loadu_epi16(
                            vmask,
                            wp.add((c0 + c) * k + first) as *const _,
                        );
                    }
                }
                transpose16(&mut r);
                for (q, v) in r.iter().enumerate().take(16.min(kc - p0)) {
                    _mm512_storeu_si512(
                        panel.as_mut_ptr().add((p0 + q) * NR + half * 16) as *mut _,
                        *v,
                    );
                }
                p0 += 16;
            }
        }
    }

    /// A panel of `B = W` for W [rows, cols]: pair p of column c is W[2p, c] and W[2p+1, c],
    /// two rows' 32 values interleaved into 32 pairs.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn pack_plain(
        w: &[bf16],
        rows: usize,
        cols: usize,
        c0: usize,
        width: usize,
        pc: usize,
        kc: usize,
        panel: &mut [u32],
    ) {
        let wp = w.as_ptr() as *const u16;
        let vmask = lanes32(width);
        // Output pairs 0..16 take values 0..16 of both rows, pairs 16..32 values 16..32.
        let lo_idx = _mm512_set_epi16(
            47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36,
            4, 35, 3, 34, 2, 33, 1, 32, 0,
        );
        let hi_idx = _mm512_set_epi16(
            63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23, 54, 22, 53, 21,
            52, 20, 51, 19, 50, 18, 49, 17, 48, 16,
        );
        for p in 0..kc {
            let q = 2 * (pc + p);
            let r0 = _mm512_maskz_loadu_epi16(vmask, wp.add(q * cols + c0) as *const _);
            let r1 = if q + 1 < rows {
                _mm512_maskz_loadu_epi16(vmask, wp.add((q + 1) * cols + c0) as *const _)
            } else {
                _mm512_setzero_si512()
            };
            let dst = panel.as_mut_ptr().add(p * NR);
            _mm512_storeu_si512(dst as *mut _, _mm512_permutex2var_epi16(r0, lo_idx, r1));
            _mm512_storeu_si512(
                dst.add(16) as *mut _,
                _mm512_permutex2var_epi16(r0, hi_idx, r1),
            );
        }
    }

    /// The low `n` of 32 bits set: a mask for the first n 16-bit lanes.
    fn lanes32(n: usize) -> __mmask32 {
        if n >= 32 {
            u32::MAX
        } else {
            (1u32 << n) - 1
        }
    }

    /// Transposes 16 rows of 16 32-bit values in place: afterwards `r[c]` holds element c of
    /// every input row, in row order (the four unpack/shuffle stages of the usual transpose).
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for i in 0..2 {
            for j in 0..4 {
                t[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(r[8 * i + j], r[8 * i + j + 4]);
                t[8 * i + j + 4] = _mm512_shuffle_i32x4::<0xdd>(r[8 * i + j], r[8 * i + j + 4]);
            }
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_i32x4::<0x88>(t[j], t[j + 8]);
            r[j + 8] = _mm512_shuffle_i32x4::<0xdd>(t[j], t[j + 8]);
        }
    }

    /// One tile of up to MR × NR outputs, through the kernel for its row count.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile(
        rows: usize,
        kc: usize,
        a: *const u32,
        lda: (usize, usize),
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        n: usize,
        acc: (bool, f32),
    ) {
        macro_rules! by_rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => kernel::<$r>(kc, a, lda, b, c, ldc, n, acc),)*
                    _ => unreachable!("a panel has 1 to {MR} rows"),
                }
            };
        }
        by_rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// `C[R × n] (+)= beta · A·B` over kc pairs: `a` pairs (pair p of row r at r·lda + p·aps),
    /// `b` a packed 32-column panel, `c` row-major with stride `ldc`, `n` ≤ 32 columns stored.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn kernel<const R: usize>(
        kc: usize,
        a: *const u32,
        (lda, aps): (usize, usize),
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        n: usize,
        (accumulate, beta): (bool, f32),
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..kc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
            let ar = a.add(p * aps);
            for (r, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ar.add(r * lda) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        let (m0, m1) = (lanes(n), lanes(n.saturating_sub(16)));
        let scale = _mm512_set1_ps(beta);
        for (r, row) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if beta != 1.0 {
                v0 = _mm512_mul_ps(v0, scale);
                v1 = _mm512_mul_ps(v1, scale);
            }
            if accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr.add(16)));
            }
            _mm512_mask_storeu_ps(cr, m0, v0);
            _mm512_mask_storeu_ps(cr.add(16), m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// `a` [m, depth] as rows of pairs rounded without the kernel's conversion.
    fn scalar_rows(a: &[f32], m: usize, depth: usize) -> Rows {
        let pairs = a
            .chunks(depth)
            .flat_map(|row| {
                row.chunks(2)
                    .map(|c| pair(c[0], c.get(1).copied().unwrap_or(0.0)))
            })
            .collect();
        Rows { pairs, m, depth }
    }

    /// Rows made chunk by chunk (one matrix and two at once) are the rows of the same values
    /// converted whole, and products of them are the f32 entry points' products.
    #[test]
    fn rows_from_chunks_match_rows_of_the_values() {
        let (m, depth) = (7, 2 * CHUNK / 3 + 2);
        let a = data(m * depth, 41);
        let b = data(m * depth, 42);
        let whole = Rows::new(&a, m, depth);
        let one = Rows::from_chunks(m, depth, |first, out| {
            out.copy_from_slice(&a[first..first + out.len()])
        });
        let (two_a, two_b) = Rows::from_chunks2(
            m,
            depth,
            |first, oa, ob| {
                oa.copy_from_slice(&a[first..first + oa.len()]);
                ob.copy_from_slice(&b[first..first + ob.len()]);
            },
            true,
        );
        assert_eq!(one.pairs, whole.pairs);
        assert_eq!(two_a.pairs, whole.pairs);
        assert_eq!(two_b.pairs, Rows::new(&b, m, depth).pairs);
        assert_eq!(scalar_rows(&a, m, depth).pairs, whole.pairs);
        let n = 40;
        let w: Vec<bf16> = data(n * depth, 43)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        assert_eq!(x_wt_rows(&one, &w, n), x_wt(&a, &w, (m, n, depth)));
        let wt: Vec<bf16> = data(depth * n, 44)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        let mut acc = data(m * n, 45);
        let mut want = acc.clone();
        g_w_rows_into(&two_b, &wt, n, &mut acc, true);
        g_w_into(&b, &wt, (m, depth, n), &mut want, true);
        assert_eq!(acc, want);
        assert_eq!(g_w_rows(&two_b, &wt, n), g_w(&b, &wt, (m, depth, n)));
    }

    /// `Σ round(a)·w` in f64: what both paths compute, up to the order of f32 sums.
    fn reference(a: &[f32], w: &[bf16], (m, n, k): (usize, usize, usize), t: bool) -> Vec<f64> {
        // t: x·Wᵀ (a [m,k], W [n,k]) → [m,n]; else g·W (a [m,n], W [n,k]) → [m,k].
        let (depth, cols) = if t { (k, n) } else { (n, k) };
        let mut c = vec![0f64; m * cols];
        for i in 0..m {
            for j in 0..cols {
                let mut s = 0f64;
                for p in 0..depth {
                    let wv = if t { w[j * k + p] } else { w[p * k + j] };
                    s += round(a[i * depth + p]) as f64 * wv.to_f64();
                }
                c[i * cols + j] = s;
            }
        }
        c
    }

    fn check(got: &[f32], want: &[f64], depth: usize, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // f32 sums of `depth` exact products of magnitude ≤ 1.
            let tol = 1e-5 * (depth as f64) + 1e-6;
            assert!((*g as f64 - w).abs() <= tol, "{what} at {i}: {g} vs {w}");
        }
    }

    #[test]
    fn both_products_match_the_reference_over_edges_odd_depths_and_blocks() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (13, 33, 31),
            (12, 32, 64),
            (25, 70, 2 * KC + 3),
            (40, NC + 40, 100),
            (7, 2 * NC + 1, KC + 1),
        ];
        for &(m, n, k) in &shapes {
            let w: Vec<bf16> = data(n * k, 2).iter().map(|&v| bf16::from_f32(v)).collect();
            let x = data(m * k, 1);
            let g = data(m * n, 3);
            let want_f = reference(&x, &w, (m, n, k), true);
            let want_b = reference(&g, &w, (m, n, k), false);
            // The kernel where the CPU has it, and the portable path every time.
            check(
                &x_wt(&x, &w, (m, n, k)),
                &want_f,
                k,
                &format!("x·Wᵀ {m}x{n}x{k}"),
            );
            check(
                &g_w(&g, &w, (m, n, k)),
                &want_b,
                n,
                &format!("g·W {m}x{n}x{k}"),
            );
            let pf = portable(&scalar_rows(&x, m, k), Weights::Transposed { w: &w, n, k });
            check(&pf, &want_f, k, &format!("portable x·Wᵀ {m}x{n}x{k}"));
            let pb = portable(
                &scalar_rows(&g, m, n),
                Weights::Plain {
                    w: &w,
                    rows: n,
                    cols: k,
                },
            );
            check(&pb, &want_b, n, &format!("portable g·W {m}x{n}x{k}"));
        }
    }

    #[test]
    fn products_into_a_buffer_overwrite_or_accumulate() {
        for &(m, n, k) in &[(13, 70, 2 * KC + 3), (5, 3, 1)] {
            let w: Vec<bf16> = data(n * k, 8).iter().map(|&v| bf16::from_f32(v)).collect();
            let x = data(m * k, 9);
            let g = data(m * n, 10);
            let before_f = data(m * n, 11);
            let before_b = data(m * k, 12);
            let want_f = reference(&x, &w, (m, n, k), true);
            let want_b = reference(&g, &w, (m, n, k), false);
            let mut out = before_f.clone();
            x_wt_into(&x, &w, (m, n, k), &mut out, true);
            let acc: Vec<f64> = want_f
                .iter()
                .zip(&before_f)
                .map(|(a, b)| a + *b as f64)
                .collect();
            check(&out, &acc, k, "x·Wᵀ accumulated");
            x_wt_into(&x, &w, (m, n, k), &mut out, false);
            check(&out, &want_f, k, "x·Wᵀ overwritten");
            let mut out = before_b.clone();
            g_w_into(&g, &w, (m, n, k), &mut out, true);
            let acc: Vec<f64> = want_b
                .iter()
                .zip(&before_b)
                .map(|(a, b)| a + *b as f64)
                .collect();
            check(&out, &acc, n, "g·W accumulated");
            g_w_into(&g, &w, (m, n, k), &mut out, false);
            check(&out, &want_b, n, "g·W overwritten");
        }
    }

    /// `gemm_rounded` over every layout the packing distinguishes (rows contiguous, columns
    /// contiguous, neither), odd depths, more than one depth block, a strided output, scaling
    /// and accumulation: the kernel (where the CPU has it) and the portable path against `Σ
    /// round(a)·round(b)` in f64.
    #[test]
    fn rounded_products_match_the_reference_in_every_layout() {
        use crate::gemm::View;
        // (rows, columns) of an operand stored row-major, column-major or with gaps.
        let layouts = |rows: usize, cols: usize| {
            [
                View::at(3, cols + 2, 1),
                View::at(1, 1, rows + 1),
                View::at(0, 2 * cols + 1, 2),
            ]
        };
        for &(m, n, k) in &[(1, 1, 1), (13, 33, 7), (64, 70, 64), (30, 40, 2 * KC + 5)] {
            let a = data(3 * (m + 2) * (k + 2) + 8, 21);
            let b = data(3 * (k + 2) * (n + 2) + 8, 22);
            for (li, lv) in layouts(m, k).into_iter().enumerate() {
                for (ri, rv) in layouts(k, n).into_iter().enumerate() {
                    let want: Vec<f64> = (0..m * n)
                        .map(|i| {
                            let (r, c) = (i / n, i % n);
                            (0..k)
                                .map(|p| {
                                    round(a[lv.off + r * lv.rs + p * lv.cs]) as f64
                                        * round(b[rv.off + p * rv.rs + c * rv.cs]) as f64
                                })
                                .sum::<f64>()
                        })
                        .collect();
                    let (beta, ld) = (0.5f32, n + 3);
                    let before = data(m * ld, 23);
                    let dv = View::at(0, ld, 1);
                    let run = |acc: bool, portable: bool| {
                        let mut out = before.clone();
                        let args = ((m, n, k), dv, acc, lv, rv, beta);
                        let ((m, n, k), dv, acc, lv, rv, beta) = args;
                        if portable {
                            let r = rounded(&b, rv, k, n);
                            let bv = View::row_major(n);
                            rounded_portable((m, n, k), &mut out, dv, acc, &a, lv, &r, bv, beta);
                        } else {
                            gemm_rounded((m, n, k), &mut out, dv, acc, &a, lv, &b, rv, beta);
                        }
                        out
                    };
                    for portable in [false, true] {
                        for acc in [false, true] {
                            let got = run(acc, portable);
                            for i in 0..m * ld {
                                let (r, c) = (i / ld, i % ld);
                                let what = format!(
                                    "{m}x{n}x{k} layouts {li}/{ri} acc {acc} portable {portable} at ({r}, {c})"
                                );
                                if c >= n {
                                    assert_eq!(got[i], before[i], "{what}: outside the product");
                                    continue;
                                }
                                let w = f64::from(beta) * want[r * n + c]
                                    + if acc { f64::from(before[i]) } else { 0.0 };
                                let tol = 1e-5 * k as f64 + 1e-6;
                                assert!(
                                    (f64::from(got[i]) - w).abs() <= tol,
                                    "{what}: {} vs {w}",
                                    got[i]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Parts of a packed operand (from an even row and an aligned column, odd depths reading
    /// past the part's last row, every layout) against `gemm_rounded` on the same part, on the
    /// kernel where the CPU has it and on the portable path.
    #[test]
    fn products_with_parts_of_a_packed_operand_match_the_unpacked_ones() {
        use crate::gemm::View;
        let (kt, nt) = (2 * KC + 40, 100);
        let src = data(2 * (kt + 1) * (nt + 1) + 4, 31);
        let views = [
            View::at(2, nt + 1, 1),
            View::at(1, 1, kt + 1),
            View::at(0, 2 * nt + 1, 2),
        ];
        for (vi, bv) in views.into_iter().enumerate() {
            let kernel = PackedRhs::new((kt, nt), &src, bv);
            let portable = PackedRhs {
                k: kt,
                n: nt,
                values: Packed::Rounded(rounded(&src, bv, kt, nt)),
            };
            for &(m, n, k, r0, c0) in &[
                (5, 100, kt, 0, 0),
                (13, 40, 63, 2, 32),
                (64, 3, 2 * KC + 1, 30, 96),
                (1, 1, 1, kt - 1 - (kt - 1) % 2, 64),
            ] {
                let a = data(m * k, 32);
                let lv = View::row_major(k);
                let part = View::at(bv.off + r0 * bv.rs + c0 * bv.cs, bv.rs, bv.cs);
                let mut want = data(m * n, 33);
                let before = want.clone();
                gemm_rounded(
                    (m, n, k),
                    &mut want,
                    View::row_major(n),
                    true,
                    &a,
                    lv,
                    &src,
                    part,
                    2.0,
                );
                for (which, packed) in [("kernel", &kernel), ("portable", &portable)] {
                    let mut got = before.clone();
                    let dv = View::row_major(n);
                    gemm_rounded_packed(
                        (m, n, k),
                        &mut got,
                        dv,
                        true,
                        &a,
                        lv,
                        packed,
                        (r0, c0),
                        2.0,
                    );
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * k as f32;
                        assert!(
                            (g - w).abs() <= tol,
                            "{which}, layout {vi}, {m}x{n}x{k} at ({r0}, {c0}), element {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_like_pytorch() {
        // 1 + 2⁻⁸ is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round(-2.5), -2.5);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn empty_products_are_zero_sized_or_zero() {
        let w = vec![bf16::from_f32(1.0); 6];
        assert!(x_wt(&[], &w, (0, 2, 3)).is_empty());
        assert_eq!(g_w(&[], &[], (2, 0, 0)), vec![0.0; 0]);
        assert_eq!(x_wt(&[], &[], (2, 3, 0)), vec![0.0; 6]);
    }
}
