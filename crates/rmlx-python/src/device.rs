//! Devices and streams: `mx.cpu`, `mx.gpu`, `mx.Device`, `mx.Stream`, `mx.default_device`,
//! `mx.set_default_device`, `with mx.stream(s):`, and the `stream=` argument every op takes.

use crate::errors::guard;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rmlx::{Device, DeviceType, Stream};

/// The kind of a device (`mx.cpu`, `mx.gpu`).
#[pyclass(name = "DeviceType", module = "rmlx.core", eq, eq_int, hash, frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum PyDeviceType {
    cpu,
    gpu,
}

impl PyDeviceType {
    fn kind(self) -> DeviceType {
        match self {
            PyDeviceType::cpu => DeviceType::Cpu,
            PyDeviceType::gpu => DeviceType::Gpu,
        }
    }
}

/// A processor: `Device(mx.cpu)` or `Device(mx.gpu, index)`.
#[pyclass(name = "Device", module = "rmlx.core", eq, hash, frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyDevice(pub Device);

#[pymethods]
impl PyDevice {
    #[new]
    #[pyo3(signature = (r#type, index = 0))]
    fn new(r#type: PyDeviceType, index: usize) -> Self {
        PyDevice(Device {
            kind: r#type.kind(),
            index,
        })
    }

    /// The device's kind, `mx.cpu` or `mx.gpu`.
    #[getter]
    fn r#type(&self) -> PyDeviceType {
        match self.0.kind {
            DeviceType::Cpu => PyDeviceType::cpu,
            DeviceType::Gpu => PyDeviceType::gpu,
        }
    }

    #[getter]
    fn index(&self) -> usize {
        self.0.index
    }

    fn __repr__(&self) -> String {
        let k = match self.0.kind {
            DeviceType::Cpu => "cpu",
            DeviceType::Gpu => "gpu",
        };
        format!("Device({k}, {})", self.0.index)
    }
}

/// An ordered queue of work on a device; ops built inside `with mx.stream(s):` (or given
/// `stream=s`) run on it.
#[pyclass(name = "Stream", module = "rmlx.core", eq, hash, frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyStream(pub Stream);

#[pymethods]
impl PyStream {
    #[new]
    #[pyo3(signature = (device, index = 0))]
    fn new(device: &Bound<'_, PyAny>, index: usize) -> PyResult<Self> {
        Ok(PyStream(Stream::new(extract_device(device)?, index)))
    }

    #[getter]
    fn device(&self) -> PyDevice {
        PyDevice(self.0.device)
    }

    #[getter]
    fn index(&self) -> usize {
        self.0.index
    }

    fn __repr__(&self) -> String {
        format!(
            "Stream({}, {})",
            PyDevice(self.0.device).__repr__(),
            self.0.index
        )
    }
}

/// A `Device` or a `DeviceType` (index 0).
pub fn extract_device(ob: &Bound<'_, PyAny>) -> PyResult<Device> {
    if let Ok(d) = ob.extract::<PyDevice>() {
        return Ok(d.0);
    }
    if let Ok(t) = ob.extract::<PyDeviceType>() {
        return Ok(Device {
            kind: t.kind(),
            index: 0,
        });
    }
    Err(PyTypeError::new_err(format!(
        "expected a Device, mx.cpu or mx.gpu, got {}",
        ob.get_type().name()?
    )))
}

/// The `stream=` argument: a `Stream`, a `Device` or a `DeviceType`.
pub fn extract_stream(ob: &Bound<'_, PyAny>) -> PyResult<Stream> {
    if let Ok(s) = ob.extract::<PyStream>() {
        return Ok(s.0);
    }
    extract_device(ob)
        .map(|d| Stream::new(d, 0))
        .map_err(|_| PyTypeError::new_err("[stream] expected a Stream, a Device, mx.cpu or mx.gpu"))
}

/// Builds an op with `f` on the stream given as `stream=` (the default stream when None),
/// mapping errors and stopping panics.
pub fn on<T, E: crate::errors::IntoPyErr>(
    stream: Option<&Bound<'_, PyAny>>,
    f: impl FnOnce() -> Result<T, E>,
) -> PyResult<T> {
    match stream.filter(|s| !s.is_none()) {
        None => guard(f),
        Some(s) => {
            let s = extract_stream(s)?;
            guard(|| rmlx::with_stream(s, f))
        }
    }
}

fn check_available(d: Device) -> PyResult<()> {
    if rmlx::is_available(d) {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "[device] {} is not available on this machine (no CUDA device found or its driver \
             could not be loaded); use mx.cpu",
            d
        )))
    }
}

/// The device ops run on when no stream is given.
#[pyfunction]
fn default_device() -> PyDevice {
    PyDevice(rmlx::default_device())
}

/// Sets the device ops run on when no stream is given (a `Device`, `mx.cpu` or `mx.gpu`).
#[pyfunction]
fn set_default_device(device: &Bound<'_, PyAny>) -> PyResult<()> {
    let d = extract_device(device)?;
    check_available(d)?;
    rmlx::set_default_device(d);
    Ok(())
}

/// The stream ops run on by default: the innermost `with mx.stream(...)` of this thread, else
/// stream 0 of `device` (the default device when None).
#[pyfunction]
#[pyo3(signature = (device = None))]
fn default_stream(device: Option<&Bound<'_, PyAny>>) -> PyResult<PyStream> {
    Ok(PyStream(match device {
        None => rmlx::default_stream(),
        Some(d) => Stream::new(extract_device(d)?, 0),
    }))
}

/// A stream on `device`. Streams of one device share its queue in this version (every
/// backend runs one in-order queue per device).
#[pyfunction]
fn new_stream(device: &Bound<'_, PyAny>) -> PyResult<PyStream> {
    let d = extract_device(device)?;
    check_available(d)?;
    Ok(PyStream(Stream::new(d, 0)))
}

/// Whether `device` can run work here.
#[pyfunction]
fn is_available(device: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(rmlx::is_available(extract_device(device)?))
}

/// Waits until the work queued on `stream` (default: the default stream) has finished.
#[pyfunction]
#[pyo3(signature = (stream = None))]
fn synchronize(py: Python<'_>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let s = match stream {
        None => rmlx::default_stream(),
        Some(s) => extract_stream(s)?,
    };
    py.detach(|| guard(|| rmlx::backend_for(s.device).and_then(|b| b.synchronize(s.device.index))))
}

/// The context manager `mx.stream(s)` returns: ops built inside the block run on `s`.
#[pyclass(name = "StreamContext", module = "rmlx.core", unsendable)]
pub struct StreamContext {
    stream: Stream,
}

#[pymethods]
impl StreamContext {
    fn __enter__(&self) -> PyStream {
        rmlx::push_stream(self.stream);
        PyStream(self.stream)
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        rmlx::pop_stream();
        false
    }
}

/// `with mx.stream(s):` runs the ops built in the block on `s` (a `Stream`, `Device`,
/// `mx.cpu` or `mx.gpu`).
#[pyfunction]
fn stream(s: &Bound<'_, PyAny>) -> PyResult<StreamContext> {
    let stream = extract_stream(s)?;
    check_available(stream.device)?;
    Ok(StreamContext { stream })
}

/// Number of devices of a kind: 1 CPU, and the CUDA devices present.
#[pyfunction]
fn device_count(device_type: PyDeviceType) -> usize {
    match device_type {
        PyDeviceType::cpu => 1,
        PyDeviceType::gpu => (0..)
            .take_while(|&i| rmlx::is_available(Device::gpu(i)))
            .count(),
    }
}

/// A description of a device (the default device when None): its name and kind.
#[pyfunction]
#[pyo3(signature = (d = None))]
fn device_info<'py>(
    py: Python<'py>,
    d: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let dev = match d.filter(|d| !d.is_none()) {
        Some(d) => extract_device(d)?,
        None => rmlx::default_device(),
    };
    check_available(dev)?;
    let info = pyo3::types::PyDict::new(py);
    info.set_item("device_name", dev.to_string())?;
    info.set_item(
        "architecture",
        match dev.kind {
            DeviceType::Cpu => std::env::consts::ARCH,
            DeviceType::Gpu => "cuda",
        },
    )?;
    Ok(info)
}

/// Metal is Apple's: never available here.
#[pyfunction]
fn metal_is_available() -> bool {
    false
}

/// Whether a CUDA device is present (the GPU backend of rmlx).
#[pyfunction]
fn cuda_is_available() -> bool {
    rmlx::is_available(Device::gpu(0))
}

/// Returns `fun` unchanged: rmlx does not trace or fuse functions, and a compiled function
/// computes the same values as the original, so code written for `mx.compile` runs as is.
#[pyfunction]
#[pyo3(signature = (fun, inputs = None, outputs = None, shapeless = false))]
fn compile<'py>(
    fun: Bound<'py, PyAny>,
    inputs: Option<&Bound<'py, PyAny>>,
    outputs: Option<&Bound<'py, PyAny>>,
    shapeless: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let _ = (inputs, outputs, shapeless);
    if !fun.is_callable() {
        return Err(PyTypeError::new_err("[compile] fun must be callable"));
    }
    Ok(fun)
}

/// Does nothing: `compile` never compiles (see `compile`).
#[pyfunction]
fn disable_compile() {}

/// Does nothing: `compile` never compiles (see `compile`).
#[pyfunction]
fn enable_compile() {}

/// The default device at import, as MLX picks it: the GPU where one is present, else the CPU.
/// `RMLX_DEFAULT_DEVICE=cpu` (or `gpu`) overrides; asking for an absent GPU is an import error.
fn initial_default_device() -> PyResult<Device> {
    let gpu = Device::gpu(0);
    match std::env::var("RMLX_DEFAULT_DEVICE").ok().as_deref() {
        None | Some("") => Ok(if rmlx::is_available(gpu) {
            gpu
        } else {
            Device::cpu()
        }),
        Some("cpu") => Ok(Device::cpu()),
        Some("gpu") => check_available(gpu).map(|_| gpu),
        Some(other) => Err(PyValueError::new_err(format!(
            "[device] RMLX_DEFAULT_DEVICE={other:?} is not a device; use cpu or gpu"
        ))),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    rmlx::set_default_device(initial_default_device()?);
    m.add_class::<PyDeviceType>()?;
    m.add_class::<PyDevice>()?;
    m.add_class::<PyStream>()?;
    m.add_class::<StreamContext>()?;
    m.add("cpu", PyDeviceType::cpu)?;
    m.add("gpu", PyDeviceType::gpu)?;
    m.add_function(wrap_pyfunction!(default_device, m)?)?;
    m.add_function(wrap_pyfunction!(set_default_device, m)?)?;
    m.add_function(wrap_pyfunction!(default_stream, m)?)?;
    m.add_function(wrap_pyfunction!(new_stream, m)?)?;
    m.add_function(wrap_pyfunction!(is_available, m)?)?;
    m.add_function(wrap_pyfunction!(synchronize, m)?)?;
    m.add_function(wrap_pyfunction!(stream, m)?)?;
    m.add_function(wrap_pyfunction!(device_count, m)?)?;
    m.add_function(wrap_pyfunction!(device_info, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(disable_compile, m)?)?;
    m.add_function(wrap_pyfunction!(enable_compile, m)?)?;
    // mx.metal and mx.cuda: which accelerator is present.
    let py = m.py();
    for (name, f) in [
        ("metal", wrap_pyfunction!(metal_is_available, m)?),
        ("cuda", wrap_pyfunction!(cuda_is_available, m)?),
    ] {
        let sub = PyModule::new(py, name)?;
        sub.add("is_available", f)?;
        crate::add_submodule(m, &sub, &format!("rmlx.core.{name}"))?;
    }
    Ok(())
}
