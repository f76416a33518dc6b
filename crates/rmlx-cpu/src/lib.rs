//! rmlx-cpu: the CPU backend. One file per op family; `eval` is one exhaustive match.
//!
//! Threads come from rayon; SIMD kernels pick AVX2/FMA at run time where present and keep a
//! portable path (the one aarch64 takes).

// Numeric kernels index several arrays with one loop counter and keep constants at the precision
// of their published source; these lints fight that style without finding bugs.
#![allow(
    clippy::needless_range_loop,
    clippy::excessive_precision,
    clippy::type_complexity
)]

pub mod binary;
pub mod copy;
pub mod creation;
pub mod gather_matmul;
pub mod indexing;
pub mod matmul;
pub mod norm;
pub mod parallel;
pub mod quantized;
pub mod random;
pub mod reduce;
pub mod rope;
pub mod scan;
pub mod sdpa;
pub mod softmax;
pub mod sort;
pub mod stream_store;
pub mod strided;
pub mod unary;
pub mod vmath;

use rmlx_core::primitive::{OutputSpec, Primitive};
use rmlx_core::{ArrayData, Backend, DeviceType, Error, Result};
use std::sync::Arc;

/// The CPU backend.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, prim: &Primitive) -> bool {
        match prim {
            Primitive::View(_)
            | Primitive::Copy
            | Primitive::AsType
            | Primitive::Arange { .. }
            | Primitive::Unary(_)
            | Primitive::Binary(_)
            | Primitive::Where
            | Primitive::Reduce { .. }
            | Primitive::ArgReduce { .. }
            | Primitive::Scan { .. }
            | Primitive::Softmax
            | Primitive::LogSumExp
            | Primitive::Matmul
            | Primitive::Concatenate { .. }
            | Primitive::SliceUpdate { .. }
            | Primitive::SliceUpdateAt { .. }
            | Primitive::Take { .. }
            | Primitive::TakeAlongAxis { .. }
            | Primitive::PutAlongAxis { .. }
            | Primitive::Sort { .. }
            | Primitive::Argsort { .. }
            | Primitive::Argpartition { .. }
            | Primitive::RandomBits
            | Primitive::RmsNorm { .. }
            | Primitive::LayerNorm { .. }
            | Primitive::Rope { norm: None, .. }
            | Primitive::ScaledDotProductAttention { .. }
            | Primitive::Quantize { .. }
            | Primitive::Dequantize { .. }
            | Primitive::QuantizedMatmul { norm: None, .. }
            | Primitive::GatherMm { .. }
            | Primitive::GatherQmm { .. } => true,
            // fused decode ops: their composition runs on the CPU
            Primitive::QuantizedMatmul { norm: Some(_), .. }
            | Primitive::Rope { norm: Some(_), .. }
            | Primitive::MoeRoute { .. }
            | Primitive::GatherQmmSwiglu { .. }
            | Primitive::GatherQmmWeightedSum { .. }
            | Primitive::SdpaRows { .. }
            | Primitive::RopeKvWrite { .. }
            | Primitive::QuantizedKvWrite { .. }
            | Primitive::QuantizedSdpaDecode { .. }
            | Primitive::QuantizedSwiglu { .. } => false,
        }
    }

    fn eval(
        &self,
        _index: usize,
        prim: &Primitive,
        mut x: Vec<ArrayData>,
        out: &OutputSpec,
    ) -> Result<ArrayData> {
        match prim {
            Primitive::View(_) => Err(rmlx_core::Error::runtime(
                "cpu",
                "views are resolved by the core",
            )),
            Primitive::Copy => copy::copy(&x[0]),
            Primitive::AsType => copy::astype(&x[0], out.dtype),
            Primitive::Arange { start, step } => creation::arange(start.0, step.0, out),
            Primitive::Unary(op) => unary::unary(&x[0], *op, out),
            Primitive::Binary(op) => binary::binary(&x[0], &x[1], *op, out),
            Primitive::Where => binary::where_(&x[0], &x[1], &x[2], out),
            Primitive::Reduce { op, axes } => reduce::reduce(&x[0], *op, axes, out),
            Primitive::ArgReduce { op, axis } => reduce::arg_reduce(&x[0], *op, *axis, out),
            Primitive::Scan {
                op,
                axis,
                reverse,
                inclusive,
            } => scan::scan(&x[0], *op, *axis, *reverse, *inclusive, out),
            Primitive::Softmax => softmax::softmax(&x[0], out),
            Primitive::LogSumExp => softmax::logsumexp(&x[0], out),
            Primitive::Matmul => matmul::matmul(&x[0], &x[1], out),
            Primitive::Concatenate { axis } => indexing::concatenate(&x, *axis, out),
            Primitive::SliceUpdate { start, step } => {
                indexing::slice_update(x.swap_remove(0), &x[0], start, step, out)
            }
            Primitive::SliceUpdateAt { axis } => {
                let src = x.swap_remove(0); // x is now [start, update]
                indexing::slice_update_at(src, &x[1], &x[0], *axis, out)
            }
            Primitive::Take { axis } => indexing::take(&x[0], &x[1], *axis, out),
            Primitive::TakeAlongAxis { axis } => {
                indexing::take_along_axis(&x[0], &x[1], *axis, out)
            }
            Primitive::PutAlongAxis { axis } => {
                indexing::put_along_axis(&x[0], &x[1], &x[2], *axis, out)
            }
            Primitive::Sort { axis } => sort::sort(&x[0], *axis, out),
            Primitive::Argsort { axis } => sort::argsort(&x[0], *axis, out),
            Primitive::Argpartition { kth, axis } => sort::argpartition(&x[0], *kth, *axis, out),
            Primitive::RandomBits => random::random_bits(&x[0], out),
            Primitive::RmsNorm { eps, has_weight } => norm::rms_norm(&x, eps.0, *has_weight, out),
            Primitive::LayerNorm {
                eps,
                has_weight,
                has_bias,
            } => norm::layer_norm(&x, eps.0, *has_weight, *has_bias, out),
            Primitive::Rope { norm: Some(_), .. } => Err(Error::invalid(
                "cpu",
                "[rope] a norm inside RoPE has no CPU kernel (`fast::rms_norm_rope` composes it here)",
            )),
            Primitive::Rope {
                dims,
                traditional,
                base,
                scale,
                has_freqs,
                ..
            } => rope::rope(&x, *dims, *traditional, base.0, scale.0, *has_freqs, out),
            Primitive::ScaledDotProductAttention { scale, mask } => {
                sdpa::sdpa(&x, scale.0, *mask, out)
            }
            Primitive::Quantize {
                group_size,
                bits,
                part,
            } => quantized::quantize(&x[0], *group_size, *bits, *part, out),
            Primitive::Dequantize { group_size, bits } => {
                quantized::dequantize(&x, *group_size, *bits, out)
            }
            Primitive::QuantizedMatmul { norm: Some(_), .. } => Err(Error::invalid(
                "cpu",
                "[quantized_matmul] a norm inside the product has no CPU kernel (`ops::rms_norm_quantized_matmul` composes it here)",
            )),
            Primitive::QuantizedMatmul {
                group_size,
                bits,
                transpose,
                exact,
                ..
            } => quantized::quantized_matmul(&x, *group_size, *bits, *transpose, *exact, out),
            Primitive::GatherMm { .. } => gather_matmul::gather_mm(&x, out),
            Primitive::GatherQmm {
                group_size,
                bits,
                transpose,
                exact,
                ..
            } => gather_matmul::gather_qmm(&x, *group_size, *bits, *transpose, *exact, out),
            Primitive::MoeRoute { .. }
            | Primitive::GatherQmmSwiglu { .. }
            | Primitive::GatherQmmWeightedSum { .. }
            | Primitive::SdpaRows { .. }
            | Primitive::RopeKvWrite { .. }
            | Primitive::QuantizedKvWrite { .. }
            | Primitive::QuantizedSdpaDecode { .. }
            | Primitive::QuantizedSwiglu { .. } => Err(Error::invalid(
                "cpu",
                format!(
                    "[{}] has no CPU kernel (`rmlx::fast` composes it from ordinary ops here)",
                    prim.name()
                ),
            )),
        }
    }
}

/// Registers the CPU backend (idempotent; the `rmlx` facade does this for you).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| rmlx_core::register_backend(DeviceType::Cpu, Arc::new(CpuBackend)));
}
