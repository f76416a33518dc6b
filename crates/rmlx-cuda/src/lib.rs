//! rmlx-cuda: the CUDA backend. Kernels are generated CUDA C compiled by NVRTC at run time
//! (cached on disk), float GEMM goes through cuBLASLt, memory through a caching allocator.
//! CUDA is loaded dynamically: without a driver the backend registers no device and every
//! GPU request fails with a clear message.

pub mod alloc;
pub mod context;
pub mod data;
mod env;
pub mod graph;
pub mod kernels;
pub mod launch;
pub mod ops;
pub mod profile;
pub mod staging;
pub mod stats;
pub mod tickets;

use context::gpu;
use ops::elementwise as ew;
use rmlx_core::primitive::{OutputSpec, Primitive};
use rmlx_core::{ArrayData, Backend, DeviceType, Error, MemoryControl, MemoryStats, Result};
use std::sync::Arc;

pub use context::device_count;

/// The CUDA backend.
pub struct CudaBackend;

// Every primitive has a kernel now; kept for primitives added later.
impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        data::BACKEND
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
            | Primitive::Matmul
            | Primitive::Concatenate { .. }
            | Primitive::SliceUpdate { .. }
            | Primitive::SliceUpdateAt { .. }
            | Primitive::Take { .. }
            | Primitive::TakeAlongAxis { .. }
            | Primitive::PutAlongAxis { .. }
            | Primitive::RandomBits
            | Primitive::RmsNorm { .. }
            | Primitive::LayerNorm { .. }
            | Primitive::Rope { .. }
            | Primitive::ScaledDotProductAttention { .. }
            | Primitive::SdpaRows { .. }
            | Primitive::RopeKvWrite { .. }
            | Primitive::QuantizedKvWrite { .. }
            | Primitive::QuantizedSdpaDecode { .. }
            | Primitive::QuantizedSwiglu { .. }
            | Primitive::Quantize { .. }
            | Primitive::Dequantize { .. }
            | Primitive::QuantizedMatmul { .. }
            | Primitive::GatherMm { .. }
            | Primitive::GatherQmm { .. }
            | Primitive::Reduce { .. }
            | Primitive::ArgReduce { .. }
            | Primitive::Scan { .. }
            | Primitive::Softmax
            | Primitive::LogSumExp
            | Primitive::Sort { .. }
            | Primitive::Argsort { .. }
            | Primitive::Argpartition { .. }
            | Primitive::MoeRoute { .. }
            | Primitive::GatherQmmSwiglu { .. }
            | Primitive::GatherQmmWeightedSum { .. } => true,
        }
    }

    fn eval(
        &self,
        index: usize,
        prim: &Primitive,
        x: Vec<ArrayData>,
        out: &OutputSpec,
    ) -> Result<ArrayData> {
        let g = gpu(index)?;
        let (shape, od) = (out.shape, out.dtype);
        match prim {
            Primitive::View(_) => Err(Error::runtime("cuda", "views are resolved by the core")),
            Primitive::Copy => ew::copy(&g, &x[0], x[0].dtype),
            Primitive::AsType => ew::copy(&g, &x[0], od),
            Primitive::Arange { start, step } => ew::arange(&g, start.0, step.0, shape, od),
            Primitive::Unary(op) => ew::unary(&g, &x[0], *op, od),
            Primitive::Binary(op) => ew::binary(&g, &x[0], &x[1], *op, shape, od),
            Primitive::Where => ew::where_(&g, &x[0], &x[1], &x[2], shape, od),
            Primitive::Matmul => ops::matmul::matmul(&g, &x[0], &x[1], od),
            Primitive::Concatenate { axis } => ops::indexing::concatenate(&g, &x, *axis, shape, od),
            Primitive::SliceUpdate { start, step } => {
                let mut x = x;
                let src = x.swap_remove(0);
                ops::indexing::slice_update(&g, src, &x[0], start, step, shape, od)
            }
            Primitive::SliceUpdateAt { axis } => {
                let mut x = x;
                let src = x.swap_remove(0); // x is now [start, update]
                ops::indexing::slice_update_at(&g, src, &x[1], &x[0], *axis, od)
            }
            Primitive::Take { axis } => ops::indexing::take(&g, &x[0], &x[1], *axis, shape, od),
            Primitive::TakeAlongAxis { axis } => {
                ops::indexing::take_along_axis(&g, &x[0], &x[1], *axis, shape, od)
            }
            Primitive::PutAlongAxis { axis } => {
                ops::indexing::put_along_axis(&g, &x[0], &x[1], &x[2], *axis, od)
            }
            Primitive::RandomBits => ops::random::random_bits(&g, &x[0], shape, od),
            Primitive::RmsNorm { eps, has_weight } => {
                ops::norm::rms_norm(&g, &x, eps.0, *has_weight, od)
            }
            Primitive::LayerNorm {
                eps,
                has_weight,
                has_bias,
            } => ops::norm::layer_norm(&g, &x, eps.0, *has_weight, *has_bias, od),
            Primitive::Rope {
                dims,
                traditional,
                base,
                scale,
                has_freqs,
                norm,
            } => ops::rope::rope(
                &g,
                &x,
                (*dims, *traditional, base.0, scale.0),
                (*has_freqs, norm.map(|e| e.0)),
                od,
            ),
            Primitive::Reduce { op, axes } => ops::reduce::reduce(&g, &x[0], *op, axes, shape, od),
            Primitive::ArgReduce { op, axis } => {
                ops::reduce::arg_reduce(&g, &x[0], *op, *axis, shape)
            }
            Primitive::Scan {
                op,
                axis,
                reverse,
                inclusive,
            } => ops::scan::scan(&g, &x[0], *op, *axis, *reverse, *inclusive, od),
            Primitive::Softmax => ops::softmax::softmax(&g, &x[0]),
            Primitive::LogSumExp => ops::softmax::logsumexp(&g, &x[0], shape),
            Primitive::Sort { axis } => ops::sort::sort(&g, &x[0], *axis),
            Primitive::Argsort { axis } => ops::sort::argsort(&g, &x[0], *axis),
            Primitive::Argpartition { kth, axis } => {
                ops::sort::argpartition(&g, &x[0], *kth, *axis)
            }
            Primitive::ScaledDotProductAttention { scale, mask } => {
                ops::sdpa::sdpa(&g, &x, scale.0, *mask, shape, od)
            }
            Primitive::SdpaRows { scale } => ops::sdpa::sdpa_rows(&g, &x, scale.0, shape, od),
            Primitive::QuantizedSdpaDecode {
                scale,
                group_size,
                bits,
            } => ops::sdpa_quantized::quantized_sdpa_decode(
                &g,
                &x,
                (scale.0, *group_size, *bits),
                shape,
                od,
            ),
            Primitive::RopeKvWrite { .. } | Primitive::QuantizedKvWrite { .. } => {
                Err(Error::runtime(
                    "cuda",
                    format!(
                        "[{}] has several outputs: it runs through eval_multi",
                        prim.name()
                    ),
                ))
            }
            Primitive::Quantize {
                group_size,
                bits,
                part,
            } => ops::quantized::quantize(&g, &x[0], *group_size, *bits, *part, shape, od),
            Primitive::Dequantize { group_size, bits } => {
                ops::quantized::dequantize(&g, &x, *group_size, *bits, shape, od)
            }
            Primitive::QuantizedMatmul {
                group_size,
                bits,
                transpose,
                exact,
                addend,
                norm,
            } => ops::quantized::quantized_matmul(
                &g,
                &x,
                (*group_size, *bits),
                *transpose,
                *exact,
                (*addend, norm.map(|e| e.0)),
                shape,
                od,
            ),
            Primitive::QuantizedSwiglu {
                group_size,
                bits,
                exact,
                norm,
            } => ops::quantized::quantized_swiglu(
                &g,
                &x,
                (*group_size, *bits),
                (*exact, norm.map(|e| e.0)),
                shape,
                od,
            ),
            Primitive::GatherMm { .. } => ops::gather_matmul::gather_mm(&g, &x, shape, od),
            Primitive::GatherQmm {
                group_size,
                bits,
                transpose,
                ..
            } => ops::gather_matmul::gather_qmm(&g, &x, *group_size, *bits, *transpose, shape, od),
            Primitive::MoeRoute { k, routing } => ops::moe::route(&g, &x, *k, *routing, shape),
            Primitive::GatherQmmSwiglu {
                group_size,
                bits,
                exact,
                norm,
            } => ops::moe::gather_swiglu(
                &g,
                &x,
                (*group_size, *bits),
                (*exact, norm.map(|e| e.0)),
                shape,
                od,
            ),
            Primitive::GatherQmmWeightedSum {
                group_size, bits, ..
            } => ops::moe::gather_weighted_sum(&g, &x, (*group_size, *bits), shape, od),
        }
    }

    fn eval_multi(
        &self,
        index: usize,
        prim: &Primitive,
        x: Vec<ArrayData>,
        outs: &[OutputSpec],
    ) -> Result<Vec<ArrayData>> {
        let g = gpu(index)?;
        match prim {
            Primitive::RopeKvWrite {
                n_q,
                n_kv,
                dims,
                traditional,
                base,
                scale,
                has_freqs,
                norm,
                attend,
            } => {
                let (heads, rope) = ((*n_q, *n_kv), (*dims, *traditional, base.0, scale.0));
                let kinds = (*has_freqs, norm.map(|e| e.0));
                match attend {
                    Some(s) => {
                        ops::rope_kv_sdpa::rope_kv_sdpa(&g, x, heads, rope, kinds, s.0, outs)
                    }
                    None => ops::rope_kv::rope_kv_write(&g, x, heads, rope, kinds, outs),
                }
            }
            Primitive::QuantizedKvWrite { group_size, bits } => {
                ops::quantized_kv::quantized_kv_write(&g, x, *group_size, *bits, outs)
            }
            p => Err(Error::runtime(
                "cuda",
                format!("[{}] is not a multi-output op", p.name()),
            )),
        }
    }

    fn synchronize(&self, index: usize) -> Result<()> {
        gpu(index)?.synchronize()
    }

    fn device_count(&self) -> usize {
        device_count()
    }

    fn memory_stats(&self) -> MemoryStats {
        let mut s = MemoryStats::default();
        for g in context::opened() {
            s.active += g.alloc.active();
            s.peak += g.alloc.peak();
            s.cached += g.alloc.cached();
        }
        s
    }

    fn memory_control(&self, control: MemoryControl) {
        for g in context::opened() {
            match control {
                MemoryControl::ResetPeak => g.alloc.reset_peak(),
                MemoryControl::ClearCache => g.alloc.clear_cache(),
                MemoryControl::SetLimit(b) => {
                    g.alloc.set_limit(b);
                }
                MemoryControl::SetCacheLimit(b) => {
                    g.alloc.set_cache_limit(b);
                }
            }
        }
    }
}

/// Registers the CUDA backend for `Device::gpu(i)`. Costs nothing at start-up: the driver is
/// loaded and probed the first time a GPU is asked for; where none is found, `is_available`
/// says false and GPU work fails with a message saying so.
pub fn register() {
    rmlx_core::register_backend(DeviceType::Gpu, Arc::new(CudaBackend));
}

/// GPU memory of device `index` held by live arrays, in bytes (bucket-rounded).
pub fn active_memory(index: usize) -> usize {
    gpu(index).map(|g| g.alloc.active()).unwrap_or(0)
}
/// The largest `active_memory` since start or the last `reset_peak_memory`.
pub fn peak_memory(index: usize) -> usize {
    gpu(index).map(|g| g.alloc.peak()).unwrap_or(0)
}
pub fn reset_peak_memory(index: usize) {
    if let Ok(g) = gpu(index) {
        g.alloc.reset_peak()
    }
}
/// Freed device memory kept for reuse.
pub fn cache_memory(index: usize) -> usize {
    gpu(index).map(|g| g.alloc.cached()).unwrap_or(0)
}
/// Caps device allocations; returns the previous cap.
pub fn set_memory_limit(index: usize, bytes: usize) -> Result<usize> {
    Ok(gpu(index)?.alloc.set_limit(bytes))
}
/// Returns cached device memory to the driver.
pub fn clear_cache(index: usize) {
    if let Ok(g) = gpu(index) {
        g.alloc.clear_cache()
    }
}
/// The device's name and architecture, e.g. `("NVIDIA H100 80GB HBM3", "sm_90")`.
pub fn device_info(index: usize) -> Result<(String, String)> {
    let g = gpu(index)?;
    Ok((g.name.clone(), g.arch.clone()))
}
