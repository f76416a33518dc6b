//! MLX affine quantization: `mx.quantize`, `mx.dequantize`, `mx.quantized_matmul`
//! (bit-exact with MLX on the CPU; see DESIGN.md §4 for the format).

use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use crate::dtype::opt_dtype;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rmlx::{ops, Array};

fn check_mode(mode: &str) -> PyResult<()> {
    if mode == "affine" {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "[quantize] mode '{mode}' is not supported; rmlx implements mode='affine'"
        )))
    }
}

fn need_biases(op: &str, biases: Option<Array>) -> PyResult<Array> {
    biases.ok_or_else(|| PyValueError::new_err(format!("[{op}] affine quantization needs biases")))
}

/// Quantizes `w: [..., N, K]` along its last axis into `(wq, scales, biases)`; `wq` is uint32
/// `[..., N, K * bits / 32]`, scales and biases `[..., N, K / group_size]`.
#[pyfunction]
#[pyo3(signature = (w, /, group_size = 64, bits = 4, mode = "affine", *, stream = None))]
fn quantize(
    w: &Bound<'_, PyAny>,
    group_size: usize,
    bits: usize,
    mode: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<(PyArray, PyArray, PyArray)> {
    check_mode(mode)?;
    let w = to_array(w, None)?;
    let (q, s, b) = on(stream, || ops::quantize(&w, group_size, bits))?;
    Ok((q.into(), s.into(), b.into()))
}

/// Unpacks `(w, scales, biases)` back to `[..., N, K]`: `scale * q + bias`.
#[pyfunction]
#[pyo3(signature = (w, /, scales, biases = None, group_size = 64, bits = 4, mode = "affine", dtype = None, *, stream = None))]
#[allow(clippy::too_many_arguments)]
fn dequantize(
    w: &Bound<'_, PyAny>,
    scales: &Bound<'_, PyAny>,
    biases: Option<&Bound<'_, PyAny>>,
    group_size: usize,
    bits: usize,
    mode: &str,
    dtype: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    check_mode(mode)?;
    let (w, s) = (to_array(w, None)?, to_array(scales, None)?);
    let b = need_biases("dequantize", crate::args::opt_array(biases)?)?;
    let d = opt_dtype(dtype)?;
    on(stream, || {
        let out = ops::dequantize(&w, &s, &b, group_size, bits)?;
        Ok::<_, rmlx::Error>(match d {
            Some(d) => ops::astype(&out, d),
            None => out,
        })
    })
    .map(PyArray::from)
}

/// `x @ dequantize(w).T` (`transpose=True`, the layout of `nn.QuantizedLinear`) or
/// `x @ dequantize(w)`, without materialising the dequantized matrix.
#[pyfunction]
#[pyo3(signature = (x, w, /, scales, biases = None, transpose = true, group_size = 64, bits = 4, mode = "affine", *, stream = None))]
#[allow(clippy::too_many_arguments)]
fn quantized_matmul(
    x: &Bound<'_, PyAny>,
    w: &Bound<'_, PyAny>,
    scales: &Bound<'_, PyAny>,
    biases: Option<&Bound<'_, PyAny>>,
    transpose: bool,
    group_size: usize,
    bits: usize,
    mode: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    check_mode(mode)?;
    let (x, w, s) = (
        to_array(x, None)?,
        to_array(w, None)?,
        to_array(scales, None)?,
    );
    let b = need_biases("quantized_matmul", crate::args::opt_array(biases)?)?;
    on(stream, || {
        ops::quantized_matmul(&x, &w, &s, &b, transpose, group_size, bits)
    })
    .map(PyArray::from)
}

/// `quantized_matmul` with a matrix-level gather (MoE experts): `result[i] =
/// quantized_matmul(x[lhs_indices[i]], w[rhs_indices[i]], ...)` over the batch axes of `x`
/// and of the stacked `w`, `scales`, `biases`.
#[pyfunction]
#[pyo3(signature = (x, w, /, scales, biases = None, lhs_indices = None, rhs_indices = None, transpose = true, group_size = None, bits = None, mode = "affine", global_scale = None, *, sorted_indices = false, stream = None))]
#[allow(clippy::too_many_arguments)]
fn gather_qmm(
    x: &Bound<'_, PyAny>,
    w: &Bound<'_, PyAny>,
    scales: &Bound<'_, PyAny>,
    biases: Option<&Bound<'_, PyAny>>,
    lhs_indices: Option<&Bound<'_, PyAny>>,
    rhs_indices: Option<&Bound<'_, PyAny>>,
    transpose: bool,
    group_size: Option<usize>,
    bits: Option<usize>,
    mode: &str,
    global_scale: Option<&Bound<'_, PyAny>>,
    sorted_indices: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    check_mode(mode)?;
    if global_scale.is_some_and(|g| !g.is_none()) {
        return Err(PyValueError::new_err(
            "[gather_qmm] global_scale belongs to the nvfp4 mode; rmlx implements mode='affine'",
        ));
    }
    let (x, w, s) = (
        to_array(x, None)?,
        to_array(w, None)?,
        to_array(scales, None)?,
    );
    let b = need_biases("gather_qmm", crate::args::opt_array(biases)?)?;
    let (li, ri) = (
        crate::args::opt_array(lhs_indices)?,
        crate::args::opt_array(rhs_indices)?,
    );
    let (g, nb) = (group_size.unwrap_or(64), bits.unwrap_or(4));
    on(stream, || {
        ops::gather_qmm(
            &x,
            &w,
            &s,
            &b,
            li.as_ref(),
            ri.as_ref(),
            transpose,
            g,
            nb,
            sorted_indices,
        )
    })
    .map(PyArray::from)
}

/// Matrix product with a matrix-level gather: `result[i] = a[lhs_indices[i]] @
/// b[rhs_indices[i]]`, the indices flat over the batch axes of `a` and `b`.
#[pyfunction]
#[pyo3(signature = (a, b, /, lhs_indices = None, rhs_indices = None, *, sorted_indices = false, stream = None))]
fn gather_mm(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    lhs_indices: Option<&Bound<'_, PyAny>>,
    rhs_indices: Option<&Bound<'_, PyAny>>,
    sorted_indices: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = (to_array(a, None)?, to_array(b, None)?);
    let (li, ri) = (
        crate::args::opt_array(lhs_indices)?,
        crate::args::opt_array(rhs_indices)?,
    );
    on(stream, || {
        ops::gather_mm(&a, &b, li.as_ref(), ri.as_ref(), sorted_indices)
    })
    .map(PyArray::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gather_mm, m)?)?;
    m.add_function(wrap_pyfunction!(gather_qmm, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantized_matmul, m)?)?;
    Ok(())
}
