//! `gather_mm` and `gather_qmm` on the CPU (mixture-of-experts products).
//!
//! Consecutive index entries that pick the same weight matrix form one *run*: their rows of `x`
//! are stacked into one `[rows, K]` matrix and multiplied once, so each expert's weights are
//! streamed once per run (with sorted indices, once per call). The runs' outputs are
//! consecutive rows of the result, so they are written in place. A single-row run goes to the
//! int8-activation decode kernel, a long one to the dequantize-and-GEMM prefill kernel
//! (`quantized::matmul_one` picks).

use crate::copy::{contiguous, out_slice_mut};
use crate::quantized::{matmul_one, qmv::Packed};
use gemm::Parallelism;
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Element};
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::ops::Range;

/// Multiply-adds below which a run's float GEMM stays on one thread (runs then go parallel).
const PAR_RUN_FLOPS: usize = 64 * 64 * 64;

/// Reads a u32 index array and checks every entry against the batch it indexes.
fn indices(op: &'static str, what: &str, a: &ArrayData, len: usize) -> Result<Vec<usize>> {
    let v = contiguous::<u32>(a);
    if let Some(bad) = v.iter().find(|&&i| i as usize >= len) {
        return Err(Error::invalid(
            op,
            format!("{what} holds {bad}, out of range for a batch of {len} matrices"),
        ));
    }
    Ok(v.iter().map(|&i| i as usize).collect())
}

/// Runs of equal consecutive `rhs` entries, as ranges of entries.
fn runs(rhs: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut s = 0;
    for i in 1..=rhs.len() {
        if i == rhs.len() || rhs[i] != rhs[s] {
            out.push(s..i);
            s = i;
        }
    }
    out
}

/// Splits `out` (row-major `[B, rows_per, n]`) into one slice per run.
fn run_slices<'a>(mut out: &'a mut [f32], runs: &[Range<usize>], per: usize) -> Vec<&'a mut [f32]> {
    let mut v = Vec::with_capacity(runs.len());
    for r in runs {
        let (a, b) = out.split_at_mut(r.len() * per);
        v.push(a);
        out = b;
    }
    v
}

/// `x: [Bx, M, K]` as contiguous f32.
fn x_f32(op: &'static str, x: &ArrayData) -> Result<Vec<f32>> {
    Ok(match x.dtype {
        Dtype::F32 => contiguous::<f32>(x).into_owned(),
        Dtype::F16 => contiguous::<f16>(x).iter().map(|v| v.to_f32()).collect(),
        Dtype::BF16 => contiguous::<bf16>(x).iter().map(|v| v.to_f32()).collect(),
        d => return Err(Error::dtype(op, format!("expected float x, got {d}"))),
    })
}

/// Stacks the `[m, k]` blocks `x[lhs[i]]` of one run.
fn stack_rows<'a>(xf: &'a [f32], lhs: &[usize], mk: usize) -> std::borrow::Cow<'a, [f32]> {
    if lhs.len() == 1 || lhs.windows(2).all(|p| p[1] == p[0] + 1) {
        let s = lhs[0] * mk;
        return std::borrow::Cow::Borrowed(&xf[s..s + lhs.len() * mk]);
    }
    let mut v = Vec::with_capacity(lhs.len() * mk);
    for &l in lhs {
        v.extend_from_slice(&xf[l * mk..(l + 1) * mk]);
    }
    std::borrow::Cow::Owned(v)
}

/// Writes the f32 results into the output dtype.
fn finish(res: Vec<f32>, out: &OutputSpec, op: &'static str) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    match out.dtype {
        Dtype::F32 => out_slice_mut::<f32>(&mut o).copy_from_slice(&res),
        Dtype::F16 => write_as::<f16>(&mut o, &res),
        Dtype::BF16 => write_as::<bf16>(&mut o, &res),
        d => return Err(Error::dtype(op, format!("cannot produce {d}"))),
    }
    Ok(o)
}

fn write_as<D: Element>(o: &mut ArrayData, res: &[f32]) {
    for (d, v) in out_slice_mut::<D>(o).iter_mut().zip(res) {
        *d = D::from_f32(*v);
    }
}

/// `[x, wq, scales, biases, lhs, rhs]` → `[B, M, N]` (see `Primitive::GatherQmm`).
pub fn gather_qmm(
    x: &[ArrayData],
    group_size: usize,
    bits: usize,
    transpose: bool,
    exact: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    const OP: &str = "gather_qmm";
    let (xa, wa) = (&x[0], &x[1]);
    let (bx, m, k) = (xa.shape[0], xa.shape[1], xa.shape[2]);
    let (e, rows_w) = (wa.shape[0], wa.shape[1]);
    let row_len = wa.shape[2] * 32 / bits;
    let n = out.shape[2];
    let lhs = indices(OP, "lhs_indices", &x[4], bx)?;
    let rhs = indices(OP, "rhs_indices", &x[5], e)?;
    let xf = x_f32(OP, xa)?;
    let wq = contiguous::<u32>(wa);
    let mut res = vec![0f32; lhs.len() * m * n];
    let rs = runs(&rhs);
    macro_rules! go {
        ($S:ty) => {{
            let (s, b) = (contiguous::<$S>(&x[2]), contiguous::<$S>(&x[3]));
            let (wsz, ssz) = (wq.len() / e.max(1), s.len() / e.max(1));
            let one = |r: &Range<usize>, o: &mut [f32]| {
                let ex = rhs[r.start];
                let w = Packed {
                    wq: &wq[ex * wsz..(ex + 1) * wsz],
                    scales: &s[ex * ssz..(ex + 1) * ssz],
                    biases: &b[ex * ssz..(ex + 1) * ssz],
                    n: rows_w,
                    k: row_len,
                    group_size,
                    bits,
                };
                let xs = stack_rows(&xf, &lhs[r.clone()], m * k);
                matmul_one(&xs, r.len() * m, &w, transpose, exact, o);
            };
            let outs = run_slices(&mut res, &rs, m * n);
            // the kernels split large matrices over threads themselves; many small runs
            // (decode of tiny experts, unsorted prefill) run side by side instead
            if rs.len() > 1 {
                rs.par_iter().zip(outs).for_each(|(r, o)| one(r, o));
            } else {
                rs.iter().zip(outs).for_each(|(r, o)| one(r, o));
            }
        }};
    }
    if m > 0 && n > 0 && k > 0 {
        match x[2].dtype {
            Dtype::F32 => go!(f32),
            Dtype::F16 => go!(f16),
            Dtype::BF16 => go!(bf16),
            d => return Err(Error::dtype(OP, format!("expected float scales, got {d}"))),
        }
    }
    finish(res, out, OP)
}

/// One matrix of `b: [Bb, K, N]` as f32 with its row and column strides: the f32 buffer in
/// place (a transposed view of `[E, N, K]` weights is read as it is), other dtypes converted.
fn b_matrix<'a>(b: &'a ArrayData, i: usize) -> (std::borrow::Cow<'a, [f32]>, isize, isize) {
    let (kk, n) = (b.shape[1], b.shape[2]);
    let (rs, cs) = (b.strides[1], b.strides[2]);
    let base = b.offset as isize + i as isize * b.strides[0];
    if b.dtype == Dtype::F32 {
        let all = b.buffer_as::<f32>();
        // the slice starts at the matrix's first element (strides are non-negative views)
        return (std::borrow::Cow::Borrowed(&all[base as usize..]), rs, cs);
    }
    fn conv<T: Element>(b: &ArrayData, base: isize, kk: usize, n: usize) -> Vec<f32> {
        let all = b.buffer_as::<T>();
        let (rs, cs) = (b.strides[1], b.strides[2]);
        let mut v = Vec::with_capacity(kk * n);
        for r in 0..kk as isize {
            for c in 0..n as isize {
                v.push(all[(base + r * rs + c * cs) as usize].to_f32());
            }
        }
        v
    }
    let v = match b.dtype {
        Dtype::F16 => conv::<f16>(b, base, kk, n),
        _ => conv::<bf16>(b, base, kk, n),
    };
    (std::borrow::Cow::Owned(v), n as isize, 1)
}

/// `[a, b, lhs, rhs]` → `[B, M, N]` (see `Primitive::GatherMm`).
pub fn gather_mm(x: &[ArrayData], out: &OutputSpec) -> Result<ArrayData> {
    const OP: &str = "gather_mm";
    let (aa, ba) = (&x[0], &x[1]);
    let (bx, m, k) = (aa.shape[0], aa.shape[1], aa.shape[2]);
    let (e, n) = (ba.shape[0], ba.shape[2]);
    if !matches!(ba.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(Error::dtype(
            OP,
            format!("expected float b, got {}", ba.dtype),
        ));
    }
    if ba.strides.iter().any(|&s| s < 0) {
        return Err(Error::runtime(
            OP,
            "the CPU kernel expects non-negative strides",
        ));
    }
    let lhs = indices(OP, "lhs_indices", &x[2], bx)?;
    let rhs = indices(OP, "rhs_indices", &x[3], e)?;
    let af = x_f32(OP, aa)?;
    let mut res = vec![0f32; lhs.len() * m * n];
    let rs = runs(&rhs);
    let one = |r: &Range<usize>, o: &mut [f32], par: Parallelism| {
        let (bm, b_rs, b_cs) = b_matrix(ba, rhs[r.start]);
        let xs = stack_rows(&af, &lhs[r.clone()], m * k);
        let rows = r.len() * m;
        // SAFETY: `xs` holds rows·k elements, `o` rows·n; `bm` starts at the matrix's first
        // element and every `p·b_rs + j·b_cs` (p < k, j < n) lies inside the view the core
        // built (or inside the converted copy).
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                o.as_mut_ptr(),
                1,
                n as isize,
                false,
                xs.as_ptr(),
                1,
                k as isize,
                bm.as_ptr(),
                b_cs,
                b_rs,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        }
    };
    if m > 0 && n > 0 && k > 0 {
        let outs = run_slices(&mut res, &rs, m * n);
        let big = rs.iter().any(|r| r.len() * m * n * k >= PAR_RUN_FLOPS);
        if big || rs.len() == 1 {
            let par = if big {
                Parallelism::Rayon(0)
            } else {
                Parallelism::None
            };
            rs.iter().zip(outs).for_each(|(r, o)| one(r, o, par));
        } else {
            rs.par_iter()
                .zip(outs)
                .for_each(|(r, o)| one(r, o, Parallelism::None));
        }
    }
    finish(res, out, OP)
}
