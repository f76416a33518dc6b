//! MLX affine quantization: `quantize`, `dequantize`, `quantized_matmul`.
//!
//! Format (DESIGN.md §4): per group of `group_size` consecutive elements along the last axis,
//! `w ≈ scale * q + bias` with `q` of `bits` bits. Row `i` of `wq: [..., N, K * bits / 32]`
//! (u32) is a little-endian, LSB-first bit stream of the `K` codes; `scales` and `biases` are
//! `[..., N, K / group_size]`. Bit-exact with `mlx.core.quantize` / `dequantize` on the CPU.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{Primitive, F32};
use crate::shape::{broadcast_shapes, fmt_shape, Shape};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

static DECODE_MODE: AtomicU8 = AtomicU8::new(0); // 0 = unread, 1 = int8 allowed, 2 = exact

thread_local! {
    /// This thread's override of the process default (see [`with_exact_decode`]).
    static SCOPED_MODE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Sets the process default for quantized products recorded from now on: `true` forces every
/// backend onto its exact float paths, `false` allows the faster ones: decode shapes (a few
/// rows of `x`) quantize `x` to int8 per block of 32 (llama.cpp's trade: ~3e-3 relative error
/// on the products, measured in the backends' tests), and a GPU multiplies half `x` by weights
/// rounded to that half dtype for prefill (as MLX). The default allows them unless
/// `RMLX_QMV_EXACT=1` is set.
pub fn set_exact_decode(exact: bool) {
    DECODE_MODE.store(if exact { 2 } else { 1 }, Ordering::Relaxed);
}

/// Runs `f` with quantized products recorded on this thread in the given mode, whatever the
/// process default; the mode is fixed in each op when it is recorded, so arrays built inside
/// `f` keep it wherever and whenever they are evaluated, and other threads are not affected.
pub fn with_exact_decode<R>(exact: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED_MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(SCOPED_MODE.with(|m| m.replace(Some(exact))));
    f()
}

/// The mode a quantized product recorded now on this thread gets: the innermost
/// [`with_exact_decode`] scope, else the process default ([`set_exact_decode`]).
pub fn exact_decode() -> bool {
    if let Some(exact) = SCOPED_MODE.with(Cell::get) {
        return exact;
    }
    match DECODE_MODE.load(Ordering::Relaxed) {
        0 => {
            let exact = std::env::var("RMLX_QMV_EXACT").is_ok_and(|v| v == "1");
            set_exact_decode(exact);
            exact
        }
        m => m == 2,
    }
}

/// Rows of `x` (per matrix) up to which every backend runs a transposed quantized product with
/// its memory-bound decode kernel (int8 activations unless exact); more rows take the prefill
/// kernel (dequantize and multiply). A row's result depends only on its own values within
/// each family, so callers that want reproducible results keep a computation in one family.
pub const DECODE_MAX_ROWS: usize = 8;

/// Rows of `x` up to which a transposed quantized product may take the decode family (int8
/// activations unless exact): a backend's decode kernel serves [`DECODE_MAX_ROWS`] at a time,
/// and the CPU runs short prompts (up to this many rows) as chunks of them, several times
/// faster than dequantizing every weight for a GEMM. From one more row on, every backend takes
/// its prefill kernel. Callers that need a prompt's rows to come out the same across calls (the
/// prefix cache, chunked prefill) keep every such call above this many rows.
pub const DECODE_FAMILY_ROWS: usize = 32;

/// Bit widths MLX's affine mode accepts.
pub const QUANT_BITS: [usize; 6] = [2, 3, 4, 5, 6, 8];
/// Group sizes accepted: MLX's 32, 64, 128, and 16 (internal, for GGUF K-quants).
pub const QUANT_GROUP_SIZES: [usize; 4] = [16, 32, 64, 128];

fn check_params(op: &'static str, group_size: usize, bits: usize) -> Result<()> {
    if !QUANT_BITS.contains(&bits) {
        return Err(Error::invalid(
            op,
            format!("bits must be one of 2, 3, 4, 5, 6, 8, got {bits}"),
        ));
    }
    if !QUANT_GROUP_SIZES.contains(&group_size) {
        return Err(Error::invalid(
            op,
            format!("group_size must be 32, 64 or 128 (16 for GGUF K-quants), got {group_size}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_float(op: &'static str, what: &str, a: &Array) -> Result<()> {
    if !a.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!(
                "{what} must be float16, bfloat16 or float32, got {}",
                a.dtype()
            ),
        ));
    }
    Ok(())
}

/// Checks that `len` elements split into whole groups and whole u32 words.
fn check_row(
    op: &'static str,
    what: &str,
    shape: &[usize],
    len: usize,
    group_size: usize,
    bits: usize,
) -> Result<()> {
    if !len.is_multiple_of(group_size) {
        return Err(Error::invalid(
            op,
            format!("{what} of shape {} has {len} elements per row, not a multiple of group_size {group_size}", fmt_shape(shape)),
        ));
    }
    if !(len * bits).is_multiple_of(32) {
        return Err(Error::invalid(
            op,
            format!(
                "{what} of shape {}: {len} elements of {bits} bits do not fill whole u32 words",
                fmt_shape(shape)
            ),
        ));
    }
    Ok(())
}

/// Quantizes `w: [..., N, K]` along its last axis into `(wq, scales, biases)`:
/// `wq: [..., N, K * bits / 32]` u32, `scales`, `biases`: `[..., N, K / group_size]` in `w`'s
/// dtype. `K` must be a multiple of `group_size`.
#[track_caller]
pub fn quantize(w: &Array, group_size: usize, bits: usize) -> Result<(Array, Array, Array)> {
    const OP: &str = "quantize";
    check_params(OP, group_size, bits)?;
    check_float(OP, "w", w)?;
    if w.ndim() < 2 {
        return Err(Error::invalid(
            OP,
            format!(
                "the matrix to quantize must have at least 2 dimensions, got shape {}",
                fmt_shape(w.shape())
            ),
        ));
    }
    let k = w.shape()[w.ndim() - 1];
    check_row(OP, "w", w.shape(), k, group_size, bits)?;
    let lead = &w.shape()[..w.ndim() - 1];
    let wq_shape: Shape = lead.iter().copied().chain([k * bits / 32]).collect();
    let s_shape: Shape = lead.iter().copied().chain([k / group_size]).collect();
    let part = |p: u8, shape: Shape, dtype: Dtype| {
        Array::make(
            shape,
            dtype,
            Primitive::Quantize {
                group_size,
                bits,
                part: p,
            },
            [w.clone()],
        )
    };
    Ok((
        part(0, wq_shape, Dtype::U32),
        part(1, s_shape.clone(), w.dtype()),
        part(2, s_shape, w.dtype()),
    ))
}

/// Validates `(wq, scales, biases)` and returns the unpacked row length (`K`).
pub(crate) fn check_packed(
    op: &'static str,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<usize> {
    check_params(op, group_size, bits)?;
    if wq.dtype() != Dtype::U32 {
        return Err(Error::dtype(
            op,
            format!("wq must be uint32, got {}", wq.dtype()),
        ));
    }
    check_float(op, "scales", scales)?;
    check_float(op, "biases", biases)?;
    if scales.dtype() != biases.dtype() {
        return Err(Error::dtype(
            op,
            format!(
                "scales ({}) and biases ({}) must have the same dtype",
                scales.dtype(),
                biases.dtype()
            ),
        ));
    }
    if wq.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!(
                "wq must have at least 2 dimensions, got shape {}",
                fmt_shape(wq.shape())
            ),
        ));
    }
    if scales.shape() != biases.shape() {
        return Err(Error::invalid(
            op,
            format!(
                "scales {} and biases {} must have the same shape",
                fmt_shape(scales.shape()),
                fmt_shape(biases.shape())
            ),
        ));
    }
    let nd = wq.ndim();
    let k = wq.shape()[nd - 1] * 32 / bits;
    let consistent = scales.ndim() == nd
        && scales.shape()[..nd - 1] == wq.shape()[..nd - 1]
        && k.is_multiple_of(group_size)
        && scales.shape()[nd - 1] == k / group_size;
    if !consistent || !(wq.shape()[nd - 1] * 32).is_multiple_of(bits) {
        return Err(Error::invalid(
            op,
            format!(
                "wq {} (rows of {} {bits}-bit values) does not match scales {} for group_size {group_size} \
                 (expected scales [..., {}, {}])",
                fmt_shape(wq.shape()),
                k,
                fmt_shape(scales.shape()),
                wq.shape()[nd - 2],
                k / group_size.max(1)
            ),
        ));
    }
    Ok(k)
}

/// Unpacks `wq: [..., N, K * bits / 32]` with `scales`, `biases: [..., N, K / group_size]`
/// into `[..., N, K]` of the scales' dtype: `scale * q + bias` (rounded as MLX does: for half
/// dtypes the product and the sum are each rounded to the dtype).
#[track_caller]
pub fn dequantize(
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    const OP: &str = "dequantize";
    let k = check_packed(OP, wq, scales, biases, group_size, bits)?;
    let shape: Shape = wq.shape()[..wq.ndim() - 1]
        .iter()
        .copied()
        .chain([k])
        .collect();
    Ok(Array::make(
        shape,
        scales.dtype(),
        Primitive::Dequantize { group_size, bits },
        [wq.clone(), scales.clone(), biases.clone()],
    ))
}

/// `x @ dequantize(wq).T` (`transpose = true`, `wq: [..., N, K*bits/32]`, the layout of
/// `nn.QuantizedLinear`) or `x @ dequantize(wq)` (`transpose = false`, `wq: [..., K, N*bits/32]`).
///
/// `x: [..., M, K]` (or `[K]`); with a 2-D `wq` any batch shape of `x` is allowed and the
/// output is `[..., M, N]`; a batched `wq` broadcasts its leading axes against `x`'s. The
/// result dtype is MLX's promotion of `x` and the scales (f32 scales with half `x` give f32).
#[track_caller]
pub fn quantized_matmul(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    transpose: bool,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    qmm(
        x, wq, scales, biases, None, None, transpose, group_size, bits,
    )
}

/// `addend + quantized_matmul(x, wq, scales, biases, ..)`: a residual connection after a
/// projection. One op where `wq` is one matrix and `addend` has the product's shape and dtype
/// (the GPU's decode kernels add it as they store: one kernel fewer per residual); else the
/// two ops. Either way the product is rounded to the output dtype before the sum, as the
/// composition rounds it.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn quantized_matmul_add(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    addend: &Array,
    transpose: bool,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    qmm(
        x,
        wq,
        scales,
        biases,
        Some(addend),
        None,
        transpose,
        group_size,
        bits,
    )
}

/// `quantized_matmul(fast::rms_norm(x, Some(norm_weight), eps), wq, scales, biases, true, ..)`:
/// the first product of a pre-norm layer. One op where the backend takes the norm into the
/// product and `wq` is one matrix, else the two ops. The GPU's int8 decode kernels quantize
/// `x ∘ norm_weight` and scale each row's product by its 1/rms (the sum of squares taken from
/// the int8 blocks' meta): no norm launch, no normalised x in memory, and values within the int8
/// path's error of the composition (closer to the exact product: the normalised x is not rounded
/// to x's dtype first). Elsewhere (the CPU, prefill rows, exact mode) the norm runs first, as
/// the composition.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_quantized_matmul(
    x: &Array,
    norm_weight: &Array,
    eps: f32,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    if norm_weight.ndim() != 1 || wq.ndim() != 2 || !norm_inside_products() {
        let n = crate::fast::rms_norm(x, Some(norm_weight), eps)?;
        return quantized_matmul(&n, wq, scales, biases, true, group_size, bits);
    }
    // the norm's checks and output dtype, then the product's checks on its input
    let t = crate::fast::check_rms_norm(x, Some(norm_weight))?;
    let w = crate::ops::astype(norm_weight, t);
    qmm(
        &crate::ops::astype(x, t),
        wq,
        scales,
        biases,
        None,
        Some((&w, eps)),
        true,
        group_size,
        bits,
    )
}

/// `silu(g) * u` of the halves `[g, u]` of `x @ dequant(w).T`, w a fused gate/up layer (`wq`
/// `[2H, K·bits/32]`, gate rows first) → `[..., H]`; with `norm` (weight `[K]`, eps) x is first
/// RMS-normalised as [`rms_norm_quantized_matmul`] does. One node where the backend has a
/// kernel (a GPU's decode rows: one launch where the product and `silu_mul` take two, and the
/// `[.., 2H]` intermediate never reaches memory): the product's own node, its primitive swapped
/// for the fused one, so the inputs, the norm's placement and the checks are the product's.
/// Else those ops. The values are the ops' either way: the product rounded to its dtype, then
/// `silu_mul`.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn quantized_swiglu(
    x: &Array,
    norm: Option<(&Array, f32)>,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    let y = gate_up_product(x, norm, wq, scales, biases, group_size, bits)?;
    let h = half_width(&y)?;
    if let Some(Primitive::QuantizedMatmul {
        group_size,
        bits,
        transpose: true,
        exact,
        addend: false,
        norm,
    }) = y.primitive()
    {
        let prim = Primitive::QuantizedSwiglu {
            group_size,
            bits,
            exact,
            norm,
        };
        if wq.ndim() == 2 && crate::fast::use_kernel(&prim) {
            let mut shape: Shape = y.shape().into();
            let last = shape.len() - 1;
            shape[last] = h;
            if let Some(fused) = y.remade(shape, y.dtype(), prim) {
                return Ok(fused);
            }
        }
    }
    silu_mul_halves(&y, h)
}

/// [`quantized_swiglu`] as its ops: the product, its halves, `silu_mul`.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn quantized_swiglu_fallback(
    x: &Array,
    norm: Option<(&Array, f32)>,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    let y = gate_up_product(x, norm, wq, scales, biases, group_size, bits)?;
    silu_mul_halves(&y, half_width(&y)?)
}

/// Half the last axis of a fused gate/up product, which must be even.
fn half_width(y: &Array) -> Result<usize> {
    let n = y.shape()[y.ndim() - 1];
    if !n.is_multiple_of(2) {
        return Err(Error::invalid(
            "quantized_swiglu",
            format!("a fused gate/up product has an even width, got {n}"),
        ));
    }
    Ok(n / 2)
}

/// `silu_mul` of the two halves (`h` wide) of `y`'s last axis.
#[track_caller]
fn silu_mul_halves(y: &Array, h: usize) -> Result<Array> {
    let nd = y.ndim();
    let half = |a: usize| {
        let mut start = vec![0i64; nd];
        let mut stop = vec![i64::MAX; nd];
        start[nd - 1] = a as i64;
        stop[nd - 1] = (a + h) as i64;
        crate::ops::slice(y, &start, &stop, &vec![1; nd])
    };
    crate::ops::silu_mul(&half(0)?, &half(h)?)
}

/// The fused gate/up product of [`quantized_swiglu`]: `x @ dequant(w).T`, of x normalised
/// first where `norm` is given.
#[track_caller]
fn gate_up_product(
    x: &Array,
    norm: Option<(&Array, f32)>,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    match norm {
        Some((w, eps)) => {
            rms_norm_quantized_matmul(x, w, eps, wq, scales, biases, group_size, bits)
        }
        None => quantized_matmul(x, wq, scales, biases, true, group_size, bits),
    }
}

/// Whether the current stream's backend takes an RMS norm into its quantized products
/// ([`rms_norm_quantized_matmul`], `fast::gather_qmm_swiglu_normed`: one node there, the norm
/// then the product elsewhere). Layers ask it to apply the norm once where both would compose.
pub fn norm_inside_products() -> bool {
    crate::fast::use_kernel(&Primitive::QuantizedMatmul {
        group_size: 64,
        bits: 4,
        transpose: true,
        exact: false,
        addend: false,
        norm: Some(F32(0.0)),
    })
}

/// [`quantized_matmul`], plus `addend` where given, of x RMS-normalised by `norm` (weight, eps;
/// only with one matrix `wq`) where given.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn qmm(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    addend: Option<&Array>,
    norm: Option<(&Array, f32)>,
    transpose: bool,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    const OP: &str = "quantized_matmul";
    let packed_len = check_packed(OP, wq, scales, biases, group_size, bits)?;
    check_float(OP, "x", x)?;
    if x.ndim() == 0 {
        return Err(Error::invalid(
            OP,
            "x must have at least 1 dimension, got a scalar",
        ));
    }
    let nd = wq.ndim();
    // (K, N) of the dequantized product.
    let (k, n) = if transpose {
        (packed_len, wq.shape()[nd - 2])
    } else {
        (wq.shape()[nd - 2], packed_len)
    };
    let xk = x.shape()[x.ndim() - 1];
    if xk != k {
        return Err(Error::invalid(
            OP,
            format!(
                "x {} has last axis {xk} but the quantized matrix wq {} (transpose={transpose}, {bits} bits) \
                 has K = {k}",
                fmt_shape(x.shape()),
                fmt_shape(wq.shape())
            ),
        ));
    }
    let dtype = Dtype::promote(x.dtype(), scales.dtype());
    if nd == 2 {
        let shape: Shape = x.shape()[..x.ndim() - 1]
            .iter()
            .copied()
            .chain([n])
            .collect();
        return make_qmm(
            shape,
            dtype,
            x.clone(),
            [wq, scales, biases],
            (group_size, bits, transpose),
            (addend, norm),
        );
    }
    debug_assert!(
        norm.is_none(),
        "the norm goes inside one matrix's product only"
    );
    // Batched weights: broadcast the batch axes of x ([..., M, K]) and of the weights.
    if x.ndim() < 2 {
        return Err(Error::invalid(
            OP,
            format!(
                "with a batched wq {} x must have at least 2 dimensions, got {}",
                fmt_shape(wq.shape()),
                fmt_shape(x.shape())
            ),
        ));
    }
    let m = x.shape()[x.ndim() - 2];
    let batch = broadcast_shapes(OP, &x.shape()[..x.ndim() - 2], &wq.shape()[..nd - 2])?;
    let with = |tail: &[usize]| -> Vec<usize> { batch.iter().chain(tail).copied().collect() };
    let xb = crate::ops::broadcast_to(x, &with(&[m, k]))?;
    let wqb = crate::ops::broadcast_to(wq, &with(&wq.shape()[nd - 2..]))?;
    let sb = crate::ops::broadcast_to(scales, &with(&scales.shape()[nd - 2..]))?;
    let bb = crate::ops::broadcast_to(biases, &with(&biases.shape()[nd - 2..]))?;
    let shape: Shape = with(&[m, n]).into_iter().collect();
    let y = make_qmm(
        shape,
        dtype,
        xb,
        [&wqb, &sb, &bb],
        (group_size, bits, transpose),
        (None, None),
    )?;
    match addend {
        Some(a) => crate::ops::add(&y, a),
        None => Ok(y),
    }
}

/// The product node of `x` and one (or a broadcast batch of) packed matrix `[wq, scales,
/// biases]`, with `addend` in it where it has the product's shape and dtype, else added after,
/// and the norm (weight, eps) of x in it where given.
#[track_caller]
fn make_qmm(
    shape: Shape,
    dtype: Dtype,
    x: Array,
    [wq, scales, biases]: [&Array; 3],
    (group_size, bits, transpose): (usize, usize, bool),
    (addend, norm): (Option<&Array>, Option<(&Array, f32)>),
) -> Result<Array> {
    let fused = addend.filter(|a| a.shape() == &shape[..] && a.dtype() == dtype);
    let y = Array::make(
        shape,
        dtype,
        Primitive::QuantizedMatmul {
            group_size,
            bits,
            transpose,
            exact: exact_decode(),
            addend: fused.is_some(),
            norm: norm.map(|n| F32(n.1)),
        },
        [x, wq.clone(), scales.clone(), biases.clone()]
            .into_iter()
            .chain(fused.cloned())
            .chain(norm.map(|n| n.0.clone())),
    );
    match addend {
        Some(a) if fused.is_none() => crate::ops::add(&y, a),
        _ => Ok(y),
    }
}
