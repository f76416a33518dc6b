//! Arrays on the device: an input's device copy (uploaded once, from the mapping for weights
//! loaded from a file) and fresh device outputs.

use crate::alloc::DeviceBuffer;
use crate::context::{cuda_err, Gpu};
use crate::launch::Lay;
use cudarc::driver::result;
use rmlx_core::{ArrayData, Buffer, Dtype, Result};
use std::sync::Arc;

pub const BACKEND: &str = "cuda";

/// The C type a dtype has in the kernels (see the prelude).
pub fn ctype(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "boolean",
        Dtype::U8 => "u8",
        Dtype::U32 => "u32",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::F16 => "f16",
        Dtype::BF16 => "bf16",
        Dtype::F32 => "float",
    }
}

/// A short dtype tag for kernel names.
pub fn tag(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "b",
        Dtype::U8 => "u8",
        Dtype::U32 => "u32",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::F16 => "f16",
        Dtype::BF16 => "bf16",
        Dtype::F32 => "f32",
    }
}

/// An input as the kernels see it: the buffer's device address, the element offset and the
/// collapsed layout. Holds the device copy alive while queued work may read it.
pub struct DevIn {
    pub ptr: u64,
    pub offset: i64,
    pub lay: Lay,
    pub dtype: Dtype,
    _keep: Arc<DeviceBuffer>,
}

impl DevIn {
    pub fn contiguous(&self) -> bool {
        self.lay.is_contiguous()
    }
    /// Address of element 0 (for kernels that take a contiguous pointer).
    pub fn base(&self) -> u64 {
        self.ptr + (self.offset as u64) * self.dtype.size() as u64
    }
}

/// The device copy of a buffer's bytes, uploading them the first time.
pub fn device_bytes(gpu: &Arc<Gpu>, b: &Buffer) -> Result<Arc<DeviceBuffer>> {
    let d = b.device_copy(BACKEND, gpu.index, |bytes| upload(gpu, bytes))?;
    gpu.alloc.touch(&d);
    Ok(d)
}

/// Copies host bytes into a fresh device block: large ones through the pinned staging buffers
/// (the source may be a file mapping: weights go from the page cache to the GPU with one host
/// copy), small ones directly (pageable sources are staged by the driver before the call
/// returns, so the host memory may be freed afterwards).
pub fn upload(gpu: &Arc<Gpu>, bytes: &[u8]) -> Result<DeviceBuffer> {
    crate::stats::UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = gpu.alloc.alloc(bytes.len())?;
    if gpu.alloc.capturing() {
        // A copy queued on the recording stream would become a graph node that re-reads the
        // host memory at every replay: copy now, synchronously (outside the recording; the
        // stream is non-blocking), so the graph sees a constant.
        if !bytes.is_empty() {
            gpu.bind()?;
            // SAFETY: d holds at least bytes.len() bytes.
            unsafe { result::memcpy_htod_sync(d.ptr, bytes) }
                .map_err(|e| cuda_err("copying to the GPU", e))?;
        }
        return Ok(d);
    }
    if gpu.alloc.staging.upload(d.ptr, bytes)? {
        return Ok(d);
    }
    if !bytes.is_empty() {
        gpu.bind()?;
        // SAFETY: d holds at least bytes.len() bytes.
        unsafe { result::memcpy_htod_async(d.ptr, bytes, gpu.stream.cu_stream()) }
            .map_err(|e| cuda_err("copying to the GPU", e))?;
    }
    Ok(d)
}

pub fn input(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<DevIn> {
    let keep = device_bytes(gpu, &x.buffer)?;
    Ok(DevIn {
        ptr: keep.ptr,
        offset: x.offset as i64,
        lay: Lay::new(&x.shape, &x.strides)?,
        dtype: x.dtype,
        _keep: keep,
    })
}

/// A fresh row-contiguous device array and its address.
pub fn output(gpu: &Arc<Gpu>, shape: &[usize], dtype: Dtype) -> Result<(ArrayData, u64)> {
    let n: usize = shape.iter().product();
    let len = n * dtype.size();
    let d = Arc::new(gpu.alloc.alloc(len)?);
    let ptr = d.ptr;
    let buf = Buffer::on_device(len, BACKEND, gpu.index, d);
    Ok((ArrayData::contiguous(Arc::new(buf), shape, dtype), ptr))
}

/// A row-contiguous device copy of `x` (kernels that want plain rows call this first).
pub fn contiguous_input(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<(ArrayData, DevIn)> {
    let d = if Lay::new(&x.shape, &x.strides)?.is_contiguous() {
        x.clone()
    } else {
        crate::ops::elementwise::copy(gpu, x, x.dtype)?
    };
    let i = input(gpu, &d)?;
    Ok((d, i))
}

/// Test helper: an f32 host array (as a backend receives it) holding `v`.
#[cfg(test)]
pub(crate) fn host_f32(v: &[f32], shape: &[usize]) -> ArrayData {
    rmlx_core::Array::from_slice(v, shape)
        .and_then(|a| a.data())
        .expect("a host array")
}
