//! Array creation: constants, ranges, identity.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::shape::broadcast_to;
use crate::primitive::{Primitive, F64};

/// An array of `shape` filled with `value` (a broadcast view of one scalar, as in MLX).
#[track_caller]
pub fn full(shape: &[usize], value: f64, dtype: Dtype) -> Array {
    broadcast_to(&Array::scalar_of(value, dtype), shape).expect("a scalar broadcasts to any shape")
}

/// An array of `shape` filled with `value` (an array broadcast).
#[track_caller]
pub fn full_array(shape: &[usize], value: &Array) -> Result<Array> {
    broadcast_to(value, shape)
}

#[track_caller]
pub fn zeros(shape: &[usize], dtype: Dtype) -> Array {
    full(shape, 0.0, dtype)
}

#[track_caller]
pub fn ones(shape: &[usize], dtype: Dtype) -> Array {
    full(shape, 1.0, dtype)
}

#[track_caller]
pub fn zeros_like(x: &Array) -> Array {
    zeros(x.shape(), x.dtype())
}

#[track_caller]
pub fn ones_like(x: &Array) -> Array {
    ones(x.shape(), x.dtype())
}

#[track_caller]
pub fn full_like(x: &Array, value: f64) -> Array {
    full(x.shape(), value, x.dtype())
}

/// `[start, stop)` in steps of `step`.
#[track_caller]
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !stop.is_finite() {
        return Err(Error::invalid(
            "arange",
            format!("cannot compute length for start {start}, stop {stop}, step {step}"),
        ));
    }
    if dtype == Dtype::Bool {
        return Err(Error::dtype("arange", "cannot make a range of bool"));
    }
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    Ok(Array::make(
        smallvec::smallvec![n],
        dtype,
        Primitive::Arange {
            start: F64(start),
            step: F64(step),
        },
        [],
    ))
}

/// `num` evenly spaced values from `start` to `stop` inclusive.
#[track_caller]
pub fn linspace(start: f64, stop: f64, num: usize, dtype: Dtype) -> Result<Array> {
    if !dtype.is_float() && dtype != Dtype::I32 && dtype != Dtype::I64 {
        return Err(Error::dtype(
            "linspace",
            format!("unsupported dtype {dtype}"),
        ));
    }
    let step = if num > 1 {
        (stop - start) / (num - 1) as f64
    } else {
        0.0
    };
    // Computed in f32 as MLX does (arange * step + start), then cast.
    let idx = arange(0.0, num as f64, 1.0, Dtype::F32)?;
    let v = crate::ops::add(
        &crate::ops::multiply(&idx, &Array::scalar(step as f32))?,
        &Array::scalar(start as f32),
    )?;
    Ok(crate::ops::astype(&v, dtype))
}

/// An `n × m` matrix with ones on diagonal `k`.
#[track_caller]
pub fn eye(n: usize, m: Option<usize>, k: i64, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = crate::ops::reshape(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[n as i64, 1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    let diag = crate::ops::equal(&crate::ops::add(&rows, &Array::scalar(k))?, &cols)?;
    Ok(crate::ops::astype(&diag, dtype))
}

/// `identity(n)` = `eye(n)`.
#[track_caller]
pub fn identity(n: usize, dtype: Dtype) -> Result<Array> {
    eye(n, None, 0, dtype)
}

/// A window of `m` float32 points: `f(x)` at `x = scale * n / (m - 1)` for `n` in `0..m`
/// (`[]` and `[1]` for `m` 0 and 1, as MLX).
fn window(m: usize, scale: f64, f: impl FnOnce(Array) -> Result<Array>) -> Result<Array> {
    if m <= 1 {
        return Ok(crate::ops::ones(&[m], Dtype::F32));
    }
    let n = arange(0.0, m as f64, 1.0, Dtype::F32)?;
    f(crate::ops::multiply(
        &Array::scalar((scale / (m - 1) as f64) as f32),
        &n,
    )?)
}

fn f32s(v: f32) -> Array {
    Array::scalar(v)
}

/// The Bartlett (triangular) window of `m` points: `1 - |2n/(m-1) - 1|`.
#[track_caller]
pub fn bartlett(m: usize) -> Result<Array> {
    use crate::ops::{abs, subtract};
    window(m, 2.0, |x| {
        subtract(&f32s(1.0), &abs(&subtract(&x, &f32s(1.0))?))
    })
}

/// The Hann window of `m` points: `sin^2(pi n / (m-1))`.
#[track_caller]
pub fn hanning(m: usize) -> Result<Array> {
    window(m, std::f64::consts::PI, |x| {
        Ok(crate::ops::square(&crate::ops::sin(&x)))
    })
}

/// The Hamming window of `m` points: `0.54 - 0.46 cos(2 pi n / (m-1))`.
#[track_caller]
pub fn hamming(m: usize) -> Result<Array> {
    use crate::ops::{cos, multiply, subtract};
    window(m, 2.0 * std::f64::consts::PI, |x| {
        subtract(&f32s(0.54), &multiply(&f32s(0.46), &cos(&x))?)
    })
}

/// The Blackman window of `m` points: `0.34 - 0.5 cos x + 0.16 cos^2 x` with
/// `x = 2 pi n / (m-1)` (MLX's form of `0.42 - 0.5 cos x + 0.08 cos 2x`).
#[track_caller]
pub fn blackman(m: usize) -> Result<Array> {
    use crate::ops::{add, cos, multiply, square, subtract};
    window(m, 2.0 * std::f64::consts::PI, |x| {
        let c = cos(&x);
        let t1 = multiply(&f32s(0.5), &c)?;
        add(
            &subtract(&f32s(0.34), &t1)?,
            &multiply(&f32s(0.16), &square(&c))?,
        )
    })
}
