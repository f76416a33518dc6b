//! The backend trait and registry. A backend runs primitives for one kind of device; the core
//! never names a backend's types.

use crate::array::ArrayData;
use crate::device::{Device, DeviceType};
use crate::error::{Error, Result};
use crate::primitive::{OutputSpec, Primitive};
use std::sync::{Arc, RwLock};

/// What a device backend provides. `eval` is one exhaustive `match` on [`Primitive`] in each
/// backend (views never arrive: the core handles them).
pub trait Backend: Send + Sync {
    /// A short name (`"cpu"`, `"cuda"`), used in messages and to key device copies.
    fn name(&self) -> &'static str;
    /// Whether the backend has a kernel for `prim`. Fused ops in `fast` ask this when they are
    /// built and fall back to their composition from simpler ops when the answer is no.
    fn supports(&self, prim: &Primitive) -> bool;
    /// Runs `prim` on evaluated inputs on device `index` and returns the output. The inputs are
    /// given by value: one whose buffer is held by nothing else (`Arc::get_mut` succeeds) may be
    /// written in place and returned (MLX's buffer donation; `slice_update` on a KV cache).
    fn eval(
        &self,
        index: usize,
        prim: &Primitive,
        inputs: Vec<ArrayData>,
        out: &OutputSpec,
    ) -> Result<ArrayData>;
    /// Runs a multi-output primitive (`Array::make_multi`): one output per entry of `outs`,
    /// in order. Inputs come by value as in `eval`. Backends without multi-output kernels keep
    /// the default, and report `supports(prim) == false` so the op composes instead.
    fn eval_multi(
        &self,
        _index: usize,
        prim: &Primitive,
        _inputs: Vec<ArrayData>,
        outs: &[OutputSpec],
    ) -> Result<Vec<ArrayData>> {
        Err(Error::runtime(
            prim.name(),
            format!(
                "the {} backend has no kernel for this {}-output op",
                self.name(),
                outs.len()
            ),
        ))
    }
    /// Waits for all queued work on device `index`.
    fn synchronize(&self, _index: usize) -> Result<()> {
        Ok(())
    }
    /// How many devices of this kind exist (CPU: 1).
    fn device_count(&self) -> usize {
        1
    }
    /// Memory held by this backend's own allocator (a GPU's device memory), over the devices
    /// opened so far. The CPU backend allocates host `Buffer`s and has none of its own.
    fn memory_stats(&self) -> crate::memory::MemoryStats {
        crate::memory::MemoryStats::default()
    }
    /// Applies one of the process-wide memory functions to this backend's allocator.
    fn memory_control(&self, _control: crate::memory::MemoryControl) {}
}

static REGISTRY: RwLock<Vec<(DeviceType, Arc<dyn Backend>)>> = RwLock::new(Vec::new());

/// Registers (or replaces) the backend for a device type.
pub fn register_backend(kind: DeviceType, backend: Arc<dyn Backend>) {
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    r.retain(|(k, _)| *k != kind);
    r.push((kind, backend));
}

/// Every registered backend.
pub(crate) fn backends() -> Vec<Arc<dyn Backend>> {
    let r = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    r.iter().map(|(_, b)| b.clone()).collect()
}

/// The backend that runs work for `device`.
pub fn backend_for(device: Device) -> Result<Arc<dyn Backend>> {
    let r = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    r.iter().find(|(k, _)| *k == device.kind).map(|(_, b)| b.clone()).ok_or_else(|| {
        Error::runtime(
            "eval",
            match device.kind {
                DeviceType::Cpu => "no CPU backend is registered: use the `rmlx` crate (it registers rmlx-cpu) or call rmlx_cpu::register()".to_string(),
                DeviceType::Gpu => format!("{device} is not available: no GPU backend is registered (is a CUDA device present?)"),
            },
        )
    })
}

/// Whether a backend for `device` exists and has that device index.
pub fn is_available(device: Device) -> bool {
    backend_for(device)
        .map(|b| device.index < b.device_count())
        .unwrap_or(false)
}
