//! Attention over a quantized KV cache read in place, as mlx-lm's
//! `quantized_scaled_dot_product_attention`: the scores q·Kᵀ and the output softmax(scores)·V are
//! two `quantized_matmul`s over the cache's packed rows. Dequantizing the cache for
//! `fast::scaled_dot_product_attention` instead writes and reads all of it again in the
//! activation dtype at every step, on top of the packed read.
//!
//! A KV head's query heads are rows of one product: q `[B, Hq, L, D]` is `[B, Hkv, G·L, D]`
//! as it lies (G = Hq / Hkv), so the packed matrices `[B, Hkv, S, ·]` need no broadcast (mlx-lm
//! adds an axis and lets the kernels broadcast). Masks act on the scores as
//! `fast::scaled_dot_product_attention`'s do: a false entry becomes the lowest finite value of
//! the scores' dtype, causal is aligned to the end of the keys. Both products run in the exact
//! decode mode (float x, as MLX computes them): the int8-x decode kernels' error (~3e-3 of a
//! product) would go into every score.

use crate::cache::{causal_mask, AttentionMask, PackedKv};
use crate::error::{LmError, Result};
use rmlx::{ops, Array};

/// Whether attention reads a quantized cache in place (`RMLX_QUANTIZED_ATTN=1` turns it on).
static IN_PLACE: rmlx_nn::switches::ProcessSwitch =
    rmlx_nn::switches::ProcessSwitch::new("RMLX_QUANTIZED_ATTN");

/// Makes the models' attention read quantized KV caches in place (`true`) or dequantize them
/// for the dense attention (`false`, the default), process-wide; `RMLX_QUANTIZED_ATTN=1` is the
/// same as `true`.
pub fn set_in_place(on: bool) {
    IN_PLACE.set(on);
}

/// Whether the models read a quantized cache in place. Opt-in: on the CPU, SmolLM2-135M Q4_1
/// with an 8-bit cache at 930 prompt tokens generated 9.3 / 15.0 / 9.7 tok/s in place against
/// 10.8 / 16.4 / 12.6 dequantized, and prefilled 105–142 against 150–231 tok/s (alternated, one
/// binary, docs/PERF.md): the small model's extra ops cost more than the dequantization saves.
/// On an H200 too (`rmlx bench --kv-bits 8`, 8B shape, 2,048 / 8,192 prompt tokens): 107.7 /
/// 56.9 tok/s generated in place against 102.5 / 98.0 dequantized, before the later fixes to
/// the dequantizing path (docs/PERF.md, "GPU decode chains measured apart", item 4). A GPU
/// decode step (one query per head) reads the cache in place by one kernel instead, whatever
/// this says (`fast::quantized_sdpa_decode`, `common.rs` `quantized_decode_kernel`).
pub fn in_place() -> bool {
    IN_PLACE.get()
}

/// softmax(q·Kᵀ · `scale`, masked)·V over a quantized cache's packed keys and values: q
/// `[B, Hq, L, D]` → `[B, Hq, L, D]`.
pub fn quantized_sdpa(q: &Array, kv: &PackedKv, scale: f32, mask: &AttentionMask) -> Result<Array> {
    let bad = |m: String| LmError::Generate(format!("[quantized_sdpa] {m}"));
    let (wk, sk, bk) = &kv.keys;
    let (wv, sv, bv) = &kv.values;
    let (gs, bits) = (kv.group_size, kv.bits);
    if q.ndim() != 4 || wk.ndim() != 4 {
        return Err(bad(format!(
            "q {:?} and the packed keys {:?} must be 4-D [B, H, L, D]",
            q.shape(),
            wk.shape()
        )));
    }
    let [b, hq, l, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let (hkv, s) = (wk.shape()[1], wk.shape()[2]);
    if hkv == 0 || !hq.is_multiple_of(hkv) || wk.shape()[0] != b {
        return Err(bad(format!(
            "q {:?} does not group over the packed keys {:?} (batch and query heads a multiple of the KV heads)",
            q.shape(),
            wk.shape()
        )));
    }
    let g = hq / hkv;
    let (b, hq, hkv, l, d, s, g) = (
        b as i64, hq as i64, hkv as i64, l as i64, d as i64, s as i64, g as i64,
    );
    let qs = ops::multiply(q, &ops::scalar_like(q, scale))?;
    let qr = ops::reshape(&qs, &[b, hkv, g * l, d])?;
    let qmm = |x: &Array, w: &Array, s: &Array, bi: &Array, transpose: bool| {
        ops::with_exact_decode(true, || {
            ops::quantized_matmul(x, w, s, bi, transpose, gs, bits)
        })
    };
    let scores = qmm(&qr, wk, sk, bk, true)?;
    let scores = ops::reshape(&scores, &[b, hq, l, s])?;
    let keep = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => Some(causal_mask(l as usize, (s - l).max(0) as usize, None)?),
        AttentionMask::Array(m) => Some(m.clone()),
    };
    let scores = match keep {
        Some(m) => {
            // a masked score: the lowest finite value of its dtype
            let low = Array::scalar_of(scores.dtype().min_value(), scores.dtype());
            ops::where_(&m, &scores, &low)?
        }
        None => scores,
    };
    let p = ops::softmax(&scores, Some(&[-1]), true)?;
    let p = ops::reshape(&p, &[b, hkv, g * l, s])?;
    let o = qmm(&p, wv, sv, bv, false)?;
    Ok(ops::reshape(&o, &[b, hq, l, d])?)
}
