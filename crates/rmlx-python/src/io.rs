//! `mx.load`, `mx.save`, `mx.save_safetensors`: safetensors tensors load as zero-copy views of
//! the mapped file; `.npy` files load and save single arrays.

use crate::array::{eval_py, PyArray};
use crate::errors::guard;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rmlx::io;
use rmlx::Array;
use std::path::PathBuf;

fn format_of(file: &std::path::Path, format: Option<&str>) -> String {
    format
        .map(str::to_string)
        .or_else(|| file.extension().map(|e| e.to_string_lossy().to_lowercase()))
        .unwrap_or_default()
}

/// Loads a `.safetensors` file (a dict of arrays; with `return_metadata=True` also its
/// metadata dict) or a `.npy` file (one array). `format` overrides the file extension.
#[pyfunction]
#[pyo3(signature = (file, /, format = None, return_metadata = false, *, stream = None))]
fn load(
    py: Python<'_>,
    file: PathBuf,
    format: Option<&str>,
    return_metadata: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let _ = stream;
    match format_of(&file, format).as_str() {
        "safetensors" => {
            let (tensors, meta) = py.detach(|| guard(|| io::load_safetensors(&file)))?;
            let d = PyDict::new(py);
            for (name, a) in tensors {
                d.set_item(name, PyArray::from(a))?;
            }
            if return_metadata {
                let m = PyDict::new(py);
                for (k, v) in meta {
                    m.set_item(k, v)?;
                }
                return Ok((d, m).into_pyobject(py)?.into_any().unbind());
            }
            Ok(d.into_any().unbind())
        }
        "npy" => {
            let a = py.detach(|| guard(|| io::load_npy(&file)))?;
            Ok(PyArray::from(a).into_pyobject(py)?.into_any().unbind())
        }
        f => Err(PyValueError::new_err(format!(
            "[load] cannot load '{}': format '{f}' is not supported (use .safetensors or .npy; \
             GGUF models load with rmlx.lm.load)",
            file.display()
        ))),
    }
}

/// Saves `arrays` (a dict of name → array) to a safetensors file with string `metadata`.
#[pyfunction]
#[pyo3(signature = (file, arrays, metadata = None))]
fn save_safetensors(
    py: Python<'_>,
    file: PathBuf,
    arrays: &Bound<'_, PyDict>,
    metadata: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut named: Vec<(String, Array)> = Vec::with_capacity(arrays.len());
    for (k, v) in arrays.iter() {
        named.push((k.extract()?, crate::convert::to_array(&v, None)?));
    }
    let mut meta = io::Metadata::new();
    if let Some(m) = metadata {
        for (k, v) in m.iter() {
            meta.insert(k.extract()?, v.extract()?);
        }
    }
    let file = if file.extension().is_none() {
        file.with_extension("safetensors")
    } else {
        file
    };
    let all: Vec<Array> = named.iter().map(|(_, a)| a.clone()).collect();
    eval_py(py, &all)?;
    py.detach(|| {
        guard(|| {
            let refs: Vec<(&str, &Array)> = named.iter().map(|(n, a)| (n.as_str(), a)).collect();
            io::save_safetensors(&file, &refs, &meta)
        })
    })
}

/// Saves one array to a `.npy` file (the extension is added when missing).
#[pyfunction]
fn save(py: Python<'_>, file: PathBuf, arr: &Bound<'_, PyAny>) -> PyResult<()> {
    let a = crate::convert::to_array(arr, None)?;
    let file = if file.extension().is_none() {
        file.with_extension("npy")
    } else {
        file
    };
    py.detach(|| guard(|| io::save_npy(&file, &a)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(save_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    Ok(())
}
