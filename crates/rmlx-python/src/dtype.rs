//! `mx.Dtype` and the dtype constants (`mx.float32`, `mx.bfloat16`, ...).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use rmlx::Dtype;

/// An array element type, as `mlx.core.Dtype`.
#[pyclass(name = "Dtype", module = "rmlx.core", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyDtype(pub Dtype);

#[pymethods]
impl PyDtype {
    /// Bytes per element.
    #[getter]
    fn size(&self) -> usize {
        self.0.size()
    }

    fn __repr__(&self) -> String {
        format!("rmlx.core.{}", self.0.name())
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// Reads a dtype argument: an `mx.Dtype`, a name (`"float32"`, `"bf16"`), or a NumPy dtype /
/// scalar type (by its name).
pub fn extract_dtype(ob: &Bound<'_, PyAny>) -> PyResult<Dtype> {
    if let Ok(d) = ob.cast::<PyDtype>() {
        return Ok(d.get().0);
    }
    let name: String = if let Ok(s) = ob.extract::<String>() {
        s
    } else if let Ok(n) = ob.getattr("__name__").and_then(|n| n.extract::<String>()) {
        // NumPy scalar types: np.float32, np.int64, ...
        n
    } else if let Ok(n) = ob.getattr("name").and_then(|n| n.extract::<String>()) {
        // np.dtype('float32')
        n
    } else {
        return Err(PyTypeError::new_err(format!(
            "[dtype] expected an rmlx.core.Dtype such as rmlx.core.float32, got {}",
            ob.get_type().name()?
        )));
    };
    Dtype::parse(&name).map_err(crate::errors::to_py)
}

/// Optional dtype keyword argument.
pub fn opt_dtype(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dtype>> {
    ob.filter(|o| !o.is_none()).map(extract_dtype).transpose()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDtype>()?;
    for d in Dtype::ALL {
        m.add(d.name(), PyDtype(d))?;
    }
    Ok(())
}
