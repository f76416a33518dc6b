//! The fused mixture-of-experts decode ops (`rmlx_core::fast::moe`) on the GPU, kernels in
//! `kernels/moe.cuh`: routing (one warp per token), gate + up + SwiGLU and down + weighted sum
//! (the float decode loop of `quantized.cuh`, only the chosen experts' weights read).

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag};
use crate::launch::{Args, Grid};
use crate::ops::elementwise as ew;
use crate::ops::quantized::{
    check_norm_weight, decode_rows, int8_decode, Int8X, NormedX, QUANT_CUH,
};
use rmlx_core::fast::{ROUTE_MAX_E, ROUTE_MAX_K};
use rmlx_core::primitive::MoeRouting;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The device code of the MoE kernels (compiled after `quantized.cuh`).
pub const MOE_CUH: &str = include_str!("../../kernels/moe.cuh");

fn get(gpu: &Arc<Gpu>, name: &str, wrapper: &str) -> Result<cudarc::driver::CudaFunction> {
    gpu.kernels.get(
        &gpu.ctx,
        name,
        &format!("{QUANT_CUH}\n{MOE_CUH}\n{wrapper}"),
    )
}

fn bad(op: &str, what: &str) -> Error {
    Error::invalid("cuda", format!("[{op}] {what}"))
}

/// The routing kernel of logits dtype `l` and mode.
pub fn route_source(l: Dtype, routing: MoeRouting) -> (String, String) {
    let mode = match routing {
        MoeRouting::SoftmaxTopK { .. } => 0,
        MoeRouting::TopKSoftmax => 1,
        MoeRouting::SigmoidTopK { .. } => 2,
    };
    let name = format!("rm_route_{}_m{mode}", tag(l));
    let cl = ctype(l);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {cl}* l, u32* out, i64 T, int E, int k, int renorm) {{\n  rm_route<{cl}, {mode}>(l, out, T, E, k, renorm);\n}}\n"
    );
    (name, src)
}

/// `[logits [.., E]]` → u32 `[.., 2k]`: the chosen indices, then the f32 bits of their weights.
pub fn route(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    k: usize,
    routing: MoeRouting,
    shape: &[usize],
) -> Result<ArrayData> {
    const OP: &str = "moe_route";
    let l = x.first().ok_or_else(|| bad(OP, "expected [logits]"))?;
    let e = l.shape.last().copied().unwrap_or(0);
    if !l.dtype.is_float() || k == 0 || k > ROUTE_MAX_K || k > e || e > ROUTE_MAX_E {
        return Err(bad(
            OP,
            &format!(
                "needs float logits, 1 <= k <= min({ROUTE_MAX_K}, E), E <= {ROUTE_MAX_E}; got {k} of {e}"
            ),
        ));
    }
    let (out, optr) = output(gpu, shape, Dtype::U32)?;
    let t = out.numel() / (2 * k);
    if t == 0 {
        return Ok(out);
    }
    let (_kl, li) = contiguous_input(gpu, l)?;
    let renorm = match routing {
        MoeRouting::SoftmaxTopK { renormalize } | MoeRouting::SigmoidTopK { renormalize } => {
            renormalize
        }
        MoeRouting::TopKSoftmax => false,
    };
    let (name, src) = route_source(l.dtype, routing);
    let f = get(gpu, &name, &src)?;
    // warps per block: their scores fit 32 KiB of shared memory (one warp's at most)
    let wpb = (ROUTE_MAX_E / e).clamp(1, 4);
    let mut a = Args::new();
    a.ptr(li.base())
        .ptr(optr)
        .i64(t as i64)
        .i32(e as i32)
        .i32(k as i32)
        .i32(renorm as i32);
    let g = Grid {
        grid: (t.div_ceil(wpb).min(65_535) as u32, 1, 1),
        block: (32 * wpb as u32, 1, 1),
        shared: (wpb * e * 4) as u32,
    };
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(out)
}

/// The gate + up + SwiGLU kernel.
pub fn swiglu_source(x: Dtype, s: Dtype, o: Dtype, bits: usize) -> (String, String) {
    let name = format!("rm_swiglu_{}_{}_{}_b{bits}", tag(x), tag(s), tag(o));
    let (cx, cs, co) = (ctype(x), ctype(s), ctype(o));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {cx}* x, const u32* wg, const {cs}* sg, const {cs}* bg, const u32* wu, const {cs}* su, const {cs}* bu, {co}* h, const u32* idx, i64 irs, i64 P, int k, i64 E, i64 N, i64 K, int gs_shift) {{\n  rm_gather_swiglu<{cx}, {cs}, {co}, {bits}>(x, wg, sg, bg, wu, su, bu, h, idx, irs, P, k, E, N, K, gs_shift);\n}}\n"
    );
    (name, src)
}

/// The gate + up + SwiGLU kernel with int8 activations (4- or 8-bit stacks): `x` the dtype of
/// x where each block quantizes it itself, `None` where `rq_quantize_x` ran first; `norm`: x
/// is RMS-normalised first (as `qmv8_source`'s).
pub fn swiglu8_source(
    x: Option<Dtype>,
    norm: bool,
    s: Dtype,
    o: Dtype,
    bits: usize,
) -> (String, String) {
    let name = format!(
        "rm_swiglu8_{}{}_{}_{}_b{bits}",
        x.map_or("xq", tag),
        if norm { "_n" } else { "" },
        tag(s),
        tag(o)
    );
    let (cx, cs, co) = (x.map_or("float", ctype), ctype(s), ctype(o));
    let xf = x.is_some();
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {cx}* x, const signed char* xq, const RqXBlock* meta, const {cx}* nw, float eps, const u32* wg, const {cs}* sg, const {cs}* bg, const u32* wu, const {cs}* su, const {cs}* bu, {co}* h, const u32* idx, i64 irs, i64 P, int k, i64 E, i64 N, i64 K, int gs_shift) {{\n  rm_gather_swiglu8<{cx}, {cs}, {co}, {bits}, {xf}, {norm}>(x, xq, meta, nw, eps, wg, sg, bg, wu, su, bu, h, idx, irs, P, k, E, N, K, gs_shift);\n}}\n"
    );
    (name, src)
}

/// The down + weighted-sum kernel (residual of dtype `r`, or `o` when there is none).
pub fn down_sum_source(x: Dtype, s: Dtype, o: Dtype, r: Dtype, bits: usize) -> (String, String) {
    let name = format!(
        "rm_down_sum_{}_{}_{}_{}_b{bits}",
        tag(x),
        tag(s),
        tag(o),
        tag(r)
    );
    let (cx, cs, co, cr) = (ctype(x), ctype(s), ctype(o), ctype(r));
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(256) {name}(const {cx}* h, const u32* w, const {cs}* s, const {cs}* b, {co}* y, const u32* idx, i64 irs, const float* wts, i64 wrs, const {cr}* res, i64 T, int k, i64 E, i64 N, i64 K, int gs_shift) {{\n  rm_gather_down_sum<{cx}, {cs}, {co}, {cr}, {bits}>(h, w, s, b, y, idx, irs, wts, wrs, res, T, k, E, N, K, gs_shift);\n}}\n"
    );
    (name, src)
}

/// A `[T, k]` index or weight array whose rows are contiguous, at any row distance (the halves
/// of the routing output are such views): its device pointer and row stride in elements.
fn rows_input(gpu: &Arc<Gpu>, a: &ArrayData) -> Result<(ArrayData, u64, i64)> {
    let k = a.shape.get(1).copied().unwrap_or(1);
    if a.shape.len() == 2 && (a.strides[1] == 1 || k <= 1) && a.strides[0] >= 0 {
        let i = input(gpu, a)?;
        let rs = if a.shape[0] <= 1 {
            k as i64
        } else {
            a.strides[0] as i64
        };
        return Ok((a.clone(), i.base(), rs));
    }
    let (d, i) = contiguous_input(gpu, a)?;
    Ok((d, i.base(), k as i64))
}

/// A stack `[wq [E, N, W], scales, biases [E, N, G]]`: device pointers, and (E, N).
fn stack(
    gpu: &Arc<Gpu>,
    op: &str,
    w: &[ArrayData],
) -> Result<([u64; 3], [usize; 2], Vec<ArrayData>)> {
    if w[0].dtype != Dtype::U32 || w[0].shape.len() != 3 || w[1].dtype != w[2].dtype {
        return Err(bad(
            op,
            "expected a u32 stack [E, N, W] with scales and biases of one dtype",
        ));
    }
    let mut keep = Vec::new();
    let mut ptrs = [0u64; 3];
    for (p, a) in ptrs.iter_mut().zip(w) {
        let (d, i) = contiguous_input(gpu, a)?;
        *p = i.base();
        keep.push(d);
    }
    Ok((ptrs, [w[0].shape[0], w[0].shape[1]], keep))
}

/// `[x [T, K], gate wq/scales/biases, up wq/scales/biases, indices [T, k], norm weight? [K]]`
/// → `[T, k, N]`; with `norm` (eps) x is RMS-normalised first: inside the int8 quantization of
/// x, or by the norm kernel before the float kernel.
pub fn gather_swiglu(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (group_size, bits): (usize, usize),
    (exact, norm): (bool, Option<f32>),
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "gather_qmm_swiglu";
    if x.len() != 8 + norm.is_some() as usize
        || x[0].shape.len() != 2
        || x[7].dtype != Dtype::U32
        || shape.len() != 3
    {
        return Err(bad(
            OP,
            "expected [x [T, K], 3 gate arrays, 3 up arrays, indices u32 [T, k], norm weight?]",
        ));
    }
    let (t, kdim) = (x[0].shape[0], x[0].shape[1]);
    let norm = norm
        .map(|eps| Ok((check_norm_weight(OP, &x[0], &x[8])?, eps)))
        .transpose()?;
    let int8 = int8_decode(bits, group_size, exact);
    let nx = NormedX::new(gpu, &x[0], norm, int8)?;
    let xa = &nx.x;
    let (k, n) = (shape[1], shape[2]);
    let (gp, [e, gn], _kg) = stack(gpu, OP, &x[1..4])?;
    let (up, [ue, un], _ku) = stack(gpu, OP, &x[4..7])?;
    if (e, gn) != (ue, un)
        || gn != n
        || x[1].shape[2] * 32 / bits != kdim
        || !kdim.is_multiple_of(32)
    {
        return Err(bad(
            OP,
            "the gate and up stacks must be [E, N, K·bits/32] with K % 32 == 0",
        ));
    }
    let (out, hptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (_kx, xp) = decode_rows(gpu, xa)?;
    let (_ki, ip, irs) = rows_input(gpu, &x[7])?;
    // int8 x (one row per block's pair), for every chosen expert's gate and up rows
    let x8 = int8
        .then(|| Int8X::new(gpu, (xp, xa.dtype), (t, 1, kdim), bits, nx.norm))
        .transpose()?;
    let (name, src) = match &x8 {
        Some(q) => swiglu8_source(q.fused, q.normed(), x[2].dtype, od, bits),
        None => swiglu_source(xa.dtype, x[2].dtype, od, bits),
    };
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    match &x8 {
        Some(q) => q.push(&mut a),
        None => a.ptr(xp),
    }
    .ptr(gp[0])
    .ptr(gp[1])
    .ptr(gp[2])
    .ptr(up[0])
    .ptr(up[1])
    .ptr(up[2])
    .ptr(hptr)
    .ptr(ip)
    .i64(irs)
    .i64((t * k) as i64)
    .i32(k as i32)
    .i64(e as i64)
    .i64(n as i64)
    .i64(kdim as i64)
    .i32(group_size.trailing_zeros() as i32);
    // 4 warps of 2 rows (of each matrix) per block
    let g = Grid {
        grid: (n.div_ceil(8) as u32, (t * k).min(65_535) as u32, 1),
        block: (128, 1, 1),
        shared: x8.as_ref().map_or(0, |q| q.shared),
    };
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(out)
}

/// `[h [T, k, K], wq, scales, biases, indices [T, k], weights f32 [T, k]]` → `[T, N]`.
pub fn gather_weighted_sum(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (group_size, bits): (usize, usize),
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    const OP: &str = "gather_qmm_weighted_sum";
    if !(6..=7).contains(&x.len())
        || x[0].shape.len() != 3
        || x[4].dtype != Dtype::U32
        || x[5].dtype != Dtype::F32
        || shape.len() != 2
    {
        return Err(bad(
            OP,
            "expected [h [T, k, K], wq, scales, biases, indices u32, weights f32]",
        ));
    }
    let (t, k, kdim) = (x[0].shape[0], x[0].shape[1], x[0].shape[2]);
    let n = shape[1];
    let (wp, [e, wn], _kw) = stack(gpu, OP, &x[1..4])?;
    if wn != n || x[1].shape[2] * 32 / bits != kdim || !kdim.is_multiple_of(32) {
        return Err(bad(
            OP,
            "the stack must be [E, N, K·bits/32] with K % 32 == 0",
        ));
    }
    let (out, yptr) = output(gpu, shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if k == 0 || kdim == 0 {
        return ew::arange(gpu, 0.0, 0.0, shape, od);
    }
    let (_kh, hp) = decode_rows(gpu, &x[0])?;
    let (_ki, ip, irs) = rows_input(gpu, &x[4])?;
    let (_kt, tp, wrs) = rows_input(gpu, &x[5])?;
    let (_kr, rp, rd) = match x.get(6) {
        Some(r) => {
            let (d, i) = contiguous_input(gpu, r)?;
            (Some(d), i.base(), r.dtype)
        }
        None => (None, 0, od),
    };
    let (name, src) = down_sum_source(x[0].dtype, x[2].dtype, od, rd, bits);
    let f = get(gpu, &name, &src)?;
    let mut a = Args::new();
    a.ptr(hp)
        .ptr(wp[0])
        .ptr(wp[1])
        .ptr(wp[2])
        .ptr(yptr)
        .ptr(ip)
        .i64(irs)
        .ptr(tp)
        .i64(wrs)
        .ptr(rp)
        .i64(t as i64)
        .i32(k as i32)
        .i64(e as i64)
        .i64(n as i64)
        .i64(kdim as i64)
        .i32(group_size.trailing_zeros() as i32);
    // RQ_R = 4 rows per block; a warp per chosen expert, at most RM_DOWN_WARPS = 8
    let warps = k.clamp(1, 8) as u32;
    let g = Grid {
        grid: (n.div_ceil(4) as u32, t.min(65_535) as u32, 1),
        block: (32 * warps, 1, 1),
        shared: 0,
    };
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every MoE kernel the backend generates compiles with NVRTC for sm_90.
    #[test]
    fn moe_kernels_compile() {
        let mut body = String::new();
        let fl = [Dtype::F32, Dtype::F16, Dtype::BF16];
        for l in fl {
            for r in [
                MoeRouting::SoftmaxTopK { renormalize: true },
                MoeRouting::TopKSoftmax,
                MoeRouting::SigmoidTopK { renormalize: false },
            ] {
                body.push_str(&route_source(l, r).1);
            }
        }
        for bits in [2, 3, 4, 5, 6, 8] {
            let b = Dtype::BF16;
            body.push_str(&swiglu_source(b, b, b, bits).1);
            if bits == 4 || bits == 8 {
                for (x, norm) in [
                    (None, false),
                    (Some(b), false),
                    (Some(b), true),
                    (None, true),
                ] {
                    body.push_str(&swiglu8_source(x, norm, b, b, bits).1);
                }
                let f = Dtype::F32;
                body.push_str(&swiglu8_source(Some(f), true, f, f, bits).1);
            }
            body.push_str(&down_sum_source(b, b, b, b, bits).1);
        }
        for xd in fl {
            for sd in fl {
                if (xd, sd) == (Dtype::BF16, Dtype::BF16) {
                    continue;
                }
                let od = Dtype::promote(xd, sd);
                body.push_str(&swiglu_source(xd, sd, od, 4).1);
                body.push_str(&down_sum_source(xd, sd, od, xd, 8).1);
            }
        }
        assert_compiles("moe_all", &format!("{QUANT_CUH}\n{MOE_CUH}\n{body}"));
    }
}
