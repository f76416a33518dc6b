//! Elementwise functions of two arrays (already broadcast to the output shape) and `where`.
//!
//! Per chunk of `CHUNK` output elements each operand is either a contiguous slice, a single
//! broadcast scalar (all strides 0: `x * 2.0`), or gathered through `strided::walk` into a
//! per-thread buffer; the inner loop is then one monomorphised, auto-vectorised pass.

use crate::copy::{out_slice_mut, CHUNK};
use crate::stream_store::{fill_streamed, should_stream};
use crate::strided::collapse;
use crate::unary::{gather, has_avx2, run1};
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Bool8, Element};
use rmlx_core::primitive::{BinaryOp, OutputSpec};
use rmlx_core::{ArrayData, Dtype, Error, Result};

/// How one operand is read.
enum Src<T> {
    Slice,
    Scalar(T),
    Strided(Vec<(usize, isize)>),
}

fn classify<T: Element>(x: &ArrayData) -> Src<T> {
    if x.is_contiguous() {
        Src::Slice
    } else if x
        .shape
        .iter()
        .zip(&x.strides)
        .all(|(&d, &s)| s == 0 || d == 1)
    {
        Src::Scalar(x.buffer_as::<T>()[x.offset])
    } else {
        Src::Strided(collapse(&x.shape, &x.strides))
    }
}

/// One chunk of an operand: values or one repeated value.
#[derive(Clone, Copy)]
enum Part<'a, T> {
    S(&'a [T]),
    V(T),
}

fn part<'a, T: Element>(
    x: &'a ArrayData,
    src: &Src<T>,
    start: usize,
    n: usize,
    buf: &'a mut Vec<T>,
) -> Part<'a, T> {
    match src {
        Src::Slice => {
            let s: &[T] = x.buffer_as::<T>();
            Part::S(&s[x.offset + start..x.offset + start + n])
        }
        Src::Scalar(v) => Part::V(*v),
        Src::Strided(dims) => {
            gather(x, dims, start, n, buf);
            Part::S(&buf[..])
        }
    }
}

#[inline(always)]
fn loop2<A: Copy, B: Copy, O, F: Fn(A, B) -> O>(a: &[A], b: &[B], dst: &mut [O], f: &F) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(*x, *y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn loop2_avx2<A: Copy, B: Copy, O, F: Fn(A, B) -> O>(
    a: &[A],
    b: &[B],
    dst: &mut [O],
    f: &F,
) {
    loop2(a, b, dst, f)
}

#[inline(always)]
fn run2<A: Copy, B: Copy, O, F: Fn(A, B) -> O>(a: &[A], b: &[B], dst: &mut [O], f: &F) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { loop2_avx2(a, b, dst, f) };
    }
    loop2(a, b, dst, f)
}

/// `f(a[i], b[i])` for equal-shaped `a`, `b` (any layouts) into a new row-contiguous array.
pub(crate) fn map2<T: Element, O: Element, F: Fn(T, T) -> O + Sync>(
    a: &ArrayData,
    b: &ArrayData,
    od: Dtype,
    f: F,
) -> Result<ArrayData> {
    debug_assert_eq!(O::DTYPE, od);
    let mut out = ArrayData::alloc_for_overwrite(&a.shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (sa, sb) = (classify::<T>(a), classify::<T>(b));
    let dst: &mut [O] = out_slice_mut(&mut out);
    let stream = should_stream::<O>(dst.len());
    dst.par_chunks_mut(CHUNK).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(ba, bb, tmp), (c, d)| {
            let (start, n) = (c * CHUNK, d.len());
            let (pa, pb) = (part(a, &sa, start, n, ba), part(b, &sb, start, n, bb));
            let kernel = |r: std::ops::Range<usize>, d: &mut [O]| match (pa, pb) {
                (Part::S(x), Part::S(y)) => run2(&x[r.clone()], &y[r], d, &f),
                (Part::S(x), Part::V(y)) => run1(&x[r], d, &|u| f(u, y)),
                (Part::V(x), Part::S(y)) => run1(&y[r], d, &|u| f(x, u)),
                (Part::V(x), Part::V(y)) => d.fill(f(x, y)),
            };
            if stream {
                fill_streamed(d, tmp, kernel);
            } else {
                kernel(0..n, d);
            }
        },
    );
    Ok(out)
}

/// Float ops computed in f32 (`$t` is f32, f16 or bf16).
macro_rules! float_binary {
    ($a:expr, $b:expr, $op:expr, $od:expr, $t:ty) => {{
        use BinaryOp::*;
        macro_rules! ar {
            ($g:expr) => {
                map2::<$t, $t, _>($a, $b, $od, |x: $t, y: $t| {
                    <$t as Element>::from_f32(($g)(x.to_f32(), y.to_f32()))
                })
            };
        }
        macro_rules! cmp {
            ($g:expr) => {
                map2::<$t, Bool8, _>($a, $b, $od, |x: $t, y: $t| {
                    Bool8(($g)(x.to_f32(), y.to_f32()) as u8)
                })
            };
        }
        match $op {
            Add => ar!(|x: f32, y: f32| x + y),
            Subtract => ar!(|x: f32, y: f32| x - y),
            Multiply => ar!(|x: f32, y: f32| x * y),
            Divide => ar!(|x: f32, y: f32| x / y),
            FloorDivide => ar!(|x: f32, y: f32| (x / y).floor()),
            Power => ar!(|x: f32, y: f32| x.powf(y)),
            // NaN propagates, as in NumPy/MLX
            Maximum => ar!(|x: f32, y: f32| if x > y || x.is_nan() { x } else { y }),
            Minimum => ar!(|x: f32, y: f32| if x < y || x.is_nan() { x } else { y }),
            // Python's %: the result takes the divisor's sign
            Remainder => ar!(|x: f32, y: f32| {
                let r = x % y;
                if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                    r + y
                } else {
                    r
                }
            }),
            ArcTan2 => ar!(|x: f32, y: f32| x.atan2(y)),
            SiluMul => ar!(|x: f32, y: f32| x * crate::unary::sigmoid_f32(x) * y),
            Equal => cmp!(|x: f32, y: f32| x == y),
            NotEqual => cmp!(|x: f32, y: f32| x != y),
            Less => cmp!(|x: f32, y: f32| x < y),
            LessEqual => cmp!(|x: f32, y: f32| x <= y),
            Greater => cmp!(|x: f32, y: f32| x > y),
            GreaterEqual => cmp!(|x: f32, y: f32| x >= y),
            LogicalAnd => cmp!(|x: f32, y: f32| x != 0.0 && y != 0.0),
            LogicalOr => cmp!(|x: f32, y: f32| x != 0.0 || y != 0.0),
            BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift => Err(Error::dtype(
                "cpu",
                format!("{:?} is not defined for floats", $op),
            )),
        }
    }};
}

/// Integer (and bool) arithmetic with C++/MLX wrapping and Python division rules.
pub(crate) trait IntOps: Element {
    type K: PartialOrd + Copy + Send + Sync;
    fn k(self) -> Self::K;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Floor division; 0 for a zero divisor.
    fn fdiv(self, o: Self) -> Self;
    /// Remainder with the divisor's sign; 0 for a zero divisor.
    fn pmod(self, o: Self) -> Self;
    /// Power by squaring; negative exponents give 0 (unless the base is ±1), as in MLX.
    fn pow(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn shl(self, o: Self) -> Self;
    fn shr(self, o: Self) -> Self;
}

macro_rules! int_ops {
    ($t:ty, $isneg:expr) => {
        impl IntOps for $t {
            type K = $t;
            #[inline(always)]
            fn k(self) -> $t {
                self
            }
            #[inline(always)]
            fn add(self, o: $t) -> $t {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn sub(self, o: $t) -> $t {
                self.wrapping_sub(o)
            }
            #[inline(always)]
            fn mul(self, o: $t) -> $t {
                self.wrapping_mul(o)
            }
            #[inline(always)]
            fn fdiv(self, o: $t) -> $t {
                if o == 0 {
                    return 0;
                }
                let q = self.wrapping_div(o);
                let r = self.wrapping_rem(o);
                let isneg = $isneg;
                if r != 0 && (isneg(r) != isneg(o)) {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
            #[inline(always)]
            fn pmod(self, o: $t) -> $t {
                if o == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(o);
                let isneg = $isneg;
                if r != 0 && (isneg(r) != isneg(o)) {
                    r.wrapping_add(o)
                } else {
                    r
                }
            }
            #[inline(always)]
            fn pow(self, o: $t) -> $t {
                let isneg = $isneg;
                if isneg(o) {
                    // only |base| = 1 survives a negative exponent
                    return if self == 1 {
                        1
                    } else if self.wrapping_add(1) == 0 {
                        if o.wrapping_rem(2) == 0 {
                            1
                        } else {
                            self
                        }
                    } else {
                        0
                    };
                }
                let (mut base, mut e, mut acc) = (self, o, 1 as $t);
                while e != 0 {
                    if e & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            #[inline(always)]
            fn and(self, o: $t) -> $t {
                self & o
            }
            #[inline(always)]
            fn or(self, o: $t) -> $t {
                self | o
            }
            #[inline(always)]
            fn xor(self, o: $t) -> $t {
                self ^ o
            }
            #[inline(always)]
            fn shl(self, o: $t) -> $t {
                self.wrapping_shl(o as u32)
            }
            #[inline(always)]
            fn shr(self, o: $t) -> $t {
                self.wrapping_shr(o as u32)
            }
        }
    };
}
int_ops!(u8, |_: u8| false);
int_ops!(u32, |_: u32| false);
int_ops!(i32, |v: i32| v < 0);
int_ops!(i64, |v: i64| v < 0);

/// Bool arithmetic as MLX does it: `+` and `max` are or, `*` and `min` are and.
impl IntOps for Bool8 {
    type K = u8;
    fn k(self) -> u8 {
        self.0
    }
    fn add(self, o: Self) -> Self {
        Bool8(self.0 | o.0)
    }
    fn sub(self, o: Self) -> Self {
        Bool8(self.0 ^ o.0)
    }
    fn mul(self, o: Self) -> Self {
        Bool8(self.0 & o.0)
    }
    fn fdiv(self, o: Self) -> Self {
        Bool8(self.0 & o.0)
    }
    fn pmod(self, _o: Self) -> Self {
        Bool8(0)
    }
    fn pow(self, o: Self) -> Self {
        Bool8(self.0 | (o.0 ^ 1))
    }
    fn and(self, o: Self) -> Self {
        Bool8(self.0 & o.0)
    }
    fn or(self, o: Self) -> Self {
        Bool8(self.0 | o.0)
    }
    fn xor(self, o: Self) -> Self {
        Bool8(self.0 ^ o.0)
    }
    fn shl(self, o: Self) -> Self {
        Bool8((self.0.wrapping_shl(o.0 as u32) != 0) as u8)
    }
    fn shr(self, o: Self) -> Self {
        Bool8((self.0.wrapping_shr(o.0 as u32) != 0) as u8)
    }
}

fn int_binary<T: IntOps>(
    a: &ArrayData,
    b: &ArrayData,
    op: BinaryOp,
    od: Dtype,
) -> Result<ArrayData> {
    use BinaryOp::*;
    let zero = T::from_f64(0.0).k();
    match op {
        Add => map2::<T, T, _>(a, b, od, |x, y| x.add(y)),
        Subtract => map2::<T, T, _>(a, b, od, |x, y| x.sub(y)),
        Multiply => map2::<T, T, _>(a, b, od, |x, y| x.mul(y)),
        FloorDivide => map2::<T, T, _>(a, b, od, |x, y| x.fdiv(y)),
        Remainder => map2::<T, T, _>(a, b, od, |x, y| x.pmod(y)),
        Power => map2::<T, T, _>(a, b, od, |x, y| x.pow(y)),
        Maximum => map2::<T, T, _>(a, b, od, |x, y| if x.k() > y.k() { x } else { y }),
        Minimum => map2::<T, T, _>(a, b, od, |x, y| if x.k() < y.k() { x } else { y }),
        BitwiseAnd => map2::<T, T, _>(a, b, od, |x, y| x.and(y)),
        BitwiseOr => map2::<T, T, _>(a, b, od, |x, y| x.or(y)),
        BitwiseXor => map2::<T, T, _>(a, b, od, |x, y| x.xor(y)),
        LeftShift => map2::<T, T, _>(a, b, od, |x, y| x.shl(y)),
        RightShift => map2::<T, T, _>(a, b, od, |x, y| x.shr(y)),
        Equal => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() == y.k()) as u8)),
        NotEqual => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() != y.k()) as u8)),
        Less => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() < y.k()) as u8)),
        LessEqual => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() <= y.k()) as u8)),
        Greater => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() > y.k()) as u8)),
        GreaterEqual => map2::<T, Bool8, _>(a, b, od, |x, y| Bool8((x.k() >= y.k()) as u8)),
        LogicalAnd => map2::<T, Bool8, _>(a, b, od, move |x, y| {
            Bool8((x.k() != zero && y.k() != zero) as u8)
        }),
        LogicalOr => map2::<T, Bool8, _>(a, b, od, move |x, y| {
            Bool8((x.k() != zero || y.k() != zero) as u8)
        }),
        // the op converts integer division to float first
        Divide => map2::<T, T, _>(a, b, od, |x, y| T::from_f64(x.to_f64() / y.to_f64())),
        ArcTan2 | SiluMul => Err(Error::dtype(
            "cpu",
            format!(
                "{op:?} is not defined for {} (the op converts to float)",
                a.dtype
            ),
        )),
    }
}

/// The CPU kernel of `Primitive::Binary`: `a` and `b` share a dtype and the output's shape.
pub fn binary(a: &ArrayData, b: &ArrayData, op: BinaryOp, out: &OutputSpec) -> Result<ArrayData> {
    if a.dtype != b.dtype {
        return Err(Error::runtime(
            "cpu",
            format!("binary {op:?}: operands {} and {} differ", a.dtype, b.dtype),
        ));
    }
    let od = out.dtype;
    match a.dtype {
        Dtype::F32 => float_binary!(a, b, op, od, f32),
        Dtype::F16 => float_binary!(a, b, op, od, f16),
        Dtype::BF16 => float_binary!(a, b, op, od, bf16),
        Dtype::Bool => int_binary::<Bool8>(a, b, op, od),
        Dtype::U8 => int_binary::<u8>(a, b, op, od),
        Dtype::U32 => int_binary::<u32>(a, b, op, od),
        Dtype::I32 => int_binary::<i32>(a, b, op, od),
        Dtype::I64 => int_binary::<i64>(a, b, op, od),
    }
}

fn where_typed<T: Element>(
    c: &ArrayData,
    a: &ArrayData,
    b: &ArrayData,
    od: Dtype,
) -> Result<ArrayData> {
    let mut out = ArrayData::alloc_for_overwrite(&a.shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (sc, sa, sb) = (classify::<Bool8>(c), classify::<T>(a), classify::<T>(b));
    let dst: &mut [T] = out_slice_mut(&mut out);
    dst.par_chunks_mut(CHUNK).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(bc, ba, bb), (i, d)| {
            let (start, n) = (i * CHUNK, d.len());
            let pc = part(c, &sc, start, n, bc);
            let (pa, pb) = (part(a, &sa, start, n, ba), part(b, &sb, start, n, bb));
            for (j, o) in d.iter_mut().enumerate() {
                let cv = match &pc {
                    Part::S(s) => s[j].0 != 0,
                    Part::V(v) => v.0 != 0,
                };
                let src = if cv { &pa } else { &pb };
                *o = match src {
                    Part::S(s) => s[j],
                    Part::V(v) => *v,
                };
            }
        },
    );
    Ok(out)
}

/// The CPU kernel of `Primitive::Where`: `cond` is bool, `a` and `b` share the output dtype.
pub fn where_(c: &ArrayData, a: &ArrayData, b: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    if c.dtype != Dtype::Bool || a.dtype != out.dtype || b.dtype != out.dtype {
        return Err(Error::runtime(
            "cpu",
            "where: expects a bool condition and operands of the output dtype",
        ));
    }
    rmlx_core::dispatch_dtype!(out.dtype, T => where_typed::<T>(c, a, b, out.dtype))
}
