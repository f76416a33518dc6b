//! `fast::rope_kv_write` on the GPU: one kernel where the composition launches a RoPE and
//! two cache writes (per row, for a batch of sequences with caches of their own).
//!
//! A warp per (row, head) of the projection's `[B, 1, n_q + 2 n_kv, D]` heads: a q head is
//! rotated into the q output, a k head rotated into its cache at the row's position, a v head
//! copied there. The rotation (and the norm before it) is `rope.rs`'s arithmetic, statement for
//! statement, so the values are those of `rope` / `rms_norm_rope` bit for bit; the position
//! clamps to the cache as `slice_update_at`'s does.

use super::indexing::write_target;
use super::rope::{norm_rows, parts, rotate};
use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output};
use crate::launch::{Args, Grid};
use rmlx_core::fast::SDPA_ROWS_MAX;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The cache pairs of one launch: each pair's addresses (element 0), strides per batch entry,
/// KV head and position (elements), and capacity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Caches {
    k: [u64; SDPA_ROWS_MAX],
    v: [u64; SDPA_ROWS_MAX],
    kb: [i64; SDPA_ROWS_MAX],
    kh: [i64; SDPA_ROWS_MAX],
    kp: [i64; SDPA_ROWS_MAX],
    vb: [i64; SDPA_ROWS_MAX],
    vh: [i64; SDPA_ROWS_MAX],
    vp: [i64; SDPA_ROWS_MAX],
    cap: [i64; SDPA_ROWS_MAX],
}

/// The kernel for dtype `t`; `norm`: RMS-normalise the q and k heads first; `pairs`: rotated
/// pairs per lane (`ceil(dims / 64)`).
pub fn source(
    t: Dtype,
    traditional: bool,
    freqs: bool,
    norm: bool,
    pairs: usize,
) -> (String, String) {
    let (name, i1, i2, inv) = parts("rope_kv", t, traditional, freqs);
    let name = format!("{name}{}_p{pairs}", if norm { "_norm" } else { "" });
    let ct = ctype(t);
    let inv = inv.replace("loc(", "loc32(");
    let (inv_pre, inv_post) = if freqs {
        (String::new(), format!("inv[t] = {inv};"))
    } else {
        (format!("if (k < half) inv[t] = {inv};"), String::new())
    };
    let m = SDPA_ROWS_MAX;
    // the values each variant rotates and passes through: normalised or as read
    let (pre, val, pass) = if norm {
        (
            "float qs = 0.0f;
    #pragma unroll
    for (int t = 0; t < PAIRS; ++t) if ((u32)lane + 32 * t < half) qs += x1[t] * x1[t];
    #pragma unroll
    for (int t = 0; t < PAIRS; ++t) if ((u32)lane + 32 * t < half) qs += x2[t] * x2[t];
    for (i64 j = dims + lane; j < d; j += 32) { const float v = to_f(xr[j * xs]); qs += v * v; }
    const float rn = 1.0f / sqrtf(warp_sum(qs) / (float)d + eps);"
                .to_string(),
            format!(
                "const float a = to_f(from_f<{ct}>(to_f(from_f<{ct}>(x1[t] * rn)) * w1[t])), b = to_f(from_f<{ct}>(to_f(from_f<{ct}>(x2[t] * rn)) * w2[t]));"
            ),
            format!(
                "yr[j] = from_f<{ct}>(to_f(from_f<{ct}>(to_f(from_f<{ct}>(to_f(xr[j * xs]) * rn)) * to_f(wr[j]))));"
            ),
        )
    } else {
        (
            String::new(),
            "const float a = x1[t], b = x2[t];".to_string(),
            "yr[j] = xr[j * xs];".to_string(),
        )
    };
    let weights = if norm {
        "w1[t] = to_f(wr[i1]); w2[t] = to_f(wr[i2]);"
    } else {
        ""
    };
    let rot = rotate(ct, "a", "b");
    let src = format!(
        "#ifndef RMLX_RKV_CACHES
#define RMLX_RKV_CACHES
struct RkvCaches {{ u64 k[{m}]; u64 v[{m}]; i64 kb[{m}]; i64 kh[{m}]; i64 kp[{m}]; i64 vb[{m}]; i64 vh[{m}]; i64 vp[{m}]; i64 cap[{m}]; }};
#endif
extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, i64 xsb, i64 xsh, i64 xs, const i32* __restrict__ pos, i64 n_pos, const float* __restrict__ fr, i64 fro, Lay frl, const {ct}* __restrict__ nw, i64 wrows, float eps, {ct}* __restrict__ q, RkvCaches kvc, u32 n_c, u32 B, u32 nq, u32 nkv, i64 d, i64 dims, float c, float scale) {{
  RMLX_PDL_MANUAL
  rmlx_pdl_trigger();
  #define PAIRS {pairs}
  const u32 half = (u32)(dims / 2);
  const int lane = threadIdx.x & 31;
  float inv[PAIRS];
  #pragma unroll
  for (int t = 0; t < PAIRS; ++t) {{
    const u32 k = (u32)lane + 32 * t;
    inv[t] = 0.0f;
    {inv_pre}
  }}
  rmlx_pdl_wait();
  const u32 H = nq + 2 * nkv, rows = B * H;
  const u32 warps = (gridDim.x * blockDim.x) >> 5;
  for (u32 r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {{
    const u32 b = r / H, h = r - b * H;
    const {ct}* xr = x + xo + (i64)b * xsb + (i64)h * xsh;
    const u32 ci = n_c == 1 ? 0u : b, cb = n_c == 1 ? b : 0u;
    const i32 praw = pos[n_pos == 1 ? 0 : b];
    i64 p = (i64)praw;
    p = p < 0 ? 0 : (p > kvc.cap[ci] - 1 ? kvc.cap[ci] - 1 : p);
    if (h >= nq + nkv) {{
      {ct}* yr = ({ct}*)kvc.v[ci] + (i64)cb * kvc.vb[ci] + (i64)(h - nq - nkv) * kvc.vh[ci] + p * kvc.vp[ci];
      for (i64 j = lane; j < d; j += 32) yr[j] = xr[j * xs];
      continue;
    }}
    {ct}* yr = h < nq ? q + ((i64)b * nq + h) * d
                      : ({ct}*)kvc.k[ci] + (i64)cb * kvc.kb[ci] + (i64)(h - nq) * kvc.kh[ci] + p * kvc.kp[ci];
    const {ct}* wr = nw + (i64)(wrows == 1 ? 0u : h) * d;
    float x1[PAIRS], x2[PAIRS], w1[PAIRS], w2[PAIRS];
    #pragma unroll
    for (int t = 0; t < PAIRS; ++t) {{
      const u32 k = (u32)lane + 32 * t;
      x1[t] = 0.0f; x2[t] = 0.0f; w1[t] = 0.0f; w2[t] = 0.0f;
      if (k < half) {{
        const u32 i1 = {i1}, i2 = {i2};
        x1[t] = to_f(xr[(i64)i1 * xs]); x2[t] = to_f(xr[(i64)i2 * xs]);
        {weights}
        {inv_post}
      }}
    }}
    {pre}
    const float ps = __fmul_rn(__fadd_rn(0.0f, (float)praw), scale);
    #pragma unroll
    for (int t = 0; t < PAIRS; ++t) {{
      const u32 k = (u32)lane + 32 * t;
      if (k < half) {{
        const float th = __fmul_rn(ps, inv[t]);
        const float cs = cosf(th), sn = sinf(th);
        const i64 i1 = {i1}, i2 = {i2};
        {val}
        {rot}
      }}
    }}
    for (i64 j = dims + lane; j < d; j += 32) {pass}
  }}
  #undef PAIRS
}}
"
    );
    (name, src)
}

/// `[qkv, pos, freqs?, norm weight?, k_0, v_0, ..]` → `[q, k_0', v_0', ..]` (see
/// `Primitive::RopeKvWrite`); the caches are written in place where donated, copied first
/// otherwise.
pub fn rope_kv_write(
    gpu: &Arc<Gpu>,
    mut x: Vec<ArrayData>,
    (n_q, n_kv): (usize, usize),
    (dims, traditional, base, scale): (usize, bool, f32, f32),
    (has_freqs, norm): (bool, Option<f32>),
    outs: &[OutputSpec],
) -> Result<Vec<ArrayData>> {
    let bad = |m: String| Error::invalid("cuda", format!("[rope_kv_write] {m}"));
    let first_cache = 2 + has_freqs as usize + norm.is_some() as usize;
    let caches = x.split_off(first_cache.min(x.len()));
    let xd = &x[0];
    let t = xd.dtype;
    let n_c = caches.len() / 2;
    if xd.shape.len() != 4
        || xd.shape[2] != n_q + 2 * n_kv
        || !caches.len().is_multiple_of(2)
        || n_c == 0
        || n_c > SDPA_ROWS_MAX
        || outs.len() != 1 + caches.len()
        || dims == 0
        || !dims.is_multiple_of(2)
        || dims > xd.shape[3]
    {
        return Err(bad(format!(
            "qkv {:?} with {} cache arrays does not fit {n_q} + 2 x {n_kv} heads and {} outputs",
            &xd.shape[..],
            caches.len(),
            outs.len()
        )));
    }
    let (b, d) = (xd.shape[0], xd.shape[3]);
    let half = dims / 2;
    let pos = &x[1];
    if pos.dtype != Dtype::I32 || (pos.numel() != 1 && pos.numel() != b) {
        return Err(bad(format!("pos must be i32 [1] or [{b}]")));
    }
    let (_pk, pi) = contiguous_input(gpu, pos)?;
    let fi = if has_freqs {
        let f = &x[2];
        if f.dtype != Dtype::F32 || f.numel() != half {
            return Err(bad(format!("freqs must be f32 with {half} elements")));
        }
        Some(input(gpu, f)?)
    } else {
        None
    };
    let nw = norm
        .map(|_| {
            norm_rows(
                gpu,
                &x[first_cache - 1],
                (t, d, n_q + n_kv),
                "rope_kv_write",
            )
        })
        .transpose()?;
    let xi = input(gpu, xd)?;
    let (q, qptr) = output(gpu, &[b, n_q, 1, d], t)?;
    let mut table = Caches::default();
    let mut written = Vec::with_capacity(caches.len());
    for (i, a) in caches.into_iter().enumerate() {
        let (pair, is_v) = (i / 2, i % 2 == 1);
        let ok = a.dtype == t && a.shape.len() == 4 && a.shape[1] == n_kv && a.shape[3] == d;
        if !ok {
            return Err(bad(format!(
                "cache {pair} must be {t} [_, {n_kv}, S, {d}], got {} {:?}",
                a.dtype,
                &a.shape[..]
            )));
        }
        let (o, ptr) = write_target(gpu, a, t)?;
        let s = &o.strides;
        if s[3] != 1 {
            return Err(bad("a cache's last axis must be contiguous".into()));
        }
        let elem = (o.offset * t.size()) as u64;
        if is_v {
            table.v[pair] = ptr + elem;
            (table.vb[pair], table.vh[pair], table.vp[pair]) =
                (s[0] as i64, s[1] as i64, s[2] as i64);
        } else {
            table.k[pair] = ptr + elem;
            (table.kb[pair], table.kh[pair], table.kp[pair]) =
                (s[0] as i64, s[1] as i64, s[2] as i64);
            table.cap[pair] = o.shape[2] as i64;
        }
        written.push(o);
    }
    let (name, src) = source(t, traditional, has_freqs, norm.is_some(), half.div_ceil(32));
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    let s = &xd.strides;
    a.ptr(xi.ptr)
        .i64(xi.offset)
        .i64(s[0] as i64)
        .i64(s[2] as i64)
        .i64(s[3] as i64)
        .ptr(pi.base())
        .i64(pos.numel() as i64);
    match &fi {
        Some(fi) => a.ptr(fi.ptr).i64(fi.offset).push(fi.lay),
        None => a.ptr(0).i64(0).push(pi.lay),
    };
    match &nw {
        Some((_, wp, wrows)) => a.ptr(*wp).i64(*wrows as i64),
        None => a.ptr(0).i64(1),
    };
    a.f32(norm.unwrap_or(0.0))
        .ptr(qptr)
        .push(table)
        .u32(n_c as u32)
        .u32(b as u32)
        .u32(n_q as u32)
        .u32(n_kv as u32)
        .i64(d as i64)
        .i64(dims as i64)
        .f32(base.ln() / half as f32)
        .f32(scale);
    let rows = b * (n_q + 2 * n_kv);
    gpu.launch(&f, &name, Grid::rows(rows.div_ceil(4), 128), &mut a)?;
    drop(nw);
    let mut all = Vec::with_capacity(1 + written.len());
    all.push(q);
    all.extend(written);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every variant compiles with NVRTC for sm_90.
    #[test]
    fn rope_kv_kernels_compile() {
        let mut body = String::new();
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for trad in [false, true] {
                for fr in [false, true] {
                    for norm in [false, true] {
                        for pairs in [1, 2, 4] {
                            body.push_str(&source(t, trad, fr, norm, pairs).1);
                        }
                    }
                }
            }
        }
        assert_compiles("rope_kv_all", &body);
    }
}
