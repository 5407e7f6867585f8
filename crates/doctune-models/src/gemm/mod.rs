//! DocTune's f32 matrix product on the CPU, `dst = (acc ? dst : 0) + beta · lhs · rhs` over
//! strided views, through the kernel family chosen for the process ([`crate::cpu::kernels`]).
//! Every frozen projection's forward and input gradient and the fused attention's products go
//! through [`sgemm`].
//!
//! Both families are the `gemm` crate's BLIS-style kernels, built twice:
//! - **AVX-512**: `gemm` 0.19 with its `x86-v4` kernels;
//! - **AVX2**: `gemm` 0.18, whose stable build stops at AVX2/FMA (its 6×16 `fma` kernels; a CPU
//!   without FMA gets its scalar ones), so `DOCTUNE_CPU_KERNELS=avx2` runs the AVX2 path on a
//!   CPU that also has AVX-512.
//!
//! A hand-written 6×16 AVX2 micro-kernel with our own packing was measured against these on the
//! AVX2-only development machine and lost by 12–17 % (`docs/performance.md`, "AVX2 CPUs"); the
//! crate's AVX2 path runs at PyTorch's MKL rate on the training shapes, so it stays.
//!
//! [`bf16`] multiplies f32 activations with frozen bf16 weights (AVX-512 BF16).

use crate::cpu::Kernels;

pub mod bf16;

/// A strided view of a matrix in a slice: element (i, j) is at `off + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Offset of element (0, 0).
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl View {
    /// The view at `off` with strides `rs` and `cs`.
    pub fn at(off: usize, rs: usize, cs: usize) -> View {
        View { off, rs, cs }
    }
    /// A row-major matrix with `cols` columns.
    pub fn row_major(cols: usize) -> View {
        View {
            off: 0,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of this view.
    pub fn t(self) -> View {
        View {
            off: self.off,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// One past the last element an `m × n` matrix in this view addresses.
    pub fn end(self, m: usize, n: usize) -> usize {
        if m == 0 || n == 0 {
            self.off
        } else {
            self.off + (m - 1) * self.rs + (n - 1) * self.cs + 1
        }
    }
}

/// `dst[m×n] = (acc ? dst : 0) + beta · lhs[m×k] · rhs[k×n]` with the family in use
/// ([`crate::cpu::kernels`]), over `rayon`'s threads when `parallel`.
///
/// # Panics
/// If a view addresses elements outside its slice (a caller's bug, never input-dependent).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    dv: View,
    acc: bool,
    lhs: &[f32],
    lv: View,
    rhs: &[f32],
    rv: View,
    beta: f32,
    parallel: bool,
) {
    sgemm_with(
        crate::cpu::kernels(),
        mnk,
        dst,
        dv,
        acc,
        lhs,
        lv,
        rhs,
        rv,
        beta,
        parallel,
    )
}

/// [`sgemm`] with an explicit family.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    family: Kernels,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dv: View,
    acc: bool,
    lhs: &[f32],
    lv: View,
    rhs: &[f32],
    rv: View,
    beta: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dv.end(m, n) <= dst.len() && lv.end(m, k) <= lhs.len() && rv.end(k, n) <= rhs.len(),
        "sgemm: a view reaches outside its slice"
    );
    // SAFETY: the assertion above keeps every element the views address inside their slices;
    // `dst` is borrowed mutably, so it aliases neither `lhs` nor `rhs`.
    #[allow(unsafe_code)]
    unsafe {
        raw(
            family,
            (m, n, k),
            dst.as_mut_ptr(),
            dv,
            acc,
            lhs.as_ptr(),
            lv,
            rhs.as_ptr(),
            rv,
            beta,
            parallel,
        )
    }
}

/// `lhs[m×k] · rhs[k×n]` as a new row-major `m × n` matrix: like [`sgemm`] without zeroing a
/// buffer the product overwrites anyway (a frozen projection's output and input gradient, on
/// every training step).
///
/// # Panics
/// As [`sgemm`].
pub fn sgemm_new(
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lv: View,
    rhs: &[f32],
    rv: View,
    parallel: bool,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    assert!(
        lv.end(m, k) <= lhs.len() && rv.end(k, n) <= rhs.len(),
        "sgemm: a view reaches outside its slice"
    );
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: the views stay inside their slices (asserted above) and the new buffer has room
    // for m·n elements; with `acc` false and k > 0 the kernels write every one of them and read
    // none, so the length can then be set.
    #[allow(unsafe_code)]
    unsafe {
        raw(
            crate::cpu::kernels(),
            (m, n, k),
            out.as_mut_ptr(),
            View::row_major(n),
            false,
            lhs.as_ptr(),
            lv,
            rhs.as_ptr(),
            rv,
            1.0,
            parallel,
        );
        out.set_len(m * n);
    }
    out
}

/// The product on raw pointers.
///
/// # Safety
/// Every element the three views address from their pointers must be valid (`dst` for writes,
/// and for reads when `acc`), and `dst`'s elements must alias neither input.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn raw(
    family: Kernels,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dv: View,
    acc: bool,
    lhs: *const f32,
    lv: View,
    rhs: *const f32,
    rv: View,
    beta: f32,
    parallel: bool,
) {
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (d, l, r) = (dst.add(dv.off), lhs.add(lv.off), rhs.add(rv.off));
    let (dcs, drs, lcs, lrs, rcs, rrs) = (
        dv.cs as isize,
        dv.rs as isize,
        lv.cs as isize,
        lv.rs as isize,
        rv.cs as isize,
        rv.rs as isize,
    );
    // The same call into either build of the crate.
    macro_rules! call {
        ($krate:ident) => {
            $krate::gemm(
                m,
                n,
                k,
                d,
                dcs,
                drs,
                acc,
                l,
                lcs,
                lrs,
                r,
                rcs,
                rrs,
                1.0,
                beta,
                false,
                false,
                false,
                if threads > 1 {
                    $krate::Parallelism::Rayon(threads)
                } else {
                    $krate::Parallelism::None
                },
            )
        };
    }
    // The caller's guarantees (see Safety) are what the crates need; both check the CPU's
    // features themselves (an AVX-512 request on a CPU without it runs their AVX2 kernels).
    match family {
        Kernels::Avx512 => call!(gemm),
        Kernels::Avx2 => call!(gemm_avx2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        av: View,
        b: &[f32],
        bv: View,
    ) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[av.off + i * av.rs + p * av.cs] as f64
                        * b[bv.off + p * bv.rs + j * bv.cs] as f64;
                }
            }
        }
        c
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn every_family_matches_a_reference_over_edges_strides_and_accumulation() {
        let families: Vec<Kernels> = [Kernels::Avx2, Kernels::Avx512]
            .into_iter()
            .filter(|k| k.available())
            .collect();
        // Shapes around the block sizes: edge tiles in every direction, several depth blocks,
        // fewer rows than the packed path takes.
        for &(m, n, k) in &[
            (17, 33, 7),
            (130, 40, 300),
            (6, 16, 256),
            (257, 2100, 513),
            (3, 5, 9),
        ] {
            for transposed in [false, true] {
                let a = data(m * k + 3, 1);
                let av = View {
                    off: 3,
                    rs: k,
                    cs: 1,
                };
                // rhs as a row-major k×n, or as the transpose of a row-major n×k (a weight).
                let b = data(k * n + 2, 2);
                let bv = if transposed {
                    View {
                        off: 2,
                        rs: 1,
                        cs: k,
                    }
                } else {
                    View {
                        off: 2,
                        rs: n,
                        cs: 1,
                    }
                };
                let want = reference(m, n, k, &a, av, &b, bv);
                for &f in &families {
                    for parallel in [false, true] {
                        let mut c = data(m * n, 3);
                        let before = c.clone();
                        sgemm_with(
                            f,
                            (m, n, k),
                            &mut c,
                            View::row_major(n),
                            true,
                            &a,
                            av,
                            &b,
                            bv,
                            0.5,
                            parallel,
                        );
                        for i in 0..m * n {
                            let w = before[i] as f64 + 0.5 * want[i];
                            assert!(
                                (c[i] as f64 - w).abs()
                                    <= 1e-4 * (1.0 + w.abs()) * (k as f64).sqrt(),
                                "{f:?} {m}x{n}x{k} t={transposed} p={parallel} at {i}: {} vs {w}",
                                c[i]
                            );
                        }
                        let mut c = vec![f32::NAN; m * n];
                        sgemm_with(
                            f,
                            (m, n, k),
                            &mut c,
                            View::row_major(n),
                            false,
                            &a,
                            av,
                            &b,
                            bv,
                            1.0,
                            parallel,
                        );
                        assert!(c.iter().zip(&want).all(|(x, w)| (*x as f64 - w).abs()
                            <= 1e-4 * (1.0 + w.abs()) * (k as f64).sqrt()));
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_product_matches_the_reference_without_a_zeroed_buffer() {
        for &(m, n, k) in &[(33, 17, 9), (2, 3, 0), (0, 4, 4)] {
            let a = data(m * k, 6);
            let b = data(k * n, 7);
            let want = reference(m, n, k, &a, View::row_major(k), &b, View::row_major(n));
            let got = sgemm_new(
                (m, n, k),
                &a,
                View::row_major(k),
                &b,
                View::row_major(n),
                true,
            );
            assert_eq!(got.len(), m * n);
            assert!(got
                .iter()
                .zip(&want)
                .all(|(x, w)| (*x as f64 - w).abs() < 1e-3));
        }
    }

    #[test]
    fn a_column_major_destination_is_written_in_place() {
        let (m, n, k) = (40, 24, 20);
        let a = data(m * k, 4);
        let b = data(k * n, 5);
        let want = reference(m, n, k, &a, View::row_major(k), &b, View::row_major(n));
        let mut c = vec![0f32; m * n];
        sgemm_with(
            Kernels::Avx2,
            (m, n, k),
            &mut c,
            View::row_major(m).t(),
            false,
            &a,
            View::row_major(k),
            &b,
            View::row_major(n),
            1.0,
            true,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((c[j * m + i] as f64 - want[i * n + j]).abs() < 1e-3);
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_its_slice_is_refused() {
        let mut c = vec![0f32; 4];
        sgemm_with(
            Kernels::Avx2,
            (2, 2, 2),
            &mut c,
            View::row_major(2),
            false,
            &[0.0; 3],
            View::row_major(2),
            &[0.0; 4],
            View::row_major(2),
            1.0,
            false,
        );
    }
}
