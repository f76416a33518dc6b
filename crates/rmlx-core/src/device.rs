//! Devices, streams and the scoped defaults (`with mx.stream(s)` in MLX).

use std::cell::RefCell;
use std::sync::RwLock;

/// The kind of processor a stream runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    Cpu,
    Gpu,
}

/// A processor: the CPU, or GPU number `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    pub kind: DeviceType,
    pub index: usize,
}

impl Device {
    pub const fn cpu() -> Device {
        Device {
            kind: DeviceType::Cpu,
            index: 0,
        }
    }
    pub const fn gpu(index: usize) -> Device {
        Device {
            kind: DeviceType::Gpu,
            index,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceType::Cpu => write!(f, "cpu"),
            DeviceType::Gpu => write!(f, "gpu({})", self.index),
        }
    }
}

/// An ordered queue of work on one device. Ops record the stream they were built on; `eval`
/// runs each node on its stream's backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    pub device: Device,
    pub index: usize,
}

impl Stream {
    pub const fn new(device: Device, index: usize) -> Stream {
        Stream { device, index }
    }
    pub const fn cpu() -> Stream {
        Stream::new(Device::cpu(), 0)
    }
}

static DEFAULT_DEVICE: RwLock<Option<Device>> = RwLock::new(None);

thread_local! {
    static STREAM_SCOPE: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// The process-wide default device. Unset, it is the CPU (a GPU backend may set itself the
/// default when it registers a device).
pub fn default_device() -> Device {
    DEFAULT_DEVICE
        .read()
        .ok()
        .and_then(|d| *d)
        .unwrap_or(Device::cpu())
}

pub fn set_default_device(d: Device) {
    if let Ok(mut g) = DEFAULT_DEVICE.write() {
        *g = Some(d);
    }
}

/// The stream new ops are built on: the innermost `with_stream` scope of this thread, else
/// stream 0 of the default device.
pub fn default_stream() -> Stream {
    STREAM_SCOPE
        .with(|s| s.borrow().last().copied())
        .unwrap_or_else(|| Stream::new(default_device(), 0))
}

/// The device ops built now run on: [`default_stream`]'s, so `with_device` / `with_stream`
/// scopes count ([`default_device`] is the process-wide setting alone, as MLX's). Ask this,
/// not `default_device()`, when choosing how to compute something.
pub fn current_device() -> Device {
    default_stream().device
}

/// Runs `f` with `s` as the default stream on this thread (MLX's `with mx.stream(s)`).
pub fn with_stream<R>(s: Stream, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            pop_stream();
        }
    }
    push_stream(s);
    let _pop = Pop;
    f()
}

/// Makes `s` this thread's default stream until the matching [`pop_stream`]: for scopes that
/// are not closures (Python's `with mx.stream(s):` block). Prefer [`with_stream`] in Rust.
pub fn push_stream(s: Stream) {
    STREAM_SCOPE.with(|st| st.borrow_mut().push(s));
}

/// Ends the innermost [`push_stream`] scope of this thread; returns its stream.
pub fn pop_stream() -> Option<Stream> {
    STREAM_SCOPE.with(|st| st.borrow_mut().pop())
}

/// Runs `f` with stream 0 of device `d` as the default.
pub fn with_device<R>(d: Device, f: impl FnOnce() -> R) -> R {
    with_stream(Stream::new(d, 0), f)
}
