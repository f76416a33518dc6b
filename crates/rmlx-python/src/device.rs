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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
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
    Ok(())
}
