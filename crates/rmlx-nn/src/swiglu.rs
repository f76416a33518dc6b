//! `GateUpSwiglu`: `silu(x W_gateᵀ) * (x W_upᵀ)` of a fused, quantized gate/up layer as one op
//! for a decode row. The two halves of the fused weights are viewed as one-expert stacks
//! `[1, H, ..]`, so the MoE kernel `fast::gather_qmm_swiglu(_normed)` (index 0 for every row)
//! streams each gate row with its up row and applies SiLU and the product in registers: on a
//! GPU one launch where the product and `ops::silu_mul` take two, and the `[.., 2H]`
//! intermediate never reaches memory. Several decode rows take `ops::quantized_swiglu` (the
//! tensor-core product with SwiGLU on its stores, one read of the weights for all rows).

use crate::error::Result;
use crate::linear::{Linear, QuantParams};
use crate::norm::Normed;
use crate::parallel::Parallel;
use rmlx::fast::ExpertStack;
use rmlx::{ops, Array, Dtype};

/// The gate and up halves of a fused quantized layer, as one-expert stacks.
#[derive(Clone, Debug)]
pub struct GateUpSwiglu {
    /// `[wq, scales, biases]` of the gate rows, each `[1, H, ..]` (views of the fused arrays).
    gate: [Array; 3],
    up: [Array; 3],
    q: QuantParams,
    /// u32 zero: the decode row picks expert 0.
    zeros: Array,
    /// `[wq, scales, biases]` of the whole fused layer, for several rows.
    full: [Array; 3],
}

impl GateUpSwiglu {
    /// The pair of a fused gate/up layer (gate rows first, halves of equal size), quantized and
    /// without bias; `None` otherwise.
    pub fn new(gate_up: &Parallel) -> Result<Option<GateUpSwiglu>> {
        let Parallel::Fused { layer, sizes } = gate_up else {
            return Ok(None);
        };
        let Linear::Quantized {
            wq,
            scales,
            biases,
            bias: None,
            q,
        } = layer
        else {
            return Ok(None);
        };
        let &[h, hu] = &sizes[..] else {
            return Ok(None);
        };
        if h != hu {
            return Ok(None);
        }
        let half = |a: &Array, at: usize| -> Result<Array> {
            let c = a.shape()[1] as i64;
            let v = ops::slice(a, &[at as i64, 0], &[(at + h) as i64, c], &[1, 1])?;
            let v = ops::reshape(&v, &[1, h as i64, c])?;
            v.eval()?;
            Ok(v)
        };
        let zeros = ops::zeros(&[1], Dtype::U32);
        zeros.eval()?;
        Ok(Some(GateUpSwiglu {
            gate: [half(wq, 0)?, half(scales, 0)?, half(biases, 0)?],
            up: [half(wq, h)?, half(scales, h)?, half(biases, h)?],
            q: *q,
            zeros,
            full: [wq.clone(), scales.clone(), biases.clone()],
        }))
    }

    /// `silu(gate(x)) * up(x)` for `x: [..., dim]` (its norm still to apply, where given) on a
    /// GPU: `[..., H]`; `None` on the CPU, past the decode rows (8), or where
    /// `RMLX_FUSE_SWIGLU=0` (an ablation switch). One row takes the MoE kernel (each gate row
    /// streamed with its up row); 2..8 rows `ops::quantized_swiglu` (the tensor-core decode
    /// kernel with SwiGLU on its stores, where it applies: it reads the weights once for all
    /// rows, where the MoE kernel would read them once per row).
    pub fn forward(&self, x: Normed) -> Result<Option<Array>> {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let lead = &x.x.shape()[..x.x.ndim() - 1];
        let rows: usize = lead.iter().product();
        // the CPU composes the MoE op from gathers: its plain products are faster there
        let gpu = rmlx::current_device().kind == rmlx::DeviceType::Gpu;
        if rows > ops::DECODE_MAX_ROWS || !gpu || !crate::switches::enabled(&ON, "RMLX_FUSE_SWIGLU")
        {
            return Ok(None);
        }
        if rows > 1 {
            let [wq, s, b] = &self.full;
            let (input, norm) = match x.fusable() {
                Some(n) => (x.x.clone(), Some((&n.weight, n.eps))),
                None => (x.value()?, None),
            };
            return Ok(Some(ops::quantized_swiglu(
                &input,
                norm,
                wq,
                s,
                b,
                self.q.group_size,
                self.q.bits,
            )?));
        }
        let idx_shape: Vec<i64> = lead.iter().map(|&d| d as i64).chain([1]).collect();
        let idx = ops::reshape(
            &ops::slice(&self.zeros, &[0], &[rows as i64], &[1])?,
            &idx_shape,
        )?;
        fn stack(a: &[Array; 3]) -> ExpertStack<'_> {
            ExpertStack {
                wq: &a[0],
                scales: &a[1],
                biases: &a[2],
            }
        }
        let y = crate::switch::gather_swiglu(x, stack(&self.gate), stack(&self.up), &idx, self.q)?;
        // [..., 1, H] → [..., H]
        Ok(Some(ops::squeeze(&y, &[-2])?))
    }
}
