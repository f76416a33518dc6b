//! Creation and shape ops: `mx.zeros`, `mx.arange`, `mx.reshape`, `mx.concatenate`, ...

use crate::args;
use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use crate::dtype::{extract_dtype, opt_dtype};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyTuple};
use rmlx::ops::SplitSpec;
use rmlx::{ops, Array, Dtype};

fn dtype_or(d: Option<&Bound<'_, PyAny>>, default: Dtype) -> PyResult<Dtype> {
    Ok(opt_dtype(d)?.unwrap_or(default))
}

/// An array of `shape` filled with zeros.
#[pyfunction]
#[pyo3(signature = (shape, dtype = None, *, stream = None))]
fn zeros(
    shape: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d) = (args::shape(shape)?, dtype_or(dtype, Dtype::F32)?);
    on(stream, || Ok::<_, rmlx::Error>(ops::zeros(&s, d))).map(PyArray::from)
}

/// An array of `shape` filled with ones.
#[pyfunction]
#[pyo3(signature = (shape, dtype = None, *, stream = None))]
fn ones(
    shape: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d) = (args::shape(shape)?, dtype_or(dtype, Dtype::F32)?);
    on(stream, || Ok::<_, rmlx::Error>(ops::ones(&s, d))).map(PyArray::from)
}

/// An array of `shape` filled with `vals` (a scalar, or an array broadcast to `shape`).
#[pyfunction]
#[pyo3(signature = (shape, vals, dtype = None, *, stream = None))]
fn full(
    shape: &Bound<'_, PyAny>,
    vals: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let s = args::shape(shape)?;
    let v = to_array(vals, opt_dtype(dtype)?)?;
    on(stream, || ops::full_array(&s, &v)).map(PyArray::from)
}

/// Zeros with the shape and dtype of `a`.
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
fn zeros_like(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(ops::zeros_like(&a))).map(PyArray::from)
}

/// Ones with the shape and dtype of `a`.
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
fn ones_like(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(ops::ones_like(&a))).map(PyArray::from)
}

/// `vals` with the shape and dtype of `a`.
#[pyfunction]
#[pyo3(signature = (a, vals, /, *, stream = None))]
fn full_like(
    a: &Bound<'_, PyAny>,
    vals: f64,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(ops::full_like(&a, vals))).map(PyArray::from)
}

/// `arange(stop)`, `arange(start, stop, step=1)`: evenly spaced values in `[start, stop)`;
/// int32 when every bound is an int, else float32.
#[pyfunction]
#[pyo3(signature = (*args, dtype = None, stream = None))]
fn arange(
    args: &Bound<'_, PyTuple>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let any_float = args.iter().any(|a| a.is_instance_of::<PyFloat>());
    let v: Vec<f64> = args.extract()?;
    let (start, stop, step) = match v.as_slice() {
        [stop] => (0.0, *stop, 1.0),
        [start, stop] => (*start, *stop, 1.0),
        [start, stop, step] => (*start, *stop, *step),
        _ => {
            return Err(PyTypeError::new_err(
                "arange takes 1 to 3 positional arguments: (stop), (start, stop) or (start, stop, step)",
            ))
        }
    };
    let d = dtype_or(dtype, if any_float { Dtype::F32 } else { Dtype::I32 })?;
    on(stream, || ops::arange(start, stop, step, d)).map(PyArray::from)
}

/// `num` evenly spaced values from `start` to `stop` inclusive.
#[pyfunction]
#[pyo3(signature = (start, stop, num = 50, dtype = None, *, stream = None))]
fn linspace(
    start: f64,
    stop: f64,
    num: usize,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let d = dtype_or(dtype, Dtype::F32)?;
    on(stream, || ops::linspace(start, stop, num, d)).map(PyArray::from)
}

/// An `n x m` matrix with ones on diagonal `k`.
#[pyfunction]
#[pyo3(signature = (n, m = None, k = 0, dtype = None, *, stream = None))]
fn eye(
    n: usize,
    m: Option<usize>,
    k: i64,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let d = dtype_or(dtype, Dtype::F32)?;
    on(stream, || ops::eye(n, m, k, d)).map(PyArray::from)
}

/// The `n x n` identity matrix.
#[pyfunction]
#[pyo3(signature = (n, dtype = None, *, stream = None))]
fn identity(
    n: usize,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let d = dtype_or(dtype, Dtype::F32)?;
    on(stream, || ops::identity(n, d)).map(PyArray::from)
}

/// `a` converted to `dtype`.
#[pyfunction]
#[pyo3(signature = (a, /, dtype, *, stream = None))]
fn astype(
    a: &Bound<'_, PyAny>,
    dtype: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, d) = (to_array(a, None)?, extract_dtype(dtype)?);
    on(stream, || Ok::<_, rmlx::Error>(ops::astype(&a, d))).map(PyArray::from)
}

/// `a`'s bytes seen as `dtype`, without a copy. rmlx supports dtypes of one element size
/// (`uint32` ↔ `float32`, `float16` ↔ `bfloat16`); other sizes are an error.
#[pyfunction]
#[pyo3(signature = (a, /, dtype, *, stream = None))]
fn view(
    a: &Bound<'_, PyAny>,
    dtype: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, d) = (to_array(a, None)?, extract_dtype(dtype)?);
    on(stream, || ops::view(&a, d)).map(PyArray::from)
}

/// A row-contiguous copy of `a` (`a` itself when it already is).
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
fn contiguous(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(ops::contiguous(&a))).map(PyArray::from)
}

/// The elements of `a` in `shape` (one entry may be -1).
#[pyfunction]
#[pyo3(signature = (a, /, shape, *, stream = None))]
fn reshape(
    a: &Bound<'_, PyAny>,
    shape: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, s) = (to_array(a, None)?, args::shape_i64(shape)?);
    on(stream, || ops::reshape(&a, &s)).map(PyArray::from)
}

/// `a` with its axes permuted by `axes` (reversed when None).
#[pyfunction]
#[pyo3(signature = (a, /, axes = None, *, stream = None))]
fn transpose(
    a: &Bound<'_, PyAny>,
    axes: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axes)?);
    on(stream, || ops::transpose(&a, ax.as_deref())).map(PyArray::from)
}

/// `a` with `axis1` and `axis2` exchanged.
#[pyfunction]
#[pyo3(signature = (a, /, axis1, axis2, *, stream = None))]
fn swapaxes(
    a: &Bound<'_, PyAny>,
    axis1: i32,
    axis2: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::swapaxes(&a, axis1, axis2)).map(PyArray::from)
}

/// `a` with axis `source` moved to `destination`.
#[pyfunction]
#[pyo3(signature = (a, /, source, destination, *, stream = None))]
fn moveaxis(
    a: &Bound<'_, PyAny>,
    source: i32,
    destination: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::moveaxis(&a, source, destination)).map(PyArray::from)
}

/// `a` broadcast to `shape` (a view).
#[pyfunction]
#[pyo3(signature = (a, /, shape, *, stream = None))]
fn broadcast_to(
    a: &Bound<'_, PyAny>,
    shape: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, s) = (to_array(a, None)?, args::shape(shape)?);
    on(stream, || ops::broadcast_to(&a, &s)).map(PyArray::from)
}

/// The arrays broadcast to their common shape.
#[pyfunction]
#[pyo3(signature = (*arrays, stream = None))]
fn broadcast_arrays(
    arrays: &Bound<'_, PyTuple>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyArray>> {
    let xs: Vec<Array> = arrays
        .iter()
        .map(|a| to_array(&a, None))
        .collect::<PyResult<_>>()?;
    let refs: Vec<&Array> = xs.iter().collect();
    on(stream, || ops::broadcast_arrays("broadcast_arrays", &refs))
        .map(|v| v.into_iter().map(PyArray::from).collect())
}

/// `a` with unit axes inserted at `axis` (an int or a sequence).
#[pyfunction]
#[pyo3(signature = (a, /, axis, *, stream = None))]
fn expand_dims(
    a: &Bound<'_, PyAny>,
    axis: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let ax = args::axes(Some(axis))?.unwrap_or_default();
    on(stream, || ops::expand_dims(&a, &ax)).map(PyArray::from)
}

/// `squeeze` with MLX's default: every size-1 axis when `axes` is None.
pub fn squeeze_impl(a: &Array, axes: Option<Vec<i32>>) -> rmlx::Result<Array> {
    let ax = axes.unwrap_or_else(|| {
        (0..a.ndim())
            .filter(|&i| a.shape()[i] == 1)
            .map(|i| i as i32)
            .collect()
    });
    ops::squeeze(a, &ax)
}

/// `a` without the size-1 axes `axis` (all of them when None).
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, *, stream = None))]
fn squeeze(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || squeeze_impl(&a, ax)).map(PyArray::from)
}

/// Axes `start_axis..=end_axis` of `a` merged into one.
#[pyfunction]
#[pyo3(signature = (a, /, start_axis = 0, end_axis = -1, *, stream = None))]
fn flatten(
    a: &Bound<'_, PyAny>,
    start_axis: i32,
    end_axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::flatten(&a, start_axis, end_axis)).map(PyArray::from)
}

fn array_list(arrays: &Bound<'_, PyAny>) -> PyResult<Vec<Array>> {
    arrays.try_iter()?.map(|a| to_array(&a?, None)).collect()
}

/// The arrays joined along an existing `axis` (default 0).
#[pyfunction]
#[pyo3(signature = (arrays, /, axis = 0, *, stream = None))]
fn concatenate(
    arrays: &Bound<'_, PyAny>,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let xs = array_list(arrays)?;
    on(stream, || match axis {
        Some(ax) => ops::concatenate(&xs, ax),
        None => {
            let flat: Vec<Array> = xs
                .iter()
                .map(|x| ops::reshape(x, &[-1]))
                .collect::<rmlx::Result<_>>()?;
            ops::concatenate(&flat, 0)
        }
    })
    .map(PyArray::from)
}

/// The arrays joined along a new `axis`.
#[pyfunction]
#[pyo3(signature = (arrays, /, axis = 0, *, stream = None))]
fn stack(
    arrays: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let xs = array_list(arrays)?;
    on(stream, || ops::stack(&xs, axis)).map(PyArray::from)
}

/// `split` for both the function and the method.
pub fn split_impl(
    a: &Array,
    spec: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyArray>> {
    let parts = if let Ok(n) = spec.extract::<usize>() {
        on(stream, || ops::split(a, SplitSpec::Sections(n), axis))?
    } else {
        let idx: Vec<usize> = spec.extract().map_err(|_| {
            PyTypeError::new_err("indices_or_sections must be an int or a sequence of ints")
        })?;
        on(stream, || ops::split(a, SplitSpec::Indices(&idx), axis))?
    };
    Ok(parts.into_iter().map(PyArray::from).collect())
}

/// `a` split into `indices_or_sections` equal parts, or at those indices, along `axis`.
#[pyfunction]
#[pyo3(signature = (a, /, indices_or_sections, axis = 0, *, stream = None))]
fn split(
    a: &Bound<'_, PyAny>,
    indices_or_sections: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyArray>> {
    split_impl(&to_array(a, None)?, indices_or_sections, axis, stream)
}

/// `a` padded with `constant_values`: `pad_width` is an int, a `(before, after)` pair, or one
/// pair per axis. Only `mode="constant"`.
#[pyfunction]
#[pyo3(signature = (a, pad_width, mode = "constant", constant_values = 0.0, *, stream = None))]
fn pad(
    a: &Bound<'_, PyAny>,
    pad_width: &Bound<'_, PyAny>,
    mode: &str,
    constant_values: f64,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    if mode != "constant" {
        return Err(PyValueError::new_err(format!(
            "[pad] mode '{mode}' is not supported; only 'constant'"
        )));
    }
    let n = a.ndim();
    let widths: Vec<(usize, usize)> = if let Ok(w) = pad_width.extract::<usize>() {
        vec![(w, w); n]
    } else if let Ok(p) = pad_width.extract::<(usize, usize)>() {
        vec![p; n]
    } else if let Ok(v) = pad_width.extract::<Vec<(usize, usize)>>() {
        v
    } else if let Ok(v) = pad_width.extract::<Vec<Vec<usize>>>() {
        v.iter()
            .map(|p| match p.as_slice() {
                [w] => Ok((*w, *w)),
                [b, e] => Ok((*b, *e)),
                _ => Err(PyValueError::new_err(
                    "[pad] each pad width is (before, after)",
                )),
            })
            .collect::<PyResult<_>>()?
    } else {
        return Err(PyTypeError::new_err(
            "[pad] pad_width must be an int, a (before, after) pair or one pair per axis",
        ));
    };
    on(stream, || ops::pad(&a, &widths, constant_values)).map(PyArray::from)
}

/// The lower triangle of `x` (on and below diagonal `k`); zeros elsewhere.
#[pyfunction]
#[pyo3(signature = (x, k = 0, *, stream = None))]
fn tril(x: &Bound<'_, PyAny>, k: i64, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let x = to_array(x, None)?;
    on(stream, || ops::tril(&x, k)).map(PyArray::from)
}

/// The upper triangle of `x` (on and above diagonal `k`); zeros elsewhere.
#[pyfunction]
#[pyo3(signature = (x, k = 0, *, stream = None))]
fn triu(x: &Bound<'_, PyAny>, k: i64, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let x = to_array(x, None)?;
    on(stream, || ops::triu(&x, k)).map(PyArray::from)
}

/// Uninitialised memory is never handed out: an array of `shape` filled with zeros.
#[pyfunction]
#[pyo3(signature = (shape, dtype = None, *, stream = None))]
fn empty(
    shape: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    zeros(shape, dtype, stream)
}

/// Zeros with the shape of `a` (and its dtype unless `dtype` is given).
#[pyfunction]
#[pyo3(signature = (a, /, dtype = None, *, stream = None))]
fn empty_like(
    a: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let d = dtype_or(dtype, a.dtype())?;
    on(stream, || Ok::<_, rmlx::Error>(ops::zeros(a.shape(), d))).map(PyArray::from)
}

/// `a` as an array (no copy when it already is one of `dtype`).
#[pyfunction]
#[pyo3(signature = (a, dtype = None, *, copy = None))]
fn asarray(
    a: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    copy: Option<bool>,
) -> PyResult<PyArray> {
    let _ = copy; // arrays are immutable values: a copy and the original are indistinguishable
    to_array(a, opt_dtype(dtype)?).map(PyArray::from)
}

/// `a` with its axes permuted by `axes` (reversed when None); the array API's `transpose`.
#[pyfunction]
#[pyo3(signature = (a, /, axes = None, *, stream = None))]
fn permute_dims(
    a: &Bound<'_, PyAny>,
    axes: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    transpose(a, axes, stream)
}

/// `a` with its last two axes exchanged.
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
fn matrix_transpose(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::swapaxes(&a, -1, -2)).map(PyArray::from)
}

/// The shape that the given shapes broadcast to.
#[pyfunction]
#[pyo3(signature = (*shapes))]
fn broadcast_shapes(shapes: &Bound<'_, PyTuple>) -> PyResult<Py<PyTuple>> {
    let mut out: Vec<usize> = Vec::new();
    if shapes.is_empty() {
        return Err(PyValueError::new_err("[broadcast_shapes] no input shapes"));
    }
    for s in shapes.iter() {
        let s = args::shape(&s)?;
        out = crate::errors::guard(|| {
            rmlx::shape::broadcast_shapes("broadcast_shapes", &out, &s).map(|v| v.to_vec())
        })?;
    }
    Ok(PyTuple::new(shapes.py(), out)?.unbind())
}

/// `a` reversed along `axis` (an int or a sequence; every axis when None).
#[pyfunction]
#[pyo3(signature = (a, /, axis = None, *, stream = None))]
fn flip(
    a: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, ax) = (to_array(a, None)?, args::axes(axis)?);
    on(stream, || ops::flip(&a, ax.as_deref())).map(PyArray::from)
}

/// `a` rolled by `shift` along `axis`: elements that leave one end enter at the other.
/// Without `axis` the flattened array rolls (by the sum of the shifts); one shift rolls
/// every given axis; one axis rolls by the sum of the shifts; else they pair up.
#[pyfunction]
#[pyo3(signature = (a, shift, axis = None, /, *, stream = None))]
fn roll(
    a: &Bound<'_, PyAny>,
    shift: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let sh = args::shape_i64(shift)
        .map_err(|_| PyTypeError::new_err("[roll] shift must be an int or a sequence of ints"))?;
    let ax = args::axes(axis)?;
    on(stream, || ops::roll(&a, &sh, ax.as_deref())).map(PyArray::from)
}

/// Each element of `array` repeated `repeats` times along `axis` (of the flattened array
/// when None).
#[pyfunction]
#[pyo3(signature = (array, repeats, axis = None, *, stream = None))]
fn repeat(
    array: &Bound<'_, PyAny>,
    repeats: i64,
    axis: Option<i32>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(array, None)?;
    let r = usize::try_from(repeats)
        .map_err(|_| PyValueError::new_err("[repeat] the number of repeats cannot be negative"))?;
    on(stream, || ops::repeat(&a, r, axis)).map(PyArray::from)
}

/// `a` repeated `reps` times along each axis (NumPy's `tile`).
#[pyfunction]
#[pyo3(signature = (a, reps, /, *, stream = None))]
fn tile(
    a: &Bound<'_, PyAny>,
    reps: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let r = args::shape(reps)
        .map_err(|_| PyValueError::new_err("[tile] reps must be non-negative ints"))?;
    on(stream, || ops::tile(&a, &r)).map(PyArray::from)
}

/// Coordinate arrays from coordinate vectors (inputs are flattened): `indexing` "xy"
/// (Cartesian) or "ij" (matrix); `sparse` keeps each output broadcastable.
#[pyfunction]
#[pyo3(signature = (*arrays, sparse = false, indexing = "xy", stream = None))]
fn meshgrid(
    py: Python<'_>,
    arrays: &Bound<'_, PyTuple>,
    sparse: Option<bool>,
    indexing: Option<&str>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyTuple>> {
    let xs = array_list(arrays.as_any())?;
    let ix = indexing.unwrap_or("xy");
    let out = on(stream, || ops::meshgrid(&xs, sparse.unwrap_or(false), ix))?;
    Ok(PyTuple::new(py, out.into_iter().map(PyArray::from))?.unbind())
}

fn atleast(
    py: Python<'_>,
    arys: &Bound<'_, PyTuple>,
    n: usize,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let xs = array_list(arys.as_any())?;
    let out: Vec<Array> = on(stream, || {
        xs.iter().map(|x| ops::atleast_nd(x, n)).collect()
    })?;
    if out.len() == 1 {
        let one = out.into_iter().next().expect("one array");
        return Ok(Py::new(py, PyArray::from(one))?.into_any());
    }
    let v: Vec<PyArray> = out.into_iter().map(PyArray::from).collect();
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

/// The arrays with at least one dimension (one array, or a list for several).
#[pyfunction]
#[pyo3(signature = (*arys, stream = None))]
fn atleast_1d(
    py: Python<'_>,
    arys: &Bound<'_, PyTuple>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    atleast(py, arys, 1, stream)
}

/// The arrays with at least two dimensions (`[k]` becomes `[1, k]`).
#[pyfunction]
#[pyo3(signature = (*arys, stream = None))]
fn atleast_2d(
    py: Python<'_>,
    arys: &Bound<'_, PyTuple>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    atleast(py, arys, 2, stream)
}

/// The arrays with at least three dimensions (`[k]` becomes `[1, k, 1]`, `[m, k]` becomes
/// `[m, k, 1]`).
#[pyfunction]
#[pyo3(signature = (*arys, stream = None))]
fn atleast_3d(
    py: Python<'_>,
    arys: &Bound<'_, PyTuple>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    atleast(py, arys, 3, stream)
}

/// `a` with `axis` split into `shape` (one entry may be -1).
#[pyfunction]
#[pyo3(signature = (a, /, axis, shape, *, stream = None))]
fn unflatten(
    a: &Bound<'_, PyAny>,
    axis: i32,
    shape: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, s) = (to_array(a, None)?, args::shape_i64(shape)?);
    on(stream, || ops::unflatten(&a, axis, &s)).map(PyArray::from)
}

/// The slices of `x` along `axis`, as a tuple (the inverse of `stack`).
#[pyfunction]
#[pyo3(signature = (x, /, *, axis = 0, stream = None))]
fn unstack(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyTuple>> {
    let x = to_array(x, None)?;
    let parts = on(stream, || {
        let ax = rmlx::shape::normalize_axis("unstack", axis, x.ndim())?;
        let n = x.shape()[ax];
        ops::split(&x, SplitSpec::Indices(&(1..n).collect::<Vec<_>>()), axis)?
            .iter()
            .map(|p| ops::squeeze(p, &[axis]))
            .collect::<rmlx::Result<Vec<_>>>()
    })?;
    Ok(PyTuple::new(py, parts.into_iter().map(PyArray::from))?.unbind())
}

/// The `n`-th discrete difference along `axis` (`a[1:] - a[:-1]`, `n` times).
#[pyfunction]
#[pyo3(signature = (a, /, n = 1, axis = -1, *, stream = None))]
fn diff(
    a: &Bound<'_, PyAny>,
    n: i64,
    axis: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let n = usize::try_from(n)
        .map_err(|_| PyValueError::new_err("[diff] order n must be non-negative"))?;
    on(stream, || ops::diff(&a, n, axis)).map(PyArray::from)
}

macro_rules! windows {
    ($($(#[$m:meta])* $name:ident;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (M, *, stream = None))]
        #[allow(non_snake_case)]
        fn $name(M: i64, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
            let m = usize::try_from(M).unwrap_or(0); // MLX: M < 1 gives an empty window
            on(stream, || ops::$name(m)).map(PyArray::from)
        }
    )*};
}

windows! {
    /// The Bartlett (triangular) window of `M` points (float32).
    bartlett;
    /// The Blackman window of `M` points (float32).
    blackman;
    /// The Hamming window of `M` points (float32).
    hamming;
    /// The Hann window of `M` points (float32).
    hanning;
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => {$( m.add_function(wrap_pyfunction!($f, m)?)?; )*};
    }
    add!(
        zeros,
        ones,
        full,
        zeros_like,
        ones_like,
        full_like,
        arange,
        linspace,
        eye,
        identity,
        astype,
        view,
        contiguous,
        reshape,
        transpose,
        swapaxes,
        moveaxis,
        broadcast_to,
        broadcast_arrays,
        expand_dims,
        squeeze,
        flatten,
        concatenate,
        stack,
        split,
        pad,
        tril,
        triu,
        empty,
        empty_like,
        asarray,
        permute_dims,
        matrix_transpose,
        broadcast_shapes,
        flip,
        roll,
        repeat,
        tile,
        meshgrid,
        atleast_1d,
        atleast_2d,
        atleast_3d,
        unflatten,
        unstack,
        diff,
        bartlett,
        blackman,
        hamming,
        hanning
    );
    m.add("concat", m.getattr("concatenate")?)?;
    Ok(())
}
