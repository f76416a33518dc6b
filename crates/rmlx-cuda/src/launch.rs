//! Launching a kernel: arguments packed by value, grid sizes, and the strided-layout struct the
//! kernels index with.

use crate::context::{cuda_err, Gpu};
use cudarc::driver::{result, sys, CudaFunction};
use rmlx_core::{Error, Result};
use std::ffi::c_void;

/// Dimensions a strided layout can have after collapsing contiguous axes (matches
/// `MAX_DIMS` in the prelude).
pub const MAX_DIMS: usize = 10;

/// A strided layout passed by value: `struct Lay` in the prelude.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Lay {
    pub shape: [i64; MAX_DIMS],
    pub strides: [i64; MAX_DIMS],
    pub ndim: i32,
    pub _pad: i32,
}

impl Lay {
    /// Collapses axes that are contiguous with each other (and drops size-1 axes), so that
    /// most layouts index with one or two divisions per element.
    pub fn new(shape: &[usize], strides: &[isize]) -> Result<Lay> {
        let mut dims: Vec<(i64, i64)> = Vec::new();
        for (&n, &s) in shape.iter().zip(strides) {
            if n == 1 {
                continue;
            }
            if let Some(last) = dims.last_mut() {
                if last.1 == s as i64 * n as i64 {
                    last.0 *= n as i64;
                    last.1 = s as i64;
                    continue;
                }
            }
            dims.push((n as i64, s as i64));
        }
        if dims.len() > MAX_DIMS {
            return Err(Error::invalid(
                "cuda",
                format!(
                    "a strided layout of {} non-mergeable axes exceeds the GPU kernels' limit of {MAX_DIMS}; make the array contiguous first",
                    dims.len()
                ),
            ));
        }
        let mut l = Lay {
            shape: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
            ndim: dims.len() as i32,
            _pad: 0,
        };
        for (i, (n, s)) in dims.into_iter().enumerate() {
            l.shape[i] = n;
            l.strides[i] = s;
        }
        Ok(l)
    }

    /// Whether element i sits at `i` (after the offset): one merged axis of stride 1, or none.
    pub fn is_contiguous(&self) -> bool {
        self.ndim == 0 || (self.ndim == 1 && self.strides[0] == 1)
    }
}

/// Kernel arguments, each kept in its own 8-byte-aligned box so its address is stable.
#[derive(Default)]
pub struct Args {
    vals: Vec<Box<[u64]>>,
}

impl Args {
    pub fn new() -> Args {
        Args::default()
    }
    /// Appends a plain-data value (a pointer as u64, an integer, a float, a `Lay`).
    pub fn push<T: Copy>(&mut self, v: T) -> &mut Args {
        let words = std::mem::size_of::<T>().div_ceil(8).max(1);
        let mut b = vec![0u64; words].into_boxed_slice();
        // SAFETY: b has room for T; T is plain data (Copy, repr(C) where it is a struct).
        unsafe { std::ptr::write_unaligned(b.as_mut_ptr() as *mut T, v) };
        self.vals.push(b);
        self
    }
    pub fn ptr(&mut self, p: u64) -> &mut Args {
        self.push(p)
    }
    pub fn i64(&mut self, v: i64) -> &mut Args {
        self.push(v)
    }
    pub fn i32(&mut self, v: i32) -> &mut Args {
        self.push(v)
    }
    pub fn u32(&mut self, v: u32) -> &mut Args {
        self.push(v)
    }
    pub fn f32(&mut self, v: f32) -> &mut Args {
        self.push(v)
    }
}

/// Grid and block sizes.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared: u32,
}

impl Grid {
    /// A 1-D grid stride loop over `n` elements.
    pub fn elems(n: usize) -> Grid {
        let block = 256u32;
        let blocks = n.div_ceil(block as usize).clamp(1, 65_535 * 32) as u32;
        Grid {
            grid: (blocks, 1, 1),
            block: (block, 1, 1),
            shared: 0,
        }
    }
    /// One block of `threads` per row.
    pub fn rows(rows: usize, threads: u32) -> Grid {
        Grid {
            grid: (rows.clamp(1, i32::MAX as usize) as u32, 1, 1),
            block: (threads, 1, 1),
            shared: 0,
        }
    }
}

impl Gpu {
    /// Queues `f` on this device's stream. Launch failures name the kernel; faults inside it
    /// surface at the next synchronisation.
    pub fn launch(&self, f: &CudaFunction, name: &str, g: Grid, args: &mut Args) -> Result<()> {
        if g.grid.0 == 0 || crate::profile::skipped(name) {
            return Ok(());
        }
        self.bind()?;
        let timed = if self.alloc.capturing() {
            None
        } else {
            crate::profile::begin(&self.stream)
        };
        let mut ptrs: Vec<*mut c_void> = args
            .vals
            .iter_mut()
            .map(|b| b.as_mut_ptr() as *mut c_void)
            .collect();
        if self.pdl {
            // A programmatic dependent of the previous kernel: scheduled while it finishes;
            // the kernel itself waits for it before touching memory (prelude.cuh).
            let mut attr = sys::CUlaunchAttribute {
                id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                pad: [0; 4],
                // SAFETY: an all-zero value is valid for every member of the union
                value: unsafe { std::mem::zeroed() },
            };
            attr.value.programmaticStreamSerializationAllowed = 1;
            let cfg = sys::CUlaunchConfig {
                gridDimX: g.grid.0,
                gridDimY: g.grid.1,
                gridDimZ: g.grid.2,
                blockDimX: g.block.0,
                blockDimY: g.block.1,
                blockDimZ: g.block.2,
                sharedMemBytes: g.shared,
                hStream: self.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            // SAFETY: as below; `cfg` and `attr` outlive the call.
            unsafe {
                sys::cuLaunchKernelEx(
                    &cfg,
                    f.cu_function(),
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
            .result()
            .map_err(|e| cuda_err(&format!("launching {name}"), e))?;
        } else {
            // SAFETY: argument count and types match the kernel's signature, which the caller
            // generated together with this argument list.
            unsafe {
                result::launch_kernel(
                    f.cu_function(),
                    g.grid,
                    g.block,
                    g.shared,
                    self.stream.cu_stream(),
                    &mut ptrs,
                )
            }
            .map_err(|e| cuda_err(&format!("launching {name}"), e))?;
        }
        crate::profile::end(&self.stream, name, timed);
        if crate::stats::sync_each_kernel() && !self.alloc.capturing() {
            // Debug mode: a fault is reported by the kernel (and so the op) that caused it.
            self.stream
                .synchronize()
                .map_err(|e| cuda_err(&format!("kernel {name} failed"), e))?;
        }
        Ok(())
    }
}
