//! Vector math over f32 slices: `e^x` eight lanes at a time with AVX2+FMA (picked at run time),
//! `unary::exp_f32` element by element elsewhere.
//!
//! Why its own kernel: `exp_f32` vectorises inside the generic element-wise loop, but Rust never
//! fuses `a * b + c` into an FMA, and its three special-case selects each cost a compare and a
//! blend; written with intrinsics the same algorithm takes about half the instructions, which
//! moves `exp` over a large array from compute-bound toward the memory bandwidth, and gives
//! the softmax and attention kernels a cheap exponential.

use crate::unary::{exp_f32, has_avx2};

/// `ln 2` split in two (Cody–Waite): `n * LN2_HI` is exact for the n of f32's range.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf`'s polynomial for `(e^r - 1 - r) / r^2`, highest power first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];

/// `dst[i] = e^src[i]` (same length).
pub fn exp_slice(src: &[f32], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked at run time).
        return unsafe { avx512::exp_slice(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::exp_slice(src, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp_f32(s);
    }
}

/// Whether the AVX-512F copy of `exp_slice` may run (twice the lanes of AVX2: `exp` over a
/// large array is compute-bound on two cores with eight lanes).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// `x[i] = e^(x[i] - m)` in place, returning the sum of the results (a softmax row). Appending
/// `-inf` entries leaves the sum's bits unchanged (tested).
pub fn exp_sub_sum_inplace(x: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::exp_sub_sum_inplace(x, m) };
    }
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = exp_f32(*v - m);
        s += *v;
    }
    s
}

/// AVX2+FMA kernels. Safety, for every function here: the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` per lane, within ~1 ulp of the correctly rounded result: Cody–Waite reduction
    /// `x = n ln2 + r`, Cephes' degree-6 polynomial for `e^r`, `2^n` from exponent bits (split
    /// in two factors so n = 128 at the top of the range does not overflow). Below -87.34
    /// gives 0, above 88.72 gives +inf, NaN gives NaN.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.336_54);
        let hi = _mm256_set1_ps(88.722_83);
        // max/min return their second operand for NaN: a NaN lane computes on `lo` and is
        // restored at the end.
        let xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        let magic = _mm256_set1_ps(12_582_912.0); // 1.5 * 2^23
        let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E), magic);
        let n = _mm256_sub_ps(t, magic);
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B40_0000));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_LO), r);
        let mut p = _mm256_set1_ps(super::EXP_POLY[0]);
        for c in &super::EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let er = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
            _mm256_set1_ps(1.0),
        );
        let bias = _mm256_set1_epi32(127);
        let h = _mm256_srai_epi32(ni, 1);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(_mm256_sub_epi32(ni, h), bias),
            23,
        ));
        let y = _mm256_mul_ps(_mm256_mul_ps(er, s1), s2);
        let y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
        let y = _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps(x, hi, _CMP_GT_OQ),
        );
        // all-ones lanes are a NaN
        _mm256_or_ps(y, _mm256_cmp_ps(x, x, _CMP_UNORD_Q))
    }

    /// Asks for the two cache lines 4 KiB past `s` (the 32 floats a pass handles, 1024 floats
    /// ahead): the polynomial keeps the core busy, and without this its loads wait on DRAM
    /// instead of overlapping it (`exp` over 256 MiB went from 0.65-0.74 to 0.86 of a copy).
    #[inline(always)]
    pub fn prefetch_ahead(s: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(1024) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(1040) as *const i8);
        }
    }

    /// Horizontal sum of the eight lanes (the one the attention and decode kernels use too).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The first `n` (< 8) lanes of `src` as a vector, the rest `fill`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load_tail(src: &[f32], fill: f32) -> __m256 {
        let mut buf = [fill; 8];
        buf[..src.len()].copy_from_slice(src);
        _mm256_loadu_ps(buf.as_ptr())
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_slice(src: &[f32], dst: &mut [f32]) {
        // four independent vectors per pass: each exp8 is a ~20-deep dependency chain
        let n32 = src.len() / 32 * 32;
        for i in (0..n32).step_by(32) {
            let (s, d) = (src.as_ptr().add(i), dst.as_mut_ptr().add(i));
            prefetch_ahead(s);
            let a = exp8(_mm256_loadu_ps(s));
            let b = exp8(_mm256_loadu_ps(s.add(8)));
            let c = exp8(_mm256_loadu_ps(s.add(16)));
            let e = exp8(_mm256_loadu_ps(s.add(24)));
            _mm256_storeu_ps(d, a);
            _mm256_storeu_ps(d.add(8), b);
            _mm256_storeu_ps(d.add(16), c);
            _mm256_storeu_ps(d.add(24), e);
        }
        let n8 = src.len() / 8 * 8;
        for i in (n32..n8).step_by(8) {
            let v = exp8(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
        if n8 < src.len() {
            let mut buf = [0f32; 8];
            _mm256_storeu_ps(buf.as_mut_ptr(), exp8(load_tail(&src[n8..], 0.0)));
            let k = src.len() - n8;
            dst[n8..].copy_from_slice(&buf[..k]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sub_sum_inplace(x: &mut [f32], m: f32) -> f32 {
        let mv = _mm256_set1_ps(m);
        let mut acc = _mm256_setzero_ps();
        let n8 = x.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            let p = x.as_mut_ptr().add(i);
            let v = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), mv));
            _mm256_storeu_ps(p, v);
            acc = _mm256_add_ps(acc, v);
        }
        if n8 < x.len() {
            // padding lanes are -inf: e^-inf = 0 adds nothing. The tail joins the lanes (not a
            // scalar sum after them), so element i always adds into lane i % 8: a row's sum
            // does not change when masked (-inf) entries are appended, whatever its length
            // (attention rows of one query in blocks of different lengths give the same bits).
            let v = exp8(_mm256_sub_ps(load_tail(&x[n8..], f32::NEG_INFINITY), mv));
            let mut buf = [0f32; 8];
            _mm256_storeu_ps(buf.as_mut_ptr(), v);
            let k = x.len() - n8;
            x[n8..].copy_from_slice(&buf[..k]);
            acc = _mm256_add_ps(acc, v);
        }
        hsum(acc)
    }
}

/// AVX-512F kernels. Safety, for every function here: the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx512 {
    use std::arch::x86_64::*;

    /// `e^x` on sixteen lanes: the reduction and polynomial of [`super::avx2::exp8`], with
    /// `vscalefps` building `e^r * 2^n` in one instruction that also overflows to +inf and
    /// underflows through the subnormals to 0 (so no special-case selects but NaN's).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        // the clamp keeps r finite for ±inf; e^-104 and e^89 are already 0 and +inf in f32
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(89.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_LO), r);
        let mut p = _mm512_set1_ps(super::EXP_POLY[0]);
        for c in &super::EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let er = _mm512_add_ps(
            _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
            _mm512_set1_ps(1.0),
        );
        let y = _mm512_scalef_ps(er, n);
        // max/min turned NaN into the bound: put it back
        _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), x)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_slice(src: &[f32], dst: &mut [f32]) {
        let n32 = src.len() / 32 * 32;
        for i in (0..n32).step_by(32) {
            let (s, d) = (src.as_ptr().add(i), dst.as_mut_ptr().add(i));
            super::avx2::prefetch_ahead(s);
            let a = exp16(_mm512_loadu_ps(s));
            let b = exp16(_mm512_loadu_ps(s.add(16)));
            _mm512_storeu_ps(d, a);
            _mm512_storeu_ps(d.add(16), b);
        }
        // the tail through masked loads and stores
        let mut i = n32;
        while i < src.len() {
            let k = (src.len() - i).min(16);
            let m: __mmask16 = ((1u32 << k) - 1) as u16;
            let v = exp16(_mm512_maskz_loadu_ps(m, src.as_ptr().add(i)));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), m, v);
            i += k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_slice_matches_f64_exp_and_special_values() {
        let mut xs: Vec<f32> = (0..20_001).map(|i| -90.0 + i as f32 * 0.009).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -87.33,
            88.72,
            88.73,
            -87.34,
            -100.0,
            1e3,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0,
            2.5, // odd lengths exercise the tail
        ]);
        for (name, got) in implementations(&xs) {
            check_exp(name, &xs, &got);
        }
    }

    /// Every exp_slice this CPU can run, by name, applied to `xs` (the dispatcher's choice
    /// alone would leave the AVX2 code untested on an AVX-512 machine).
    fn implementations(xs: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
        let mut out = Vec::new();
        let mut d = vec![0f32; xs.len()];
        exp_slice(xs, &mut d);
        out.push(("dispatched", d.clone()));
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                unsafe { avx2::exp_slice(xs, &mut d) };
                out.push(("avx2", d.clone()));
            }
            if has_avx512() {
                unsafe { avx512::exp_slice(xs, &mut d) };
                out.push(("avx512", d.clone()));
            }
        }
        out
    }

    fn check_exp(name: &str, xs: &[f32], got: &[f32]) {
        for (&x, &g) in xs.iter().zip(got) {
            if x.is_nan() {
                assert!(g.is_nan(), "{name}: exp(NaN) = {g}");
                continue;
            }
            let want = (x as f64).exp() as f32;
            if x < -87.336_54 {
                // 0 (AVX2, element-wise) or the subnormal result (AVX-512's scalef)
                assert!(
                    (0.0..=f32::MIN_POSITIVE).contains(&g),
                    "{name}: exp({x}) = {g}"
                );
            } else if x > 88.722_83 {
                assert_eq!(g, f32::INFINITY, "{name}: exp({x})");
            } else if want.is_normal() {
                assert!(ulps(g, want) <= 2, "{name}: exp({x}) = {g}, want {want}");
            }
            // the element-wise path agrees (no FMA there: a rounding apart)
            let e = exp_f32(x);
            assert!(
                ulps(g, e) <= 2 || (g - e).abs() <= f32::MIN_POSITIVE,
                "{name}: {x}"
            );
        }
    }

    #[test]
    fn exp_sub_sum_ignores_appended_masked_entries_bit_for_bit() {
        let v: Vec<f32> = (0..45).map(|i| (i as f32 * 0.61).cos() * 7.0).collect();
        let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for n in 1..v.len() {
            let want = exp_sub_sum_inplace(&mut v[..n].to_vec(), m);
            for pad in 1..20 {
                let mut x = v[..n].to_vec();
                x.resize(n + pad, f32::NEG_INFINITY);
                let got = exp_sub_sum_inplace(&mut x, m);
                assert_eq!(got.to_bits(), want.to_bits(), "{n} values, {pad} masked");
            }
        }
    }

    #[test]
    fn exp_sub_sum_matches_scalar() {
        for n in [1usize, 7, 8, 9, 33, 100] {
            let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
            let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut x = v.clone();
            let s = exp_sub_sum_inplace(&mut x, m);
            let want: Vec<f64> = v.iter().map(|&a| ((a - m) as f64).exp()).collect();
            for (g, w) in x.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 1e-6 * w.max(1e-30), "{g} vs {w}");
            }
            let ws: f64 = want.iter().sum();
            assert!((s as f64 - ws).abs() <= 1e-5 * ws, "n={n}: {s} vs {ws}");
        }
    }
}
