//! One GPU's state: its CUDA context and stream, the caching allocator, the kernel cache and
//! the cuBLASLt handle. Created on first use of `Device::gpu(i)` and kept for the process.

use crate::alloc::Allocator;
use crate::kernels::KernelCache;
use cudarc::driver::{CudaContext, CudaStream};
use rmlx_core::{Error, Result};
use std::sync::{Arc, Mutex, OnceLock};

/// A CUDA driver error as an rmlx error naming what was being done.
pub(crate) fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::runtime("cuda", format!("{what}: {e}"))
}

pub struct Gpu {
    pub index: usize,
    pub ctx: Arc<CudaContext>,
    /// All work of this device runs in order on this one stream (MLX's default stream), so a
    /// freed buffer can be reused at once: later kernels are ordered after earlier readers.
    pub stream: Arc<CudaStream>,
    /// `sm_90`-style architecture name NVRTC compiles for.
    pub arch: String,
    pub name: String,
    pub alloc: Arc<Allocator>,
    pub kernels: KernelCache,
    /// Kernels launch as programmatic dependents of their predecessor (sm_90 and later;
    /// `RMLX_PDL=0` turns it off): see `rmlx_pdl_entry` in kernels/prelude.cuh.
    pub pdl: bool,
    /// Streaming multiprocessors.
    pub sms: usize,
    /// Shared memory of one SM, and the most one block may ask for (bytes).
    pub smem_per_sm: usize,
    pub smem_per_block_optin: usize,
    pub(crate) blas: Mutex<Option<crate::ops::matmul::BlasLt>>,
    /// Arrival counters of kernels that finish their launch in its last block.
    pub(crate) tickets: crate::tickets::Tickets,
}

impl Gpu {
    fn open(index: usize) -> Result<Arc<Gpu>> {
        let ctx =
            CudaContext::new(index).map_err(|e| cuda_err(&format!("opening gpu({index})"), e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_err("creating a stream", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("reading the compute capability", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let arch = format!("sm_{major}{minor}");
        let pdl = major >= 9 && crate::env::flag_value("RMLX_PDL", true);
        use cudarc::driver::sys::CUdevice_attribute as A;
        let attr = |a: A| ctx.attribute(a).map(|v| v.max(0) as usize).unwrap_or(0);
        let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).max(1);
        let smem_per_sm = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
        let smem_per_block_optin = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
        Ok(Arc::new(Gpu {
            pdl,
            sms,
            smem_per_sm,
            smem_per_block_optin,
            index,
            alloc: Arc::new(Allocator::new(ctx.clone(), stream.clone())),
            tickets: crate::tickets::Tickets::new(&ctx)?,
            kernels: KernelCache::new(arch.clone()),
            ctx,
            stream,
            arch,
            name,
            blas: Mutex::new(None),
        }))
    }

    /// Makes this device's context current on the calling thread (driver calls need it).
    pub fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))
    }

    /// Waits for all queued work; a kernel's asynchronous fault surfaces here.
    pub fn synchronize(&self) -> Result<()> {
        if self.alloc.wait_capture() {
            return Ok(()); // nothing runs while this thread records; replays are waited for
        }
        self.bind()?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err(&format!("gpu({}) work failed", self.index), e))
    }
}

/// Whether the CUDA driver library can be loaded and reports at least one device.
pub fn device_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        // SAFETY: only probes whether the shared library loads.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return 0;
        }
        std::panic::catch_unwind(|| {
            if cudarc::driver::result::init().is_err() {
                return 0;
            }
            cudarc::driver::result::device::get_count()
                .unwrap_or(0)
                .max(0) as usize
        })
        .unwrap_or(0)
    })
}

static GPUS: Mutex<Vec<Option<Arc<Gpu>>>> = Mutex::new(Vec::new());

/// The GPUs opened so far (memory statistics must not open one).
pub fn opened() -> Vec<Arc<Gpu>> {
    let g = GPUS.lock().unwrap_or_else(|e| e.into_inner());
    g.iter().flatten().cloned().collect()
}

/// The state of GPU `index`, opening it on first use.
pub fn gpu(index: usize) -> Result<Arc<Gpu>> {
    let n = device_count();
    if index >= n {
        return Err(Error::invalid(
            "gpu",
            if n == 0 {
                format!("gpu({index}) does not exist: no CUDA device was found (is the NVIDIA driver installed?)")
            } else {
                format!("gpu({index}) does not exist: this machine has {n} CUDA device(s), gpu(0)..gpu({})", n - 1)
            },
        ));
    }
    let mut g = GPUS.lock().unwrap_or_else(|e| e.into_inner());
    if g.len() < n {
        g.resize(n, None);
    }
    if let Some(d) = &g[index] {
        return Ok(d.clone());
    }
    let d = Gpu::open(index)?;
    g[index] = Some(d.clone());
    Ok(d)
}
