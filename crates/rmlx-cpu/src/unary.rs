//! Elementwise functions of one array, and the shared `map1` driver the other elementwise
//! kernels build on.
//!
//! Fast path: a row-contiguous input is split into `CHUNK`-sized pieces mapped in parallel by a
//! monomorphised inner loop (no per-element dispatch), compiled twice: portable and AVX2+FMA,
//! picked at run time. Strided inputs are gathered chunk by chunk through `strided::walk`.

use crate::copy::{out_slice_mut, CHUNK};
use crate::stream_store::{fill_streamed, should_stream};
use crate::strided::{collapse, walk};
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Bool8, Element};
use rmlx_core::primitive::{OutputSpec, UnaryOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};

/// Whether the AVX2+FMA copies of the inner loops may run on this CPU.
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn loop1<T: Copy, O, F: Fn(T) -> O>(src: &[T], dst: &mut [O], f: &F) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f(*s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn loop1_avx2<T: Copy, O, F: Fn(T) -> O>(src: &[T], dst: &mut [O], f: &F) {
    loop1(src, dst, f)
}

/// `dst[i] = f(src[i])`, with the AVX2 build of the loop when available.
#[inline(always)]
pub(crate) fn run1<T: Copy, O, F: Fn(T) -> O>(src: &[T], dst: &mut [O], f: &F) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { loop1_avx2(src, dst, f) };
    }
    loop1(src, dst, f)
}

/// Gathers `n` elements of a strided `x` starting at flat index `start` into `buf`.
pub(crate) fn gather<T: Element>(
    x: &ArrayData,
    dims: &[(usize, isize)],
    start: usize,
    n: usize,
    buf: &mut Vec<T>,
) {
    let src: &[T] = x.buffer_as::<T>();
    buf.clear();
    let dims = dims.to_vec();
    walk(&dims, x.offset, start, n, |_, o| buf.push(src[o]));
}

/// Applies `f` to every element of `x` (any layout) into a new row-contiguous array of
/// `out_dtype` (which must be `O`'s dtype).
pub(crate) fn map1<T: Element, O: Element, F: Fn(T) -> O + Sync>(
    x: &ArrayData,
    out_dtype: Dtype,
    f: F,
) -> Result<ArrayData> {
    map1_slices(x, out_dtype, |s: &[T], d: &mut [O]| run1(s, d, &f))
}

/// Like [`map1`], with a kernel over slices (`f(src, dst)`, equal lengths) for functions that
/// have their own vector code.
pub(crate) fn map1_slices<T: Element, O: Element, F: Fn(&[T], &mut [O]) + Sync>(
    x: &ArrayData,
    out_dtype: Dtype,
    f: F,
) -> Result<ArrayData> {
    debug_assert_eq!(O::DTYPE, out_dtype);
    let mut out = ArrayData::alloc_for_overwrite(&x.shape, out_dtype)?;
    let dst: &mut [O] = out_slice_mut(&mut out);
    if let Some(src) = x.as_slice::<T>() {
        let stream = should_stream::<O>(dst.len());
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each_init(Vec::new, |tmp, (d, s)| {
                if stream {
                    fill_streamed(d, tmp, |r, o| f(&s[r], o));
                } else {
                    f(s, d);
                }
            });
        return Ok(out);
    }
    let dims = collapse(&x.shape, &x.strides);
    dst.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each_init(Vec::new, |buf, (c, d)| {
            gather::<T>(x, &dims, c * CHUNK, d.len(), buf);
            f(buf, d);
        });
    Ok(out)
}

// ---- float math (f32; half types convert around these) ----

/// `e^x` accurate to ~1 ulp, written so loops over it vectorise: Cody–Waite range reduction
/// `x = n ln2 + r`, a degree-6 polynomial for `e^r` (Cephes `expf`), and `2^n` built from bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.336_54, 88.722_83);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // n may be 128 at the top of the range: split 2^n into two factors to avoid overflow.
    let h = ni >> 1;
    let s1 = f32::from_bits(((h + 127) << 23) as u32);
    let s2 = f32::from_bits(((ni - h + 127) << 23) as u32);
    let y = er * s1 * s2;
    if x < -87.336_54 {
        0.0
    } else if x > 88.722_83 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// Numerically stable logistic function: never forms `e^{+large}`.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 {
        s
    } else {
        e * s
    }
}

/// Error function (libm, accurate to an ulp).
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    libm::erff(x)
}

/// Inverse error function: Giles' single-precision approximation, then one Newton step in f64
/// against libm's `erf` (relative error ~1e-7 over (-1, 1)).
pub fn erfinv_f32(x: f32) -> f32 {
    if x.is_nan() || x.abs() > 1.0 {
        return f32::NAN;
    }
    if x.abs() == 1.0 {
        return x * f32::INFINITY;
    }
    let xd = x as f64;
    let mut w = -((1.0 - xd) * (1.0 + xd)).ln();
    let p = if w < 5.0 {
        w -= 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            2.185_808_7e-04,
            -1.253_725_03e-03,
            -4.177_681_64e-03,
            2.466_407_27e-01,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p
    } else {
        w = w.sqrt() - 3.0;
        let mut p = -2.002_142_57e-04;
        for c in [
            1.009_505_58e-04,
            1.349_343_22e-03,
            -3.673_428_44e-03,
            5.739_507_73e-03,
            -7.622_461_3e-03,
            9.438_870_47e-03,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p
    };
    let mut y = p * xd;
    // Newton: y -= (erf(y) - x) / erf'(y), erf'(y) = 2/sqrt(pi) e^{-y^2}.
    let d = 2.0 / std::f64::consts::PI.sqrt() * (-y * y).exp();
    if d > 1e-30 {
        y -= (libm::erf(y) - xd) / d;
    }
    y as f32
}

/// `x * Phi(x)` with the exact normal CDF.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU (as `mlx.nn.gelu_approx`).
#[inline]
pub fn gelu_approx_f32(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// Runs `$body` with `$g` bound to the f32 function of a float unary op.
macro_rules! float_fn {
    ($op:expr, $g:ident => $body:expr) => {{
        use UnaryOp::*;
        match $op {
            Abs => {
                let $g = |v: f32| v.abs();
                $body
            }
            Neg => {
                let $g = |v: f32| -v;
                $body
            }
            Exp => {
                let $g = exp_f32;
                $body
            }
            Log => {
                let $g = |v: f32| v.ln();
                $body
            }
            Log1p => {
                let $g = |v: f32| v.ln_1p();
                $body
            }
            Sqrt => {
                let $g = |v: f32| v.sqrt();
                $body
            }
            Rsqrt => {
                let $g = |v: f32| 1.0 / v.sqrt();
                $body
            }
            Square => {
                let $g = |v: f32| v * v;
                $body
            }
            Sin => {
                let $g = |v: f32| v.sin();
                $body
            }
            Cos => {
                let $g = |v: f32| v.cos();
                $body
            }
            Tanh => {
                let $g = |v: f32| v.tanh();
                $body
            }
            Tan => {
                let $g = |v: f32| v.tan();
                $body
            }
            ArcSin => {
                let $g = |v: f32| v.asin();
                $body
            }
            ArcCos => {
                let $g = |v: f32| v.acos();
                $body
            }
            ArcTan => {
                let $g = |v: f32| v.atan();
                $body
            }
            Sinh => {
                let $g = |v: f32| v.sinh();
                $body
            }
            Cosh => {
                let $g = |v: f32| v.cosh();
                $body
            }
            ArcSinh => {
                let $g = |v: f32| v.asinh();
                $body
            }
            ArcCosh => {
                let $g = |v: f32| v.acosh();
                $body
            }
            ArcTanh => {
                let $g = |v: f32| v.atanh();
                $body
            }
            Expm1 => {
                let $g = |v: f32| v.exp_m1();
                $body
            }
            Log2 => {
                let $g = |v: f32| v.log2();
                $body
            }
            Log10 => {
                let $g = |v: f32| v.log10();
                $body
            }
            Sigmoid => {
                let $g = sigmoid_f32;
                $body
            }
            Erf => {
                let $g = erf_f32;
                $body
            }
            ErfInv => {
                let $g = erfinv_f32;
                $body
            }
            Silu => {
                let $g = |v: f32| v * sigmoid_f32(v);
                $body
            }
            Gelu => {
                let $g = gelu_f32;
                $body
            }
            GeluApprox => {
                let $g = gelu_approx_f32;
                $body
            }
            Floor => {
                let $g = |v: f32| v.floor();
                $body
            }
            Ceil => {
                let $g = |v: f32| v.ceil();
                $body
            }
            Round => {
                let $g = |v: f32| v.round_ties_even();
                $body
            }
            // MLX: sign(NaN) = 0
            Sign => {
                let $g = |v: f32| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                };
                $body
            }
            LogicalNot | BitwiseInvert => {
                return Err(Error::dtype(
                    "cpu",
                    format!("{:?} is not defined for floats", $op),
                ))
            }
        }
    }};
}

/// Integer unary ops (wrapping, as in C++/MLX).
macro_rules! int_unary {
    ($x:expr, $op:expr, $out:expr, $t:ty, $abs:expr) => {{
        use UnaryOp::*;
        match $op {
            Abs => map1::<$t, $t, _>($x, $out, $abs),
            Neg => map1::<$t, $t, _>($x, $out, |v| (0 as $t).wrapping_sub(v)),
            Square => map1::<$t, $t, _>($x, $out, |v| v.wrapping_mul(v)),
            Sign => map1::<$t, $t, _>($x, $out, |v| {
                if v > (0 as $t) {
                    1 as $t
                } else if v == (0 as $t) {
                    0 as $t
                } else {
                    (0 as $t).wrapping_sub(1)
                }
            }),
            BitwiseInvert => map1::<$t, $t, _>($x, $out, |v| !v),
            Floor | Ceil | Round => map1::<$t, $t, _>($x, $out, |v| v),
            _ => Err(Error::dtype(
                "cpu",
                format!("{:?} is not defined for {}", $op, $x.dtype),
            )),
        }
    }};
}

/// The CPU kernel of `Primitive::Unary`. Float ops see float inputs (the op converts); the
/// output dtype is the input's except for `LogicalNot` (bool).
pub fn unary(x: &ArrayData, op: UnaryOp, out: &OutputSpec) -> Result<ArrayData> {
    let od = out.dtype;
    match x.dtype {
        Dtype::F32 if op == UnaryOp::Exp => map1_slices(x, od, crate::vmath::exp_slice),
        Dtype::F32 => float_fn!(op, g => map1::<f32, f32, _>(x, od, g)),
        Dtype::F16 => {
            float_fn!(op, g => map1::<f16, f16, _>(x, od, |v: f16| f16::from_f32(g(v.to_f32()))))
        }
        Dtype::BF16 => {
            float_fn!(op, g => map1::<bf16, bf16, _>(x, od, |v: bf16| bf16::from_f32(g(v.to_f32()))))
        }
        Dtype::Bool => match op {
            UnaryOp::LogicalNot | UnaryOp::BitwiseInvert => {
                map1::<Bool8, Bool8, _>(x, od, |v| Bool8((v.0 == 0) as u8))
            }
            UnaryOp::Abs
            | UnaryOp::Square
            | UnaryOp::Sign
            | UnaryOp::Floor
            | UnaryOp::Ceil
            | UnaryOp::Round => map1::<Bool8, Bool8, _>(x, od, |v| v),
            _ => Err(Error::dtype(
                "cpu",
                format!("{op:?} is not defined for bool"),
            )),
        },
        Dtype::U8 => int_unary!(x, op, od, u8, |v: u8| v),
        Dtype::U32 => int_unary!(x, op, od, u32, |v: u32| v),
        Dtype::I32 => int_unary!(x, op, od, i32, |v: i32| v.wrapping_abs()),
        Dtype::I64 => int_unary!(x, op, od, i64, |v: i64| v.wrapping_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.013;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!((exp_f32(88.7) - 88.7f32.exp()).abs() / 88.7f32.exp() < 1e-6);
    }

    #[test]
    fn erfinv_inverts_erf() {
        for i in -999..1000 {
            let x = i as f32 / 1000.0;
            let y = erfinv_f32(x);
            assert!((libm::erf(y as f64) as f32 - x).abs() < 2e-6, "x={x} y={y}");
        }
        assert_eq!(erfinv_f32(1.0), f32::INFINITY);
        assert!(erfinv_f32(1.5).is_nan());
    }

    #[test]
    fn sigmoid_stable() {
        assert_eq!(sigmoid_f32(-1000.0), 0.0);
        assert_eq!(sigmoid_f32(1000.0), 1.0);
        assert!((sigmoid_f32(0.3) - 1.0 / (1.0 + (-0.3f32).exp())).abs() < 1e-7);
    }
}
