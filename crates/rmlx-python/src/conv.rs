//! Convolutions: `mx.conv1d`, `mx.conv2d`, `mx.conv3d`, `mx.conv_general`,
//! `mx.conv_transpose1d/2d/3d`, `mx.convolve` (channels last, as MLX).

use crate::array::PyArray;
use crate::convert::to_array;
use crate::device::on;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rmlx::ops::{self, ConvOptions};

/// An int or a sequence of ints, as non-negative sizes.
fn sizes(what: &str, ob: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let v: Vec<i64> = match ob.extract::<i64>() {
        Ok(i) => vec![i],
        Err(_) => ob.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "[conv] {what} must be an int or a sequence of ints"
            ))
        })?,
    };
    v.iter()
        .map(|&i| {
            usize::try_from(i).map_err(|_| {
                PyValueError::new_err(format!("[conv] {what} must not be negative, got {v:?}"))
            })
        })
        .collect()
}

fn conv_nd(
    input: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    stride: &Bound<'_, PyAny>,
    padding: &Bound<'_, PyAny>,
    dilation: &Bound<'_, PyAny>,
    groups: usize,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (x, w) = (to_array(input, None)?, to_array(weight, None)?);
    let pad: Vec<i64> = sizes("padding", padding)?
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let o = ConvOptions {
        stride: sizes("stride", stride)?,
        padding_lo: pad.clone(),
        padding_hi: pad,
        kernel_dilation: sizes("dilation", dilation)?,
        groups,
        ..ConvOptions::default()
    };
    on(stream, || ops::conv_general(&x, &w, &o)).map(PyArray::from)
}

macro_rules! conv_fns {
    ($($(#[$m:meta])* $name:ident => $nd:literal;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (input, weight, /, stride = None, padding = None, dilation = None, groups = 1, *, stream = None))]
        #[allow(clippy::too_many_arguments)]
        fn $name(
            py: Python<'_>,
            input: &Bound<'_, PyAny>,
            weight: &Bound<'_, PyAny>,
            stride: Option<&Bound<'_, PyAny>>,
            padding: Option<&Bound<'_, PyAny>>,
            dilation: Option<&Bound<'_, PyAny>>,
            groups: usize,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let one = 1i64.into_pyobject(py)?.into_any();
            let zero = 0i64.into_pyobject(py)?.into_any();
            let x = to_array(input, None)?;
            if x.ndim() != $nd + 2 {
                return Err(PyValueError::new_err(format!(
                    "[conv] invalid input array with {} dimensions for {}D convolution: expected [N, ..., C_in] with {} dimensions",
                    x.ndim(), $nd, $nd + 2
                )));
            }
            conv_nd(
                input,
                weight,
                stride.unwrap_or(&one),
                padding.unwrap_or(&zero),
                dilation.unwrap_or(&one),
                groups,
                stream,
            )
        }
    )*};
}

conv_fns! {
    /// 1-D convolution (cross-correlation) of `input: [N, L, C_in]` with
    /// `weight: [C_out, K, C_in / groups]`.
    conv1d => 1;
    /// 2-D convolution of `input: [N, H, W, C_in]` with `weight: [C_out, KH, KW, C_in / groups]`;
    /// `stride`, `padding`, `dilation` are ints or pairs.
    conv2d => 2;
    /// 3-D convolution of `input: [N, D, H, W, C_in]` with
    /// `weight: [C_out, KD, KH, KW, C_in / groups]`.
    conv3d => 3;
}

/// The general convolution: `padding` an int, a list (both sides) or a pair of lists (low,
/// high); `kernel_dilation`; `input_dilation` (zeros between input elements); `flip` for a
/// true convolution.
#[pyfunction]
#[pyo3(signature = (input, weight, /, stride = None, padding = None, kernel_dilation = None, input_dilation = None, groups = 1, flip = false, *, stream = None))]
#[allow(clippy::too_many_arguments)]
fn conv_general(
    input: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    stride: Option<&Bound<'_, PyAny>>,
    padding: Option<&Bound<'_, PyAny>>,
    kernel_dilation: Option<&Bound<'_, PyAny>>,
    input_dilation: Option<&Bound<'_, PyAny>>,
    groups: usize,
    flip: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (x, w) = (to_array(input, None)?, to_array(weight, None)?);
    let opt = |v: Option<&Bound<'_, PyAny>>, what: &str| -> PyResult<Vec<usize>> {
        v.filter(|v| !v.is_none())
            .map(|v| sizes(what, v))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let ints = |v: &Bound<'_, PyAny>| -> PyResult<Vec<i64>> {
        match v.extract::<i64>() {
            Ok(i) => Ok(vec![i]),
            Err(_) => v.extract::<Vec<i64>>(),
        }
    };
    let (lo, hi) = match padding.filter(|p| !p.is_none()) {
        None => (vec![], vec![]),
        Some(p) => match ints(p) {
            Ok(v) => (v.clone(), v),
            Err(_) => p.extract::<(Vec<i64>, Vec<i64>)>().map_err(|_| {
                PyTypeError::new_err(
                    "[conv] padding must be an int, a sequence of ints or a pair (low, high) of them",
                )
            })?,
        },
    };
    let o = ConvOptions {
        stride: opt(stride, "stride")?,
        padding_lo: lo,
        padding_hi: hi,
        kernel_dilation: opt(kernel_dilation, "kernel_dilation")?,
        input_dilation: opt(input_dilation, "input_dilation")?,
        groups,
        flip,
    };
    on(stream, || ops::conv_general(&x, &w, &o)).map(PyArray::from)
}

macro_rules! conv_transpose_fns {
    ($($(#[$m:meta])* $name:ident => $nd:literal;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (input, weight, /, stride = None, padding = None, dilation = None, output_padding = None, groups = 1, *, stream = None))]
        #[allow(clippy::too_many_arguments)]
        fn $name(
            input: &Bound<'_, PyAny>,
            weight: &Bound<'_, PyAny>,
            stride: Option<&Bound<'_, PyAny>>,
            padding: Option<&Bound<'_, PyAny>>,
            dilation: Option<&Bound<'_, PyAny>>,
            output_padding: Option<&Bound<'_, PyAny>>,
            groups: usize,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let (x, w) = (to_array(input, None)?, to_array(weight, None)?);
            if x.ndim() != $nd + 2 {
                return Err(PyValueError::new_err(format!(
                    "[conv] invalid input array with {} dimensions for {}D convolution: expected [N, ..., C_in] with {} dimensions",
                    x.ndim(), $nd, $nd + 2
                )));
            }
            let get = |v: Option<&Bound<'_, PyAny>>, what: &str| -> PyResult<Vec<usize>> {
                v.filter(|v| !v.is_none())
                    .map(|v| sizes(what, v))
                    .transpose()
                    .map(Option::unwrap_or_default)
            };
            let (s, p) = (get(stride, "stride")?, get(padding, "padding")?);
            let (d, op) = (get(dilation, "dilation")?, get(output_padding, "output_padding")?);
            on(stream, || ops::conv_transpose(&x, &w, &s, &p, &d, &op, groups)).map(PyArray::from)
        }
    )*};
}

conv_transpose_fns! {
    /// 1-D transposed convolution of `input: [N, L, C_in]` with `weight: [C_out, K, C_in]`.
    conv_transpose1d => 1;
    /// 2-D transposed convolution of `input: [N, H, W, C_in]` with
    /// `weight: [C_out, KH, KW, C_in]`.
    conv_transpose2d => 2;
    /// 3-D transposed convolution of `input: [N, D, H, W, C_in]` with
    /// `weight: [C_out, KD, KH, KW, C_in]`.
    conv_transpose3d => 3;
}

/// The discrete convolution of two 1-D arrays (the longer is the signal, the kernel is
/// flipped): `mode` "full", "same" or "valid".
#[pyfunction]
#[pyo3(signature = (a, v, /, mode = "full", *, stream = None))]
fn convolve(
    a: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
    mode: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, v) = (to_array(a, None)?, to_array(v, None)?);
    on(stream, || ops::convolve(&a, &v, mode)).map(PyArray::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => {$( m.add_function(wrap_pyfunction!($f, m)?)?; )*};
    }
    add!(
        conv1d,
        conv2d,
        conv3d,
        conv_general,
        conv_transpose1d,
        conv_transpose2d,
        conv_transpose3d,
        convolve
    );
    Ok(())
}
