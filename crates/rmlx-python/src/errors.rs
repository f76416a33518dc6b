//! The one place where Rust errors become Python exceptions, and where panics stop.
//!
//! `[op]`-prefixed core messages pass through unchanged; the kind picks the class:
//! bad arguments → `ValueError`, unsupported dtypes → `TypeError`, allocation failures →
//! `MemoryError`, everything else (files, backends) → `RuntimeError`. A panic inside a binding
//! (a bug) becomes a `RuntimeError` naming it instead of PyO3's `PanicException`.

use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::PyErr;
use rmlx::Error;
use rmlx_lm::LmError;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A core error as the Python exception of its kind.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e.root() {
        Error::Invalid { .. } => PyValueError::new_err(msg),
        Error::Type { .. } => PyTypeError::new_err(msg),
        Error::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        Error::Io { .. } | Error::Runtime { .. } | Error::Eval { .. } => {
            PyRuntimeError::new_err(msg)
        }
    }
}

/// An LLM-runtime error: array errors by their kind, bad generation arguments as
/// `ValueError`, files and tokenizers as `RuntimeError`.
pub fn lm_to_py(e: LmError) -> PyErr {
    match e {
        LmError::Array(e) => to_py(e),
        LmError::Generate(_) | LmError::Config(_) => PyValueError::new_err(e.to_string()),
        e => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Anything the bindings produce that can become a `PyErr`.
pub trait IntoPyErr {
    fn into_py_err(self) -> PyErr;
}
impl IntoPyErr for Error {
    fn into_py_err(self) -> PyErr {
        to_py(self)
    }
}
impl IntoPyErr for LmError {
    fn into_py_err(self) -> PyErr {
        lm_to_py(self)
    }
}
impl IntoPyErr for rmlx_nn::Error {
    fn into_py_err(self) -> PyErr {
        lm_to_py(LmError::Nn(self))
    }
}
impl IntoPyErr for PyErr {
    fn into_py_err(self) -> PyErr {
        self
    }
}

/// Runs `f`, mapping its error and turning a panic into a `RuntimeError`, so no Rust panic
/// unwinds into the interpreter.
pub fn guard<T, E: IntoPyErr>(f: impl FnOnce() -> Result<T, E>) -> Result<T, PyErr> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(IntoPyErr::into_py_err),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(PyRuntimeError::new_err(format!(
                "internal error in rmlx (a bug, please report it): {what}"
            )))
        }
    }
}
