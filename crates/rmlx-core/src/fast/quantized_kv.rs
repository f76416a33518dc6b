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
