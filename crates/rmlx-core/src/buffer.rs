//! Host memory behind arrays: aligned heap allocations or views into a mapped file, plus the
//! slots where device backends keep their copies (unified-memory semantics).

use crate::error::{Error, Result};
use std::alloc::Layout;
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Bytes held in the host allocation cache (freed, kept for reuse; not counted as active).
pub fn host_cache_memory() -> usize {
    CACHE_BYTES.load(Ordering::Relaxed)
}
/// Caps the host allocation cache; returns the previous cap.
pub fn set_host_cache_limit(bytes: usize) -> usize {
    let old = CACHE_LIMIT.swap(bytes, Ordering::Relaxed);
    trim_cache(bytes);
    old
}
/// Returns every cached host allocation to the system.
pub fn clear_host_cache() {
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
pub fn host_active_memory() -> usize {
    ACTIVE.load(Ordering::Relaxed)
}
/// The largest `host_active_memory` seen since start or the last `reset_host_peak_memory`.
pub fn host_peak_memory() -> usize {
    PEAK.load(Ordering::Relaxed)
}
pub fn reset_host_peak_memory() {
    PEAK.store(ACTIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
/// Caps host allocations; one that would pass the cap fails with an out-of-memory error.
/// Returns the previous limit.
pub fn set_host_memory_limit(bytes: usize) -> usize {
    LIMIT.swap(bytes, Ordering::Relaxed)
}
pub fn host_memory_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Something that owns mapped bytes (a `memmap2::Mmap`, or any byte container).
pub trait MappedBytes: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
    /// A hint that `bytes()[offset..offset + len]` will not be read again soon (a tensor that
    /// was converted on load): a file mapping may drop those pages from the process's memory;
    /// they are read from the file again if they are touched.
    fn release(&self, _offset: usize, _len: usize) {}
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

/// A device backend's copy of a buffer's bytes. The first copy of a buffer made on a device
/// (a GPU op's output) may be its only one: the host bytes are then downloaded on first use.
pub trait DeviceMemory: Any + Send + Sync {
    /// Copies all bytes to `dst` (as long as the buffer), waiting for pending device work.
    fn download(&self, dst: &mut [u8]) -> Result<()>;
    /// `self` as `Any`, so a backend can recover its own type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// (backend name, device index, the backend's copy).
type DeviceCopy = (&'static str, usize, Arc<dyn DeviceMemory>);

/// A block of memory behind arrays, shared between views and immutable once filled (except by
/// the one kernel that owns it uniquely). It lives on the host, on devices, or both: unified
/// memory semantics, where each side fetches the bytes the first time it needs them.
pub struct Buffer {
    len: usize,
    /// The host bytes: set at creation for host-made buffers, on first host read for
    /// device-made ones.
    host: OnceLock<Host>,
    /// Copies made by device backends, keyed by backend name and device index; each backend
    /// downcasts its own entry. Filled on first use on that device, dropped with the buffer.
    device_copies: Mutex<Vec<DeviceCopy>>,
    /// Serialises the download that fills `host` for a device-made buffer.
    download_lock: Mutex<()>,
}

// SAFETY: the owned pointer is uniquely owned by this Buffer and only written through
// `as_mut_slice` (which takes `&mut self`) by the kernel that creates or owns it.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

fn host_alloc(len: usize, zero: bool) -> Result<Host> {
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
        // Always zeroed: fresh large blocks come from the OS already zero (no extra pass), and
        // no buffer ever holds uninitialised bytes.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            ACTIVE.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::oom(
                "alloc",
                format!("the system refused {len} bytes"),
            ));
        }
        p
    };
    Ok(Host::Owned { ptr, len })
}

fn host_free(h: Host) {
    if let Host::Owned { ptr, len } = h {
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
            // SAFETY: allocated in host_alloc with the same layout.
            unsafe { std::alloc::dealloc(ptr, Layout::from_size_align_unchecked(len, ALIGN)) }
        }
    }
}

fn host_bytes(h: &Host) -> &[u8] {
    match h {
        // SAFETY: ptr is valid for len bytes while the Host lives.
        Host::Owned { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        Host::Mapped { src, offset, len } => &src.bytes()[*offset..*offset + *len],
    }
}

impl Buffer {
    fn with_host(len: usize, host: Host) -> Buffer {
        Buffer {
            len,
            host: OnceLock::from(host),
            device_copies: Mutex::new(Vec::new()),
            download_lock: Mutex::new(()),
        }
    }

    /// A zero-filled aligned host allocation of `len` bytes, counted against the limit.
    pub fn alloc(len: usize) -> Result<Buffer> {
        Ok(Self::with_host(len, host_alloc(len, true)?))
    }

    /// Like `alloc`, but a recycled block keeps its old bytes instead of being cleared (one
    /// write pass less): for kernels that overwrite every byte. Never uninitialised memory.
    pub fn alloc_for_overwrite(len: usize) -> Result<Buffer> {
        Ok(Self::with_host(len, host_alloc(len, false)?))
    }

    /// A buffer that exists only on a device (a GPU kernel's output); host bytes come on demand.
    pub fn on_device(
        len: usize,
        backend: &'static str,
        device: usize,
        mem: Arc<dyn DeviceMemory>,
    ) -> Buffer {
        Buffer {
            len,
            host: OnceLock::new(),
            device_copies: Mutex::new(vec![(backend, device, mem)]),
            download_lock: Mutex::new(()),
        }
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
        Ok(Self::with_host(len, Host::Mapped { src, offset, len }))
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_mapped(&self) -> bool {
        matches!(self.host.get(), Some(Host::Mapped { .. }))
    }
    /// Whether the host bytes are present (false for a device result not yet read back).
    pub fn is_on_host(&self) -> bool {
        self.host.get().is_some()
    }

    /// Makes the host bytes present, downloading them from a device copy if needed.
    pub fn ensure_host(&self) -> Result<()> {
        if self.host.get().is_some() {
            return Ok(());
        }
        let _g = self.download_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.host.get().is_some() {
            return Ok(());
        }
        let src = {
            let slots = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
            slots.first().map(|(_, _, m)| m.clone())
        };
        let Some(src) = src else {
            return Err(Error::runtime(
                "buffer",
                "a buffer has neither host bytes nor a device copy",
            ));
        };
        let mut h = host_alloc(self.len, false)?;
        if let Host::Owned { ptr, len } = &mut h {
            // SAFETY: freshly allocated, valid for len bytes, not yet shared.
            let dst = unsafe { std::slice::from_raw_parts_mut(*ptr, *len) };
            if let Err(e) = src.download(dst) {
                host_free(h);
                return Err(e);
            }
        }
        let _ = self.host.set(h);
        Ok(())
    }

    /// The host bytes, downloaded from the device first if this is a device result. A download
    /// failure (a CUDA error) panics here; evaluation calls [`Buffer::ensure_host`] first, so
    /// kernels and `to_vec` see errors as values.
    pub fn as_slice(&self) -> &[u8] {
        if let Err(e) = self.ensure_host() {
            panic!("reading a device buffer back to the host failed: {e}");
        }
        host_bytes(
            self.host
                .get()
                .expect("host bytes present after ensure_host"),
        )
    }

    /// Mutable host access for the kernel that fills a fresh buffer or owns it uniquely. Device
    /// copies become stale and are dropped. Panics on a mapped buffer (read-only).
    #[allow(clippy::mut_from_ref)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if let Err(e) = self.ensure_host() {
            panic!("reading a device buffer back to the host failed: {e}");
        }
        self.device_copies
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        match self.host.get_mut().expect("host bytes present") {
            // SAFETY: &mut self guarantees exclusive access.
            Host::Owned { ptr, len } => unsafe { std::slice::from_raw_parts_mut(*ptr, *len) },
            Host::Mapped { .. } => panic!("mapped buffers are read-only"),
        }
    }

    /// The copy a device backend keeps for this buffer, creating it with `make` from the host
    /// bytes on first use (downloading them from another device if they live only there).
    pub fn device_copy<T: DeviceMemory>(
        &self,
        backend: &'static str,
        device: usize,
        make: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Arc<T>> {
        if let Some(t) = self.find_copy::<T>(backend, device) {
            return Ok(t);
        }
        self.ensure_host()?;
        let t = Arc::new(make(self.as_slice())?);
        let mut slots = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
        slots.push((backend, device, t.clone()));
        Ok(t)
    }

    /// This backend's copy, if it has one.
    pub fn find_copy<T: DeviceMemory>(
        &self,
        backend: &'static str,
        device: usize,
    ) -> Option<Arc<T>> {
        let slots = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .find(|(b, d, _)| *b == backend && *d == device)
            .and_then(|(_, _, v)| v.clone().into_any().downcast::<T>().ok())
    }

    /// For a device kernel that writes a uniquely owned buffer in place: keeps only this
    /// backend's copy (returned) and drops the host bytes and other copies, now stale. None when
    /// the backend has no copy.
    pub fn take_for_device_write<T: DeviceMemory>(
        &mut self,
        backend: &'static str,
        device: usize,
    ) -> Option<Arc<T>> {
        let t = self.find_copy::<T>(backend, device)?;
        if let Some(h) = self.host.take() {
            host_free(h);
        }
        let slots = self
            .device_copies
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        slots.retain(|(b, d, _)| *b == backend && *d == device);
        Some(t)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            host_free(h);
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
        assert!(host_peak_memory() >= 1 << 20);
        assert!(host_active_memory() >= 1 << 20);
        drop(b);
    }

    #[test]
    fn mapped_range_checked() {
        let src: Arc<dyn MappedBytes> = Arc::new(vec![0u8; 16]);
        assert!(Buffer::mapped(src.clone(), 8, 8).is_ok());
        assert!(Buffer::mapped(src, 8, 9).is_err());
    }
}
