//! `gather_qmm` and `gather_mm` on the GPU (kernels in `kernels/gather_matmul.cuh`).
//!
//! - `gather_qmm`, transposed weights, K a multiple of 32: the decode GEMV of
//!   `quantized.rs` run once per index entry (grid y strides over the entries), in chunks of at
//!   most 8 rows of x; only the selected experts' weights are read. Sorted prefill entries that
//!   share an expert meet its weights in L2 one after another.
//! - anything else (non-transposed weights, other K): one warp per output element.
//! - `gather_mm`: one warp per output element over strided `b` (a transposed view of the
//!   stacked `[E, N, K]` weights is read in place, coalesced along K).
//!
//! Correctness first: the grouped tensor-core prefill kernel is later work.

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag};
use crate::kernels::MMA_CUH;
use crate::launch::{Args, Grid};
use crate::ops::elementwise as ew;
use crate::ops::quantized::{decode_rows, DECODE_MAX_ROWS, QUANT_CUH};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The device code of the gather kernels (compiled after `quantized.cuh`).
pub const GATHER_CUH: &str = include_str!("../../kernels/gather_matmul.cuh");

fn get(gpu: &Arc<Gpu>, name: &str, wrapper: &str) -> Result<cudarc::driver::CudaFunction> {
    gpu.kernels.get(
        &gpu.ctx,
        name,
        &format!("{QUANT_CUH}\n{MMA_CUH}\n{GATHER_CUH}\n{wrapper}"),
    )
}

/// The decode gather kernel (transposed weights) for `mm` rows of x at most.
pub fn gather_qmv_source(x: Dtype, s: Dtype, o: Dtype, bits: usize, mm: usize) -> (String, String) {
    let name = format!("rg_qmv_t_{}_{}_{}_b{bits}_m{mm}", tag(x), tag(s), tag(o));
    let (cx, cs, co) = (ctype(x), ctype(s), ctype(o));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {cx}* x, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const u32* lhs, const u32* rhs, i64 nb, i64 bx, i64 ne, int M, i64 N, i64 K, int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 ybs) {{\n  rg_gather_qmv_t<{cx}, {cs}, {co}, {bits}, {mm}>(x, w, s, b, y, lhs, rhs, nb, bx, ne, M, N, K, gs_shift, xbs, wbs, sbs, ybs);\n}}\n"
    );
    (name, src)
}

/// The tile-listing kernel of the grouped prefill product.
pub fn gather_tiles_source() -> (String, String) {
    let name = "rg_tiles_k".to_string();
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(1024) {name}(const u32* rhs, i64 nb, int M, i64 ne, u32* runs, RgTile* tiles, u32* ntiles) {{\n  rg_tiles(rhs, nb, M, ne, runs, tiles, ntiles);\n}}\n"
    );
    (name, src)
}

/// The grouped tensor-core prefill kernel (x of a 16-bit float dtype). Registers are capped for
/// two blocks per SM (`__launch_bounds__(256, 2)`): 1.01× the uncapped kernel's prefill on an
/// H200, and 151 against 188 µs per call where a minimum of one block was asked for.
pub fn gather_mma_source(x: Dtype, s: Dtype, o: Dtype, bits: usize) -> (String, String) {
    let name = format!("rg_qmm_mma_{}_{}_{}_b{bits}", tag(x), tag(s), tag(o));
    let (cx, cs, co) = (ctype(x), ctype(s), ctype(o));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(256, 2) {name}(const {cx}* x, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const u32* lhs, const RgTile* tiles, const u32* ntiles, i64 bx, int M, i64 N, i64 K, int gs_shift, i64 wbs, i64 sbs) {{\n  rg_qmm_mma<{cx}, {cs}, {co}, {bits}>(x, w, s, b, y, lhs, tiles, ntiles, bx, M, N, K, gs_shift, wbs, sbs);\n}}\n"
    );
    (name, src)
}

/// The any-shape gather_qmm kernel.
pub fn gather_qmm_any_source(x: Dtype, s: Dtype, o: Dtype) -> (String, String) {
    let name = format!("rg_qmm_any_{}_{}_{}", tag(x), tag(s), tag(o));
    let (cx, cs, co) = (ctype(x), ctype(s), ctype(o));
    let src = format!(
        "extern \"C\" __global__ void {name}(const {cx}* x, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const u32* lhs, const u32* rhs, i64 nb, i64 bx, i64 ne, i64 M, i64 N, i64 K, int gs, int bits, int tr) {{\n  rg_gather_qmm_any<{cx}, {cs}, {co}>(x, w, s, b, y, lhs, rhs, nb, bx, ne, M, N, K, gs, bits, tr);\n}}\n"
    );
    (name, src)
}

/// The float gather_mm kernel.
pub fn gather_mm_source(t: Dtype) -> (String, String) {
    let name = format!("rg_mm_{}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {c}* a, const {c}* b, {c}* y, const u32* lhs, const u32* rhs, i64 nb, i64 bx, i64 ne, i64 M, i64 N, i64 K, i64 be, i64 bk, i64 bn) {{\n  rg_gather_mm<{c}>(a, b, y, lhs, rhs, nb, bx, ne, M, N, K, be, bk, bn);\n}}\n"
    );
    (name, src)
}

fn check_indices(op: &str, lhs: &ArrayData, rhs: &ArrayData) -> Result<()> {
    if lhs.dtype != Dtype::U32 || rhs.dtype != Dtype::U32 || lhs.shape != rhs.shape {
        return Err(Error::invalid(
            "cuda",
            format!("[{op}] expected u32 index arrays of one shape"),
        ));
    }
    Ok(())
}

/// `[x, wq, scales, biases, lhs, rhs]` → `[B, M, N]` (see `Primitive::GatherQmm`).
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    group_size: usize,
    bits: usize,
    transpose: bool,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "gather_qmm";
    if x.len() != 6 || x[0].shape.len() != 3 || x[1].shape.len() != 3 {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] expected [x [Bx, M, K], wq [E, .., ..], scales, biases, lhs, rhs]"),
        ));
    }
    check_indices(OP, &x[4], &x[5])?;
    let (xa, wa, sa) = (&x[0], &x[1], &x[2]);
    if !xa.dtype.is_float() || !sa.dtype.is_float() || !od.is_float() || sa.dtype != x[3].dtype {
        return Err(Error::dtype(
            "cuda",
            format!("[{OP}] x, scales and biases must be float"),
        ));
    }
    let (bx, m, k) = (xa.shape[0], xa.shape[1], xa.shape[2]);
    let ne = wa.shape[0];
    let n = shape[2];
    let nb = shape[0];
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if k == 0 || ne == 0 || bx == 0 {
        return ew::arange(gpu, 0.0, 0.0, shape, od);
    }
    let (xd, xp) = decode_rows(gpu, xa)?;
    let (_kw, wi) = contiguous_input(gpu, wa)?;
    let (_ks, si) = contiguous_input(gpu, sa)?;
    let (_kb, bi) = contiguous_input(gpu, &x[3])?;
    let (_kl, li) = contiguous_input(gpu, &x[4])?;
    let (_kr, ri) = contiguous_input(gpu, &x[5])?;
    let (wbs, sbs) = (
        (wa.shape[1] * wa.shape[2]) as i64,
        (sa.shape[1] * sa.shape[2]) as i64,
    );
    if grouped_prefill(xa.dtype, transpose, k, nb * m) {
        let io = Prefill {
            x: xp,
            w: wi.base(),
            s: si.base(),
            b: bi.base(),
            y: yptr,
            lhs: li.base(),
            rhs: ri.base(),
        };
        let dims = (nb, bx, ne, m, n, k);
        grouped_qmm(
            gpu,
            io,
            dims,
            (xa.dtype, sa.dtype, od),
            group_size,
            bits,
            (wbs, sbs),
        )?;
        drop(xd);
        return Ok(out);
    }
    if transpose && k.is_multiple_of(32) {
        // rows of x in chunks of at most DECODE_MAX_ROWS (each chunk re-reads the expert)
        for m0 in (0..m).step_by(DECODE_MAX_ROWS) {
            let mc = (m - m0).min(DECODE_MAX_ROWS);
            let mm = match mc {
                1 => 1,
                2 => 2,
                3 | 4 => 4,
                _ => 8,
            };
            let (name, src) = gather_qmv_source(xa.dtype, sa.dtype, od, bits, mm);
            let f = get(gpu, &name, &src)?;
            let esz = |d: Dtype| d.size() as u64;
            let mut a = Args::new();
            a.ptr(xp + (m0 * k) as u64 * esz(xa.dtype))
                .ptr(wi.base())
                .ptr(si.base())
                .ptr(bi.base())
                .ptr(yptr + (m0 * n) as u64 * esz(od))
                .ptr(li.base())
                .ptr(ri.base())
                .i64(nb as i64)
                .i64(bx as i64)
                .i64(ne as i64)
                .i32(mc as i32)
                .i64(n as i64)
                .i64(k as i64)
                .i32(group_size.trailing_zeros() as i32)
                .i64((m * k) as i64)
                .i64(wbs)
                .i64(sbs)
                .i64((m * n) as i64);
            let g = Grid {
                grid: (n.div_ceil(16) as u32, nb.min(65_535) as u32, 1),
                block: (128, 1, 1),
                shared: 0,
            };
            gpu.launch(&f, &name, g, &mut a)?;
        }
        drop(xd);
        return Ok(out);
    }
    let (name, src) = gather_qmm_any_source(xa.dtype, sa.dtype, od);
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    a.ptr(xp)
        .ptr(wi.base())
        .ptr(si.base())
        .ptr(bi.base())
        .ptr(yptr)
        .ptr(li.base())
        .ptr(ri.base())
        .i64(nb as i64)
        .i64(bx as i64)
        .i64(ne as i64)
        .i64(m as i64)
        .i64(n as i64)
        .i64(k as i64)
        .i32(group_size as i32)
        .i32(bits as i32)
        .i32(transpose as i32);
    gpu.launch(&f, &name, Grid::elems(nb * m * n * 32), &mut a)?;
    drop(xd);
    Ok(out)
}

/// Rows of the product from which prefill takes the grouped tensor-core kernel (below, the
/// decode kernel streams each expert once per row, which costs less than listing tiles).
const GROUPED_MIN_ROWS: usize = 32;

/// Codes per step of the grouped kernel along K (`RG_BK`), and its tile sizes (`RG_BM` rows of
/// the product by `RG_BN` weight rows).
const RG_BK: usize = 64;
const RG_BM: usize = 64;
const RG_BN: usize = 128;

/// Whether a product takes the grouped tensor-core kernel: transposed weights, 16-bit float x,
/// K in whole steps, enough rows (and not too many); `RMLX_GROUPED_QMM=0` switches it off (an
/// ablation switch).
fn grouped_prefill(xd: Dtype, transpose: bool, k: usize, rows: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_GROUPED_QMM", true)
        && transpose
        && matches!(xd, Dtype::BF16 | Dtype::F16)
        && k.is_multiple_of(RG_BK)
        && rows >= GROUPED_MIN_ROWS
        && rows < i32::MAX as usize / 2 // tile rows are 32-bit on the device
}

/// Device addresses of a grouped product's operands.
struct Prefill {
    x: u64,
    w: u64,
    s: u64,
    b: u64,
    y: u64,
    lhs: u64,
    rhs: u64,
}

/// The grouped prefill product: `rg_tiles` lists the tiles of rows that share a matrix, then
/// `rg_qmm_mma` runs over them. `dims`: (entries, x batches, matrices, M, N, K).
fn grouped_qmm(
    gpu: &Arc<Gpu>,
    io: Prefill,
    (nb, bx, ne, m, n, k): (usize, usize, usize, usize, usize, usize),
    (xd, sd, od): (Dtype, Dtype, Dtype),
    group_size: usize,
    bits: usize,
    (wbs, sbs): (i64, i64),
) -> Result<()> {
    // at most one partial tile per run, and runs are at most the entries (unsorted)
    let max_tiles = (nb * m).div_ceil(RG_BM) + nb;
    // one scratch buffer: tiles (4 words each), their count, the runs (nb + 1)
    let (_scratch, sp) = output(gpu, &[max_tiles * 4 + 1 + nb + 1], Dtype::U32)?;
    let (tiles, count, runs) = (
        sp,
        sp + (max_tiles * 16) as u64,
        sp + (max_tiles * 16 + 4) as u64,
    );
    let (tn, ts) = gather_tiles_source();
    let tf = get(gpu, &tn, &ts)?;
    let mut a = Args::new();
    a.ptr(io.rhs)
        .i64(nb as i64)
        .i32(m as i32)
        .i64(ne as i64)
        .ptr(runs)
        .ptr(tiles)
        .ptr(count);
    let one = Grid {
        grid: (1, 1, 1),
        block: (1024, 1, 1),
        shared: 0,
    };
    gpu.launch(&tf, &tn, one, &mut a)?;
    // sorted entries make at most one partial tile per matrix; blocks loop over any excess
    let slots = (nb * m).div_ceil(RG_BM) + nb.min(ne);
    let (name, src) = gather_mma_source(xd, sd, od, bits);
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    a.ptr(io.x)
        .ptr(io.w)
        .ptr(io.s)
        .ptr(io.b)
        .ptr(io.y)
        .ptr(io.lhs)
        .ptr(tiles)
        .ptr(count)
        .i64(bx as i64)
        .i32(m as i32)
        .i64(n as i64)
        .i64(k as i64)
        .i32(group_size.trailing_zeros() as i32)
        .i64(wbs)
        .i64(sbs);
    let g = Grid {
        grid: (n.div_ceil(RG_BN) as u32, slots.min(65_535) as u32, 1),
        block: (256, 1, 1),
        shared: 0,
    };
    gpu.launch(&f, &name, g, &mut a)
}

/// `[a, b, lhs, rhs]` → `[B, M, N]` (see `Primitive::GatherMm`).
pub fn gather_mm(gpu: &Arc<Gpu>, x: &[ArrayData], shape: &[usize], od: Dtype) -> Result<ArrayData> {
    const OP: &str = "gather_mm";
    if x.len() != 4 || x[0].shape.len() != 3 || x[1].shape.len() != 3 {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] expected [a [Ba, M, K], b [Bb, K, N], lhs, rhs]"),
        ));
    }
    check_indices(OP, &x[2], &x[3])?;
    let (aa, ba) = (&x[0], &x[1]);
    if aa.dtype != od || ba.dtype != od || !od.is_float() {
        return Err(Error::dtype(
            "cuda",
            format!("[{OP}] a, b and the output must share one float dtype"),
        ));
    }
    if ba.strides.iter().any(|&s| s < 0) {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] b must have non-negative strides"),
        ));
    }
    let (bx, m, k) = (aa.shape[0], aa.shape[1], aa.shape[2]);
    let (ne, n) = (ba.shape[0], ba.shape[2]);
    let nb = shape[0];
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if k == 0 || ne == 0 || bx == 0 {
        return ew::arange(gpu, 0.0, 0.0, shape, od);
    }
    let (_ka, ai) = contiguous_input(gpu, aa)?;
    let bi = input(gpu, ba)?;
    let (_kl, li) = contiguous_input(gpu, &x[2])?;
    let (_kr, ri) = contiguous_input(gpu, &x[3])?;
    let (name, src) = gather_mm_source(od);
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    a.ptr(ai.base())
        .ptr(bi.base())
        .ptr(yptr)
        .ptr(li.base())
        .ptr(ri.base())
        .i64(nb as i64)
        .i64(bx as i64)
        .i64(ne as i64)
        .i64(m as i64)
        .i64(n as i64)
        .i64(k as i64)
        .i64(ba.strides[0] as i64)
        .i64(ba.strides[1] as i64)
        .i64(ba.strides[2] as i64);
    gpu.launch(&f, &name, Grid::elems(nb * m * n * 32), &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::host_f32;
    use crate::kernels::assert_compiles;

    const FL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

    /// Every gather kernel the backend generates compiles with NVRTC for sm_90.
    #[test]
    fn gather_kernels_compile() {
        let mut body = String::new();
        for bits in [2, 3, 4, 5, 6, 8] {
            for mm in [1, 2, 4, 8] {
                let b = Dtype::BF16;
                body.push_str(&gather_qmv_source(b, b, b, bits, mm).1);
            }
            for xd in [Dtype::BF16, Dtype::F16] {
                body.push_str(&gather_mma_source(xd, xd, xd, bits).1);
            }
        }
        body.push_str(&gather_tiles_source().1);
        body.push_str(&gather_mma_source(Dtype::BF16, Dtype::F32, Dtype::F32, 4).1);
        for xd in FL {
            body.push_str(&gather_mm_source(xd).1);
            for sd in FL {
                let od = Dtype::promote(xd, sd);
                body.push_str(&gather_qmm_any_source(xd, sd, od).1);
                if (xd, sd) != (Dtype::BF16, Dtype::BF16) {
                    body.push_str(&gather_qmv_source(xd, sd, od, 4, 1).1);
                }
            }
        }
        assert_compiles(
            "gather_all",
            &format!("{QUANT_CUH}\n{MMA_CUH}\n{GATHER_CUH}\n{body}"),
        );
    }

    fn host_u32(v: &[u32]) -> ArrayData {
        rmlx_core::Array::from_slice(v, &[v.len()])
            .and_then(|a| a.data())
            .expect("a host array")
    }

    fn fetch(gpu: &Arc<Gpu>, y: &ArrayData) -> Vec<f32> {
        gpu.synchronize().unwrap();
        y.buffer.ensure_host().unwrap();
        y.as_slice::<f32>().unwrap().to_vec()
    }

    /// On a GPU: both gather_qmm paths and gather_mm equal the CPU kernels (the CPU is checked
    /// against MLX by rmlx-core's fixtures). Skipped without a CUDA device.
    #[test]
    fn gather_matches_cpu_on_gpu() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let gpu = crate::context::gpu(0).unwrap();
        let (e, n, k) = (5, 48, 128);
        let w: Vec<f32> = (0..e * n * k)
            .map(|i| ((i as f32 * 0.37).sin() * 2.0) * if i % 3 == 0 { 1.0 } else { -0.5 })
            .collect();
        let wa = host_f32(&w, &[e, n, k]);
        // lhs/rhs: 7 entries, unsorted, repeated experts
        let rhs = [3u32, 0, 3, 4, 1, 1, 2];
        for (gs, bits) in [(64, 4), (32, 3), (32, 8)] {
            let parts: Vec<ArrayData> = (0..3u8)
                .map(|p| {
                    let od = if p == 0 { Dtype::U32 } else { Dtype::F32 };
                    let sh = if p == 0 {
                        [e, n, k * bits / 32]
                    } else {
                        [e, n, k / gs]
                    };
                    rmlx_cpu::quantized::quantize(
                        &wa,
                        gs,
                        bits,
                        p,
                        &rmlx_core::primitive::OutputSpec {
                            shape: &sh,
                            dtype: od,
                        },
                    )
                    .unwrap()
                })
                .collect();
            for (m, transpose) in [(1, true), (3, true), (11, true), (2, false)] {
                let (kk, nn) = if transpose { (k, n) } else { (n, k) };
                let bx = 4;
                let xv: Vec<f32> = (0..bx * m * kk).map(|i| (i as f32 * 0.11).cos()).collect();
                let lhs = [0u32, 1, 2, 3, 3, 2, 0];
                let mut ins = vec![host_f32(&xv, &[bx, m, kk])];
                ins.extend(parts.iter().cloned());
                ins.push(host_u32(&lhs));
                ins.push(host_u32(&rhs));
                let shape = [rhs.len(), m, nn];
                let spec = rmlx_core::primitive::OutputSpec {
                    shape: &shape,
                    dtype: Dtype::F32,
                };
                let want =
                    // the CPU reference in its exact float mode (not the int8 approximation)
                        rmlx_cpu::gather_matmul::gather_qmm(&ins, gs, bits, transpose, true, &spec).unwrap();
                let want = want.as_slice::<f32>().unwrap();
                let got = gather_qmm(&gpu, &ins, gs, bits, transpose, &shape, Dtype::F32).unwrap();
                let got = fetch(&gpu, &got);
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                        "gather_qmm gs {gs} bits {bits} m {m} t {transpose} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
        // gather_mm over a transposed view of [e, n, k]: b = [e, k, n]
        let mut b = wa.clone();
        b.shape = [e, k, n].into_iter().collect();
        b.strides = [(n * k) as isize, 1, k as isize].into_iter().collect();
        let m = 2;
        let xv: Vec<f32> = (0..3 * m * k).map(|i| (i as f32 * 0.23).sin()).collect();
        let ins = vec![
            host_f32(&xv, &[3, m, k]),
            b,
            host_u32(&[0, 1, 2, 2, 1, 0, 0]),
            host_u32(&rhs),
        ];
        let shape = [rhs.len(), m, n];
        let spec = rmlx_core::primitive::OutputSpec {
            shape: &shape,
            dtype: Dtype::F32,
        };
        let want = rmlx_cpu::gather_matmul::gather_mm(&ins, &spec).unwrap();
        let want = want.as_slice::<f32>().unwrap();
        let got = fetch(&gpu, &gather_mm(&gpu, &ins, &shape, Dtype::F32).unwrap());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                "gather_mm [{i}]: {g} vs {w}"
            );
        }
    }
}
