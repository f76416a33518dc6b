//! RMS norm and layer norm over the last axis on the GPU (the CPU's `rmlx-cpu/src/norm.rs`):
//! one block per row with f32 block reductions; rows may be any strided view.
//!
//! Rounding follows the CPU (and MLX): the normalised value is computed in f32 and rounded
//! to the dtype, then multiplied by the weight (and the bias added) with a rounding after
//! each step. Layer norm takes the mean, then the variance of `x - mean` (two passes).

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag};
use crate::launch::{Args, Grid, Lay};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The kernel for `layer` (else RMS) norm of dtype `t` with the optional parameters.
/// Arguments: x, x offset, the rows' layout, the stride within a row, weight, bias (plain
/// arrays of `d` elements; null when absent), y, rows, d, eps.
pub fn source(t: Dtype, layer: bool, weight: bool, bias: bool) -> (String, String) {
    let name = format!(
        "{}_{}{}{}",
        if layer { "layer_norm" } else { "rms_norm" },
        tag(t),
        if weight { "_w" } else { "" },
        if bias { "_b" } else { "" }
    );
    let ct = ctype(t);
    let mut fin = format!("{ct} z = from_f<{ct}>(v * inv);");
    if weight {
        fin.push_str(&format!(" z = from_f<{ct}>(to_f(z) * to_f(wr[j]));"));
    }
    if bias {
        fin.push_str(&format!(" z = from_f<{ct}>(to_f(z) + to_f(bb[j]));"));
    }
    let body = if layer {
        format!(
            "    float s = 0.0f;\n    for (i64 j = threadIdx.x; j < d; j += blockDim.x) s += to_f(xr[j * xs]);\n    const float mu = block_sum(s) / (float)d;\n    float q = 0.0f;\n    for (i64 j = threadIdx.x; j < d; j += blockDim.x) {{ float v = to_f(xr[j * xs]) - mu; q += v * v; }}\n    const float inv = 1.0f / sqrtf(block_sum(q) / (float)d + eps);\n    for (i64 j = threadIdx.x; j < d; j += blockDim.x) {{ float v = to_f(xr[j * xs]) - mu; {fin} yr[j] = z; }}\n"
        )
    } else {
        format!(
            "    float q = 0.0f;\n    for (i64 j = threadIdx.x; j < d; j += blockDim.x) {{ float v = to_f(xr[j * xs]); q += v * v; }}\n    const float inv = 1.0f / sqrtf(block_sum(q) / (float)d + eps);\n    for (i64 j = threadIdx.x; j < d; j += blockDim.x) {{ float v = to_f(xr[j * xs]); {fin} yr[j] = z; }}\n"
        )
    };
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, Lay rl, i64 xs, const {ct}* __restrict__ w, const {ct}* __restrict__ bb, {ct}* __restrict__ y, i64 rows, i64 d, float eps, i64 wrows) {{\n  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {{\n    const {ct}* xr = x + xo + loc(r, rl);\n    const {ct}* wr = w + (r % wrows) * d;\n    {ct}* yr = y + r * d;\n{body}  }}\n}}\n"
    );
    (name, src)
}

/// RMS norm of contiguous, 16-byte aligned rows whose length is a multiple of 8: each thread
/// loads `ch` chunks of 8 elements with 16-byte loads and keeps them in registers, so a row is
/// read once (the general kernel reads it twice, element by element), and stores 16 bytes at a
/// time (the output is a fresh allocation, so aligned). Arguments: x, x offset,
/// the rows' layout, weight (null when absent), y, rows, d, eps.
pub fn vec_source(t: Dtype, weight: bool, ch: usize) -> (String, String) {
    let name = format!(
        "rms_norm_vec_{}{}_c{ch}",
        tag(t),
        if weight { "_w" } else { "" }
    );
    let ct = ctype(t);
    let wmul = if weight {
        format!(
            "float wv[8]; load8(w + (r % wrows) * d + j, wv);\n        for (int e = 0; e < 8; ++e) z.e[e] = from_f<{ct}>(to_f(z.e[e]) * wv[e]);\n"
        )
    } else {
        String::new()
    };
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, Lay rl, const {ct}* __restrict__ w, {ct}* __restrict__ y, i64 rows, i64 d, float eps, i64 wrows) {{\n  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {{\n    const {ct}* xr = x + xo + loc(r, rl);\n    {ct}* yr = y + r * d;\n    float v[{ch}][8];\n    float q = 0.0f;\n    for (int c = 0; c < {ch}; ++c) {{\n      const i64 j = ((i64)threadIdx.x + (i64)c * blockDim.x) * 8;\n      if (j < d) {{ load8(xr + j, v[c]); for (int e = 0; e < 8; ++e) q += v[c][e] * v[c][e]; }}\n    }}\n    const float inv = 1.0f / sqrtf(block_sum(q) / (float)d + eps);\n    for (int c = 0; c < {ch}; ++c) {{\n      const i64 j = ((i64)threadIdx.x + (i64)c * blockDim.x) * 8;\n      if (j < d) {{\n        union {{ uint4 u[sizeof({ct}) / 2]; {ct} e[8]; }} z;\n        for (int e = 0; e < 8; ++e) z.e[e] = from_f<{ct}>(v[c][e] * inv);\n        {wmul}        for (int e = 0; e < (int)sizeof({ct}) / 2; ++e) reinterpret_cast<uint4*>(yr + j)[e] = z.u[e];\n      }}\n    }}\n  }}\n}}\n"
    );
    (name, src)
}

/// Threads per row: about 8 elements each, 32 to 1024.
fn threads_for(d: usize) -> u32 {
    (d.div_ceil(8).next_power_of_two()).clamp(32, 1024) as u32
}

fn check_float(op: &str, t: Dtype) -> Result<()> {
    match t {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        _ => Err(Error::dtype("cuda", format!("[{op}] unsupported type {t}"))),
    }
}

/// The rows of `x` (all axes but the last) as a layout, the stride within a row, d, rows.
fn rows_of(x: &ArrayData) -> Result<(Lay, i64, usize, usize)> {
    let nd = x.shape.len();
    if nd == 0 {
        return Ok((Lay::new(&[], &[])?, 1, 1, 1));
    }
    let d = x.shape[nd - 1];
    let rows: usize = x.shape[..nd - 1].iter().product();
    Ok((
        Lay::new(&x.shape[..nd - 1], &x.strides[..nd - 1])?,
        x.strides[nd - 1] as i64,
        d,
        rows,
    ))
}

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Arc<Gpu>,
    op: &str,
    x: &ArrayData,
    w: Option<&ArrayData>,
    b: Option<&ArrayData>,
    layer: bool,
    eps: f32,
    od: Dtype,
) -> Result<ArrayData> {
    check_float(op, x.dtype)?;
    if od != x.dtype {
        return Err(Error::dtype(
            "cuda",
            format!("[{op}] output {od} differs from the input's {}", x.dtype),
        ));
    }
    let (rl, xs, d, rows) = rows_of(x)?;
    let mut params = Vec::new();
    // a [R, D] weight (rms norm, `fast::rms_norm`): row r takes weight row r % R
    let wrows = match w {
        Some(w) if !layer && w.shape.len() == 2 && d > 0 => w.shape[0],
        _ => 1,
    };
    for (i, p) in [w, b].into_iter().enumerate() {
        let Some(p) = p else { continue };
        let want = if i == 0 { d * wrows } else { d };
        if p.dtype != x.dtype || p.numel() != want {
            return Err(Error::runtime(
                "cuda",
                format!(
                    "[{op}] parameter must be {} with {want} elements, got {} with {}",
                    x.dtype,
                    p.dtype,
                    p.numel()
                ),
            ));
        }
    }
    let (out, yptr) = output(gpu, &x.shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let xi = input(gpu, x)?;
    let mut ptr = |p: Option<&ArrayData>| -> Result<u64> {
        match p {
            None => Ok(0),
            Some(p) => {
                let (keep, dev) = contiguous_input(gpu, p)?;
                let a = dev.base();
                params.push((keep, dev));
                Ok(a)
            }
        }
    };
    let (wp, bp) = (ptr(w)?, ptr(b)?);
    // the vector kernel: contiguous rows of whole 16-byte chunks, at most 4 chunks a thread
    let esz = x.dtype.size();
    let threads = threads_for(d);
    let ch = (d / 8).div_ceil(threads as usize);
    if !layer
        && xs == 1
        && d.is_multiple_of(8)
        && ch <= 4
        && (xi.ptr as usize + xi.offset as usize * esz).is_multiple_of(16)
        && (d * esz).is_multiple_of(16)
        && rl.strides[..rl.ndim as usize]
            .iter()
            .all(|s| (s * esz as i64) % 16 == 0)
        && wp.is_multiple_of(16)
    {
        let (name, src) = vec_source(x.dtype, w.is_some(), ch);
        let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
        let mut a = Args::new();
        a.ptr(xi.ptr).i64(xi.offset).push(rl);
        a.ptr(wp).ptr(yptr);
        a.i64(rows as i64).i64(d as i64).f32(eps).i64(wrows as i64);
        gpu.launch(&f, &name, Grid::rows(rows.min(1 << 20), threads), &mut a)?;
        drop(params);
        return Ok(out);
    }
    let (name, src) = source(x.dtype, layer, w.is_some(), b.is_some());
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    a.ptr(xi.ptr).i64(xi.offset).push(rl).i64(xs);
    a.ptr(wp).ptr(bp).ptr(yptr);
    a.i64(rows as i64).i64(d as i64).f32(eps).i64(wrows as i64);
    let g = Grid::rows(rows.min(1 << 20), threads);
    gpu.launch(&f, &name, g, &mut a)?;
    drop(params);
    Ok(out)
}

/// `[x, weight?]` → `x * rsqrt(mean(x^2) + eps) [* weight]` over the last axis.
pub fn rms_norm(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    eps: f32,
    has_weight: bool,
    od: Dtype,
) -> Result<ArrayData> {
    let w = if has_weight { x.get(1) } else { None };
    if has_weight && w.is_none() {
        return Err(Error::runtime("cuda", "[rms_norm] weight input missing"));
    }
    run(gpu, "rms_norm", &x[0], w, None, false, eps, od)
}

/// `[x, weight?, bias?]` → `(x - mean) * rsqrt(var + eps) [* weight] [+ bias]`.
pub fn layer_norm(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    eps: f32,
    has_weight: bool,
    has_bias: bool,
    od: Dtype,
) -> Result<ArrayData> {
    let w = if has_weight { x.get(1) } else { None };
    let b = if has_bias {
        x.get(1 + has_weight as usize)
    } else {
        None
    };
    if (has_weight && w.is_none()) || (has_bias && b.is_none()) {
        return Err(Error::runtime(
            "cuda",
            "[layer_norm] parameter input missing",
        ));
    }
    run(gpu, "layer_norm", &x[0], w, b, true, eps, od)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every norm kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn norm_kernels_compile() {
        let mut body = String::new();
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for w in [false, true] {
                body.push_str(&source(t, false, w, false).1);
                for b in [false, true] {
                    body.push_str(&source(t, true, w, b).1);
                }
            }
        }
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for w in [false, true] {
                for ch in 1..=4 {
                    body.push_str(&vec_source(t, w, ch).1);
                }
            }
        }
        assert_compiles("norm_all", &body);
    }

    #[test]
    fn threads_scale_with_rows() {
        assert_eq!(threads_for(1), 32);
        assert_eq!(threads_for(4096), 512);
        assert_eq!(threads_for(8192), 1024);
        assert_eq!(threads_for(100_000), 1024);
    }
}
