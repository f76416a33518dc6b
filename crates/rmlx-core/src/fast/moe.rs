//! Fused mixture-of-experts ops for decoding (rmlx's own; MLX composes them from `gather_qmm`):
//!
//! - [`moe_route`]: router logits → the chosen experts and their mixing weights;
//! - [`gather_qmm_swiglu`]: the first half of each chosen expert's gated MLP,
//!   `silu(x W_gate[e]ᵀ) * (x W_up[e]ᵀ)`;
//! - [`gather_qmm_weighted_sum`]: the down projection of every chosen expert and the router's
//!   weighted sum over them.
//!
//! A decode step of a Qwen3-MoE layer composes ~20 kernels from `gather_qmm`, `argpartition`,
//! `silu`, `multiply` and `sum`; these make it 4 where the backend has the kernels (the GPU),
//! and are that same composition elsewhere (the `*_fallback` functions, public so tests can
//! compare both paths).

use super::use_kernel;
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::quantized::{check_float, check_packed};
pub use crate::primitive::MoeRouting;
use crate::primitive::{Primitive, F32};
use crate::shape::{fmt_shape, Shape};

/// Most experts a row may choose, and most experts, for the fused routing kernel (one warp per
/// row, its scores in 32 KiB of shared memory; beyond these the composition runs). Backends
/// check against the same limits.
pub const ROUTE_MAX_K: usize = 32;
pub const ROUTE_MAX_E: usize = 8192;

/// `logits: [..., E]` → (`indices: [..., k]` u32, `weights: [..., k]` f32): the `k` experts
/// each row picks and their mixing weights, in no particular order (as `argpartition`'s).
/// Scores and softmaxes are computed in f32 (mlx-lm's `precise=True`).
#[track_caller]
pub fn moe_route(logits: &Array, k: usize, routing: MoeRouting) -> Result<(Array, Array)> {
    let e = check_route(logits, k)?;
    let prim = Primitive::MoeRoute { k, routing };
    if k > ROUTE_MAX_K || e > ROUTE_MAX_E || !use_kernel(&prim) {
        return moe_route_fallback(logits, k, routing);
    }
    let mut shape: Shape = logits.shape().into();
    let n = shape.len();
    shape[n - 1] = 2 * k;
    let packed = Array::make(shape, Dtype::U32, prim, [logits.clone()]);
    let half = |from: usize| {
        let mut start = vec![0i64; n];
        start[n - 1] = from as i64;
        let mut stop = vec![i64::MAX; n];
        stop[n - 1] = (from + k) as i64;
        ops::slice(&packed, &start, &stop, &vec![1; n])
    };
    Ok((half(0)?, ops::view(&half(k)?, Dtype::F32)?))
}

fn check_route(logits: &Array, k: usize) -> Result<usize> {
    const OP: &str = "moe_route";
    if logits.ndim() == 0 {
        return Err(Error::invalid(OP, "logits must have at least 1 dimension"));
    }
    check_float(OP, "logits", logits)?;
    let e = logits.shape()[logits.ndim() - 1];
    if k == 0 || k > e {
        return Err(Error::invalid(
            OP,
            format!("cannot route each token to {k} of {e} experts"),
        ));
    }
    Ok(e)
}

/// [`moe_route`] composed of ordinary ops (mlx-lm's routing code).
#[track_caller]
pub fn moe_route_fallback(logits: &Array, k: usize, routing: MoeRouting) -> Result<(Array, Array)> {
    let e = check_route(logits, k)?;
    let logits = ops::astype(logits, Dtype::F32);
    // the top k of `s` along the last axis (in no particular order, as argpartition)
    let top = |s: &Array| -> Result<Array> {
        let p = ops::argpartition(s, -(k as i32), Some(-1))?;
        let n = p.ndim();
        let mut start = vec![0i64; n];
        start[n - 1] = (e - k) as i64;
        ops::slice(&p, &start, &vec![i64::MAX; n], &vec![1; n])
    };
    let renorm = |w: Array, on: bool| -> Result<Array> {
        if !on {
            return Ok(w);
        }
        ops::divide(&w, &ops::sum(&w, Some(&[-1]), true)?)
    };
    Ok(match routing {
        MoeRouting::SoftmaxTopK { renormalize } => {
            let g = ops::softmax(&logits, Some(&[-1]), true)?;
            let i = top(&g)?;
            let w = ops::take_along_axis(&g, &i, Some(-1))?;
            (i, renorm(w, renormalize)?)
        }
        MoeRouting::TopKSoftmax => {
            let i = top(&logits)?;
            let w = ops::take_along_axis(&logits, &i, Some(-1))?;
            (i, ops::softmax(&w, Some(&[-1]), true)?)
        }
        MoeRouting::SigmoidTopK { renormalize } => {
            let g = ops::sigmoid(&logits);
            let i = top(&g)?;
            let w = ops::take_along_axis(&g, &i, Some(-1))?;
            (i, renorm(w, renormalize)?)
        }
    })
}

/// One stack of quantized experts `[E, N, K·bits/32]` with its scales and biases `[E, N, K/gs]`
/// (transposed weights: `y = x W[e]ᵀ`).
#[derive(Clone, Copy, Debug)]
pub struct ExpertStack<'a> {
    pub wq: &'a Array,
    pub scales: &'a Array,
    pub biases: &'a Array,
}

impl ExpertStack<'_> {
    /// Checks the stack; returns (E, N, K).
    fn dims(&self, op: &'static str, group_size: usize, bits: usize) -> Result<[usize; 3]> {
        let k = check_packed(op, self.wq, self.scales, self.biases, group_size, bits)?;
        if self.wq.ndim() != 3 {
            return Err(Error::invalid(
                op,
                format!(
                    "expert weights must be a stack [E, N, K·bits/32], got wq {}",
                    fmt_shape(self.wq.shape())
                ),
            ));
        }
        Ok([self.wq.shape()[0], self.wq.shape()[1], k])
    }

    fn gather(&self, x: &Array, idx: &Array, group_size: usize, bits: usize) -> Result<Array> {
        ops::gather_qmm(
            x,
            self.wq,
            self.scales,
            self.biases,
            None,
            Some(idx),
            true,
            group_size,
            bits,
            false,
        )
    }
}

/// The leading axes of `indices: [..., k]` must be `lead`; returns k.
fn check_indices(op: &'static str, indices: &Array, lead: &[usize]) -> Result<usize> {
    if !indices.dtype().is_integer() {
        return Err(Error::dtype(
            op,
            format!("indices must be integers, got {}", indices.dtype()),
        ));
    }
    let n = indices.ndim();
    if n == 0 || &indices.shape()[..n - 1] != lead {
        return Err(Error::invalid(
            op,
            format!(
                "indices {} must have the leading axes {} and one more for the chosen experts",
                fmt_shape(indices.shape()),
                fmt_shape(lead)
            ),
        ));
    }
    Ok(indices.shape()[n - 1])
}

/// `x: [..., K]`, `indices: [..., k]` → `[..., k, N]`:
/// `silu(x W_gate[e]ᵀ) * (x W_up[e]ᵀ)` for each chosen expert `e = indices[..., j]`, in the
/// dtype of `x` promoted with the scales'. The products accumulate in f32, rounded once; a GPU
/// quantizes `x` to int8 per 32 for 4- and 8-bit experts, as its decode `quantized_matmul`
/// does, unless exact decoding is on (`ops::quantized::with_exact_decode`).
#[track_caller]
pub fn gather_qmm_swiglu(
    x: &Array,
    gate: ExpertStack,
    up: ExpertStack,
    indices: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    swiglu_node(x, None, gate, up, indices, group_size, bits)
}

/// [`gather_qmm_swiglu`] of `rms_norm(x, Some(norm_weight), eps)`: a pre-norm MoE layer's
/// experts. One kernel on a GPU, whose int8 path takes the norm as
/// `ops::rms_norm_quantized_matmul` does (no norm launch; values within the int8 error of the
/// composition); elsewhere the norm, then [`gather_qmm_swiglu`].
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm_swiglu_normed(
    x: &Array,
    norm_weight: &Array,
    eps: f32,
    gate: ExpertStack,
    up: ExpertStack,
    indices: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    if norm_weight.ndim() != 1 {
        let n = super::rms_norm(x, Some(norm_weight), eps)?;
        return gather_qmm_swiglu(&n, gate, up, indices, group_size, bits);
    }
    let t = super::check_rms_norm(x, Some(norm_weight))?;
    let w = ops::astype(norm_weight, t);
    swiglu_node(
        &ops::astype(x, t),
        Some((&w, eps)),
        gate,
        up,
        indices,
        group_size,
        bits,
    )
}

/// The `GatherQmmSwiglu` node of x (RMS-normalised by `norm` first where given), or its
/// composition where the backend lacks the kernel.
#[track_caller]
fn swiglu_node(
    x: &Array,
    norm: Option<(&Array, f32)>,
    gate: ExpertStack,
    up: ExpertStack,
    indices: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    let (kk, [_, n, kdim]) = check_swiglu(x, &gate, &up, indices, group_size, bits)?;
    let prim = Primitive::GatherQmmSwiglu {
        group_size,
        bits,
        exact: crate::ops::quantized::exact_decode(),
        norm: norm.map(|n| F32(n.1)),
    };
    if !kdim.is_multiple_of(32) || !use_kernel(&prim) {
        let x = match norm {
            Some((w, eps)) => super::rms_norm(x, Some(w), eps)?,
            None => x.clone(),
        };
        return gather_qmm_swiglu_fallback(&x, gate, up, indices, group_size, bits);
    }
    let t: usize = x.shape()[..x.ndim() - 1].iter().product();
    let dtype = Dtype::promote(x.dtype(), gate.scales.dtype());
    let y = Array::make(
        [t, kk, n].into_iter().collect(),
        dtype,
        prim,
        [
            ops::reshape(x, &[t as i64, kdim as i64])?,
            gate.wq.clone(),
            gate.scales.clone(),
            gate.biases.clone(),
            up.wq.clone(),
            up.scales.clone(),
            up.biases.clone(),
            ops::reshape(&ops::astype(indices, Dtype::U32), &[t as i64, kk as i64])?,
        ]
        .into_iter()
        .chain(norm.map(|n| n.0.clone())),
    );
    ops::reshape(&y, &out_shape(indices.shape(), n))
}

fn check_swiglu(
    x: &Array,
    gate: &ExpertStack,
    up: &ExpertStack,
    indices: &Array,
    group_size: usize,
    bits: usize,
) -> Result<(usize, [usize; 3])> {
    const OP: &str = "gather_qmm_swiglu";
    check_float(OP, "x", x)?;
    if x.ndim() == 0 {
        return Err(Error::invalid(OP, "x must have at least 1 dimension"));
    }
    let dims = gate.dims(OP, group_size, bits)?;
    if up.dims(OP, group_size, bits)? != dims
        || up.scales.dtype() != gate.scales.dtype()
        || up.scales.shape() != gate.scales.shape()
    {
        return Err(Error::invalid(
            OP,
            format!(
                "the gate {} and up {} stacks must match in shape and dtype",
                fmt_shape(gate.wq.shape()),
                fmt_shape(up.wq.shape())
            ),
        ));
    }
    let kdim = dims[2];
    if x.shape()[x.ndim() - 1] != kdim {
        return Err(Error::invalid(
            OP,
            format!(
                "x {} has last axis {} but the experts take K = {kdim}",
                fmt_shape(x.shape()),
                x.shape()[x.ndim() - 1]
            ),
        ));
    }
    let kk = check_indices(OP, indices, &x.shape()[..x.ndim() - 1])?;
    Ok((kk, dims))
}

/// `indices.shape + [n]`.
fn out_shape(indices: &[usize], n: usize) -> Vec<i64> {
    indices.iter().chain([&n]).map(|&d| d as i64).collect()
}

/// [`gather_qmm_swiglu`] composed of ordinary ops (as `SwitchGlu` in mlx-lm).
#[track_caller]
pub fn gather_qmm_swiglu_fallback(
    x: &Array,
    gate: ExpertStack,
    up: ExpertStack,
    indices: &Array,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    check_swiglu(x, &gate, &up, indices, group_size, bits)?;
    // x: [..., 1, 1, K] so that its batch broadcasts against indices [..., k]
    let xe = ops::expand_dims(x, &[-2, -3])?;
    let u = up.gather(&xe, indices, group_size, bits)?;
    let g = gate.gather(&xe, indices, group_size, bits)?;
    ops::squeeze(&ops::silu_mul(&g, &u)?, &[-2])
}

/// `h: [..., k, K]`, `indices`, `weights: [..., k]`, `residual: [..., N]` (optional) →
/// `[..., N]`: `residual + Σ_j weights[..., j] · h[..., j, :] W[indices[..., j]]ᵀ`, in the dtype
/// of `h` promoted with the scales' (and the residual's). Accumulates in f32, rounded once (the
/// composition rounds each product, the weighted terms and the sum to that dtype first).
#[track_caller]
pub fn gather_qmm_weighted_sum(
    h: &Array,
    down: ExpertStack,
    indices: &Array,
    weights: &Array,
    residual: Option<&Array>,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    let [_, n, kdim] = check_weighted_sum(h, &down, indices, weights, residual, group_size, bits)?;
    let prim = Primitive::GatherQmmWeightedSum {
        group_size,
        bits,
        residual: residual.is_some(),
    };
    if !kdim.is_multiple_of(32) || !use_kernel(&prim) {
        return gather_qmm_weighted_sum_fallback(
            h, down, indices, weights, residual, group_size, bits,
        );
    }
    let kk = indices.shape()[indices.ndim() - 1];
    let t: usize = indices.size() / kk.max(1);
    let mut dtype = Dtype::promote(h.dtype(), down.scales.dtype());
    if let Some(r) = residual {
        dtype = Dtype::promote(dtype, r.dtype());
    }
    let mut inputs = vec![
        ops::reshape(h, &[t as i64, kk as i64, kdim as i64])?,
        down.wq.clone(),
        down.scales.clone(),
        down.biases.clone(),
        ops::reshape(&ops::astype(indices, Dtype::U32), &[t as i64, kk as i64])?,
        ops::reshape(&ops::astype(weights, Dtype::F32), &[t as i64, kk as i64])?,
    ];
    if let Some(r) = residual {
        inputs.push(ops::reshape(r, &[t as i64, n as i64])?);
    }
    let y = Array::make([t, n].into_iter().collect(), dtype, prim, inputs);
    let lead = &indices.shape()[..indices.ndim() - 1];
    ops::reshape(&y, &out_shape(lead, n))
}

fn check_weighted_sum(
    h: &Array,
    down: &ExpertStack,
    indices: &Array,
    weights: &Array,
    residual: Option<&Array>,
    group_size: usize,
    bits: usize,
) -> Result<[usize; 3]> {
    const OP: &str = "gather_qmm_weighted_sum";
    check_float(OP, "h", h)?;
    check_float(OP, "weights", weights)?;
    let dims = down.dims(OP, group_size, bits)?;
    if h.ndim() < 2 || h.shape()[h.ndim() - 1] != dims[2] {
        return Err(Error::invalid(
            OP,
            format!(
                "h {} must be [..., k, K] with K = {} (the experts' input size)",
                fmt_shape(h.shape()),
                dims[2]
            ),
        ));
    }
    let kk = check_indices(OP, indices, &h.shape()[..h.ndim() - 2])?;
    if kk != h.shape()[h.ndim() - 2] {
        return Err(Error::invalid(
            OP,
            format!(
                "h {} must hold one row per chosen expert of indices {}",
                fmt_shape(h.shape()),
                fmt_shape(indices.shape())
            ),
        ));
    }
    if weights.shape() != indices.shape() {
        return Err(Error::invalid(
            OP,
            format!(
                "weights {} must have the shape of indices {}",
                fmt_shape(weights.shape()),
                fmt_shape(indices.shape())
            ),
        ));
    }
    if let Some(r) = residual {
        check_float(OP, "residual", r)?;
        let mut want: Vec<usize> = indices.shape()[..indices.ndim() - 1].to_vec();
        want.push(dims[1]);
        if r.shape() != want.as_slice() {
            return Err(Error::invalid(
                OP,
                format!(
                    "residual {} must have the output's shape {}",
                    fmt_shape(r.shape()),
                    fmt_shape(&want)
                ),
            ));
        }
    }
    Ok(dims)
}

/// [`gather_qmm_weighted_sum`] composed of ordinary ops (as mlx-lm's MoE blocks).
#[track_caller]
pub fn gather_qmm_weighted_sum_fallback(
    h: &Array,
    down: ExpertStack,
    indices: &Array,
    weights: &Array,
    residual: Option<&Array>,
    group_size: usize,
    bits: usize,
) -> Result<Array> {
    check_weighted_sum(h, &down, indices, weights, residual, group_size, bits)?;
    // [..., k, 1, K] → [..., k, 1, N] → [..., k, N]
    let y = down.gather(&ops::expand_dims(h, &[-2])?, indices, group_size, bits)?;
    mix_experts(&ops::squeeze(&y, &[-2])?, weights, residual)
}

/// `y: [..., k, N]` (each chosen expert's output), `weights: [..., k]` → `[..., N]`:
/// `residual + Σ_j weights[..., j] · y[..., j, :]`, composed as mlx-lm's MoE blocks do (the
/// weights cast to y's dtype, the sum rounded to it).
#[track_caller]
pub fn mix_experts(y: &Array, weights: &Array, residual: Option<&Array>) -> Result<Array> {
    let w = ops::astype(&ops::expand_dims(weights, &[-1])?, y.dtype());
    let out = ops::sum(&ops::multiply(y, &w)?, Some(&[-2]), false)?;
    let out = ops::astype(&out, y.dtype());
    match residual {
        Some(r) => ops::add(r, &out),
        None => Ok(out),
    }
}
