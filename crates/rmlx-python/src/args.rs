//! Reading MLX-style arguments: axes (`int` or sequence), shapes, optional arrays.

use crate::convert::to_array;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use rmlx::Array;

/// `axis=`/`axes=`: None (all axes), an int, or a sequence of ints.
pub fn axes(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<i32>>> {
    match ob.filter(|o| !o.is_none()) {
        None => Ok(None),
        Some(o) => {
            if let Ok(i) = o.extract::<i32>() {
                Ok(Some(vec![i]))
            } else {
                o.extract::<Vec<i32>>()
                    .map(Some)
                    .map_err(|_| PyTypeError::new_err("axis must be an int or a sequence of ints"))
            }
        }
    }
}

/// A shape: an int or a sequence of ints (`-1` allowed where `signed`).
pub fn shape_i64(ob: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Ok(i) = ob.extract::<i64>() {
        return Ok(vec![i]);
    }
    ob.extract::<Vec<i64>>()
        .map_err(|_| PyTypeError::new_err("shape must be an int or a sequence of ints"))
}

/// A shape of non-negative sizes.
pub fn shape(ob: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let s = shape_i64(ob)?;
    s.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!("shape {s:?} has a negative size"))
            })
        })
        .collect()
}

/// An optional array argument (None stays None).
pub fn opt_array(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Array>> {
    ob.filter(|o| !o.is_none())
        .map(|o| to_array(o, None))
        .transpose()
}

/// Arrays from `*args`-style values: arrays, and lists/tuples/dicts of them (nested), as
/// `mx.eval` accepts.
pub fn collect_arrays(ob: &Bound<'_, PyAny>, out: &mut Vec<Array>) -> PyResult<()> {
    use pyo3::types::{PyDict, PyList, PyTuple};
    if let Ok(a) = ob.cast::<crate::array::PyArray>() {
        out.push(a.borrow().inner.clone());
    } else if ob.is_instance_of::<PyList>() || ob.is_instance_of::<PyTuple>() {
        for x in ob.try_iter()? {
            collect_arrays(&x?, out)?;
        }
    } else if let Ok(d) = ob.cast::<PyDict>() {
        for v in d.values() {
            collect_arrays(&v, out)?;
        }
    }
    // Other leaves (None, strings, numbers) are skipped, as in MLX.
    Ok(())
}
