//! rmlx-cuda: the CUDA backend. Kernels are generated CUDA C compiled by NVRTC at run time
//! (cached on disk), float GEMM goes through cuBLASLt, memory through a caching allocator.
//! CUDA is loaded dynamically: without a driver the backend registers no device and every
//! GPU request fails with a clear message.

pub mod alloc;
pub mod context;
pub mod data;
pub mod kernels;
pub mod launch;
pub mod ops;

use context::gpu;
use ops::elementwise as ew;
use rmlx_core::primitive::{OutputSpec, Primitive};
use rmlx_core::{ArrayData, Backend, DeviceType, Error, Result};
use std::sync::Arc;

pub use context::device_count;

/// The CUDA backend.
pub struct CudaBackend;

fn not_yet(prim: &Primitive) -> Error {
    Error::runtime("cuda", format!("{} has no GPU kernel yet", prim.name()))
}

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
            | Primitive::Matmul => true,
            Primitive::Reduce { .. }
            | Primitive::ArgReduce { .. }
            | Primitive::Scan { .. }
            | Primitive::Softmax
            | Primitive::LogSumExp
            | Primitive::Concatenate { .. }
            | Primitive::SliceUpdate { .. }
            | Primitive::Take { .. }
            | Primitive::TakeAlongAxis { .. }
            | Primitive::PutAlongAxis { .. }
            | Primitive::Sort { .. }
            | Primitive::Argsort { .. }
            | Primitive::Argpartition { .. }
            | Primitive::RandomBits
            | Primitive::RmsNorm { .. }
            | Primitive::LayerNorm { .. }
            | Primitive::Rope { .. }
            | Primitive::ScaledDotProductAttention { .. }
            | Primitive::Quantize { .. }
            | Primitive::Dequantize { .. }
            | Primitive::QuantizedMatmul { .. } => false,
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
            Primitive::Reduce { .. }
            | Primitive::ArgReduce { .. }
            | Primitive::Scan { .. }
            | Primitive::Softmax
            | Primitive::LogSumExp
            | Primitive::Concatenate { .. }
            | Primitive::SliceUpdate { .. }
            | Primitive::Take { .. }
            | Primitive::TakeAlongAxis { .. }
            | Primitive::PutAlongAxis { .. }
            | Primitive::Sort { .. }
            | Primitive::Argsort { .. }
            | Primitive::Argpartition { .. }
            | Primitive::RandomBits
            | Primitive::RmsNorm { .. }
            | Primitive::LayerNorm { .. }
            | Primitive::Rope { .. }
            | Primitive::ScaledDotProductAttention { .. }
            | Primitive::Quantize { .. }
            | Primitive::Dequantize { .. }
            | Primitive::QuantizedMatmul { .. } => Err(not_yet(prim)),
        }
    }

    fn synchronize(&self, index: usize) -> Result<()> {
        gpu(index)?.synchronize()
    }

    fn device_count(&self) -> usize {
        device_count()
    }
}

/// Registers the CUDA backend for `Device::gpu(i)`. Returns the number of CUDA devices found
/// (0 where no driver or GPU is present: the backend is then not registered).
pub fn register() -> usize {
    let n = device_count();
    if n > 0 {
        rmlx_core::register_backend(DeviceType::Gpu, Arc::new(CudaBackend));
    }
    n
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
