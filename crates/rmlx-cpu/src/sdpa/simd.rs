//! Dot products and `acc += p * v` of an f32 query/accumulator row with an f32, f16 or bf16
//! key/value row: AVX2+FMA (and F16C for f16) picked at run time, portable loops otherwise.

use rmlx_core::dtype::Element;
use rmlx_core::{bf16, f16};

/// Element types K/V rows may have.
pub trait KvElem: Element {
    /// `sum_i a[i] * b[i]` over `a.len()` elements (`b` at least as long).
    fn dot(a: &[f32], b: &[Self]) -> f32;
    /// `acc[i] += p * v[i]` over `acc.len()` elements.
    fn axpy(acc: &mut [f32], p: f32, v: &[Self]);
    /// `dst[i] = v[i]` as f32 over `dst.len()` elements.
    fn widen(dst: &mut [f32], v: &[Self]);
}

/// Whether AVX2 and FMA are available (the tiled block kernels' requirement).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2_fma() -> bool {
    x86::level() >= 2
}

#[inline]
pub fn dot<T: KvElem>(a: &[f32], b: &[T]) -> f32 {
    T::dot(a, b)
}

#[inline]
pub fn axpy<T: KvElem>(acc: &mut [f32], p: f32, v: &[T]) {
    T::axpy(acc, p, v)
}

/// Portable dot with 8 independent accumulators (vectorisable by the compiler).
#[inline]
fn dot_portable<T: Element>(a: &[f32], b: &[T]) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k].to_f32();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y.to_f32();
    }
    s
}

#[inline]
fn axpy_portable<T: Element>(acc: &mut [f32], p: f32, v: &[T]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a += p * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0 = unknown, 1 = portable, 2 = AVX2+FMA, 3 = AVX2+FMA+F16C.
    static LEVEL: AtomicU8 = AtomicU8::new(0);

    #[inline]
    pub fn level() -> u8 {
        let l = LEVEL.load(Ordering::Relaxed);
        if l != 0 {
            return l;
        }
        let l = if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("f16c") {
                3
            } else {
                2
            }
        } else {
            1
        };
        LEVEL.store(l, Ordering::Relaxed);
        l
    }

    use crate::vmath::avx2::hsum;

    /// One macro for the three element types keeps the loops identical; `$load` reads 8
    /// elements as f32.
    macro_rules! kernels {
        ($dot:ident, $axpy:ident, $widen:ident, $t:ty, $feat:literal, $load:ident) => {
            /// # Safety
            /// The CPU must have the enabled features; `b`/`v` at least as long as `a`/`acc`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $dot(a: &[f32], b: &[$t]) -> f32 {
                let n = a.len();
                debug_assert!(b.len() >= n);
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let (mut s0, mut s1, mut s2, mut s3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut i = 0;
                while i + 32 <= n {
                    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), $load(pb.add(i)), s0);
                    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), $load(pb.add(i + 8)), s1);
                    s2 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 16)), $load(pb.add(i + 16)), s2);
                    s3 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 24)), $load(pb.add(i + 24)), s3);
                    i += 32;
                }
                while i + 8 <= n {
                    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), $load(pb.add(i)), s0);
                    i += 8;
                }
                let mut s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
                while i < n {
                    s += a[i] * super::Element::to_f32(b[i]);
                    i += 1;
                }
                s
            }

            /// # Safety
            /// As for the dot product.
            #[target_feature(enable = $feat)]
            pub unsafe fn $axpy(acc: &mut [f32], p: f32, v: &[$t]) {
                let n = acc.len();
                debug_assert!(v.len() >= n);
                let (pa, pv) = (acc.as_mut_ptr(), v.as_ptr());
                let pp = _mm256_set1_ps(p);
                let mut i = 0;
                while i + 8 <= n {
                    _mm256_storeu_ps(
                        pa.add(i),
                        _mm256_fmadd_ps(pp, $load(pv.add(i)), _mm256_loadu_ps(pa.add(i))),
                    );
                    i += 8;
                }
                while i < n {
                    acc[i] += p * super::Element::to_f32(v[i]);
                    i += 1;
                }
            }

            /// # Safety
            /// As for the dot product.
            #[target_feature(enable = $feat)]
            pub unsafe fn $widen(dst: &mut [f32], v: &[$t]) {
                let n = dst.len();
                debug_assert!(v.len() >= n);
                let (pd, pv) = (dst.as_mut_ptr(), v.as_ptr());
                let mut i = 0;
                while i + 8 <= n {
                    _mm256_storeu_ps(pd.add(i), $load(pv.add(i)));
                    i += 8;
                }
                while i < n {
                    dst[i] = super::Element::to_f32(v[i]);
                    i += 1;
                }
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ld_f32(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn ld_f16(p: *const half::f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    /// bf16 is the high half of an f32: widen to 32 bits and shift left by 16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ld_bf16(p: *const half::bf16) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16,
        ))
    }

    kernels!(dot_f32, axpy_f32, widen_f32, f32, "avx2,fma", ld_f32);
    kernels!(
        dot_f16,
        axpy_f16,
        widen_f16,
        half::f16,
        "avx2,fma,f16c",
        ld_f16
    );
    kernels!(
        dot_bf16,
        axpy_bf16,
        widen_bf16,
        half::bf16,
        "avx2,fma",
        ld_bf16
    );
}

macro_rules! impl_kv {
    ($t:ty, $lvl:expr, $dot:ident, $axpy:ident, $widen:ident) => {
        impl KvElem for $t {
            #[inline]
            fn dot(a: &[f32], b: &[Self]) -> f32 {
                assert!(b.len() >= a.len());
                #[cfg(target_arch = "x86_64")]
                if x86::level() >= $lvl {
                    // SAFETY: the features were detected at run time; lengths checked above.
                    return unsafe { x86::$dot(a, b) };
                }
                dot_portable(a, b)
            }
            #[inline]
            fn axpy(acc: &mut [f32], p: f32, v: &[Self]) {
                assert!(v.len() >= acc.len());
                #[cfg(target_arch = "x86_64")]
                if x86::level() >= $lvl {
                    // SAFETY: as above.
                    return unsafe { x86::$axpy(acc, p, v) };
                }
                axpy_portable(acc, p, v)
            }
            #[inline]
            fn widen(dst: &mut [f32], v: &[Self]) {
                assert!(v.len() >= dst.len());
                #[cfg(target_arch = "x86_64")]
                if x86::level() >= $lvl {
                    // SAFETY: as above.
                    return unsafe { x86::$widen(dst, v) };
                }
                for (d, x) in dst.iter_mut().zip(v) {
                    *d = x.to_f32();
                }
            }
        }
    };
}
impl_kv!(f32, 2, dot_f32, axpy_f32, widen_f32);
impl_kv!(f16, 3, dot_f16, axpy_f16, widen_f16);
impl_kv!(bf16, 2, dot_bf16, axpy_bf16, widen_bf16);

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: KvElem>() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 64, 100, 128] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).sin()).collect();
            let b: Vec<T> = (0..n)
                .map(|i| T::from_f32((i as f32 * 0.7).cos()))
                .collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y.to_f32()).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4, "{} n={n}", T::DTYPE);
            let mut acc = a.clone();
            axpy(&mut acc, 0.5, &b);
            for i in 0..n {
                assert!((acc[i] - (a[i] + 0.5 * b[i].to_f32())).abs() < 1e-6);
            }
            assert!((dot_portable(&a, &b) - want).abs() < 1e-4);
        }
    }

    #[test]
    fn simd_matches_scalar() {
        check::<f32>();
        check::<f16>();
        check::<bf16>();
    }
}
