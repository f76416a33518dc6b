//! Softmax and logsumexp over the last axis, accumulated in f32, parallel over rows.

use crate::copy::{contiguous, out_slice_mut};
use crate::unary::exp_f32;
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Element};
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};

/// Rows per parallel task: enough work to amortise scheduling for short rows.
fn rows_per_task(len: usize) -> usize {
    (8192 / len.max(1)).max(1)
}

/// Max of a row in f32 (NaN propagates).
#[inline]
fn row_max<T: Element>(row: &[T]) -> f32 {
    row.iter().fold(f32::NEG_INFINITY, |m, v| {
        let v = v.to_f32();
        if v > m || v.is_nan() {
            v
        } else {
            m
        }
    })
}

fn softmax_typed<T: Element>(x: &ArrayData) -> Result<ArrayData> {
    let mut out = ArrayData::alloc(&x.shape, x.dtype)?;
    let len = x.shape.last().copied().unwrap_or(1);
    if out.numel() == 0 || len == 0 {
        return Ok(out);
    }
    let xs = contiguous::<T>(x);
    let dst: &mut [T] = out_slice_mut(&mut out);
    let per = rows_per_task(len);
    dst.par_chunks_mut(per * len)
        .zip(xs.par_chunks(per * len))
        .for_each_init(
            || vec![0f32; len],
            |tmp, (d, s)| {
                for (drow, srow) in d.chunks_mut(len).zip(s.chunks(len)) {
                    // subtract the max so exp never overflows
                    let m = row_max(srow);
                    let mut sum = 0f32;
                    for (t, v) in tmp.iter_mut().zip(srow) {
                        *t = exp_f32(v.to_f32() - m);
                        sum += *t;
                    }
                    let inv = 1.0 / sum;
                    for (o, t) in drow.iter_mut().zip(tmp.iter()) {
                        *o = T::from_f32(t * inv);
                    }
                }
            },
        );
    Ok(out)
}

fn logsumexp_typed<T: Element>(x: &ArrayData, oshape: &[usize]) -> Result<ArrayData> {
    let mut out = ArrayData::alloc(oshape, x.dtype)?;
    let len = x.shape.last().copied().unwrap_or(1);
    let dst: &mut [T] = out_slice_mut(&mut out);
    if dst.is_empty() {
        return Ok(out);
    }
    if len == 0 {
        dst.fill(T::from_f32(f32::NEG_INFINITY));
        return Ok(out);
    }
    let xs = contiguous::<T>(x);
    let per = rows_per_task(len);
    dst.par_chunks_mut(per)
        .zip(xs.par_chunks(per * len))
        .for_each(|(d, s)| {
            for (o, srow) in d.iter_mut().zip(s.chunks(len)) {
                let m = row_max(srow);
                let v = if m.is_infinite() || m.is_nan() {
                    // all -inf → -inf; any +inf → +inf; NaN stays NaN
                    m
                } else {
                    let sum: f32 = srow.iter().map(|v| exp_f32(v.to_f32() - m)).sum();
                    m + sum.ln()
                };
                *o = T::from_f32(v);
            }
        });
    Ok(out)
}

fn float_only(op: &'static str, d: Dtype) -> Error {
    Error::dtype("cpu", format!("{op} expects a float input, got {d}"))
}

/// The CPU kernel of `Primitive::Softmax` (last axis; float input, same output dtype).
pub fn softmax(x: &ArrayData, _out: &OutputSpec) -> Result<ArrayData> {
    match x.dtype {
        Dtype::F32 => softmax_typed::<f32>(x),
        Dtype::F16 => softmax_typed::<f16>(x),
        Dtype::BF16 => softmax_typed::<bf16>(x),
        d => Err(float_only("softmax", d)),
    }
}

/// The CPU kernel of `Primitive::LogSumExp` (last axis kept with size 1).
pub fn logsumexp(x: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    match x.dtype {
        Dtype::F32 => logsumexp_typed::<f32>(x, out.shape),
        Dtype::F16 => logsumexp_typed::<f16>(x, out.shape),
        Dtype::BF16 => logsumexp_typed::<bf16>(x, out.shape),
        d => Err(float_only("logsumexp", d)),
    }
}
