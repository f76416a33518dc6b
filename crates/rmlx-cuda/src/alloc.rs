//! A size-bucketed caching allocator over plain device allocations (`cuMemAlloc`, no managed
//! memory). Freed blocks go back to a per-size free list and are reused by the next request of
//! the same bucket; `cuMemAlloc`/`cuMemFree` synchronise the device, so a decode step that
//! allocated fresh memory for every op would crawl.

use crate::context::cuda_err;
use cudarc::driver::{result, sys, CudaContext, CudaStream};
use rmlx_core::{DeviceMemory, Error, Result};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The bucket a request of `len` bytes is served from: powers of two up to 1 MiB, then
/// multiples of a sixteenth of the next power of two (at most 12.5% waste).
pub fn bucket(len: usize) -> usize {
    let len = len.max(256);
    if len <= 1 << 20 {
        return len.next_power_of_two();
    }
    let step = len.next_power_of_two() / 16;
    len.div_ceil(step) * step
}

/// MLX's default cap: most of the device, leaving room for the driver and cuBLAS.
fn default_limit(total: usize) -> usize {
    total / 20 * 19
}

pub struct Allocator {
    /// Pinned buffers for transfers of this device.
    pub staging: crate::staging::Staging,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    free: Mutex<HashMap<usize, Vec<sys::CUdeviceptr>>>,
    active: AtomicUsize,
    peak: AtomicUsize,
    cached: AtomicUsize,
    limit: AtomicUsize,
    cache_limit: AtomicUsize,
    /// Set while a CUDA graph is being recorded (`graph.rs`): every block handed out then
    /// belongs to that graph's pool, and nothing is returned to the driver.
    capturing: AtomicBool,
    capture: Mutex<Option<Capture>>,
    /// Signalled when a recording ends (other threads wait for it, see `wait_capture`).
    capture_ended: std::sync::Condvar,
}

/// What a recording collects: the pool its allocations belong to, and every buffer allocated
/// before it that its kernels touch (weights, KV caches), kept alive while the graph exists.
pub struct Capture {
    /// The recording thread: only its work belongs to the graph.
    pub owner: std::thread::ThreadId,
    pub pool: Arc<GraphPool>,
    pub keep: Vec<Arc<DeviceBuffer>>,
}

/// Blocks owned by a recorded graph. A graph replays into the same addresses, so memory it
/// used must never be handed to anyone else while it may run again: blocks allocated during
/// recording come back here when their arrays drop, and go back to the allocator only when
/// the graph (and every array still using one of them) is gone.
pub struct GraphPool {
    alloc: Arc<Allocator>,
    blocks: Mutex<Vec<(sys::CUdeviceptr, usize)>>,
}

impl Drop for GraphPool {
    fn drop(&mut self) {
        let blocks = std::mem::take(self.blocks.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (ptr, size) in blocks {
            self.alloc.release(ptr, size);
        }
    }
}

impl Allocator {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Allocator {
        let total = ctx.total_mem().unwrap_or(usize::MAX);
        let limit = rmlx_core::memory::requested_memory_limit().unwrap_or(default_limit(total));
        Allocator {
            staging: crate::staging::Staging::new(ctx.clone(), stream.clone()),
            ctx,
            stream,
            free: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            cache_limit: AtomicUsize::new(usize::MAX),
            capturing: AtomicBool::new(false),
            capture: Mutex::new(None),
            capture_ended: std::sync::Condvar::new(),
        }
    }

    /// Whether a graph is being recorded on this device.
    pub fn capturing(&self) -> bool {
        self.capturing.load(Ordering::Acquire)
    }

    /// Whether this thread is recording a graph. Another thread's recording is waited out
    /// first: its stream is being captured, so this thread's work must not reach it.
    pub fn wait_capture(&self) -> bool {
        if !self.capturing() {
            return false;
        }
        let me = std::thread::current().id();
        let mut c = self.capture.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match c.as_ref() {
                Some(cap) if cap.owner == me => return true,
                Some(_) => {
                    c = self
                        .capture_ended
                        .wait(c)
                        .unwrap_or_else(|e| e.into_inner())
                }
                None => return false,
            }
        }
    }

    /// Starts collecting allocations and touched buffers for a graph recording.
    pub fn begin_capture(self: &Arc<Self>) {
        let pool = Arc::new(GraphPool {
            alloc: self.clone(),
            blocks: Mutex::new(Vec::new()),
        });
        *self.capture.lock().unwrap_or_else(|e| e.into_inner()) = Some(Capture {
            owner: std::thread::current().id(),
            pool,
            keep: Vec::new(),
        });
        self.capturing.store(true, Ordering::Release);
    }

    /// Ends a recording, handing over what it collected.
    pub fn end_capture(&self) -> Option<Capture> {
        self.capturing.store(false, Ordering::Release);
        self.capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Records that the graph being recorded reads or writes `b` (no-op otherwise).
    pub fn touch(&self, b: &Arc<DeviceBuffer>) {
        if !self.capturing() || b.pool.is_some() {
            return;
        }
        if let Some(c) = self
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            if !c.keep.iter().any(|k| Arc::ptr_eq(k, b)) {
                c.keep.push(b.clone());
            }
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    pub fn reset_peak(&self) {
        self.peak.store(self.active(), Ordering::Relaxed)
    }
    pub fn cached(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }
    /// Caps the device memory; `usize::MAX` (no cap asked for) restores the default.
    pub fn set_limit(&self, bytes: usize) -> usize {
        let bytes = if bytes == usize::MAX {
            default_limit(self.ctx.total_mem().unwrap_or(usize::MAX))
        } else {
            bytes
        };
        self.limit.swap(bytes, Ordering::Relaxed)
    }
    pub fn set_cache_limit(&self, bytes: usize) -> usize {
        let old = self.cache_limit.swap(bytes, Ordering::Relaxed);
        self.trim(bytes);
        old
    }
    /// Returns every cached block to the driver.
    pub fn clear_cache(&self) {
        self.trim(0)
    }

    fn trim(&self, keep: usize) {
        if self.capturing() {
            return; // freeing synchronises, which a recording stream does not allow
        }
        let _ = self.ctx.bind_to_thread();
        // Blocks in the cache may still be read by queued kernels.
        let _ = self.stream.synchronize();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for (size, list) in free.iter_mut() {
            while self.cached() > keep {
                let Some(p) = list.pop() else { break };
                // SAFETY: p came from malloc_sync and is not in use.
                let _ = unsafe { result::free_sync(p) };
                self.cached.fetch_sub(*size, Ordering::Relaxed);
            }
        }
        free.retain(|_, l| !l.is_empty());
    }

    /// A block of at least `len` bytes. Out of memory is an error saying how much was asked and
    /// how much is free, after the cache was given back and the request retried.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<DeviceBuffer> {
        let size = bucket(len);
        let prev = self.active.fetch_add(size, Ordering::Relaxed);
        if prev + size > self.limit.load(Ordering::Relaxed) {
            self.active.fetch_sub(size, Ordering::Relaxed);
            return Err(Error::oom(
                "cuda alloc",
                format!(
                    "allocating {len} bytes would pass the GPU memory limit of {} bytes ({prev} in use); raise it with set_memory_limit",
                    self.limit.load(Ordering::Relaxed)
                ),
            ));
        }
        self.peak.fetch_max(prev + size, Ordering::Relaxed);
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.get_mut(&size).and_then(|l| l.pop())
        };
        let ptr = match reused {
            Some(p) => {
                self.cached.fetch_sub(size, Ordering::Relaxed);
                p
            }
            None => match self.fresh(size) {
                Ok(p) => p,
                Err(e) => {
                    self.active.fetch_sub(size, Ordering::Relaxed);
                    return Err(e);
                }
            },
        };
        let pool = if self.wait_capture() {
            let c = self.capture.lock().unwrap_or_else(|e| e.into_inner());
            c.as_ref().map(|c| c.pool.clone())
        } else {
            None
        };
        Ok(DeviceBuffer {
            ptr,
            len,
            size,
            alloc: self.clone(),
            pool,
        })
    }

    fn fresh(&self, size: usize) -> Result<sys::CUdeviceptr> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))?;
        // SAFETY: a plain device allocation.
        match unsafe { result::malloc_sync(size) } {
            Ok(p) => return Ok(p),
            Err(e) if e.0 != sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
                // a sticky error from an earlier kernel fault, not a lack of memory
                return Err(cuda_err(
                    &format!(
                        "allocating {size} bytes: the GPU is unusable after an earlier failure"
                    ),
                    e,
                ));
            }
            Err(_) => {}
        }
        self.clear_cache();
        // SAFETY: as above.
        unsafe { result::malloc_sync(size) }.map_err(|e| {
            let (free, total) = result::mem_get_info().unwrap_or((0, 0));
            Error::oom(
                "cuda alloc",
                format!("the GPU refused {size} bytes ({e}): {free} of {total} bytes free"),
            )
        })
    }

    fn release(&self, ptr: sys::CUdeviceptr, size: usize) {
        self.active.fetch_sub(size, Ordering::Relaxed);
        // cuMemFree synchronises, which a stream being recorded does not allow: cache instead.
        if self.capturing() || self.cached() + size <= self.cache_limit.load(Ordering::Relaxed) {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(size)
                .or_default()
                .push(ptr);
            self.cached.fetch_add(size, Ordering::Relaxed);
        } else {
            let _ = self.ctx.bind_to_thread();
            let _ = self.stream.synchronize();
            // SAFETY: ptr came from malloc_sync; the stream is idle.
            let _ = unsafe { result::free_sync(ptr) };
        }
    }
}

/// Device bytes owned by an rmlx buffer; returned to the cache when dropped.
pub struct DeviceBuffer {
    pub ptr: sys::CUdeviceptr,
    pub len: usize,
    size: usize,
    alloc: Arc<Allocator>,
    /// The recorded graph this block belongs to, if it was allocated during a recording.
    pool: Option<Arc<GraphPool>>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        match &self.pool {
            Some(p) => p
                .blocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((self.ptr, self.size)),
            None => self.alloc.release(self.ptr, self.size),
        }
    }
}

impl DeviceMemory for DeviceBuffer {
    fn download(&self, dst: &mut [u8]) -> Result<()> {
        crate::stats::DOWNLOADS.fetch_add(1, Ordering::Relaxed);
        if self.alloc.wait_capture() {
            return Err(Error::runtime(
                "cuda",
                "reading GPU data on the host while a CUDA graph is being recorded (the recorded step must not depend on values read back)",
            ));
        }
        let n = dst.len().min(self.len);
        if n == 0 {
            return Ok(());
        }
        let a = &self.alloc;
        if a.staging.download(&mut dst[..n], self.ptr)? {
            return Ok(());
        }
        a.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))?;
        // SAFETY: ptr is valid for len bytes; the copy is ordered after the kernels that wrote
        // it, and we wait for it before returning.
        unsafe { result::memcpy_dtoh_async(&mut dst[..n], self.ptr, a.stream.cu_stream()) }
            .map_err(|e| cuda_err("copying a result to the host", e))?;
        a.stream
            .synchronize()
            .map_err(|e| cuda_err("GPU work before a copy to the host failed", e))
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_cover_and_bound_waste() {
        for len in [
            1usize,
            255,
            256,
            257,
            4095,
            1 << 20,
            (1 << 20) + 1,
            3 << 20,
            1_000_000_007,
        ] {
            let b = bucket(len);
            assert!(b >= len, "{len} -> {b}");
            if len > 1 << 20 {
                assert!((b - len) as f64 <= len as f64 * 0.125 + 1.0, "{len} -> {b}");
            }
        }
        assert_eq!(bucket(3 << 20), 3 << 20);
    }
}
