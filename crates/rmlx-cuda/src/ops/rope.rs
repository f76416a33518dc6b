//! Rotary position embedding of the first `dims` features of `x: [B, ..., L, D]` on the GPU
//! (the CPU's `rmlx-cpu/src/rope.rs`, step for step):
//! `pos = (l + offset[b]) * scale` in f32, `inv_freq[i] = exp(-i * (ln(base) / (dims/2)))`
//! (or `1 / freqs[i]`), `theta = pos * inv_freq`; the rotation runs in f32 without fused
//! multiply-adds and rounds once to the dtype. `traditional` rotates interleaved pairs
//! `(2i, 2i+1)`, else the halves `(i, i + dims/2)`; features past `dims` pass through.
//! Row `r` of the `[rows, D]` view sits at batch `r / (rows / B)` and position `r % L`.

use crate::context::Gpu;
use crate::data::{ctype, input, output, tag};
use crate::launch::{Args, Grid, Lay};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// Whether prompts' RoPE may walk the heads per thread (`RMLX_ROPE_HEADS=0`: a thread per
/// row and pair, as before; an ablation switch).
fn heads_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_ROPE_HEADS", true)
}

/// A rope kernel's name (`kind`: "rope" or "rope_norm") and the expressions every rope kernel
/// shares: the pair (i1, i2) of pair k, and pair k's inverse frequency.
pub(crate) fn parts(
    kind: &str,
    t: Dtype,
    traditional: bool,
    freqs: bool,
) -> (String, &'static str, &'static str, &'static str) {
    let name = format!(
        "{kind}_{}{}{}",
        tag(t),
        if traditional { "_trad" } else { "" },
        if freqs { "_freqs" } else { "" }
    );
    let (i1, i2) = if traditional {
        ("2 * k", "2 * k + 1")
    } else {
        ("k", "k + half")
    };
    let inv = if freqs {
        "1.0f / fr[fro + loc(k, frl)]"
    } else {
        "expf(__fmul_rn(-(float)k, c))"
    };
    (name, i1, i2, inv)
}

/// The rotation every rope kernel ends with: `(a, b)` by the angle whose cosine and sine are
/// `cs` and `sn`, in f32 without fused multiply-adds, each result rounded once to `ct`, into
/// `yr[i1]` and `yr[i2]` (one statement for all three kernels: the same bits).
pub(crate) fn rotate(ct: &str, a: &str, b: &str) -> String {
    format!(
        "yr[i1] = from_f<{ct}>(__fsub_rn(__fmul_rn({a}, cs), __fmul_rn({b}, sn)));\n        yr[i2] = from_f<{ct}>(__fadd_rn(__fmul_rn({a}, sn), __fmul_rn({b}, cs)));"
    )
}

/// One thread per (row, rotated pair) and per (row, passed-through feature). `small`: every
/// index (elements, rows, the row layout's extents) fits in 32 bits, so the kernel splits them
/// with 32-bit divisions: the 64-bit ones (software routines, several per pair through the
/// rows' layout) made an 8B prefill's RoPE instruction-bound at ~1/4 of the copy bandwidth.
pub fn source(t: Dtype, traditional: bool, freqs: bool, small: bool) -> (String, String) {
    let (name, i1, i2, inv) = parts("rope", t, traditional, freqs);
    let name = if small { format!("{name}_s32") } else { name };
    let ct = ctype(t);
    let (ix, locf) = if small {
        ("u32", "loc32")
    } else {
        ("i64", "loc")
    };
    let inv = inv.replace("loc(", &format!("{locf}("));
    let rot = rotate(ct, "x1", "x2");
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, Lay rl, i64 xs, const i32* __restrict__ off, i64 offo, Lay offl, i64 n_off, const float* __restrict__ fr, i64 fro, Lay frl, {ct}* __restrict__ y, i64 n, i64 d, i64 dims, i64 L, i64 rows_per_batch, float c, float scale) {{
  typedef {ix} IX;
  const IX half = (IX)(dims / 2), w = half + (IX)(d - dims);
  GRID_LOOP(e, n) {{
    const IX r = (IX)e / w, k = (IX)e - r * w;
    const {ct}* xr = x + xo + {locf}(r, rl);
    {ct}* yr = y + (i64)r * d;
    if (k < half) {{
      const IX bo = n_off == 1 ? 0 : r / (IX)rows_per_batch;
      const IX li = r % (IX)L;
      const float pos = __fmul_rn(__fadd_rn((float)li, (float)off[offo + {locf}(bo, offl)]), scale);
      const float th = __fmul_rn(pos, {inv});
      const float cs = cosf(th), sn = sinf(th);
      const i64 i1 = {i1}, i2 = {i2};
      const float x1 = to_f(xr[i1 * xs]), x2 = to_f(xr[i2 * xs]);
      {rot}
    }} else {{
      const i64 j = dims + (k - half);
      yr[j] = xr[j * xs];
    }}
  }}
}}
"
    );
    (name, src)
}

/// RoPE of x `[B, H, L, D]` for prompts (L of at least [`HEADS_MIN_L`]): one thread per (batch,
/// position, pair) walks the H heads, so the angle, its cosine and sine and the index splits are
/// computed once per position instead of once per head and row. The per-(row, pair) kernel
/// above spent ~100 instructions per element on them: an 8B prefill's RoPE ran ~39 µs per
/// launch at 2,048 tokens on an H100 against ~11 µs for its bytes. The same arithmetic per
/// element, so the same bits. Strides of the B, H and L axes come as arguments; every index
/// fits 32 bits.
pub fn heads_source(t: Dtype, traditional: bool, freqs: bool) -> (String, String) {
    let (name, i1, i2, inv) = parts("rope", t, traditional, freqs);
    let name = format!("{name}_heads");
    let ct = ctype(t);
    let inv = inv.replace("loc(", "loc32(");
    let rot = rotate(ct, "x1", "x2");
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, i64 sb, i64 sh, i64 sl, i64 xs, const i32* __restrict__ off, i64 offo, Lay offl, i64 n_off, const float* __restrict__ fr, i64 fro, Lay frl, {ct}* __restrict__ y, u32 n, u32 H, u32 L, i64 d, i64 dims, float c, float scale) {{
  const u32 half = (u32)(dims / 2), w = half + (u32)(d - dims);
  const i64 ys = (i64)L * d;
  for (u32 e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {{
    const u32 bl = e / w, k = e - bl * w, b = bl / L, l = bl - b * L;
    const {ct}* xb = x + xo + (i64)b * sb + (i64)l * sl;
    {ct}* yb = y + ((i64)b * H * L + l) * d;
    if (k < half) {{
      const u32 bo = n_off == 1 ? 0u : b;
      const float pos = __fmul_rn(__fadd_rn((float)l, (float)off[offo + loc32(bo, offl)]), scale);
      const float th = __fmul_rn(pos, {inv});
      const float cs = cosf(th), sn = sinf(th);
      const i64 i1 = {i1}, i2 = {i2};
#pragma unroll 4
      for (u32 h = 0; h < H; ++h) {{
        const {ct}* xr = xb + (i64)h * sh;
        {ct}* yr = yb + (i64)h * ys;
        const float x1 = to_f(xr[i1 * xs]), x2 = to_f(xr[i2 * xs]);
        {rot}
      }}
    }} else {{
      const i64 j = dims + (k - half);
      for (u32 h = 0; h < H; ++h) yb[(i64)h * ys + j] = xb[(i64)h * sh + j * xs];
    }}
  }}
}}
"
    );
    (name, src)
}

/// Positions from which a `[B, H, L, D]` RoPE walks the heads per thread ([`heads_source`]);
/// decode steps (L = 1) keep a thread per (row, pair), thousands of them in parallel.
const HEADS_MIN_L: usize = 16;

/// RoPE of RMS-normalised rows (`fast::rms_norm_rope`): one warp per row takes the row's Σx²,
/// normalises it as the norm kernels do (x · 1/rms rounded to the dtype, times the row's weight
/// `w[(r / L) % wrows]` rounded again) and rotates it as [`source`]'s kernel does.
///
/// A decode step runs it on a few dozen rows (Qwen3: 32 query and 4 key heads), so its time is
/// one chain of latencies: skipping it sped a replayed Qwen3-30B-A3B step up 9.5%, ~5.5 µs per
/// layer. Hence: each lane holds its `pairs` rotated pairs (`ceil(dims / 64)`) in registers
/// from a single round of loads (x, the weight and the offset together), the inverse
/// frequencies are computed before waiting on the previous kernel (constants only), and
/// indices split with 32-bit divisions where they fit (`small`). Σx² adds the lane's elements
/// in the old order (its first halves, then its second halves, then the passed-through
/// features: for `half` a multiple of 32 the order of a plain strided loop).
pub fn norm_source(
    t: Dtype,
    traditional: bool,
    freqs: bool,
    pairs: usize,
    small: bool,
) -> (String, String) {
    let (name, i1, i2, inv) = parts("rope_norm", t, traditional, freqs);
    let name = format!("{name}_p{pairs}{}", if small { "_s32" } else { "" });
    let ct = ctype(t);
    let (ix, locf) = if small {
        ("u32", "loc32")
    } else {
        ("i64", "loc")
    };
    let inv = inv.replace("loc(", &format!("{locf}("));
    // Without a frequency array the inverse frequencies are pure arithmetic: before the wait.
    let (inv_pre, inv_post) = if freqs {
        (String::new(), format!("inv[t] = {inv};"))
    } else {
        (format!("if (k < half) inv[t] = {inv};"), String::new())
    };
    let rot = rotate(ct, "a", "b");
    let src = format!(
        "extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, Lay rl, i64 xs, const i32* __restrict__ off, i64 offo, Lay offl, i64 n_off, const float* __restrict__ fr, i64 fro, Lay frl, {ct}* __restrict__ y, i64 rows, i64 d, i64 dims, i64 L, i64 rows_per_batch, float c, float scale, const {ct}* __restrict__ nw, i64 wrows, float eps) {{
  RMLX_PDL_MANUAL
  rmlx_pdl_trigger();
  typedef {ix} IX;
  const IX half = (IX)(dims / 2);
  const int lane = threadIdx.x & 31;
  float inv[{pairs}];
  #pragma unroll
  for (int t = 0; t < {pairs}; ++t) {{
    const IX k = (IX)lane + 32 * t;
    inv[t] = 0.0f;
    {inv_pre}
  }}
  rmlx_pdl_wait();
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 r = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; r < rows; r += warps) {{
    const {ct}* xr = x + xo + {locf}((IX)r, rl);
    {ct}* yr = y + r * d;
    const {ct}* wr = nw + (i64)(((IX)r / (IX)L) % (IX)wrows) * d;
    const IX bo = n_off == 1 ? 0 : (IX)r / (IX)rows_per_batch;
    const float o = (float)off[offo + {locf}(bo, offl)];
    float x1[{pairs}], x2[{pairs}], w1[{pairs}], w2[{pairs}];
    #pragma unroll
    for (int t = 0; t < {pairs}; ++t) {{
      const IX k = (IX)lane + 32 * t;
      if (k < half) {{
        const IX i1 = {i1}, i2 = {i2};
        x1[t] = to_f(xr[(i64)i1 * xs]); x2[t] = to_f(xr[(i64)i2 * xs]);
        w1[t] = to_f(wr[i1]); w2[t] = to_f(wr[i2]);
        {inv_post}
      }}
    }}
    float q = 0.0f;
    #pragma unroll
    for (int t = 0; t < {pairs}; ++t) if ((IX)lane + 32 * t < half) q += x1[t] * x1[t];
    #pragma unroll
    for (int t = 0; t < {pairs}; ++t) if ((IX)lane + 32 * t < half) q += x2[t] * x2[t];
    for (i64 j = dims + lane; j < d; j += 32) {{ const float v = to_f(xr[j * xs]); q += v * v; }}
    const float rn = 1.0f / sqrtf(warp_sum(q) / (float)d + eps);
    auto nv = [&](float v, float w) {{ return to_f(from_f<{ct}>(to_f(from_f<{ct}>(v * rn)) * w)); }};
    const float pos = __fmul_rn(__fadd_rn((float)((IX)r % (IX)L), o), scale);
    #pragma unroll
    for (int t = 0; t < {pairs}; ++t) {{
      const IX k = (IX)lane + 32 * t;
      if (k < half) {{
        const float th = __fmul_rn(pos, inv[t]);
        const float cs = cosf(th), sn = sinf(th);
        const IX i1 = {i1}, i2 = {i2};
        const float a = nv(x1[t], w1[t]), b = nv(x2[t], w2[t]);
        {rot}
      }}
    }}
    for (i64 j = dims + lane; j < d; j += 32) yr[j] = from_f<{ct}>(nv(to_f(xr[j * xs]), to_f(wr[j])));
  }}
}}
"
    );
    (name, src)
}

/// The norm weight of a normalising rope kernel ([`norm_source`]'s, `rope_kv.rs`'s) for rows of
/// `d` features of dtype `t`, `rows` heads: `[D]` or `[rows, D]` of dtype `t`; its data (kept
/// for the launch), device address and row count. `op` names the op in the error.
pub(crate) fn norm_rows(
    gpu: &Arc<Gpu>,
    w: &ArrayData,
    (t, d, rows): (Dtype, usize, usize),
    op: &str,
) -> Result<(ArrayData, u64, usize)> {
    let wrows = if w.shape.len() == 2 { w.shape[0] } else { 1 };
    if w.dtype != t || w.shape.last() != Some(&d) || (wrows != 1 && wrows != rows) {
        return Err(Error::runtime(
            "cuda",
            format!(
                "[{op}] the norm weight must be {t} [{d}] or [{rows}, {d}], got {} {:?}",
                w.dtype,
                &w.shape[..]
            ),
        ));
    }
    let (keep, wi) = crate::data::contiguous_input(gpu, w)?;
    Ok((keep, wi.base(), wrows))
}

/// `[x, offset, freqs?, norm weight?]` → rotated `x` (row-contiguous, same shape and dtype);
/// with `norm` (eps) the rows are RMS-normalised first, each by weight row
/// `(r / L) % wrows` (`fast::rms_norm_rope`).
pub fn rope(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (dims, traditional, base, scale): (usize, bool, f32, f32),
    (has_freqs, norm): (bool, Option<f32>),
    od: Dtype,
) -> Result<ArrayData> {
    let xd = &x[0];
    let nd = xd.shape.len();
    if nd < 2 || dims == 0 || !dims.is_multiple_of(2) || dims > xd.shape[nd - 1] {
        return Err(Error::runtime(
            "cuda",
            format!("[rope] bad input shape {:?} for dims {dims}", &xd.shape[..]),
        ));
    }
    match xd.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {}
        t => {
            return Err(Error::dtype(
                "rope",
                format!("input must be a floating type, got {t}"),
            ))
        }
    }
    if od != xd.dtype {
        return Err(Error::dtype(
            "rope",
            format!("output {od} differs from the input's {}", xd.dtype),
        ));
    }
    let half = dims / 2;
    let b = xd.shape[0];
    let l = xd.shape[nd - 2];
    let d = xd.shape[nd - 1];
    let offs = x
        .get(1)
        .ok_or_else(|| Error::runtime("cuda", "[rope] offset input missing"))?;
    if offs.dtype != Dtype::I32 {
        return Err(Error::runtime(
            "cuda",
            format!("[rope] offset must be int32, got {}", offs.dtype),
        ));
    }
    let n_off = offs.numel();
    if n_off != 1 && n_off != b {
        return Err(Error::runtime(
            "cuda",
            format!("[rope] offset has {n_off} elements for batch {b}"),
        ));
    }
    let freqs = if has_freqs {
        let f = x
            .get(2)
            .ok_or_else(|| Error::runtime("cuda", "[rope] freqs input missing"))?;
        if f.dtype != Dtype::F32 || f.numel() != half {
            return Err(Error::runtime(
                "cuda",
                format!("[rope] freqs must be float32 with {half} elements"),
            ));
        }
        Some(f)
    } else {
        None
    };
    let (out, yptr) = output(gpu, &xd.shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = xd.numel() / d;
    let rows_per_batch = rows / b.max(1);
    let w = half + (d - dims);
    let n = rows * w;
    let xi = input(gpu, xd)?;
    let oi = input(gpu, offs)?;
    let fi = freqs.map(|f| input(gpu, f)).transpose()?;
    let rl = Lay::new(&xd.shape[..nd - 1], &xd.strides[..nd - 1])?;
    let nw = match norm {
        Some(eps) => {
            let w = x
                .get(2 + has_freqs as usize)
                .ok_or_else(|| Error::runtime("cuda", "[rope] norm weight input missing"))?;
            let rows_axis = if nd >= 3 { xd.shape[nd - 3] } else { 1 };
            let (keep, ptr, wrows) = norm_rows(gpu, w, (xd.dtype, d, rows_axis), "rope")?;
            Some((keep, ptr, wrows, eps))
        }
        None => None,
    };
    let fits = |v: usize| v <= u32::MAX as usize;
    let small = fits(n) && xd.shape.iter().all(|&e| fits(e)) && fits(b) && fits(half);
    // The CPU's frequency constant, computed identically on the host.
    let c = base.ln() / half as f32;
    // The offset and frequency arguments every kernel takes after x's.
    let offsets_and_freqs = |a: &mut Args| {
        a.ptr(oi.ptr).i64(oi.offset).push(oi.lay).i64(n_off as i64);
        match &fi {
            Some(fi) => a.ptr(fi.ptr).i64(fi.offset).push(fi.lay),
            None => a.ptr(0).i64(0).push(oi.lay),
        };
    };
    if norm.is_none() && small && nd == 4 && l >= HEADS_MIN_L && heads_on() {
        let (name, src) = heads_source(xd.dtype, traditional, has_freqs);
        let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
        let s = &xd.strides;
        let mut a = Args::new();
        a.ptr(xi.ptr)
            .i64(xi.offset)
            .i64(s[0] as i64)
            .i64(s[1] as i64)
            .i64(s[2] as i64)
            .i64(s[3] as i64);
        offsets_and_freqs(&mut a);
        let threads = b * l * w;
        a.ptr(yptr)
            .u32(threads as u32)
            .u32(xd.shape[1] as u32)
            .u32(l as u32)
            .i64(d as i64)
            .i64(dims as i64)
            .f32(c)
            .f32(scale);
        gpu.launch(&f, &name, Grid::elems(threads), &mut a)?;
        return Ok(out);
    }
    let (name, src) = match norm {
        Some(_) => norm_source(xd.dtype, traditional, has_freqs, half.div_ceil(32), small),
        None => source(xd.dtype, traditional, has_freqs, small),
    };
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    a.ptr(xi.ptr)
        .i64(xi.offset)
        .push(rl)
        .i64(xd.strides[nd - 1] as i64);
    offsets_and_freqs(&mut a);
    a.ptr(yptr)
        .i64(if nw.is_some() { rows } else { n } as i64)
        .i64(d as i64)
        .i64(dims as i64)
        .i64(l as i64)
        .i64(rows_per_batch as i64)
        .f32(c)
        .f32(scale);
    match &nw {
        Some((_, wp, wrows, eps)) => {
            a.ptr(*wp).i64(*wrows as i64).f32(*eps);
            // a warp per row
            gpu.launch(&f, &name, Grid::elems(rows * 32), &mut a)?;
        }
        None => gpu.launch(&f, &name, Grid::elems(n), &mut a)?,
    }
    drop(nw);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every rope kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn rope_kernels_compile() {
        let mut body = String::new();
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for trad in [false, true] {
                for fr in [false, true] {
                    body.push_str(&source(t, trad, fr, false).1);
                    body.push_str(&source(t, trad, fr, true).1);
                    body.push_str(&heads_source(t, trad, fr).1);
                    for (pairs, small) in [(1, true), (2, true), (4, false)] {
                        body.push_str(&norm_source(t, trad, fr, pairs, small).1);
                    }
                }
            }
        }
        assert_compiles("rope_all", &body);
    }
}
