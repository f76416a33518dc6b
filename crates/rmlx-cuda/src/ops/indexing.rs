//! Concatenation, strided updates, gathers and scatters on the GPU (the CPU's
//! `rmlx-cpu/src/indexing.rs`).
//!
//! Index arrays of any integer dtype are read as i64 and negative indices wrap once, as on the
//! CPU. The CPU reports an index still out of range as an error; a kernel cannot without
//! waiting for the device, so here a gather clamps such an index into range and a scatter
//! skips it (never an out-of-bounds access).

use crate::alloc::DeviceBuffer;
use crate::context::Gpu;
use crate::data::{self, ctype, input, output, tag, DevIn, BACKEND};
use crate::launch::{Args, Grid, Lay};
use crate::ops::elementwise::{cast_expr, copy, read};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

fn cls(contiguous: bool) -> &'static str {
    if contiguous {
        "c"
    } else {
        "s"
    }
}

/// Concatenate: copies input `x` (row-major index `i`, `w` elements per outer row) into
/// columns `col..col + w` of output rows of `out_row` elements.
pub fn concat_source(xd: Dtype, od: Dtype, contiguous: bool) -> (String, String) {
    let name = format!("concat_{}_{}_{}", tag(xd), tag(od), cls(contiguous));
    let src = format!(
        "extern \"C\" __global__ void {name}(const {x}* __restrict__ x, i64 xo, Lay xl, {o}* __restrict__ y, i64 n, i64 w, i64 out_row, i64 col) {{\n  GRID_LOOP(i, n) {{\n    {x} v0 = {r};\n    i64 r = i / w;\n    y[r * out_row + col + (i - r * w)] = {c};\n  }}\n}}\n",
        x = ctype(xd),
        o = ctype(od),
        r = read("x", "i", contiguous),
        c = cast_expr("v0", xd, od),
    );
    (name, src)
}

/// `xs` joined along `axis` into a row-contiguous output of `shape`/`od`.
pub fn concatenate(
    gpu: &Arc<Gpu>,
    xs: &[ArrayData],
    axis: usize,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    if axis >= shape.len() {
        return Err(Error::invalid(
            "concatenate",
            format!(
                "axis {axis} is out of range for an output of {} dimensions",
                shape.len()
            ),
        ));
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let out_row = shape[axis] * inner;
    let mut col = 0usize;
    for x in xs {
        if x.shape.len() != shape.len()
            || x.shape[..axis] != shape[..axis]
            || x.shape[axis + 1..] != shape[axis + 1..]
        {
            return Err(Error::invalid(
                "concatenate",
                format!(
                    "an input of shape {:?} does not fit an output of shape {shape:?} along axis {axis}",
                    &x.shape[..]
                ),
            ));
        }
        col += x.shape[axis] * inner;
    }
    if col != out_row {
        return Err(Error::invalid(
            "concatenate",
            format!("the inputs' extents along axis {axis} do not add up to the output's"),
        ));
    }
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let mut col = 0usize;
    for x in xs {
        let w = x.shape[axis] * inner;
        if w == 0 {
            continue;
        }
        let d = input(gpu, x)?;
        let (name, src) = concat_source(x.dtype, od, d.contiguous());
        let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
        let n = x.numel();
        let mut a = Args::new();
        a.ptr(d.ptr).i64(d.offset).push(d.lay);
        a.ptr(yptr)
            .i64(n as i64)
            .i64(w as i64)
            .i64(out_row as i64)
            .i64(col as i64);
        gpu.launch(&f, &name, Grid::elems(n), &mut a)?;
        col += w;
    }
    Ok(out)
}

/// SliceUpdate: `y[base + loc(i, region)] = x[i]` for the update `x`.
pub fn slice_update_source(ud: Dtype, od: Dtype, contiguous: bool) -> (String, String) {
    let name = format!("slice_update_{}_{}_{}", tag(ud), tag(od), cls(contiguous));
    let src = format!(
        "extern \"C\" __global__ void {name}(const {x}* __restrict__ x, i64 xo, Lay xl, {o}* __restrict__ y, i64 base, Lay rl, i64 n) {{\n  GRID_LOOP(i, n) {{\n    {x} v0 = {r};\n    y[base + loc(i, rl)] = {c};\n  }}\n}}\n",
        x = ctype(ud),
        o = ctype(od),
        r = read("x", "i", contiguous),
        c = cast_expr("v0", ud, od),
    );
    (name, src)
}

/// A copy of `src` with `upd` written at `start + i * step` per axis. `src` comes by value:
/// when nothing else holds its buffer and it covers the whole buffer row-contiguously (a KV
/// cache replacing its buffer every step), its device copy is written in place.
pub fn slice_update(
    gpu: &Arc<Gpu>,
    src: ArrayData,
    upd: &ArrayData,
    start: &[usize],
    step: &[isize],
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let nd = shape.len();
    if start.len() != nd || step.len() != nd || upd.shape.len() != nd || src.shape[..] != *shape {
        return Err(Error::invalid(
            "slice_update",
            format!(
                "start {start:?}, step {step:?} and an update of shape {:?} do not match an array of shape {shape:?}",
                &upd.shape[..]
            ),
        ));
    }
    // The region as a strided layout of the output, checked against its bounds up front.
    let mut rs = vec![0isize; nd];
    let mut acc = 1isize;
    for k in (0..nd).rev() {
        rs[k] = acc;
        acc *= shape[k].max(1) as isize;
    }
    let total: usize = shape.iter().product();
    let base: isize = start.iter().zip(&rs).map(|(&s, &r)| s as isize * r).sum();
    let strides: Vec<isize> = step.iter().zip(&rs).map(|(&s, &r)| s * r).collect();
    if upd.numel() > 0 {
        let (mut lo, mut hi) = (base, base);
        for (&n, &s) in upd.shape.iter().zip(&strides) {
            let ext = (n as isize - 1) * s;
            if ext < 0 {
                lo += ext
            } else {
                hi += ext
            }
        }
        if lo < 0 || hi >= total as isize {
            return Err(Error::runtime(
                "slice_update",
                "update region falls outside the array",
            ));
        }
    }
    let (out, yptr) = write_target(gpu, src, od)?;
    let n = upd.numel();
    if n == 0 {
        return Ok(out);
    }
    let u = input(gpu, upd)?;
    let rl = Lay::new(&upd.shape, &strides)?;
    let (name, s) = slice_update_source(upd.dtype, od, u.contiguous());
    let f = gpu.kernels.get(&gpu.ctx, &name, &s)?;
    let mut a = Args::new();
    a.ptr(u.ptr).i64(u.offset).push(u.lay);
    a.ptr(yptr).i64(base as i64).push(rl).i64(n as i64);
    gpu.launch(&f, &name, Grid::elems(n), &mut a)?;
    Ok(out)
}

/// The array an update is written into, and its device address: `src`'s own device copy when
/// nothing else holds its buffer and it covers the whole buffer row-contiguously (a KV cache
/// replacing its buffer every step: an in-place write), else a fresh copy.
pub(crate) fn write_target(
    gpu: &Arc<Gpu>,
    mut src: ArrayData,
    od: Dtype,
) -> Result<(ArrayData, u64)> {
    let whole = src.offset == 0
        && src.is_contiguous()
        && src.buffer.len() == src.numel() * src.dtype.size()
        && src.dtype == od;
    let mut donated: Option<u64> = None;
    if whole && !src.buffer.is_mapped() {
        if let Some(b) = Arc::get_mut(&mut src.buffer) {
            let d = match b.take_for_device_write::<DeviceBuffer>(BACKEND, gpu.index) {
                Some(d) => d,
                None => {
                    // A host array (or one on another device): give it a device copy first.
                    data::device_bytes(gpu, b)?;
                    b.take_for_device_write::<DeviceBuffer>(BACKEND, gpu.index)
                        .ok_or_else(|| {
                            Error::runtime("cuda", "slice_update: the device copy went missing")
                        })?
                }
            };
            donated = Some(d.ptr);
        }
    }
    Ok(match donated {
        Some(p) => (src, p),
        None => {
            let o = copy(gpu, &src, od)?;
            let p = input(gpu, &o)?.ptr;
            (o, p)
        }
    })
}

/// SliceUpdateAt: like SliceUpdate, the region starting at `start[0]` (clamped to `room`)
/// along one axis of stride `axstride`, read on the device so a recorded graph can replay it.
pub fn slice_update_at_source(ud: Dtype, od: Dtype, contiguous: bool) -> (String, String) {
    let name = format!(
        "slice_update_at_{}_{}_{}",
        tag(ud),
        tag(od),
        cls(contiguous)
    );
    let src = format!(
        "extern \"C\" __global__ void {name}(const {x}* __restrict__ x, i64 xo, Lay xl, {o}* __restrict__ y, Lay rl, i64 n, const i32* __restrict__ at, i64 room, i64 axstride) {{\n  i64 s = (i64)at[0];\n  s = s < 0 ? 0 : (s > room ? room : s);\n  i64 base = s * axstride;\n  GRID_LOOP(i, n) {{\n    {x} v0 = {r};\n    y[base + loc(i, rl)] = {c};\n  }}\n}}\n",
        x = ctype(ud),
        o = ctype(od),
        r = read("x", "i", contiguous),
        c = cast_expr("v0", ud, od),
    );
    (name, src)
}

/// A copy of `src` (in place when donated) with `upd` written at the position `start` holds
/// along `axis`; `upd` matches `src` on every other axis.
pub fn slice_update_at(
    gpu: &Arc<Gpu>,
    src: ArrayData,
    upd: &ArrayData,
    start: &ArrayData,
    axis: usize,
    od: Dtype,
) -> Result<ArrayData> {
    let shape = src.shape.to_vec();
    if upd.shape.len() != shape.len() || start.dtype != Dtype::I32 || start.numel() != 1 {
        return Err(Error::invalid(
            "slice_update_at",
            format!(
                "an update of shape {:?} at an i32 start does not fit {shape:?}",
                &upd.shape[..]
            ),
        ));
    }
    let rs = rmlx_core::shape::row_major_strides(&shape);
    let (out, yptr) = write_target(gpu, src, od)?;
    let n = upd.numel();
    if n == 0 {
        return Ok(out);
    }
    let u = input(gpu, upd)?;
    let at = input(gpu, start)?;
    let rl = Lay::new(&upd.shape, &rs)?;
    let (name, s) = slice_update_at_source(upd.dtype, od, u.contiguous());
    let f = gpu.kernels.get(&gpu.ctx, &name, &s)?;
    let mut a = Args::new();
    a.ptr(u.ptr).i64(u.offset).push(u.lay);
    a.ptr(yptr).push(rl).i64(n as i64).ptr(at.base());
    a.i64((shape[axis] - upd.shape[axis]) as i64)
        .i64(rs[axis] as i64);
    gpu.launch(&f, &name, Grid::elems(n), &mut a)?;
    Ok(out)
}

/// Take (`along` false: index `j` of the output's middle axes) and TakeAlongAxis (`along`
/// true: the index array has the output's shape). Output element `i` = (p, j, q) with `nj`
/// middle and `post` trailing elements reads `a[p, idx, q]`.
pub fn gather_source(ad: Dtype, id: Dtype, od: Dtype, along: bool) -> (String, String) {
    let name = format!(
        "{}_{}_{}_{}",
        if along { "take_along" } else { "take" },
        tag(ad),
        tag(id),
        tag(od)
    );
    let iread = if along { "loc(i, il)" } else { "loc(j, il)" };
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ a, i64 ao, Lay pl, i64 sax, Lay ql, const {it}* __restrict__ ix, i64 io, Lay il, {o}* __restrict__ y, i64 n, i64 nj, i64 post, i64 dim) {{\n  GRID_LOOP(i, n) {{\n    i64 t = i / post;\n    i64 q = i - t * post;\n    i64 p = t / nj;\n    i64 j = t - p * nj;\n    i64 k = to_i(ix[io + {iread}]);\n    if (k < 0) k += dim;\n    k = k < 0 ? 0 : (k >= dim ? dim - 1 : k);\n    {t} v0 = a[ao + loc(p, pl) + k * sax + loc(q, ql)];\n    y[i] = {c};\n  }}\n}}\n",
        t = ctype(ad),
        it = ctype(id),
        o = ctype(od),
        c = cast_expr("v0", ad, od),
    );
    (name, src)
}

/// `take` of whole contiguous slices (`post` elements after the axis, 16-byte aligned, no
/// cast): one thread per 16 bytes, so gathering token rows or expert inputs moves at copy speed
/// instead of paying index arithmetic per element.
pub fn take_rows_source(id: Dtype) -> (String, String) {
    let name = format!("take_rows16_{}", tag(id));
    let src = format!(
        "extern \"C\" __global__ void {name}(const uint4* __restrict__ a, i64 ao, Lay pl, i64 sax, const {it}* __restrict__ ix, i64 io, Lay il, uint4* __restrict__ y, i64 n, i64 nj, i64 cpr, i64 dim) {{\n  GRID_LOOP(i, n) {{\n    i64 t = i / cpr;\n    i64 c = i - t * cpr;\n    i64 p = t / nj;\n    i64 j = t - p * nj;\n    i64 k = to_i(ix[io + loc(j, il)]);\n    if (k < 0) k += dim;\n    k = k < 0 ? 0 : (k >= dim ? dim - 1 : k);\n    y[i] = a[ao + loc(p, pl) + k * sax + c];\n  }}\n}}\n",
        it = ctype(id),
    );
    (name, src)
}

#[allow(clippy::too_many_arguments)]
fn gather(
    gpu: &Arc<Gpu>,
    a: &ArrayData,
    idx: &ArrayData,
    axis: usize,
    along: bool,
    shape: &[usize],
    od: Dtype,
    op: &'static str,
) -> Result<ArrayData> {
    let nd = a.shape.len();
    if axis >= nd {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for {nd} dimensions"),
        ));
    }
    let dim = a.shape[axis];
    let post: usize = a.shape[axis + 1..].iter().product();
    // The index axes in the output: idx.shape for take, the one axis for take_along_axis.
    let nj: usize = if along {
        if idx.shape.len() != nd || idx.shape[..] != *shape {
            return Err(Error::invalid(
                op,
                "indices must have the output's shape and the array's dimensions",
            ));
        }
        idx.shape[axis]
    } else {
        idx.numel()
    };
    // Strides of `a` over the output's leading / trailing axes (0 where `a` broadcasts).
    let (pre_shape, post_shape) = if along {
        (&shape[..axis], &shape[axis + 1..])
    } else {
        (&a.shape[..axis], &a.shape[axis + 1..])
    };
    let bstrides = |ash: &[usize], ast: &[isize], osh: &[usize]| -> Result<Vec<isize>> {
        ash.iter()
            .zip(ast)
            .zip(osh)
            .map(|((&an, &s), &on)| {
                if an == on {
                    Ok(s)
                } else if an == 1 {
                    Ok(0)
                } else {
                    Err(Error::invalid(
                        op,
                        format!(
                            "the array of shape {:?} does not match the indices",
                            &a.shape[..]
                        ),
                    ))
                }
            })
            .collect()
    };
    let pst = bstrides(&a.shape[..axis], &a.strides[..axis], pre_shape)?;
    let qst = bstrides(&a.shape[axis + 1..], &a.strides[axis + 1..], post_shape)?;
    let post = if along {
        post_shape.iter().product()
    } else {
        post
    };
    let (out, yptr) = output(gpu, shape, od)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    if dim == 0 {
        return Err(Error::invalid(
            op,
            format!("cannot take non-empty indices from axis {axis} of size 0"),
        ));
    }
    check_host_indices(op, idx, dim, axis)?;
    let ad: DevIn = input(gpu, a)?;
    let id: DevIn = input(gpu, idx)?;
    // whole slices: contiguous after the axis, every slice start 16-byte aligned
    let esz = a.dtype.size() as isize;
    let slice_bytes = post as isize * esz;
    let post_contiguous = Lay::new(post_shape, &qst)?.is_contiguous();
    let aligned = |elems: isize| (elems * esz) % 16 == 0;
    if !along
        && a.dtype == od
        && post_contiguous
        && slice_bytes % 16 == 0
        && aligned(ad.offset as isize)
        && aligned(a.strides[axis])
        && pst.iter().all(|&s| aligned(s))
    {
        let v = 16 / esz; // elements per 16 bytes
        let (name, src) = take_rows_source(idx.dtype);
        let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
        let pst16: Vec<isize> = pst.iter().map(|s| s / v).collect();
        let chunks = n / (16 / esz as usize);
        let mut g = Args::new();
        g.ptr(ad.ptr)
            .i64(ad.offset / v as i64)
            .push(Lay::new(pre_shape, &pst16)?)
            .i64((a.strides[axis] / v) as i64);
        g.ptr(id.ptr).i64(id.offset).push(id.lay);
        g.ptr(yptr)
            .i64(chunks as i64)
            .i64(nj as i64)
            .i64((slice_bytes / 16) as i64)
            .i64(dim as i64);
        gpu.launch(&f, &name, Grid::elems(chunks), &mut g)?;
        return Ok(out);
    }
    let (name, src) = gather_source(a.dtype, idx.dtype, od, along);
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut g = Args::new();
    g.ptr(ad.ptr)
        .i64(ad.offset)
        .push(Lay::new(pre_shape, &pst)?)
        .i64(a.strides[axis] as i64)
        .push(Lay::new(post_shape, &qst)?);
    g.ptr(id.ptr).i64(id.offset).push(id.lay);
    g.ptr(yptr)
        .i64(n as i64)
        .i64(nj as i64)
        .i64(post as i64)
        .i64(dim as i64);
    gpu.launch(&f, &name, Grid::elems(n), &mut g)?;
    Ok(out)
}

/// Indices that live on the host (token ids, most index arrays a program builds) are checked
/// there before the launch, giving the CPU's error for an out-of-range index. Indices computed
/// on the GPU are not read back (that would stall the stream): the kernels clamp them instead,
/// so memory is never touched out of bounds.
fn check_host_indices(op: &'static str, idx: &ArrayData, dim: usize, axis: usize) -> Result<()> {
    if !idx.buffer.is_on_host() {
        return Ok(());
    }
    let bytes = idx.buffer.as_slice();
    let size = idx.dtype.size();
    let read = |off: usize| -> i64 {
        let b = &bytes[off * size..(off + 1) * size];
        match idx.dtype {
            Dtype::Bool | Dtype::U8 => b[0] as i64,
            Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            Dtype::F16 | Dtype::BF16 | Dtype::F32 => 0,
        }
    };
    let n = idx.numel();
    let nd = idx.shape.len();
    let mut pos = vec![0usize; nd];
    for _ in 0..n {
        let off: isize = idx.offset as isize
            + pos
                .iter()
                .zip(&idx.strides)
                .map(|(&p, &s)| p as isize * s)
                .sum::<isize>();
        let i = read(off as usize);
        let j = if i < 0 { i + dim as i64 } else { i };
        if j < 0 || j >= dim as i64 {
            return Err(Error::invalid(
                op,
                format!("index {i} is out of bounds for axis {axis} with size {dim}"),
            ));
        }
        for d in (0..nd).rev() {
            pos[d] += 1;
            if pos[d] < idx.shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(())
}

/// `a.take(idx, axis)`; output shape `a[..axis] + idx.shape + a[axis+1..]`.
pub fn take(
    gpu: &Arc<Gpu>,
    a: &ArrayData,
    idx: &ArrayData,
    axis: usize,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    gather(gpu, a, idx, axis, false, shape, od, "take")
}

/// `out[p, j, q] = a[p, idx[p, j, q], q]` (shapes already broadcast by the op).
pub fn take_along_axis(
    gpu: &Arc<Gpu>,
    a: &ArrayData,
    idx: &ArrayData,
    axis: usize,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    gather(gpu, a, idx, axis, true, shape, od, "take_along_axis")
}

/// PutAlongAxis: one thread per (p, q) lane walks `j` in order, so of repeated indices the
/// last write wins, as on the CPU. Out-of-range indices are skipped.
pub fn scatter_source(id: Dtype, vd: Dtype, od: Dtype) -> (String, String) {
    let name = format!("put_along_{}_{}_{}", tag(id), tag(vd), tag(od));
    let src = format!(
        "extern \"C\" __global__ void {name}(const {it}* __restrict__ ix, i64 io, Lay il, const {vt}* __restrict__ v, i64 vo, Lay vl, {o}* __restrict__ y, i64 n, i64 nj, i64 post, i64 dim) {{\n  GRID_LOOP(i, n) {{\n    i64 p = i / post;\n    i64 q = i - p * post;\n    for (i64 j = 0; j < nj; ++j) {{\n      i64 e = (p * nj + j) * post + q;\n      i64 k = to_i(ix[io + loc(e, il)]);\n      if (k < 0) k += dim;\n      if (k < 0 || k >= dim) continue;\n      {vt} v0 = v[vo + loc(e, vl)];\n      y[(p * dim + k) * post + q] = {c};\n    }}\n  }}\n}}\n",
        it = ctype(id),
        vt = ctype(vd),
        o = ctype(od),
        c = cast_expr("v0", vd, od),
    );
    (name, src)
}

/// PutAlongAxis over few lanes (a 1-D scatter, a permutation's inverse): one thread per index
/// element, in two passes over the same kernel. Pass 0 claims each destination for the largest
/// `j` that writes it (`atomicMax` of `j + 1` in `win`); pass 1 lets only that element write. The
/// last write still wins, as on the CPU, without walking `j` in one thread.
pub fn scatter_wide_source(id: Dtype, vd: Dtype, od: Dtype) -> (String, String) {
    let name = format!("put_along_wide_{}_{}_{}", tag(id), tag(vd), tag(od));
    let src = format!(
        "extern \"C\" __global__ void {name}(const {it}* __restrict__ ix, i64 io, Lay il, const {vt}* __restrict__ v, i64 vo, Lay vl, {o}* __restrict__ y, u32* __restrict__ win, i64 n, i64 nj, i64 post, i64 dim, int pass) {{\n  GRID_LOOP(e, n) {{\n    i64 q = e % post;\n    i64 t = e / post;\n    i64 j = t % nj;\n    i64 p = t / nj;\n    i64 k = to_i(ix[io + loc(e, il)]);\n    if (k < 0) k += dim;\n    if (k < 0 || k >= dim) continue;\n    i64 dst = (p * dim + k) * post + q;\n    if (pass == 0) {{\n      atomicMax(&win[dst], (u32)(j + 1));\n    }} else if (win[dst] == (u32)(j + 1)) {{\n      {vt} v0 = v[vo + loc(e, vl)];\n      y[dst] = {c};\n    }}\n  }}\n}}\n",
        it = ctype(id),
        vt = ctype(vd),
        o = ctype(od),
        c = cast_expr("v0", vd, od),
    );
    (name, src)
}

/// Lanes below which a scatter takes the two-pass kernel (one thread per index element)
/// instead of one thread per lane walking its indices in order.
const WIDE_SCATTER_LANES: usize = 4096;

/// A copy of `a` with `vals[p, j, q]` written at `[p, idx[p, j, q], q]`.
pub fn put_along_axis(
    gpu: &Arc<Gpu>,
    a: &ArrayData,
    idx: &ArrayData,
    vals: &ArrayData,
    axis: usize,
    od: Dtype,
) -> Result<ArrayData> {
    let nd = a.shape.len();
    if axis >= nd || idx.shape.len() != nd || vals.shape[..] != idx.shape[..] {
        return Err(Error::invalid(
            "put_along_axis",
            "indices and values must share a shape of the array's dimensions",
        ));
    }
    let out = copy(gpu, a, od)?;
    let dim = a.shape[axis];
    let pre: usize = a.shape[..axis].iter().product();
    let post: usize = a.shape[axis + 1..].iter().product();
    let nj = idx.shape[axis];
    let lanes = pre * post;
    if out.numel() == 0 || idx.numel() == 0 || lanes == 0 {
        return Ok(out);
    }
    check_host_indices("put_along_axis", idx, dim, axis)?;
    let yptr = input(gpu, &out)?.ptr;
    let id = input(gpu, idx)?;
    let vd = input(gpu, vals)?;
    if lanes < WIDE_SCATTER_LANES && nj > 1 && nj < u32::MAX as usize {
        // zeros: no destination claimed yet
        let win = crate::ops::elementwise::arange(gpu, 0.0, 0.0, &[out.numel()], Dtype::U32)?;
        let wptr = input(gpu, &win)?.ptr;
        let (name, src) = scatter_wide_source(idx.dtype, vals.dtype, od);
        let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
        let n = idx.numel();
        for pass in 0..2 {
            let mut g = Args::new();
            g.ptr(id.ptr).i64(id.offset).push(id.lay);
            g.ptr(vd.ptr).i64(vd.offset).push(vd.lay);
            g.ptr(yptr)
                .ptr(wptr)
                .i64(n as i64)
                .i64(nj as i64)
                .i64(post as i64)
                .i64(dim as i64)
                .i32(pass);
            gpu.launch(&f, &name, Grid::elems(n), &mut g)?;
        }
        drop(win);
        return Ok(out);
    }
    let (name, src) = scatter_source(idx.dtype, vals.dtype, od);
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut g = Args::new();
    g.ptr(id.ptr).i64(id.offset).push(id.lay);
    g.ptr(vd.ptr).i64(vd.offset).push(vd.lay);
    g.ptr(yptr)
        .i64(lanes as i64)
        .i64(nj as i64)
        .i64(post as i64)
        .i64(dim as i64);
    gpu.launch(&f, &name, Grid::elems(lanes), &mut g)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every indexing kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn indexing_kernels_compile() {
        let mut body = String::new();
        let mut add = |(_, s): (String, String)| body.push_str(&s);
        for t in Dtype::ALL {
            for c in [true, false] {
                add(concat_source(t, t, c));
                add(slice_update_source(t, t, c));
            }
            for i in Dtype::ALL {
                for along in [false, true] {
                    add(gather_source(t, i, t, along));
                }
                add(scatter_source(i, t, t));
                add(scatter_wide_source(i, t, t));
            }
        }
        for i in Dtype::ALL {
            add(take_rows_source(i));
        }
        // Mixed dtypes go through the same cast expressions as the element-wise copies.
        add(concat_source(Dtype::F16, Dtype::F32, false));
        add(slice_update_source(Dtype::F32, Dtype::BF16, true));
        assert_compiles("indexing_all", &body);
    }
}
