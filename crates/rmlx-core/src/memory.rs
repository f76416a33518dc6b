//! The process-wide memory functions (MLX's `get_active_memory`, `set_memory_limit`, ...): the
//! host allocator of `buffer.rs` plus each device backend's own allocator (a GPU's memory), so
//! that the same numbers mean the same thing whichever device a program runs on.

use crate::backend::backends;
use crate::buffer;

/// What a backend's own allocator holds, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub active: usize,
    /// The largest `active` since start or the last reset.
    pub peak: usize,
    /// Freed, kept for reuse.
    pub cached: usize,
}

/// The memory functions a backend's allocator follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryControl {
    ResetPeak,
    ClearCache,
    SetLimit(usize),
    SetCacheLimit(usize),
}

fn device_sum(f: impl Fn(MemoryStats) -> usize) -> usize {
    backends().iter().map(|b| f(b.memory_stats())).sum()
}

fn control(c: MemoryControl) {
    for b in backends() {
        b.memory_control(c);
    }
}

/// Bytes held by live arrays: host allocations (mapped files are not counted: the page cache
/// owns them) plus device memory.
pub fn active_memory() -> usize {
    buffer::host_active_memory() + device_sum(|s| s.active)
}

/// The sum of each allocator's (host, each device) largest active bytes since start or the last
/// `reset_peak_memory`: the peak of the whole process when one device does the work.
pub fn peak_memory() -> usize {
    buffer::host_peak_memory() + device_sum(|s| s.peak)
}

pub fn reset_peak_memory() {
    buffer::reset_host_peak_memory();
    control(MemoryControl::ResetPeak);
}

/// Bytes freed but kept for reuse by the allocators.
pub fn cache_memory() -> usize {
    buffer::host_cache_memory() + device_sum(|s| s.cached)
}

/// Returns every cached allocation, host and device, to the system.
pub fn clear_cache() {
    buffer::clear_host_cache();
    control(MemoryControl::ClearCache);
}

/// Caps each allocator's cache; returns the host's previous cap.
pub fn set_cache_limit(bytes: usize) -> usize {
    control(MemoryControl::SetCacheLimit(bytes));
    buffer::set_host_cache_limit(bytes)
}

/// Caps the memory of the host and of each device (each on its own): an allocation that would
/// pass its cap fails with an out-of-memory error. Returns the host's previous cap.
pub fn set_memory_limit(bytes: usize) -> usize {
    control(MemoryControl::SetLimit(bytes));
    buffer::set_host_memory_limit(bytes)
}

/// The host's cap (`usize::MAX`: none).
pub fn memory_limit() -> usize {
    buffer::host_memory_limit()
}

/// The cap the program asked for with `set_memory_limit`, if it did (the host's, which it
/// sets too); a device backend applies it to devices it opens later.
pub fn requested_memory_limit() -> Option<usize> {
    match memory_limit() {
        usize::MAX => None,
        b => Some(b),
    }
}
