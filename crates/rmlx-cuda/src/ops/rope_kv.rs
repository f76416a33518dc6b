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
use crate::data::{contiguous_input, ctype, input, output, DevIn};
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

/// A rotation variant: dtype, interleaved pairs (`traditional`), given frequencies, an RMS norm
/// of the q and k heads first, and rotated pairs per lane (`ceil(dims / 64)`).
#[derive(Clone, Copy, Debug)]
pub struct HeadVariant {
    pub t: Dtype,
    pub traditional: bool,
    pub freqs: bool,
    pub norm: bool,
    pub pairs: usize,
}

/// The device functions that rotate one head with one warp, for `v`: `{f}_inv` (the lanes'
/// inverse frequencies, before the dependency wait where they are computed, not read) and
/// `{f}` (head `xr` normalised where the variant says, rotated at position `praw` into `yr`, the
/// features past `dims` passed through). Returns `f` and the source (guarded: several kernels
/// of a module may include it). The rotation is `rope.rs`'s arithmetic, statement for statement,
/// so the values are those of `rope` / `rms_norm_rope` bit for bit.
pub fn head_source(v: HeadVariant) -> (String, String) {
    let HeadVariant {
        t,
        traditional,
        freqs,
        norm,
        pairs,
    } = v;
    let (name, i1, i2, inv) = parts("rkv_head", t, traditional, freqs);
    let f = format!("{name}{}_p{pairs}", if norm { "_norm" } else { "" });
    let ct = ctype(t);
    let inv = inv.replace("loc(", "loc32(");
    let (inv_pre, inv_post) = if freqs {
        (String::new(), format!("inv[t] = {inv};"))
    } else {
        (format!("if (k < half) inv[t] = {inv};"), String::new())
    };
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
    let guard = f.to_uppercase();
    let src = format!(
        "#ifndef RMLX_RKV_SINCOS
#define RMLX_RKV_SINCOS
// cosf and sinf apart: their rarely taken wide-argument path (a local array) inlined into the
// attention kernel that rotates its own heads capped its registers at 128 and spilled its loop
__device__ __noinline__ float2 rkv_sincos(float th) {{ float2 r; r.x = cosf(th); r.y = sinf(th); return r; }}
#endif
#ifndef RMLX_{guard}
#define RMLX_{guard}
template <int PAIRS>
__device__ __forceinline__ void {f}_inv(float (&inv)[PAIRS], int lane, u32 half, float c) {{
  #pragma unroll
  for (int t = 0; t < PAIRS; ++t) {{
    const u32 k = (u32)lane + 32 * t;
    inv[t] = 0.0f;
    {inv_pre}
  }}
}}
template <int PAIRS>
__device__ __forceinline__ void {f}(const {ct}* __restrict__ xr, i64 xs, {ct}* __restrict__ yr, const {ct}* __restrict__ wr, float (&inv)[PAIRS], const float* __restrict__ fr, i64 fro, const Lay& frl, i32 praw, u32 half, i64 d, i64 dims, float scale, float eps, int lane) {{
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
      const float2 csn = rkv_sincos(th);
      const float cs = csn.x, sn = csn.y;
      const i64 i1 = {i1}, i2 = {i2};
      {val}
      {rot}
    }}
  }}
  for (i64 j = dims + lane; j < d; j += 32) {pass}
}}
#endif
"
    );
    (f, src)
}

/// The kernel for rotation variant `v`: a warp per (row, head), q heads rotated into q, k heads
/// into their cache, v heads copied there.
pub fn source(v: HeadVariant) -> (String, String) {
    let (f, head) = head_source(v);
    let name = f.replacen("rkv_head", "rope_kv", 1);
    let ct = ctype(v.t);
    let pairs = v.pairs;
    let m = SDPA_ROWS_MAX;
    let src = format!(
        "{head}#ifndef RMLX_RKV_CACHES
#define RMLX_RKV_CACHES
struct RkvCaches {{ u64 k[{m}]; u64 v[{m}]; i64 kb[{m}]; i64 kh[{m}]; i64 kp[{m}]; i64 vb[{m}]; i64 vh[{m}]; i64 vp[{m}]; i64 cap[{m}]; }};
#endif
extern \"C\" __global__ void {name}(const {ct}* __restrict__ x, i64 xo, i64 xsb, i64 xsh, i64 xs, const i32* __restrict__ pos, i64 n_pos, const float* __restrict__ fr, i64 fro, Lay frl, const {ct}* __restrict__ nw, i64 wrows, float eps, {ct}* __restrict__ q, RkvCaches kvc, u32 n_c, u32 B, u32 nq, u32 nkv, i64 d, i64 dims, float c, float scale) {{
  RMLX_PDL_MANUAL
  rmlx_pdl_trigger();
  const u32 half = (u32)(dims / 2);
  const int lane = threadIdx.x & 31;
  float inv[{pairs}];
  {f}_inv<{pairs}>(inv, lane, half, c);
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
    {f}<{pairs}>(xr, xs, yr, nw + (i64)(wrows == 1 ? 0u : h) * d, inv, fr, fro, frl, praw, half, d, dims, scale, eps, lane);
  }}
}}
"
    );
    (name, src)
}

/// One cache pair as the kernels address it: K and V at their element 0, strides per batch
/// entry, KV head and position (elements), and capacity (positions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachePair {
    pub k: u64,
    pub v: u64,
    pub ks: [i64; 3],
    pub vs: [i64; 3],
    pub cap: i64,
}

/// A decode step's inputs, checked and on the device, as `rope_kv_write` and `rope_kv_sdpa`
/// take them: `[qkv, pos, freqs?, norm weight?, k_0, v_0, ..]`. Holds the inputs until the
/// launch; `written` are the caches after the write (in place where donated).
pub(crate) struct Step {
    pub variant: HeadVariant,
    pub b: usize,
    pub d: usize,
    pub n_q: usize,
    pub n_kv: usize,
    pub dims: usize,
    pub pairs: Vec<CachePair>,
    pub written: Vec<ArrayData>,
    x: ArrayData,
    xi: DevIn,
    pos: (ArrayData, DevIn),
    fi: Option<DevIn>,
    nw: Option<(ArrayData, u64, usize)>,
    eps: f32,
    c: f32,
    scale: f32,
}

impl Step {
    /// Checks `x` against the op's attributes (`op` names it in errors) and readies the caches.
    pub fn new(
        gpu: &Arc<Gpu>,
        mut x: Vec<ArrayData>,
        (n_q, n_kv): (usize, usize),
        (dims, traditional, base, scale): (usize, bool, f32, f32),
        (has_freqs, norm): (bool, Option<f32>),
        n_outs: usize,
        op: &str,
    ) -> Result<Step> {
        let bad = |m: String| Error::invalid("cuda", format!("[{op}] {m}"));
        let first_cache = 2 + has_freqs as usize + norm.is_some() as usize;
        let caches = x.split_off(first_cache.min(x.len()));
        let xd = x[0].clone();
        let t = xd.dtype;
        let n_c = caches.len() / 2;
        if xd.shape.len() != 4
            || xd.shape[2] != n_q + 2 * n_kv
            || !caches.len().is_multiple_of(2)
            || n_c == 0
            || n_c > SDPA_ROWS_MAX
            || n_outs != 1 + caches.len()
            || dims == 0
            || !dims.is_multiple_of(2)
            || dims > xd.shape[3]
        {
            return Err(bad(format!(
                "qkv {:?} with {} cache arrays does not fit {n_q} + 2 x {n_kv} heads and {n_outs} outputs",
                &xd.shape[..],
                caches.len(),
            )));
        }
        let (b, d) = (xd.shape[0], xd.shape[3]);
        let half = dims / 2;
        let pos = &x[1];
        if pos.dtype != Dtype::I32 || (pos.numel() != 1 && pos.numel() != b) {
            return Err(bad(format!("pos must be i32 [1] or [{b}]")));
        }
        let pos = contiguous_input(gpu, pos)?;
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
            .map(|_| norm_rows(gpu, &x[first_cache - 1], (t, d, n_q + n_kv), op))
            .transpose()?;
        let xi = input(gpu, &xd)?;
        let mut pairs = Vec::with_capacity(n_c);
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
            let at = ptr + (o.offset * t.size()) as u64;
            let st = [s[0] as i64, s[1] as i64, s[2] as i64];
            if is_v {
                let p: &mut CachePair = pairs.last_mut().expect("k before v");
                (p.v, p.vs) = (at, st);
            } else {
                pairs.push(CachePair {
                    k: at,
                    v: 0,
                    ks: st,
                    vs: [0; 3],
                    cap: o.shape[2] as i64,
                });
            }
            written.push(o);
        }
        let variant = HeadVariant {
            t,
            traditional,
            freqs: has_freqs,
            norm: norm.is_some(),
            pairs: half.div_ceil(32),
        };
        Ok(Step {
            variant,
            b,
            d,
            n_q,
            n_kv,
            dims,
            pairs,
            written,
            x: xd,
            xi,
            pos,
            fi,
            nw,
            eps: norm.unwrap_or(0.0),
            c: base.ln() / half as f32,
            scale,
        })
    }

    /// The arguments both kernels start with: qkv and its strides, the positions, the
    /// frequencies, the norm weight and eps.
    pub fn head_args(&self, a: &mut Args) {
        let (xi, (pos, pi)) = (&self.xi, &self.pos);
        let s = &self.x.strides;
        a.ptr(xi.ptr)
            .i64(xi.offset)
            .i64(s[0] as i64)
            .i64(s[2] as i64)
            .i64(s[3] as i64)
            .ptr(pi.base())
            .i64(pos.numel() as i64);
        match &self.fi {
            Some(fi) => a.ptr(fi.ptr).i64(fi.offset).push(fi.lay),
            None => a.ptr(0).i64(0).push(pi.lay),
        };
        match &self.nw {
            Some((_, wp, wrows)) => a.ptr(*wp).i64(*wrows as i64),
            None => a.ptr(0).i64(1),
        };
        a.f32(self.eps);
    }

    /// The arguments both kernels end their rotation part with: head size, rotated features,
    /// the frequency exponent step and the position scale.
    pub fn rotation_args(&self, a: &mut Args) {
        a.i64(self.d as i64)
            .i64(self.dims as i64)
            .f32(self.c)
            .f32(self.scale);
    }
}

/// `[qkv, pos, freqs?, norm weight?, k_0, v_0, ..]` → `[q, k_0', v_0', ..]` (see
/// `Primitive::RopeKvWrite`); the caches are written in place where donated, copied first
/// otherwise.
pub fn rope_kv_write(
    gpu: &Arc<Gpu>,
    x: Vec<ArrayData>,
    heads: (usize, usize),
    rope: (usize, bool, f32, f32),
    kinds: (bool, Option<f32>),
    outs: &[OutputSpec],
) -> Result<Vec<ArrayData>> {
    let step = Step::new(gpu, x, heads, rope, kinds, outs.len(), "rope_kv_write")?;
    let (b, n_q, n_kv, d) = (step.b, step.n_q, step.n_kv, step.d);
    let (q, qptr) = output(gpu, &[b, n_q, 1, d], step.variant.t)?;
    let mut table = Caches::default();
    for (i, p) in step.pairs.iter().enumerate() {
        (table.k[i], table.v[i], table.cap[i]) = (p.k, p.v, p.cap);
        [table.kb[i], table.kh[i], table.kp[i]] = p.ks;
        [table.vb[i], table.vh[i], table.vp[i]] = p.vs;
    }
    let (name, src) = source(step.variant);
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    step.head_args(&mut a);
    a.ptr(qptr)
        .push(table)
        .u32(step.pairs.len() as u32)
        .u32(b as u32)
        .u32(n_q as u32)
        .u32(n_kv as u32);
    step.rotation_args(&mut a);
    let rows = b * (n_q + 2 * n_kv);
    gpu.launch(&f, &name, Grid::rows(rows.div_ceil(4), 128), &mut a)?;
    let mut all = Vec::with_capacity(1 + step.written.len());
    all.push(q);
    all.extend(step.written);
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
                            let v = HeadVariant {
                                t,
                                traditional: trad,
                                freqs: fr,
                                norm,
                                pairs,
                            };
                            body.push_str(&source(v).1);
                        }
                    }
                }
            }
        }
        assert_compiles("rope_kv_all", &body);
    }
}
