//! A decode step's RoPE and KV cache write as one op (`rope_kv_write`): the q and k heads of a
//! fused q/k/v projection rotated (and RMS-normalised, with per-head norm weights), the rotated
//! k and the v written into the cache at each row's position. Composed, that is a RoPE launch
//! and two cache writes per layer, per row for a batch of sequences with caches of their own;
//! in a replayed GPU step each launch costs a dependency wait, and skipping the writes alone
//! sped an 8B step up 4–5% at batch 1 and 21% at batch 8. One multi-output node
//! (`Array::make_multi`): q, then each cache pair after the write.

use super::{check_rope, rms_norm_rope, rope, use_kernel, SDPA_ROWS_MAX};
use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops;
use crate::primitive::{Primitive, F32};
use crate::shape::{fmt_shape, Shape};

/// A rotary embedding as [`rope`] takes it.
#[derive(Clone, Copy, Debug)]
pub struct RopeSpec<'a> {
    pub dims: usize,
    pub traditional: bool,
    pub base: Option<f32>,
    pub scale: f32,
    pub freqs: Option<&'a Array>,
}

impl RopeSpec<'_> {
    /// `x` rotated by this embedding at `pos` through [`rope`], or through [`rms_norm_rope`]
    /// where `norm` (a weight and eps) is given.
    #[track_caller]
    pub fn rotate(&self, x: &Array, norm: Option<(&Array, f32)>, pos: &Array) -> Result<Array> {
        let r = self;
        match norm {
            Some((w, eps)) => rms_norm_rope(
                x,
                w,
                eps,
                r.dims,
                r.traditional,
                r.base,
                r.scale,
                pos,
                r.freqs,
            ),
            None => rope(x, r.dims, r.traditional, r.base, r.scale, pos, r.freqs),
        }
    }
}

/// One decode step's RoPE and cache write.
///
/// - `qkv: [B, 1, n_q + 2 n_kv, D]`: the heads of a fused projection, q heads first, then k,
///   then v.
/// - `norm`: a weight `[n_q + n_kv, D]` (a row per q and k head) or `[D]`, and eps: the q and k
///   heads are RMS-normalised before the rotation (as [`rms_norm_rope`]).
/// - `pos`: i32 `[B]` or `[1]`, row b's position: its RoPE offset and the cache index it writes.
/// - `caches`: one `(keys, values)` pair `[B, n_kv, S, D]` (then `pos` has one element or B is
///   1), or one pair `[1, n_kv, S_b, D]` per row.
///
/// Returns q `[B, n_q, 1, D]` rotated and the caches after the write (in place where a backend
/// is given a cache nothing else holds). Values are those of [`rope`] (or [`rms_norm_rope`])
/// and `slice_update_at`, bit for bit; a position outside a cache clamps to its last slot, as
/// `slice_update_at` does.
#[track_caller]
pub fn rope_kv_write(
    qkv: &Array,
    n_q: usize,
    norm: Option<(&Array, f32)>,
    rope_spec: RopeSpec,
    pos: &Array,
    caches: &[(Array, Array)],
) -> Result<(Array, Vec<(Array, Array)>)> {
    rope_kv(qkv, n_q, norm, rope_spec, pos, caches, None)
}

/// [`rope_kv_write`] and then each row's attention over its cache: o `[B, n_q, 1, D]`, row b's
/// rotated q heads attending positions `0..=pos[b]` of its cache after the write (`pos`
/// clamped into the cache, as the write clamps it) with scale `scale`, as [`sdpa_rows`] with
/// lengths `pos + 1` computes it. One kernel on a GPU (`rope_kv_write` and `sdpa_rows` are two,
/// each a dependency wait in a replayed step); elsewhere that composition. Returns o and the
/// caches after the write.
///
/// [`sdpa_rows`]: super::sdpa_rows
#[track_caller]
pub fn rope_kv_sdpa(
    qkv: &Array,
    n_q: usize,
    norm: Option<(&Array, f32)>,
    rope_spec: RopeSpec,
    pos: &Array,
    caches: &[(Array, Array)],
    scale: f32,
) -> Result<(Array, Vec<(Array, Array)>)> {
    rope_kv(qkv, n_q, norm, rope_spec, pos, caches, Some(scale))
}

/// [`rope_kv_write`], and with `attend` (a scale) [`rope_kv_sdpa`].
#[track_caller]
fn rope_kv(
    qkv: &Array,
    n_q: usize,
    norm: Option<(&Array, f32)>,
    rope_spec: RopeSpec,
    pos: &Array,
    caches: &[(Array, Array)],
    attend: Option<f32>,
) -> Result<(Array, Vec<(Array, Array)>)> {
    let (b, n_kv, d) = check(qkv, n_q, pos, caches)?;
    let RopeSpec {
        dims,
        traditional,
        base,
        scale,
        freqs,
    } = rope_spec;
    // the q and k heads as RoPE sees them, `[B, n_q + n_kv, 1, D]`, for the checks
    let qk = part(&ops::transpose(qkv, Some(&[0, 2, 1, 3]))?, 1, 0, n_q + n_kv)?;
    let args = check_rope(&qk, dims, base, pos, freqs)?;
    let t = qkv.dtype();
    let kernel_norm = match norm {
        Some((w, eps)) => {
            super::check_heads_weight("rope_kv_write", &qk, w)?;
            (w.dtype() == t).then_some(Some((w, eps)))
        }
        None => Some(None),
    };
    let prim = Primitive::RopeKvWrite {
        n_q,
        n_kv,
        dims,
        traditional,
        base: F32(args.base),
        scale: F32(scale),
        has_freqs: args.freqs.is_some(),
        norm: norm.map(|(_, e)| F32(e)),
        attend: attend.map(F32),
    };
    let same_dtype = caches.iter().all(|(k, v)| k.dtype() == t && v.dtype() == t);
    let attends = attend.is_none() || super::sdpa_rows::rows_kernel_heads(b, n_q, n_kv, d);
    let fits = caches.len() <= SDPA_ROWS_MAX && same_dtype && t.is_float() && attends;
    match kernel_norm {
        Some(kn) if fits && use_kernel(&prim) => {
            let mut inputs = vec![qkv.clone(), args.offset];
            inputs.extend(args.freqs);
            inputs.extend(kn.map(|(w, _)| w.clone()));
            let mut outputs: Vec<(Shape, crate::Dtype)> =
                vec![(Shape::from(&[b, n_q, 1, d][..]), t)];
            for (k, v) in caches {
                inputs.push(k.clone());
                inputs.push(v.clone());
                outputs.push((k.shape().into(), k.dtype()));
                outputs.push((v.shape().into(), v.dtype()));
            }
            let mut outs = Array::make_multi(outputs, prim, inputs).into_iter();
            let q = outs.next().expect("q");
            let mut written = Vec::with_capacity(caches.len());
            while let (Some(k), Some(v)) = (outs.next(), outs.next()) {
                written.push((k, v));
            }
            Ok((q, written))
        }
        _ => {
            let (q, written) = rope_kv_write_fallback(qkv, n_q, norm, rope_spec, pos, caches)?;
            match attend {
                Some(scale) => Ok((attend_rows(&q, pos, &written, scale)?, written)),
                None => Ok((q, written)),
            }
        }
    }
}

/// Row b of q `[B, n_q, 1, D]` attending positions `0..=pos[b]` (clamped into its cache) of
/// its cache pair, or of entry b of one cache pair of batch B, through [`sdpa_rows`].
///
/// [`sdpa_rows`]: super::sdpa_rows
#[track_caller]
fn attend_rows(q: &Array, pos: &Array, caches: &[(Array, Array)], scale: f32) -> Result<Array> {
    let b = q.shape()[0];
    let pos = ops::astype(&ops::reshape(pos, &[-1])?, crate::Dtype::I32);
    let (mut ks, mut vs, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..b {
        let (k, v) = if caches.len() == b {
            caches[r].clone()
        } else {
            let (k, v) = &caches[0];
            (part(k, 0, r, r + 1)?, part(v, 0, r, r + 1)?)
        };
        let p = if pos.size() == 1 { 0 } else { r as i64 };
        let p = ops::slice(&pos, &[p], &[p + 1], &[1])?;
        let last = Array::scalar(k.shape()[2] as i32 - 1);
        let p = ops::minimum(&ops::maximum(&p, &Array::scalar(0i32))?, &last)?;
        lens.push(ops::add(&p, &Array::scalar(1i32))?);
        ks.push(k);
        vs.push(v);
    }
    super::sdpa_rows(q, &ks, &vs, &ops::concatenate(&lens, 0)?, scale)
}

/// [`rope_kv_write`] composed of ordinary ops: the q and k heads through [`rope`] (or
/// [`rms_norm_rope`]) as one array, then `slice_update_at` per cache.
#[track_caller]
pub fn rope_kv_write_fallback(
    qkv: &Array,
    n_q: usize,
    norm: Option<(&Array, f32)>,
    r: RopeSpec,
    pos: &Array,
    caches: &[(Array, Array)],
) -> Result<(Array, Vec<(Array, Array)>)> {
    let (_, n_kv, _) = check(qkv, n_q, pos, caches)?;
    let t = ops::transpose(qkv, Some(&[0, 2, 1, 3]))?;
    let qk = part(&t, 1, 0, n_q + n_kv)?;
    let qk = r.rotate(&qk, norm, pos)?;
    let q = part(&qk, 1, 0, n_q)?;
    let k = part(&qk, 1, n_q, n_q + n_kv)?;
    let v = part(&t, 1, n_q + n_kv, n_q + 2 * n_kv)?;
    let pos = ops::astype(&ops::reshape(pos, &[-1])?, crate::Dtype::I32);
    let mut written = Vec::with_capacity(caches.len());
    for (c, (kc, vc)) in caches.iter().enumerate() {
        // one cache of batch B takes one position (checked); a cache per row takes its row's
        let p = if pos.size() == 1 { 0 } else { c as i64 };
        let p = ops::slice(&pos, &[p], &[p + 1], &[1])?;
        let (kr, vr) = if caches.len() == 1 {
            (k.clone(), v.clone())
        } else {
            (part(&k, 0, c, c + 1)?, part(&v, 0, c, c + 1)?)
        };
        written.push((
            ops::slice_update_at(kc, &ops::astype(&kr, kc.dtype()), &p, 2)?,
            ops::slice_update_at(vc, &ops::astype(&vr, vc.dtype()), &p, 2)?,
        ));
    }
    Ok((q, written))
}

/// Entries `a..z` of axis `axis` of a 4-D `x`.
#[track_caller]
fn part(x: &Array, axis: usize, a: usize, z: usize) -> Result<Array> {
    let mut start = [0i64; 4];
    let mut stop = [i64::MAX; 4];
    start[axis] = a as i64;
    stop[axis] = z as i64;
    ops::slice(x, &start, &stop, &[1, 1, 1, 1])
}

/// Validates the arguments; returns (B, n_kv, D).
fn check(
    qkv: &Array,
    n_q: usize,
    pos: &Array,
    caches: &[(Array, Array)],
) -> Result<(usize, usize, usize)> {
    let bad = |m: String| Err(Error::invalid("rope_kv_write", m));
    let s = qkv.shape();
    if s.len() != 4 || s[1] != 1 || !qkv.dtype().is_float() {
        return bad(format!(
            "qkv must be a float [B, 1, heads, D], got {} {}",
            qkv.dtype(),
            fmt_shape(s)
        ));
    }
    let (b, h, d) = (s[0], s[2], s[3]);
    if n_q == 0 || h <= n_q || !(h - n_q).is_multiple_of(2) {
        return bad(format!(
            "{h} heads are not {n_q} query heads and as many key as value heads"
        ));
    }
    let n_kv = (h - n_q) / 2;
    if pos.ndim() > 1 || (pos.size() != 1 && pos.size() != b) || !pos.dtype().is_integer() {
        return bad(format!(
            "pos must be an integer scalar or [{b}] vector, got {} {}",
            pos.dtype(),
            fmt_shape(pos.shape())
        ));
    }
    let per_row = caches.len() == b && b > 1;
    if caches.len() != 1 && !per_row {
        return bad(format!(
            "{} cache pairs for {b} rows: give one pair or one per row",
            caches.len()
        ));
    }
    if caches.len() == 1 && b > 1 && pos.size() != 1 {
        return bad(format!(
            "one cache pair of batch {b} takes one position for all rows, got {}",
            pos.size()
        ));
    }
    let cb = if per_row { 1 } else { b };
    for (i, (k, v)) in caches.iter().enumerate() {
        let ks = k.shape();
        let ok = ks.len() == 4
            && ks[0] == cb
            && ks[1] == n_kv
            && ks[2] > 0
            && ks[3] == d
            && v.shape() == ks;
        if !ok {
            return bad(format!(
                "cache pair {i} must be [{cb}, {n_kv}, S, {d}] keys and values, got {} and {}",
                fmt_shape(ks),
                fmt_shape(v.shape())
            ));
        }
    }
    Ok((b, n_kv, d))
}
