//! Counters that make the backend's promises testable: data moves once, kernels compile once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub(crate) static UPLOADS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static DOWNLOADS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static COMPILES: AtomicUsize = AtomicUsize::new(0);
pub(crate) static LAST_BLOCK_MERGES: AtomicUsize = AtomicUsize::new(0);
pub(crate) static MERGE_LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Host-to-device copies of buffers so far (each buffer moves at most once per device).
pub fn uploads() -> usize {
    UPLOADS.load(Ordering::Relaxed)
}
/// Device-to-host copies of buffers so far.
pub fn downloads() -> usize {
    DOWNLOADS.load(Ordering::Relaxed)
}
/// NVRTC compilations so far (kernels found in the disk cache do not count).
pub fn compiles() -> usize {
    COMPILES.load(Ordering::Relaxed)
}
/// Split attention launches so far whose splits their own last blocks merged, and those merged
/// by a second launch (`ops::sdpa::with_splits`).
pub fn split_merges() -> (usize, usize) {
    (
        LAST_BLOCK_MERGES.load(Ordering::Relaxed),
        MERGE_LAUNCHES.load(Ordering::Relaxed),
    )
}

/// `RMLX_CUDA_SYNC=1`: wait after every kernel, so an error inside one is reported with the
/// kernel's name and the line that built the op, instead of at a later copy (slow; debugging).
pub fn sync_each_kernel() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::env::flag(&ON, "RMLX_CUDA_SYNC", false)
}
