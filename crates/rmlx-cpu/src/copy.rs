//! Copy to a row-contiguous layout, and dtype conversion.

use crate::strided::{collapse, walk};
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::{dispatch_dtype, ArrayData, Dtype, Result};

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
pub const CHUNK: usize = 1 << 16;

/// `x` in a fresh row-contiguous buffer of the same dtype.
pub fn copy(x: &ArrayData) -> Result<ArrayData> {
    let mut out = ArrayData::alloc_for_overwrite(&x.shape, x.dtype)?;
    dispatch_dtype!(x.dtype, T => copy_into::<T>(x, &mut out));
    Ok(out)
}

fn copy_into<T: Element>(x: &ArrayData, out: &mut ArrayData) {
    let src: &[T] = x.buffer_as::<T>();
    let n = x.numel();
    let dst: &mut [T] = out_slice_mut(out);
    if x.is_contiguous() {
        // one thread cannot pull all of the memory bandwidth
        dst.par_chunks_mut(CHUNK)
            .zip(src[x.offset..x.offset + n].par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        return;
    }
    let dims = collapse(&x.shape, &x.strides);
    dst.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let len = chunk.len();
            walk(&dims, x.offset, start, len, |i, o| {
                chunk[i - start] = src[o]
            });
        });
}

/// The output buffer of a freshly allocated array as `&mut [T]`.
pub fn out_slice_mut<T: Element>(out: &mut ArrayData) -> &mut [T] {
    let buf = std::sync::Arc::get_mut(&mut out.buffer).expect("fresh output buffer is unshared");
    bytemuck::cast_slice_mut(buf.as_mut_slice())
}

/// Reads `x` (any layout) as a row-major Vec<T> of its own dtype.
pub fn to_vec<T: Element>(x: &ArrayData) -> Vec<T> {
    if let Some(s) = x.as_slice::<T>() {
        return s.to_vec();
    }
    let src: &[T] = x.buffer_as::<T>();
    let dims = collapse(&x.shape, &x.strides);
    let mut v = Vec::with_capacity(x.numel());
    walk(&dims, x.offset, 0, x.numel(), |_, o| v.push(src[o]));
    v
}

/// A borrowed row-contiguous slice of `x` when possible, else an owned copy.
pub fn contiguous<T: Element>(x: &ArrayData) -> std::borrow::Cow<'_, [T]> {
    match x.as_slice::<T>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(to_vec::<T>(x)),
    }
}

/// `x` converted to `dtype`, row-contiguous.
pub fn astype(x: &ArrayData, dtype: Dtype) -> Result<ArrayData> {
    let mut out = ArrayData::alloc_for_overwrite(&x.shape, dtype)?;
    dispatch_dtype!(x.dtype, S => dispatch_dtype!(dtype, D => convert::<S, D>(x, &mut out)));
    Ok(out)
}

/// One element conversion with NumPy semantics (float → int truncates; to bool is `!= 0`).
#[inline(always)]
pub fn cast<S: Element, D: Element>(v: S) -> D {
    if S::DTYPE == D::DTYPE {
        return bytemuck::cast(v);
    }
    match (S::DTYPE, D::DTYPE) {
        // integers (and bool) between each other keep every bit that fits
        (s, d) if !s.is_float() && !d.is_float() => {
            let wide: i64 = match s {
                Dtype::I64 => bytemuck::cast::<S, i64>(v),
                _ => v.to_f64() as i64,
            };
            match d {
                Dtype::Bool => D::from_f64((wide != 0) as u8 as f64),
                Dtype::I64 => bytemuck::cast::<i64, D>(wide),
                Dtype::I32 => bytemuck::cast::<i32, D>(wide as i32),
                Dtype::U32 => bytemuck::cast::<u32, D>(wide as u32),
                Dtype::U8 => bytemuck::cast::<u8, D>(wide as u8),
                _ => D::from_f64(wide as f64),
            }
        }
        (_, Dtype::Bool) => D::from_f64((v.to_f64() != 0.0) as u8 as f64),
        (_, Dtype::F16) | (_, Dtype::BF16) | (_, Dtype::F32) => D::from_f32(v.to_f32()),
        _ => D::from_f64(v.to_f64()),
    }
}

fn convert<S: Element, D: Element>(x: &ArrayData, out: &mut ArrayData) {
    let src: &[S] = x.buffer_as::<S>();
    let dst: &mut [D] = out_slice_mut(out);
    if x.is_contiguous() {
        let s = &src[x.offset..x.offset + dst.len()];
        dst.par_chunks_mut(CHUNK)
            .zip(s.par_chunks(CHUNK))
            .for_each(|(d, s)| {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = cast::<S, D>(*s);
                }
            });
        return;
    }
    let dims = collapse(&x.shape, &x.strides);
    dst.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            walk(&dims, x.offset, start, chunk.len(), |i, o| {
                chunk[i - start] = cast::<S, D>(src[o])
            });
        });
}
