//! Reductions (`Reduce`, `ArgReduce`).
//!
//! Layouts, fastest first:
//! - reduced axes trailing a row-contiguous input: row reductions, parallel over rows (one row:
//!   parallel over chunks of it), with 16 independent accumulators so the loop vectorises;
//! - reduced axes forming one block in front of contiguous kept axes (`[outer, red, inner]`):
//!   rows of `inner` values are accumulated into a vector (column reduction), parallel over
//!   `outer` and blocks of `inner`;
//! - anything else: a copy with the reduced axes moved last, then row reductions.
//!
//! Half inputs accumulate in f32; integers accumulate in their own type (wrapping).

use crate::copy::{out_slice_mut, CHUNK};
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Bool8, Element};
use rmlx_core::primitive::{ArgReduceOp, OutputSpec, ReduceOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};

/// An accumulator value: f32 for floats, the integer itself for integers, u8 for bool.
pub(crate) trait AccVal: Copy + Send + Sync + PartialOrd + 'static {
    const ZERO: Self;
    const ONE: Self;
    const LOWEST: Self;
    const HIGHEST: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// NaN-propagating maximum (NumPy/MLX).
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    fn is_nan(self) -> bool;
}

impl AccVal for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const LOWEST: f32 = f32::NEG_INFINITY;
    const HIGHEST: f32 = f32::INFINITY;
    #[inline(always)]
    fn add(self, o: f32) -> f32 {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: f32) -> f32 {
        self * o
    }
    #[inline(always)]
    fn max(self, o: f32) -> f32 {
        if self > o || self.is_nan() {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn min(self, o: f32) -> f32 {
        if self < o || self.is_nan() {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    #[allow(clippy::eq_op)] // NaN is the one value unequal to itself; generic over element types
    fn is_nan(self) -> bool {
        self != self
    }
}

macro_rules! int_acc {
    ($($t:ty),*) => {$(
        impl AccVal for $t {
            const ZERO: $t = 0;
            const ONE: $t = 1;
            const LOWEST: $t = <$t>::MIN;
            const HIGHEST: $t = <$t>::MAX;
            #[inline(always)]
            fn add(self, o: $t) -> $t { self.wrapping_add(o) }
            #[inline(always)]
            fn mul(self, o: $t) -> $t { self.wrapping_mul(o) }
            #[inline(always)]
            fn max(self, o: $t) -> $t { Ord::max(self, o) }
            #[inline(always)]
            fn min(self, o: $t) -> $t { Ord::min(self, o) }
            #[inline(always)]
            fn is_nan(self) -> bool { false }
        }
    )*};
}
int_acc!(u8, u32, i32, i64);

/// An element type with its accumulator.
pub(crate) trait Acc: Element {
    type A: AccVal;
    fn load(self) -> Self::A;
    fn store(a: Self::A) -> Self;
}

macro_rules! acc_self {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            type A = $t;
            #[inline(always)]
            fn load(self) -> $t { self }
            #[inline(always)]
            fn store(a: $t) -> $t { a }
        }
    )*};
}
acc_self!(u8, u32, i32, i64, f32);

macro_rules! acc_half {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            type A = f32;
            #[inline(always)]
            fn load(self) -> f32 { self.to_f32() }
            #[inline(always)]
            fn store(a: f32) -> $t { <$t>::from_f32(a) }
        }
    )*};
}
acc_half!(f16, bf16);

impl Acc for Bool8 {
    type A = u8;
    #[inline(always)]
    fn load(self) -> u8 {
        self.0
    }
    #[inline(always)]
    fn store(a: u8) -> Bool8 {
        Bool8((a != 0) as u8)
    }
}

/// Runs `$body` with `$f` the combining function of `$op` on `$A` and `$init` its identity.
macro_rules! with_op {
    ($op:expr, $A:ty, $f:ident, $init:ident => $body:expr) => {
        match $op {
            ReduceOp::Sum => {
                let $f = |a: $A, b: $A| a.add(b);
                let $init = <$A>::ZERO;
                $body
            }
            ReduceOp::Prod => {
                let $f = |a: $A, b: $A| a.mul(b);
                let $init = <$A>::ONE;
                $body
            }
            ReduceOp::Max | ReduceOp::Any => {
                let $f = |a: $A, b: $A| a.max(b);
                let $init = <$A>::LOWEST;
                $body
            }
            ReduceOp::Min | ReduceOp::All => {
                let $f = |a: $A, b: $A| a.min(b);
                let $init = <$A>::HIGHEST;
                $body
            }
        }
    };
}

const LANES: usize = 16;

/// Reduces one contiguous run with `LANES` independent accumulators (vectorisable).
#[inline(always)]
fn reduce_run<T: Acc, F: Fn(T::A, T::A) -> T::A>(x: &[T], init: T::A, f: &F) -> T::A {
    let mut lanes = [init; LANES];
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        for i in 0..LANES {
            lanes[i] = f(lanes[i], ch[i].load());
        }
    }
    let mut acc = init;
    for &v in it.remainder() {
        acc = f(acc, v.load());
    }
    for l in lanes {
        acc = f(acc, l);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_run_avx2<T: Acc, F: Fn(T::A, T::A) -> T::A>(x: &[T], init: T::A, f: &F) -> T::A {
    reduce_run(x, init, f)
}

#[inline(always)]
fn run<T: Acc, F: Fn(T::A, T::A) -> T::A>(x: &[T], init: T::A, f: &F) -> T::A {
    #[cfg(target_arch = "x86_64")]
    if crate::unary::has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { reduce_run_avx2(x, init, f) };
    }
    reduce_run(x, init, f)
}

/// `out[r] = reduce(x[r*len .. (r+1)*len])`.
fn rows<T: Acc, F: Fn(T::A, T::A) -> T::A + Sync>(
    x: &[T],
    len: usize,
    init: T::A,
    f: F,
    dst: &mut [T],
) {
    if dst.len() == 1 {
        // one long row: split it across threads
        let acc = x
            .par_chunks(CHUNK)
            .map(|c| run(c, init, &f))
            .reduce(|| init, &f);
        dst[0] = T::store(acc);
        return;
    }
    let per = (CHUNK / len.max(1)).max(1);
    dst.par_chunks_mut(per).enumerate().for_each(|(c, d)| {
        for (i, o) in d.iter_mut().enumerate() {
            let r = c * per + i;
            *o = T::store(run(&x[r * len..(r + 1) * len], init, &f));
        }
    });
}

/// `x: [outer, red, inner]` → `out: [outer, inner]`, accumulating rows into a vector.
fn columns<T: Acc, F: Fn(T::A, T::A) -> T::A + Sync>(
    x: &[T],
    red: usize,
    inner: usize,
    init: T::A,
    f: F,
    dst: &mut [T],
) {
    const BLOCK: usize = 4096;
    dst.par_chunks_mut(inner).enumerate().for_each(|(o, drow)| {
        let base = o * red * inner;
        drow.par_chunks_mut(BLOCK).enumerate().for_each(|(b, d)| {
            let j0 = b * BLOCK;
            let mut acc = vec![init; d.len()];
            for r in 0..red {
                let row = &x[base + r * inner + j0..base + r * inner + j0 + d.len()];
                for (a, v) in acc.iter_mut().zip(row) {
                    *a = f(*a, v.load());
                }
            }
            for (o, a) in d.iter_mut().zip(acc) {
                *o = T::store(a);
            }
        });
    });
}

/// A view of `x` with the axes in `keep` first and `red` last (both in their order).
pub(crate) fn permuted(x: &ArrayData, keep: &[usize], red: &[usize]) -> ArrayData {
    let order: Vec<usize> = keep.iter().chain(red).copied().collect();
    ArrayData {
        shape: order.iter().map(|&a| x.shape[a]).collect(),
        strides: order.iter().map(|&a| x.strides[a]).collect(),
        ..x.clone()
    }
}

/// `x`'s elements in row-major order of the permuted view, borrowed when already contiguous.
pub(crate) fn rows_of<T: Element>(x: &ArrayData, keep: &[usize], red: &[usize]) -> Vec<T> {
    crate::copy::to_vec::<T>(&permuted(x, keep, red))
}

fn reduce_typed<T: Acc>(
    x: &ArrayData,
    op: ReduceOp,
    axes: &[usize],
    od: Dtype,
    oshape: &[usize],
) -> Result<ArrayData> {
    let mut out = ArrayData::alloc(oshape, od)?;
    let dst: &mut [T] = out_slice_mut(&mut out);
    if dst.is_empty() {
        return Ok(out);
    }
    let red_n: usize = axes.iter().map(|&a| x.shape[a]).product();
    let keep: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
    with_op!(op, T::A, f, init => {
        if red_n == 0 {
            dst.fill(T::store(init));
            return Ok(out);
        }
        // Column case: x contiguous and the (non-unit) reduced axes are one block followed by
        // kept axes of size > 1.
        let nz: Vec<usize> = (0..x.shape.len()).filter(|&a| x.shape[a] != 1).collect();
        let red_nz: Vec<usize> = nz.iter().copied().filter(|a| axes.contains(a)).collect();
        if let (Some(xs), Some(&first), Some(&last)) = (x.as_slice::<T>(), red_nz.first(), red_nz.last()) {
            let block = nz.iter().filter(|&&a| a >= first && a <= last).count() == red_nz.len();
            let inner: usize = x.shape[last + 1..].iter().product();
            if block && inner > 1 {
                columns(xs, red_n, inner, init, f, dst);
                return Ok(out);
            }
            if block && inner == 1 {
                rows(xs, red_n, init, f, dst);
                return Ok(out);
            }
        }
        let data = rows_of::<T>(x, &keep, axes);
        rows(&data, red_n, init, f, dst);
        Ok(out)
    })
}

/// The CPU kernel of `Primitive::Reduce`: output dtype equals the input's (the op converts
/// first), except `Any`/`All` which see and produce bool.
pub fn reduce(x: &ArrayData, op: ReduceOp, axes: &[usize], out: &OutputSpec) -> Result<ArrayData> {
    if x.dtype != out.dtype {
        return Err(Error::runtime(
            "cpu",
            format!("reduce: input {} and output {} differ", x.dtype, out.dtype),
        ));
    }
    match x.dtype {
        Dtype::F32 => reduce_typed::<f32>(x, op, axes, out.dtype, out.shape),
        Dtype::F16 => reduce_typed::<f16>(x, op, axes, out.dtype, out.shape),
        Dtype::BF16 => reduce_typed::<bf16>(x, op, axes, out.dtype, out.shape),
        Dtype::Bool => reduce_typed::<Bool8>(x, op, axes, out.dtype, out.shape),
        Dtype::U8 => reduce_typed::<u8>(x, op, axes, out.dtype, out.shape),
        Dtype::U32 => reduce_typed::<u32>(x, op, axes, out.dtype, out.shape),
        Dtype::I32 => reduce_typed::<i32>(x, op, axes, out.dtype, out.shape),
        Dtype::I64 => reduce_typed::<i64>(x, op, axes, out.dtype, out.shape),
    }
}

fn arg_typed<T: Acc>(
    x: &ArrayData,
    op: ArgReduceOp,
    axis: usize,
    oshape: &[usize],
) -> Result<ArrayData> {
    let mut out = ArrayData::alloc(oshape, Dtype::U32)?;
    let dst: &mut [u32] = out_slice_mut(&mut out);
    let len = x.shape[axis];
    if dst.is_empty() {
        return Ok(out);
    }
    if len == 0 {
        return Err(Error::invalid(
            "argreduce",
            "cannot reduce over an axis of size 0",
        ));
    }
    let keep: Vec<usize> = (0..x.shape.len()).filter(|&a| a != axis).collect();
    let data = if axis + 1 == x.shape.len() && x.is_contiguous() {
        None
    } else {
        Some(rows_of::<T>(x, &keep, &[axis]))
    };
    let xs: &[T] = match &data {
        Some(d) => d,
        None => x
            .as_slice::<T>()
            .ok_or_else(|| Error::runtime("cpu", "argreduce: layout"))?,
    };
    let want_max = op == ArgReduceOp::ArgMax;
    dst.par_iter_mut().enumerate().for_each(|(r, o)| {
        let row = &xs[r * len..(r + 1) * len];
        let mut best = row[0].load();
        let mut bi = 0usize;
        if !best.is_nan() {
            for (i, v) in row.iter().enumerate().skip(1) {
                let v = v.load();
                // the first NaN wins, as in NumPy/MLX; ties keep the first index
                if v.is_nan() || (want_max && v > best) || (!want_max && v < best) {
                    best = v;
                    bi = i;
                    if v.is_nan() {
                        break;
                    }
                }
            }
        }
        *o = bi as u32;
    });
    Ok(out)
}

/// The CPU kernel of `Primitive::ArgReduce` (output u32, the axis kept with size 1).
pub fn arg_reduce(
    x: &ArrayData,
    op: ArgReduceOp,
    axis: usize,
    out: &OutputSpec,
) -> Result<ArrayData> {
    match x.dtype {
        Dtype::F32 => arg_typed::<f32>(x, op, axis, out.shape),
        Dtype::F16 => arg_typed::<f16>(x, op, axis, out.shape),
        Dtype::BF16 => arg_typed::<bf16>(x, op, axis, out.shape),
        Dtype::Bool => arg_typed::<Bool8>(x, op, axis, out.shape),
        Dtype::U8 => arg_typed::<u8>(x, op, axis, out.shape),
        Dtype::U32 => arg_typed::<u32>(x, op, axis, out.shape),
        Dtype::I32 => arg_typed::<i32>(x, op, axis, out.shape),
        Dtype::I64 => arg_typed::<i64>(x, op, axis, out.shape),
    }
}
