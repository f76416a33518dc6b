//! Arrival counters for kernels whose last block to finish does the launch's closing work (the
//! decode attention merging its key splits, `rd_merge_last` in sdpa.cuh), instead of a second
//! launch that waits for the whole grid. One device buffer of zeroed `u32` counters, handed out
//! round-robin; the last block of each launch sets its counter back to zero, so a range is
//! ready for its next user, a recorded graph's replay included.
//!
//! A range is reused only after the ring wraps, thousands of launches later on the device's one
//! stream, and kernels touch their counters only after their grid dependency wait, so two
//! launches never count on one counter at once.

use crate::context::cuda_err;
use cudarc::driver::{result, sys, CudaContext};
use rmlx_core::Result;
use std::sync::{Arc, Mutex};

/// Counters in the ring (64 KiB).
const CAPACITY: usize = 16 * 1024;

pub struct Tickets {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    next: Mutex<usize>,
}

impl Tickets {
    /// The ring, zeroed (before any kernel runs on this device).
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Tickets> {
        ctx.bind_to_thread()
            .map_err(|e| cuda_err("binding the context", e))?;
        let bytes = CAPACITY * 4;
        // SAFETY: a plain device allocation, then a synchronous memset of exactly its bytes.
        let ptr = unsafe { result::malloc_sync(bytes) }
            .map_err(|e| cuda_err("allocating the split merge counters", e))?;
        unsafe { result::memset_d8_sync(ptr, 0, bytes) }
            .map_err(|e| cuda_err("zeroing the split merge counters", e))?;
        Ok(Tickets {
            ctx: ctx.clone(),
            ptr,
            next: Mutex::new(0),
        })
    }

    /// The address of `n` zeroed counters for one launch, or `None` where `n` is more than the
    /// ring holds (the caller then merges in a separate launch).
    pub fn take(&self, n: usize) -> Option<u64> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (at, after) = place(*next, n)?;
        *next = after;
        Some(self.ptr + (at * 4) as u64)
    }
}

/// Where a range of `n` counters starts when the ring's next free one is `next`, and the next
/// free one after it: wrapping to the start where the range would pass the end.
fn place(next: usize, n: usize) -> Option<(usize, usize)> {
    if n == 0 || n > CAPACITY {
        return None;
    }
    let at = if next + n > CAPACITY { 0 } else { next };
    Some((at, at + n))
}

impl Drop for Tickets {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated in `new`, freed once; no kernel uses it once the device is gone.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{place, CAPACITY};

    /// The ring hands out consecutive disjoint ranges, wraps to its start where a range would
    /// pass the end, and refuses empty ranges and ranges larger than itself.
    #[test]
    fn ranges_are_disjoint_and_wrap() {
        assert_eq!(place(0, 100), Some((0, 100)));
        assert_eq!(place(100, 28), Some((100, 128)));
        assert_eq!(place(128, CAPACITY - 128), Some((128, CAPACITY)));
        assert_eq!(place(CAPACITY, 1), Some((0, 1)));
        assert_eq!(place(CAPACITY - 10, 11), Some((0, 11)));
        assert_eq!(place(5, CAPACITY), Some((0, CAPACITY)));
        assert_eq!(place(0, 0), None);
        assert_eq!(place(0, CAPACITY + 1), None);
    }
}
