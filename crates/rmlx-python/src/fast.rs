//! `mx.fast`: fused ops with a kernel per backend (and a composed fallback).

use crate::args::opt_array;
use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rmlx::{fast, Array};

/// RMS normalisation over the last axis: `x * rsqrt(mean(x^2) + eps) * weight`.
#[pyfunction]
#[pyo3(signature = (x, weight, eps, *, stream = None))]
fn rms_norm(
    x: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    eps: f32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (x, w) = (to_array(x, None)?, opt_array(weight)?);
    on(stream, || fast::rms_norm(&x, w.as_ref(), eps)).map(PyArray::from)
}

/// Layer normalisation over the last axis, `weight` and `bias` optional.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, eps, *, stream = None))]
fn layer_norm(
    x: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    bias: Option<&Bound<'_, PyAny>>,
    eps: f32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (x, w, b) = (to_array(x, None)?, opt_array(weight)?, opt_array(bias)?);
    on(stream, || fast::layer_norm(&x, w.as_ref(), b.as_ref(), eps)).map(PyArray::from)
}

/// Rotary position embedding of the first `dims` features of `a` (at least 3-D), at
/// positions `offset + l` (an int, or an array of one offset per batch entry).
#[pyfunction]
#[pyo3(signature = (a, dims, *, traditional, base, scale, offset, freqs = None, stream = None))]
#[allow(clippy::too_many_arguments)]
fn rope(
    a: &Bound<'_, PyAny>,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Bound<'_, PyAny>,
    freqs: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let off = to_array(offset, None)?;
    let f = opt_array(freqs)?;
    on(stream, || {
        fast::rope(&a, dims, traditional, base, scale, &off, f.as_ref())
    })
    .map(PyArray::from)
}

/// `softmax(q k^T * scale + mask) v` with grouped-query heads; `mask` is None, `"causal"`, or
/// an array (bool: keep where true; float: added).
#[pyfunction]
#[pyo3(signature = (q, k, v, *, scale, mask = None, stream = None))]
#[allow(clippy::too_many_arguments)]
fn scaled_dot_product_attention(
    q: &Bound<'_, PyAny>,
    k: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
    scale: f32,
    mask: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (q, k, v) = (to_array(q, None)?, to_array(k, None)?, to_array(v, None)?);
    let mask_arr: Option<Array>;
    let m = match mask.filter(|m| !m.is_none()) {
        None => fast::Mask::None,
        Some(m) => {
            if let Ok(s) = m.extract::<String>() {
                if s != "causal" {
                    return Err(PyValueError::new_err(format!(
                        "[scaled_dot_product_attention] mask must be None, \"causal\" or an array, got \"{s}\""
                    )));
                }
                fast::Mask::Causal
            } else {
                mask_arr = Some(to_array(m, None)?);
                fast::Mask::Array(mask_arr.as_ref().expect("just set"))
            }
        }
    };
    on(stream, || {
        fast::scaled_dot_product_attention(&q, &k, &v, scale, m)
    })
    .map(PyArray::from)
}

pub fn register(py: Python<'_>, parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let m = PyModule::new(py, "fast")?;
    m.add_function(wrap_pyfunction!(rms_norm, &m)?)?;
    m.add_function(wrap_pyfunction!(layer_norm, &m)?)?;
    m.add_function(wrap_pyfunction!(rope, &m)?)?;
    m.add_function(wrap_pyfunction!(scaled_dot_product_attention, &m)?)?;
    crate::add_submodule(parent, &m, "rmlx.core.fast")
}
