//! Scaled dot-product attention (kernels in `kernels/sdpa.cuh`), the CPU's semantics
//! (`crates/rmlx-cpu/src/sdpa.rs`): q `[B, Hq, L, D]`, k `[B, Hkv, S, D]`, v `[B, Hkv, S, Dv]`,
//! GQA, scores and softmax in f32, a bool mask replaces masked scores with the lowest f32, an
//! additive mask is added, causal is aligned to the end of the keys (rows that see no key
//! attend uniformly). Inputs are read through their strides (KV-cache slices need no copy).
//!
//! One block per (query row, key split): the keys are split when there are few rows (decode),
//! and the splits' softmax states merged by a second kernel, or, in the decode kernels, by the
//! launch's last block per row group (`Merge`). A decode step's attention over 16-bit caches
//! runs on tensor cores where `rope_kv_sdpa` fuses it (`mma_fits`).

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag};
use crate::kernels::MMA_CUH;
use crate::launch::{Args, Grid};
use rmlx_core::fast::SdpaDims;
use rmlx_core::primitive::SdpaMask;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::{Arc, OnceLock};

/// The templated device code.
pub const SDPA_CUH: &str = include_str!("../../kernels/sdpa.cuh");

/// The loaded attention kernel `name` from its wrapper `body` (after the tensor-core helpers,
/// which the flash kernel uses, and the attention device code).
pub(crate) fn get(gpu: &Arc<Gpu>, name: &str, body: &str) -> Result<cudarc::driver::CudaFunction> {
    gpu.kernels
        .get(&gpu.ctx, name, &format!("{MMA_CUH}\n{SDPA_CUH}\n{body}"))
}

/// Threads per block (`RS_NT`) and the largest D / Dv (`RS_MAXD`).
pub(crate) const NT: usize = 128;
const MAXD: usize = 512;
/// Blocks the key splitting aims for (a few per SM).
const TARGET_BLOCKS: usize = 512;
/// Query rows per block of the prefill kernel (`RP_BQ`).
const PREFILL_ROWS: usize = 16;
/// Blocks the decode kernel aims for: (batch, KV head) pairs times key splits.
const DECODE_TARGET_BLOCKS: usize = 264;
/// Blocks the decode kernel aims for: `RMLX_SDPA_DEC_BLOCKS`, default [`DECODE_TARGET_BLOCKS`].
fn decode_target_blocks() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    crate::env::count(&N, "RMLX_SDPA_DEC_BLOCKS", DECODE_TARGET_BLOCKS)
}
/// Blocks the ragged-rows decode kernel (`sdpa_rows`, the batch engine) aims for. Its splits
/// cover each row's cache capacity, not the keys written so far, so a short sequence's keys sit
/// in the first few splits, and there a split's warps walk several steps of 32 keys in series:
/// more, shorter splits (the empty ones end at once) spread them. Measured on an H100 (docs/
/// PERF.md, calls W11–W12): Llama-3.1-8B's engine at batch 8, medians 2,222 → 2,370 tok/s at
/// 128-token prompts and 1,754 → 1,835 at 512 against the 264 blocks of the single path.
const ROWS_TARGET_BLOCKS: usize = 1056;
/// `RMLX_SDPA_ROWS_BLOCKS`, default [`ROWS_TARGET_BLOCKS`].
fn rows_target_blocks() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    crate::env::count(&N, "RMLX_SDPA_ROWS_BLOCKS", ROWS_TARGET_BLOCKS)
}

/// Fewest keys per split of the keys-across-warps decode kernel: `RMLX_SDPA_DEC_MIN_KEYS`,
/// default 16.
fn decode_min_keys() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    crate::env::count(&N, "RMLX_SDPA_DEC_MIN_KEYS", 16)
}

/// Fewest keys per split of the lanes-over-keys decode kernels: one step of their 4 warps.
const LK_MIN_KEYS: usize = 128;

/// Fewest keys per split of the tensor-core decode kernel for one sequence: one 16-key tile per
/// warp, so that a short cache still spreads over several blocks. Measured on an H100
/// (docs/PERF.md, call Z5): Llama-8B single 421.8 / 425.1 tok/s at 128 keys → 428.7 / 426.5
/// at 64. A batch keeps 128: its splits cover the caches' capacity.
const MMA_SINGLE_MIN_KEYS: usize = 64;

/// How a kernel splits its keys: `n` splits of `len` keys (the last one shorter).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Splits {
    n: usize,
    len: usize,
}

impl Splits {
    /// About `n` splits of `s` keys, evened out: each ⌈s / n⌉ keys, as many as that takes.
    fn even(s: usize, n: usize) -> Splits {
        let len = s.div_ceil(n).max(1);
        Splits {
            n: s.div_ceil(len).max(1),
            len,
        }
    }
}

/// The blocks a decode attention launch aims for, and whether its splits round down so that
/// the launch stays within that many (`whole`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockTarget {
    pub blocks: usize,
    pub whole: bool,
}

impl BlockTarget {
    /// One sequence ([`decode_target_blocks`]: one wave of two blocks per SM), rounded down.
    /// Rounding up had put a launch a few blocks past the wave, and those blocks ran as a second
    /// one: the 8B at 8,256 keys ran 272 blocks; at 256, 304.5 / 304.0 → 310.5 / 312.4 tok/s,
    /// Qwen3-30B-A3B single 393.3 / 397.6 → 404.4 / 409.5 (H100, same binary, docs/PERF.md).
    /// `RMLX_SDPA_SPLITS_CEIL=1` rounds up again (an ablation switch).
    pub(crate) fn single() -> BlockTarget {
        static CEIL: OnceLock<bool> = OnceLock::new();
        BlockTarget {
            blocks: decode_target_blocks(),
            whole: !crate::env::flag(&CEIL, "RMLX_SDPA_SPLITS_CEIL", false),
        }
    }
    /// The batch engine's ragged rows ([`rows_target_blocks`]), rounded up: most of its splits
    /// are empty at short lengths, and rounding down measured 0.99–1.0× there.
    pub(crate) fn rows() -> BlockTarget {
        BlockTarget {
            blocks: rows_target_blocks(),
            whole: false,
        }
    }
}

/// Key splits of a decode kernel over `s` keys whose (batch, KV head, head part) blocks number
/// `pairs`: about `target.blocks` blocks in all (at most, where `target.whole`), each split at
/// least `min_keys` keys.
fn decode_splits(target: BlockTarget, pairs: usize, s: usize, min_keys: usize) -> Splits {
    let pairs = pairs.max(1);
    let per_pair = if target.whole {
        target.blocks / pairs
    } else {
        target.blocks.div_ceil(pairs)
    };
    let n = per_pair.min(s.div_ceil(min_keys)).clamp(1, 65_535);
    Splits::even(s, n)
}

/// How a decode launch over rows with their own caches (`sdpa_rows`, `rope_kv_sdpa`; lanes over
/// keys or tensor cores) is laid out: query heads per block, blocks per key split and the
/// splits.
pub(crate) struct LkGrid {
    pub heads: usize,
    pub blocks: usize,
    pub splits: Splits,
}

impl LkGrid {
    /// As [`LkGrid::new`] on the CUDA cores, but with up to `max_heads` of a KV head's `g` query
    /// heads a block (the fewest parts that allow it): for a kernel whose work per key is mostly
    /// shared by its heads (the quantized cache's codes turned into floats, `sdpa_quantized.rs`).
    pub(crate) fn shared_heads(
        target: BlockTarget,
        (b, hkv, g): (usize, usize, usize),
        max_heads: usize,
        s: usize,
    ) -> LkGrid {
        let parts = (1..=g)
            .find(|p| g.is_multiple_of(*p) && g / p <= max_heads)
            .unwrap_or(g);
        let blocks = b * hkv * parts;
        LkGrid {
            heads: g / parts,
            blocks,
            splits: decode_splits(target, blocks, s, LK_MIN_KEYS),
        }
    }

    /// `b` rows of `hkv` KV heads with `g` query heads of `D = 32 dl` each, caches of up to `s`
    /// positions, aiming at `target`, on tensor cores (`mma`) or not.
    pub(crate) fn new(
        target: BlockTarget,
        b: usize,
        hkv: usize,
        g: usize,
        dl: usize,
        s: usize,
        mma: bool,
    ) -> LkGrid {
        // on tensor cores, one sequence's blocks share a KV head's query heads as the CUDA-core
        // kernel's do, with splits of one tile per warp; a batch's blocks hold all of them
        let (parts, min_keys) = match (mma, b) {
            (true, 1) => (head_parts(g, dl), MMA_SINGLE_MIN_KEYS),
            (true, _) => (1, LK_MIN_KEYS),
            (false, _) => (head_parts(g, dl), LK_MIN_KEYS),
        };
        let blocks = b * hkv * parts;
        LkGrid {
            heads: g / parts,
            blocks,
            splits: decode_splits(target, blocks, s, min_keys),
        }
    }
}

/// Smallest key range worth a split of its own.
const MIN_SPLIT: usize = 256;

/// `struct Sd4` of the kernels: element offset and 4 strides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sd4 {
    off: i64,
    s: [i64; 4],
}

pub(crate) fn sd4(x: &ArrayData) -> Sd4 {
    Sd4 {
        off: x.offset as i64,
        s: [
            x.strides[0] as i64,
            x.strides[1] as i64,
            x.strides[2] as i64,
            x.strides[3] as i64,
        ],
    }
}

/// What the mask argument is: kind code for the kernel and the mask element type.
fn mask_kind(mask: SdpaMask, md: Option<Dtype>) -> Result<(u32, Dtype)> {
    Ok(match (mask, md) {
        (SdpaMask::None, _) => (0, Dtype::F32),
        (SdpaMask::Causal, _) => (1, Dtype::F32),
        (SdpaMask::Array, Some(Dtype::Bool)) => (2, Dtype::Bool),
        (SdpaMask::Array, Some(d)) if d.is_float() => (3, d),
        (SdpaMask::Array, d) => {
            return Err(Error::dtype(
                "cuda",
                format!("[scaled_dot_product_attention] unsupported mask type {d:?}"),
            ))
        }
    })
}

/// The mask part of a kernel name.
fn mask_tag(kind: u32, md: Dtype) -> String {
    match kind {
        0 => "none".to_string(),
        1 => "causal".to_string(),
        2 => "bool".to_string(),
        _ => format!("add{}", tag(md)),
    }
}

/// q, k, v, mask and output pointers, the split partials (`parts`, for the kernels that take
/// them), then the four strided layouts: the arguments every attention kernel starts with.
fn qkv_args(
    a: &mut Args,
    [q, k, v, mask, out]: [u64; 5],
    parts: Option<(u64, u64)>,
    x: &[ArrayData],
    m: Option<&ArrayData>,
) {
    a.ptr(q).ptr(k).ptr(v).ptr(mask).ptr(out);
    if let Some((pml, pacc)) = parts {
        a.ptr(pml).ptr(pacc);
    }
    a.push(sd4(&x[0]))
        .push(sd4(&x[1]))
        .push(sd4(&x[2]))
        .push(m.map(sd4).unwrap_or_default());
}

/// The attention kernel for inputs of dtype `t`, mask kind/type and `dvp` output dims per
/// thread: name and wrapper source.
pub fn source(t: Dtype, kind: u32, md: Dtype, dvp: usize) -> (String, String) {
    let mk = mask_tag(kind, md);
    let name = format!("rs_sdpa_{}_{mk}_v{dvp}", tag(t));
    let (c, cm) = (ctype(t), ctype(md));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, const {c}* k, const {c}* v, const {cm}* mask, {c}* out, float* part_ml, float* part_acc, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv, int L, int S, int D, int Dv, float scale, int n_split, int split_len) {{\n  rs_sdpa<{c}, {cm}, {kind}, {dvp}>(q, k, v, mask, out, part_ml, part_acc, ql, kl, vl, ml, Hq, Hkv, L, S, D, Dv, scale, n_split, split_len);\n}}\n"
    );
    (name, src)
}

/// The GQA-aware decode kernel (`L = 1`, `D = Dv = 32 * dl`, `g` query heads per KV head):
/// keys across the lanes (`lk`, `rs_sdpa_decode_lk`) or across the warps (`rs_sdpa_decode`).
pub fn decode_source(
    t: Dtype,
    kind: u32,
    md: Dtype,
    g: usize,
    dl: usize,
    lk: bool,
) -> (String, String) {
    let mk = mask_tag(kind, md);
    let sfx = if lk { "_lk" } else { "" };
    let name = format!("rs_sdpa_dec{sfx}_{}_{mk}_g{g}_d{dl}", tag(t));
    let (c, cm) = (ctype(t), ctype(md));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, const {c}* k, const {c}* v, const {cm}* mask, {c}* out, float* part_ml, float* part_acc, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv, int S, float scale, int n_split, int split_len, unsigned* tickets) {{\n  rs_sdpa_decode{sfx}<{c}, {cm}, {kind}, {g}, {dl}>(q, k, v, mask, out, part_ml, part_acc, ql, kl, vl, ml, Hq, Hkv, S, scale, n_split, split_len, tickets);\n}}\n"
    );
    (name, src)
}

/// The tiled prefill kernel (`L > 1`, `D = Dv` of 64 or 128).
pub fn prefill_source(t: Dtype, kind: u32, md: Dtype, d: usize) -> (String, String) {
    let mk = mask_tag(kind, md);
    let name = format!("rs_sdpa_pre_{}_{mk}_d{d}", tag(t));
    let (c, cm) = (ctype(t), ctype(md));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, const {c}* k, const {c}* v, const {cm}* mask, {c}* out, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv, int L, int S, float scale) {{\n  rs_sdpa_prefill<{c}, {cm}, {kind}, {d}>(q, k, v, mask, out, ql, kl, vl, ml, Hq, Hkv, L, S, scale);\n}}\n"
    );
    (name, src)
}

/// The tensor-core prefill kernel (16-bit `t`, mask none or causal, `D = Dv` of 64 or 128).
pub fn flash_source(t: Dtype, kind: u32, d: usize) -> (String, String) {
    let name = format!(
        "rs_sdpa_flash_{}_{}_d{d}",
        tag(t),
        mask_tag(kind, Dtype::F32)
    );
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, const {c}* k, const {c}* v, {c}* out, Sd4 ql, Sd4 kl, Sd4 vl, int Hq, int Hkv, int L, int S, float scale) {{\n  rs_sdpa_flash<{c}, {kind}, {d}>(q, k, v, out, ql, kl, vl, Hq, Hkv, L, S, scale);\n}}\n"
    );
    (name, src)
}

/// Query rows per block of the tensor-core prefill kernel (`RF_BQ`).
const FLASH_ROWS: usize = 64;

/// Whether prefill takes the tensor-core kernel: 16-bit inputs, no mask or causal with no row
/// before the first key, D = Dv of 64 or 128, every row 16-byte aligned. `RMLX_SDPA_FLASH=0`
/// keeps the f32 tiled kernel (an ablation switch).
fn flash_fits(x: &[ArrayData], dims: &SdpaDims, kind: u32) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::env::flag(&ON, "RMLX_SDPA_FLASH", true)
        && dims.l > 1
        && dims.s > 0
        && dims.d == dims.dv
        && (dims.d == 64 || dims.d == 128)
        && matches!(x[0].dtype, Dtype::BF16 | Dtype::F16)
        && (kind == 0 || (kind == 1 && dims.s >= dims.l))
        && x[..3].iter().all(rows_aligned16)
}

/// Whether the decode kernel serves these inputs: one query row, equal head dims of 32 to 256
/// (a power of two), at most 8 query heads per KV head, rows contiguous and aligned for the
/// lanes' vector loads.
fn decode_fits(
    q: &ArrayData,
    k: &ArrayData,
    v: &ArrayData,
    dims: &SdpaDims,
) -> Option<(usize, usize)> {
    let dl = dims.d / 32;
    let g = dims.hq / dims.hkv.max(1);
    let aligned = |x: &ArrayData| rows_aligned(&x.shape, &x.strides, x.offset, dl);
    (dims.l == 1
        && dims.d == dims.dv
        && dims.d.is_multiple_of(32)
        && [1, 2, 4, 8].contains(&dl)
        && (1..=8).contains(&g)
        && aligned(q)
        && aligned(k)
        && aligned(v))
    .then_some((g, dl))
}

/// Whether every row of `x: [B, H, S, D]` starts on a 16-byte boundary (the lanes-over-keys
/// decode kernel reads K rows 8 elements at a time).
pub(crate) fn rows_aligned16(x: &ArrayData) -> bool {
    rows_aligned(&x.shape, &x.strides, x.offset, 16 / x.dtype.size())
}

/// Whether every row of a `[B, H, S, D]` layout is contiguous and starts at a multiple of `e`
/// elements. Axes of extent 1 are never stepped along, so their strides do not count: a
/// reshape gives them any value (1 for the leading axis of a dequantized cache, which had kept
/// the quantized KV cache off the tensor-core kernels).
fn rows_aligned(shape: &[usize], strides: &[isize], offset: usize, e: usize) -> bool {
    let e = e as isize;
    strides[3] == 1
        && (offset as isize).rem_euclid(e) == 0
        && shape[..3]
            .iter()
            .zip(&strides[..3])
            .all(|(&n, s)| n == 1 || s.rem_euclid(e) == 0)
}

/// Blocks that share one KV head's `g` query heads in the lanes-over-keys decode kernel: the
/// fewest (dividing `g`) that leave each block at most 8 accumulators per lane (`g / parts *
/// dl`). A decode step has few (batch, KV head) pairs, so more blocks put more warps to work
/// and each warp's chain of FMAs and softmax updates is shorter; each block re-reads its KV
/// head's keys (from L2 at short contexts). Measured on an H100 (docs/PERF.md): Qwen3-30B-A3B
/// (8 heads of D = 128 per KV head) 4 blocks of 2 heads 1.15x, Llama-8B 2 blocks 1.03x (also
/// at 8,192 keys, where 4 blocks were slower). One sequence on tensor cores takes the same
/// parts (call Z6: Llama-8B 2 blocks against 1, 1.027x single and 1.036x at 8,256 keys;
/// Qwen3-30B-A3B 4 against 2, 1.04x at 8,224 keys). `RMLX_SDPA_DEC_PARTS=N` forces N blocks
/// where N divides `g` (1: one block per KV head, an ablation switch).
fn head_parts(g: usize, dl: usize) -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    let forced = crate::env::count(&N, "RMLX_SDPA_DEC_PARTS", 0);
    if forced > 0 {
        return if g.is_multiple_of(forced) { forced } else { 1 };
    }
    (1..=g)
        .find(|p| g.is_multiple_of(*p) && g / p * dl <= 8)
        .unwrap_or(g)
}

/// Whether decode attention of `b` rows over 16-byte-aligned caches of type `t`, `g` query
/// heads per KV head of dimension `d`, runs on tensor cores (`rd_mma_attend` in sdpa.cuh):
/// 16-bit types, at most 8 heads, D of 64 or 128. A batch's blocks hold all `g` heads; at
/// g = 8 (Qwen3-30B-A3B) that measured 0.96-0.97x the CUDA-core kernel at batch 8 (H100,
/// docs/PERF.md, calls Z6 and Z7), so a batch of such groups stays there. `RMLX_SDPA_MMA=0`
/// keeps all on the CUDA cores (an ablation switch).
pub(crate) fn mma_fits(t: Dtype, g: usize, d: usize, b: usize) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    matches!(t, Dtype::BF16 | Dtype::F16)
        && (1..=8).contains(&g)
        && (b == 1 || g <= 4)
        && (d == 64 || d == 128)
        && crate::env::flag(&ON, "RMLX_SDPA_MMA", true)
}

/// `RMLX_SDPA_DEC_LK=0` keeps decode attention on the keys-across-warps kernel (an ablation
/// switch), read once.
fn lanes_over_keys() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::env::flag(&ON, "RMLX_SDPA_DEC_LK", true)
}

/// The split-merging kernel for outputs of dtype `t`.
pub fn merge_source(t: Dtype) -> (String, String) {
    let name = format!("rs_sdpa_merge_{}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void {name}(const float* part_ml, const float* part_acc, {c}* out, int Dv, int n_split) {{\n  rs_sdpa_merge<{c}>(part_ml, part_acc, out, Dv, n_split);\n}}\n"
    );
    (name, src)
}

/// `[q, k, v, mask?]` → attention output `[B, Hq, L, Dv]` in q's dtype.
pub fn sdpa(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    scale: f32,
    mask: SdpaMask,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let bad = |m: String| Error::invalid("cuda", format!("[scaled_dot_product_attention] {m}"));
    let dims = SdpaDims::of("cuda", x, mask)?;
    if x[0].dtype != x[1].dtype {
        return Err(bad(format!(
            "q ({}) and k/v ({}) must share a dtype on the GPU",
            x[0].dtype, x[1].dtype
        )));
    }
    let SdpaDims {
        b,
        hq,
        l,
        d,
        hkv,
        s,
        dv,
    } = dims;
    let (q, k, v) = (&x[0], &x[1], &x[2]);
    if !q.dtype.is_float() || od != q.dtype {
        return Err(Error::dtype(
            "cuda",
            format!(
                "[scaled_dot_product_attention] unsupported type {} (output {od})",
                q.dtype
            ),
        ));
    }
    if d > MAXD || dv > MAXD {
        return Err(bad(format!(
            "head dimensions D = {d}, Dv = {dv}: the GPU kernel supports up to {MAXD}"
        )));
    }
    let m = (mask == SdpaMask::Array).then(|| &x[3]);
    let (kind, md) = mask_kind(mask, m.map(|m| m.dtype))?;
    let (out, optr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = b * hq * l;
    if rows > i32::MAX as usize || s > i32::MAX as usize / 2 {
        return Err(bad("too many rows or keys for the GPU kernel".into()));
    }
    let (qi, ki, vi) = (input(gpu, q)?, input(gpu, k)?, input(gpu, v)?);
    let mi = m.map(|m| input(gpu, m)).transpose()?;
    let ptrs = [
        qi.ptr,
        ki.ptr,
        vi.ptr,
        mi.as_ref().map_or(0, |m| m.ptr),
        optr,
    ];
    // prefill: the tensor-core kernel where it applies, else the f32 tiled one
    let prefill = if flash_fits(x, &dims, kind) {
        Some((flash_source(q.dtype, kind, d), FLASH_ROWS, true))
    } else if l > 1 && d == dv && (d == 64 || d == 128) {
        Some((prefill_source(q.dtype, kind, md, d), PREFILL_ROWS, false))
    } else {
        None
    };
    if let Some(((name, body), rows_per_block, flash)) = prefill {
        let f = get(gpu, &name, &body)?;
        let mut a = Args::new();
        if flash {
            // no mask argument: none or causal only
            a.ptr(ptrs[0]).ptr(ptrs[1]).ptr(ptrs[2]).ptr(optr);
            a.push(sd4(q)).push(sd4(k)).push(sd4(v));
        } else {
            qkv_args(&mut a, ptrs, None, x, m);
        }
        a.i32(hq as i32)
            .i32(hkv as i32)
            .i32(l as i32)
            .i32(s as i32)
            .f32(scale);
        let grid = Grid {
            grid: (l.div_ceil(rows_per_block) as u32, (b * hq) as u32, 1),
            block: (NT as u32, 1, 1),
            shared: 0,
        };
        gpu.launch(&f, &name, grid, &mut a)?;
        return Ok(out);
    }
    if let Some((g, dl)) = decode_fits(q, k, v, &dims) {
        // keys across the lanes where K rows allow 16-byte loads: splits of at least one step
        // of its 4 warps (128 keys); else keys across the warps, splits of at least 16 keys;
        // about 2 blocks per SM of (batch, KV head) x key splits
        let lk = lanes_over_keys() && rows_aligned16(k);
        let min_keys = if lk { LK_MIN_KEYS } else { decode_min_keys() };
        // the lanes-over-keys kernel may share a KV head's query heads among several blocks
        let parts = if lk { head_parts(g, dl) } else { 1 };
        let g = g / parts;
        let pairs = b * hkv * parts;
        let splits = decode_splits(BlockTarget::single(), pairs, s, min_keys);
        let (name, body) = decode_source(q.dtype, kind, md, g, dl, lk);
        let f = get(gpu, &name, &body)?;
        with_splits(
            gpu,
            (&f, &name, pairs, splits, Merge::LastBlock),
            (od, optr, rows, dv),
            |a, pml, pacc| {
                qkv_args(a, ptrs, Some((pml, pacc)), x, m);
                a.i32(hq as i32).i32(hkv as i32).i32(s as i32).f32(scale);
            },
        )?;
        return Ok(out);
    }
    let splits = Splits::even(
        s,
        if rows >= TARGET_BLOCKS / 2 {
            1
        } else {
            TARGET_BLOCKS
                .div_ceil(rows)
                .min(s / MIN_SPLIT)
                .clamp(1, 65_535)
        },
    );
    let dvp = match dv.div_ceil(NT) {
        0 | 1 => 1,
        2 => 2,
        _ => 4,
    };
    let (name, body) = source(q.dtype, kind, md, dvp);
    let f = get(gpu, &name, &body)?;
    with_splits(
        gpu,
        (&f, &name, rows, splits, Merge::Launch),
        (od, optr, rows, dv),
        |a, pml, pacc| {
            qkv_args(a, ptrs, Some((pml, pacc)), x, m);
            a.i32(hq as i32)
                .i32(hkv as i32)
                .i32(l as i32)
                .i32(s as i32)
                .i32(d as i32)
                .i32(dv as i32)
                .f32(scale);
        },
    )?;
    Ok(out)
}

/// Who merges a split kernel's key splits: a second launch (`rs_sdpa_merge`), or the kernel's
/// own last block per `blockIdx.x` (the decode kernels, `rd_merge_last` in sdpa.cuh, whose last
/// argument is then its arrival counters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Merge {
    Launch,
    LastBlock,
}

/// Most splits the last block merges itself (`RD_MERGE_MAX` in sdpa.cuh).
const LAST_BLOCK_MERGE_MAX: usize = 128;

/// `RMLX_SDPA_MERGE_LAUNCH=1` merges the decode kernels' splits in a second launch, as before
/// the last-block merge (an ablation switch), read once.
fn merge_launch_forced() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::env::flag(&ON, "RMLX_SDPA_MERGE_LAUNCH", false)
}

/// Whether a launch of `n` splits merges them in its last blocks (given free counters).
fn last_block_merges(merge: Merge, n: usize) -> bool {
    merge == Merge::LastBlock && n > 1 && n <= LAST_BLOCK_MERGE_MAX && !merge_launch_forced()
}

/// Launches `f` (named `name`) on `blocks` × `splits.n` blocks of `NT` threads, with the
/// arguments `args` pushes given the addresses of the key splits' partials (f32: (m, l) and `dv`
/// accumulators per (row, split); 0 and 0 for one split, where the kernel writes `optr` itself)
/// and then the split count and length (every split kernel's last two arguments, followed by
/// the arrival counters where `merge` is [`Merge::LastBlock`]: 0 where the kernel is not to
/// merge). The `rows` rows' softmax states are merged into `optr` (dtype `od`) by the kernel's
/// last blocks, or by a second launch (always for [`Merge::Launch`]; for more splits than the
/// last block takes, or where no counters are free). The partials are freed after the launches
/// are queued: later work on this stream is ordered after them.
pub(crate) fn with_splits(
    gpu: &Arc<Gpu>,
    (f, name, blocks, splits, merge): (&cudarc::driver::CudaFunction, &str, usize, Splits, Merge),
    (od, optr, rows, dv): (Dtype, u64, usize, usize),
    args: impl FnOnce(&mut Args, u64, u64),
) -> Result<()> {
    let Splits { n, len } = splits;
    let tickets = last_block_merges(merge, n)
        .then(|| gpu.tickets.take(blocks))
        .flatten();
    let launch = |pml: u64, pacc: u64| {
        let mut a = Args::new();
        args(&mut a, pml, pacc);
        a.i32(n as i32).i32(len as i32);
        if merge == Merge::LastBlock {
            a.ptr(tickets.unwrap_or(0));
        }
        let grid = Grid {
            grid: (blocks as u32, n as u32, 1),
            block: (NT as u32, 1, 1),
            shared: 0,
        };
        gpu.launch(f, name, grid, &mut a)
    };
    if n <= 1 {
        return launch(0, 0);
    }
    let ml = gpu.alloc.alloc(rows * n * 2 * 4)?;
    let acc = gpu.alloc.alloc(rows * n * dv.max(1) * 4)?;
    launch(ml.ptr, acc.ptr)?;
    use std::sync::atomic::Ordering::Relaxed;
    if tickets.is_some() {
        crate::stats::LAST_BLOCK_MERGES.fetch_add(1, Relaxed);
        return Ok(());
    }
    crate::stats::MERGE_LAUNCHES.fetch_add(1, Relaxed);
    let (mname, mbody) = merge_source(od);
    let mf = get(gpu, &mname, &mbody)?;
    let mut a = Args::new();
    a.ptr(ml.ptr)
        .ptr(acc.ptr)
        .ptr(optr)
        .i32(dv as i32)
        .i32(n as i32);
    gpu.launch(&mf, &mname, Grid::rows(rows, NT as u32), &mut a)
}

/// `struct RdRows` of the ragged decode kernel: each row's K and V addresses (element 0) and
/// their strides per KV head and per key, in elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RdRows {
    pub k: [u64; ROWS_MAX],
    pub v: [u64; ROWS_MAX],
    pub kh: [i64; ROWS_MAX],
    pub kr: [i64; ROWS_MAX],
    pub vh: [i64; ROWS_MAX],
    pub vr: [i64; ROWS_MAX],
}

/// Rows one ragged decode launch takes (`RD_MAXROWS`, `fast::SDPA_ROWS_MAX`).
const ROWS_MAX: usize = rmlx_core::fast::SDPA_ROWS_MAX;

/// The ragged decode kernel (`rs_sdpa_decode_rows`, keys across the lanes, `g` query heads of
/// D = 32 `dl` per block).
pub fn rows_source(t: Dtype, g: usize, dl: usize) -> (String, String) {
    let name = format!("rs_sdpa_dec_rows_{}_g{g}_d{dl}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, RdRows rows, const int* lens, {c}* out, float* part_ml, float* part_acc, Sd4 ql, int Hq, int Hkv, float scale, int n_split, int split_len, unsigned* tickets) {{\n  rs_sdpa_decode_rows<{c}, {g}, {dl}>(q, rows, lens, out, part_ml, part_acc, ql, Hq, Hkv, scale, n_split, split_len, tickets);\n}}\n"
    );
    (name, src)
}

/// `[q, lens, k_0.., v_0..]` → `[B, Hq, 1, D]` (`Primitive::SdpaRows`, shapes as
/// `fast::sdpa_rows` sends them: B <= 16, D of 32 to 256, at most 8 query heads per KV head).
/// One launch (and a merge where keys are split) for all rows: the blocks of row b read its
/// own buffers, up to its length.
pub fn sdpa_rows(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    scale: f32,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let bad = |m: String| Error::invalid("cuda", format!("[sdpa_rows] {m}"));
    let q = &x[0];
    let (b, hq, d) = (q.shape[0], q.shape[1], q.shape[3]);
    if x.len() != 2 + 2 * b || b > ROWS_MAX || od != q.dtype || d % 32 != 0 {
        return Err(bad(format!(
            "expected [q, lens, {b} keys, {b} values] of at most {ROWS_MAX} rows, D a multiple of 32, got {} inputs, D = {d}",
            x.len()
        )));
    }
    let hkv = x[2].shape[1];
    let (g, dl) = (hq / hkv, d / 32);
    if !(1..=8).contains(&g) || ![1, 2, 4, 8].contains(&dl) {
        return Err(bad(format!(
            "Hq / Hkv = {g} and D = {d} are outside the kernel's range"
        )));
    }
    let (out, optr) = output(gpu, shape, od)?;
    // K/V rows must start on 16-byte boundaries (the lanes' vector loads): copies otherwise
    let mut keep = Vec::with_capacity(2 * b);
    let mut t = RdRows::default();
    for i in 0..2 * b {
        let a = &x[2 + i];
        let a = if rows_aligned16(a) {
            a.clone()
        } else {
            crate::ops::elementwise::copy(gpu, a, a.dtype)?
        };
        let di = input(gpu, &a)?;
        let (r, kv) = (i % b, i / b);
        let (p, h, s) = (di.base(), a.strides[1] as i64, a.strides[2] as i64);
        if kv == 0 {
            (t.k[r], t.kh[r], t.kr[r]) = (p, h, s);
        } else {
            (t.v[r], t.vh[r], t.vr[r]) = (p, h, s);
        }
        keep.push((a, di));
    }
    let (ld, li) = contiguous_input(gpu, &x[1])?;
    let qi = input(gpu, q)?;
    let smax = x[2..2 + b].iter().map(|k| k.shape[2]).max().unwrap_or(1);
    let grid = LkGrid::new(BlockTarget::rows(), b, hkv, g, dl, smax, false);
    let rows = b * hq;
    let (name, body) = rows_source(q.dtype, grid.heads, dl);
    let f = get(gpu, &name, &body)?;
    with_splits(
        gpu,
        (&f, &name, grid.blocks, grid.splits, Merge::LastBlock),
        (od, optr, rows, d),
        |a, pml, pacc| {
            a.ptr(qi.ptr)
                .push(t)
                .ptr(li.base())
                .ptr(optr)
                .ptr(pml)
                .ptr(pacc)
                .push(sd4(q))
                .i32(hq as i32)
                .i32(hkv as i32)
                .f32(scale);
        },
    )?;
    drop((keep, ld));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::host_f32;
    use crate::kernels::assert_compiles;

    /// Key splits even out: every split but the last has the same length, none is empty, and
    /// together they cover the keys (as the kernels and the merge assume).
    #[test]
    fn splits_even_out() {
        for (s, n, want) in [
            (192, 2, (2, 96)),
            (100, 8, (8, 13)),
            (5, 8, (5, 1)),
            (0, 4, (1, 1)),
            (1000, 7, (7, 143)),
            (576, 1, (1, 576)),
        ] {
            let sp = Splits::even(s, n);
            assert_eq!((sp.n, sp.len), want, "{s} keys in about {n}");
            assert!(sp.n * sp.len >= s && (sp.n - 1) * sp.len < s.max(1));
        }
    }

    /// The batch engine's ragged-rows attention splits a short cache so that every split is one
    /// step of 32 keys per warp (4 warps, 128 keys) wherever the block target allows it: up to 8
    /// rows of the 8B shape (16 KV-head pairs each) over caches of up to 1,024 slots. The
    /// single-sequence target would leave 171- to 342-key splits there (several steps in series).
    #[test]
    fn rows_splits_are_one_step_per_warp_on_short_caches() {
        for rows in 1..=8 {
            let pairs = rows * 16;
            for cap in [128, 256, 512, 1024] {
                let target = BlockTarget {
                    blocks: ROWS_TARGET_BLOCKS,
                    whole: false,
                };
                let sp = decode_splits(target, pairs, cap, LK_MIN_KEYS);
                assert!(sp.len <= LK_MIN_KEYS, "{rows} rows, {cap} slots: {sp:?}");
                assert!(sp.n * pairs <= ROWS_TARGET_BLOCKS + pairs, "{sp:?}");
            }
        }
        let single = BlockTarget {
            blocks: DECODE_TARGET_BLOCKS,
            whole: true,
        };
        let single = decode_splits(single, 8 * 16, 512, LK_MIN_KEYS);
        assert_eq!((single.n, single.len), (2, 256));
    }

    /// A single sequence's decode launch stays within one wave of the block target: the 8B's
    /// 16 (KV head, head part) pairs at 8,256 keys take 16 splits (256 blocks), not 17 (272).
    #[test]
    fn single_splits_stay_within_the_target() {
        let single = BlockTarget {
            blocks: DECODE_TARGET_BLOCKS,
            whole: true,
        };
        let sp = decode_splits(single, 16, 8256, LK_MIN_KEYS);
        assert_eq!((sp.n, sp.len), (16, 516));
        for pairs in 1..=264 {
            for s in [1, 200, 4096, 8256, 131_072] {
                let sp = decode_splits(single, pairs, s, LK_MIN_KEYS);
                assert!(
                    sp.n * pairs <= DECODE_TARGET_BLOCKS.max(pairs),
                    "{pairs} pairs, {s} keys: {sp:?}"
                );
                assert!(sp.n * sp.len >= s);
            }
        }
    }

    /// Every attention kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn sdpa_kernels_compile() {
        let fl = [Dtype::F32, Dtype::F16, Dtype::BF16];
        let mut body = String::new();
        for t in fl {
            body.push_str(&merge_source(t).1);
            let mut kinds = vec![(0, Dtype::F32), (1, Dtype::F32), (2, Dtype::Bool)];
            kinds.extend(fl.iter().map(|&d| (3, d)));
            for (kind, md) in kinds {
                for dvp in [1, 2, 4] {
                    body.push_str(&source(t, kind, md, dvp).1);
                }
            }
        }
        for t in fl {
            for (kind, md) in [(0, Dtype::F32), (1, Dtype::F32), (2, Dtype::Bool), (3, t)] {
                for lk in [false, true] {
                    for g in 1..=8 {
                        body.push_str(&decode_source(t, kind, md, g, 4, lk).1);
                    }
                    for dl in [1, 2, 8] {
                        body.push_str(&decode_source(t, kind, md, 4, dl, lk).1);
                    }
                    body.push_str(&decode_source(t, kind, md, 8, 8, lk).1);
                }
                for d in [64, 128] {
                    body.push_str(&prefill_source(t, kind, md, d).1);
                }
            }
        }
        for t in [Dtype::F16, Dtype::BF16] {
            for kind in [0, 1] {
                for d in [64, 128] {
                    body.push_str(&flash_source(t, kind, d).1);
                }
            }
        }
        // the ragged decode kernel: the head groups and dims `fast::sdpa_rows` sends
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (g, dl) in [(1, 4), (2, 4), (4, 4), (3, 2), (8, 8), (1, 1)] {
                body.push_str(&rows_source(t, g, dl).1);
            }
        }
        assert_compiles("sdpa_all", &format!("{MMA_CUH}\n{SDPA_CUH}\n{body}"));
    }

    /// On a GPU: decode (split keys), GQA, causal and bool masks against a naive reference.
    /// Skipped without a CUDA device.
    #[test]
    fn sdpa_matches_naive_on_gpu() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let gpu = crate::context::gpu(0).unwrap();
        let f = |n: usize, a: f32| (0..n).map(|i| (i as f32 * a).sin()).collect::<Vec<f32>>();
        let merges = crate::stats::split_merges();
        // (hq, hkv, l, s, d, mask): 0 none, 1 causal, 2 bool
        for &(hq, hkv, l, s, d, mk) in &[
            // decode with 24 splits, merged by the kernel's last blocks; with 157, more than
            // those take, merged by a second launch
            (4, 2, 1, 3000, 64, 0),
            (2, 1, 1, 20_000, 64, 0),
            (4, 1, 3, 300, 128, 1),
            (2, 2, 1, 1000, 256, 2),
            (2, 1, 5, 40, 32, 1),
            // the GQA decode kernel: Llama-3-8B's and SmolLM2's head groups, 8 heads per KV
            // head with fewer keys than warps, a causal single row
            (32, 8, 1, 700, 128, 2),
            (32, 8, 1, 1500, 128, 2),
            (9, 3, 1, 330, 64, 2),
            (8, 1, 1, 3, 128, 0),
            (6, 2, 1, 77, 32, 1),
            // the tiled prefill kernel: causal square and with a cached prefix, a bool mask,
            // a tile tail (L % 16, S % 32), more queries than keys (uniform rows)
            (8, 2, 100, 100, 128, 1),
            (4, 4, 37, 300, 64, 1),
            (4, 1, 20, 200, 64, 2),
            (2, 1, 50, 45, 64, 1),
            (2, 2, 33, 33, 128, 0),
        ] {
            let (qv, kv, vv) = (
                f(hq * l * d, 0.37),
                f(hkv * s * d, 0.11),
                f(hkv * s * d, 0.23),
            );
            let keep = |i: usize, j: usize| match mk {
                // end-aligned; signed, so that rows before the first key (l > s) see none
                1 => j as isize <= i as isize + s as isize - l as isize,
                2 => j >= 150 && !j.is_multiple_of(3),
                _ => true,
            };
            let mut x = vec![
                host_f32(&qv, &[1, hq, l, d]),
                host_f32(&kv, &[1, hkv, s, d]),
                host_f32(&vv, &[1, hkv, s, d]),
            ];
            let mask = match mk {
                1 => SdpaMask::Causal,
                2 => {
                    let mut m = ArrayData::alloc(&[1, 1, 1, s], Dtype::Bool).unwrap();
                    let b = Arc::get_mut(&mut m.buffer).unwrap().as_mut_slice();
                    for (j, v) in b.iter_mut().enumerate() {
                        *v = keep(0, j) as u8;
                    }
                    // broadcast view [1, hq, l, s]
                    m.shape = [1, hq, l, s].into_iter().collect();
                    m.strides = [0, 0, 0, 1].into_iter().collect();
                    x.push(m);
                    SdpaMask::Array
                }
                _ => SdpaMask::None,
            };
            let scale = 1.0 / (d as f32).sqrt();
            let y = sdpa(&gpu, &x, scale, mask, &[1, hq, l, d], Dtype::F32).unwrap();
            gpu.synchronize().unwrap();
            y.buffer.ensure_host().unwrap();
            let y = y.as_slice::<f32>().unwrap();
            for h in 0..hq {
                let hk = h / (hq / hkv);
                for i in 0..l {
                    let sc: Vec<f32> = (0..s)
                        .map(|j| {
                            if !keep(i, j) {
                                return f32::NEG_INFINITY;
                            }
                            (0..d)
                                .map(|t| qv[(h * l + i) * d + t] * scale * kv[(hk * s + j) * d + t])
                                .sum()
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    // a row that sees no key attends uniformly (the CPU's rule)
                    let e: Vec<f32> = if m == f32::NEG_INFINITY {
                        vec![1.0; s]
                    } else {
                        sc.iter().map(|x| (x - m).exp()).collect()
                    };
                    let z: f32 = e.iter().sum();
                    for t in 0..d {
                        let want: f32 = (0..s).map(|j| e[j] / z * vv[(hk * s + j) * d + t]).sum();
                        let got = y[(h * l + i) * d + t];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "case {hq} {hkv} {l} {s} {d} {mk} [{h},{i},{t}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // both merges ran (other tests may add to the counters, never take away)
        let after = crate::stats::split_merges();
        assert!(
            merge_launch_forced() || after.0 > merges.0,
            "no decode launch merged its splits in its last blocks"
        );
        assert!(after.1 > merges.1, "no split merge launch ran");
    }

    /// The tensor cores take the fused decode attention of the models' 16-bit caches: Llama-8B
    /// (4 heads of 128 per KV head) alone and in a batch, Qwen3-30B-A3B (8) alone, SmolLM2 (3
    /// of 64); not f32 caches, D = 32 or 256, more than 8 heads, nor a batch of 8-head groups.
    #[test]
    fn mma_dispatch_rule() {
        if std::env::var_os("RMLX_SDPA_MMA").is_some() {
            return; // the switch decides
        }
        for (t, g, d, b, want) in [
            (Dtype::BF16, 4, 128, 1, true),
            (Dtype::BF16, 4, 128, 8, true),
            (Dtype::F16, 4, 128, 1, true),
            (Dtype::BF16, 8, 128, 1, true),
            (Dtype::BF16, 8, 128, 8, false),
            (Dtype::BF16, 3, 64, 1, true),
            (Dtype::F32, 4, 128, 1, false),
            (Dtype::BF16, 4, 256, 1, false),
            (Dtype::BF16, 4, 32, 1, false),
            (Dtype::BF16, 16, 128, 1, false),
        ] {
            assert_eq!(mma_fits(t, g, d, b), want, "{t} g {g} d {d} b {b}");
        }
    }

    /// The last-block merge takes the decode kernels' launches of 2 to 128 splits only.
    #[test]
    fn last_block_merge_takes_2_to_128_splits() {
        assert!(!last_block_merges(Merge::LastBlock, 1));
        assert!(last_block_merges(Merge::LastBlock, 2) != merge_launch_forced());
        assert!(last_block_merges(Merge::LastBlock, 128) != merge_launch_forced());
        assert!(!last_block_merges(Merge::LastBlock, 129));
        assert!(!last_block_merges(Merge::Launch, 16));
    }

    /// 16-bit values (as an ArrayData of `shape` viewed with `strides`) and their f32 values.
    fn half_data(v: &[f32], bf: bool, shape: &[usize], strides: &[isize]) -> (ArrayData, Vec<f32>) {
        let (mut a, back): (ArrayData, Vec<f32>) = if bf {
            let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
            let a = rmlx_core::Array::from_slice(&h, &[h.len()]).and_then(|a| a.data());
            (a.unwrap(), h.iter().map(|x| x.to_f32()).collect())
        } else {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            let a = rmlx_core::Array::from_slice(&h, &[h.len()]).and_then(|a| a.data());
            (a.unwrap(), h.iter().map(|x| x.to_f32()).collect())
        };
        a.shape = shape.iter().copied().collect();
        a.strides = strides.iter().copied().collect();
        (a, back)
    }

    /// On a GPU: the tensor-core prefill kernel (bf16 and f16, causal square, causal after a
    /// cached prefix, no mask, GQA, tile tails, K/V read through a cache's strides) against
    /// f64 attention over the same 16-bit values. Skipped without a CUDA device.
    /// Axes of extent 1 do not count toward row alignment (a dequantized KV cache comes out of its
    /// reshape as [1, 8, S, 128] with strides [1, S·128, 128, 1]); the others do.
    #[test]
    fn row_alignment_ignores_axes_of_extent_one() {
        let (s, d) = (1024usize, 128usize);
        let st = [1, (s * d) as isize, d as isize, 1];
        assert!(rows_aligned(&[1, 8, s, d], &st, 0, 8));
        assert!(!rows_aligned(&[2, 8, s, d], &st, 0, 8));
        assert!(!rows_aligned(
            &[1, 8, s, d],
            &[1, 8 * 130, 130 - 3, 1],
            0,
            8
        ));
        assert!(!rows_aligned(&[1, 8, s, d], &st, 4, 8));
        assert!(!rows_aligned(
            &[1, 8, s, d],
            &[0, (s * d) as isize, d as isize, 2],
            0,
            8
        ));
        assert!(rows_aligned(&[1, 8, s, d], &st, 4, 4));
    }

    #[test]
    fn flash_prefill_matches_naive_on_gpu() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let gpu = crate::context::gpu(0).unwrap();
        let f = |n: usize, a: f32| (0..n).map(|i| (i as f32 * a).sin()).collect::<Vec<f32>>();
        // (hq, hkv, l, s, d, causal)
        for &(hq, hkv, l, s, d, causal) in &[
            (8, 2, 100, 100, 128, true),
            (4, 4, 37, 300, 64, true),
            (2, 2, 130, 130, 64, false),
            (32, 8, 200, 200, 128, true),
            (4, 1, 64, 64, 128, true),
            (2, 1, 65, 190, 128, false),
        ] {
            for bf in [true, false] {
                let cap = s + 20; // K/V live in a cache of `cap` rows per head
                let (q, qv) = half_data(
                    &f(hq * l * d, 0.37),
                    bf,
                    &[1, hq, l, d],
                    &[(hq * l * d) as isize, (l * d) as isize, d as isize, 1],
                );
                // bf16: K/V as a reshape leaves a dequantized cache, the batch axis (extent 1)
                // at stride 1; the kernel must still be chosen
                let b_stride = if bf { 1 } else { (hkv * cap * d) as isize };
                let kvs = [b_stride, (cap * d) as isize, d as isize, 1];
                let (k, kv) = half_data(&f(hkv * cap * d, 0.11), bf, &[1, hkv, s, d], &kvs);
                let (v, vv) = half_data(&f(hkv * cap * d, 0.23), bf, &[1, hkv, s, d], &kvs);
                let od = if bf { Dtype::BF16 } else { Dtype::F16 };
                let mask = if causal {
                    SdpaMask::Causal
                } else {
                    SdpaMask::None
                };
                let dims = SdpaDims::of("cuda", &[q.clone(), k.clone(), v.clone()], mask).unwrap();
                assert!(flash_fits(
                    &[q.clone(), k.clone(), v.clone()],
                    &dims,
                    causal as u32
                ));
                let scale = 1.0 / (d as f32).sqrt();
                let y = sdpa(&gpu, &[q, k, v], scale, mask, &[1, hq, l, d], od).unwrap();
                let y = crate::ops::elementwise::copy(&gpu, &y, Dtype::F32).unwrap();
                gpu.synchronize().unwrap();
                y.buffer.ensure_host().unwrap();
                let y = y.as_slice::<f32>().unwrap();
                let tol = if bf { 1.5e-2 } else { 4e-3 };
                for h in 0..hq {
                    let hk = h / (hq / hkv);
                    for i in 0..l {
                        let lim = i + s - l;
                        let sc: Vec<f64> = (0..s)
                            .map(|j| {
                                if causal && j > lim {
                                    return f64::NEG_INFINITY;
                                }
                                (0..d)
                                    .map(|t| {
                                        qv[(h * l + i) * d + t] as f64
                                            * kv[(hk * cap + j) * d + t] as f64
                                    })
                                    .sum::<f64>()
                                    * scale as f64
                            })
                            .collect();
                        let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for t in 0..d {
                            let want: f64 = (0..s)
                                .map(|j| e[j] / z * vv[(hk * cap + j) * d + t] as f64)
                                .sum();
                            let got = y[(h * l + i) * d + t] as f64;
                            assert!(
                                (got - want).abs() < tol,
                                "case {hq} {hkv} {l} {s} {d} causal {causal} bf16 {bf} [{h},{i},{t}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
