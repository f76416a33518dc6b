//! CPU kernels of MLX affine quantization: `quantize`, `dequantize` (bit-exact with MLX's CPU
//! backend) and `quantized_matmul` (decode: [`qmv`], prefill: [`qmm`]).

pub mod pack;
pub mod qmm;
pub mod qmv;

use crate::copy::{contiguous, out_slice_mut};
use qmv::Packed;
use rmlx_core::dtype::{bf16, f16, Element};
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};

pub use rmlx_core::ops::quantized::{DECODE_FAMILY_ROWS, DECODE_MAX_ROWS};

/// Binds `$T` to the Rust type of a float dtype, or returns a dtype error.
macro_rules! float_dispatch {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            Dtype::F32 => {
                type $T = f32;
                $body
            }
            Dtype::F16 => {
                type $T = f16;
                $body
            }
            Dtype::BF16 => {
                type $T = bf16;
                $body
            }
            d => {
                return Err(Error::dtype(
                    $op,
                    format!("expected a float dtype, got {d}"),
                ))
            }
        }
    };
}

fn last(x: &ArrayData) -> usize {
    x.shape.last().copied().unwrap_or(1)
}

/// One output (`part` 0 wq, 1 scales, 2 biases) of quantizing `w: [..., K]`.
pub fn quantize(
    w: &ArrayData,
    group_size: usize,
    bits: usize,
    part: u8,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    let k = last(w);
    float_dispatch!("quantize", w.dtype, T => {
        let src = contiguous::<T>(w);
        pack::quantize_part::<T>(&src, k, group_size, bits, part, out_slice_mut::<u8>(&mut o));
    });
    Ok(o)
}

/// `[wq, scales, biases]` → `[..., N, K]` in the scales' dtype.
pub fn dequantize(
    x: &[ArrayData],
    group_size: usize,
    bits: usize,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    let k = out.shape.last().copied().unwrap_or(0);
    let wq = contiguous::<u32>(&x[0]);
    float_dispatch!("dequantize", x[1].dtype, S => {
        let (s, b) = (contiguous::<S>(&x[1]), contiguous::<S>(&x[2]));
        pack::dequantize_rows::<S>(&wq, &s, &b, k, group_size, bits, out_slice_mut::<S>(&mut o));
    });
    Ok(o)
}

/// `[x, wq, scales, biases]` → `x @ dequant(w).T` (transpose) or `x @ dequant(w)`; batched
/// weights arrive with batch axes equal to x's (broadcast by the op).
pub fn quantized_matmul(
    x: &[ArrayData],
    group_size: usize,
    bits: usize,
    transpose: bool,
    exact: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let (xa, wa) = (&x[0], &x[1]);
    let nd = wa.shape.len();
    let rows_w = wa.shape[nd - 2];
    let row_len = wa.shape[nd - 1] * 32 / bits;
    let k = last(xa);
    let batches: usize = wa.shape[..nd - 2].iter().product();
    let n = if transpose { rows_w } else { row_len };
    let m = if batches == 0 || k == 0 {
        xa.numel() / k.max(1)
    } else {
        xa.numel() / k / batches.max(1)
    };
    let xc;
    let xf: &[f32] = if xa.dtype == Dtype::F32 {
        xc = contiguous::<f32>(xa);
        &xc
    } else {
        xc =
            float_dispatch!("quantized_matmul", xa.dtype, X => to_f32(&contiguous::<X>(xa)).into());
        &xc
    };
    let wq = contiguous::<u32>(wa);
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    // f32 outputs are written in place; other dtypes go through an f32 buffer.
    let mut tmp = Vec::new();
    let res: &mut [f32] = if out.dtype == Dtype::F32 {
        out_slice_mut::<f32>(&mut o)
    } else {
        tmp.resize(batches * m * n, 0f32);
        &mut tmp
    };
    float_dispatch!("quantized_matmul", x[2].dtype, S => {
        let (s, b) = (contiguous::<S>(&x[2]), contiguous::<S>(&x[3]));
        let (wsz, ssz) = (wq.len() / batches.max(1), s.len() / batches.max(1));
        for bi in 0..batches {
            let w = Packed {
                wq: &wq[bi * wsz..(bi + 1) * wsz],
                scales: &s[bi * ssz..(bi + 1) * ssz],
                biases: &b[bi * ssz..(bi + 1) * ssz],
                n: rows_w,
                k: row_len,
                group_size,
                bits,
            };
            let xs = &xf[bi * m * k..(bi + 1) * m * k];
            let o = &mut res[bi * m * n..(bi + 1) * m * n];
            matmul_one(xs, m, &w, transpose, exact, o);
        }
    });
    if out.dtype != Dtype::F32 {
        float_dispatch!("quantized_matmul", out.dtype, D => {
            for (d, v) in out_slice_mut::<D>(&mut o).iter_mut().zip(&tmp) {
                *d = D::from_f32(*v);
            }
        });
    }
    // `ops::quantized_matmul_add`: the rounded product plus the addend, as `ops::add` would
    if let Some(a) = x.get(4) {
        float_dispatch!("quantized_matmul", out.dtype, D => {
            let a = contiguous::<D>(a);
            for (d, r) in out_slice_mut::<D>(&mut o).iter_mut().zip(a.iter()) {
                *d = D::from_f32(d.to_f32() + r.to_f32());
            }
        });
    }
    Ok(o)
}

/// One product `out: [m, n]` from `x: [m, k]` (f32) and one packed matrix; `exact` keeps
/// decode shapes off the int8 path (see `qmv::qmv`).
pub fn matmul_one<S: Element>(
    x: &[f32],
    m: usize,
    w: &Packed<S>,
    transpose: bool,
    exact: bool,
    out: &mut [f32],
) {
    if !transpose {
        qmm::qmm_n(x, m, w, out)
    } else if m <= DECODE_MAX_ROWS {
        qmv::qmv(x, m, w, exact, out)
    } else if m <= DECODE_FAMILY_ROWS {
        // A short prompt: the decode kernel over chunks of rows, each chunk streaming the
        // weights once (SmolLM2, 16 rows: ~5x faster than dequantizing every weight for the
        // GEMM). Callers keep calls they compare above DECODE_FAMILY_ROWS (the prefix cache).
        for (xc, oc) in x
            .chunks(DECODE_MAX_ROWS * w.k)
            .zip(out.chunks_mut(DECODE_MAX_ROWS * w.n))
        {
            qmv::qmv(xc, xc.len() / w.k, w, exact, oc)
        }
    } else {
        // Every longer prefill takes the dequantize-and-GEMM path: a row's result then does not
        // depend on how a prompt was cut into chunks, which the prefix cache relies on
        // (rmlx-lm's `prefill_chunk`).
        qmm::qmm_t(x, m, w, out)
    }
}

fn to_f32<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}
