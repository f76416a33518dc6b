//! MLX affine quantization on the GPU (kernels in `kernels/quantized.cuh`):
//! - `quantize`: one warp per word-aligned chunk of a row (a group, or two groups of 16 where
//!   16 codes do not fill whole words), bit-exact with the CPU (same f32 operations in the same
//!   order, IEEE division, no fused multiply-add).
//! - `dequantize`: one thread per element, MLX's rounding (bit-exact with the CPU).
//! - `quantized_matmul`: decode (transposed weights, at most 8 rows of x per matrix, K a
//!   multiple of 32): a warp per 4 weight rows streams the packed words once, f32 accumulation;
//!   otherwise the weights are dequantized to a temporary of the output dtype and multiplied by
//!   cuBLASLt.

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag, DevIn};
use crate::kernels::MMA_CUH;
use crate::launch::{Args, Grid};
use crate::ops::elementwise as ew;
use crate::ops::qmv_stream;
use rmlx_core::primitive::BinaryOp;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The templated device code every quantization kernel is generated from.
pub const QUANT_CUH: &str = include_str!("../../kernels/quantized.cuh");
/// The tensor-core decode product of several rows of half x (`rq_qmv_rows`).
pub const QMV_ROWS_CUH: &str = include_str!("../../kernels/qmv_rows.cuh");

pub use rmlx_core::ops::quantized::DECODE_MAX_ROWS;

fn check_float(op: &str, what: &str, d: Dtype) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(Error::dtype(
            "cuda",
            format!("[{op}] {what} must be float16, bfloat16 or float32, got {d}"),
        ))
    }
}

fn check_params(op: &str, group_size: usize, bits: usize) -> Result<()> {
    if ![2, 3, 4, 5, 6, 8].contains(&bits) || ![16, 32, 64, 128].contains(&group_size) {
        return Err(Error::invalid(
            "cuda",
            format!("[{op}] unsupported group_size {group_size} / bits {bits}"),
        ));
    }
    Ok(())
}

/// Whether dequantization may index in 32 bits (`RMLX_DEQ_S32=0`: 64, as before).
fn deq_s32() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_DEQ_S32", true)
}

fn get(gpu: &Arc<Gpu>, name: &str, wrapper: &str) -> Result<cudarc::driver::CudaFunction> {
    gpu.kernels
        .get(&gpu.ctx, name, &format!("{QUANT_CUH}\n{wrapper}"))
}

/// Codes a warp of the quantize kernels takes at a time (`rq_chunk` in quantized.cuh): a group,
/// or two where one group's codes do not fill whole words.
pub(crate) fn quant_chunk(group_size: usize, bits: usize) -> usize {
    if (group_size * bits).is_multiple_of(32) {
        group_size
    } else {
        2 * group_size
    }
}

/// The quantize kernel for weights of dtype `t`: name and wrapper source.
pub fn quantize_source(t: Dtype) -> (String, String) {
    let name = format!("rq_quantize_{}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {c}* w, u32* wq, {c}* sb, i64 rows, i64 K, int gs, int bits, int part) {{\n  rq_quantize<{c}>(w, wq, sb, rows, K, gs, bits, part);\n}}\n"
    );
    (name, src)
}

/// The dequantize kernel for `bits`-bit codes, scales of dtype `s`, output `o` (`mlxr`: MLX's
/// rounding); `s32`: 32-bit indices (else 64-bit).
pub fn dequantize_source(
    s: Dtype,
    o: Dtype,
    mlxr: bool,
    bits: usize,
    s32: bool,
) -> (String, String) {
    let name = format!(
        "rq_deq_{}_{}{}_b{bits}{}",
        tag(s),
        tag(o),
        if mlxr { "_mlx" } else { "" },
        if s32 { "_s32" } else { "" }
    );
    let (cs, co) = (ctype(s), ctype(o));
    let ix = if s32 { "u32" } else { "i64" };
    let src = format!(
        "extern \"C\" __global__ void {name}(const u32* wq, const {cs}* s, const {cs}* b, {co}* y, {ix} n, {ix} K, int gs_shift) {{\n  rq_dequantize<{ix}, {cs}, {co}, {mlxr}, {bits}>(wq, s, b, y, n, K, gs_shift);\n}}\n"
    );
    (name, src)
}

/// The decode kernel (transposed weights) for `mm` rows of x at most; `ks` warps (1 or 4)
/// share each group of weight rows, splitting K.
pub fn qmv_t_source(
    x: Dtype,
    s: Dtype,
    o: Dtype,
    bits: usize,
    mm: usize,
    ks: usize,
) -> (String, String) {
    let name = format!(
        "rq_qmv_t_{}_{}_{}_b{bits}_m{mm}_k{ks}",
        tag(x),
        tag(s),
        tag(o)
    );
    let (cx, cs, co) = (ctype(x), ctype(s), ctype(o));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {cx}* x, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const {co}* res, int M, i64 N, i64 K, int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {{\n  rq_qmv_t<{cx}, {cs}, {co}, {bits}, {mm}, {ks}>(x, w, s, b, y, res, M, N, K, gs_shift, xbs, wbs, sbs, bbs, ybs);\n}}\n"
    );
    (name, src)
}

/// The int8-activation decode kernel (4- or 8-bit weights, groups of 32 or more): `r` weight
/// rows per warp, `un` blocks of 32 codes in flight per lane and row. `x`: the dtype of x where
/// each block quantizes it itself (into shared memory), `None` where `rq_quantize_x` ran first;
/// `norm`: x is RMS-normalised first (quantized as x ∘ weight, each row's product scaled by its
/// 1/rms); `pf`: the weight rows are prefetched into L2 before the kernel waits on its
/// predecessor. Launched with 128 threads but compiled for up to 256: that register budget
/// measured 1.3–3 % faster decode on an H100 than a bound of 128 (docs/PERF.md).
pub fn qmv8_source(
    x: Option<Dtype>,
    norm: bool,
    s: Dtype,
    o: Dtype,
    bits: usize,
    (mm, r, un): (usize, usize, usize),
    pf: bool,
) -> (String, String) {
    let xt = x.map_or("xq", tag);
    let name = format!(
        "rq_qmv8_{xt}{}_{}_{}_b{bits}_m{mm}_r{r}_u{un}{}",
        if norm { "_n" } else { "" },
        tag(s),
        tag(o),
        if pf { "_pf" } else { "" }
    );
    let (cx, cs, co) = (x.map_or("float", ctype), ctype(s), ctype(o));
    let xf = x.is_some();
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(256) {name}(const {cx}* x, const signed char* xq, const RqXBlock* meta, const {cx}* nw, float eps, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const {co}* res, int M, i64 N, i64 K, int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {{\n  RMLX_PDL_MANUAL rq_qmv8<{cx}, {cs}, {co}, {bits}, {mm}, {r}, {un}, {xf}, {norm}, {pf}>(x, xq, meta, nw, eps, w, s, b, y, res, M, N, K, gs_shift, xbs, wbs, sbs, bbs, ybs);\n}}\n"
    );
    (name, src)
}

/// The activation quantizer of [`qmv8_source`]'s kernel (x of dtype `x`, codes laid out for
/// `bits`-bit weights; `norm`: of x ∘ the norm's weight, each block's Σx² kept).
pub fn quantize_x_source(x: Dtype, bits: usize, norm: bool) -> (String, String) {
    let name = format!(
        "rq_quantize_x_{}_b{bits}{}",
        tag(x),
        if norm { "_n" } else { "" }
    );
    let cx = ctype(x);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {cx}* x, const {cx}* nw, signed char* xq, RqXBlock* meta, int M, i64 K) {{\n  rq_quantize_x<{cx}, {bits}, {norm}>(x, nw, xq, meta, M, K);\n}}\n"
    );
    (name, src)
}

/// What a rows-kernel variant (`rq_qmv_rows`, `rq_qmv_stream`) is generated for: the dtypes of
/// x, of the scales and biases and of the output, the group size (64 or 128), x RMS-normalised
/// inside (`norm`), SwiGLU on the stores (`swiglu`: N = 2H rows in, H columns out).
#[derive(Clone, Copy, Debug)]
pub struct RowsVariant {
    pub x: Dtype,
    pub s: Dtype,
    pub o: Dtype,
    pub gs: usize,
    pub norm: bool,
    pub swiglu: bool,
}

impl RowsVariant {
    /// The kernel name stem: `{kind}_{x}[_n][_sw]_{scales}_{out}_g{gs}`.
    pub(crate) fn stem(&self, kind: &str) -> String {
        format!(
            "{kind}_{}{}{}_{}_{}_g{}",
            tag(self.x),
            if self.norm { "_n" } else { "" },
            if self.swiglu { "_sw" } else { "" },
            tag(self.s),
            tag(self.o),
            self.gs
        )
    }
    /// The wrapper's parameter list up to the residual, and the template arguments x, scales,
    /// output, group size (both kernels start with them).
    pub(crate) fn signature(&self) -> (String, String) {
        let (cx, cs, co) = (ctype(self.x), ctype(self.s), ctype(self.o));
        (
            format!("const {cx}* x, const {cx}* nw, float eps, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const {co}* res"),
            format!("{cx}, {cs}, {co}, {}", self.gs),
        )
    }
}

/// One rows-kernel product (`launch_rows`, `qmv_stream::launch`): x and the norm it takes
/// inside, the addresses of the weights, scales and biases, of y and of the residual (0: none),
/// the variant, the batch strides of x, w, scales, biases and y, and the batch.
pub(crate) struct RowsLaunch {
    pub x: u64,
    pub norm: Option<XNorm>,
    pub w: [u64; 3],
    pub y: u64,
    pub res: u64,
    pub v: RowsVariant,
    pub strides: [i64; 5],
    pub batch: usize,
}

impl RowsLaunch {
    /// The arguments both kernels take in this order: x, the norm (weight, eps), w, scales,
    /// biases, y, the residual, the row count M where the kernel takes one, N, K, the strides.
    pub(crate) fn args(&self, m: Option<usize>, n: usize, k: usize) -> Args {
        let mut a = Args::new();
        let (nw, eps) = self.norm.map_or((0, 0.0), |n| (n.weight, n.eps));
        let [w, s, b] = self.w;
        a.ptr(self.x)
            .ptr(nw)
            .f32(eps)
            .ptr(w)
            .ptr(s)
            .ptr(b)
            .ptr(self.y)
            .ptr(self.res);
        if let Some(m) = m {
            a.i32(m as i32);
        }
        a.i64(n as i64).i64(k as i64);
        for v in self.strides {
            a.i64(v);
        }
        a
    }
    /// Blocks along N for tiles of `16 t` rows (SwiGLU: 16 columns of H per block), batch along y.
    pub(crate) fn grid(&self, n: usize, t: usize) -> (u32, u32, u32) {
        let blocks = if self.v.swiglu {
            (n / 2).div_ceil(16)
        } else {
            n.div_ceil(16 * t)
        };
        (blocks as u32, self.batch.max(1) as u32, 1)
    }
}

/// Tiles of 16 weight rows per block of a rows kernel over N rows: one up to 4,096 (more
/// blocks), two above, and two for SwiGLU (a gate tile and an up tile). Measured on an H100
/// (dev/kernels/qmv, v7).
pub(crate) fn rows_tiles(n: usize, swiglu: bool) -> usize {
    if swiglu || n > 4096 {
        2
    } else {
        1
    }
}

/// The tensor-core decode kernel for several rows of half x (`qmv_rows.cuh`) of variant `v`:
/// `t` tiles of 16 weight rows per block, `ks` warps splitting K, `u` units of 64 codes in
/// flight, compiled for `min_blocks` blocks per SM. Name and wrapper source.
pub fn qmv_rows_source(
    v: RowsVariant,
    (t, ks, u): (usize, usize, usize),
    min_blocks: usize,
) -> (String, String) {
    let name = format!("{}_t{t}_k{ks}_u{u}_b{min_blocks}", v.stem("rq_qmv_rows"));
    let (params, targs) = v.signature();
    let (threads, norm, swiglu) = (32 * ks, v.norm, v.swiglu);
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}, {min_blocks}) {name}({params}, int M, i64 N, i64 K, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {{\n  RMLX_PDL_MANUAL rq_qmv_rows<{targs}, {t}, {ks}, {u}, {norm}, {swiglu}>(x, nw, eps, w, s, b, y, res, M, N, K, xbs, wbs, sbs, bbs, ybs);\n}}\n"
    );
    (name, src)
}

/// One launch of the tensor-core rows kernel (`qmv_rows.cuh`) for `l`, (M, N, K), in the
/// configuration (T, KS, U).
fn launch_rows(
    gpu: &Arc<Gpu>,
    l: &RowsLaunch,
    (m, n, k): (usize, usize, usize),
    cfg: (usize, usize, usize),
) -> Result<()> {
    let (name, src) = qmv_rows_source(l.v, cfg, rows_kernel_min_blocks());
    let f = gpu.kernels.get(
        &gpu.ctx,
        &name,
        &format!("{QUANT_CUH}\n{MMA_CUH}\n{QMV_ROWS_CUH}\n{src}"),
    )?;
    let g = Grid {
        grid: l.grid(n, cfg.0),
        block: (32 * cfg.1 as u32, 1, 1),
        shared: 0,
    };
    gpu.launch(&f, &name, g, &mut l.args(Some(m), n, k))
}

/// `silu(g) · u` of the halves `[g, u]` of `x @ dequant(w)ᵀ` (`Primitive::QuantizedSwiglu`):
/// `[x, wq, scales, biases, norm weight?]`, w `[2H, K·bits/32]` a fused gate/up layer (gate
/// rows first) → `[.., H]`. Decode rows the tensor-core kernel takes run as one launch of its
/// SwiGLU variant; anything else is the product, then `silu_mul` of its halves (the same bits).
pub fn quantized_swiglu(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (group_size, bits): (usize, usize),
    (exact, norm): (bool, Option<f32>),
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "quantized_swiglu";
    let nd = shape.len();
    let h = shape.last().copied().unwrap_or(0);
    if x.len() != 4 + norm.is_some() as usize || x[1].shape.len() != 2 || x[1].shape[0] != 2 * h {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] expected [x, wq [2H, ..], scales, biases, norm weight?] for H = {h}"),
        ));
    }
    let mut full = shape.to_vec();
    full[nd - 1] = 2 * h;
    let m: usize = shape[..nd - 1].iter().product();
    let k = x[0].shape.last().copied().unwrap_or(0);
    let (wa, sa, ba) = (&x[1], &x[2], &x[3]);
    let fits = m > 0
        && h > 0
        && k.is_multiple_of(32)
        && int8_decode(bits, group_size, exact)
        && rows_kernel_fits(
            (m, 2 * h, k),
            x[0].dtype,
            sa.dtype,
            ba.dtype,
            (group_size, bits),
        );
    if fits {
        let norm_in = norm
            .map(|eps| Ok((check_norm_weight(OP, &x[0], &x[4])?, eps)))
            .transpose()?;
        let nx = NormedX::new(gpu, &x[0], norm_in, true)?;
        let (xd, xp) = decode_rows(gpu, &nx.x)?;
        let w = DecodeWeights::new(gpu, [wa, sa, ba])?;
        if w.aligned16() {
            let (out, yptr) = output(gpu, shape, od)?;
            let l = RowsLaunch {
                x: xp,
                norm: nx.norm,
                w: w.ptrs,
                y: yptr,
                res: 0,
                v: RowsVariant {
                    x: xd.dtype,
                    s: sa.dtype,
                    o: od,
                    gs: group_size,
                    norm: nx.norm.is_some(),
                    swiglu: true,
                },
                strides: [0; 5],
                batch: 1,
            };
            if !qmv_stream::launch(gpu, &l, m, (2 * h, k))? {
                launch_rows(gpu, &l, (m, 2 * h, k), (2, 8, 2))?;
            }
            drop(xd);
            return Ok(out);
        }
    }
    let y = quantized_matmul(
        gpu,
        x,
        (group_size, bits),
        true,
        exact,
        (false, norm),
        &full,
        od,
    )?;
    let half = |at: usize| ArrayData {
        offset: y.offset + at,
        shape: shape.into(),
        ..y.clone()
    };
    ew::binary(gpu, &half(0), &half(h), BinaryOp::SiluMul, shape, od)
}

/// Whether a decode product of `m` rows may take the tensor-core kernel (`qmv_rows.cuh`): half
/// x, 4-bit weights in groups of 64 or 128 with half scales and biases, K a multiple of 256
/// (whole steps and aligned scale loads), int8 decode allowed (not exact), and `RMLX_QMV_ROWS`
/// not 0 (an ablation switch: the dp4a kernel instead). Its time hardly depends on the rows, so
/// it takes 3..8 rows, and 1..2 rows where the dp4a kernel would need x quantized by a launch of
/// its own (`m·k` past [`XFUSED_MAX`]) and N is in [`ROWS_KERNEL_FEW_N`]: 8B shape batch 1
/// 361/362 → 390/397 tok/s, batch 2 527 → 611 (H100, same call). `RMLX_QMV_ROWS_MIN` (default
/// 1) raises the fewest rows (an ablation switch: 3 is the rule before).
///
/// One row of x also fits wherever the streaming variant takes it ([`qmv_stream::takes`]),
/// which then runs.
fn rows_kernel_fits(
    (m, n, k): (usize, usize, usize),
    x: Dtype,
    s: Dtype,
    b: Dtype,
    (gs, bits): (usize, usize),
) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let half = |d: Dtype| matches!(d, Dtype::BF16 | Dtype::F16);
    let few_rows_ok = m >= 3
        || (m * k > XFUSED_MAX && ROWS_KERNEL_FEW_N.contains(&n))
        || (m == 1 && qmv_stream::enabled() && qmv_stream::takes(n, k));
    (crate::env::count(&MIN, "RMLX_QMV_ROWS_MIN", 1)..=DECODE_MAX_ROWS).contains(&m)
        && few_rows_ok
        && bits == 4
        && (gs == 64 || gs == 128)
        && k.is_multiple_of(256)
        && half(x)
        && half(s)
        && b == s
        && crate::env::flag(&ON, "RMLX_QMV_ROWS", true)
}

/// Output rows for which 1..2 rows of x take the tensor-core kernel (see [`rows_kernel_fits`]).
/// Measured on an H100 (docs/PERF.md): below 4,096 (Qwen3-30B-A3B's o_proj, 2,048: 128 blocks)
/// it was 0.99× the dp4a kernel in the model; above 32,768 (a head) the dp4a kernel streams
/// faster (128,256 × 4,096: 105 µs in the model, the rows kernel 150 µs normed in the ladder).
const ROWS_KERNEL_FEW_N: std::ops::RangeInclusive<usize> = 4_096..=32_768;

/// Blocks per SM the tensor-core rows kernel is compiled for (`__launch_bounds__`'s second
/// argument: at 2 the compiler keeps it within 128 registers). `RMLX_QMV_ROWS_MINB` overrides
/// it (a tuning knob for the ladder's A/B in the model).
fn rows_kernel_min_blocks() -> usize {
    static MINB: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    crate::env::count(&MINB, "RMLX_QMV_ROWS_MINB", 2).min(4)
}

/// Bytes of one int8 block's meta (`RqXBlock`: step, Σx, Σxq, padding).
const XBLOCK_META: usize = 16;

/// Codes one warp step of the decode kernel covers (32 lanes x 32 codes, for every width).
const QMV_STEP: usize = 1024;

/// `part` of quantizing `w: [..., K]` (0 → packed u32 words, 1 → scales, 2 → biases).
pub fn quantize(
    gpu: &Arc<Gpu>,
    w: &ArrayData,
    group_size: usize,
    bits: usize,
    part: u8,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "quantize";
    check_params(OP, group_size, bits)?;
    check_float(OP, "w", w.dtype)?;
    let want = if part == 0 { Dtype::U32 } else { w.dtype };
    if od != want || part > 2 {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] part {part} of {} weights cannot be {od}", w.dtype),
        ));
    }
    let k = w.shape.last().copied().unwrap_or(0);
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 || k == 0 || w.numel() == 0 {
        return Ok(out);
    }
    if !k.is_multiple_of(group_size) || !(k * bits).is_multiple_of(32) {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] rows of {k} elements do not split into groups of {group_size} and whole words of {bits}-bit codes"),
        ));
    }
    let (_keep, wi) = contiguous_input(gpu, w)?;
    let rows = w.numel() / k;
    let ch = quant_chunk(group_size, bits);
    let (name, src) = quantize_source(w.dtype);
    let f = get(gpu, &name, &src)?;
    let (wq, sb) = if part == 0 { (yptr, 0) } else { (0, yptr) };
    let mut a = Args::new();
    a.ptr(wi.base())
        .ptr(wq)
        .ptr(sb)
        .i64(rows as i64)
        .i64(k as i64)
        .i32(group_size as i32)
        .i32(bits as i32)
        .i32(part as i32);
    // a warp per chunk (RQ_QUANT_WARPS = 8 of them per 256-thread block)
    gpu.launch(&f, &name, Grid::elems(rows * (k / ch) * 32), &mut a)?;
    Ok(out)
}

/// Dequantizes `wq` (rows of `k` codes) into `y` (`n` elements of dtype `od`).
#[allow(clippy::too_many_arguments)]
fn dequantize_into(
    gpu: &Arc<Gpu>,
    wq: &ArrayData,
    s: &ArrayData,
    b: &ArrayData,
    n: usize,
    k: usize,
    group_size: usize,
    bits: usize,
    od: Dtype,
    mlxr: bool,
    y: u64,
) -> Result<()> {
    if n == 0 || k == 0 {
        return Ok(());
    }
    let (_kw, wi) = contiguous_input(gpu, wq)?;
    let (_ks, si) = contiguous_input(gpu, s)?;
    let (_kb, bi) = contiguous_input(gpu, b)?;
    // 32-bit indices where they fit (`RMLX_DEQ_S32=0` keeps the 64-bit ones: an ablation switch;
    // group sizes are powers of two, check_params)
    let s32 = n <= u32::MAX as usize && deq_s32();
    let (name, src) = dequantize_source(s.dtype, od, mlxr, bits, s32);
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    a.ptr(wi.base()).ptr(si.base()).ptr(bi.base()).ptr(y);
    if s32 {
        a.u32(n as u32).u32(k as u32);
    } else {
        a.i64(n as i64).i64(k as i64);
    }
    a.i32(group_size.trailing_zeros() as i32);
    // one thread per 8 codes (k, a multiple of the group size, is a multiple of 8)
    gpu.launch(&f, &name, Grid::elems(n / 8), &mut a)
}

fn check_packed(op: &str, x: &[ArrayData], group_size: usize, bits: usize) -> Result<()> {
    check_params(op, group_size, bits)?;
    let (wq, s, b) = (&x[x.len() - 3], &x[x.len() - 2], &x[x.len() - 1]);
    if wq.dtype != Dtype::U32 || wq.shape.len() < 2 {
        return Err(Error::dtype(
            "cuda",
            format!("[{op}] wq must be uint32 with at least 2 dimensions"),
        ));
    }
    check_float(op, "scales", s.dtype)?;
    if s.dtype != b.dtype || s.shape != b.shape {
        return Err(Error::invalid(
            "cuda",
            format!("[{op}] scales and biases must share dtype and shape"),
        ));
    }
    let nd = wq.shape.len();
    let k = wq.shape[nd - 1] * 32 / bits;
    if s.shape.len() != nd
        || s.shape[..nd - 1] != wq.shape[..nd - 1]
        || !k.is_multiple_of(group_size)
        || s.shape[nd - 1] != k / group_size
    {
        return Err(Error::invalid(
            "cuda",
            format!(
                "[{op}] wq {:?} does not match scales {:?} for group_size {group_size}, bits {bits}",
                wq.shape, s.shape
            ),
        ));
    }
    Ok(())
}

/// `[wq, scales, biases]` → `[..., N, K]` in the scales' dtype, bit-exact with the CPU.
pub fn dequantize(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    group_size: usize,
    bits: usize,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "dequantize";
    if x.len() != 3 {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] expected [wq, scales, biases]"),
        ));
    }
    check_packed(OP, x, group_size, bits)?;
    let (out, yptr) = output(gpu, shape, od)?;
    let k = shape.last().copied().unwrap_or(0);
    let n = out.numel();
    // MLX's rounding is defined for the scales' dtype; another output dtype rounds once.
    let mlxr = od == x[1].dtype;
    dequantize_into(
        gpu, &x[0], &x[1], &x[2], n, k, group_size, bits, od, mlxr, yptr,
    )?;
    Ok(out)
}

/// x as the decode kernels read it: rows contiguous and 16-byte aligned for their vector loads
/// (a copy where they are not), and its device address. The returned data must outlive the
/// launches.
pub(crate) fn decode_rows(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<(ArrayData, u64)> {
    let (mut d, mut i) = contiguous_input(gpu, x)?;
    if !i.base().is_multiple_of(16) {
        d = ew::copy(gpu, &d, d.dtype)?;
        i = input(gpu, &d)?;
    }
    Ok((d, i.base()))
}

/// Whether decode products of `bits`-bit weights in groups of `group_size` take int8 x (the
/// `dp4a` kernels), as long as the op was not recorded exact.
pub(crate) fn int8_decode(bits: usize, group_size: usize, exact: bool) -> bool {
    (bits == 4 || bits == 8) && group_size >= 32 && !exact
}

/// x quantized to int8 per 32 (`rq_quantize_x`): device addresses of the codes and the blocks'
/// meta, and the buffers, which must outlive the launches that read them.
struct QuantizedX {
    _bufs: (ArrayData, ArrayData),
    pub xq: u64,
    pub meta: u64,
}

/// The RMS norm a decode product applies to x (`QuantizedMatmul`'s `norm`): the weight's device
/// address (x's dtype, K elements, 16-byte aligned) and eps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct XNorm {
    pub weight: u64,
    pub eps: f32,
}

/// The norm weight input of a product with a norm: `[K]` of x's dtype, K x's last axis.
pub(crate) fn check_norm_weight<'a>(
    op: &str,
    x: &ArrayData,
    w: &'a ArrayData,
) -> Result<&'a ArrayData> {
    let k = x.shape.last().copied().unwrap_or(0);
    if w.dtype != x.dtype || w.shape[..] != [k] {
        return Err(Error::invalid(
            "cuda",
            format!(
                "[{op}] the norm weight must be {} [{k}] like x's last axis, got {} {:?}",
                x.dtype, w.dtype, w.shape
            ),
        ));
    }
    Ok(w)
}

/// x of a product with a norm (`QuantizedMatmul`'s, `GatherQmmSwiglu`'s): where the int8 path
/// takes the norm inside, x itself and the norm for [`Int8X`] (its weight 16-byte aligned);
/// else the norm kernel's output, and no norm left. Keeps what the launches read alive.
pub(crate) struct NormedX {
    pub x: ArrayData,
    pub norm: Option<XNorm>,
    _weight: Option<ArrayData>,
}

impl NormedX {
    pub fn new(
        gpu: &Arc<Gpu>,
        x: &ArrayData,
        norm: Option<(&ArrayData, f32)>,
        int8: bool,
    ) -> Result<NormedX> {
        let (x, norm, weight) = match norm {
            Some((w, eps)) if int8 => {
                let (d, p) = decode_rows(gpu, w)?;
                (x.clone(), Some(XNorm { weight: p, eps }), Some(d))
            }
            Some((w, eps)) => {
                let y =
                    crate::ops::norm::rms_norm(gpu, &[x.clone(), w.clone()], eps, true, x.dtype)?;
                (y, None, None)
            }
            None => (x.clone(), None, None),
        };
        Ok(NormedX {
            x,
            norm,
            _weight: weight,
        })
    }
}

/// x as the int8 decode kernels take it: quantized by each block of the kernel into shared
/// memory where one block's rows are short ([`fuse_x_quantization`]), else by a
/// `rq_quantize_x` launch first (whose buffers this keeps alive for the kernel). With a norm,
/// x ∘ weight is quantized and the kernel scales each row's product by its 1/rms.
pub(crate) struct Int8X {
    /// x's dtype where the kernel quantizes it itself.
    pub fused: Option<Dtype>,
    quantized: Option<QuantizedX>,
    x: u64,
    norm: Option<XNorm>,
    /// The dynamic shared memory the kernel needs.
    pub shared: u32,
}

impl Int8X {
    /// `rows` rows of `k` elements of x (device address, dtype) for `bits`-bit weights, `m` of
    /// them per block's matrix, RMS-normalised first where `norm` is given.
    pub fn new(
        gpu: &Arc<Gpu>,
        (xp, xd): (u64, Dtype),
        (rows, m, k): (usize, usize, usize),
        bits: usize,
        norm: Option<XNorm>,
    ) -> Result<Int8X> {
        if fuse_x_quantization(m, k) {
            return Ok(Int8X {
                fused: Some(xd),
                quantized: None,
                x: xp,
                norm,
                shared: xq_smem_bytes(m, k),
            });
        }
        Ok(Int8X {
            fused: None,
            quantized: Some(quantize_rows(gpu, (xp, xd), rows, k, bits, norm)?),
            x: 0,
            norm,
            shared: 0,
        })
    }

    /// Whether the kernel applies a norm (its `NORM` variant).
    pub fn normed(&self) -> bool {
        self.norm.is_some()
    }

    /// The kernel's x arguments: x, xq, meta, norm weight, eps (null or 0 where unused).
    pub fn push<'a>(&self, a: &'a mut Args) -> &'a mut Args {
        let (nw, eps) = self.norm.map_or((0, 0.0), |n| (n.weight, n.eps));
        match &self.quantized {
            Some(q) => a.ptr(0).ptr(q.xq).ptr(q.meta),
            None => a.ptr(self.x).ptr(0).ptr(0),
        }
        .ptr(nw)
        .f32(eps)
    }
}

/// Quantizes `rows` rows of `k` elements of dtype `xd` at `xptr` for `bits`-bit weights (of
/// x ∘ the norm's weight where `norm` is given).
fn quantize_rows(
    gpu: &Arc<Gpu>,
    (xptr, xd): (u64, Dtype),
    rows: usize,
    k: usize,
    bits: usize,
    norm: Option<XNorm>,
) -> Result<QuantizedX> {
    let (xq, xqp) = output(gpu, &[rows * k], Dtype::U8)?;
    let (meta, metap) = output(gpu, &[rows * k / 32 * XBLOCK_META], Dtype::U8)?;
    let (qn, qs) = quantize_x_source(xd, bits, norm.is_some());
    let qf = get(gpu, &qn, &qs)?;
    let mut a = Args::new();
    a.ptr(xptr)
        .ptr(norm.map_or(0, |n| n.weight))
        .ptr(xqp)
        .ptr(metap)
        .i32(rows as i32)
        .i64(k as i64);
    // one warp per block of 32 elements
    gpu.launch(&qf, &qn, Grid::elems(rows * k), &mut a)?;
    Ok(QuantizedX {
        _bufs: (xq, meta),
        xq: xqp,
        meta: metap,
    })
}

/// A batch of row-contiguous matrices `[..., R, C]` as (device input, batch stride in
/// elements), without a copy where the batch axes collapse to one stride (broadcast weights
/// have stride 0); a contiguous copy otherwise.
fn mat_batch(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<(Option<ArrayData>, DevIn, i64)> {
    let nd = x.shape.len();
    let (r, c) = (x.shape[nd - 2], x.shape[nd - 1]);
    let inner_ok =
        (x.strides[nd - 1] == 1 || c <= 1) && (x.strides[nd - 2] == c as isize || r <= 1);
    let batch: Vec<(usize, isize)> = x.shape[..nd - 2]
        .iter()
        .zip(&x.strides[..nd - 2])
        .filter(|(n, _)| **n > 1)
        .map(|(n, s)| (*n, *s))
        .collect();
    let collapses = batch.windows(2).all(|p| p[0].1 == p[1].1 * p[1].0 as isize)
        && batch.iter().all(|b| b.1 >= 0);
    if inner_ok && collapses {
        let bs = batch.last().map_or((r * c) as i64, |b| b.1 as i64);
        return Ok((None, input(gpu, x)?, bs));
    }
    let (d, i) = contiguous_input(gpu, x)?;
    Ok((Some(d), i, (r * c) as i64))
}

/// A decode product's weights, scales and biases as the decode kernels read them ([`mat_batch`]
/// views): device addresses and batch strides in elements, and any copies, kept alive.
struct DecodeWeights {
    _keep: [Option<ArrayData>; 3],
    ptrs: [u64; 3],
    strides: [i64; 3],
}

impl DecodeWeights {
    fn new(gpu: &Arc<Gpu>, [w, s, b]: [&ArrayData; 3]) -> Result<DecodeWeights> {
        let (kw, wi, wbs) = mat_batch(gpu, w)?;
        let (ks, si, sbs) = mat_batch(gpu, s)?;
        let (kb, bi, bbs) = mat_batch(gpu, b)?;
        Ok(DecodeWeights {
            _keep: [kw, ks, kb],
            ptrs: [wi.base(), si.base(), bi.base()],
            strides: [wbs, sbs, bbs],
        })
    }

    /// Whether the tensor-core kernel's vector loads may start at every address: all 16-byte
    /// aligned.
    fn aligned16(&self) -> bool {
        self.ptrs.iter().all(|p| p.is_multiple_of(16))
    }

    /// [`DecodeWeights::aligned16`] for every matrix of a batch too: the batch strides (u32
    /// words of weights, 2-byte scales and biases) keep the alignment.
    fn batch_aligned16(&self) -> bool {
        let [w, s, b] = self.strides;
        self.aligned16() && (w * 4) % 16 == 0 && (s * 2) % 16 == 0 && (b * 2) % 16 == 0
    }

    /// The decode kernels' five pointer arguments: weights, scales, biases, then `y`, `res`.
    fn args(&self, y: u64, res: u64) -> [u64; 5] {
        let [w, s, b] = self.ptrs;
        [w, s, b, y, res]
    }
}

/// Largest M·K of x that the int8 decode kernels quantize per block. Every block repeats
/// that work (~6 instructions per element against ~0.5 per streamed code), so it pays only
/// where x is short and the product is bound by launches, not bytes: measured on an H100
/// (docs/PERF.md), SmolLM2 (K ≤ 1,536) 1.10× and Qwen3-30B-A3B (router and experts, K = 2,048)
/// 1.04× faster per token, Llama-8B (K = 4,096 and 14,336) 0.96× when all were fused.
const XFUSED_MAX: usize = 2_048;

/// Shared memory of a block that quantizes `m` rows of `k` elements itself.
fn xq_smem_bytes(m: usize, k: usize) -> u32 {
    (m * k + m * k / 32 * XBLOCK_META) as u32
}

/// Whether the int8 decode kernels quantize `m` rows of x of `k` elements themselves, saving
/// the `rq_quantize_x` launch (`RMLX_QMV_XFUSED=0` keeps that launch: an ablation switch).
fn fuse_x_quantization(m: usize, k: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    m * k <= XFUSED_MAX && crate::env::flag(&ON, "RMLX_QMV_XFUSED", true)
}

/// Whether the dense decode kernels prefetch their weight rows into L2 before waiting on the
/// previous kernel (`RMLX_QMV_PREFETCH=0` turns it off: an ablation switch).
fn prefetch_weights() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_QMV_PREFETCH", true)
}

/// `RMLX_QMV_KSPLIT=0` keeps the float decode kernel at one warp per row group (an ablation
/// switch), read once: this runs for every decode-shaped product.
fn k_split_allowed() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_QMV_KSPLIT", true)
}

/// The arguments both decode kernels take after their x argument(s): weights, scales,
/// biases, y, the residual added to y (0: none); M, N, K, log2 of the group size; the batch
/// strides of x, w, s, b and y (and the residual).
fn decode_args(
    a: &mut Args,
    [w, s, b, y, res]: [u64; 5],
    (m, n, k, group_size): (usize, usize, usize, usize),
    [wbs, sbs, bbs]: [i64; 3],
) {
    a.ptr(w)
        .ptr(s)
        .ptr(b)
        .ptr(y)
        .ptr(res)
        .i32(m as i32)
        .i64(n as i64)
        .i64(k as i64)
        .i32(group_size.trailing_zeros() as i32)
        .i64((m * k) as i64)
        .i64(wbs)
        .i64(sbs)
        .i64(bbs)
        .i64((m * n) as i64);
}

/// `[x, wq, scales, biases, addend?, norm weight?]` → `x @ dequant(w).T` (transpose) or
/// `x @ dequant(w)`, plus the addend where `addend`; with `norm` (eps), x is first
/// RMS-normalised with the norm weight (`ops::rms_norm_quantized_matmul`): inside the int8
/// quantization of x for decode products, as the norm kernel first otherwise. `exact` keeps to
/// the float kernels (no int8 `x` for decode, no half weights for prefill).
#[allow(clippy::too_many_arguments)]
pub fn quantized_matmul(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (group_size, bits): (usize, usize),
    transpose: bool,
    exact: bool,
    (addend, norm): (bool, Option<f32>),
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "quantized_matmul";
    if x.len() != 4 + addend as usize + norm.is_some() as usize {
        return Err(Error::invalid(
            "cuda",
            format!("[{OP}] expected [x, wq, scales, biases, addend?, norm weight?]"),
        ));
    }
    // `ops::quantized_matmul_add`: the decode kernels add it as they store; other paths add it
    // after the product
    let addend = if addend { x.get(4) } else { None };
    if let Some(r) = addend {
        if r.dtype != od || r.shape[..] != shape[..] {
            return Err(Error::invalid(
                "cuda",
                format!(
                    "[{OP}] the addend must be {od} {shape:?}, got {} {:?}",
                    r.dtype, r.shape
                ),
            ));
        }
    }
    let norm = norm
        .map(|eps| {
            Ok((
                check_norm_weight(OP, &x[0], x.last().expect("counted"))?,
                eps,
            ))
        })
        .transpose()?;
    let with_addend = |out: ArrayData| -> Result<ArrayData> {
        match addend {
            Some(r) => ew::binary(gpu, &out, r, BinaryOp::Add, shape, od),
            None => Ok(out),
        }
    };
    check_packed(OP, &x[..4], group_size, bits)?;
    let (wa, sa, ba) = (&x[1], &x[2], &x[3]);
    check_float(OP, "x", x[0].dtype)?;
    check_float(OP, "the output", od)?;
    let nd = wa.shape.len();
    let rows_w = wa.shape[nd - 2];
    let kpack = wa.shape[nd - 1] * 32 / bits;
    let batch: usize = wa.shape[..nd - 2].iter().product();
    let (k, n) = if transpose {
        (kpack, rows_w)
    } else {
        (rows_w, kpack)
    };
    if x[0].shape.last().copied().unwrap_or(0) != k {
        return Err(Error::invalid(
            "cuda",
            format!(
                "[{OP}] x {:?} does not match K = {k} of wq {:?}",
                x[0].shape, wa.shape
            ),
        ));
    }
    let numel: usize = shape.iter().product();
    if numel == 0 {
        return Ok(output(gpu, shape, od)?.0);
    }
    if k == 0 {
        return with_addend(ew::arange(gpu, 0.0, 0.0, shape, od)?);
    }
    let m = numel / n / batch.max(1);
    let decode = transpose && m <= DECODE_MAX_ROWS && k.is_multiple_of(32) && batch <= 65_535;
    let int8 = decode && int8_decode(bits, group_size, exact);
    let rows_kernel = int8
        && rows_kernel_fits(
            (m, n, k),
            x[0].dtype,
            sa.dtype,
            ba.dtype,
            (group_size, bits),
        );
    // both the int8 kernels and the tensor-core one take the norm inside
    let nx = NormedX::new(gpu, &x[0], norm, int8)?;
    let xa = &nx.x;
    if decode {
        let (out, yptr) = output(gpu, shape, od)?;
        let (xd, xp) = decode_rows(gpu, xa)?;
        let (_kr, rptr) = match addend {
            Some(r) => {
                let (d, i) = contiguous_input(gpu, r)?;
                (Some(d), i.base())
            }
            None => (None, 0),
        };
        let w = DecodeWeights::new(gpu, [wa, sa, ba])?;
        let [wbs, sbs, bbs] = w.strides;
        let mm = match m {
            0 | 1 => 1,
            2 => 2,
            3 | 4 => 4,
            _ => 8,
        };
        if rows_kernel && w.batch_aligned16() {
            let l = RowsLaunch {
                x: xp,
                norm: nx.norm,
                w: w.ptrs,
                y: yptr,
                res: rptr,
                v: RowsVariant {
                    x: xd.dtype,
                    s: sa.dtype,
                    o: od,
                    gs: group_size,
                    norm: nx.norm.is_some(),
                    swiglu: false,
                },
                strides: [(m * k) as i64, wbs, sbs, bbs, (m * n) as i64],
                batch,
            };
            if !qmv_stream::launch(gpu, &l, m, (n, k))? {
                // measured on an H100 (dev/kernels/qmv, v7): 8 warps along K; one tile of 4
                // units in flight for short matrices, two tiles of 2 units otherwise
                let cfg = match rows_tiles(n, false) {
                    1 => (1, 8, 4),
                    _ => (2, 8, 2),
                };
                launch_rows(gpu, &l, (m, n, k), cfg)?;
            }
            drop(xd);
            return Ok(out);
        }
        if int8 {
            let rows = batch.max(1) * m;
            let x8 = Int8X::new(gpu, (xp, xd.dtype), (rows, m, k), bits, nx.norm)?;
            // measured on an H200 (dev/kernels/qmv): 4 rows per warp for tall matrices and
            // several x rows, 1 row per warp otherwise (more warps in flight)
            // (where x is quantized in the kernel, 2 and 4 rows per warp were measured too: Qwen3-30B-A3B
            // batch 1 0.99-1.01× and 0.95×, SmolLM2 0.94-0.96× and 0.83-0.85×, H100, docs/PERF.md)
            let (r, un) = match (mm, n >= 8192) {
                (1, true) => (4, 2),
                (1, false) => (1, 2),
                (2, _) => (2, 2),
                _ => (4, 1),
            };
            let (name, src) = qmv8_source(
                x8.fused,
                x8.normed(),
                sa.dtype,
                od,
                bits,
                (mm, r, un),
                prefetch_weights(),
            );
            let f = get(gpu, &name, &src)?;
            let mut a = Args::new();
            x8.push(&mut a);
            let dims = (m, n, k, group_size);
            decode_args(&mut a, w.args(yptr, rptr), dims, [wbs, sbs, bbs]);
            let g = Grid {
                grid: (n.div_ceil(4 * r) as u32, batch.max(1) as u32, 1),
                block: (128, 1, 1),
                shared: x8.shared,
            };
            gpu.launch(&f, &name, g, &mut a)?;
            drop((xd, x8));
            return Ok(out);
        }
        // Rows of at least 4 steps: 4 warps per row group (see the kernel).
        let ks = if k >= 4 * QMV_STEP && k_split_allowed() {
            4
        } else {
            1
        };
        let (name, src) = qmv_t_source(xa.dtype, sa.dtype, od, bits, mm, ks);
        let f = get(gpu, &name, &src)?;
        let mut a = Args::new();
        a.ptr(xp);
        let dims = (m, n, k, group_size);
        decode_args(&mut a, w.args(yptr, rptr), dims, [wbs, sbs, bbs]);
        // 4 warps of 4 weight rows per block, or (ks = 4) 4 warps on the same 4 rows
        let g = Grid {
            grid: (n.div_ceil(16 / ks) as u32, batch.max(1) as u32, 1),
            block: (128, 1, 1),
            shared: 0,
        };
        gpu.launch(&f, &name, g, &mut a)?;
        drop(xd);
        return Ok(out);
    }
    // Many rows (prefill): dequantize to a temporary and multiply with cuBLASLt. For half x and
    // output the temporary is that dtype and the product runs on the tensor cores with f32 accumulation,
    // as MLX does (each weight rounded once to bf16/f16); in exact mode
    // (`exact`, see `rmlx_core::ops::quantized::with_exact_decode`) or for f32 x it is f32 and the product f32, as the CPU does
    // (bf16 weights miss the f64 reference by several ulps).
    let half = matches!(od, Dtype::BF16 | Dtype::F16) && xa.dtype == od;
    let cd = if half && !exact { xa.dtype } else { Dtype::F32 };
    let bt = batch.max(1);
    let (tmp, tptr) = output(gpu, &[bt, rows_w, kpack], cd)?;
    dequantize_into(
        gpu,
        wa,
        sa,
        ba,
        bt * rows_w * kpack,
        kpack,
        group_size,
        bits,
        cd,
        false,
        tptr,
    )?;
    let xc = if xa.dtype == cd {
        xa.clone()
    } else {
        ew::copy(gpu, xa, cd)?
    };
    let (xd, _xi) = contiguous_input(gpu, &xc)?;
    let mut a = ArrayData::contiguous(xd.buffer.clone(), &[bt, m, k], cd);
    a.offset = xd.offset;
    let mut b = ArrayData::contiguous(tmp.buffer.clone(), &[bt, k, n], cd);
    if transpose {
        // tmp is [bt, n, k]: read it transposed
        b.strides = [(n * k) as isize, 1, k as isize].into_iter().collect();
    }
    let r = crate::ops::matmul::matmul(gpu, &a, &b, cd)?;
    let r = if od == cd { r } else { ew::copy(gpu, &r, od)? };
    with_addend(ArrayData::contiguous(r.buffer, shape, od))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::host_f32;
    use crate::kernels::assert_compiles;

    const FL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

    /// Which decode products take the tensor-core rows kernel: 3..8 rows of any length, 1..2
    /// rows only where x would otherwise need its own quantization launch and N is not a
    /// vocabulary head's, one row also where the streaming variant takes it (N 1,024..32,768,
    /// K ≥ 1,024), never 8-bit weights, groups of 32, or K not a multiple of 256.
    #[test]
    fn rows_kernel_dispatch_rule() {
        if !crate::env::flag_value("RMLX_QMV_ROWS", true)
            || std::env::var("RMLX_QMV_ROWS_MIN").is_ok()
        {
            eprintln!("skipped: RMLX_QMV_ROWS or RMLX_QMV_ROWS_MIN is set");
            return;
        }
        let b = Dtype::BF16;
        let fits = |m, n, k, gs, bits| rows_kernel_fits((m, n, k), b, b, b, (gs, bits));
        // 8B shape: q/k/v, o, down take it at one row; the head and K = 2,048 do not
        assert!(fits(1, 6144, 4096, 64, 4));
        assert!(fits(1, 4096, 14336, 64, 4));
        assert!(fits(2, 4096, 4096, 128, 4));
        assert!(!fits(1, 128_256, 4096, 64, 4));
        // Qwen3-30B-A3B's q/k/v and o_proj: one row streams; two rows of o_proj (N = 2,048)
        // stay on dp4a
        let stream = qmv_stream::enabled();
        assert_eq!(fits(1, 5120, 2048, 64, 4), stream);
        assert_eq!(fits(1, 2048, 4096, 64, 4), stream);
        assert!(!fits(2, 2048, 4096, 64, 4));
        // SmolLM2's: too small for either
        assert!(!fits(1, 960, 768, 64, 4));
        assert!(!fits(1, 576, 1536, 64, 4));
        assert!(fits(3, 5120, 2048, 64, 4));
        assert!(fits(8, 128_256, 4096, 64, 4));
        assert!(!fits(9, 4096, 4096, 64, 4));
        assert!(!fits(4, 4096, 4096, 64, 8));
        assert!(!fits(4, 4096, 4096, 32, 4));
        assert!(!fits(4, 4096, 4160, 64, 4));
        assert!(!rows_kernel_fits(
            (4, 4096, 4096),
            Dtype::F32,
            b,
            b,
            (64, 4)
        ));
    }

    /// Every quantization kernel the backend can generate compiles with NVRTC for sm_90.
    #[test]
    fn quantized_kernels_compile() {
        let mut body = String::new();
        for t in FL {
            body.push_str(&quantize_source(t).1);
            for bits in [2, 3, 4, 5, 6, 8] {
                for s32 in [false, true] {
                    body.push_str(&dequantize_source(t, t, true, bits, s32).1);
                }
            }
            for o in FL {
                body.push_str(&dequantize_source(t, o, false, 4, true).1);
                body.push_str(&dequantize_source(t, o, false, 4, false).1);
            }
        }
        // The decode kernel: every (bits, rows) instantiation for one dtype triple, and every
        // dtype triple for two of them (the dtypes only change loads and conversions; all 216
        // variants take minutes to compile on a small machine).
        for bits in [2, 3, 4, 5, 6, 8] {
            for mm in [1, 2, 4, 8] {
                let b = Dtype::BF16;
                body.push_str(&qmv_t_source(b, b, b, bits, mm, 1).1);
                body.push_str(&qmv_t_source(b, b, b, bits, mm, 4).1);
            }
        }
        for xd in FL {
            for sd in FL {
                let od = Dtype::promote(xd, sd);
                if (xd, sd) != (Dtype::BF16, Dtype::BF16) {
                    body.push_str(&qmv_t_source(xd, sd, od, 4, 1, 4).1);
                    body.push_str(&qmv_t_source(xd, sd, od, 3, 8, 1).1);
                }
            }
        }
        // the int8-activation decode kernel: every configuration the dispatch picks
        for bits in [4, 8] {
            for t in FL {
                body.push_str(&quantize_x_source(t, bits, false).1);
                body.push_str(&quantize_x_source(t, bits, true).1);
            }
            for cfg in [(1, 4, 2), (1, 1, 2), (2, 2, 2), (4, 4, 1), (8, 4, 1)] {
                for (x, pf) in [(None, false), (Some(Dtype::BF16), true), (None, true)] {
                    body.push_str(
                        &qmv8_source(x, false, Dtype::BF16, Dtype::BF16, bits, cfg, pf).1,
                    );
                    body.push_str(&qmv8_source(x, true, Dtype::BF16, Dtype::BF16, bits, cfg, pf).1);
                }
            }
            for x in [Some(Dtype::F16), Some(Dtype::F32), None] {
                for norm in [false, true] {
                    body.push_str(
                        &qmv8_source(x, norm, Dtype::F16, Dtype::F32, bits, (1, 1, 2), true).1,
                    );
                    body.push_str(
                        &qmv8_source(x, norm, Dtype::F32, Dtype::F32, bits, (8, 4, 1), false).1,
                    );
                }
            }
        }
        assert_compiles("quantized_all", &format!("{QUANT_CUH}\n{body}"));
        // the tensor-core kernel for several rows: every configuration, group size and norm
        // choice for bf16, and the other half dtypes once
        let mut body = String::new();
        let (b, h, f) = (Dtype::BF16, Dtype::F16, Dtype::F32);
        let var = |(x, s, o), gs, norm, swiglu| RowsVariant {
            x,
            s,
            o,
            gs,
            norm,
            swiglu,
        };
        for cfg in [(1, 8, 4), (2, 8, 2)] {
            for gs in [64, 128] {
                for norm in [false, true] {
                    body.push_str(&qmv_rows_source(var((b, b, b), gs, norm, false), cfg, 2).1);
                    if cfg.0 == 2 {
                        body.push_str(&qmv_rows_source(var((b, b, b), gs, norm, true), cfg, 2).1);
                    }
                }
            }
        }
        body.push_str(&qmv_rows_source(var((h, h, h), 64, true, false), (2, 8, 2), 1).1);
        body.push_str(&qmv_rows_source(var((h, h, h), 64, true, true), (2, 8, 2), 2).1);
        body.push_str(&qmv_rows_source(var((b, h, f), 128, false, false), (1, 8, 4), 2).1);
        body.push_str(&qmv_rows_source(var((h, b, f), 64, true, false), (1, 8, 4), 1).1);
        assert_compiles(
            "quantized_rows",
            &format!("{QUANT_CUH}\n{MMA_CUH}\n{QMV_ROWS_CUH}\n{body}"),
        );
    }

    /// The CPU's quantizer, for the GPU check below: per group MLX's scale and bias, the
    /// codes packed into words.
    fn ref_quantize(w: &[f32], k: usize, gs: usize, bits: usize) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
        use rmlx_cpu::quantized::pack::{pack_row, quantize_group};
        let (mut wq, mut sc, mut bi) = (vec![], vec![], vec![]);
        for row in w.chunks(k) {
            let mut codes = vec![0u8; k];
            for (g, q) in row.chunks(gs).zip(codes.chunks_mut(gs)) {
                let (s, b) = quantize_group(g, bits, q);
                sc.push(s);
                bi.push(b);
            }
            let mut words = vec![0u32; k * bits / 32];
            pack_row(&codes, bits, &mut words);
            wq.extend(words);
        }
        (wq, sc, bi)
    }

    /// On a GPU: quantize is bit-exact with the CPU's quantizer, dequantize and both matmul
    /// paths agree with the f32 reference. Skipped without a CUDA device.
    #[test]
    fn quantized_matches_reference_on_gpu() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        let gpu = crate::context::gpu(0).unwrap();
        let (n, k) = (40, 256);
        let w: Vec<f32> = (0..n * k)
            .map(|i| {
                ((i as f32 * 0.37).sin() * 2.0 + (i % 7) as f32 * 0.1)
                    * if i % 3 == 0 { 1.0 } else { -0.5 }
            })
            .collect();
        let wa = host_f32(&w, &[n, k]);
        for (gs, bits) in [(64, 4), (32, 3), (16, 5), (128, 8), (16, 6), (32, 2)] {
            let (rq, rs, rb) = ref_quantize(&w, k, gs, bits);
            let wq_shape = [n, k * bits / 32];
            let s_shape = [n, k / gs];
            let parts: Vec<ArrayData> = (0..3u8)
                .map(|p| {
                    let (sh, dt) = if p == 0 {
                        (&wq_shape, Dtype::U32)
                    } else {
                        (&s_shape, Dtype::F32)
                    };
                    quantize(&gpu, &wa, gs, bits, p, sh, dt).unwrap()
                })
                .collect();
            gpu.synchronize().unwrap();
            for p in &parts {
                p.buffer.ensure_host().unwrap();
            }
            assert_eq!(
                parts[0].as_slice::<u32>().unwrap(),
                &rq[..],
                "wq gs {gs} bits {bits}"
            );
            assert_eq!(
                parts[1].as_slice::<f32>().unwrap(),
                &rs[..],
                "scales gs {gs} bits {bits}"
            );
            assert_eq!(
                parts[2].as_slice::<f32>().unwrap(),
                &rb[..],
                "biases gs {gs} bits {bits}"
            );
            // reference dequantization (f32: s * q + b unfused)
            let dq = dequantize(&gpu, &parts, gs, bits, &[n, k], Dtype::F32).unwrap();
            gpu.synchronize().unwrap();
            dq.buffer.ensure_host().unwrap();
            let dq = dq.as_slice::<f32>().unwrap().to_vec();
            // bit-exact with s * q + b (f32, unfused) from the reference codes
            for (i, &d) in dq.iter().enumerate() {
                let (r, c) = (i / k, i % k);
                let bit = c * bits;
                let row = &rq[r * k * bits / 32..];
                let mut v = (row[bit / 32] as u64) >> (bit % 32);
                if bit % 32 + bits > 32 {
                    v |= (row[bit / 32 + 1] as u64) << (32 - bit % 32);
                }
                let q = (v & ((1 << bits) - 1)) as f32;
                let want = rs[i / gs] * q + rb[i / gs];
                assert_eq!(
                    d.to_bits(),
                    want.to_bits(),
                    "dequant {i}: {d} vs {want} (w {})",
                    w[i]
                );
            }
            // Exact: float products. Not exact: decode shapes (m <= 8, 4 and 8 bits) quantize x
            // to int8 per block of 32 (bound below).
            for (m, exact) in [1, 2, 3, 8, 20]
                .into_iter()
                .flat_map(|m| [(m, true), (m, false)])
            {
                let xv: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).cos()).collect();
                let xa = host_f32(&xv, &[m, k]);
                let mut ins = vec![xa];
                ins.extend(parts.iter().cloned());
                let y = quantized_matmul(
                    &gpu,
                    &ins,
                    (gs, bits),
                    true,
                    exact,
                    (false, None),
                    &[m, n],
                    Dtype::F32,
                )
                .unwrap();
                gpu.synchronize().unwrap();
                y.buffer.ensure_host().unwrap();
                let y = y.as_slice::<f32>().unwrap();
                let want: Vec<f32> = (0..m * n)
                    .map(|i| (0..k).map(|j| xv[i / n * k + j] * dq[i % n * k + j]).sum())
                    .collect();
                let int8 = !exact && m <= DECODE_MAX_ROWS && (bits == 4 || bits == 8);
                // The int8 path moves each x by at most half its block's step (max|x| / 127 per
                // 32 values), so an output errs by at most Σ_j step_j / 2 · |w_j|.
                let half_step: Vec<f32> = (0..m * k)
                    .map(|j| {
                        let b = j / 32 * 32;
                        xv[b..b + 32].iter().fold(0f32, |a, v| a.max(v.abs())) / 254.0
                    })
                    .collect();
                for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                    let (mi, ni) = (i / n, i % n);
                    let tol = if int8 {
                        let bound: f32 = (0..k)
                            .map(|j| half_step[mi * k + j] * dq[ni * k + j].abs())
                            .sum();
                        1.01 * bound + 1e-3 * (1.0 + want.abs())
                    } else {
                        1e-3 * (1.0 + want.abs())
                    };
                    assert!(
                        (got - want).abs() <= tol,
                        "qmm gs {gs} bits {bits} m {m} exact {exact} [{mi},{ni}]: {got} vs {want} (tolerance {tol})"
                    );
                }
            }
            // x @ dequant(w): w [n, k] is [K = n, N = k]
            let m = 5;
            let xv: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.13).sin()).collect();
            let mut ins = vec![host_f32(&xv, &[m, n])];
            ins.extend(parts.iter().cloned());
            let y = quantized_matmul(
                &gpu,
                &ins,
                (gs, bits),
                false,
                false,
                (false, None),
                &[m, k],
                Dtype::F32,
            )
            .unwrap();
            gpu.synchronize().unwrap();
            y.buffer.ensure_host().unwrap();
            let y = y.as_slice::<f32>().unwrap();
            for mi in 0..m {
                for c in 0..k {
                    let want: f32 = (0..n).map(|j| xv[mi * n + j] * dq[j * k + c]).sum();
                    let got = y[mi * k + c];
                    assert!(
                        (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "qmm_n [{mi},{c}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The tensor-core kernel for several rows of half x (`qmv_rows.cuh`) against an f64
    /// reference over the dequantized weights: 3..8 rows, a batch of two matrices, group 64
    /// and 128, bf16 and f16, with and without the fused norm and the addend, N not a
    /// multiple of the 16-row tile.
    #[test]
    fn rows_kernel_matches_reference_on_gpu() {
        if crate::device_count() == 0 {
            eprintln!("skipped: no CUDA device");
            return;
        }
        if !crate::env::flag_value("RMLX_QMV_ROWS", true) {
            eprintln!("skipped: RMLX_QMV_ROWS=0 keeps the dp4a kernel");
            return;
        }
        let gpu = crate::context::gpu(0).unwrap();
        // K past XFUSED_MAX and N in ROWS_KERNEL_FEW_N, so that 1 and 2 rows take the kernel
        // too (one row: the streaming variant, `qmv_stream.rs`, unless switched off); N not a
        // multiple of 16 (a partial tile, two tiles per block) and N = 4,096 (one tile); K
        // leaving some warps without work (2,304: 36 units for 8 warps)
        let bt = 2;
        for (n, k) in [(4104, 2304), (4096, 2560)] {
            let host = |d: &ArrayData| -> Vec<f32> {
                let c = ew::copy(&gpu, d, Dtype::F32).unwrap();
                gpu.synchronize().unwrap();
                c.buffer.ensure_host().unwrap();
                c.as_slice::<f32>().unwrap().to_vec()
            };
            let half = |v: &[f32], shape: &[usize], d: Dtype| {
                ew::copy(&gpu, &host_f32(v, shape), d).unwrap()
            };
            let w: Vec<f32> = (0..bt * n * k)
                .map(|i| (i as f32 * 0.37).sin() + (i % 5) as f32 * 0.2 - 0.4)
                .collect();
            for (gs, xd) in [(64, Dtype::BF16), (128, Dtype::BF16), (64, Dtype::F16)] {
                let wa = half(&w, &[bt * n, k], xd);
                let parts: Vec<ArrayData> = (0..3u8)
                    .map(|p| {
                        let (c, dt) = if p == 0 {
                            (k / 8, Dtype::U32)
                        } else {
                            (k / gs, xd)
                        };
                        quantize(&gpu, &wa, gs, 4, p, &[bt * n, c], dt).unwrap()
                    })
                    .collect();
                let dq = host(&dequantize(&gpu, &parts, gs, 4, &[bt * n, k], Dtype::F32).unwrap());
                let stacked: Vec<ArrayData> = parts
                    .iter()
                    .map(|p| ArrayData::contiguous(p.buffer.clone(), &[bt, n, p.shape[1]], p.dtype))
                    .collect();
                for (m, norm, addend) in [
                    (1, true, false),
                    (1, false, true),
                    (2, false, true),
                    (3, false, false),
                    (4, true, false),
                    (5, false, true),
                    (8, true, true),
                ] {
                    let xv: Vec<f32> = (0..bt * m * k)
                        .map(|i| (i as f32 * 0.11).cos() * (1.0 + (i % 3) as f32))
                        .collect();
                    let xa = half(&xv, &[bt, m, k], xd);
                    let xv = host(&xa);
                    let nv: Vec<f32> = (0..k).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
                    let na = half(&nv, &[k], xd);
                    let nv = host(&na);
                    let rv: Vec<f32> = (0..bt * m * n)
                        .map(|i| (i % 9) as f32 * 0.25 - 1.0)
                        .collect();
                    let ra = half(&rv, &[bt, m, n], Dtype::F32);
                    let mut ins = vec![xa];
                    ins.extend(stacked.iter().cloned());
                    if addend {
                        ins.push(ra);
                    }
                    if norm {
                        ins.push(na);
                    }
                    let eps = 1e-5f32;
                    let y = quantized_matmul(
                        &gpu,
                        &ins,
                        (gs, 4),
                        true,
                        false,
                        (addend, norm.then_some(eps)),
                        &[bt, m, n],
                        Dtype::F32,
                    )
                    .unwrap();
                    let y = host(&y);
                    let (kernel, what) = if m == 1 && qmv_stream::enabled() {
                        ("rq_qmv_stream_", "streaming")
                    } else {
                        ("rq_qmv_rows_", "tensor-core")
                    };
                    assert!(
                        gpu.kernels.loaded_with_prefix(kernel) > 0,
                        "the {what} kernel did not run (gs {gs} {xd} m {m})"
                    );
                    for b in 0..bt {
                        for mi in 0..m {
                            let xr = &xv[(b * m + mi) * k..][..k];
                            let inv = if norm {
                                let ss: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum();
                                1.0 / (ss / k as f64 + eps as f64).sqrt()
                            } else {
                                1.0
                            };
                            for ni in 0..n {
                                let wr = &dq[(b * n + ni) * k..][..k];
                                let (mut want, mut mag) = (0f64, 0f64);
                                for j in 0..k {
                                    let xj =
                                        xr[j] as f64 * if norm { nv[j] as f64 * inv } else { 1.0 };
                                    want += xj * wr[j] as f64;
                                    mag += (xj * wr[j] as f64).abs();
                                }
                                let o = (b * m + mi) * n + ni;
                                if addend {
                                    want += rv[o] as f64;
                                }
                                // exact codes, f32 sums; with the norm x ∘ w is rounded to half once
                                let rel = if norm { 8e-3 } else { 1e-4 };
                                let tol = rel * mag + 1e-4;
                                assert!(
                                (y[o] as f64 - want).abs() <= tol,
                                "rows kernel gs {gs} {xd} m {m} norm {norm} addend {addend} [{b},{mi},{ni}]: {} vs {want} (tolerance {tol})",
                                y[o]
                            );
                            }
                        }
                    }
                }
            }
        }
    }
}
