//! Decode attention over ragged sequences in one op: each of B query rows attends its own
//! sequence's keys and values (each sequence its own cache buffers, of any capacity), up to a
//! per-row length. A batch of decoding sequences then costs one attention launch per layer
//! instead of one per sequence (the batch engine's GPU path, `rmlx_lm::batch`).

use super::{scaled_dot_product_attention, use_kernel, Mask};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops;
use crate::primitive::{Primitive, F32};
use crate::shape::fmt_shape;

/// `q: [B, Hq, 1, D]` (one query per sequence) → `[B, Hq, 1, D]`: row b attends keys
/// `0..lens[b]` of `keys[b]` and `values[b]` (`[1, Hkv, S_b, D]`, `lens[b] <= S_b`, `Hq %
/// Hkv == 0`) with scale `scale`, as `scaled_dot_product_attention` of row b over those keys
/// would. `lens`: integer `[B]` (device-held lengths let a recorded step attend at positions
/// written before each replay). One kernel where the backend has it; elsewhere one attention
/// per row under a length mask. `lens[b] <= S_b` is the caller's to keep (device-held lengths
/// cannot be checked when the op is built; the fallback masks, the CUDA kernel would read past
/// the buffer).
#[track_caller]
pub fn sdpa_rows(
    q: &Array,
    keys: &[Array],
    values: &[Array],
    lens: &Array,
    scale: f32,
) -> Result<Array> {
    check_rows(q, keys, values, lens)?;
    let prim = Primitive::SdpaRows { scale: F32(scale) };
    if !kernel_shape(q, &keys[0]) || !use_kernel(&prim) {
        return per_row(q, keys, values, lens, scale);
    }
    let mut inputs = vec![q.clone(), ops::astype(lens, Dtype::I32)];
    inputs.extend(keys.iter().cloned());
    inputs.extend(values.iter().cloned());
    Ok(Array::make(q.shape().into(), q.dtype(), prim, inputs))
}

/// [`sdpa_rows`] as one `scaled_dot_product_attention` per row, keys past the row's length
/// masked out.
#[track_caller]
pub fn sdpa_rows_fallback(
    q: &Array,
    keys: &[Array],
    values: &[Array],
    lens: &Array,
    scale: f32,
) -> Result<Array> {
    check_rows(q, keys, values, lens)?;
    per_row(q, keys, values, lens, scale)
}

/// [`sdpa_rows_fallback`] of checked inputs.
fn per_row(q: &Array, keys: &[Array], values: &[Array], lens: &Array, scale: f32) -> Result<Array> {
    let lens = ops::astype(lens, Dtype::I32);
    let mut outs = Vec::with_capacity(keys.len());
    for (b, (k, v)) in keys.iter().zip(values).enumerate() {
        let b = b as i64;
        let s = k.shape()[2];
        let qb = ops::slice(
            q,
            &[b, 0, 0, 0],
            &[b + 1, i64::MAX, 1, i64::MAX],
            &[1, 1, 1, 1],
        )?;
        let n = ops::slice(&lens, &[b], &[b + 1], &[1])?;
        let j = ops::arange(0.0, s as f64, 1.0, Dtype::I32)?;
        let m = ops::reshape(&ops::less(&j, &n)?, &[1, s as i64])?;
        outs.push(scaled_dot_product_attention(
            &qb,
            k,
            v,
            scale,
            Mask::Array(&m),
        )?);
    }
    ops::concatenate(&outs, 0)
}

/// Most rows one `SdpaRows` node takes.
pub const SDPA_ROWS_MAX: usize = 16;

/// The shapes a backend's `SdpaRows` kernel must serve (others take the fallback): at most
/// [`SDPA_ROWS_MAX`] rows, head dimension 32, 64, 128 or 256, at most 8 query heads per KV
/// head, a float dtype.
fn kernel_shape(q: &Array, k: &Array) -> bool {
    let (b, hq, d) = (q.shape()[0], q.shape()[1], q.shape()[3]);
    rows_kernel_heads(b, hq, k.shape()[1], d) && q.dtype().is_float()
}

/// [`kernel_shape`]'s rule on `b` rows of `hq` query heads over `hkv` KV heads of `d` features
/// (also the attention of `rope_kv_sdpa`, which runs the same kernel).
pub(super) fn rows_kernel_heads(b: usize, hq: usize, hkv: usize, d: usize) -> bool {
    b <= SDPA_ROWS_MAX
        && [32, 64, 128, 256].contains(&d)
        && hq.is_multiple_of(hkv)
        && (1..=8).contains(&(hq / hkv))
}

fn check_rows(q: &Array, keys: &[Array], values: &[Array], lens: &Array) -> Result<()> {
    let bad = |m: String| Err(Error::invalid("sdpa_rows", m));
    let qs = q.shape();
    if qs.len() != 4 || qs[2] != 1 || qs[0] == 0 {
        return bad(format!(
            "q must be [B, Hq, 1, D] with B > 0, got {}",
            fmt_shape(qs)
        ));
    }
    let b = qs[0];
    if keys.len() != b || values.len() != b {
        return bad(format!(
            "one key and one value array per row of q: {b} rows, {} keys, {} values",
            keys.len(),
            values.len()
        ));
    }
    if lens.shape() != [b] || !lens.dtype().is_integer() {
        return bad(format!(
            "lens must be an integer [{b}], got {} {}",
            lens.dtype(),
            fmt_shape(lens.shape())
        ));
    }
    for (i, (k, v)) in keys.iter().zip(values).enumerate() {
        let (ks, vs) = (k.shape(), v.shape());
        let ok = ks.len() == 4
            && ks[0] == 1
            && ks[1] > 0
            && ks[1] == keys[0].shape().get(1).copied().unwrap_or(0)
            && qs[1].is_multiple_of(ks[1])
            && ks[3] == qs[3]
            && vs == ks
            && k.dtype() == q.dtype()
            && v.dtype() == q.dtype();
        if !ok {
            return bad(format!(
                "row {i}: keys and values must be {} [1, Hkv, S, {}] with Hkv dividing {} (the same Hkv for every row), got {} {} and {} {}",
                q.dtype(),
                qs[3],
                qs[1],
                k.dtype(),
                fmt_shape(ks),
                v.dtype(),
                fmt_shape(vs)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors() {
        let q = ops::zeros(&[2, 4, 1, 8], Dtype::F32);
        let k = ops::zeros(&[1, 2, 3, 8], Dtype::F32);
        let l = Array::from_slice(&[1i32, 2], &[2]).unwrap();
        let e = sdpa_rows(
            &q,
            std::slice::from_ref(&k),
            std::slice::from_ref(&k),
            &l,
            1.0,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("one key and one value array per row"),
            "{e}"
        );
        let k4 = ops::zeros(&[1, 4, 3, 8], Dtype::F32);
        let e = sdpa_rows(&q, &[k.clone(), k4.clone()], &[k.clone(), k4], &l, 1.0).unwrap_err();
        assert!(e.to_string().contains("the same Hkv"), "{e}");
        let k3 = ops::zeros(&[1, 3, 3, 8], Dtype::F32);
        let e = sdpa_rows(&q, &[k.clone(), k3.clone()], &[k.clone(), k3], &l, 1.0).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
        let l1 = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let e = sdpa_rows(&q, &[k.clone(), k.clone()], &[k.clone(), k], &l1, 1.0).unwrap_err();
        assert!(e.to_string().contains("lens"), "{e}");
    }
}
