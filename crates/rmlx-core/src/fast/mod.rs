//! Fused ops (MLX's `mx.fast`): `rms_norm`, `layer_norm`, `rope`,
//! `scaled_dot_product_attention`; and rmlx's mixture-of-experts decode ops (`moe.rs`).
//!
//! Each op validates its arguments, then builds one fused primitive when the backend of the
//! current stream has a kernel for it, and otherwise its `*_fallback`: the same computation
//! composed of ordinary ops, written as MLX's fallbacks in `mlx/fast.cpp` (so results match
//! MLX, which runs exactly those fallbacks on the CPU). The fallbacks are public so tests can
//! check that both paths agree.

use crate::array::{Array, ArrayData};
use crate::backend::backend_for;
use crate::device::current_device;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops;
use crate::primitive::{Primitive, SdpaMask, F32};
use crate::shape::{broadcast_shapes, fmt_shape, Shape};

mod moe;
mod quantized_kv;
mod rope_kv;
mod sdpa_rows;
pub use moe::*;
pub use quantized_kv::*;
pub use rope_kv::*;
pub use sdpa_rows::*;

/// Whether the current stream's backend runs `prim` itself (a missing backend reports its own
/// error when the node is evaluated).
pub(crate) fn use_kernel(prim: &Primitive) -> bool {
    backend_for(current_device())
        .map(|b| b.supports(prim))
        .unwrap_or(true)
}

/// Mean over the last axis, kept with size 1.
#[track_caller]
fn mean_last(x: &Array) -> Result<Array> {
    ops::mean(x, Some(&[-1]), true)
}

/// Checks a norm's input and optional 1-D parameters; returns the output dtype
/// (`x` promoted with the parameters, as MLX's `result_type`).
fn check_norm(op: &'static str, x: &Array, params: &[(&str, Option<&Array>)]) -> Result<Dtype> {
    if x.ndim() == 0 {
        return Err(Error::invalid(
            op,
            "input must have at least 1 dimension but got input with 0 dimensions",
        ));
    }
    let d = x.shape()[x.ndim() - 1];
    let mut t = x.dtype();
    for (name, p) in params {
        let Some(p) = p else { continue };
        if p.ndim() != 1 {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} must have 1 dimension but has {} dimensions",
                    p.ndim()
                ),
            ));
        }
        if p.size() != d {
            return Err(Error::invalid(
                op,
                format!("{name} must have the same size as the last dimension of x ({d}) but has {} elements", p.size()),
            ));
        }
        t = Dtype::promote(t, p.dtype());
    }
    if !t.is_float() {
        return Err(Error::dtype(op, format!("received unsupported type {t}")));
    }
    Ok(t)
}

/// RMS normalisation over the last axis: `x * rsqrt(mean(x^2) + eps) * weight`.
///
/// `x: [..., D]`, `weight: [D]` (optional). Accumulates in f32; the normalised value is
/// rounded to the output dtype (`x` promoted with `weight`) before the weight multiplies it,
/// as in MLX.
///
/// An extension of MLX's contract: `weight` may also be `[R, D]` where `x` is `[..., R, D]`,
/// one weight row per index of the second-to-last axis (broadcast as an element-wise product
/// would be). Attention uses it to normalise the query and key heads of one fused projection,
/// each with its own weight, in one kernel.
#[track_caller]
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    let t = check_rms_norm(x, weight)?;
    let prim = Primitive::RmsNorm {
        eps: F32(eps),
        has_weight: weight.is_some(),
    };
    if !use_kernel(&prim) {
        return rms_norm_fallback(x, weight, eps);
    }
    let mut inputs = vec![ops::astype(x, t)];
    inputs.extend(weight.map(|w| ops::astype(w, t)));
    Ok(Array::make(x.shape().into(), t, prim, inputs))
}

/// [`rms_norm`]'s checks, with its `[R, D]` weight; returns the output dtype.
pub(crate) fn check_rms_norm(x: &Array, weight: Option<&Array>) -> Result<Dtype> {
    let Some(w) = weight.filter(|w| w.ndim() == 2) else {
        return check_norm("rms_norm", x, &[("weight", weight)]);
    };
    let nd = x.ndim();
    if nd < 2 || w.shape() != &x.shape()[nd - 2..] {
        return Err(Error::invalid(
            "rms_norm",
            format!(
                "a 2-D weight must be [R, D] for x [..., R, D], got weight {} for x {}",
                fmt_shape(w.shape()),
                fmt_shape(x.shape())
            ),
        ));
    }
    let t = Dtype::promote(x.dtype(), w.dtype());
    if !t.is_float() {
        return Err(Error::dtype(
            "rms_norm",
            format!("received unsupported type {t}"),
        ));
    }
    Ok(t)
}

/// [`rms_norm`] composed of ordinary ops.
#[track_caller]
pub fn rms_norm_fallback(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    let t = check_rms_norm(x, weight)?;
    let xf = ops::astype(x, Dtype::F32);
    let ms = ops::add(&mean_last(&ops::square(&xf))?, &Array::scalar(eps))?;
    let mut y = ops::astype(&ops::multiply(&xf, &ops::rsqrt(&ms))?, t);
    if let Some(w) = weight {
        y = ops::multiply(&y, &ops::astype(w, t))?;
    }
    Ok(y)
}

/// Layer normalisation over the last axis: `(x - mean) * rsqrt(var + eps) * weight + bias`,
/// weight and bias optional (`[D]` each). Statistics in f32, output in `x`'s dtype promoted
/// with the parameters'.
#[track_caller]
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
) -> Result<Array> {
    let t = check_norm("layer_norm", x, &[("weight", weight), ("bias", bias)])?;
    let prim = Primitive::LayerNorm {
        eps: F32(eps),
        has_weight: weight.is_some(),
        has_bias: bias.is_some(),
    };
    if !use_kernel(&prim) {
        return layer_norm_fallback(x, weight, bias, eps);
    }
    let mut inputs = vec![ops::astype(x, t)];
    inputs.extend(weight.map(|w| ops::astype(w, t)));
    inputs.extend(bias.map(|b| ops::astype(b, t)));
    Ok(Array::make(x.shape().into(), t, prim, inputs))
}

/// [`layer_norm`] composed of ordinary ops.
#[track_caller]
pub fn layer_norm_fallback(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
) -> Result<Array> {
    let t = check_norm("layer_norm", x, &[("weight", weight), ("bias", bias)])?;
    let xf = ops::astype(x, Dtype::F32);
    let xc = ops::subtract(&xf, &mean_last(&xf)?)?;
    let var = ops::add(&mean_last(&ops::square(&xc))?, &Array::scalar(eps))?;
    let mut y = ops::astype(&ops::multiply(&xc, &ops::rsqrt(&var))?, t);
    if let Some(w) = weight {
        y = ops::multiply(&y, &ops::astype(w, t))?;
    }
    if let Some(b) = bias {
        y = ops::add(&y, &ops::astype(b, t))?;
    }
    Ok(y)
}

/// Validated rope arguments: the offset as int32 and freqs as float32.
struct RopeArgs {
    offset: Array,
    freqs: Option<Array>,
    base: f32,
}

impl RopeArgs {
    /// The `Rope` primitive of these arguments; `norm`: the eps of a norm applied first.
    fn prim(&self, dims: usize, traditional: bool, scale: f32, norm: Option<f32>) -> Primitive {
        Primitive::Rope {
            dims,
            traditional,
            base: F32(self.base),
            scale: F32(scale),
            has_freqs: self.freqs.is_some(),
            norm: norm.map(F32),
        }
    }

    /// The node's inputs: `x`, the offset, the frequencies if any, the norm weight if any.
    fn inputs(self, x: &Array, norm_weight: Option<Array>) -> Vec<Array> {
        let mut inputs = vec![x.clone(), self.offset];
        inputs.extend(self.freqs);
        inputs.extend(norm_weight);
        inputs
    }
}

fn check_rope(
    x: &Array,
    dims: usize,
    base: Option<f32>,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<RopeArgs> {
    let op = "rope";
    if x.ndim() < 3 {
        return Err(Error::invalid(
            op,
            format!(
                "input must have at least 3 dimensions but got input with {} dimensions",
                x.ndim()
            ),
        ));
    }
    if !x.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!("input must be a floating type but got {}", x.dtype()),
        ));
    }
    if offset.ndim() > 1 {
        return Err(Error::invalid(
            op,
            format!(
                "offset must have at most one dimension but has shape {}",
                fmt_shape(offset.shape())
            ),
        ));
    }
    if offset.size() != 1 && offset.size() != x.shape()[0] {
        return Err(Error::invalid(
            op,
            format!(
                "offset must be a scalar or vector with {} elements but has shape {}",
                x.shape()[0],
                fmt_shape(offset.shape())
            ),
        ));
    }
    if !offset.dtype().is_integer() {
        return Err(Error::dtype(
            op,
            format!("offset must be an integer but got type {}", offset.dtype()),
        ));
    }
    let d = x.shape()[x.ndim() - 1];
    if dims == 0 || !dims.is_multiple_of(2) {
        return Err(Error::invalid(
            op,
            format!("dims must be positive and even but got {dims}"),
        ));
    }
    if dims > d {
        return Err(Error::invalid(
            op,
            format!("dims must not exceed the input's last dimension ({d}) but got {dims}"),
        ));
    }
    let base = match (base, freqs) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                op,
                "only one of base or freqs can have a value",
            ))
        }
        (None, None) => return Err(Error::invalid(op, "neither base nor freqs has a value")),
        (Some(b), None) => b,
        (None, Some(f)) => {
            if f.ndim() != 1 || f.shape()[0] != dims / 2 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "freqs must be one dimensional with size {} but got shape {}",
                        dims / 2,
                        fmt_shape(f.shape())
                    ),
                ));
            }
            1.0
        }
    };
    Ok(RopeArgs {
        offset: ops::astype(offset, Dtype::I32),
        freqs: freqs.map(|f| ops::astype(f, Dtype::F32)),
        base,
    })
}

/// Rotary position embedding of the first `dims` features of `x: [B, ..., L, D]` (at least
/// 3-D); features past `dims` are copied.
///
/// Position of row `l` of batch entry `b` is `(offset[b] + l) * scale` (`offset`: an integer
/// scalar or a `[B]` vector); frequencies are `base^(-2i/dims)` or, with `freqs` (`[dims/2]`,
/// then `base` must be `None`), `1 / freqs[i]`. `traditional` rotates interleaved pairs
/// `(x0, x1), (x2, x3), ...`; otherwise the halves `x[..dims/2]` and `x[dims/2..dims]`.
#[track_caller]
pub fn rope(
    x: &Array,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<Array> {
    let a = check_rope(x, dims, base, offset, freqs)?;
    let prim = a.prim(dims, traditional, scale, None);
    if !use_kernel(&prim) {
        return rope_fallback(x, dims, traditional, base, scale, offset, freqs);
    }
    Ok(Array::make(
        x.shape().into(),
        x.dtype(),
        prim,
        a.inputs(x, None),
    ))
}

/// `rms_norm(x)` with a weight row per head, as [`rms_norm_rope`] normalises: `x: [..., R, L,
/// D]`, `weight: [R, D]` (row r of axis -3 takes weight row r) or `[D]`; x · 1/rms rounded to
/// the dtype of x and the weight, then times the weight, rounded again (the rounding of
/// [`rms_norm`] with a weight).
#[track_caller]
pub fn rms_norm_heads(x: &Array, weight: &Array, eps: f32) -> Result<Array> {
    check_heads_weight("rms_norm_heads", x, weight)?;
    let t = Dtype::promote(x.dtype(), weight.dtype());
    let n = rms_norm(&ops::astype(x, t), None, eps)?;
    let w = match weight.shape() {
        &[r, d] => ops::reshape(weight, &[r as i64, 1, d as i64])?,
        _ => weight.clone(),
    };
    ops::multiply(&n, &ops::astype(&w, t))
}

/// A per-head norm weight for `x: [..., R, L, D]`: `[D]`, or `[R, D]` (row r of axis -3 takes
/// weight row r).
fn check_heads_weight(op: &'static str, x: &Array, weight: &Array) -> Result<()> {
    let (nd, ws) = (x.ndim(), weight.shape());
    let ok = match ws.len() {
        1 => nd >= 1 && ws[0] == x.shape()[nd - 1],
        2 => nd >= 3 && ws == [x.shape()[nd - 3], x.shape()[nd - 1]],
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(Error::invalid(
        op,
        format!(
            "the norm weight must be [D] or [R, D] for x [..., R, L, D], got {} for x {}",
            fmt_shape(ws),
            fmt_shape(x.shape())
        ),
    ))
}

/// [`rope`] of `rms_norm(x)` with a weight row per head: `x: [..., R, L, D]`, `norm_weight:
/// [R, D]` (row r of axis -3 takes weight row r; the q/k norms of a fused projection) or
/// `[D]`. One kernel on a GPU (a warp normalises a row and rotates it) where the two ops take
/// two; elsewhere the two ops. The values are the two ops' (the norm rounded to the dtype of x
/// and the weight, then the rotation), except the order of the norm's sum of squares.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rope(
    x: &Array,
    norm_weight: &Array,
    eps: f32,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<Array> {
    let a = check_rope(x, dims, base, offset, freqs)?;
    check_heads_weight("rms_norm_rope", x, norm_weight)?;
    let t = Dtype::promote(x.dtype(), norm_weight.dtype());
    let (x, w) = (ops::astype(x, t), ops::astype(norm_weight, t));
    let prim = a.prim(dims, traditional, scale, Some(eps));
    if !use_kernel(&prim) {
        let n = rms_norm_heads(&x, &w, eps)?;
        return rope(&n, dims, traditional, base, scale, offset, freqs);
    }
    Ok(Array::make(
        x.shape().into(),
        t,
        prim,
        a.inputs(&x, Some(w)),
    ))
}

/// [`rope`] with a scalar offset.
#[track_caller]
pub fn rope_at(
    x: &Array,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: i32,
    freqs: Option<&Array>,
) -> Result<Array> {
    rope(
        x,
        dims,
        traditional,
        base,
        scale,
        &Array::scalar(offset),
        freqs,
    )
}

/// [`rope`] composed of ordinary ops (angles in f32, rotation in `x`'s dtype, as MLX).
#[track_caller]
pub fn rope_fallback(
    x: &Array,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<Array> {
    let a = check_rope(x, dims, base, offset, freqs)?;
    let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    // x: [B, N, T, D]
    let x = match x.ndim() {
        3 => ops::expand_dims(x, &[1])?,
        4 => x.clone(),
        n => ops::flatten(x, 1, n as i32 - 3)?,
    };
    let (b, n, t, d) = (
        x.shape()[0] as i64,
        x.shape()[1] as i64,
        x.shape()[2] as i64,
        x.shape()[3] as i64,
    );
    let (dims, half) = (dims as i64, dims as i64 / 2);
    let mut off = ops::astype(&a.offset, Dtype::F32);
    if off.size() > 1 {
        off = ops::reshape(&off, &[b, 1, 1])?;
    }
    // positions: [T] or [B, 1, T]; theta: positions x inv_freqs → [..., T, half]
    let pos = ops::multiply(
        &ops::add(&ops::arange(0.0, t as f64, 1.0, Dtype::F32)?, &off)?,
        &Array::scalar(scale),
    )?;
    let inv_freqs = match &a.freqs {
        Some(f) => ops::reciprocal(f),
        None => {
            let c = a.base.ln() / half as f32;
            ops::exp(&ops::multiply(
                &ops::arange(0.0, -half as f64, -1.0, Dtype::F32)?,
                &Array::scalar(c),
            )?)
        }
    };
    let theta = ops::multiply(&ops::expand_dims(&pos, &[-1])?, &inv_freqs)?;
    let (cos, sin) = (
        ops::astype(&ops::cos(&theta), x.dtype()),
        ops::astype(&ops::sin(&theta), x.dtype()),
    );
    let rot = |x1: &Array, x2: &Array| -> Result<(Array, Array)> {
        let o1 = ops::subtract(&ops::multiply(x1, &cos)?, &ops::multiply(x2, &sin)?)?;
        let o2 = ops::add(&ops::multiply(x1, &sin)?, &ops::multiply(x2, &cos)?)?;
        Ok((o1, o2))
    };
    let rest = || ops::slice(&x, &[0, 0, 0, dims], &[b, n, t, d], &[1, 1, 1, 1]);
    let out = if traditional {
        let x1 = ops::slice(&x, &[0, 0, 0, 0], &[b, n, t, dims], &[1, 1, 1, 2])?;
        let x2 = ops::slice(&x, &[0, 0, 0, 1], &[b, n, t, dims], &[1, 1, 1, 2])?;
        let (o1, o2) = rot(&x1, &x2)?;
        let pairs = ops::concatenate(
            &[ops::expand_dims(&o1, &[-1])?, ops::expand_dims(&o2, &[-1])?],
            -1,
        )?;
        let mut out = ops::reshape(&pairs, &[b, n, t, dims])?;
        if dims < d {
            out = ops::concatenate(&[out, rest()?], -1)?;
        }
        out
    } else {
        let x1 = ops::slice(&x, &[0, 0, 0, 0], &[b, n, t, half], &[1, 1, 1, 1])?;
        let x2 = ops::slice(&x, &[0, 0, 0, half], &[b, n, t, dims], &[1, 1, 1, 1])?;
        let (o1, o2) = rot(&x1, &x2)?;
        let mut parts = vec![o1, o2];
        if dims < d {
            parts.push(rest()?);
        }
        ops::concatenate(&parts, -1)?
    };
    ops::reshape(&out, &shape)
}

/// The mask of [`scaled_dot_product_attention`].
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    None,
    /// Causal, aligned to the end of the keys: query `i` sees keys `j <= i + S - L`.
    Causal,
    /// Bool (keep where true) or additive (its dtype must promote to the output's), broadcastable
    /// to `[B, Hq, L, S]`.
    Array(&'a Array),
}

/// Validated attention inputs in the common dtype, with the mask broadcast to `[B, Hq, L, S]`.
struct SdpaArgs {
    q: Array,
    k: Array,
    v: Array,
    mask: Option<Array>,
    kind: SdpaMask,
}

fn check_sdpa(q: &Array, k: &Array, v: &Array, mask: Mask) -> Result<SdpaArgs> {
    let op = "scaled_dot_product_attention";
    for x in [q, k, v] {
        if x.ndim() != 4 {
            return Err(Error::invalid(
                op,
                format!(
                    "input with shape {} expected to be rank 4",
                    fmt_shape(x.shape())
                ),
            ));
        }
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if ks[0] != qs[0] || vs[0] != qs[0] {
        return Err(Error::invalid(
            op,
            format!(
                "mismatching batch dimension: q {}, k {}, v {}",
                fmt_shape(qs),
                fmt_shape(ks),
                fmt_shape(vs)
            ),
        ));
    }
    if qs[3] != ks[3] {
        return Err(Error::invalid(
            op,
            format!("query, keys expected to have matching last dimension; found query shape {} for keys shape {}", fmt_shape(qs), fmt_shape(ks)),
        ));
    }
    if ks[1] != vs[1] || ks[2] != vs[2] {
        return Err(Error::invalid(
            op,
            format!(
                "keys and values must have the same heads and length; found keys {} and values {}",
                fmt_shape(ks),
                fmt_shape(vs)
            ),
        ));
    }
    if ks[1] == 0 || qs[1] % ks[1] != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "n_heads must be a multiple of n_kv_heads, found n_heads {} for n_kv_heads {}",
                qs[1], ks[1]
            ),
        ));
    }
    let t = Dtype::promote(Dtype::promote(q.dtype(), k.dtype()), v.dtype());
    if !t.is_float() {
        return Err(Error::dtype(op, format!("received unsupported type {t}")));
    }
    let (kind, mask) = match mask {
        Mask::None => (SdpaMask::None, None),
        Mask::Causal => (SdpaMask::Causal, None),
        Mask::Array(m) => {
            if m.ndim() > 4 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the mask with shape {} expected to have at most rank 4",
                        fmt_shape(m.shape())
                    ),
                ));
            }
            let m = if m.dtype() == Dtype::Bool {
                m.clone()
            } else if Dtype::promote(m.dtype(), t) == t {
                ops::astype(m, t)
            } else {
                return Err(Error::dtype(
                    op,
                    format!("mask type {} must promote to output type {t}", m.dtype()),
                ));
            };
            let target = [qs[0], qs[1], qs[2], ks[2]];
            let shape = broadcast_shapes(op, m.shape(), &target)?;
            if shape.as_slice() != target {
                return Err(Error::invalid(
                    op,
                    format!(
                        "mask with shape {} cannot be broadcast to {}",
                        fmt_shape(m.shape()),
                        fmt_shape(&target)
                    ),
                ));
            }
            (SdpaMask::Array, Some(ops::broadcast_to(&m, &target)?))
        }
    };
    // The CPU kernel reads an f16/bf16 KV cache beside f32 queries as it is; elsewhere (and
    // for any other mix) the inputs meet in the promoted type.
    let narrow_kv = narrow_kv(q.dtype(), k.dtype())
        && k.dtype() == v.dtype()
        && current_device().kind == crate::device::DeviceType::Cpu;
    let kv_t = if narrow_kv { k.dtype() } else { t };
    Ok(SdpaArgs {
        q: ops::astype(q, t),
        k: ops::astype(k, kv_t),
        v: ops::astype(v, kv_t),
        mask,
        kind,
    })
}

/// Attention `softmax(q k^T * scale + mask) v` with grouped-query heads.
///
/// q `[B, Hq, L, D]`, k `[B, Hkv, S, D]`, v `[B, Hkv, S, Dv]` with `Hq % Hkv == 0` (query head
/// `h` uses kv head `h / (Hq / Hkv)`); output `[B, Hq, L, Dv]` in the promoted dtype of q, k, v.
/// The softmax runs in f32.
#[track_caller]
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: Mask,
) -> Result<Array> {
    let a = check_sdpa(q, k, v, mask)?;
    let prim = Primitive::ScaledDotProductAttention {
        scale: F32(scale),
        mask: a.kind,
    };
    if !use_kernel(&prim) {
        return scaled_dot_product_attention_fallback(q, k, v, scale, mask);
    }
    let shape: Shape = [q.shape()[0], q.shape()[1], q.shape()[2], v.shape()[3]]
        .into_iter()
        .collect();
    let t = a.q.dtype();
    let mut inputs = vec![a.q, a.k, a.v];
    inputs.extend(a.mask);
    Ok(Array::make(shape, t, prim, inputs))
}

/// [`scaled_dot_product_attention`] composed of ordinary ops (matmul, softmax), as MLX's.
#[track_caller]
pub fn scaled_dot_product_attention_fallback(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: Mask,
) -> Result<Array> {
    let a = check_sdpa(q, k, v, mask)?;
    let t = a.q.dtype();
    let (b, hq, l, _) = (
        q.shape()[0] as i64,
        q.shape()[1] as i64,
        q.shape()[2] as i64,
        q.shape()[3] as i64,
    );
    let (hkv, s, dv) = (
        k.shape()[1] as i64,
        k.shape()[2] as i64,
        v.shape()[3] as i64,
    );
    let g = hq / hkv;
    let mut q = ops::multiply(&Array::scalar_of(scale as f64, t), &a.q)?;
    let (mut k, mut v) = (a.k, a.v);
    if g > 1 {
        // [B, Hkv, G, L, D] against [B, Hkv, 1, S, D]
        q = ops::reshape(&q, &[b, hkv, g, l, q.shape()[3] as i64])?;
        k = ops::expand_dims(&k, &[2])?;
        v = ops::expand_dims(&v, &[2])?;
    }
    let mut scores = ops::matmul(&q, &ops::swapaxes(&k, -1, -2)?)?;
    let m = match a.kind {
        SdpaMask::None => None,
        SdpaMask::Causal => {
            let qi = ops::reshape(
                &ops::arange((s - l) as f64, s as f64, 1.0, Dtype::I32)?,
                &[l, 1],
            )?;
            let kj = ops::arange(0.0, s as f64, 1.0, Dtype::I32)?;
            Some(ops::greater_equal(&qi, &kj)?)
        }
        SdpaMask::Array => {
            let m = a.mask.expect("checked: array mask present");
            Some(if g > 1 {
                ops::reshape(&m, &[b, hkv, g, l, s])?
            } else {
                m
            })
        }
    };
    if let Some(m) = m {
        scores = if m.dtype() == Dtype::Bool {
            ops::where_(&m, &scores, &Array::scalar_of(t.min_value(), t))?
        } else {
            ops::add(&scores, &m)?
        };
    }
    // Softmax over the keys, accumulated in f32.
    let p = ops::softmax(&scores, Some(&[-1]), true)?;
    let out = ops::matmul(&p, &v)?;
    if g > 1 {
        return ops::reshape(&out, &[b, hq, l, dv]);
    }
    Ok(out)
}

/// Whether attention may take keys and values of dtype `kv` beside queries of dtype `q` without
/// promoting them: f16/bf16 under f32 (an f16 KV cache beside f32 activations).
fn narrow_kv(q: Dtype, kv: Dtype) -> bool {
    q == Dtype::F32 && matches!(kv, Dtype::F16 | Dtype::BF16)
}

/// The sizes of a `ScaledDotProductAttention` node's inputs `[q, k, v, mask?]` as a backend
/// receives them, checked here once for every backend: q `[b, hq, l, d]`, k `[b, hkv, s, d]`,
/// v `[b, hkv, s, dv]`, one dtype (or f16/bf16 k and v under an f32 q, which only the CPU
/// builds), and a mask input already broadcast to `[b, hq, l, s]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdpaDims {
    pub b: usize,
    pub hq: usize,
    pub l: usize,
    pub d: usize,
    pub hkv: usize,
    pub s: usize,
    pub dv: usize,
}

impl SdpaDims {
    pub fn of(backend: &'static str, x: &[ArrayData], mask: SdpaMask) -> Result<SdpaDims> {
        let bad =
            |m: String| Error::invalid(backend, format!("[scaled_dot_product_attention] {m}"));
        if x.len() < 3 || x[..3].iter().any(|a| a.shape.len() != 4) {
            return Err(bad("q, k and v must be 4-D".into()));
        }
        let (q, k, v) = (&x[0], &x[1], &x[2]);
        let (qs, ks, vs) = (&q.shape, &k.shape, &v.shape);
        let (b, hq, l, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (hkv, s, dv) = (ks[1], ks[2], vs[3]);
        if ks[0] != b
            || vs[0] != b
            || ks[3] != d
            || vs[1] != hkv
            || vs[2] != s
            || hkv == 0
            || hq % hkv != 0
        {
            return Err(bad(format!(
                "incompatible shapes q {qs:?}, k {ks:?}, v {vs:?}"
            )));
        }
        if k.dtype != v.dtype || (q.dtype != k.dtype && !narrow_kv(q.dtype, k.dtype)) {
            return Err(bad(format!(
                "q ({}), k ({}) and v ({}) must share a dtype, or k and v be f16/bf16 under f32 q",
                q.dtype, k.dtype, v.dtype
            )));
        }
        if mask == SdpaMask::Array {
            let m = x.get(3).ok_or_else(|| bad("mask input missing".into()))?;
            if m.shape.as_slice() != [b, hq, l, s] {
                return Err(bad(format!(
                    "mask must be broadcast to {:?}, got {:?}",
                    [b, hq, l, s],
                    m.shape
                )));
            }
        }
        Ok(SdpaDims {
            b,
            hq,
            l,
            d,
            hkv,
            s,
            dv,
        })
    }
}
