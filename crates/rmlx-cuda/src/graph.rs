//! Recording a step as a CUDA graph and replaying it.
//!
//! A decode step of a small model is hundreds of tiny kernels; launched one by one from the
//! host, each costs more host time (graph build, kernel lookup, argument packing, the launch
//! call) than the GPU needs to run it. Recorded once with stream capture and replayed with one
//! `cuGraphLaunch`, the step costs the GPU's time only.
//!
//! A replay re-runs the same kernels on the same addresses with the same scalar arguments, so
//! whatever changes between steps must live in device memory: the caller writes it with
//! [`StepGraph::write`] before [`StepGraph::replay`] (a token id, a position) and reads
//! results with [`StepGraph::read`] or [`StepGraph::snapshot`]. While recording:
//! - nothing executes: arrays evaluated inside get device buffers that the first replay fills;
//! - host data the step needs (constants) is uploaded synchronously, so it is in device
//!   memory before any replay, and reading GPU data back is an error;
//! - every block allocated belongs to the graph's pool and every older buffer its kernels
//!   touch (weights, caches) is kept alive, so no replay can write memory that was handed to
//!   someone else.

use crate::alloc::{Capture, DeviceBuffer};
use crate::context::{cuda_err, gpu, Gpu};
use crate::data::BACKEND;
use cudarc::driver::{result, sys};
use rmlx_core::{Array, ArrayData, Buffer, Error, Result};
use std::sync::Arc;

/// A recorded step, ready to replay.
pub struct StepGraph {
    gpu: Arc<Gpu>,
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    kernels: usize,
    _capture: Capture,
}

// SAFETY: the graph handles are only used with this device's context bound, under the calls
// below; CUDA graph objects may be used from any thread (not concurrently, which `&self`
// methods never do on the exec: launches are ordered on the one stream).
unsafe impl Send for StepGraph {}
unsafe impl Sync for StepGraph {}

/// Records what `f` queues on GPU `index` (typically: build a step's arrays and `eval` them)
/// as a graph. Returns the graph and `f`'s result; nothing has run yet: call
/// [`StepGraph::replay`]. If `f` fails, or does something a recording cannot hold (reading
/// GPU data back), the recording is dropped and the error returned; the device stays usable.
pub fn record<T>(index: usize, f: impl FnOnce() -> Result<T>) -> Result<(StepGraph, T)> {
    // No other thread may evaluate while the stream is captured: its kernels would land in
    // this graph. (Other threads' reads and allocations wait in the allocator.)
    rmlx_core::transforms::with_eval_lock(|| record_locked(index, f))
}

fn record_locked<T>(index: usize, f: impl FnOnce() -> Result<T>) -> Result<(StepGraph, T)> {
    let g = gpu(index)?;
    g.synchronize()?;
    g.bind()?;
    let stream = g.stream.cu_stream();
    g.alloc.begin_capture();
    // SAFETY: the stream is valid; relaxed mode lets other threads make unrelated driver calls.
    if let Err(e) = unsafe {
        result::stream::begin_capture(
            stream,
            sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
        )
    } {
        g.alloc.end_capture();
        return Err(cuda_err("starting a CUDA graph recording", e));
    }
    let out = f();
    // SAFETY: ends the capture begun above (also after a failure, so the stream is usable).
    let ended = unsafe { result::stream::end_capture(stream) };
    let capture = g.alloc.end_capture();
    let graph = match (out.as_ref(), ended) {
        (Ok(_), Ok(graph)) => graph,
        (Ok(_), Err(e)) => return Err(cuda_err("ending a CUDA graph recording", e)),
        (Err(_), Ok(graph)) => {
            // SAFETY: a graph the capture returned, not used elsewhere.
            let _ = unsafe { result::graph::destroy(graph) };
            return Err(out.err().expect("checked"));
        }
        (Err(_), Err(_)) => return Err(out.err().expect("checked")),
    };
    let capture = capture.ok_or_else(|| Error::runtime("cuda", "graph recording state lost"))?;
    let mut n = 0usize;
    // SAFETY: a null node array asks only for the count.
    unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(|e| cuda_err("counting a graph's nodes", e))?;
    // SAFETY: graph is a valid, complete graph.
    let exec = match unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
    {
        Ok(x) => x,
        Err(e) => {
            // SAFETY: as above.
            let _ = unsafe { result::graph::destroy(graph) };
            return Err(cuda_err("instantiating a CUDA graph", e));
        }
    };
    Ok((
        StepGraph {
            gpu: g,
            graph,
            exec,
            kernels: n,
            _capture: capture,
        },
        out?,
    ))
}

/// The device copy of an evaluated array: its block and the byte offset of element 0.
fn device_of(g: &Arc<Gpu>, a: &Array, what: &str) -> Result<(Arc<DeviceBuffer>, usize, usize)> {
    let d: ArrayData = a.data()?;
    if !d.is_contiguous() {
        return Err(Error::invalid(
            "cuda graph",
            format!("{what} must be row-contiguous"),
        ));
    }
    let b: &Buffer = &d.buffer;
    let dev = b
        .find_copy::<DeviceBuffer>(BACKEND, g.index)
        .ok_or_else(|| {
            Error::invalid(
                "cuda graph",
                format!(
                    "{what} has no copy on gpu({}): use it in the recorded step",
                    g.index
                ),
            )
        })?;
    Ok((dev, d.offset * d.dtype.size(), d.numel() * d.dtype.size()))
}

impl StepGraph {
    /// Kernels (and copies) in the graph.
    pub fn kernels(&self) -> usize {
        self.kernels
    }

    /// `op` on this graph's stream, with the context bound, under the evaluation lock: a stream
    /// operation of this thread (the transfer that finds an array's device copy included) must
    /// not land in another thread's recording.
    fn on_stream<T>(&self, op: impl FnOnce(sys::CUstream) -> Result<T>) -> Result<T> {
        rmlx_core::transforms::with_eval_lock(|| {
            self.gpu.bind()?;
            op(self.gpu.stream.cu_stream())
        })
    }

    /// Queues one replay.
    pub fn replay(&self) -> Result<()> {
        self.on_stream(|st| {
            // SAFETY: exec is a valid instantiated graph; the stream belongs to its context.
            unsafe { result::graph::launch(self.exec, st) }
                .map_err(|e| cuda_err("replaying a CUDA graph", e))
        })
    }

    /// Queues a write of `bytes` into `a`'s device copy (an input the recorded step read),
    /// ordered before the next replay. `a`'s host bytes, if any, become stale: keep such
    /// inputs private to the code that replays.
    pub fn write(&self, a: &Array, bytes: &[u8]) -> Result<()> {
        self.on_stream(|st| {
            let (dev, off, len) = device_of(&self.gpu, a, "a graph input")?;
            if bytes.len() != len {
                return Err(Error::invalid(
                    "cuda graph",
                    format!("writing {} bytes into an input of {len} bytes", bytes.len()),
                ));
            }
            // SAFETY: the block holds off + len bytes; small pageable sources are staged by the
            // driver before the call returns.
            unsafe { result::memcpy_htod_async(dev.ptr + off as u64, bytes, st) }
                .map_err(|e| cuda_err("writing a graph input", e))
        })
    }

    /// Waits for queued work and copies `a`'s device bytes (a result of the recorded step)
    /// into `dst`.
    pub fn read(&self, a: &Array, dst: &mut [u8]) -> Result<()> {
        self.on_stream(|st| {
            let (dev, off, len) = device_of(&self.gpu, a, "a graph output")?;
            if dst.len() != len {
                return Err(Error::invalid(
                    "cuda graph",
                    format!("reading an output of {len} bytes into {} bytes", dst.len()),
                ));
            }
            // SAFETY: the copy is ordered after the replay on the stream, and waited for.
            unsafe { result::memcpy_dtoh_async(dst, dev.ptr + off as u64, st) }
                .map_err(|e| cuda_err("reading a graph output", e))?;
            self.gpu.synchronize()
        })
    }

    /// A new device-only array holding a copy of `a` (a result of the recorded step) as the
    /// last replay leaves it; later replays do not change it.
    pub fn snapshot(&self, a: &Array) -> Result<Array> {
        self.on_stream(|st| {
            let (dev, off, len) = device_of(&self.gpu, a, "a graph output")?;
            let (out, ptr) = crate::data::output(&self.gpu, a.shape(), a.dtype())?;
            if len > 0 {
                // SAFETY: both blocks hold len bytes; ordered on the one stream.
                unsafe { result::memcpy_dtod_async(ptr, dev.ptr + off as u64, len, st) }
                    .map_err(|e| cuda_err("copying a graph output", e))?;
            }
            Ok(Array::from_data(out))
        })
    }
}

impl Drop for StepGraph {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        // Replays may still be queued: they must finish before the pool's memory is reused.
        let _ = self.gpu.synchronize();
        // SAFETY: handles created in `record`, destroyed once.
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}
