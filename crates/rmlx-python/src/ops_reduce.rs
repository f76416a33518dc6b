//! Reductions and scans: `mx.sum`, `mx.mean`, `mx.var`, `mx.argmax`, `mx.softmax`,
//! `mx.cumsum`, ...

use crate::args;
use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use pyo3::prelude::*;
use rmlx::ops;

macro_rules! reduce {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (a, /, axis = None, keepdims = false, *, stream = None))]
        fn $name(
            a: &Bound<'_, PyAny>,
            axis: Option<&Bound<'_, PyAny>>,
            keepdims: bool,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
            on(stream, || $f(&a, ax.as_deref(), keepdims)).map(PyArray::from)
        }
    )*};
}

reduce! {
    /// Sum over `axis` (an int, a sequence, or None for all axes).
    sum => ops::sum;
    /// Product over `axis`.
    prod => ops::prod;
    /// Maximum over `axis`.
    max => ops::max;
    /// Minimum over `axis`.
    min => ops::min;
    /// Whether any element over `axis` is true.
    any => ops::any;
    /// Whether all elements over `axis` are true.
    all => ops::all;
    /// Mean over `axis`.
    mean => ops::mean;
    /// `log(sum(exp(a)))` over `axis`, computed stably.
    logsumexp => ops::logsumexp;
}

/// Variance over `axis`, dividing by `N - ddof`.
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, keepdims = false, ddof = 0, *, stream = None))]
fn var(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    ddof: usize,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || ops::var(&a, ax.as_deref(), keepdims, ddof)).map(PyArray::from)
}

/// Standard deviation over `axis` (`sqrt(var)`).
#[pyfunction]
#[pyo3(name = "std", signature = (a, /, axis = None, keepdims = false, ddof = 0, *, stream = None))]
fn std_(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    ddof: usize,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || {
        ops::var(&a, ax.as_deref(), keepdims, ddof).map(|v| ops::sqrt(&v))
    })
    .map(PyArray::from)
}

/// Softmax over `axis` (all axes when None); `precise` accumulates half inputs in float32.
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, *, precise = false, stream = None))]
fn softmax(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    precise: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || ops::softmax(&a, ax.as_deref(), precise)).map(PyArray::from)
}

/// Index of the maximum along `axis` (of the flattened array when None), as uint32.
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, keepdims = false, *, stream = None))]
fn argmax(
    a: &Bound<'_, PyAny>,
    axis: Option<i32>,
    keepdims: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::argmax(&a, axis, keepdims)).map(PyArray::from)
}

/// Index of the minimum along `axis`, as uint32.
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, keepdims = false, *, stream = None))]
fn argmin(
    a: &Bound<'_, PyAny>,
    axis: Option<i32>,
    keepdims: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::argmin(&a, axis, keepdims)).map(PyArray::from)
}

macro_rules! scan {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (a, /, axis = None, *, reverse = false, inclusive = true, stream = None))]
        fn $name(
            a: &Bound<'_, PyAny>,
            axis: Option<i32>,
            reverse: bool,
            inclusive: bool,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let a = to_array(a, None)?;
            on(stream, || $f(&a, axis, reverse, inclusive)).map(PyArray::from)
        }
    )*};
}

scan! {
    /// Cumulative sum along `axis` (of the flattened array when None).
    cumsum => ops::cumsum;
    /// Cumulative product along `axis`.
    cumprod => ops::cumprod;
    /// Cumulative maximum along `axis`.
    cummax => ops::cummax;
    /// Cumulative minimum along `axis`.
    cummin => ops::cummin;
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => {$( m.add_function(wrap_pyfunction!($f, m)?)?; )*};
    }
    add!(
        sum, prod, max, min, any, all, mean, logsumexp, var, std_, softmax, argmax, argmin, cumsum,
        cumprod, cummax, cummin
    );
    Ok(())
}
