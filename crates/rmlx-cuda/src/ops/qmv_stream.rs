//! One row of half x against 4-bit weights with the weights streamed through shared memory
//! (`kernels/qmv_stream.cuh`): the rows kernel's arithmetic, but each warp's next steps of
//! weights are in flight by `cp.async` (the first ones before the kernel waits on its
//! predecessor), so a decode step's memory pipe stays full across kernel boundaries.

use crate::context::Gpu;
use crate::kernels::MMA_CUH;
use crate::launch::Grid;
use crate::ops::quantized::{rows_tiles, RowsLaunch, RowsVariant, QMV_ROWS_CUH, QUANT_CUH};
use cudarc::driver::sys;
use rmlx_core::Result;
use std::sync::Arc;

/// The device code (after `quantized.cuh`, `mma.cuh` and `qmv_rows.cuh`).
pub const QMV_STREAM_CUH: &str = include_str!("../../kernels/qmv_stream.cuh");

/// Warps per block, splitting K, for a launch of `blocks` blocks: 4 (four blocks an SM) where
/// the grid has at least four such blocks for every SM, else 8 (two an SM); `RMLX_QMV_STREAM_KS`
/// (4 or 8) forces one. Measured as a chain of programmatic dependents (`qmvbench chain`,
/// dev/kernels/qmv/README.md, H200): the 8B's gate/up (896 blocks) 21.3 µs with 4 warps against
/// 22.9 with 8; its q/k/v, o_proj and down (192–256 blocks) 1.7–2.8× slower with 4.
fn warps(gpu: &Gpu, blocks: usize) -> usize {
    static KS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match crate::env::count(&KS, "RMLX_QMV_STREAM_KS", 0) {
        4 => 4,
        8 => 8,
        _ => warps_for(blocks, gpu.sms),
    }
}

/// The rule of [`warps`] for a grid of `blocks` on `sms` SMs.
fn warps_for(blocks: usize, sms: usize) -> usize {
    if blocks >= blocks_per_sm(4) * sms {
        4
    } else {
        8
    }
}

/// Whether the one-row products the rows kernel would take stream instead (`RMLX_QMV_STREAM=0`
/// keeps the rows kernel: an ablation switch).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_QMV_STREAM", true)
}

/// One-row products the streaming kernel takes beyond the rows kernel's rule (which wants N of
/// 4,096 or more and K past the in-kernel int8 quantization's reach): N in 1,024..=32,768 and
/// K of at least 1,024, so Qwen3-30B-A3B's q/k/v (5,120 × 2,048) and o_proj (2,048 × 4,096)
/// too: 378.6 / 380.1 → 410.2 / 406.9 tok/s there (H100, same call, docs/PERF.md). Smaller
/// products (SmolLM2's) stay on the dp4a kernels.
pub(crate) fn takes(n: usize, k: usize) -> bool {
    (1024..=32_768).contains(&n) && k >= 1024
}

/// Whether the first steps are issued before the kernel waits on its predecessor
/// (`RMLX_QMV_STREAM_EARLY=0`: after, an ablation switch).
fn early() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_QMV_STREAM_EARLY", true)
}

/// The deepest ring (steps in flight per warp): 2, or `RMLX_QMV_STREAM_D` (a tuning knob).
/// Measured in the model (8B shape, H100, same call): rings of 2 steps 428.1 / 437.8 tok/s,
/// up to 8 (3 for down, whose warps own 7 steps) 421.1 / 422.4, 1 step 433.3, the rows kernel
/// 416.6 / 417.1: a deeper ring takes shared memory the L1 of the kernels around it needs.
fn max_depth() -> usize {
    static D: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    crate::env::count(&D, "RMLX_QMV_STREAM_D", 2)
}

/// A launch's shape: tiles of 16 rows per block, ring depth (steps in flight per warp) and the
/// dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub ks: usize,
    pub t: usize,
    pub d: usize,
    pub shared: usize,
}

/// Bytes of one warp's ring slot: the kernel's `RqStreamSlot` (16 T rows × 128 bytes of words,
/// then their NG two-byte scales and as many biases, NG = 256 / gs).
fn slot_bytes(t: usize, gs: usize) -> usize {
    let ng = 4 * 64 / gs;
    16 * t * 128 + 2 * (16 * t * ng * 2)
}

/// Units of 64 codes each warp owns (whole steps), as the kernel computes `per`.
fn units_per_warp(k: usize, ks: usize) -> usize {
    let nu = k / 64;
    nu.div_ceil(ks).div_ceil(4) * 4
}

/// The plan for N output rows (H = N / 2 columns where `swiglu`) of K codes in groups of `gs`,
/// within `budget` bytes of dynamic shared memory per block; `None` where not even one step
/// per warp fits. One tile per block up to 4,096 rows (more blocks), two above (the rows
/// kernel's rule, which SwiGLU needs).
pub(crate) fn plan(
    n: usize,
    k: usize,
    gs: usize,
    (ks, swiglu): (usize, bool),
    budget: usize,
) -> Option<Plan> {
    let t = rows_tiles(n, swiglu);
    let per = units_per_warp(k, ks);
    let steps = per / 4;
    let x_bytes = per * 128;
    let slot = slot_bytes(t, gs);
    // the budget is the block's: KS warps, each its run of x and D slots
    let fit = budget.checked_sub(ks * x_bytes)? / (ks * slot);
    let d = steps.min(fit).min(max_depth());
    (d >= 1).then_some(Plan {
        ks,
        t,
        d,
        shared: ks * (d * slot + x_bytes),
    })
}

/// Blocks per SM a launch of `ks` warps is sized for: 16 warps in all (the register cap of
/// 128 a thread follows from it).
fn blocks_per_sm(ks: usize) -> usize {
    16 / ks
}

/// Dynamic shared memory a block of `ks` warps may take so that [`blocks_per_sm`] blocks share
/// an SM (their static reduction arrays and the 1 KB the hardware reserves per block set aside).
fn budget(gpu: &Gpu, ks: usize) -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cap = crate::env::count(&CAP, "RMLX_QMV_STREAM_BUDGET", usize::MAX);
    let per_sm = gpu.smem_per_sm;
    let static_bytes = ks * 2 * 4 * 32 * 4 + ks * 8 * 4;
    (per_sm / blocks_per_sm(ks))
        .saturating_sub(1024 + static_bytes)
        .min(gpu.smem_per_block_optin)
        .min(cap)
}

/// Kernel name and wrapper source for variant `v`, `ks` warps, `t` tiles, a ring of `d` steps.
pub fn source(v: RowsVariant, (ks, t, d): (usize, usize, usize)) -> (String, String) {
    let name = format!("{}_t{t}_k{ks}_d{d}", v.stem("rq_qmv_stream"));
    let (params, targs) = v.signature();
    let (threads, min_blocks) = (32 * ks, blocks_per_sm(ks));
    let (norm, swiglu) = (v.norm, v.swiglu);
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}, {min_blocks}) {name}({params}, i64 N, i64 K, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs, int early) {{\n  RMLX_PDL_MANUAL rq_qmv_stream<{targs}, {t}, {ks}, {d}, {norm}, {swiglu}>(x, nw, eps, w, s, b, y, res, N, K, xbs, wbs, sbs, bbs, ybs, early);\n}}\n"
    );
    (name, src)
}

/// One launch of product `l` (N rows of K codes; per batch matrix) where it has `m` = 1 row of
/// x and the kernel is on. `Ok(false)`: not one row, switched off, or no plan fits this
/// device's shared memory (the caller takes the rows kernel).
pub(crate) fn launch(
    gpu: &Arc<Gpu>,
    l: &RowsLaunch,
    m: usize,
    (n, k): (usize, usize),
) -> Result<bool> {
    if m != 1 || !enabled() {
        return Ok(false);
    }
    let ks = warps(gpu, n / (16 * rows_tiles(n, l.v.swiglu)));
    let Some(p) = plan(n, k, l.v.gs, (ks, l.v.swiglu), budget(gpu, ks)) else {
        return Ok(false);
    };
    let (name, src) = source(l.v, (p.ks, p.t, p.d));
    let f = gpu.kernels.get(
        &gpu.ctx,
        &name,
        &format!("{QUANT_CUH}\n{MMA_CUH}\n{QMV_ROWS_CUH}\n{QMV_STREAM_CUH}\n{src}"),
    )?;
    // static and dynamic shared memory together past 48 KB need the opt-in
    f.set_attribute(
        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        p.shared as i32,
    )
    .map_err(|e| crate::context::cuda_err(&format!("sizing {name}'s shared memory"), e))?;
    let mut a = l.args(None, n, k);
    a.i32(early() as i32);
    let g = Grid {
        grid: l.grid(n, p.t),
        block: ((32 * p.ks) as u32, 1, 1),
        shared: p.shared as u32,
    };
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmlx_core::Dtype;

    #[test]
    fn stream_kernels_compile() {
        let (b, h, f) = (Dtype::BF16, Dtype::F16, Dtype::F32);
        let var = |(x, s, o), gs, norm, swiglu| RowsVariant {
            x,
            s,
            o,
            gs,
            norm,
            swiglu,
        };
        let mut body = String::new();
        for (t, d) in [(1, 2), (2, 2), (1, 3)] {
            for gs in [64, 128] {
                for norm in [false, true] {
                    body.push_str(&source(var((b, b, b), gs, norm, false), (8, t, d)).1);
                }
            }
        }
        body.push_str(&source(var((b, b, b), 64, true, true), (8, 2, 2)).1);
        body.push_str(&source(var((h, h, h), 128, false, true), (8, 2, 1)).1);
        body.push_str(&source(var((h, b, f), 64, true, false), (8, 1, 4)).1);
        body.push_str(&source(var((b, b, b), 64, true, false), (4, 1, 2)).1);
        body.push_str(&source(var((b, b, b), 64, false, true), (4, 2, 2)).1);
        crate::kernels::assert_compiles(
            "qmv_stream",
            &format!("{QUANT_CUH}\n{MMA_CUH}\n{QMV_ROWS_CUH}\n{QMV_STREAM_CUH}\n{body}"),
        );
    }

    /// Four warps a block only where the grid fills four blocks an SM: on an H100/H200 (132
    /// SMs) the 8B's gate/up (28,672 rows in blocks of 32: 896) and none of its other products.
    #[test]
    fn four_warps_only_for_large_grids() {
        let blocks = |n: usize, swiglu: bool| n / (16 * rows_tiles(n, swiglu));
        assert_eq!(warps_for(blocks(28672, true), 132), 4);
        for (n, swiglu) in [(6144, false), (4096, false), (5120, false), (2048, false)] {
            assert_eq!(warps_for(blocks(n, swiglu), 132), 8, "{n}");
        }
        assert_eq!(warps_for(528, 132), 4);
        assert_eq!(warps_for(527, 132), 8);
    }

    #[test]
    fn plans_fit_the_budget_and_cover_short_runs() {
        let ks = 8;
        let budget = 228 * 1024 / 2 - 1024 - (ks * 2 * 4 * 32 * 4 + ks * 8 * 4);
        // 8B o_proj: 8 units per warp = 2 steps, all in flight
        let p = plan(4096, 4096, 64, (ks, false), budget).unwrap();
        assert_eq!((p.t, p.d), (1, 2));
        assert_eq!(p.shared, ks * (2 * 2304 + 1024));
        // 8B q/k/v: two tiles
        let p = plan(6144, 4096, 64, (ks, false), budget).unwrap();
        assert_eq!((p.t, p.d), (2, 2));
        // 8B down: 28 units per warp (7 steps); the ring is what fits
        let p = plan(4096, 14336, 64, (ks, false), budget).unwrap();
        assert_eq!(p.t, 1);
        assert!(p.d >= 2 && p.d < 7, "{p:?}");
        assert!(p.shared <= budget);
        // 4 warps: twice the run of x and of steps per warp, in a quarter of the SM
        let p = plan(4096, 4096, 64, (4, false), 228 * 1024 / 4 - 1024 - 4 * 4224).unwrap();
        assert_eq!((p.ks, p.t, p.d), (4, 1, 2));
        assert_eq!(p.shared, 4 * (2 * 2304 + 2048));
        // groups of 128: half the meta
        assert_eq!(slot_bytes(1, 128), 2048 + 128);
        // nothing fits a tiny budget
        assert_eq!(plan(4096, 14336, 64, (ks, false), 8 * 1024), None);
    }
}
