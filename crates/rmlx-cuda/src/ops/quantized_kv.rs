//! `fast::quantized_kv_write` on the GPU: a decode step's keys and values quantized into a
//! quantized KV cache at the device-held position, one kernel (`rq_quantize_kv_write` in
//! `kernels/quantized.cuh`: a warp per chunk of a row, the quantize kernel's arithmetic, so the
//! codes, scales and biases are those of `quantize` bit for bit) where the composition takes
//! six quantize launches and six position writes.

use super::indexing::write_target;
use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, tag};
use crate::launch::{Args, Grid};
use crate::ops::quantized::{quant_chunk, QUANT_CUH};
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// The kernel for keys and values of dtype `t`: name and wrapper source.
pub fn source(t: Dtype) -> (String, String) {
    let name = format!("rq_quantize_kv_write_{}", tag(t));
    let c = ctype(t);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {c}* k, const {c}* v, const i32* pos, u32* kq, {c}* ks, {c}* kb, u32* vq, {c}* vs, {c}* vb, i64 rows, i64 S, int Dk, int Dv, int gs, int bits) {{\n  rq_quantize_kv_write<{c}>(k, v, pos, kq, ks, kb, vq, vs, vb, rows, S, Dk, Dv, gs, bits);\n}}\n"
    );
    (name, src)
}

/// `[k, v, pos, k codes, k scales, k biases, v codes, v scales, v biases]` → the six buffers
/// after the write (`Primitive::QuantizedKvWrite`; `fast::quantized_kv_write` checked the
/// shapes): written in place where donated, copied first otherwise.
pub fn quantized_kv_write(
    gpu: &Arc<Gpu>,
    x: Vec<ArrayData>,
    group_size: usize,
    bits: usize,
    outs: &[OutputSpec],
) -> Result<Vec<ArrayData>> {
    let bad = |m: String| Err(Error::invalid("cuda", format!("[quantized_kv_write] {m}")));
    if x.len() != 9 || outs.len() != 6 {
        return bad(format!(
            "takes 9 inputs and gives 6 outputs, got {} and {}",
            x.len(),
            outs.len()
        ));
    }
    let mut x = x.into_iter();
    let (k, v, pos) = (x.next().unwrap(), x.next().unwrap(), x.next().unwrap());
    let t = k.dtype;
    let (rows, dk, dv) = (k.numel() / k.shape[3], k.shape[3], v.shape[3]);
    let s = outs[0].shape[2];
    if v.dtype != t || v.numel() / dv != rows || pos.dtype != Dtype::I32 || pos.numel() != 1 {
        return bad("k and v must share a dtype and rows, pos be one i32".into());
    }
    let (_k, ki) = contiguous_input(gpu, &k)?;
    let (_v, vi) = contiguous_input(gpu, &v)?;
    let (_p, pi) = contiguous_input(gpu, &pos)?;
    let mut written = Vec::with_capacity(6);
    let mut ptrs = Vec::with_capacity(6);
    for (buf, o) in x.zip(outs) {
        let (w, p) = write_target(gpu, buf, o.dtype)?;
        written.push(w);
        ptrs.push(p);
    }
    let (name, src) = source(t);
    let f = gpu
        .kernels
        .get(&gpu.ctx, &name, &format!("{QUANT_CUH}\n{src}"))?;
    let mut a = Args::new();
    a.ptr(ki.base()).ptr(vi.base()).ptr(pi.base());
    for p in ptrs {
        a.ptr(p);
    }
    a.i64(rows as i64)
        .i64(s as i64)
        .i32(dk as i32)
        .i32(dv as i32)
        .i32(group_size as i32)
        .i32(bits as i32);
    let ch = quant_chunk(group_size, bits);
    // a warp per chunk (RQ_QUANT_WARPS = 8 of them per 256-thread block)
    let chunks = rows * (dk / ch + dv / ch);
    gpu.launch(&f, &name, Grid::elems(chunks * 32), &mut a)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every variant compiles with NVRTC for sm_90.
    #[test]
    fn quantized_kv_write_kernels_compile() {
        let mut body = QUANT_CUH.to_string();
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            body.push_str(&source(t).1);
        }
        assert_compiles("quantized_kv_write_all", &body);
    }
}
