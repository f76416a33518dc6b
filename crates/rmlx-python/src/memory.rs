//! The memory functions (`mx.get_active_memory`, `mx.set_memory_limit`, ...): host memory
//! held by rmlx's allocator. GPU memory has the same accounting in the CUDA backend.

use pyo3::prelude::*;

/// Bytes held by live arrays (mapped files are not counted).
#[pyfunction]
fn get_active_memory() -> usize {
    rmlx::active_memory()
}

/// The largest active memory since the start or the last `reset_peak_memory`.
#[pyfunction]
fn get_peak_memory() -> usize {
    rmlx::peak_memory()
}

/// Starts peak tracking again from the current active memory.
#[pyfunction]
fn reset_peak_memory() {
    rmlx::reset_peak_memory()
}

/// Bytes kept in the allocation cache for reuse.
#[pyfunction]
fn get_cache_memory() -> usize {
    rmlx::cache_memory()
}

/// Caps allocations: one that would pass `limit` bytes raises MemoryError. Returns the
/// previous limit.
#[pyfunction]
fn set_memory_limit(limit: usize) -> usize {
    rmlx::set_memory_limit(limit)
}

/// The current cap on host allocations (see `set_memory_limit`).
#[pyfunction]
fn get_memory_limit() -> usize {
    rmlx::memory_limit()
}

/// Caps the allocation cache; returns the previous cap.
#[pyfunction]
fn set_cache_limit(limit: usize) -> usize {
    rmlx::set_cache_limit(limit)
}

/// Accepted for MLX compatibility (wired memory is a Metal notion); returns 0.
#[pyfunction]
fn set_wired_limit(limit: usize) -> usize {
    let _ = limit;
    0
}

/// Returns every cached allocation to the system.
#[pyfunction]
fn clear_cache() {
    rmlx::clear_cache()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(get_active_memory, m)?)?;
    m.add_function(wrap_pyfunction!(get_peak_memory, m)?)?;
    m.add_function(wrap_pyfunction!(reset_peak_memory, m)?)?;
    m.add_function(wrap_pyfunction!(get_cache_memory, m)?)?;
    m.add_function(wrap_pyfunction!(set_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(get_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(set_cache_limit, m)?)?;
    m.add_function(wrap_pyfunction!(set_wired_limit, m)?)?;
    m.add_function(wrap_pyfunction!(clear_cache, m)?)?;
    Ok(())
}
