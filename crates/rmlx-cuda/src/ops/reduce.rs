//! Reductions (`Reduce`, `ArgReduce`) with the CPU backend's rules: floats (halfs included)
//! accumulate in f32 with NaN-propagating max/min, integers wrap in their own width, bool/u8
//! accumulate in u32 (agreeing with u8 wrapping in the low byte), `Any`/`All` are max/min.
//!
//! The input is read in place when the reduced axes merge into one strided run (one "row" of `R`
//! elements per output element, rows placed by the strided layout of the kept axes); otherwise
//! a copy with the reduced axes moved last is made first, as on the CPU. A row goes to a block, a warp or a
//! single thread depending on its length and on whether neighbouring rows are neighbours in
//! memory (column reductions: a thread per row reads coalesced across the warp). Long rows that
//! would leave the GPU idle are cut into chunks reduced into f32/int partials first, then the
//! partials are reduced by a second launch.

use crate::context::Gpu;
use crate::data::{ctype, input, output, DevIn};
use crate::launch::{Args, Grid, Lay};
use crate::ops::elementwise::copy;
use rmlx_core::primitive::{ArgReduceOp, ReduceOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// Templated device code the generated wrappers instantiate (also used by the scans).
pub const CUH: &str = include_str!("../../kernels/reduce.cuh");

/// How threads are assigned to rows (`RMODE_*` in reduce.cuh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Block,
    Warp,
    Thread,
}

impl Mode {
    fn c(self) -> &'static str {
        match self {
            Mode::Block => "RMODE_BLOCK",
            Mode::Warp => "RMODE_WARP",
            Mode::Thread => "RMODE_THREAD",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Mode::Block => "blk",
            Mode::Warp => "wrp",
            Mode::Thread => "thr",
        }
    }
}

/// Which pass of a reduction a kernel is: the whole reduction, the chunk partials (written in
/// the accumulator type), or the reduction of partials into the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Full,
    Part,
    Fin,
}

/// The accumulator C type of dtype `d`, its load functor and its final store functor.
pub fn acc_of(d: Dtype) -> (&'static str, String, String) {
    match d {
        Dtype::F32 => ("float", "LdCast<float>".into(), "StCast<float>".into()),
        Dtype::F16 | Dtype::BF16 => ("float", "LdF".into(), format!("StF<{}>", ctype(d))),
        Dtype::Bool => ("u32", "LdCast<u32>".into(), "StBool".into()),
        Dtype::U8 => ("u32", "LdCast<u32>".into(), "StCast<u8>".into()),
        Dtype::U32 => ("u32", "LdCast<u32>".into(), "StCast<u32>".into()),
        Dtype::I32 => ("i32", "LdCast<i32>".into(), "StCast<i32>".into()),
        Dtype::I64 => ("i64", "LdCast<i64>".into(), "StCast<i64>".into()),
    }
}

/// Bytes of one accumulator value.
fn acc_size(d: Dtype) -> usize {
    if d == Dtype::I64 {
        8
    } else {
        4
    }
}

/// The combining functor of a reduction (`Any`/`All` are max/min, as on the CPU).
pub fn op_functor(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "OpSum",
        ReduceOp::Prod => "OpProd",
        ReduceOp::Max | ReduceOp::Any => "OpMax",
        ReduceOp::Min | ReduceOp::All => "OpMin",
    }
}

/// The identity of `op` on dtype `d`'s accumulator: the CPU's `ZERO`/`ONE`/`LOWEST`/`HIGHEST`
/// of the element type (so an empty reduction stores what the CPU stores).
pub fn identity(op: ReduceOp, d: Dtype) -> &'static str {
    let sum_like = matches!(op, ReduceOp::Sum);
    let prod_like = matches!(op, ReduceOp::Prod);
    let max_like = matches!(op, ReduceOp::Max | ReduceOp::Any);
    match d {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            if sum_like {
                "0.0f"
            } else if prod_like {
                "1.0f"
            } else if max_like {
                "(-__int_as_float(0x7f800000))"
            } else {
                "__int_as_float(0x7f800000)"
            }
        }
        Dtype::Bool | Dtype::U8 => {
            if sum_like || max_like {
                "0u"
            } else if prod_like {
                "1u"
            } else {
                "255u"
            }
        }
        Dtype::U32 => {
            if sum_like || max_like {
                "0u"
            } else if prod_like {
                "1u"
            } else {
                "4294967295u"
            }
        }
        Dtype::I32 => {
            if sum_like {
                "0"
            } else if prod_like {
                "1"
            } else if max_like {
                "(-2147483647 - 1)"
            } else {
                "2147483647"
            }
        }
        Dtype::I64 => {
            if sum_like {
                "0LL"
            } else if prod_like {
                "1LL"
            } else if max_like {
                "(-9223372036854775807LL - 1)"
            } else {
                "9223372036854775807LL"
            }
        }
    }
}

/// The element C type in kernel text: bool is the same C type as u8 (so bool and u8 share
/// kernels where their code is the same).
fn elem(d: Dtype) -> &'static str {
    if d == Dtype::Bool {
        "u8"
    } else {
        ctype(d)
    }
}

/// A kernel name spelling out a template instantiation, so equal code gets one name.
fn inst_name(prefix: &str, targs: &str) -> String {
    let mut n = prefix.to_string();
    for c in targs.chars() {
        match c {
            ' ' => {}
            c if c.is_ascii_alphanumeric() => n.push(c),
            _ => n.push('_'),
        }
    }
    n
}

/// The wrapper kernel of one reduction variant (append to `CUH`): its name and text.
pub fn reduce_wrapper(d: Dtype, op: ReduceOp, stage: Stage, mode: Mode) -> (String, String) {
    let (a, ld, st) = acc_of(d);
    let t = elem(d);
    let (ti, to, ld, st) = match stage {
        Stage::Full => (t, t, ld, st),
        Stage::Part => (t, a, ld, format!("StCast<{a}>")),
        Stage::Fin => (a, t, format!("LdCast<{a}>"), st),
    };
    let init = identity(op, d);
    let targs = format!(
        "{ti}, {a}, {to}, {ld}, {st}, {f}, {m}",
        f = op_functor(op),
        m = mode.c()
    );
    // (the identity follows from these: Any/All share Max/Min's, bool's equal u8's)
    let name = inst_name("red_", &targs);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ti}* __restrict__ x, i64 xo, Lay kl, i64 rs, i64 nrows, i64 nchunk, i64 chunk, i64 R, {to}* __restrict__ y) {{\n  reduce_rows<{targs}>(x, xo, kl, rs, nrows, nchunk, chunk, R, y, ({a})({init}));\n}}\n"
    );
    (name, src)
}

/// The wrapper kernel of one arg-reduction variant (append to `CUH`).
pub fn argreduce_wrapper(d: Dtype, op: ArgReduceOp, mode: Mode) -> (String, String) {
    let (a, ld, _) = acc_of(d);
    let max = op == ArgReduceOp::ArgMax;
    let t = elem(d);
    let name = format!(
        "argred_{}_{}_{}",
        if max { "max" } else { "min" },
        t,
        mode.tag()
    );
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 xo, Lay kl, i64 rs, i64 nrows, i64 R, u32* __restrict__ y) {{\n  argreduce_rows<{t}, {a}, {ld}, {max}, {m}>(x, xo, kl, rs, nrows, R, y);\n}}\n",
        m = mode.c(),
    );
    (name, src)
}

/// The two kernels of a split arg-reduction (few long rows): (split, merge) names and sources.
pub fn argreduce_split_wrappers(d: Dtype, op: ArgReduceOp) -> [(String, String); 2] {
    let (a, ld, _) = acc_of(d);
    let max = op == ArgReduceOp::ArgMax;
    let t = elem(d);
    let mm = if max { "max" } else { "min" };
    let split = format!("argred_split_{mm}_{t}");
    let merge = format!("argred_merge_{mm}_{a}");
    [
        (
            split.clone(),
            format!(
                "extern \"C\" __global__ void __launch_bounds__(256) {split}(const {t}* __restrict__ x, i64 xo, Lay kl, i64 rs, i64 R, i64 chunk, {a}* __restrict__ pv, u32* __restrict__ pi) {{\n  argreduce_split<{t}, {a}, {ld}, {max}>(x, xo, kl, rs, R, chunk, pv, pi);\n}}\n"
            ),
        ),
        (
            merge.clone(),
            format!(
                "extern \"C\" __global__ void {merge}(const {a}* __restrict__ pv, const u32* __restrict__ pi, int nsplit, u32* __restrict__ y) {{\n  argreduce_merge<{a}, {max}>(pv, pi, nsplit, y);\n}}\n"
            ),
        ),
    ]
}

/// Rows at most, and elements per row at least, for which an arg-reduction is split across
/// blocks (one block per row would leave the GPU idle: 59 µs for a 128k vocabulary on an H200).
const SPLIT_ROWS: usize = 64;
const SPLIT_MIN_LEN: usize = 16_384;
/// Elements per block of a split arg-reduction at least.
const SPLIT_CHUNK: usize = 4096;

/// The rows of a reduction as the kernels read them.
struct Rows {
    ptr: u64,
    offset: i64,
    /// Where each row starts (the kept axes).
    kl: Lay,
    /// The stride of a row's elements.
    rs: i64,
    nrows: usize,
    r: usize,
    /// Neighbouring rows are neighbours in memory while a row's elements are not: a thread per
    /// row reads coalesced.
    col: bool,
    _keep: (DevIn, Option<ArrayData>),
}

fn lay_of(x: &ArrayData, ax: &[usize]) -> Result<Lay> {
    let shape: Vec<usize> = ax.iter().map(|&a| x.shape[a]).collect();
    let strides: Vec<isize> = ax.iter().map(|&a| x.strides[a]).collect();
    Lay::new(&shape, &strides)
}

fn rows(gpu: &Arc<Gpu>, x: &ArrayData, red: &[usize]) -> Result<Rows> {
    let nd = x.shape.len();
    let keep: Vec<usize> = (0..nd).filter(|a| !red.contains(a)).collect();
    let nrows: usize = keep.iter().map(|&a| x.shape[a]).product();
    let r: usize = red.iter().map(|&a| x.shape[a]).product();
    if let (Ok(kl), Ok(rl)) = (lay_of(x, &keep), lay_of(x, red)) {
        if rl.ndim <= 1 {
            let rs = if rl.ndim == 1 { rl.strides[0] } else { 1 };
            let col = rs != 1 && kl.ndim >= 1 && kl.strides[kl.ndim as usize - 1] == 1;
            let dev = input(gpu, x)?;
            return Ok(Rows {
                ptr: dev.ptr,
                offset: dev.offset,
                kl,
                rs,
                nrows,
                r,
                col,
                _keep: (dev, None),
            });
        }
    }
    // reduced axes that do not merge into one run: copy with them moved last
    let order: Vec<usize> = keep.iter().chain(red).copied().collect();
    let view = ArrayData {
        shape: order.iter().map(|&a| x.shape[a]).collect(),
        strides: order.iter().map(|&a| x.strides[a]).collect(),
        ..x.clone()
    };
    let c = copy(gpu, &view, x.dtype)?;
    let dev = input(gpu, &c)?;
    Ok(Rows {
        ptr: dev.base(),
        offset: 0,
        kl: Lay::new(&[nrows], &[r as isize])?,
        rs: 1,
        nrows,
        r,
        col: false,
        _keep: (dev, Some(c)),
    })
}

/// Threads per block for block-per-row kernels.
fn block_threads(nrows: usize) -> u32 {
    if nrows >= 1024 {
        256
    } else {
        1024
    }
}

/// Mode for rows of `r` elements.
fn pick_mode(r: usize, col: bool) -> Mode {
    if col || r <= 16 {
        Mode::Thread
    } else if r <= 1024 {
        Mode::Warp
    } else {
        Mode::Block
    }
}

/// Threads working on one row.
fn group(mode: Mode, nrows: usize) -> usize {
    match mode {
        Mode::Thread => 1,
        Mode::Warp => 32,
        Mode::Block => block_threads(nrows) as usize,
    }
}

fn grid(mode: Mode, jobs: usize, nrows: usize) -> Grid {
    match mode {
        Mode::Thread => Grid::elems(jobs),
        Mode::Warp => Grid::rows(jobs.div_ceil(8), 256),
        Mode::Block => Grid::rows(jobs, block_threads(nrows)),
    }
}

/// Enough threads in flight to keep an H100 busy.
const TARGET_WORKERS: usize = 1 << 17;

/// The chunk count rows are cut into (1: no split).
fn chunks(mode: Mode, nrows: usize, r: usize) -> (usize, usize) {
    let g = group(mode, nrows);
    let workers = nrows * g;
    if nrows * r < (1 << 16) || workers >= TARGET_WORKERS {
        return (1, r);
    }
    let min_chunk = match mode {
        Mode::Thread => 256,
        Mode::Warp => 1024,
        Mode::Block => 8 * g,
    };
    let chunk = r.div_ceil(TARGET_WORKERS.div_ceil(workers)).max(min_chunk);
    let n = r.div_ceil(chunk);
    if n <= 1 {
        (1, r)
    } else {
        (n, chunk)
    }
}

#[allow(clippy::too_many_arguments)]
fn launch_reduce(
    gpu: &Arc<Gpu>,
    d: Dtype,
    op: ReduceOp,
    stage: Stage,
    mode: Mode,
    src: (u64, i64, Lay, i64),
    nrows: usize,
    nchunk: usize,
    chunk: usize,
    r: usize,
    y: u64,
) -> Result<()> {
    let (ptr, xo, kl, rs) = src;
    let (name, body) = reduce_wrapper(d, op, stage, mode);
    let f = gpu
        .kernels
        .get(&gpu.ctx, &name, &format!("{CUH}\n{body}"))?;
    let mut a = Args::new();
    a.ptr(ptr)
        .i64(xo)
        .push(kl)
        .i64(rs)
        .i64(nrows as i64)
        .i64(nchunk as i64)
        .i64(chunk as i64)
        .i64(r as i64)
        .ptr(y);
    gpu.launch(&f, &name, grid(mode, nrows * nchunk, nrows), &mut a)
}

/// `Primitive::Reduce`: `x` reduced over `axes` into `shape` (those axes kept with size 1);
/// the output dtype is the input's.
pub fn reduce(
    gpu: &Arc<Gpu>,
    x: &ArrayData,
    op: ReduceOp,
    axes: &[usize],
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    if x.dtype != od {
        return Err(Error::runtime(
            "cuda",
            format!("reduce: input {} and output {} differ", x.dtype, od),
        ));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= x.shape.len()) {
        return Err(Error::invalid(
            "reduce",
            format!("axis {a} out of range for {} dimensions", x.shape.len()),
        ));
    }
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rw = rows(gpu, x, axes)?;
    let (nrows, r) = (rw.nrows, rw.r);
    let src = (rw.ptr, rw.offset, rw.kl, rw.rs);
    let mode = pick_mode(r, rw.col);
    let (nchunk, chunk) = chunks(mode, nrows, r);
    if nchunk == 1 {
        launch_reduce(gpu, od, op, Stage::Full, mode, src, nrows, 1, r, r, yptr)?;
        return Ok(out);
    }
    // pass 1: chunk partials [nrows, nchunk] in the accumulator type
    let part = gpu.alloc.alloc(nrows * nchunk * acc_size(od))?;
    launch_reduce(
        gpu,
        od,
        op,
        Stage::Part,
        mode,
        src,
        nrows,
        nchunk,
        chunk,
        r,
        part.ptr,
    )?;
    // pass 2: rows of nchunk contiguous partials
    let kl = Lay::new(&[nrows], &[nchunk as isize])?;
    let mode2 = pick_mode(nchunk, false);
    let src2 = (part.ptr, 0, kl, 1);
    launch_reduce(
        gpu,
        od,
        op,
        Stage::Fin,
        mode2,
        src2,
        nrows,
        1,
        nchunk,
        nchunk,
        yptr,
    )?;
    // the stream orders later reuse of `part` after pass 2
    drop(part);
    Ok(out)
}

/// `Primitive::ArgReduce`: u32 index of the max/min along `axis` (kept with size 1); the first
/// NaN wins, ties keep the first index.
pub fn arg_reduce(
    gpu: &Arc<Gpu>,
    x: &ArrayData,
    op: ArgReduceOp,
    axis: usize,
    shape: &[usize],
) -> Result<ArrayData> {
    if axis >= x.shape.len() {
        return Err(Error::invalid(
            "argreduce",
            format!("axis {axis} out of range for {} dimensions", x.shape.len()),
        ));
    }
    let (out, yptr) = output(gpu, shape, Dtype::U32)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if x.shape[axis] == 0 {
        return Err(Error::invalid(
            "argreduce",
            "cannot reduce over an axis of size 0",
        ));
    }
    if x.shape[axis] > u32::MAX as usize {
        return Err(Error::invalid(
            "argreduce",
            format!(
                "an axis of {} elements does not fit u32 indices",
                x.shape[axis]
            ),
        ));
    }
    let rw = rows(gpu, x, &[axis])?;
    if rw.nrows <= SPLIT_ROWS && rw.r >= SPLIT_MIN_LEN && !rw.col {
        let nsplit = rw.r.div_ceil(SPLIT_CHUNK).min(256);
        let chunk = rw.r.div_ceil(nsplit);
        let [(sname, sbody), (mname, mbody)] = argreduce_split_wrappers(x.dtype, op);
        let pv = gpu.alloc.alloc(rw.nrows * nsplit * acc_size(x.dtype))?;
        let pi = gpu.alloc.alloc(rw.nrows * nsplit * 4)?;
        let f = gpu
            .kernels
            .get(&gpu.ctx, &sname, &format!("{CUH}\n{sbody}"))?;
        let mut a = Args::new();
        a.ptr(rw.ptr)
            .i64(rw.offset)
            .push(rw.kl)
            .i64(rw.rs)
            .i64(rw.r as i64)
            .i64(chunk as i64)
            .ptr(pv.ptr)
            .ptr(pi.ptr);
        let g = Grid {
            grid: (rw.nrows as u32, nsplit as u32, 1),
            block: (256, 1, 1),
            shared: 0,
        };
        gpu.launch(&f, &sname, g, &mut a)?;
        let f = gpu
            .kernels
            .get(&gpu.ctx, &mname, &format!("{CUH}\n{mbody}"))?;
        let mut a = Args::new();
        a.ptr(pv.ptr).ptr(pi.ptr).i32(nsplit as i32).ptr(yptr);
        gpu.launch(&f, &mname, Grid::rows(rw.nrows, 32), &mut a)?;
        // later work on this stream is ordered after the merge
        drop((pv, pi));
        return Ok(out);
    }
    let mode = pick_mode(rw.r, rw.col);
    let (name, body) = argreduce_wrapper(x.dtype, op, mode);
    let f = gpu
        .kernels
        .get(&gpu.ctx, &name, &format!("{CUH}\n{body}"))?;
    let mut a = Args::new();
    a.ptr(rw.ptr)
        .i64(rw.offset)
        .push(rw.kl)
        .i64(rw.rs)
        .i64(rw.nrows as i64)
        .i64(rw.r as i64)
        .ptr(yptr);
    gpu.launch(&f, &name, grid(mode, rw.nrows, rw.nrows), &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    #[test]
    fn split_plans_cover_rows() {
        for (mode, nrows, r) in [
            (Mode::Block, 1, 152_064),
            (Mode::Block, 1, 100_000_000),
            (Mode::Thread, 512, 100_000),
            (Mode::Thread, 2, 1_000_000),
            (Mode::Warp, 1, 1000),
        ] {
            let (n, c) = chunks(mode, nrows, r);
            assert!(
                n * c >= r && (n - 1) * c < r,
                "{mode:?} {nrows} {r}: {n} x {c}"
            );
        }
        assert_eq!(chunks(Mode::Warp, 1, 1000), (1, 1000));
    }

    /// Every reduction kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn reduce_kernels_compile() {
        let mut kernels = std::collections::BTreeMap::new();
        for d in Dtype::ALL {
            for m in [Mode::Block, Mode::Warp, Mode::Thread] {
                for op in [
                    ReduceOp::Sum,
                    ReduceOp::Prod,
                    ReduceOp::Max,
                    ReduceOp::Min,
                    ReduceOp::Any,
                    ReduceOp::All,
                ] {
                    for st in [Stage::Full, Stage::Part, Stage::Fin] {
                        let (n, s) = reduce_wrapper(d, op, st, m);
                        if let Some(old) = kernels.insert(n.clone(), s.clone()) {
                            assert_eq!(old, s, "{n} names two different kernels");
                        }
                    }
                }
                for op in [ArgReduceOp::ArgMax, ArgReduceOp::ArgMin] {
                    let (n, s) = argreduce_wrapper(d, op, m);
                    kernels.insert(n, s);
                    for (n, s) in argreduce_split_wrappers(d, op) {
                        kernels.insert(n, s);
                    }
                }
            }
        }
        let body: String = kernels.into_values().collect();
        assert_compiles("reduce_all", &format!("{CUH}\n{body}"));
    }

    // ---- on a GPU: the reduce/softmax/scan/sort family against plain references ----

    use rmlx_core::primitive::ScanOp;
    use rmlx_core::Buffer;

    fn host(bytes: Vec<u8>, shape: &[usize], d: Dtype) -> ArrayData {
        let mut b = Buffer::alloc(bytes.len()).unwrap();
        b.as_mut_slice().copy_from_slice(&bytes);
        ArrayData::contiguous(Arc::new(b), shape, d)
    }
    fn f32a(v: &[f32], shape: &[usize]) -> ArrayData {
        host(
            v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            shape,
            Dtype::F32,
        )
    }
    fn i32a(v: &[i32], shape: &[usize]) -> ArrayData {
        host(
            v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            shape,
            Dtype::I32,
        )
    }
    fn i64a(v: &[i64], shape: &[usize]) -> ArrayData {
        host(
            v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            shape,
            Dtype::I64,
        )
    }
    fn u8a(v: &[u8], shape: &[usize], d: Dtype) -> ArrayData {
        host(v.to_vec(), shape, d)
    }
    fn back(a: &ArrayData) -> Vec<u8> {
        let n = a.numel() * a.dtype.size();
        a.buffer.as_slice()[..n].to_vec()
    }
    fn f32s(a: &ArrayData) -> Vec<f32> {
        back(a)
            .chunks(4)
            .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn u32s(a: &ArrayData) -> Vec<u32> {
        back(a)
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn i32s(a: &ArrayData) -> Vec<i32> {
        back(a)
            .chunks(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn i64s(a: &ArrayData) -> Vec<i64> {
        back(a)
            .chunks(8)
            .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }
    /// Transposed view of a 2-D contiguous array.
    fn tr(a: &ArrayData) -> ArrayData {
        ArrayData {
            shape: [a.shape[1], a.shape[0]].into_iter().collect(),
            strides: [a.strides[1], a.strides[0]].into_iter().collect(),
            ..a.clone()
        }
    }
    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) % 20001) as f32 / 1000.0 - 10.0
            })
            .collect()
    }
    fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
            assert!(ok, "{what}: [{i}] got {g} want {w}");
        }
    }
    fn red_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
        shape
            .iter()
            .enumerate()
            .map(|(i, &n)| if axes.contains(&i) { 1 } else { n })
            .collect()
    }
    /// Reference reduction of a 2-D/3-D f32 row-major array over `axes` (f64 sum).
    fn ref_sum(v: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f32> {
        let os = red_shape(shape, axes);
        let on: usize = os.iter().product();
        let mut acc = vec![0f64; on];
        let nd = shape.len();
        for (i, &x) in v.iter().enumerate() {
            let mut rem = i;
            let mut idx = vec![0; nd];
            for d in (0..nd).rev() {
                idx[d] = rem % shape[d];
                rem /= shape[d];
            }
            let mut o = 0;
            for d in 0..nd {
                o = o * os[d] + if axes.contains(&d) { 0 } else { idx[d] };
            }
            acc[o] += x as f64;
        }
        acc.into_iter().map(|a| a as f32).collect()
    }

    #[test]
    fn gpu_family_matches_reference() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let g = crate::context::gpu(0).unwrap();
        // sums: block, split block, thread rows, warp rows, columns (split), non-merging axes
        for (shape, axes) in [
            (vec![3, 5000], vec![1]),
            (vec![1, 200_000], vec![1]),
            (vec![4096, 7], vec![1]),
            (vec![64, 300], vec![1]),
            (vec![3000, 64], vec![0]),
            (vec![300_000, 3], vec![0]),
            (vec![8, 5, 9], vec![0, 2]),
            (vec![8, 5, 9], vec![0, 1, 2]),
            (vec![8, 5, 9], vec![]),
        ] {
            let n: usize = shape.iter().product();
            let v = lcg(n, 7);
            let x = f32a(&v, &shape);
            let os = red_shape(&shape, &axes);
            let y = reduce(&g, &x, ReduceOp::Sum, &axes, &os, Dtype::F32).unwrap();
            close(
                &f32s(&y),
                &ref_sum(&v, &shape, &axes),
                1e-4,
                &format!("sum {shape:?} {axes:?}"),
            );
        }
        // sum over axis 0 of a transposed (strided) input
        let v = lcg(50 * 70, 3);
        let x = tr(&f32a(&v, &[50, 70]));
        let y = reduce(&g, &x, ReduceOp::Sum, &[1], &[70, 1], Dtype::F32).unwrap();
        close(
            &f32s(&y),
            &ref_sum(&v, &[50, 70], &[0]),
            1e-4,
            "sum transposed",
        );
        // max with NaN, min, empty
        let mut v = lcg(3 * 2000, 5);
        v[2000 + 1234] = f32::NAN;
        let x = f32a(&v, &[3, 2000]);
        let y = f32s(&reduce(&g, &x, ReduceOp::Max, &[1], &[3, 1], Dtype::F32).unwrap());
        let want: Vec<f32> = (0..3)
            .map(|r| {
                v[r * 2000..(r + 1) * 2000]
                    .iter()
                    .cloned()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        assert!(
            y[1].is_nan() && y[0] == want[0] && y[2] == want[2],
            "max {y:?} {want:?}"
        );
        let y = f32s(
            &reduce(
                &g,
                &f32a(&[], &[2, 0]),
                ReduceOp::Min,
                &[1],
                &[2, 1],
                Dtype::F32,
            )
            .unwrap(),
        );
        assert_eq!(y, vec![f32::INFINITY; 2]);
        // integer wrapping
        let vi: Vec<i32> = (0..100_000i32)
            .map(|i| i.wrapping_mul(40_000) - 7)
            .collect();
        let y = i32s(
            &reduce(
                &g,
                &i32a(&vi, &[100_000]),
                ReduceOp::Sum,
                &[0],
                &[1],
                Dtype::I32,
            )
            .unwrap(),
        );
        assert_eq!(
            y[0],
            vi.iter().fold(0i32, |a, &b| a.wrapping_add(b)),
            "i32 sum"
        );
        let vl: Vec<i64> = (1..=40).map(|i| i * 3 - 50).collect();
        let y = i64s(
            &reduce(
                &g,
                &i64a(&vl, &[40]),
                ReduceOp::Prod,
                &[0],
                &[1],
                Dtype::I64,
            )
            .unwrap(),
        );
        assert_eq!(
            y[0],
            vl.iter().fold(1i64, |a, &b| a.wrapping_mul(b)),
            "i64 prod"
        );
        let vb: Vec<u8> = (0..1000).map(|i| (i % 3 == 0) as u8).collect();
        let y = back(
            &reduce(
                &g,
                &u8a(&vb, &[1000], Dtype::U8),
                ReduceOp::Sum,
                &[0],
                &[1],
                Dtype::U8,
            )
            .unwrap(),
        );
        assert_eq!(
            y[0],
            vb.iter().fold(0u8, |a, &b| a.wrapping_add(b)),
            "u8 sum"
        );
        let y = back(
            &reduce(
                &g,
                &u8a(&vb, &[10, 100], Dtype::Bool),
                ReduceOp::All,
                &[1],
                &[10, 1],
                Dtype::Bool,
            )
            .unwrap(),
        );
        assert_eq!(y, vec![0u8; 10], "all");
        let y = back(
            &reduce(
                &g,
                &u8a(&vb, &[10, 100], Dtype::Bool),
                ReduceOp::Any,
                &[1],
                &[10, 1],
                Dtype::Bool,
            )
            .unwrap(),
        );
        assert_eq!(y, vec![1u8; 10], "any");
        // argmax / argmin: ties keep the first, first NaN wins
        let mut v = lcg(2 * 100_000, 9);
        v[77] = 100.0;
        v[99_000] = 100.0;
        v[100_000 + 500] = f32::NAN;
        v[100_000 + 700] = f32::NAN;
        let x = f32a(&v, &[2, 100_000]);
        let y = u32s(&arg_reduce(&g, &x, ArgReduceOp::ArgMax, 1, &[2, 1]).unwrap());
        assert_eq!(y, vec![77, 500], "argmax");
        // the split path's merge across blocks: equal minima in different blocks keep the
        // first; a bf16 row as a decode step's logits
        let mut v = lcg(50_000, 5);
        v[40_000] = -50.0; // lcg values lie in [-10, 10]
        v[9_000] = -50.0;
        let x = f32a(&v, &[1, 50_000]);
        let y = u32s(&arg_reduce(&g, &x, ArgReduceOp::ArgMin, 1, &[1, 1]).unwrap());
        assert_eq!(y, vec![9_000], "split argmin");
        let xb = crate::ops::elementwise::copy(&g, &x, Dtype::BF16).unwrap();
        let y = u32s(&arg_reduce(&g, &xb, ArgReduceOp::ArgMin, 1, &[1, 1]).unwrap());
        assert_eq!(y, vec![9_000], "split argmin bf16");
        let v = lcg(1000 * 3, 11);
        let x = f32a(&v, &[1000, 3]);
        let y = u32s(&arg_reduce(&g, &x, ArgReduceOp::ArgMin, 0, &[1, 3]).unwrap());
        for c in 0..3 {
            let col: Vec<f32> = (0..1000).map(|r| v[r * 3 + c]).collect();
            let mut bi = 0;
            for (i, &c) in col.iter().enumerate() {
                if c < col[bi] {
                    bi = i;
                }
            }
            assert_eq!(y[c] as usize, bi, "argmin col {c}");
        }
        // softmax / logsumexp
        for (rows, n) in [(3usize, 152_064usize), (100, 50), (2, 3000)] {
            let v = lcg(rows * n, 13);
            let x = f32a(&v, &[rows, n]);
            let y = f32s(&crate::ops::softmax::softmax(&g, &x).unwrap());
            let l = f32s(&crate::ops::softmax::logsumexp(&g, &x, &[rows, 1]).unwrap());
            let mut want = vec![];
            let mut wl = vec![];
            for r in 0..rows {
                let row = &v[r * n..(r + 1) * n];
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let s: f64 = row.iter().map(|&t| (t as f64 - m).exp()).sum();
                want.extend(row.iter().map(|&t| ((t as f64 - m).exp() / s) as f32));
                wl.push((m + s.ln()) as f32);
            }
            close(&y, &want, 1e-5, "softmax");
            close(&l, &wl, 1e-5, "logsumexp");
        }
        let y = f32s(
            &crate::ops::softmax::logsumexp(&g, &f32a(&[f32::NEG_INFINITY; 4], &[2, 2]), &[2, 1])
                .unwrap(),
        );
        assert_eq!(y, vec![f32::NEG_INFINITY; 2]);
        // scans
        for (rows, n) in [(2usize, 10_000usize), (5, 3), (1, 4097)] {
            let v = lcg(rows * n, 17);
            let x = f32a(&v, &[rows, n]);
            for rev in [false, true] {
                for inc in [false, true] {
                    let y = f32s(
                        &crate::ops::scan::scan(&g, &x, ScanOp::Sum, 1, rev, inc, Dtype::F32)
                            .unwrap(),
                    );
                    let mut want = vec![0f32; rows * n];
                    for r in 0..rows {
                        let mut acc = 0f64;
                        for s in 0..n {
                            let k = if rev { n - 1 - s } else { s };
                            let nx = acc + v[r * n + k] as f64;
                            want[r * n + k] = if inc { nx } else { acc } as f32;
                            acc = nx;
                        }
                    }
                    close(
                        &y,
                        &want,
                        2e-4,
                        &format!("cumsum {rows}x{n} rev {rev} inc {inc}"),
                    );
                }
            }
            let y = f32s(
                &crate::ops::scan::scan(&g, &x, ScanOp::Max, 1, false, true, Dtype::F32).unwrap(),
            );
            let mut want = vec![];
            for r in 0..rows {
                let mut m = f32::NEG_INFINITY;
                for s in 0..n {
                    m = m.max(v[r * n + s]);
                    want.push(m);
                }
            }
            assert_eq!(y, want, "cummax");
        }
        let vi: Vec<i32> = (0..50 * 7)
            .map(|i: i64| (i * 100_000_007 % 1000) as i32 - 500)
            .collect();
        let y = i32s(
            &crate::ops::scan::scan(
                &g,
                &i32a(&vi, &[50, 7]),
                ScanOp::Prod,
                0,
                true,
                false,
                Dtype::I32,
            )
            .unwrap(),
        );
        for c in 0..7 {
            let mut acc = 1i32;
            for r in (0..50).rev() {
                assert_eq!(y[r * 7 + c], acc, "cumprod col {c} row {r}");
                acc = acc.wrapping_mul(vi[r * 7 + c]);
            }
        }
        // sorts: small and global lanes, NaN last, -0 == +0, stable
        for (rows, n) in [
            (3usize, 1000usize),
            (2, 152_064),
            (4, 4096),
            (3, 4097),
            (7, 1),
        ] {
            let mut v: Vec<f32> = lcg(rows * n, 19)
                .iter()
                .map(|x| (x * 10.0).round() / 10.0)
                .collect();
            if n > 10 {
                v[5] = f32::NAN;
                v[n - 2] = -0.0;
                v[3] = 0.0;
                v[n - 1] = f32::NAN;
            }
            let x = f32a(&v, &[rows, n]);
            let ix = u32s(&crate::ops::sort::argsort(&g, &x, 1).unwrap());
            let sv = f32s(&crate::ops::sort::sort(&g, &x, 1).unwrap());
            for r in 0..rows {
                let row = &v[r * n..(r + 1) * n];
                let mut want: Vec<u32> = (0..n as u32).collect();
                want.sort_by(|&a, &b| {
                    let (x, y) = (row[a as usize], row[b as usize]);
                    x.partial_cmp(&y)
                        .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
                });
                assert_eq!(
                    &ix[r * n..(r + 1) * n],
                    &want[..],
                    "argsort {rows}x{n} row {r}"
                );
                let wv: Vec<u32> = want.iter().map(|&i| row[i as usize].to_bits()).collect();
                let gv: Vec<u32> = sv[r * n..(r + 1) * n].iter().map(|x| x.to_bits()).collect();
                assert_eq!(gv, wv, "sort values {rows}x{n} row {r}");
            }
        }
        // i64 keys (It64; 3000 > 2048 takes the global path), along axis 0 (strided lanes)
        let vl: Vec<i64> = (0..3000 * 2)
            .map(|i: i64| (i * 7_919_000_000_007) % 1_000_003 - 500_000)
            .collect();
        let x = i64a(&vl, &[3000, 2]);
        let ix = u32s(&crate::ops::sort::argsort(&g, &x, 0).unwrap());
        let sv = i64s(&crate::ops::sort::sort(&g, &x, 0).unwrap());
        for c in 0..2 {
            let mut want: Vec<u32> = (0..3000).collect();
            want.sort_by_key(|&i| vl[i as usize * 2 + c]);
            let got: Vec<u32> = (0..3000).map(|r| ix[r * 2 + c]).collect();
            assert_eq!(got, want, "i64 argsort col {c}");
            let gv: Vec<i64> = (0..3000).map(|r| sv[r * 2 + c]).collect();
            let wv: Vec<i64> = want.iter().map(|&i| vl[i as usize * 2 + c]).collect();
            assert_eq!(gv, wv, "i64 sort col {c}");
        }
        g.synchronize().unwrap();
    }

    fn gpu_lookup(g: &Arc<Gpu>, name: &str, src: &str) {
        g.kernels.get(&g.ctx, name, src).unwrap();
    }

    /// Prints decode-sized timings (no assertion): `cargo test gpu_family_timing -- --nocapture`.
    #[test]
    fn gpu_family_timing() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let g = crate::context::gpu(0).unwrap();
        let v = lcg(152_064 * 8, 1);
        let x1 = f32a(&v[..152_064], &[1, 152_064]);
        let x8 = f32a(&v, &[8, 152_064]);
        let big = f32a(&lcg(1 << 24, 2), &[1 << 24]);
        let time = |what: &str, f: &dyn Fn() -> ArrayData| {
            for _ in 0..3 {
                f();
            }
            g.synchronize().unwrap();
            let t = std::time::Instant::now();
            let reps = 50;
            for _ in 0..reps {
                f();
            }
            g.synchronize().unwrap();
            eprintln!(
                "{what}: {:.1} us",
                t.elapsed().as_secs_f64() * 1e6 / reps as f64
            );
        };
        {
            let (name, body) = crate::ops::softmax::wrapper(Dtype::F32, false, false);
            let src = format!("{}\n{body}", include_str!("../../kernels/softmax.cuh"));
            let f = || gpu_lookup(&g, &name, &src);
            f();
            let t = std::time::Instant::now();
            for _ in 0..1000 {
                f();
            }
            eprintln!(
                "kernel lookup (softmax): {:.1} us",
                t.elapsed().as_secs_f64() * 1e3
            );
            let t = std::time::Instant::now();
            for _ in 0..100 {
                let (o, _) = crate::data::output(&g, &[152_064], Dtype::F32).unwrap();
                drop(o);
            }
            eprintln!("output alloc: {:.1} us", t.elapsed().as_secs_f64() * 1e4);
        }
        time("argmax [1,152064]", &|| {
            arg_reduce(&g, &x1, ArgReduceOp::ArgMax, 1, &[1, 1]).unwrap()
        });
        time("sum [1,152064]", &|| {
            reduce(&g, &x1, ReduceOp::Sum, &[1], &[1, 1], Dtype::F32).unwrap()
        });
        time("sum [16M] (64 MiB)", &|| {
            reduce(&g, &big, ReduceOp::Sum, &[0], &[1], Dtype::F32).unwrap()
        });
        time("sum [8,152064] axis 0", &|| {
            reduce(&g, &x8, ReduceOp::Sum, &[0], &[1, 152_064], Dtype::F32).unwrap()
        });
        time("softmax [1,152064]", &|| {
            crate::ops::softmax::softmax(&g, &x1).unwrap()
        });
        time("softmax [8,152064]", &|| {
            crate::ops::softmax::softmax(&g, &x8).unwrap()
        });
        time("cumsum [1,152064]", &|| {
            crate::ops::scan::scan(&g, &x1, ScanOp::Sum, 1, false, true, Dtype::F32).unwrap()
        });
        time("argsort [1,152064]", &|| {
            crate::ops::sort::argsort(&g, &x1, 1).unwrap()
        });
        time("argsort [8,152064]", &|| {
            crate::ops::sort::argsort(&g, &x8, 1).unwrap()
        });
        let xs = f32a(&v[..4096 * 64], &[64, 4096]);
        time("argsort [64,4096]", &|| {
            crate::ops::sort::argsort(&g, &xs, 1).unwrap()
        });
    }
}
