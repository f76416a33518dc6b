//! `fast::rope_kv_sdpa` on the GPU: a decode step's RoPE, cache write and attention in one
//! kernel, where `rope_kv_write` and `sdpa_rows` take two (and a replayed step pays a
//! dependency wait for each).
//!
//! A decode kernel (sdpa.cuh: on tensor cores, `rd_mma_attend`, for 16-bit caches of D 64 or
//! 128, else lanes over keys, `rd_lk_attend`) with a prologue: a block of
//! (row, KV head, head part, key split) rotates its own q heads and its KV head's new key from
//! the projection's raw heads with `rope_kv.rs`'s device function (the same statements, so the
//! same bits), all loads issued before the position arrives; the block whose split holds the
//! row's position writes the new key and value into the cache (one block per KV head writes;
//! the others of that split hold the same values) and folds that key into its softmax from
//! shared memory. The cache's keys before the position are read as `sdpa_rows` reads them; keys
//! after it are never visited. Where the keys are split, the launch's last block per (row, KV
//! head, head part) merges the splits (`rd_merge_last`), so the step is one launch.

use super::rope_kv::{head_source, HeadVariant, Step};
use super::sdpa::{get, mma_fits, with_splits, BlockTarget, LkGrid, Merge, RdRows};
use crate::context::Gpu;
use crate::data::{ctype, output};
use crate::launch::Args;
use rmlx_core::fast::SDPA_ROWS_MAX;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Error, Result};
use std::sync::Arc;

/// `struct RkvRows` of sdpa.cuh: row b's K and V as `sdpa_rows` takes them (addresses of its
/// batch entry's element 0, strides per KV head and per position), and its capacity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RkvRows {
    rows: RdRows,
    cap: [i64; SDPA_ROWS_MAX],
}

/// The fused kernel for rotation variant `v`, `g` query heads of `D = 32 dl` per block, its
/// attention on tensor cores (`mma`, `rd_mma_attend`: see [`mma_fits`]) or CUDA cores
/// (`rd_lk_attend`).
pub fn source(v: HeadVariant, g: usize, dl: usize, mma: bool) -> (String, String) {
    let (f, head) = head_source(v);
    let name = format!(
        "rs_sdpa_{}_g{g}_d{dl}{}",
        f.replacen("rkv_head", "rkv", 1),
        if mma { "_mma" } else { "" }
    );
    let ct = ctype(v.t);
    let pairs = v.pairs;
    // the CUDA-core key loop wants q as scaled floats, the tensor cores the rotated heads as
    // they are (`st`)
    let (sq_decl, sq_fill, attend) = if mma {
        (
            "",
            "",
            format!("rd_mma_attend<{ct}, G, D>(&st[0][0], D, reinterpret_cast<const {ct}*>(rows.k[bb]), reinterpret_cast<const {ct}*>(rows.v[bb]), out, part_ml, part_acc, kl, vl, at, Hq, (int)p, n_split, split_len, scale, has_new ? snew[0] : nullptr, has_new ? snew[1] : nullptr, tickets);"),
        )
    } else {
        (
            "__shared__ __align__(16) float sq[G][D];",
            "for (int i = threadIdx.x; i < G * D; i += blockDim.x) sq[i / D][i % D] = to_f(st[i / D][i % D]) * scale;",
            format!("const Sd4 ml = {{0, {{0, 0, 0, 0}}}};\n  rd_lk_attend<{ct}, float, 0, G, DL>(sq, reinterpret_cast<const {ct}*>(rows.k[bb]), reinterpret_cast<const {ct}*>(rows.v[bb]), nullptr, out, part_ml, part_acc, kl, vl, ml, at, Hq, (int)p, n_split, split_len, has_new ? snew[0] : nullptr, has_new ? snew[1] : nullptr, tickets);"),
        )
    };
    // `__launch_bounds__(128, 1)`: without the minimum, ptxas held SmolLM2's variant (3 heads
    // of D = 64) to 128 registers and spilled its key loop; it takes ~185
    let src = format!(
        "{head}extern \"C\" __global__ void __launch_bounds__(128, 1) {name}(const {ct}* __restrict__ x, i64 xo, i64 xsb, i64 xsh, i64 xs, const i32* __restrict__ pos, i64 n_pos, const float* __restrict__ fr, i64 fro, Lay frl, const {ct}* __restrict__ nw, i64 wrows, float eps, RkvRows rkv, {ct}* __restrict__ out, float* part_ml, float* part_acc, int Hq, int Hkv, i64 d, i64 dims, float c, float rscale, float scale, int n_split, int split_len, unsigned* tickets) {{
  RMLX_PDL_MANUAL
  rmlx_pdl_trigger();
  const RdRows& rows = rkv.rows;
  constexpr int G = {g}, DL = {dl}, D = 32 * DL;
  {sq_decl}
  __shared__ float snew[2][D];
  __shared__ __align__(16) {ct} st[G + 2][D];
  const u32 half = (u32)(dims / 2);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float inv[{pairs}];
  {f}_inv<{pairs}>(inv, lane, half, c);
  const RdPlace at = rd_place<G>(Hq, Hkv);
  rmlx_pdl_wait();
  // every load of the prologue is issued before any is used: the position, the new value (an
  // element per thread) and each warp's head (the tasks do not wait on the position: every
  // block rotates its KV head's k, and only the block whose split holds the position keeps it)
  const i64 bb = at.bb;
  const i32 praw = pos[n_pos == 1 ? 0 : bb];
  const {ct}* xb = x + xo + bb * xsb;
  const {ct}* xv = xb + (i64)(Hq + Hkv + at.hk) * xsh;
  constexpr int VN = (D + 32 * RD_NW - 1) / (32 * RD_NW);
  {ct} vraw[VN];
  #pragma unroll
  for (int e = 0; e < VN; ++e) {{
    const int j = threadIdx.x + 32 * RD_NW * e;
    if (j < D) vraw[e] = xv[(i64)j * xs];
  }}
  for (int t = warp; t < G + 1; t += RD_NW) {{
    const int h = t < G ? at.h0 + t : Hq + at.hk;
    {f}<{pairs}>(xb + (i64)h * xsh, xs, st[t], nw + (i64)(wrows == 1 ? 0 : h) * d, inv, fr, fro, frl, praw, half, d, dims, rscale, eps, lane);
  }}
  #pragma unroll
  for (int e = 0; e < VN; ++e) {{
    const int j = threadIdx.x + 32 * RD_NW * e;
    if (j < D) st[G + 1][j] = vraw[e];
  }}
  const i64 cap = rkv.cap[bb];
  const i64 p = praw < 0 ? 0 : ((i64)praw > cap - 1 ? cap - 1 : (i64)praw);
  const i64 k0 = (i64)at.sp * split_len;
  const bool has_new = k0 <= p && p < k0 + split_len;
  __syncthreads();
  {sq_fill}
  if (has_new) {{
    {ct}* kd = ({ct}*)rows.k[bb] + at.hk * rows.kh[bb] + p * rows.kr[bb];
    {ct}* vd = ({ct}*)rows.v[bb] + at.hk * rows.vh[bb] + p * rows.vr[bb];
    for (int i = threadIdx.x; i < 2 * D; i += blockDim.x) {{
      const {ct} e = st[G + i / D][i % D];
      snew[i / D][i % D] = to_f(e);
      if (at.gp == 0) (i < D ? kd : vd)[i % D] = e;
    }}
  }}
  __syncthreads();
  const Sd4 kl = {{0, {{0, rows.kh[bb], rows.kr[bb], 1}}}};
  const Sd4 vl = {{0, {{0, rows.vh[bb], rows.vr[bb], 1}}}};
  // row bb's own buffers (batch stride 0: bb picks the output rows only), keys before the position
  {attend}
}}
"
    );
    (name, src)
}

/// `[qkv, pos, freqs?, norm weight?, k_0, v_0, ..]` → `[o, k_0', v_0', ..]`
/// (`Primitive::RopeKvWrite` with `attend`): the caches are written as `rope_kv_write` writes
/// them, and o `[B, n_q, 1, D]` is row b's attention over positions `0..=pos[b]` of its cache
/// (`pos` clamped into the cache) with scale `scale`. A cache per row, or one cache of batch B.
pub fn rope_kv_sdpa(
    gpu: &Arc<Gpu>,
    x: Vec<ArrayData>,
    heads: (usize, usize),
    rope: (usize, bool, f32, f32),
    kinds: (bool, Option<f32>),
    scale: f32,
    outs: &[OutputSpec],
) -> Result<Vec<ArrayData>> {
    let bad = |m: String| Error::invalid("cuda", format!("[rope_kv_sdpa] {m}"));
    let step = Step::new(gpu, x, heads, rope, kinds, outs.len(), "rope_kv_sdpa")?;
    let (b, n_q, n_kv, d) = (step.b, step.n_q, step.n_kv, step.d);
    let t = step.variant.t;
    let (g, dl) = (n_q / n_kv, d / 32);
    let n_c = step.pairs.len();
    if !n_q.is_multiple_of(n_kv)
        || !(1..=8).contains(&g)
        || !d.is_multiple_of(32)
        || ![1, 2, 4, 8].contains(&dl)
        || (n_c != b && n_c != 1)
        || b > SDPA_ROWS_MAX
    {
        return Err(bad(format!(
            "{n_q} query heads over {n_kv} KV heads of D = {d}, {b} rows and {n_c} caches: the kernel takes at most 8 query heads per KV head, D of 32 to 256 and a cache per row (or one)"
        )));
    }
    // row r's buffers: its own cache, or entry r of the one cache
    let mut table = RkvRows::default();
    let e = t.size() as u64;
    for r in 0..b {
        let (c, entry) = if n_c == b { (r, 0) } else { (0, r as i64) };
        let p = &step.pairs[c];
        table.rows.k[r] = p.k + (entry * p.ks[0]) as u64 * e;
        table.rows.v[r] = p.v + (entry * p.vs[0]) as u64 * e;
        [table.rows.kh[r], table.rows.kr[r]] = [p.ks[1], p.ks[2]];
        [table.rows.vh[r], table.rows.vr[r]] = [p.vs[1], p.vs[2]];
        table.cap[r] = p.cap;
    }
    // the lanes' 16-byte loads need every K and V row aligned
    // (a head stride counts only where there are heads to step over, as in sdpa.rs
    // `rows_aligned`: a reshape may leave an axis of extent 1 at any stride)
    let steps = |s: i64| (s.unsigned_abs() * e).is_multiple_of(16);
    let aligned = (0..b).all(|r| {
        [table.rows.k[r], table.rows.v[r]]
            .iter()
            .all(|a| a.is_multiple_of(16))
            && steps(table.rows.kr[r])
            && steps(table.rows.vr[r])
            && (n_kv == 1 || (steps(table.rows.kh[r]) && steps(table.rows.vh[r])))
    });
    if !aligned {
        return Err(bad(
            "every cache row must start on a 16-byte boundary".into()
        ));
    }
    let smax = table.cap[..b].iter().copied().max().unwrap_or(1) as usize;
    let target = if b == 1 {
        BlockTarget::single()
    } else {
        BlockTarget::rows()
    };
    let mma = mma_fits(t, g, d, b);
    let grid = LkGrid::new(target, b, n_kv, g, dl, smax, mma);
    let (o, optr) = output(gpu, &[b, n_q, 1, d], t)?;
    let (name, body) = source(step.variant, grid.heads, dl, mma);
    let f = get(gpu, &name, &body)?;
    with_splits(
        gpu,
        (&f, &name, grid.blocks, grid.splits, Merge::LastBlock),
        (t, optr, b * n_q, d),
        |a: &mut Args, pml, pacc| {
            step.head_args(a);
            a.push(table)
                .ptr(optr)
                .ptr(pml)
                .ptr(pacc)
                .i32(n_q as i32)
                .i32(n_kv as i32);
            step.rotation_args(a);
            a.f32(scale);
        },
    )?;
    let mut all = Vec::with_capacity(1 + step.written.len());
    all.push(o);
    all.extend(step.written);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;
    use crate::kernels::MMA_CUH;
    use crate::ops::sdpa::SDPA_CUH;
    use rmlx_core::Dtype;

    /// The variants a model takes compile with NVRTC for sm_90.
    #[test]
    fn rope_kv_sdpa_kernels_compile() {
        let mut body = format!("{MMA_CUH}\n{SDPA_CUH}\n");
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (traditional, freqs, norm) in [
                (false, false, false),
                (false, true, false),
                (false, false, true),
                (true, false, false),
            ] {
                for (g, dl, pairs) in [(2, 4, 2), (1, 2, 1), (8, 1, 1), (4, 8, 4), (4, 4, 2)] {
                    let v = HeadVariant {
                        t,
                        traditional,
                        freqs,
                        norm,
                        pairs,
                    };
                    body.push_str(&source(v, g, dl, false).1);
                    if mma_fits(t, g, 32 * dl, 1) {
                        body.push_str(&source(v, g, dl, true).1);
                    }
                }
            }
        }
        assert_compiles("rope_kv_sdpa_all", &body);
    }
}
