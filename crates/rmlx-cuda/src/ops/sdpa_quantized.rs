//! `fast::quantized_sdpa_decode` on the GPU: decode attention over a quantized KV cache read in
//! place (`kernels/sdpa_quantized.cuh`, `rq_sdpa_decode`), where the composition dequantizes
//! the whole key and value buffers (a dense copy written and read back every step) and then
//! attends. The decode kernels' layout (`sdpa.rs`: a block per KV head (or part of its query
//! heads) and key split, the splits merged by the launch's last block), 4- or 8-bit codes,
//! heads of 64 or 128 features, groups of 32 to 128.

use super::sdpa::{get, rows_aligned16, sd4, with_splits, BlockTarget, LkGrid, Merge};
use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, input, output, tag};
use rmlx_core::fast::quantized_sdpa_kernel_fits;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The device code (after `sdpa.cuh`).
pub const SDPA_QUANTIZED_CUH: &str = include_str!("../../kernels/sdpa_quantized.cuh");

/// Query heads a block takes at most (a KV head's are split over several blocks beyond it).
/// Measured on an H200 against the dequantizing path (docs/PERF.md, calls C3–C5, 8-bit cache):
/// two heads a block (the dense decode kernels' rule for D = 128) 0.88–1.01× on the 8B at 2,048
/// keys; all four of the 8B's 1.05–1.07× there and 1.16–1.37× at 8,192 keys; but all eight of
/// Qwen3-30B-A3B's (4 KV heads: 64 blocks at 2,048 keys) 0.86–0.90×, four 0.89–1.00×.
const MAX_HEADS: usize = 4;

/// The kernel for activations of dtype `t`, `g` query heads of `D = 32 dl` per block: name and
/// wrapper (compiled after `sdpa.cuh` and [`SDPA_QUANTIZED_CUH`]).
pub fn source(t: Dtype, g: usize, dl: usize, bits: usize, gs: usize) -> (String, String) {
    let name = format!("rq_sdpa_decode_{}_g{g}_d{dl}_b{bits}_gs{gs}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void __launch_bounds__(128) {name}(const {c}* q, const u32* kq, const {c}* ks, const {c}* kb, const u32* vq, const {c}* vs, const {c}* vb, const int* len, {c}* out, float* part_ml, float* part_acc, Sd4 ql, Sd4 kql, Sd4 ksl, Sd4 kbl, Sd4 vql, Sd4 vsl, Sd4 vbl, int Hq, int Hkv, int S, float scale, int n_split, int split_len, unsigned* tickets) {{\n  rq_sdpa_decode<{c}, {g}, {dl}, {bits}, {gs}>(q, kq, ks, kb, vq, vs, vb, len, out, part_ml, part_acc, ql, kql, ksl, kbl, vql, vsl, vbl, Hq, Hkv, S, scale, n_split, split_len, tickets);\n}}\n"
    );
    (name, src)
}

/// `[q, len, k codes, k scales, k biases, v codes, v scales, v biases]` → `[B, Hq, 1, D]`
/// (`Primitive::QuantizedSdpaDecode`; the core op checked the shapes and that the kernel fits).
pub fn quantized_sdpa_decode(
    gpu: &Arc<Gpu>,
    x: &[ArrayData],
    (scale, gs, bits): (f32, usize, usize),
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let q = &x[0];
    let (b, hq, d) = (q.shape[0], q.shape[1], q.shape[3]);
    let (hkv, s) = (x[2].shape[1], x[2].shape[2]);
    let g = hq / hkv.max(1);
    if x.len() != 8 || od != q.dtype || hkv * g != hq || !quantized_sdpa_kernel_fits(bits, gs, d, g)
    {
        return Err(Error::invalid(
            "cuda",
            format!(
                "[quantized_sdpa_decode] {} inputs, {hq} query heads over {hkv}, D {d}, {bits} bits, group {gs}: outside the kernel's range",
                x.len()
            ),
        ));
    }
    let (out, optr) = output(gpu, shape, od)?;
    // rows contiguous, codes rows on 16-byte boundaries (the lanes' vector loads): copies
    // otherwise
    let mut keep = vec![contiguous_input(gpu, &x[1])?];
    for a in &x[2..8] {
        let ok = a.strides[3] == 1 && (a.dtype != Dtype::U32 || rows_aligned16(a));
        keep.push(if ok {
            (a.clone(), input(gpu, a)?)
        } else {
            contiguous_input(gpu, a)?
        });
    }
    let qi = input(gpu, q)?;
    let grid = LkGrid::shared_heads(BlockTarget::single(), (b, hkv, g), MAX_HEADS, s);
    let (name, body) = source(q.dtype, grid.heads, d / 32, bits, gs);
    let f = get(gpu, &name, &format!("{SDPA_QUANTIZED_CUH}\n{body}"))?;
    with_splits(
        gpu,
        (&f, &name, grid.blocks, grid.splits, Merge::LastBlock),
        (od, optr, b * hq, d),
        |a, pml, pacc| {
            a.ptr(qi.base());
            for (_, i) in &keep[1..] {
                a.ptr(i.base());
            }
            a.ptr(keep[0].1.base()).ptr(optr).ptr(pml).ptr(pacc);
            a.push(sd4(q));
            for (d, _) in &keep[1..] {
                a.push(sd4(d));
            }
            a.i32(hq as i32).i32(hkv as i32).i32(s as i32).f32(scale);
        },
    )?;
    drop(keep);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{assert_compiles, MMA_CUH};
    use crate::ops::sdpa::SDPA_CUH;

    /// Every variant compiles with NVRTC for sm_90.
    #[test]
    fn quantized_sdpa_kernels_compile() {
        let mut body = String::new();
        for t in [Dtype::F32, Dtype::BF16] {
            for (g, dl) in [(1, 4), (2, 4), (8, 4), (4, 2)] {
                for bits in [4, 8] {
                    for gs in [32, 64, 128].into_iter().filter(|&gs| gs <= 32 * dl) {
                        body.push_str(&source(t, g, dl, bits, gs).1);
                    }
                }
            }
        }
        let all = format!("{MMA_CUH}\n{SDPA_CUH}\n{SDPA_QUANTIZED_CUH}\n{body}");
        assert_compiles("sdpa_quantized_all", &all);
    }
}
