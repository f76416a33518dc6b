//! RMS norm and layer norm over the last axis, accumulated in f32.
//!
//! Rounding follows MLX (`mlx/fast.cpp` fallbacks, which is what MLX runs on the CPU): the
//! normalised row is computed in f32 and cast to the output dtype, then multiplied by the
//! weight (and the bias added) in the output dtype. For f16/bf16 that is two roundings, exactly
//! as MLX does them, so half-precision results match MLX bit for bit up to summation order.

use crate::copy::{contiguous, out_slice_mut};
use crate::strided::offsets;
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::shape::Strides;
use rmlx_core::{bf16, f16, ArrayData, Dtype, Error, Result};
use std::borrow::Cow;

/// Rows of at least this many elements in total go to one rayon task.
const ROWS_PER_TASK_ELEMS: usize = 1 << 14;

/// Start offsets (in elements) of every row along the last axis of `x`, in row-major order of
/// the leading axes, and the element stride within a row. Handles any strided view.
pub(crate) fn row_layout(x: &ArrayData) -> (Vec<usize>, isize) {
    let nd = x.shape.len();
    if nd == 0 {
        return (vec![x.offset], 1);
    }
    let lead: Strides = x.strides[..nd - 1].iter().copied().collect();
    (
        offsets(&x.shape[..nd - 1], &lead, x.offset),
        x.strides[nd - 1],
    )
}

/// Row `r` of `x` as f32 into `dst` (`dst.len()` = row length).
#[inline]
pub(crate) fn load_row<T: Element>(src: &[T], start: usize, stride: isize, dst: &mut [f32]) {
    if stride == 1 {
        let n = dst.len();
        for (d, s) in dst.iter_mut().zip(&src[start..start + n]) {
            *d = s.to_f32();
        }
    } else {
        let mut o = start as isize;
        for d in dst.iter_mut() {
            *d = src[o as usize].to_f32();
            o += stride;
        }
    }
}

/// Sum of squares with 8 independent accumulators (lets the compiler vectorise).
#[inline]
fn sum_sq(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in chunks.remainder() {
        s += x * x;
    }
    s
}

#[inline]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in chunks.remainder() {
        s += x;
    }
    s
}

/// The optional 1-D weight/bias as a contiguous slice of the output dtype.
fn param<'a, T: Element>(
    op: &'static str,
    p: Option<&'a ArrayData>,
    d: usize,
) -> Result<Option<Cow<'a, [T]>>> {
    let Some(p) = p else { return Ok(None) };
    if p.dtype != T::DTYPE || p.numel() != d {
        return Err(Error::runtime(
            "cpu",
            format!(
                "[{op}] parameter must be {} with {d} elements, got {} with {}",
                T::DTYPE,
                p.dtype,
                p.numel()
            ),
        ));
    }
    Ok(Some(contiguous::<T>(p)))
}

/// Shared driver: for each row `r`, `f(r, row_f32, out_row)` writes the output row.
fn per_row<T: Element>(
    x: &ArrayData,
    out: &mut ArrayData,
    f: impl Fn(usize, &mut [f32], &mut [T]) + Sync,
) {
    let d = *x.shape.last().unwrap_or(&1);
    if d == 0 || x.numel() == 0 {
        return;
    }
    let (rows, stride) = row_layout(x);
    let src: &[T] = x.buffer_as::<T>();
    let dst: &mut [T] = out_slice_mut(out);
    let rows_per_task = (ROWS_PER_TASK_ELEMS / d).max(1);
    dst.par_chunks_mut(d * rows_per_task)
        .zip(rows.par_chunks(rows_per_task))
        .enumerate()
        .for_each(|(task, (o, starts))| {
            let mut buf = vec![0f32; d];
            for (i, (orow, &start)) in o.chunks_exact_mut(d).zip(starts).enumerate() {
                load_row(src, start, stride, &mut buf);
                f(task * rows_per_task + i, &mut buf, orow);
            }
        });
}

/// `[x, weight?]` → `x * rsqrt(mean(x^2) + eps) [* weight]` over the last axis.
/// `x` and `weight` are already in the output dtype (the op casts them).
pub fn rms_norm(
    x: &[ArrayData],
    eps: f32,
    has_weight: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let xd = &x[0];
    let w = if has_weight { x.get(1) } else { None };
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    match xd.dtype {
        Dtype::F32 => rms_norm_t::<f32>(xd, w, eps, &mut o)?,
        Dtype::F16 => rms_norm_t::<f16>(xd, w, eps, &mut o)?,
        Dtype::BF16 => rms_norm_t::<bf16>(xd, w, eps, &mut o)?,
        t => return Err(Error::dtype("rms_norm", format!("unsupported type {t}"))),
    }
    Ok(o)
}

fn rms_norm_t<T: Element>(
    x: &ArrayData,
    w: Option<&ArrayData>,
    eps: f32,
    out: &mut ArrayData,
) -> Result<()> {
    let d = *x.shape.last().unwrap_or(&1);
    // a [R, D] weight (fast::rms_norm): row r of x takes weight row r % R
    let wrows = w.map_or(1, |w| (w.numel() / d.max(1)).max(1));
    let w = param::<T>("rms_norm", w, d * wrows)?;
    let w = w.as_deref();
    per_row::<T>(x, out, |r, row, o| {
        let inv = 1.0 / (sum_sq(row) / d as f32 + eps).sqrt();
        match w {
            Some(w) => {
                let w = &w[(r % wrows) * d..][..d];
                for ((o, &v), &wi) in o.iter_mut().zip(row.iter()).zip(w) {
                    // round to T first, then multiply in T: MLX's order
                    *o = T::from_f32(T::from_f32(v * inv).to_f32() * wi.to_f32());
                }
            }
            None => {
                for (o, &v) in o.iter_mut().zip(row.iter()) {
                    *o = T::from_f32(v * inv);
                }
            }
        }
    });
    Ok(())
}

/// `[x, weight?, bias?]` → `(x - mean) * rsqrt(var + eps) [* weight] [+ bias]` over the last
/// axis (two-pass mean/variance in f32).
pub fn layer_norm(
    x: &[ArrayData],
    eps: f32,
    has_weight: bool,
    has_bias: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let xd = &x[0];
    let w = if has_weight { x.get(1) } else { None };
    let b = if has_bias {
        x.get(1 + has_weight as usize)
    } else {
        None
    };
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    match xd.dtype {
        Dtype::F32 => layer_norm_t::<f32>(xd, w, b, eps, &mut o)?,
        Dtype::F16 => layer_norm_t::<f16>(xd, w, b, eps, &mut o)?,
        Dtype::BF16 => layer_norm_t::<bf16>(xd, w, b, eps, &mut o)?,
        t => return Err(Error::dtype("layer_norm", format!("unsupported type {t}"))),
    }
    Ok(o)
}

fn layer_norm_t<T: Element>(
    x: &ArrayData,
    w: Option<&ArrayData>,
    b: Option<&ArrayData>,
    eps: f32,
    out: &mut ArrayData,
) -> Result<()> {
    let d = *x.shape.last().unwrap_or(&1);
    let w = param::<T>("layer_norm", w, d)?;
    let b = param::<T>("layer_norm", b, d)?;
    let (w, b) = (w.as_deref(), b.as_deref());
    per_row::<T>(x, out, |_, row, o| {
        let mu = sum(row) / d as f32;
        for v in row.iter_mut() {
            *v -= mu;
        }
        let inv = 1.0 / (sum_sq(row) / d as f32 + eps).sqrt();
        for (i, (o, &v)) in o.iter_mut().zip(row.iter()).enumerate() {
            let mut y = T::from_f32(v * inv);
            if let Some(w) = w {
                y = T::from_f32(y.to_f32() * w[i].to_f32());
            }
            if let Some(b) = b {
                y = T::from_f32(y.to_f32() + b[i].to_f32());
            }
            *o = y;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn data(v: &[f32], shape: &[usize]) -> ArrayData {
        let mut d = ArrayData::alloc(shape, Dtype::F32).unwrap();
        out_slice_mut::<f32>(&mut d).copy_from_slice(v);
        d
    }

    #[test]
    fn rms_norm_rows_and_strided_view() {
        // x: [2, 3]; its transpose viewed as [3, 2] must normalise the columns of x.
        let x = data(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        let spec = OutputSpec {
            shape: &[2, 3],
            dtype: Dtype::F32,
        };
        let y = rms_norm(std::slice::from_ref(&x), 0.0, false, &spec).unwrap();
        let r = (14.0f32 / 3.0).sqrt();
        let got = y.as_slice::<f32>().unwrap();
        assert!((got[2] - 3.0 / r).abs() < 1e-6);
        let t = ArrayData {
            buffer: Arc::clone(&x.buffer),
            offset: 0,
            shape: [3usize, 2].as_slice().into(),
            strides: [1isize, 3].as_slice().into(),
            dtype: Dtype::F32,
        };
        let spec = OutputSpec {
            shape: &[3, 2],
            dtype: Dtype::F32,
        };
        let y = rms_norm(&[t], 0.0, false, &spec).unwrap();
        let r = (17.0f32 / 2.0).sqrt(); // column (1, 4)
        assert!((y.as_slice::<f32>().unwrap()[1] - 4.0 / r).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_weight_bias() {
        let x = data(&[1.0, 2.0, 3.0, 4.0], &[1, 4]);
        let w = data(&[1.0, 2.0, 1.0, 1.0], &[4]);
        let b = data(&[0.0, 0.0, 0.0, 10.0], &[4]);
        let spec = OutputSpec {
            shape: &[1, 4],
            dtype: Dtype::F32,
        };
        let y = layer_norm(&[x, w, b], 0.0, true, true, &spec).unwrap();
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, 2.0 * -0.5 / s, 0.5 / s, 1.5 / s + 10.0];
        for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
