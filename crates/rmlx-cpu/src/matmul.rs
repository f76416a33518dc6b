//! Float matmul through the `gemm` crate.
//!
//! `gemm` takes row and column strides, so transposed and sliced views (and batch axes
//! broadcast with stride 0) are read in place, without a copy. f16/bf16 are converted to f32
//! once, multiplied in f32 and rounded back (the accumulation is f32 either way).

use crate::copy::out_slice_mut;
use gemm::Parallelism;
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{bf16, f16, ArrayData, Dtype, Error, Result};

/// Below this many multiply-adds per matrix, batches run in parallel and each gemm call is
/// single-threaded (thread start-up would cost more than the work).
const PAR_INNER_FLOPS: usize = 64 * 64 * 64;

/// `a: [..., M, K] @ b: [..., K, N]` with equal batch shapes (broadcast views allowed).
pub fn matmul(a: &ArrayData, b: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    let nd = a.shape.len();
    if nd < 2 || b.shape.len() != nd || out.shape.len() != nd {
        return Err(Error::runtime(
            "matmul",
            "the CPU kernel expects matrices with equal batch ranks",
        ));
    }
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    match out.dtype {
        Dtype::F32 => {
            let (pa, pb) = (a.buffer_as::<f32>(), b.buffer_as::<f32>());
            let dst: &mut [f32] = out_slice_mut(&mut o);
            let av = View {
                base: pa,
                offset: a.offset,
                shape: &a.shape,
                strides: &a.strides,
            };
            let bv = View {
                base: pb,
                offset: b.offset,
                shape: &b.shape,
                strides: &b.strides,
            };
            run_f32(&av, &bv, dst);
        }
        Dtype::F16 => half_via_f32::<f16>(a, b, &mut o),
        Dtype::BF16 => half_via_f32::<bf16>(a, b, &mut o),
        d => {
            return Err(Error::dtype(
                "matmul",
                format!("the CPU kernel does not multiply {d}"),
            ))
        }
    }
    Ok(o)
}

/// A strided f32 operand: `base[offset + Σ idx·stride]`.
struct View<'a> {
    base: &'a [f32],
    offset: usize,
    shape: &'a [usize],
    strides: &'a [isize],
}

impl View<'_> {
    /// Element offset of batch `bi` (row-major over the batch axes).
    fn batch_offset(&self, mut bi: usize) -> isize {
        let nb = self.shape.len() - 2;
        let mut off = self.offset as isize;
        for ax in (0..nb).rev() {
            let d = self.shape[ax];
            off += (bi % d) as isize * self.strides[ax];
            bi /= d;
        }
        off
    }
}

fn run_f32(a: &View, b: &View, dst: &mut [f32]) {
    let nd = a.shape.len();
    let (m, k, n) = (a.shape[nd - 2], a.shape[nd - 1], b.shape[nd - 1]);
    let batches: usize = a.shape[..nd - 2].iter().product();
    if m == 0 || n == 0 || batches == 0 {
        return;
    }
    if k == 0 {
        // an empty sum: the zero-filled output is the answer
        return;
    }
    let (a_rs, a_cs) = (a.strides[nd - 2], a.strides[nd - 1]);
    let (b_rs, b_cs) = (b.strides[nd - 2], b.strides[nd - 1]);
    let one = |bi: usize, c: &mut [f32], par: Parallelism| {
        let (ao, bo) = (a.batch_offset(bi), b.batch_offset(bi));
        // SAFETY: the views were built by the core from in-bounds layouts: for every
        // i < m, p < k, j < n the elements `ao + i·a_rs + p·a_cs` and `bo + p·b_rs + j·b_cs`
        // lie inside their buffers; `c` holds exactly m·n elements, row-major.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.base.as_ptr().offset(ao),
                a_cs,
                a_rs,
                b.base.as_ptr().offset(bo),
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
    let threads = rayon::current_num_threads();
    if m * n * k >= PAR_INNER_FLOPS || batches == 1 {
        let par = if m * n * k >= PAR_INNER_FLOPS && threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        for (bi, c) in dst.chunks_mut(m * n).enumerate() {
            one(bi, c, par);
        }
    } else {
        dst.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, c)| one(bi, c, Parallelism::None));
    }
}

/// f16/bf16: convert both operands to contiguous f32, multiply, round back.
fn half_via_f32<T: Element>(a: &ArrayData, b: &ArrayData, o: &mut ArrayData) {
    let to_f32 = |x: &ArrayData| -> Vec<f32> {
        crate::copy::contiguous::<T>(x)
            .iter()
            .map(|v| v.to_f32())
            .collect()
    };
    let (fa, fb) = (to_f32(a), to_f32(b));
    let sa = rmlx_core::shape::row_major_strides(&a.shape);
    let sb = rmlx_core::shape::row_major_strides(&b.shape);
    let av = View {
        base: &fa,
        offset: 0,
        shape: &a.shape,
        strides: &sa,
    };
    let bv = View {
        base: &fb,
        offset: 0,
        shape: &b.shape,
        strides: &sb,
    };
    let mut tmp = vec![0f32; o.numel()];
    run_f32(&av, &bv, &mut tmp);
    let dst: &mut [T] = out_slice_mut(o);
    for (d, s) in dst.iter_mut().zip(&tmp) {
        *d = T::from_f32(*s);
    }
}
