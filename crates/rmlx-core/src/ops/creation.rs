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
        vec![],
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
