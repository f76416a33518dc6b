//! rmlx's Python module. This native module is `rmlx._core`, re-exported as `rmlx.core` with
//! `mlx.core`'s names and keyword arguments; `rmlx.lm` (Python, over `rmlx.core._lm`) follows
//! `mlx_lm`.
//!
//! Every binding builds its op inside [`device::on`] (the `stream=` argument, error mapping,
//! panic guard); evaluation releases the GIL.

mod args;
mod array;
mod conv;
mod convert;
mod device;
mod dtype;
mod errors;
mod fast;
mod indexing;
mod io;
mod linalg;
mod lm;
mod memory;
mod ops_elementwise;
mod ops_gather;
mod ops_reduce;
mod ops_shape;
mod quantized;
mod random;

use array::{eval_py, PyArray};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Registers `m` as attribute `m.name` of `parent` and in `sys.modules` under `qualname`, so
/// both `mx.random.normal` and `import rmlx.core.random` work.
pub(crate) fn add_submodule(
    parent: &Bound<'_, PyModule>,
    m: &Bound<'_, PyModule>,
    qualname: &str,
) -> PyResult<()> {
    parent.add_submodule(m)?;
    m.setattr("__name__", qualname)?;
    parent
        .py()
        .import("sys")?
        .getattr("modules")?
        .set_item(qualname, m)?;
    Ok(())
}

/// Computes the given arrays (and lists, tuples, dicts of them), releasing the GIL.
#[pyfunction]
#[pyo3(signature = (*args))]
fn eval(py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
    let mut arrays = Vec::new();
    args::collect_arrays(args.as_any(), &mut arrays)?;
    eval_py(py, &arrays)
}

/// Starts computing the given arrays on a background thread and returns at once; reading
/// them (or `mx.eval`) waits for the result.
#[pyfunction]
#[pyo3(signature = (*args))]
fn async_eval(args: &Bound<'_, PyTuple>) -> PyResult<()> {
    let mut arrays = Vec::new();
    args::collect_arrays(args.as_any(), &mut arrays)?;
    rmlx::async_eval(&arrays);
    Ok(())
}

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Load-time constructors register the backends; calling it again is harmless and covers
    // platforms that skip them.
    rmlx::init();
    m.add_class::<PyArray>()?;
    dtype::register(m)?;
    device::register(m)?;
    ops_elementwise::register(m)?;
    ops_shape::register(m)?;
    ops_reduce::register(m)?;
    ops_gather::register(m)?;
    quantized::register(m)?;
    conv::register(m)?;
    io::register(m)?;
    memory::register(m)?;
    m.add_function(wrap_pyfunction!(eval, m)?)?;
    m.add_function(wrap_pyfunction!(async_eval, m)?)?;
    random::register(py, m)?;
    fast::register(py, m)?;
    linalg::register(py, m)?;
    lm::register(py, m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
