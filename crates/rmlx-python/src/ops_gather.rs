//! Sorting and gathering: `mx.sort`, `mx.argsort`, `mx.partition`, `mx.topk`, `mx.take`,
//! `mx.take_along_axis`, `mx.put_along_axis`.

use crate::array::PyArray;
use crate::convert::{operand, to_array};
use crate::device::on;
use pyo3::prelude::*;
use rmlx::ops;

/// `a` sorted along `axis` (the flattened array when None).
#[pyfunction]
#[pyo3(signature = (a, /, axis = -1, *, stream = None))]
fn sort(
    a: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::sort(&a, axis)).map(PyArray::from)
}

/// The indices (uint32) that sort `a` along `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, axis = -1, *, stream = None))]
fn argsort(
    a: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::argsort(&a, axis)).map(PyArray::from)
}

/// `a` partitioned along `axis`: element `kth` in its sorted place, smaller ones before it.
#[pyfunction]
#[pyo3(signature = (a, /, kth, axis = -1, *, stream = None))]
fn partition(
    a: &Bound<'_, PyAny>,
    kth: i32,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::partition(&a, kth, axis)).map(PyArray::from)
}

/// The indices that partition `a` around `kth` along `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, kth, axis = -1, *, stream = None))]
fn argpartition(
    a: &Bound<'_, PyAny>,
    kth: i32,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::argpartition(&a, kth, axis)).map(PyArray::from)
}

/// The `k` largest elements along `axis` (unordered, as MLX).
#[pyfunction]
#[pyo3(signature = (a, /, k, axis = -1, *, stream = None))]
fn topk(
    a: &Bound<'_, PyAny>,
    k: usize,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::topk(&a, k, axis)).map(PyArray::from)
}

/// Elements of `a` at `indices` along `axis` (of the flattened array when None).
#[pyfunction]
#[pyo3(signature = (a, /, indices, axis = None, *, stream = None))]
fn take(
    a: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, i) = (to_array(a, None)?, to_array(indices, None)?);
    on(stream, || ops::take(&a, &i, axis)).map(PyArray::from)
}

/// Elements of `a` at `indices` (broadcast against `a`) along `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, indices, axis = None, *, stream = None))]
fn take_along_axis(
    a: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, i) = (to_array(a, None)?, to_array(indices, None)?);
    on(stream, || ops::take_along_axis(&a, &i, axis)).map(PyArray::from)
}

/// A copy of `a` with `values` written at `indices` along `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, indices, values, axis = None, *, stream = None))]
fn put_along_axis(
    a: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    values: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, i) = (to_array(a, None)?, to_array(indices, None)?);
    let v = operand(values)?.resolve(Some(a.dtype()));
    on(stream, || ops::put_along_axis(&a, &i, &v, axis)).map(PyArray::from)
}

/// Indices (uint32, of `values`' shape) where `values` would be inserted to keep the 1-D
/// `sorted_sequence` sorted: the number of elements below each value (`side="left"`) or at
/// most it (`side="right"`).
#[pyfunction]
#[pyo3(signature = (sorted_sequence, values, /, side = "left", *, stream = None))]
fn searchsorted(
    sorted_sequence: &Bound<'_, PyAny>,
    values: &Bound<'_, PyAny>,
    side: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let right = match side {
        "left" => false,
        "right" => true,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "[searchsorted] side must be 'left' or 'right', got {side:?}"
            )))
        }
    };
    let (a, v) = (to_array(sorted_sequence, None)?, to_array(values, None)?);
    on(stream, || ops::searchsorted(&a, &v, right)).map(PyArray::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => {$( m.add_function(wrap_pyfunction!($f, m)?)?; )*};
    }
    add!(
        sort,
        argsort,
        partition,
        argpartition,
        topk,
        take,
        take_along_axis,
        put_along_axis,
        searchsorted
    );
    Ok(())
}
