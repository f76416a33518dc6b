//! Mixture-of-experts layers (mlx-lm's `switch_layers.py`): `SwitchLinear` applies, per token,
//! the experts its router chose (a stack `[E, out, in]`, dense or quantized, through
//! `gather_mm` / `gather_qmm`), `SwitchGlu` is the gated expert MLP, and `route` turns router
//! logits into expert ids and weights the way each architecture does.

use crate::error::Result;
use crate::linear::QuantParams;
use crate::norm::Normed;
use rmlx::fast::{self, ExpertStack};
use rmlx::{ops, Array, Dtype};

/// Token-expert pairs from which the expert MLP sorts tokens by expert (mlx-lm's rule), so each
/// expert's weights are read once per step and the kernels see long runs of one expert.
pub const SORT_MIN_PAIRS: usize = 64;

/// Whether a step's (token, expert) pairs take the fused decode ops of
/// [`SwitchGlu::forward_weighted`] (each pair reads its expert's rows) rather than the sorted
/// prefill path: fewer than [`SORT_MIN_PAIRS`] pairs, or no more tokens than a decode product
/// serves (`ops::DECODE_MAX_ROWS`). The second part is for batched decoding: 8 tokens of a
/// top-8 router are 64 pairs, and there the sort, its permutations and the grouped products
/// cost more than reading each pair's rows (Qwen3-30B-A3B shape on an H100: batch 8 ran 425–433
/// tok/s against 698–741 at batch 4, docs/PERF.md).
fn decode_sized(indices: &Array) -> bool {
    let k = indices.shape().last().copied().unwrap_or(1).max(1);
    indices.size() < SORT_MIN_PAIRS || indices.size() / k <= ops::DECODE_MAX_ROWS
}

/// `E` stacked linear maps `x @ W[e].T (+ b[e])`, `W: [E, out, in]`; the quantized form keeps
/// MLX's packed layout per expert (`switch_mlp.*` in mlx-community checkpoints).
#[derive(Clone, Debug)]
pub enum SwitchLinear {
    Dense {
        weight: Array,
        bias: Option<Array>,
    },
    Quantized {
        wq: Array,
        scales: Array,
        biases: Array,
        bias: Option<Array>,
        q: QuantParams,
    },
}

impl SwitchLinear {
    /// Experts in the stack.
    pub fn num_experts(&self) -> usize {
        match self {
            SwitchLinear::Dense { weight, .. } => weight.shape()[0],
            SwitchLinear::Quantized { wq, .. } => wq.shape()[0],
        }
    }

    /// The quantized stack without a bias, as the fused decode ops take it.
    fn stack(&self) -> Option<(ExpertStack<'_>, QuantParams)> {
        match self {
            SwitchLinear::Quantized {
                wq,
                scales,
                biases,
                bias: None,
                q,
            } => Some((ExpertStack { wq, scales, biases }, *q)),
            _ => None,
        }
    }

    /// `x: [..., M, in]` with `indices: [...]` (broadcast against x's batch axes) →
    /// `[..., M, out]`, each batch entry through expert `indices[...]`. `sorted_indices`
    /// promises sorted indices (a speed hint).
    pub fn forward(&self, x: &Array, indices: &Array, sorted_indices: bool) -> Result<Array> {
        self.forward_rows(x, None, indices, sorted_indices)
    }

    /// As `forward`, with entry `i` reading x's batch entry `x_rows[i]` (`gather_mm`'s
    /// `lhs_indices`): the rows are gathered by the product instead of copied first.
    pub fn forward_rows(
        &self,
        x: &Array,
        x_rows: Option<&Array>,
        indices: &Array,
        sorted_indices: bool,
    ) -> Result<Array> {
        let (y, bias) = match self {
            SwitchLinear::Dense { weight, bias } => (
                ops::gather_mm(
                    x,
                    &ops::swapaxes(weight, -1, -2)?,
                    x_rows,
                    Some(indices),
                    sorted_indices,
                )?,
                bias,
            ),
            SwitchLinear::Quantized {
                wq,
                scales,
                biases,
                bias,
                q,
            } => (
                ops::gather_qmm(
                    x,
                    wq,
                    scales,
                    biases,
                    x_rows,
                    Some(indices),
                    true,
                    q.group_size,
                    q.bits,
                    sorted_indices,
                )?,
                bias,
            ),
        };
        Ok(match bias {
            // bias[indices]: [..., out] → [..., 1, out]
            Some(b) => ops::add(
                &y,
                &ops::expand_dims(&ops::take(b, indices, Some(0))?, &[-2])?,
            )?,
            None => y,
        })
    }
}

/// The gated expert MLP: `down(silu(gate(x)) * up(x))` with each token through its chosen
/// experts.
#[derive(Clone, Debug)]
pub struct SwitchGlu {
    pub gate_proj: SwitchLinear,
    pub up_proj: SwitchLinear,
    pub down_proj: SwitchLinear,
}

impl SwitchGlu {
    /// `x: [..., D]`, `indices: [..., k]` (u32 expert ids) → `[..., k, D]`, one output per
    /// chosen expert (the caller weights and sums them).
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        // x: [..., 1, 1, D] so that its batch broadcasts against indices [..., k]
        let x = ops::expand_dims(x, &[-2, -3])?;
        if indices.size() < SORT_MIN_PAIRS {
            let h = self.hidden(&x, None, indices, false)?;
            return Ok(ops::squeeze(
                &self.down_proj.forward(&h, indices, false)?,
                &[-2],
            )?);
        }
        // Prefill: one row per (token, expert) pair, sorted by expert; results unsorted after.
        // The products read each pair's token row through lhs indices (no gathered copy of x),
        // and the inverse permutation is a scatter, not a second sort.
        let k = indices.shape()[indices.ndim() - 1];
        let flat = ops::reshape(indices, &[-1])?;
        let pairs = flat.size();
        let order = ops::argsort(&flat, Some(0))?;
        let positions = ops::arange(0.0, pairs as f64, 1.0, Dtype::U32)?;
        let inv_order = ops::put_along_axis(
            &ops::zeros(&[pairs], Dtype::U32),
            &order,
            &positions,
            Some(0),
        )?;
        let tokens = ops::floor_divide(&order, &Array::scalar(k as u32))?;
        let xt = ops::flatten(&x, 0, -3)?; // [T, 1, D]
        let idx = ops::take(&flat, &order, Some(0))?; // [T*k] sorted
        let h = self.hidden(&xt, Some(&tokens), &idx, true)?; // [T*k, 1, H]
        let y = self.down_proj.forward(&h, &idx, true)?; // [T*k, 1, D]
        let y = ops::take(&y, &inv_order, Some(0))?;
        let d = y.shape()[y.ndim() - 1] as i64;
        let shape: Vec<i64> = indices
            .shape()
            .iter()
            .map(|&s| s as i64)
            .chain([d])
            .collect();
        Ok(ops::reshape(&y, &shape)?)
    }

    /// `x: [..., D]` (its pre-norm still to apply, where given), `indices`, `weights: [..., k]`
    /// → `[..., D]`: the chosen experts' outputs mixed by the router's weights, plus `residual`
    /// (`[..., D]`) when given. Decode-sized steps of quantized experts run as two fused ops
    /// (`fast::gather_qmm_swiglu(_normed)`, `fast::gather_qmm_weighted_sum`: two kernels on a
    /// GPU where the composition launches ~12, the norm inside the first).
    pub fn forward_weighted(
        &self,
        x: Normed,
        indices: &Array,
        weights: &Array,
        residual: Option<&Array>,
    ) -> Result<Array> {
        if decode_sized(indices) && fused_moe() {
            if let (Some((g, gq)), Some((u, uq)), Some((d, dq))) = (
                self.gate_proj.stack(),
                self.up_proj.stack(),
                self.down_proj.stack(),
            ) {
                if gq == uq && uq == dq {
                    let h = gather_swiglu(x, g, u, indices, gq)?;
                    return Ok(fast::gather_qmm_weighted_sum(
                        &h,
                        d,
                        indices,
                        weights,
                        residual,
                        dq.group_size,
                        dq.bits,
                    )?);
                }
            }
        }
        Ok(fast::mix_experts(
            &self.forward(&x.value()?, indices)?,
            weights,
            residual,
        )?)
    }

    /// `silu(gate(x)) * up(x)` per entry; `x_rows` as in [`SwitchLinear::forward_rows`].
    fn hidden(
        &self,
        x: &Array,
        x_rows: Option<&Array>,
        idx: &Array,
        sorted: bool,
    ) -> Result<Array> {
        let up = self.up_proj.forward_rows(x, x_rows, idx, sorted)?;
        let gate = self.gate_proj.forward_rows(x, x_rows, idx, sorted)?;
        Ok(ops::silu_mul(&gate, &up)?)
    }
}

/// `silu(x W_gate[e]ᵀ) * (x W_up[e]ᵀ)` per chosen expert (`fast::gather_qmm_swiglu`) of a
/// [`Normed`] x, its norm inside the op where it can ride there.
pub(crate) fn gather_swiglu(
    x: Normed,
    gate: ExpertStack,
    up: ExpertStack,
    indices: &Array,
    q: QuantParams,
) -> Result<Array> {
    let (gs, bits) = (q.group_size, q.bits);
    Ok(match x.fusable() {
        Some(n) => {
            fast::gather_qmm_swiglu_normed(x.x, &n.weight, n.eps, gate, up, indices, gs, bits)?
        }
        None => fast::gather_qmm_swiglu(&x.value()?, gate, up, indices, gs, bits)?,
    })
}

/// How an architecture turns router logits into expert ids and weights (softmax or sigmoid
/// scores, top k, optionally renormalised): `rmlx::fast::MoeRouting`.
pub use rmlx::fast::MoeRouting as Routing;

/// `logits: [..., E]` → (`indices: [..., k]` u32, `weights: [..., k]` f32): the k chosen experts
/// per token and their mixing weights (`rmlx::fast::moe_route`: one kernel per part on a GPU).
/// Softmaxes run in f32 (mlx-lm's `precise=True`).
pub fn route(logits: &Array, k: usize, routing: Routing) -> Result<(Array, Array)> {
    if !fused_moe() {
        return Ok(fast::moe_route_fallback(logits, k, routing)?);
    }
    Ok(fast::moe_route(logits, k, routing)?)
}

/// `RMLX_MOE_FUSED=0` composes the MoE decode ops from ordinary ops even where the backend has
/// the fused kernels (an ablation switch for benchmarks), read once.
fn fused_moe() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switches::enabled(&ON, "RMLX_MOE_FUSED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmlx::Dtype;

    fn arr(v: &[f32], shape: &[usize]) -> Array {
        Array::from_slice(v, shape).unwrap()
    }

    fn sorted_pairs(i: &Array, w: &Array) -> Vec<(u32, f32)> {
        let (i, w) = (i.to_vec::<u32>().unwrap(), w.to_vec::<f32>().unwrap());
        let mut p: Vec<(u32, f32)> = i.into_iter().zip(w).collect();
        p.sort_by_key(|x| x.0);
        p
    }

    #[test]
    fn routing_modes() {
        let l = arr(&[0.1, 2.0, -1.0, 1.0], &[1, 4]);
        let ex: Vec<f32> = [0.1f32, 2.0, -1.0, 1.0].iter().map(|v| v.exp()).collect();
        let z: f32 = ex.iter().sum();
        let (i, w) = route(&l, 2, Routing::SoftmaxTopK { renormalize: false }).unwrap();
        let p = sorted_pairs(&i, &w);
        assert_eq!((p[0].0, p[1].0), (1, 3));
        assert!((p[0].1 - ex[1] / z).abs() < 1e-6 && (p[1].1 - ex[3] / z).abs() < 1e-6);
        for r in [
            Routing::SoftmaxTopK { renormalize: true },
            Routing::TopKSoftmax,
        ] {
            let (i, w) = route(&l, 2, r).unwrap();
            let p = sorted_pairs(&i, &w);
            let want = ex[1] / (ex[1] + ex[3]);
            assert!((p[0].1 - want).abs() < 1e-6, "{r:?}: {p:?}");
        }
        let (i, w) = route(&l, 1, Routing::SigmoidTopK { renormalize: false }).unwrap();
        assert_eq!(i.to_vec::<u32>().unwrap(), vec![1]);
        assert!((w.to_vec::<f32>().unwrap()[0] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        let msg = route(&l, 5, Routing::TopKSoftmax).unwrap_err().to_string();
        assert!(msg.contains("5 of 4 experts"), "{msg}");
    }

    /// The sorted (prefill) path equals the unsorted one, dense and quantized.
    #[test]
    fn sorted_and_unsorted_paths_agree() {
        let (e, d, h) = (4usize, 64usize, 32usize);
        let key = |s: u64| Some(ops::random::key(s));
        let w = |s: u64, o: usize, i: usize| {
            ops::random::normal(&[e, o, i], Dtype::F32, 0.0, 0.2, key(s).as_ref())
        };
        let dense = SwitchGlu {
            gate_proj: SwitchLinear::Dense {
                weight: w(1, h, d).unwrap(),
                bias: None,
            },
            up_proj: SwitchLinear::Dense {
                weight: w(2, h, d).unwrap(),
                bias: None,
            },
            down_proj: SwitchLinear::Dense {
                weight: w(3, d, h).unwrap(),
                bias: None,
            },
        };
        let quant = |l: &SwitchLinear| {
            let SwitchLinear::Dense { weight, .. } = l else {
                unreachable!()
            };
            let (wq, scales, biases) = ops::quantize(weight, 32, 4).unwrap();
            SwitchLinear::Quantized {
                wq,
                scales,
                biases,
                bias: None,
                q: QuantParams {
                    group_size: 32,
                    bits: 4,
                },
            }
        };
        let q = SwitchGlu {
            gate_proj: quant(&dense.gate_proj),
            up_proj: quant(&dense.up_proj),
            down_proj: quant(&dense.down_proj),
        };
        let t = 40; // 40 tokens x top-2 = 80 pairs: the sorted path
        let x = ops::random::normal(&[1, t, d], Dtype::F32, 0.0, 1.0, key(4).as_ref()).unwrap();
        let ids: Vec<u32> = (0..t * 2).map(|i| ((i * 7 + i / 3) % e) as u32).collect();
        let idx = Array::from_slice(&ids, &[1, t, 2]).unwrap();
        // dense: summation order only; quantized: the single-token path takes the int8-activation
        // decode kernel, the sorted one the float prefill kernel (≈1e-2 of the output scale)
        for (glu, tol) in [(&dense, 1e-4f32), (&q, 5e-2)] {
            let sorted = glu.forward(&x, &idx).unwrap();
            assert_eq!(sorted.shape(), &[1, t, 2, d]);
            let all = sorted.to_vec::<f32>().unwrap();
            // token by token (2 pairs each): the unsorted path
            for ti in [0usize, 17, 39] {
                let (a, b) = (ti as i64, ti as i64 + 1);
                let xt = ops::slice(&x, &[0, a, 0], &[1, b, d as i64], &[1, 1, 1]).unwrap();
                let it = Array::from_slice(&ids[ti * 2..ti * 2 + 2], &[1, 1, 2]).unwrap();
                let one = glu.forward(&xt, &it).unwrap().to_vec::<f32>().unwrap();
                let scale = one.iter().fold(1f32, |m, v| m.max(v.abs()));
                let got = &all[ti * 2 * d..(ti + 1) * 2 * d];
                for (a, b) in got.iter().zip(&one) {
                    assert!((a - b).abs() <= tol * scale, "token {ti}: {a} vs {b}");
                }
            }
        }
    }
}
