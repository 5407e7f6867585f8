//! Vectorised `exp` over rows of f32, the element-wise work of the fused softmax, attention and
//! cross-entropy: `x ← exp(x − shift)` with the row's sum.
//!
//! Compiled for the kernel family in use ([`crate::cpu::kernels`]): 16 lanes under AVX-512, 8
//! under AVX2/FMA, glibc's `expf` on CPUs with neither (and for f64). The approximation is
//! Cephes' `expf` (range reduction by ln 2 in two parts, a degree-5 polynomial, the exponent
//! set directly), within 2 ulp of the exact value over the range that matters here; arguments
//! below −87.3 give exactly 0 (a masked score, −∞, included), as the scalar `exp` does to within
//! f32's smallest normal.

use crate::cpu::Kernels;
use std::sync::OnceLock;

/// Which implementation runs, chosen once from the kernel family and the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Scalar,
    Avx2,
    Avx512,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            match crate::cpu::kernels() {
                Kernels::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => Level::Avx512,
                _ if avx2 => Level::Avx2,
                _ => Level::Scalar,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = Kernels::Avx2;
            Level::Scalar
        }
    })
}

/// Defines `pub fn $name` whose body is compiled three times — for AVX-512, for AVX2/FMA and for
/// the x86-64 baseline — and run at the [`level`] of the process: simple loops over slices that
/// the compiler vectorises at each width.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                fn narrow($($arg: $ty),*) $(-> $ret)? $body
                match level() {
                    // SAFETY: `level` chose the width because the CPU has its features.
                    #[allow(unsafe_code)]
                    Level::Avx512 => return unsafe { wide($($arg),*) },
                    #[allow(unsafe_code)]
                    Level::Avx2 => return unsafe { narrow($($arg),*) },
                    Level::Scalar => {}
                }
            }
            fn base($($arg: $ty),*) $(-> $ret)? $body
            base($($arg),*)
        }
    };
}

multiversion! {
    /// `row[i] += add[i]` (a mask row added to scores).
    pub fn add_assign(row: &mut [f32], add: &[f32]) {
        for (x, a) in row.iter_mut().zip(add) {
            *x += *a;
        }
    }
}

multiversion! {
    /// `row[i] *= s`.
    pub fn scale(row: &mut [f32], s: f32) {
        for x in row.iter_mut() {
            *x *= s;
        }
    }
}

multiversion! {
    /// The largest element of an f32 row (−∞ when empty), in 16 lanes.
    pub fn max_f32(row: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l = l.max(x);
            }
        }
        let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        lanes.iter().fold(tail, |m, &x| m.max(x))
    }
}

multiversion! {
    /// `Σ a[i]·b[i]`, in 16 lanes.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 16];
        let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
                *l += x * y;
            }
        }
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        lanes.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// `Σ a[i]·b[i]·c[i]`, in 16 lanes (RMSNorm's backward).
    pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
        let mut lanes = [0f32; 16];
        let (mut ca, mut cb, mut cc) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
        for ((x, y), z) in (&mut ca).zip(&mut cb).zip(&mut cc) {
            for (((l, &x), &y), &z) in lanes.iter_mut().zip(x).zip(y).zip(z) {
                *l += x * y * z;
            }
        }
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .zip(cc.remainder())
            .map(|((x, y), z)| x * y * z)
            .sum();
        lanes.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// `dp[i] ← p[i]·(dp[i] − delta)`: the softmax's backward through one row.
    pub fn softmax_grad_row(dp: &mut [f32], p: &[f32], delta: f32) {
        for (d, &p) in dp.iter_mut().zip(p) {
            *d = p * (*d - delta);
        }
    }
}

/// `row` as f32 when `T` is f32.
pub fn as_f32<T: 'static>(row: &mut [T]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above).
        #[allow(unsafe_code)]
        return Some(unsafe { &mut *(row as *mut [T] as *mut [f32]) });
    }
    None
}

/// `row` as f32 when `T` is f32 (shared).
pub fn as_f32_ref<T: 'static>(row: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above).
        #[allow(unsafe_code)]
        return Some(unsafe { &*(row as *const [T] as *const [f32]) });
    }
    None
}

/// `row[i] += add[i]` for f32 or f64 rows (the vectorised loop for f32).
pub fn add_assign_any<T: num_traits::Float + 'static>(row: &mut [T], add: &[T]) {
    if let Some(a) = as_f32_ref(add) {
        return add_assign(as_f32(row).expect("row has add's type"), a);
    }
    for (x, &a) in row.iter_mut().zip(add) {
        *x = *x + a;
    }
}

/// `Σ a[i]·b[i]` for f32 or f64 rows (16 lanes for f32).
pub fn dot_any<T: num_traits::Float + 'static>(a: &[T], b: &[T]) -> T {
    if let (Some(x), Some(y)) = (as_f32_ref(a), as_f32_ref(b)) {
        return T::from(dot(x, y)).unwrap_or_else(T::nan);
    }
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

/// `Σ a[i]·b[i]·c[i]` for f32 or f64 rows (16 lanes for f32).
pub fn dot3_any<T: num_traits::Float + 'static>(a: &[T], b: &[T], c: &[T]) -> T {
    if let (Some(x), Some(y), Some(z)) = (as_f32_ref(a), as_f32_ref(b), as_f32_ref(c)) {
        return T::from(dot3(x, y, z)).unwrap_or_else(T::nan);
    }
    a.iter()
        .zip(b)
        .zip(c)
        .fold(T::zero(), |s, ((&x, &y), &z)| s + x * y * z)
}

/// `dp[i] ← p[i]·(dp[i] − delta)` for f32 or f64 rows (the vectorised loop for f32).
pub fn softmax_grad_row_any<T: num_traits::Float + 'static>(dp: &mut [T], p: &[T], delta: T) {
    if let Some(pv) = as_f32_ref(p) {
        let d = as_f32(dp).expect("dp has p's type");
        return softmax_grad_row(d, pv, delta.to_f32().unwrap_or(f32::NAN));
    }
    for (d, &p) in dp.iter_mut().zip(p) {
        *d = p * (*d - delta);
    }
}

/// Softmax of one row in place; returns its max and the sum of `exp(x − max)` (the log-sum-exp
/// is `max + ln(sum)`), or `None` (and a row of zeros) when every element is −∞.
pub fn softmax_row<T: num_traits::Float + 'static>(row: &mut [T]) -> Option<(T, T)> {
    if let Some(r) = as_f32(row) {
        let max = max_f32(r);
        if max == f32::NEG_INFINITY {
            r.fill(0.0);
            return None;
        }
        let sum = exp_sub_sum(r, max);
        scale(r, 1.0 / sum);
        let cast = |v: f32| T::from(v).unwrap_or_else(T::nan);
        return Some((cast(max), cast(sum)));
    }
    let max = self::max(row);
    if max == T::neg_infinity() {
        row.iter_mut().for_each(|x| *x = T::zero());
        return None;
    }
    let sum = exp_sub_sum_any(row, max);
    let inv = T::one() / sum;
    row.iter_mut().for_each(|x| *x = *x * inv);
    Some((max, sum))
}

/// `x ← exp(x − shift)` for every element of `row`; returns their sum.
pub fn exp_sub_sum(row: &mut [f32], shift: f32) -> f32 {
    exp_sub_sum_at(level(), row, shift)
}

/// `out ← σ(x) = 1 / (1 + exp(−x))` for every element, in one pass (SwiGLU's gate).
pub fn sigmoid(x: &[f32], out: &mut [f32]) {
    sigmoid_at(level(), x, out)
}

/// [`sigmoid`] on a given level, which the CPU must have.
fn sigmoid_at(level: Level, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "sigmoid: lengths");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` chose this implementation because the CPU has its features.
        #[allow(unsafe_code)]
        Level::Avx512 => unsafe { x86::sigmoid_avx512(x, out) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Level::Avx2 => unsafe { x86::sigmoid_avx2(x, out) },
        _ => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = 1.0 / (1.0 + (-v).exp());
            }
        }
    }
}

/// The levels this CPU can run (for the tests).
#[cfg(test)]
fn levels() -> Vec<Level> {
    let mut v = vec![Level::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            v.push(Level::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Level::Avx512);
        }
    }
    v
}

/// [`exp_sub_sum`] on a given level, which the CPU must have.
fn exp_sub_sum_at(level: Level, row: &mut [f32], shift: f32) -> f32 {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` chose this implementation because the CPU has its features.
        #[allow(unsafe_code)]
        Level::Avx512 => unsafe { x86::exp_sub_sum_avx512(row, shift) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Level::Avx2 => unsafe { x86::exp_sub_sum_avx2(row, shift) },
        _ => scalar_exp_sub_sum(row, shift),
    }
}

fn scalar_exp_sub_sum(row: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - shift).exp();
        sum += *x;
    }
    sum
}

/// [`exp_sub_sum`] for f32 or f64 rows: the vectorised path for f32, `exp` for f64.
pub fn exp_sub_sum_any<T: num_traits::Float + 'static>(row: &mut [T], shift: T) -> T {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above).
        #[allow(unsafe_code)]
        let (row32, shift32) = unsafe {
            (
                &mut *(row as *mut [T] as *mut [f32]),
                *(&shift as *const T as *const f32),
            )
        };
        let s = exp_sub_sum(row32, shift32);
        // SAFETY: as above, T is f32.
        #[allow(unsafe_code)]
        return unsafe { *(&s as *const f32 as *const T) };
    }
    let mut sum = T::zero();
    for x in row.iter_mut() {
        *x = (*x - shift).exp();
        sum = sum + *x;
    }
    sum
}

/// `Σ exp(x − shift)` over `row`, which is left as it is.
pub fn sum_exp_sub_any<T: num_traits::Float + 'static>(row: &[T], shift: T) -> T {
    let mut buf = [T::zero(); 256];
    let mut sum = T::zero();
    for chunk in row.chunks(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.copy_from_slice(chunk);
        sum = sum + exp_sub_sum_any(b, shift);
    }
    sum
}

/// The largest element (−∞ for an empty row), vectorised by the compiler: no NaN handling.
pub fn max<T: num_traits::Float>(row: &[T]) -> T {
    row.iter()
        .copied()
        .fold(T::neg_infinity(), |m, x| if x > m { x } else { m })
}

/// The low `min(n, 16)` bits set: the mask of a 16-lane vector's first `n` lanes (a row's
/// tail in the AVX-512 loops here and in [`crate::gemm::bf16`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes16(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    //! The AVX2 and AVX-512 bodies; `unsafe` only for their target features, which the caller
    //! has checked.

    use std::arch::x86_64::*;

    // Cephes' expf constants.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P0: f32 = 1.987_569_1e-4;
    const P1: f32 = 1.398_199_9e-3;
    const P2: f32 = 8.333_452e-3;
    const P3: f32 = 4.166_579_6e-2;
    const P4: f32 = 1.666_666_5e-1;
    const P5: f32 = 0.5;
    /// Below this `exp` is under f32's smallest normal: the result is 0.
    const LOW: f32 = -87.336_55;
    /// Above this 2ⁿ would overflow the exponent: clamped (the result is then ~1.6e38).
    const HIGH: f32 = 88.0;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let zero_below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOW));
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LOW)), _mm256_set1_ps(HIGH));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(P0);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P1));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P2));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P4));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P5));
        let r2 = _mm256_mul_ps(r, r);
        y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
        _mm256_andnot_ps(zero_below, y)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sub_sum_avx2(row: &mut [f32], shift: f32) -> f32 {
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            let y = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
            _mm256_storeu_ps(c.as_mut_ptr(), y);
            acc = _mm256_add_ps(acc, y);
        }
        let mut tail = [f32::NEG_INFINITY; 8];
        let rest = chunks.into_remainder();
        tail[..rest.len()].copy_from_slice(rest);
        let y = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), s));
        _mm256_storeu_ps(tail.as_mut_ptr(), y);
        rest.copy_from_slice(&tail[..rest.len()]);
        acc = _mm256_add_ps(acc, y);
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum()
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let zero_below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(LOW));
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LOW)), _mm512_set1_ps(HIGH));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut y = _mm512_set1_ps(P0);
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P1));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P2));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P3));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P4));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P5));
        let r2 = _mm512_mul_ps(r, r);
        y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        let y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
        _mm512_maskz_mov_ps(!zero_below, y)
    }

    /// σ over `x` into `out` (equal lengths).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid_avx2(x: &[f32], out: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        let zero = _mm256_setzero_ps();
        let mut xs = x.chunks_exact(8);
        let mut os = out.chunks_exact_mut(8);
        for (xc, oc) in (&mut xs).zip(&mut os) {
            let e = exp8(_mm256_sub_ps(zero, _mm256_loadu_ps(xc.as_ptr())));
            _mm256_storeu_ps(oc.as_mut_ptr(), _mm256_div_ps(one, _mm256_add_ps(one, e)));
        }
        for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
            *o = 1.0 / (1.0 + (-v).exp());
        }
    }

    /// σ over `x` into `out` (equal lengths).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sigmoid_avx512(x: &[f32], out: &mut [f32]) {
        let one = _mm512_set1_ps(1.0);
        let zero = _mm512_setzero_ps();
        let n = x.len();
        let mut i = 0;
        while i < n {
            let left = n - i;
            let mask: __mmask16 = super::lanes16(left);
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            let e = exp16(_mm512_sub_ps(zero, v));
            let y = _mm512_div_ps(one, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, y);
            i += 16;
        }
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_sub_sum_avx512(row: &mut [f32], shift: f32) -> f32 {
        let s = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        let n = row.len();
        let mut i = 0;
        while i < n {
            let left = n - i;
            let mask: __mmask16 = super::lanes16(left);
            let p = row.as_mut_ptr().add(i);
            let y = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), s));
            _mm512_mask_storeu_ps(p, mask, y);
            acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, y));
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_f64_on_every_level() {
        let mut xs: Vec<f32> = (0..5_003).map(|i| -120.0 + i as f32 * 0.048).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            89.0,
            -89.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        for level in levels() {
            let mut out = vec![f32::NAN; xs.len()];
            sigmoid_at(level, &xs, &mut out);
            for (&x, &y) in xs.iter().zip(&out) {
                let want = 1.0 / (1.0 + (-(x as f64)).exp());
                let err = (y as f64 - want).abs();
                assert!(
                    err <= 4.0 * f32::EPSILON as f64 * want + 1e-37,
                    "{level:?}: σ({x}) = {y}, want {want}"
                );
            }
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp_over_the_range_and_zero_below_it() {
        let mut xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.009).collect();
        xs.extend([f32::NEG_INFINITY, 0.0, -0.0, 1e-30, -87.3, 88.0, 3.5]);
        for (level, len) in levels()
            .into_iter()
            .flat_map(|l| [xs.len(), 1, 7, 8, 15, 16, 17, 33].map(|n| (l, n)))
        {
            let mut got = xs[..len].to_vec();
            let sum = exp_sub_sum_at(level, &mut got, 0.0);
            let mut want_sum = 0f64;
            for (x, g) in xs[..len].iter().zip(&got) {
                let want = (*x as f64).exp();
                if *x < -87.336_55 {
                    // 0 from the vector paths, a subnormal from glibc's.
                    assert!(*g < f32::MIN_POSITIVE, "{level:?}: exp({x}) = {g}");
                    if level != Level::Scalar {
                        assert_eq!(*g, 0.0, "{level:?}: exp({x})");
                    }
                } else {
                    want_sum += want;
                    let rel = ((*g as f64) - want).abs() / want;
                    assert!(
                        rel < 4e-7,
                        "{level:?}: exp({x}) = {g}, want {want} (rel {rel:e})"
                    );
                }
            }
            assert!(((sum as f64) - want_sum).abs() <= 1e-5 * want_sum.max(1.0));
        }
        // The shift is subtracted first; f64 rows take exp itself.
        let mut row = vec![1.0f32, 2.0, 3.0];
        let s = exp_sub_sum(&mut row, 3.0);
        assert!(
            (row[2] - 1.0).abs() < 1e-7 && (s - (1.0 + (-1f32).exp() + (-2f32).exp())).abs() < 1e-6
        );
        let mut row64 = vec![1.0f64, 2.0];
        let s = exp_sub_sum_any(&mut row64, 2.0);
        assert_eq!(row64, vec![(-1f64).exp(), 1.0]);
        assert_eq!(s, 1.0 + (-1f64).exp());
        let long: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 * 0.3).collect();
        let want: f64 = long.iter().map(|&x| (x as f64 - 2.0).exp()).sum();
        let got = sum_exp_sub_any(&long, 2.0f32) as f64;
        assert!((got - want).abs() < 1e-5 * want);
        assert_eq!(max(&[1.0f32, f32::NEG_INFINITY, 3.0]), 3.0);
        let v: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        assert_eq!(max_f32(&v), 5.0);
        assert_eq!(max_f32(&[]), f32::NEG_INFINITY);
        let w: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let want: f32 = v.iter().zip(&w).map(|(a, b)| a * b).sum();
        assert!((dot(&v, &w) - want).abs() < 1e-4);
        // Three-way products over lanes and a tail, f32 and f64.
        let z: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.125).collect();
        let want: f64 = (0..37)
            .map(|i| v[i] as f64 * w[i] as f64 * z[i] as f64)
            .sum();
        assert!((dot3(&v, &w, &z) as f64 - want).abs() < 1e-4);
        let (v64, w64, z64): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            v.iter().map(|&x| x as f64).collect(),
            w.iter().map(|&x| x as f64).collect(),
            z.iter().map(|&x| x as f64).collect(),
        );
        assert!((dot3_any(&v64, &w64, &z64) - want).abs() < 1e-9);
        assert_eq!(dot3(&[], &[], &[]), 0.0);
        let mut a = v.clone();
        add_assign(&mut a, &w);
        scale(&mut a, 2.0);
        assert!(a
            .iter()
            .zip(v.iter().zip(&w))
            .all(|(x, (p, q))| *x == 2.0 * (p + q)));
        let mut dp = w.clone();
        softmax_grad_row(&mut dp, &v, 1.5);
        assert!(dp
            .iter()
            .zip(v.iter().zip(&w))
            .all(|(x, (p, d))| *x == p * (d - 1.5)));
        // Softmax rows in f32 (vectorised) and f64 agree; an all −∞ row is zeros.
        let mut r32: Vec<f32> = v.clone();
        let mut r64: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        let (m32, s32) = softmax_row(&mut r32).unwrap();
        let (m64, s64) = softmax_row(&mut r64).unwrap();
        assert_eq!(m32 as f64, m64);
        assert!((s32 as f64 - s64).abs() < 1e-5 * s64);
        assert!(r32
            .iter()
            .zip(&r64)
            .all(|(a, b)| (*a as f64 - b).abs() < 1e-6));
        let mut masked = vec![f32::NEG_INFINITY; 5];
        assert!(softmax_row(&mut masked).is_none() && masked.iter().all(|x| *x == 0.0));
        assert_eq!(max::<f32>(&[]), f32::NEG_INFINITY);
    }
}
