//! `mx.random`: keys, splits and draws with MLX's generator (threefry-2x32), so a key gives
//! the same bits as in MLX.

use crate::args;
use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use crate::dtype::opt_dtype;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rmlx::{ops, random, Array, Dtype};

fn shape_or_scalar(shape: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<usize>> {
    match shape.filter(|s| !s.is_none()) {
        None => Ok(vec![]),
        Some(s) => args::shape(s),
    }
}

/// What every draw of a distribution takes: its shape (a scalar when absent), its dtype
/// (`default` when absent) and its key (the global generator's when absent).
fn draw_args(
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    default: Dtype,
    key: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Vec<usize>, Dtype, Option<rmlx::Array>)> {
    Ok((
        shape_or_scalar(shape)?,
        opt_dtype(dtype)?.unwrap_or(default),
        args::opt_array(key)?,
    ))
}

/// Seeds the global generator used by draws without a `key`.
#[pyfunction]
fn seed(seed: u64) {
    random::seed(seed);
}

/// A PRNG key (uint32 `[2]`) from an integer seed.
#[pyfunction]
fn key(seed: u64) -> PyArray {
    random::key(seed).into()
}

/// `num` new keys (`[num, 2]`) derived from `key`.
#[pyfunction]
#[pyo3(signature = (key, num = 2, *, stream = None))]
fn split(
    key: &Bound<'_, PyAny>,
    num: usize,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let k = to_array(key, None)?;
    on(stream, || random::split(&k, num)).map(PyArray::from)
}

/// Random bits of `shape`; `width` bytes per element (1, 2 or 4).
#[pyfunction]
#[pyo3(signature = (shape = None, width = 4, key = None, *, stream = None))]
fn bits(
    shape: Option<&Bound<'_, PyAny>>,
    width: usize,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let s = shape_or_scalar(shape)?;
    let k = args::opt_array(key)?;
    let dt = match width {
        4 => Dtype::U32,
        1 => Dtype::U8,
        _ => {
            return Err(PyValueError::new_err(format!(
                "[bits] width must be 1 or 4 bytes here (rmlx has no uint16), got {width}"
            )))
        }
    };
    on(stream, || {
        let b = random::bits(&s, k.as_ref())?;
        Ok::<_, rmlx::Error>(if dt == Dtype::U32 {
            b
        } else {
            ops::astype(&ops::bitwise_and(&b, &Array::scalar(0xffu32))?, dt)
        })
    })
    .map(PyArray::from)
}

/// Uniform values in `[low, high)` of `shape` and float `dtype`.
#[pyfunction]
#[pyo3(signature = (low = 0.0, high = 1.0, shape = None, dtype = None, key = None, *, stream = None))]
fn uniform(
    low: f32,
    high: f32,
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d, k) = draw_args(shape, dtype, Dtype::F32, key)?;
    on(stream, || random::uniform(low, high, &s, d, k.as_ref())).map(PyArray::from)
}

/// Normal values with mean `loc` and standard deviation `scale`.
#[pyfunction]
#[pyo3(signature = (shape = None, dtype = None, loc = 0.0, scale = 1.0, key = None, *, stream = None))]
fn normal(
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    loc: f32,
    scale: f32,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d, k) = draw_args(shape, dtype, Dtype::F32, key)?;
    on(stream, || random::normal(&s, d, loc, scale, k.as_ref())).map(PyArray::from)
}

/// Integers uniform in `[low, high)`.
#[pyfunction]
#[pyo3(signature = (low, high, shape = None, dtype = None, key = None, *, stream = None))]
fn randint(
    low: i64,
    high: i64,
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d, k) = draw_args(shape, dtype, Dtype::I32, key)?;
    on(stream, || random::randint(low, high, &s, d, k.as_ref())).map(PyArray::from)
}

/// Category indices sampled from unnormalised log-probabilities along `axis`.
#[pyfunction]
#[pyo3(signature = (logits, axis = -1, shape = None, num_samples = None, key = None, *, stream = None))]
fn categorical(
    logits: &Bound<'_, PyAny>,
    axis: i32,
    shape: Option<&Bound<'_, PyAny>>,
    num_samples: Option<usize>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    if shape.is_some_and(|s| !s.is_none()) {
        return Err(PyValueError::new_err(
            "[categorical] shape= is not supported; use num_samples=",
        ));
    }
    let l = to_array(logits, None)?;
    let k = args::opt_array(key)?;
    on(stream, || {
        random::categorical(&l, axis, num_samples, k.as_ref())
    })
    .map(PyArray::from)
}

/// Booleans, true with probability `p` (a float or float array), of `shape` (default
/// `p`'s shape).
#[pyfunction]
#[pyo3(signature = (p = None, shape = None, key = None, stream = None))]
fn bernoulli(
    p: Option<&Bound<'_, PyAny>>,
    shape: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let p = match p.filter(|p| !p.is_none()) {
        None => Array::scalar(0.5f32),
        Some(p) => to_array(p, None)?,
    };
    let s = shape
        .filter(|s| !s.is_none())
        .map(args::shape)
        .transpose()?;
    let k = args::opt_array(key)?;
    on(stream, || random::bernoulli(&p, s.as_deref(), k.as_ref())).map(PyArray::from)
}

/// Normal numbers truncated to `[lower, upper]` (broadcast to `shape`).
#[pyfunction]
#[pyo3(signature = (lower, upper, shape = None, dtype = None, key = None, stream = None))]
fn truncated_normal(
    lower: &Bound<'_, PyAny>,
    upper: &Bound<'_, PyAny>,
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (lo, hi) = (to_array(lower, None)?, to_array(upper, None)?);
    let s = shape
        .filter(|s| !s.is_none())
        .map(args::shape)
        .transpose()?;
    let d = opt_dtype(dtype)?.unwrap_or(Dtype::F32);
    let k = args::opt_array(key)?;
    on(stream, || {
        random::truncated_normal(&lo, &hi, s.as_deref(), d, k.as_ref())
    })
    .map(PyArray::from)
}

/// Standard Gumbel numbers of `shape`.
#[pyfunction]
#[pyo3(signature = (shape = None, dtype = None, key = None, stream = None))]
fn gumbel(
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d, k) = draw_args(shape, dtype, Dtype::F32, key)?;
    on(stream, || random::gumbel(&s, d, k.as_ref())).map(PyArray::from)
}

/// Laplace numbers with location `loc` and scale `scale`.
#[pyfunction]
#[pyo3(signature = (shape = None, dtype = None, loc = 0.0, scale = 1.0, key = None, stream = None))]
fn laplace(
    shape: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    loc: f32,
    scale: f32,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (s, d, k) = draw_args(shape, dtype, Dtype::F32, key)?;
    on(stream, || random::laplace(&s, d, loc, scale, k.as_ref())).map(PyArray::from)
}

/// A random permutation of `range(x)` (an int), or `x` shuffled along `axis` (an array).
#[pyfunction]
#[pyo3(signature = (x, axis = 0, key = None, stream = None))]
fn permutation(
    x: &Bound<'_, PyAny>,
    axis: i32,
    key: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let k = args::opt_array(key)?;
    if x.is_instance_of::<pyo3::types::PyInt>() {
        let n: i64 = x.extract()?;
        let n = usize::try_from(n)
            .map_err(|_| PyValueError::new_err("[permutation] n cannot be negative"))?;
        return on(stream, || random::permutation(n, k.as_ref())).map(PyArray::from);
    }
    let a = to_array(x, None)?;
    on(stream, || random::permute(&a, axis, k.as_ref())).map(PyArray::from)
}

pub fn register(py: Python<'_>, parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let m = PyModule::new(py, "random")?;
    m.add_function(wrap_pyfunction!(seed, &m)?)?;
    m.add_function(wrap_pyfunction!(key, &m)?)?;
    m.add_function(wrap_pyfunction!(split, &m)?)?;
    m.add_function(wrap_pyfunction!(bits, &m)?)?;
    m.add_function(wrap_pyfunction!(uniform, &m)?)?;
    m.add_function(wrap_pyfunction!(normal, &m)?)?;
    m.add_function(wrap_pyfunction!(randint, &m)?)?;
    m.add_function(wrap_pyfunction!(categorical, &m)?)?;
    m.add_function(wrap_pyfunction!(bernoulli, &m)?)?;
    m.add_function(wrap_pyfunction!(truncated_normal, &m)?)?;
    m.add_function(wrap_pyfunction!(gumbel, &m)?)?;
    m.add_function(wrap_pyfunction!(laplace, &m)?)?;
    m.add_function(wrap_pyfunction!(permutation, &m)?)?;
    crate::add_submodule(parent, &m, "rmlx.core.random")
}
