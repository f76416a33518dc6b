//! Host memory behind arrays: aligned heap allocations or views into a mapped file, plus the
//! slots where device backends keep their copies (unified-memory semantics).

use crate::error::{Error, Result};
use std::alloc::Layout;
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const ALIGN: usize = 64;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static CACHE_LIMIT: AtomicUsize = AtomicUsize::new(4 << 30);
static CACHE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Freed large allocations kept for reuse, as (len, address): a fresh allocation of a large
/// array costs a page fault per 4 KiB, which makes elementwise ops several times slower than
/// memory bandwidth; MLX's allocator keeps a cache for the same reason.
static CACHE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
/// Allocations below this size go straight to the system allocator (it recycles them well).
const CACHE_MIN: usize = 1 << 16;

/// Bytes held in the allocation cache (freed, kept for reuse; not counted as active).
pub fn cache_memory() -> usize {
    CACHE_BYTES.load(Ordering::Relaxed)
}
/// Caps the allocation cache; returns the previous cap.
pub fn set_cache_limit(bytes: usize) -> usize {
    let old = CACHE_LIMIT.swap(bytes, Ordering::Relaxed);
    trim_cache(bytes);
    old
}
/// Returns every cached allocation to the system.
pub fn clear_cache() {
    trim_cache(0);
}

fn trim_cache(keep: usize) {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    while CACHE_BYTES.load(Ordering::Relaxed) > keep {
        let Some((len, addr)) = c.pop() else { break };
        CACHE_BYTES.fetch_sub(len, Ordering::Relaxed);
        // SAFETY: cached entries were allocated in alloc_inner with this layout.
        unsafe {
            std::alloc::dealloc(
                addr as *mut u8,
                Layout::from_size_align_unchecked(len, ALIGN),
            )
        }
    }
}

fn take_cached(len: usize) -> Option<*mut u8> {
    if len < CACHE_MIN {
        return None;
    }
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let i = c.iter().rposition(|(l, _)| *l == len)?;
    let (_, addr) = c.swap_remove(i);
    CACHE_BYTES.fetch_sub(len, Ordering::Relaxed);
    Some(addr as *mut u8)
}

/// Bytes held by live host allocations made by rmlx (mapped files are not counted: the page
/// cache owns them).
pub fn active_memory() -> usize {
    ACTIVE.load(Ordering::Relaxed)
}
/// The largest `active_memory` seen since start or the last `reset_peak_memory`.
pub fn peak_memory() -> usize {
    PEAK.load(Ordering::Relaxed)
}
pub fn reset_peak_memory() {
    PEAK.store(ACTIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
/// Caps host allocations; one that would pass the cap fails with an out-of-memory error.
/// Returns the previous limit.
pub fn set_memory_limit(bytes: usize) -> usize {
    LIMIT.swap(bytes, Ordering::Relaxed)
}
pub fn memory_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Something that owns mapped bytes (a `memmap2::Mmap`, or any byte container).
pub trait MappedBytes: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
}
impl MappedBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

enum Host {
    Owned {
        ptr: *mut u8,
        len: usize,
    },
    Mapped {
        src: Arc<dyn MappedBytes>,
        offset: usize,
        len: usize,
    },
}

/// A device backend's copy of a buffer: (backend name, device index, the backend's handle).
type DeviceCopy = (&'static str, usize, Arc<dyn Any + Send + Sync>);

/// A block of host memory, immutable once filled and shared between array views.
pub struct Buffer {
    host: Host,
    /// Copies made by device backends, keyed by backend name and device index; each backend
    /// downcasts its own entry. Filled on first use on that device, dropped with the buffer.
    device_copies: Mutex<Vec<DeviceCopy>>,
}

// SAFETY: the owned pointer is uniquely owned by this Buffer and only written through
// `as_mut_slice` by the kernel that creates it, before the buffer is shared.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// An uninitialized-to-zero aligned allocation of `len` bytes, counted against the limit.
    pub fn alloc(len: usize) -> Result<Buffer> {
        Self::alloc_inner(len, true)
    }

    /// Like `alloc`, but leaves the bytes as the allocator gave them (the kernel overwrites all).
    pub fn alloc_uninit(len: usize) -> Result<Buffer> {
        Self::alloc_inner(len, false)
    }

    fn alloc_inner(len: usize, zero: bool) -> Result<Buffer> {
        let prev = ACTIVE.fetch_add(len, Ordering::Relaxed);
        let now = prev + len;
        if now > LIMIT.load(Ordering::Relaxed) {
            ACTIVE.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::oom(
                "alloc",
                format!(
                    "allocating {len} bytes would pass the memory limit of {} bytes ({prev} in use); raise it with set_memory_limit",
                    LIMIT.load(Ordering::Relaxed)
                ),
            ));
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        let ptr = if len == 0 {
            ALIGN as *mut u8
        } else if let Some(p) = take_cached(len) {
            if zero {
                // SAFETY: p is valid for len bytes.
                unsafe { std::ptr::write_bytes(p, 0, len) }
            }
            p
        } else {
            let layout = Layout::from_size_align(len, ALIGN)
                .map_err(|e| Error::oom("alloc", format!("{len} bytes: {e}")))?;
            // SAFETY: layout has non-zero size.
            let p = unsafe {
                if zero {
                    std::alloc::alloc_zeroed(layout)
                } else {
                    std::alloc::alloc(layout)
                }
            };
            if p.is_null() {
                ACTIVE.fetch_sub(len, Ordering::Relaxed);
                return Err(Error::oom(
                    "alloc",
                    format!("the system refused {len} bytes"),
                ));
            }
            p
        };
        Ok(Buffer {
            host: Host::Owned { ptr, len },
            device_copies: Mutex::new(Vec::new()),
        })
    }

    /// Wraps `len` bytes at `offset` of a mapping; no data is copied.
    pub fn mapped(src: Arc<dyn MappedBytes>, offset: usize, len: usize) -> Result<Buffer> {
        let total = src.bytes().len();
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(Error::io(
                "mapped",
                format!(
                    "bytes {offset}..{} lie past the end of the {total}-byte file",
                    offset.saturating_add(len)
                ),
            ));
        }
        Ok(Buffer {
            host: Host::Mapped { src, offset, len },
            device_copies: Mutex::new(Vec::new()),
        })
    }

    pub fn len(&self) -> usize {
        match self.host {
            Host::Owned { len, .. } | Host::Mapped { len, .. } => len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_mapped(&self) -> bool {
        matches!(self.host, Host::Mapped { .. })
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.host {
            // SAFETY: ptr is valid for len bytes for the lifetime of self.
            Host::Owned { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Host::Mapped { src, offset, len } => &src.bytes()[*offset..*offset + *len],
        }
    }

    /// Mutable access for the kernel that fills a freshly allocated buffer. Panics on a mapped
    /// buffer, which is read-only by construction.
    #[allow(clippy::mut_from_ref)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.host {
            // SAFETY: &mut self guarantees exclusive access.
            Host::Owned { ptr, len } => unsafe { std::slice::from_raw_parts_mut(*ptr, *len) },
            Host::Mapped { .. } => panic!("mapped buffers are read-only"),
        }
    }

    /// The copy a device backend keeps for this buffer, creating it with `make` on first use.
    pub fn device_copy<T: Any + Send + Sync>(
        &self,
        backend: &'static str,
        device: usize,
        make: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Arc<T>> {
        let mut slots = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
        for (b, d, v) in slots.iter() {
            if *b == backend && *d == device {
                if let Ok(t) = v.clone().downcast::<T>() {
                    return Ok(t);
                }
            }
        }
        let t = Arc::new(make(self.as_slice())?);
        slots.push((backend, device, t.clone()));
        Ok(t)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Host::Owned { ptr, len } = self.host {
            ACTIVE.fetch_sub(len, Ordering::Relaxed);
            if len >= CACHE_MIN
                && CACHE_BYTES.load(Ordering::Relaxed) + len <= CACHE_LIMIT.load(Ordering::Relaxed)
            {
                CACHE
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((len, ptr as usize));
                CACHE_BYTES.fetch_add(len, Ordering::Relaxed);
            } else if len > 0 {
                // SAFETY: allocated in alloc_inner with the same layout.
                unsafe { std::alloc::dealloc(ptr, Layout::from_size_align_unchecked(len, ALIGN)) }
            }
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Buffer({} bytes{})",
            self.len(),
            if self.is_mapped() { ", mapped" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_counted() {
        // Other tests allocate concurrently, so only the peak (monotone) is checked exactly;
        // the limit is tested in its own process (tests/memory_limit.rs of the facade).
        let b = Buffer::alloc(1 << 20).unwrap();
        assert!(peak_memory() >= 1 << 20);
        assert!(active_memory() >= 1 << 20);
        drop(b);
    }

    #[test]
    fn mapped_range_checked() {
        let src: Arc<dyn MappedBytes> = Arc::new(vec![0u8; 16]);
        assert!(Buffer::mapped(src.clone(), 8, 8).is_ok());
        assert!(Buffer::mapped(src, 8, 9).is_err());
    }
}
