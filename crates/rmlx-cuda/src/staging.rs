//! Pinned (page-locked) host buffers for transfers. Copies from pageable memory run at a
//! fraction of the bus speed and serialise with the host; through two pinned buffers an upload
//! overlaps the host-side copy of one chunk with the DMA of the previous one, and a download
//! (logits every decode step) lands in pinned memory at full speed.

use crate::context::cuda_err;
use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream};
use rmlx_core::Result;
use std::sync::{Arc, Mutex};

/// Bytes per pinned buffer (two of them per device).
pub const CHUNK: usize = 8 << 20;
/// Below this, the copy's fixed cost dominates: pageable is as fast.
pub const MIN_STAGED: usize = 64 << 10;

struct Pinned {
    ptr: *mut u8,
    /// Marks when the device finished reading this buffer's last chunk.
    done: Option<CudaEvent>,
}

pub struct Staging {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    bufs: Mutex<Option<[Pinned; 2]>>,
}

// SAFETY: the pinned pointers are only used under the mutex.
unsafe impl Send for Staging {}
unsafe impl Sync for Staging {}

impl Staging {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Staging {
        Staging {
            ctx,
            stream,
            bufs: Mutex::new(None),
        }
    }

    fn with_bufs<T>(&self, f: impl FnOnce(&mut [Pinned; 2]) -> Result<T>) -> Result<Option<T>> {
        let mut g = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let alloc = || -> Option<Pinned> {
                // SAFETY: a plain pinned allocation, freed never (one pair per device).
                unsafe { result::malloc_host(CHUNK, 0) }
                    .ok()
                    .map(|p| Pinned {
                        ptr: p as *mut u8,
                        done: None,
                    })
            };
            match (alloc(), alloc()) {
                (Some(a), Some(b)) => *g = Some([a, b]),
                // no pinned memory to be had: callers fall back to pageable copies
                _ => return Ok(None),
            }
        }
        f(g.as_mut().expect("set above")).map(Some)
    }

    /// Host → device through the pinned buffers; false if staging is unavailable.
    pub fn upload(&self, dst: sys::CUdeviceptr, src: &[u8]) -> Result<bool> {
        if src.len() < MIN_STAGED {
            return Ok(false);
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))?;
        let r = self.with_bufs(|bufs| {
            for (i, chunk) in src.chunks(CHUNK).enumerate() {
                let b = &mut bufs[i % 2];
                if let Some(ev) = b.done.take() {
                    ev.synchronize()
                        .map_err(|e| cuda_err("waiting for a staged copy", e))?;
                }
                // SAFETY: b.ptr holds CHUNK bytes, not in use by the device (event waited).
                let pinned = unsafe { std::slice::from_raw_parts_mut(b.ptr, chunk.len()) };
                pinned.copy_from_slice(chunk);
                let off = (i * CHUNK) as u64;
                // SAFETY: dst holds src.len() bytes; the pinned source stays untouched until
                // its event completes.
                unsafe { result::memcpy_htod_async(dst + off, &*pinned, self.stream.cu_stream()) }
                    .map_err(|e| cuda_err("copying to the GPU", e))?;
                b.done = Some(
                    self.stream
                        .record_event(None)
                        .map_err(|e| cuda_err("recording a copy", e))?,
                );
            }
            Ok(())
        })?;
        Ok(r.is_some())
    }

    /// Device → host through a pinned buffer (waits for the device); false if unavailable.
    pub fn download(&self, dst: &mut [u8], src: sys::CUdeviceptr) -> Result<bool> {
        if dst.len() < MIN_STAGED {
            return Ok(false);
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))?;
        let r = self.with_bufs(|bufs| {
            let b = &mut bufs[0];
            if let Some(ev) = b.done.take() {
                ev.synchronize()
                    .map_err(|e| cuda_err("waiting for a staged copy", e))?;
            }
            for (i, out) in dst.chunks_mut(CHUNK).enumerate() {
                // SAFETY: b.ptr holds CHUNK bytes and is idle.
                let pinned = unsafe { std::slice::from_raw_parts_mut(b.ptr, out.len()) };
                let off = (i * CHUNK) as u64;
                // SAFETY: src holds dst.len() bytes; we wait before reading pinned.
                unsafe {
                    result::memcpy_dtoh_async(&mut *pinned, src + off, self.stream.cu_stream())
                }
                .map_err(|e| cuda_err("copying a result to the host", e))?;
                self.stream
                    .synchronize()
                    .map_err(|e| cuda_err("GPU work before a copy to the host failed", e))?;
                out.copy_from_slice(pinned);
            }
            Ok(())
        })?;
        Ok(r.is_some())
    }
}
