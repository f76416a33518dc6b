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
    /// The median over `axis`: the middle sorted value, or the mean of the two middle ones
    /// (float; NaN when the values hold a NaN).
    median => ops::median;
}

/// Number of non-zero elements over `axis` (int32).
#[pyfunction]
#[pyo3(signature = (a, /, *, axis = None, keepdims = false, stream = None))]
fn count_nonzero(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || ops::count_nonzero(&a, ax.as_deref(), keepdims)).map(PyArray::from)
}

/// `(min, max)` over `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, keepdims = false, *, stream = None))]
fn minmax(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<(PyArray, PyArray)> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || {
        Ok::<_, rmlx::Error>((
            ops::min(&a, ax.as_deref(), keepdims)?,
            ops::max(&a, ax.as_deref(), keepdims)?,
        ))
    })
    .map(|(lo, hi)| (lo.into(), hi.into()))
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

macro_rules! scan_dtype {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (a, /, axis = None, *, reverse = false, inclusive = true, dtype = None, stream = None))]
        fn $name(
            a: &Bound<'_, PyAny>,
            axis: Option<i32>,
            reverse: bool,
            inclusive: bool,
            dtype: Option<&Bound<'_, PyAny>>,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let a = to_array(a, crate::dtype::opt_dtype(dtype)?)?;
            on(stream, || $f(&a, axis, reverse, inclusive)).map(PyArray::from)
        }
    )*};
}

scan_dtype! {
    /// Cumulative sum along `axis` (of the flattened array when None), of `a` cast to
    /// `dtype` when given.
    cumsum => ops::cumsum;
    /// Cumulative product along `axis`, of `a` cast to `dtype` when given.
    cumprod => ops::cumprod;
}

scan! {
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
        sum,
        prod,
        max,
        min,
        any,
        all,
        mean,
        logsumexp,
        var,
        std_,
        softmax,
        argmax,
        argmin,
        cumsum,
        cumprod,
        cummax,
        cummin,
        median,
        count_nonzero,
        minmax
    );
    m.add("cumulative_sum", m.getattr("cumsum")?)?;
    m.add("cumulative_prod", m.getattr("cumprod")?)?;
    Ok(())
}
