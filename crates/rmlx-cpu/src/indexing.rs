//! Concatenation, strided updates, gathers and scatters.
//!
//! Index arrays of any integer dtype are read as i64; negative indices wrap once; an index
//! still out of range is an error, never an out-of-bounds access.

use crate::copy::{cast, contiguous, out_slice_mut};
use crate::strided::{collapse, walk};
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::shape::row_major_strides;
use rmlx_core::{dispatch_dtype, ArrayData, Error, Result};

/// `[x0, x1, ...]` joined along `axis` (all of the output's dtype).
pub fn concatenate(xs: &[ArrayData], axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    dispatch_dtype!(out.dtype, T => concat_t::<T>(xs, axis, &mut o));
    Ok(o)
}

fn concat_t<T: Element>(xs: &[ArrayData], axis: usize, o: &mut ArrayData) {
    // View every array as [outer, rows_i * inner]; the output row is the inputs' rows side by side.
    let outer: usize = o.shape[..axis].iter().product();
    let inner: usize = o.shape[axis + 1..].iter().product();
    let out_row = o.shape[axis] * inner;
    let dst: &mut [T] = out_slice_mut(o);
    if out_row == 0 {
        return;
    }
    let mut col = 0;
    for x in xs {
        let w = x.shape[axis] * inner;
        if w == 0 {
            continue;
        }
        let src = contiguous::<T>(x);
        for r in 0..outer {
            dst[r * out_row + col..r * out_row + col + w].copy_from_slice(&src[r * w..(r + 1) * w]);
        }
        col += w;
    }
}

/// A copy of `src` with `upd` written at `start + i * step` per axis.
/// `src` is taken by value: when nothing else holds its buffer (a KV cache replacing its
/// buffer every step), the update is written in place instead of copying the whole array.
pub fn slice_update(
    mut src: ArrayData,
    upd: &ArrayData,
    start: &[usize],
    step: &[isize],
    out: &OutputSpec,
) -> Result<ArrayData> {
    let whole = src.offset == 0
        && src.is_contiguous()
        && src.buffer.len() == src.numel() * src.dtype.size();
    let donated =
        whole && !src.buffer.is_mapped() && std::sync::Arc::get_mut(&mut src.buffer).is_some();
    let mut o = if donated {
        src
    } else {
        crate::copy::copy(&src)?
    };
    if upd.numel() == 0 {
        return Ok(o);
    }
    // The region as a strided layout of the output buffer.
    let rs = row_major_strides(out.shape);
    let base: isize = start.iter().zip(&rs).map(|(&s, &r)| s as isize * r).sum();
    let strides: Vec<isize> = step.iter().zip(&rs).map(|(&s, &r)| s * r).collect();
    let dims = collapse(&upd.shape, &strides);
    dispatch_dtype!(out.dtype, T => {
        let vals = contiguous::<T>(upd);
        let dst: &mut [T] = out_slice_mut(&mut o);
        let len = dst.len();
        let mut bad = false;
        walk(&dims, base as usize, 0, vals.len(), |i, off| {
            if off < len { dst[off] = vals[i] } else { bad = true }
        });
        if bad {
            return Err(Error::runtime("slice_update", "update region falls outside the array"));
        }
    });
    Ok(o)
}

/// `slice_update` at a position read from the `start` scalar (clamped so `upd` fits) along
/// `axis`, every other axis from 0.
pub fn slice_update_at(
    src: ArrayData,
    upd: &ArrayData,
    start: &ArrayData,
    axis: usize,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let at = contiguous::<i32>(start).first().copied().unwrap_or(0);
    let room = src.shape[axis] - upd.shape[axis];
    let mut st = vec![0usize; src.shape.len()];
    st[axis] = (at.max(0) as usize).min(room);
    let step = vec![1isize; src.shape.len()];
    slice_update(src, upd, &st, &step, out)
}

/// Indices as i64, row-major.
fn read_indices(idx: &ArrayData) -> Vec<i64> {
    dispatch_dtype!(idx.dtype, I => contiguous::<I>(idx).iter().map(|&v| cast::<I, i64>(v)).collect())
}

/// Wraps a negative index once and checks the range.
#[inline]
fn wrap(op: &'static str, i: i64, dim: usize, axis: usize) -> Result<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if j < 0 || j >= dim as i64 {
        return Err(Error::invalid(
            op,
            format!("index {i} is out of bounds for axis {axis} with size {dim}"),
        ));
    }
    Ok(j as usize)
}

/// Wrapped, checked indices.
fn checked_indices(
    op: &'static str,
    idx: &ArrayData,
    dim: usize,
    axis: usize,
) -> Result<Vec<usize>> {
    read_indices(idx)
        .into_iter()
        .map(|i| wrap(op, i, dim, axis))
        .collect()
}

/// `out = a.take(idx, axis)`; shape `a[..axis] + idx.shape + a[axis+1..]`.
pub fn take(a: &ArrayData, idx: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    let dim = a.shape[axis];
    let ix = checked_indices("take", idx, dim, axis)?;
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    let pre: usize = a.shape[..axis].iter().product();
    let post: usize = a.shape[axis + 1..].iter().product();
    dispatch_dtype!(out.dtype, T => take_t::<T>(a, axis, &ix, (pre, dim, post), &mut o));
    Ok(o)
}

fn take_t<T: Element>(
    a: &ArrayData,
    axis: usize,
    ix: &[usize],
    (pre, dim, post): (usize, usize, usize),
    o: &mut ArrayData,
) {
    let dst: &mut [T] = out_slice_mut(o);
    if dst.is_empty() {
        return;
    }
    // Rows of `post` elements are gathered whole; the source is read in place when it is a
    // contiguous (or row-contiguous) layout: the embedding lookup case (2-D table, axis 0)
    // touches only the rows it needs.
    let inner = collapse(&a.shape[axis + 1..], &a.strides[axis + 1..]);
    let row_contig = post == 1 || (inner.len() == 1 && inner[0].1 == 1);
    if row_contig && pre == 1 {
        let src = a.buffer_as::<T>();
        let s_ax = a.strides[axis];
        let n = ix.len();
        dst.par_chunks_mut(post)
            .enumerate()
            .with_min_len((4096 / post.max(1)).max(1))
            .for_each(|(j, row)| {
                let start = (a.offset as isize + ix[j % n] as isize * s_ax) as usize;
                if post == 1 {
                    row[0] = src[start];
                } else {
                    row.copy_from_slice(&src[start..start + post]);
                }
            });
        return;
    }
    let src = contiguous::<T>(a);
    let n = ix.len();
    dst.par_chunks_mut(n * post)
        .enumerate()
        .for_each(|(p, block)| {
            for (j, &i) in ix.iter().enumerate() {
                let s = p * dim * post + i * post;
                block[j * post..(j + 1) * post].copy_from_slice(&src[s..s + post]);
            }
        });
}

/// `out[p, j, q] = a[p, idx[p, j, q], q]` with `a: [pre, A, post]`, `idx: [pre, J, post]`.
pub fn take_along_axis(
    a: &ArrayData,
    idx: &ArrayData,
    axis: usize,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let dim = a.shape[axis];
    let ix = checked_indices("take_along_axis", idx, dim, axis)?;
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    let post: usize = a.shape[axis + 1..].iter().product();
    let j = idx.shape[axis];
    dispatch_dtype!(out.dtype, T => {
        let src = contiguous::<T>(a);
        let dst: &mut [T] = out_slice_mut(&mut o);
        if !dst.is_empty() {
            dst.par_chunks_mut(j * post).zip(ix.par_chunks(j * post)).enumerate().for_each(|(p, (d, iv))| {
                for (e, (d, &i)) in d.iter_mut().zip(iv).enumerate() {
                    *d = src[p * dim * post + i * post + e % post];
                }
            });
        }
    });
    Ok(o)
}

/// A copy of `a` with `vals[p, j, q]` written at `[p, idx[p, j, q], q]`; later writes win.
pub fn put_along_axis(
    a: &ArrayData,
    idx: &ArrayData,
    vals: &ArrayData,
    axis: usize,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let dim = a.shape[axis];
    let ix = checked_indices("put_along_axis", idx, dim, axis)?;
    let mut o = crate::copy::copy(a)?;
    let post: usize = a.shape[axis + 1..].iter().product();
    let j = idx.shape[axis];
    dispatch_dtype!(out.dtype, T => {
        let v = contiguous::<T>(vals);
        let dst: &mut [T] = out_slice_mut(&mut o);
        if !dst.is_empty() && !ix.is_empty() {
            // Lanes of different `p` write disjoint blocks; within one block, in order.
            dst.par_chunks_mut(dim * post).zip(ix.par_chunks(j * post).zip(v.par_chunks(j * post))).for_each(|(d, (iv, vv))| {
                for (e, (&i, &x)) in iv.iter().zip(vv.iter()).enumerate() {
                    d[i * post + e % post] = x;
                }
            });
        }
    });
    Ok(o)
}
