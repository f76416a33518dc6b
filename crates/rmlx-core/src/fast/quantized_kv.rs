//! `quantized_kv_write`: a decode step's keys and values quantized into a quantized KV cache at
//! a device-held position. One kernel on a GPU, where the composition launches three
//! quantizations (codes, scales, biases) and three position writes per tensor, each a dependency
//! wait in a replayed decode step.

use super::use_kernel;
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops;
use crate::primitive::Primitive;
use crate::shape::fmt_shape;

/// A quantized cache's packed rows: codes u32 `[B, H, S, D·bits/32]`, then scales and biases
/// `[B, H, S, D/group_size]` in the keys' dtype (what `ops::quantize` gives for rows of D).
pub type PackedRows = (Array, Array, Array);

/// Quantizes `k` and `v` (`[B, H, 1, D]`, D may differ between them) as `ops::quantize` does
/// along D (groups of `group_size`, `bits` per code) and writes their codes, scales and biases
/// at position `pos` (i32, one element, clamped into the buffers as `slice_update_at` clamps)
/// of axis 2 of `keys` and `values`. Returns the buffers after the write: written in place
/// where the caller holds them only here (a replayed decode step), copied first otherwise.
#[track_caller]
pub fn quantized_kv_write(
    k: &Array,
    v: &Array,
    pos: &Array,
    keys: &PackedRows,
    values: &PackedRows,
    group_size: usize,
    bits: usize,
) -> Result<(PackedRows, PackedRows)> {
    check(k, v, pos, keys, values, group_size, bits)?;
    let prim = Primitive::QuantizedKvWrite { group_size, bits };
    if !use_kernel(&prim) {
        return quantized_kv_write_fallback(k, v, pos, keys, values, group_size, bits);
    }
    let pos = ops::astype(&ops::reshape(pos, &[1])?, Dtype::I32);
    let bufs = [keys, values].map(|b| [&b.0, &b.1, &b.2]);
    let outputs = bufs
        .iter()
        .flatten()
        .map(|b| (b.shape().into(), b.dtype()))
        .collect();
    let mut inputs = vec![k.clone(), v.clone(), pos];
    inputs.extend(bufs.iter().flatten().map(|b| (*b).clone()));
    let mut o = Array::make_multi(outputs, prim, inputs).into_iter();
    let mut next = || o.next().expect("six outputs");
    Ok(((next(), next(), next()), (next(), next(), next())))
}

/// [`quantized_kv_write`] composed of ordinary ops: `quantize`, then a `slice_update_at` per
/// buffer.
#[track_caller]
pub fn quantized_kv_write_fallback(
    k: &Array,
    v: &Array,
    pos: &Array,
    keys: &PackedRows,
    values: &PackedRows,
    group_size: usize,
    bits: usize,
) -> Result<(PackedRows, PackedRows)> {
    check(k, v, pos, keys, values, group_size, bits)?;
    let pos = ops::astype(&ops::reshape(pos, &[1])?, Dtype::I32);
    let write = |x: &Array, b: &PackedRows| -> Result<PackedRows> {
        let (q, s, z) = ops::quantize(x, group_size, bits)?;
        Ok((
            ops::slice_update_at(&b.0, &q, &pos, 2)?,
            ops::slice_update_at(&b.1, &s, &pos, 2)?,
            ops::slice_update_at(&b.2, &z, &pos, 2)?,
        ))
    };
    Ok((write(k, keys)?, write(v, values)?))
}

/// Validates the arguments of [`quantized_kv_write`].
fn check(
    k: &Array,
    v: &Array,
    pos: &Array,
    keys: &PackedRows,
    values: &PackedRows,
    group_size: usize,
    bits: usize,
) -> Result<()> {
    let bad = |m: String| Err(Error::invalid("quantized_kv_write", m));
    if ![2, 3, 4, 5, 6, 8].contains(&bits) || ![32, 64, 128].contains(&group_size) {
        return bad(format!(
            "bits must be 2, 3, 4, 5, 6 or 8 and group_size 32, 64 or 128, got {bits} and {group_size}"
        ));
    }
    if pos.size() != 1 || pos.dtype().is_float() {
        return bad(format!(
            "pos must be one integer, got {} {}",
            pos.dtype(),
            fmt_shape(pos.shape())
        ));
    }
    let mut cap = None;
    for (what, x, b) in [("keys", k, keys), ("values", v, values)] {
        let s = x.shape();
        if s.len() != 4 || s[2] != 1 || !x.dtype().is_float() {
            return bad(format!(
                "new {what} must be a float [B, H, 1, D], got {} {}",
                x.dtype(),
                fmt_shape(s)
            ));
        }
        let d = s[3];
        if !d.is_multiple_of(group_size) || !(d * bits).is_multiple_of(32) {
            return bad(format!(
                "{what}' head_dim {d} must be a multiple of the group size {group_size} and fill whole words of {bits}-bit codes"
            ));
        }
        let want = |last: usize| [s[0], s[1], b.0.shape().get(2).copied().unwrap_or(0), last];
        let parts = [
            ("codes", &b.0, Dtype::U32, d * bits / 32),
            ("scales", &b.1, x.dtype(), d / group_size),
            ("biases", &b.2, x.dtype(), d / group_size),
        ];
        for (part, a, t, last) in parts {
            if a.shape() != want(last) || a.dtype() != t || a.shape()[2] == 0 {
                return bad(format!(
                    "the cached {what}' {part} must be {t} {} with room for a position, got {} {}",
                    fmt_shape(&want(last)),
                    a.dtype(),
                    fmt_shape(a.shape())
                ));
            }
        }
        if *cap.get_or_insert(b.0.shape()[2]) != b.0.shape()[2] {
            return bad("the cached keys and values hold different numbers of positions".into());
        }
    }
    Ok(())
}

/// Whether a backend's decode kernel for [`quantized_sdpa_decode`] serves `bits`-bit codes in
/// groups of `group_size`, heads of `d` features (keys and values alike) and `g` query heads
/// per KV head: 4 or 8 bits, D of 64 or 128, at most 8 query heads per KV head. Elsewhere the
/// op composes.
pub fn quantized_sdpa_kernel_fits(bits: usize, group_size: usize, d: usize, g: usize) -> bool {
    (bits == 4 || bits == 8) && (d == 64 || d == 128) && group_size <= d && (1..=8).contains(&g)
}

/// Attention of one query per head `q [B, Hq, 1, D]` over positions `0..len` of a quantized KV
/// cache's packed rows (`keys` and `values` as [`PackedRows`], `Hkv` heads dividing `Hq`), read
/// in place: `softmax(q·Kᵀ·scale)·V` with K and V the rows' values `s·c + b`. `len` (one
/// integer, clamped into `[1, S]`) may live in device memory, so a recorded decode step serves
/// every length. One kernel on a GPU where the kernel fits ([`quantized_sdpa_kernel_fits`],
/// q and the scales of one dtype); elsewhere the keys and values are dequantized and attended
/// under a length mask (the definition the kernel is tested against). Returns `[B, Hq, 1, Dv]`.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn quantized_sdpa_decode(
    q: &Array,
    keys: &PackedRows,
    values: &PackedRows,
    len: &Array,
    scale: f32,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    check_decode(q, keys, values, len)?;
    let (hq, d) = (q.shape()[1], q.shape()[3]);
    let (hkv, dv) = (keys.0.shape()[1], values.1.shape()[3] * group_size);
    let prim = Primitive::QuantizedSdpaDecode {
        scale: crate::primitive::F32(scale),
        group_size,
        bits,
    };
    let same_dtype = [&keys.1, &keys.2, &values.1, &values.2]
        .iter()
        .all(|a| a.dtype() == q.dtype());
    let fits = quantized_sdpa_kernel_fits(bits, group_size, d, hq / hkv) && d == dv && same_dtype;
    if !(fits && use_kernel(&prim)) {
        return quantized_sdpa_decode_fallback(q, keys, values, len, scale, group_size, bits);
    }
    let len = ops::astype(&ops::reshape(len, &[1])?, Dtype::I32);
    let mut inputs = vec![q.clone(), len];
    for b in [keys, values] {
        inputs.extend([b.0.clone(), b.1.clone(), b.2.clone()]);
    }
    Ok(Array::make(q.shape().into(), q.dtype(), prim, inputs))
}

/// [`quantized_sdpa_decode`] composed of ordinary ops: both buffers dequantized, then
/// `scaled_dot_product_attention` under the mask of the first `len` positions.
#[track_caller]
pub fn quantized_sdpa_decode_fallback(
    q: &Array,
    keys: &PackedRows,
    values: &PackedRows,
    len: &Array,
    scale: f32,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    check_decode(q, keys, values, len)?;
    let deq = |p: &PackedRows| ops::dequantize(&p.0, &p.1, &p.2, group_size, bits);
    let (k, v) = (deq(keys)?, deq(values)?);
    let s = keys.0.shape()[2];
    let n = ops::astype(&ops::reshape(len, &[1])?, Dtype::I32);
    let n = ops::minimum(
        &ops::maximum(&n, &Array::scalar(1i32))?,
        &Array::scalar(s as i32),
    )?;
    let keep = ops::less(&ops::arange(0.0, s as f64, 1.0, Dtype::I32)?, &n)?;
    let keep = ops::reshape(&keep, &[1, s as i64])?;
    super::scaled_dot_product_attention(q, &k, &v, scale, super::Mask::Array(&keep))
}

/// Validates the arguments of [`quantized_sdpa_decode`].
fn check_decode(q: &Array, keys: &PackedRows, values: &PackedRows, len: &Array) -> Result<()> {
    let bad = |m: String| Err(Error::invalid("quantized_sdpa_decode", m));
    let s = q.shape();
    if s.len() != 4 || s[2] != 1 || !q.dtype().is_float() {
        return bad(format!(
            "q must be a float [B, Hq, 1, D], got {} {}",
            q.dtype(),
            fmt_shape(s)
        ));
    }
    if len.size() != 1 || len.dtype().is_float() {
        return bad(format!(
            "len must be one integer, got {} {}",
            len.dtype(),
            fmt_shape(len.shape())
        ));
    }
    let k = keys.0.shape();
    for (what, b) in [("keys", keys), ("values", values)] {
        let (c, sc, bi) = (b.0.shape(), b.1.shape(), b.2.shape());
        let same_rows = |x: &[usize]| x.len() == 4 && x[..3] == k[..3];
        if b.0.dtype() != Dtype::U32 || !same_rows(c) || !same_rows(sc) || sc != bi {
            return bad(format!(
                "the cached {what} must be u32 codes and scales and biases [B, Hkv, S, ·] like the keys' codes {}, got {}, {} and {}",
                fmt_shape(k),
                fmt_shape(c),
                fmt_shape(sc),
                fmt_shape(bi)
            ));
        }
    }
    if k[0] != s[0] || k[1] == 0 || !s[1].is_multiple_of(k[1]) || k[2] == 0 {
        return bad(format!(
            "q {} does not group over the cached keys {} (the same batch, query heads a multiple of the KV heads, at least one position)",
            fmt_shape(s),
            fmt_shape(k)
        ));
    }
    Ok(())
}
