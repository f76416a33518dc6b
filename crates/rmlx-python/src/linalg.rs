//! Products and matrix helpers (`mx.outer`, `mx.tensordot`, `mx.diagonal`, `mx.trace`, ...)
//! and `mx.linalg` (`norm`, `cross`).

use crate::array::{pair, PyArray};
use crate::convert::to_array;
use crate::device::on;
use crate::dtype::opt_dtype;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rmlx::ops::{self, NormOrd};
use rmlx::Dtype;

/// The outer product of the flattened `a` and `b`.
#[pyfunction]
#[pyo3(signature = (a, b, /, *, stream = None))]
fn outer(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || ops::outer(&a, &b)).map(PyArray::from)
}

/// The sum product over the last axes of `a` and `b`.
#[pyfunction]
#[pyo3(signature = (a, b, /, *, stream = None))]
fn inner(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || ops::inner(&a, &b)).map(PyArray::from)
}

/// The sum product over axes: `axes=n` contracts the last `n` axes of `a` with the first
/// `n` of `b`; `axes=[axes_a, axes_b]` pairs the listed axes.
#[pyfunction]
#[pyo3(signature = (a, b, /, axes = None, *, stream = None))]
fn tensordot(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    axes: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    let axes = axes.filter(|x| !x.is_none());
    if let Some(x) = axes.filter(|x| x.extract::<i64>().is_err()) {
        let pair: Vec<Vec<i32>> = x
            .extract()
            .ok()
            .filter(|p: &Vec<Vec<i32>>| p.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err("[tensordot] axes must be an int or a pair of lists of ints")
            })?;
        return on(stream, || ops::tensordot(&a, &b, &pair[0], &pair[1])).map(PyArray::from);
    }
    let n = axes.map(|x| x.extract::<i64>()).transpose()?.unwrap_or(2);
    let n = usize::try_from(n)
        .map_err(|_| PyValueError::new_err("[tensordot] axes cannot be negative"))?;
    on(stream, || ops::tensordot_n(&a, &b, n)).map(PyArray::from)
}

/// The Kronecker product of `a` and `b`.
#[pyfunction]
#[pyo3(signature = (a, b, *, stream = None))]
fn kron(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || ops::kron(&a, &b)).map(PyArray::from)
}

/// `alpha * (a @ b) + beta * c`.
#[pyfunction]
#[pyo3(signature = (c, a, b, /, alpha = 1.0, beta = 1.0, *, stream = None))]
fn addmm(
    c: &Bound<'_, PyAny>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    alpha: f32,
    beta: f32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (c, a, b) = (to_array(c, None)?, to_array(a, None)?, to_array(b, None)?);
    on(stream, || ops::addmm(&c, &a, &b, alpha, beta)).map(PyArray::from)
}

/// The sum of `a * b` along `axis` (the same axis of both).
#[pyfunction]
#[pyo3(signature = (a, b, /, *, axis = -1, stream = None))]
fn vecdot(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || ops::vecdot(&a, &b, axis)).map(PyArray::from)
}

/// The diagonal at `offset` of the matrices spanned by `axis1` and `axis2` (the last axis
/// of the result).
#[pyfunction]
#[pyo3(signature = (a, offset = 0, axis1 = 0, axis2 = 1, stream = None))]
fn diagonal(
    a: &Bound<'_, PyAny>,
    offset: i64,
    axis1: i32,
    axis2: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::diagonal(&a, offset, axis1, axis2)).map(PyArray::from)
}

/// The `k`-th diagonal of a 2-D `a`, or a 2-D array with the 1-D `a` on its `k`-th
/// diagonal.
#[pyfunction]
#[pyo3(signature = (a, /, k = 0, *, stream = None))]
fn diag(a: &Bound<'_, PyAny>, k: i64, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::diag(&a, k)).map(PyArray::from)
}

/// The sum along the diagonal at `offset` of the matrices spanned by `axis1`, `axis2`
/// (accumulated in `dtype` when given).
#[pyfunction]
#[pyo3(signature = (a, /, offset = 0, axis1 = 0, axis2 = 1, dtype = None, *, stream = None))]
fn trace(
    a: &Bound<'_, PyAny>,
    offset: i64,
    axis1: i32,
    axis2: i32,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, d) = (to_array(a, None)?, opt_dtype(dtype)?);
    on(stream, || ops::trace(&a, offset, axis1, axis2, d)).map(PyArray::from)
}

/// `[n, m]` (m defaults to n) with ones at and below the `k`-th diagonal, zeros above.
#[pyfunction]
#[pyo3(signature = (n, m = None, k = 0, dtype = None, *, stream = None))]
fn tri(
    n: usize,
    m: Option<usize>,
    k: i64,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let d = opt_dtype(dtype)?.unwrap_or(Dtype::F32);
    on(stream, || ops::tri(n, m, k, d)).map(PyArray::from)
}

/// The Walsh-Hadamard transform along the last axis (a power-of-two length), times
/// `scale` (default `1/sqrt(n)`).
#[pyfunction]
#[pyo3(signature = (a, scale = None, stream = None))]
fn hadamard_transform(
    a: &Bound<'_, PyAny>,
    scale: Option<f32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::hadamard_transform(&a, scale)).map(PyArray::from)
}

/// Vector and matrix norms: `ord` None (2-norm / Frobenius), a number (vectors: p-norm, 0
/// counts non-zeros, ±inf max/min of |a|; matrices: ±1 column sums, ±inf row sums) or
/// "fro". `axis` picks one (vector) or two (matrix) axes; None takes `a` whole.
#[pyfunction]
#[pyo3(signature = (a, /, ord = None, axis = None, keepdims = false, *, stream = None))]
fn norm(
    a: &Bound<'_, PyAny>,
    ord: Option<&Bound<'_, PyAny>>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let ax = crate::args::axes(axis)?;
    let name: Option<String> = ord.and_then(|o| o.extract::<String>().ok());
    let ord = match ord.filter(|o| !o.is_none()) {
        None => NormOrd::Default,
        Some(o) => match (&name, o.extract::<f64>()) {
            (Some(s), _) => NormOrd::Name(s.as_str()),
            (None, Ok(p)) => NormOrd::P(p),
            (None, Err(_)) => {
                return Err(PyTypeError::new_err(
                    "[linalg::norm] ord must be None, a number or a string",
                ))
            }
        },
    };
    on(stream, || ops::norm(&a, ord, ax.as_deref(), keepdims)).map(PyArray::from)
}

/// The cross product of 3-vectors (2-vectors have z = 0) along `axis`.
#[pyfunction]
#[pyo3(signature = (a, b, axis = -1, *, stream = None))]
fn cross(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || ops::cross(&a, &b, axis)).map(PyArray::from)
}

/// Einstein summation over the operands' labelled axes: `"ij,jk->ik"`, `"bhqd,bhkd->bhqk"`,
/// `"ii->i"`, `"...ij,...jk"` (without `->` the output is the labels used once, sorted).
#[pyfunction]
#[pyo3(signature = (subscripts, *operands, stream = None))]
fn einsum(
    subscripts: &str,
    operands: &Bound<'_, pyo3::types::PyTuple>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let xs: Vec<rmlx::Array> = operands
        .iter()
        .map(|o| to_array(&o, None))
        .collect::<PyResult<_>>()?;
    on(stream, || ops::einsum(subscripts, &xs)).map(PyArray::from)
}

pub fn register(py: Python<'_>, parent: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($m:expr, $($f:ident),*) => {$( $m.add_function(wrap_pyfunction!($f, $m)?)?; )*};
    }
    add!(
        parent,
        outer,
        inner,
        tensordot,
        kron,
        addmm,
        vecdot,
        diagonal,
        diag,
        trace,
        tri,
        hadamard_transform,
        einsum
    );
    let m = PyModule::new(py, "linalg")?;
    add!(&m, norm, cross);
    // mlx.core also exposes linalg.norm under this name.
    parent.add("matrix_norm", m.getattr("norm")?)?;
    crate::add_submodule(parent, &m, "rmlx.core.linalg")
}
