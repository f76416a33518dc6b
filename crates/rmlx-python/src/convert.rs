//! Python values → arrays: scalars (with MLX's weak typing against the other operand), nested
//! lists, and anything with the buffer protocol (NumPy, memoryview, bytes-likes).
//!
//! A read-only, C-contiguous buffer of a supported dtype becomes an array over the same memory
//! (zero-copy; the array keeps the exporter alive). A writable one is copied once, because a
//! lazy array must not see later writes to the NumPy array it came from (MLX copies too).

use crate::array::PyArray;
use crate::errors::to_py;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyTuple};
use rmlx::dtype::Bool8;
use rmlx::{ops, Array, Dtype, MappedBytes};
use std::sync::Arc;

/// A Python scalar or an array, before scalars learn their dtype from the other operand.
pub enum Operand {
    Array(Array),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// Reads an op argument; lists and buffers become arrays, Python scalars stay scalars.
pub fn operand(ob: &Bound<'_, PyAny>) -> PyResult<Operand> {
    if let Ok(a) = ob.cast::<PyArray>() {
        return Ok(Operand::Array(a.borrow().inner.clone()));
    }
    if ob.is_instance_of::<PyBool>() {
        return Ok(Operand::Bool(ob.extract()?));
    }
    if ob.is_instance_of::<PyInt>() {
        return Ok(Operand::Int(ob.extract()?));
    }
    if ob.is_instance_of::<PyFloat>() {
        return Ok(Operand::Float(ob.extract()?));
    }
    Ok(Operand::Array(to_array(ob, None)?))
}

impl Operand {
    /// The dtype a scalar takes next to an array of `other` (MLX's weak scalars: a Python
    /// int keeps an integer or float array's dtype, a float keeps a float array's dtype).
    pub fn resolve(self, other: Option<Dtype>) -> Array {
        match self {
            Operand::Array(a) => a,
            Operand::Bool(b) => Array::scalar(Bool8(b as u8)),
            Operand::Int(i) => match other {
                Some(d) if d != Dtype::Bool => Array::scalar_of(i as f64, d),
                _ => int_scalar(i),
            },
            Operand::Float(f) => match other {
                Some(d) if d.is_float() => Array::scalar_of(f, d),
                _ => Array::scalar(f as f32),
            },
        }
    }

    pub fn dtype(&self) -> Option<Dtype> {
        match self {
            Operand::Array(a) => Some(a.dtype()),
            _ => None,
        }
    }
}

fn int_scalar(i: i64) -> Array {
    match i32::try_from(i) {
        Ok(v) => Array::scalar(v),
        Err(_) => Array::scalar(i),
    }
}

/// Two operands as arrays, each scalar typed by the other side.
pub fn operands(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<(Array, Array)> {
    let (a, b) = (operand(a)?, operand(b)?);
    let (da, db) = (a.dtype(), b.dtype());
    Ok((a.resolve(db), b.resolve(da)))
}

/// Any array-like as an array (`mx.array(ob, dtype)`).
pub fn to_array(ob: &Bound<'_, PyAny>, dtype: Option<Dtype>) -> PyResult<Array> {
    let a = to_array_native(ob, dtype)?;
    Ok(match dtype {
        Some(d) if d != a.dtype() => ops::astype(&a, d),
        _ => a,
    })
}

fn to_array_native(ob: &Bound<'_, PyAny>, dtype: Option<Dtype>) -> PyResult<Array> {
    if let Ok(a) = ob.cast::<PyArray>() {
        return Ok(a.borrow().inner.clone());
    }
    if ob.is_instance_of::<PyBool>() {
        return Ok(Array::scalar(Bool8(ob.extract::<bool>()? as u8)));
    }
    if ob.is_instance_of::<PyInt>() {
        let i: i64 = ob.extract()?;
        return Ok(match dtype {
            Some(d) => Array::scalar_of(i as f64, d),
            None => int_scalar(i),
        });
    }
    if ob.is_instance_of::<PyFloat>() {
        let f: f64 = ob.extract()?;
        return Ok(Array::scalar_of(
            f,
            dtype.filter(|d| d.is_float()).unwrap_or(Dtype::F32),
        ));
    }
    if ob.is_instance_of::<PyList>() || ob.is_instance_of::<PyTuple>() {
        return from_nested(ob, dtype);
    }
    // NumPy scalars (np.float32(1.0)) and arrays, memoryviews, bytes-likes.
    if let Some(a) = from_buffer(ob)? {
        return Ok(a);
    }
    if ob.hasattr("__array__")? {
        let np = ob.py().import("numpy")?;
        let arr = np.call_method1("asarray", (ob,))?;
        if let Some(a) = from_buffer(&arr)? {
            return Ok(a);
        }
    }
    Err(PyTypeError::new_err(format!(
        "[array] cannot make an array from {}; expected a scalar, a (nested) list or tuple, \
         an rmlx array or a NumPy array",
        ob.get_type().name()?
    )))
}

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Kind {
    Bool,
    Int,
    Float,
}

/// Nested lists/tuples of scalars (or of arrays, which are stacked).
fn from_nested(ob: &Bound<'_, PyAny>, dtype: Option<Dtype>) -> PyResult<Array> {
    let first = ob.get_item(0).ok();
    if let Some(f) = &first {
        if f.cast::<PyArray>().is_ok() || from_buffer_check(f) {
            let items: Vec<Array> = ob
                .try_iter()?
                .map(|x| to_array(&x?, dtype))
                .collect::<PyResult<_>>()?;
            return crate::errors::guard(|| ops::stack(&items, 0));
        }
    }
    let mut shape = Vec::new();
    let mut vals: Vec<f64> = Vec::new();
    let mut ints: Vec<i64> = Vec::new();
    let mut kind = Kind::Bool;
    walk(ob, 0, &mut shape, &mut vals, &mut ints, &mut kind)?;
    let want = dtype.unwrap_or(match kind {
        Kind::Bool => Dtype::Bool,
        Kind::Int if ints.iter().all(|&i| i32::try_from(i).is_ok()) => Dtype::I32,
        Kind::Int => Dtype::I64,
        Kind::Float => Dtype::F32,
    });
    let res = if kind != Kind::Float && matches!(want, Dtype::I64 | Dtype::I32 | Dtype::U32) {
        // Integers exactly (f64 would round past 2^53).
        Array::from_slice(&ints, &shape).map(|a| ops::astype(&a, want))
    } else {
        rmlx::dispatch_dtype!(want, T => {
            let v: Vec<T> = vals.iter().map(|&x| <T as rmlx::Element>::from_f64(x)).collect();
            Array::from_slice(&v, &shape)
        })
    };
    res.map_err(to_py)
}

fn walk(
    ob: &Bound<'_, PyAny>,
    depth: usize,
    shape: &mut Vec<usize>,
    vals: &mut Vec<f64>,
    ints: &mut Vec<i64>,
    kind: &mut Kind,
) -> PyResult<()> {
    if ob.is_instance_of::<PyList>() || ob.is_instance_of::<PyTuple>() {
        let n = ob.len()?;
        if shape.len() == depth && vals.is_empty() {
            // The first path down fixes the shape; later lists must match it.
            shape.push(n);
        } else if shape.len() <= depth || shape[depth] != n {
            return Err(ragged());
        }
        for x in ob.try_iter()? {
            walk(&x?, depth + 1, shape, vals, ints, kind)?;
        }
        return Ok(());
    }
    if shape.len() != depth {
        return Err(ragged());
    }
    let (v, i, k) = if ob.is_instance_of::<PyBool>() {
        let b: bool = ob.extract()?;
        (b as u8 as f64, b as i64, Kind::Bool)
    } else if ob.is_instance_of::<PyInt>() {
        let i: i64 = ob.extract()?;
        (i as f64, i, Kind::Int)
    } else if let Ok(f) = ob.extract::<f64>() {
        (f, f as i64, Kind::Float)
    } else {
        return Err(PyTypeError::new_err(format!(
            "[array] lists may hold only numbers and booleans, found {}",
            ob.get_type().name()?
        )));
    };
    if k > *kind {
        *kind = k;
    }
    vals.push(v);
    ints.push(i);
    Ok(())
}

fn ragged() -> PyErr {
    PyValueError::new_err(
        "[array] the nested lists are ragged: every list at one depth must have the same length",
    )
}

fn from_buffer_check(ob: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a plain query of the type slot.
    let has = unsafe { ffi::PyObject_CheckBuffer(ob.as_ptr()) == 1 };
    has && !ob.is_instance_of::<pyo3::types::PyBytes>()
}

/// An exported buffer, released (under the GIL) when the last array over it goes.
struct PyBuf {
    view: Box<ffi::Py_buffer>,
}

// SAFETY: the exporter keeps the memory valid until release; it is only read.
unsafe impl Send for PyBuf {}
unsafe impl Sync for PyBuf {}

impl Drop for PyBuf {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer.
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut *self.view) });
    }
}

impl MappedBytes for PyBuf {
    fn bytes(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: buf is valid for len bytes while the view is held.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl PyBuf {
    fn get(ob: &Bound<'_, PyAny>) -> PyResult<PyBuf> {
        // SAFETY: Py_buffer is plain data; zeroed is its documented initial state.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        let flags = ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_FORMAT;
        // SAFETY: ob is a live object; view is writable storage for the struct.
        if unsafe { ffi::PyObject_GetBuffer(ob.as_ptr(), &mut *view, flags) } != 0 {
            return Err(PyErr::fetch(ob.py()));
        }
        Ok(PyBuf { view })
    }

    fn shape(&self) -> Vec<usize> {
        let nd = self.view.ndim as usize;
        if nd == 0 || self.view.shape.is_null() {
            if nd == 0 {
                return vec![];
            }
            return vec![self.view.len as usize / self.view.itemsize.max(1) as usize];
        }
        // SAFETY: shape has ndim entries.
        unsafe { std::slice::from_raw_parts(self.view.shape, nd) }
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    fn format(&self) -> String {
        if self.view.format.is_null() {
            return "B".into();
        }
        // SAFETY: a NUL-terminated format string owned by the exporter.
        unsafe { std::ffi::CStr::from_ptr(self.view.format) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A buffer's element type: one rmlx holds as it is, or one converted on the way in.
#[derive(Clone, Copy, Debug)]
enum Src {
    Native(Dtype),
    I8,
    I16,
    U16,
    F64,
}

fn parse_format(fmt: &str, itemsize: usize) -> PyResult<Src> {
    let f = fmt.trim_start_matches(['@', '=', '<']);
    if f.starts_with(['>', '!']) {
        return Err(PyTypeError::new_err(format!(
            "[array] big-endian buffers ('{fmt}') are not supported; convert with \
             .astype(x.dtype.newbyteorder('<')) first"
        )));
    }
    Ok(match (f, itemsize) {
        ("?", 1) => Src::Native(Dtype::Bool),
        ("B", 1) | ("c", 1) => Src::Native(Dtype::U8),
        ("b", 1) => Src::I8,
        ("h", 2) => Src::I16,
        ("H", 2) => Src::U16,
        ("i", 4) | ("l", 4) => Src::Native(Dtype::I32),
        ("I", 4) | ("L", 4) => Src::Native(Dtype::U32),
        ("l", 8) | ("q", 8) => Src::Native(Dtype::I64),
        ("e", 2) => Src::Native(Dtype::F16),
        ("f", 4) => Src::Native(Dtype::F32),
        ("d", 8) => Src::F64,
        _ => {
            return Err(PyTypeError::new_err(format!(
                "[array] buffer format '{fmt}' ({itemsize}-byte items) is not supported; \
                 rmlx holds bool, uint8, uint32, int32, int64, float16, bfloat16 and float32 \
                 (int8/int16/uint16 widen, float64 narrows to float32)"
            )))
        }
    })
}

/// An array from an object with the buffer protocol; `None` when it has none.
pub fn from_buffer(ob: &Bound<'_, PyAny>) -> PyResult<Option<Array>> {
    if !from_buffer_check(ob) {
        return Ok(None);
    }
    let buf = match PyBuf::get(ob) {
        Ok(b) => b,
        Err(e)
            if e.is_instance_of::<PyBufferError>(ob.py())
                || e.is_instance_of::<PyValueError>(ob.py()) =>
        {
            // Not C-contiguous (NumPy raises ValueError): let NumPy lay it out, then take
            // that buffer.
            let np = ob.py().import("numpy")?;
            let c = np.call_method1("ascontiguousarray", (ob,))?;
            PyBuf::get(&c)?
        }
        Err(e) => return Err(e),
    };
    let shape = buf.shape();
    let itemsize = buf.view.itemsize as usize;
    let src = parse_format(&buf.format(), itemsize)?;
    let bytes = buf.bytes();
    let a = match src {
        Src::Native(d) => {
            let aligned = (bytes.as_ptr() as usize).is_multiple_of(d.size());
            if buf.view.readonly != 0 && aligned {
                let owner: Arc<dyn MappedBytes> = Arc::new(buf);
                Array::from_mapped(owner, 0, &shape, d).map_err(to_py)?
            } else {
                Array::from_bytes(bytes, &shape, d).map_err(to_py)?
            }
        }
        Src::I8 => conv::<i8, i32>(bytes, &shape),
        Src::I16 => conv::<i16, i32>(bytes, &shape),
        Src::U16 => conv::<u16, u32>(bytes, &shape),
        Src::F64 => conv::<f64, f32>(bytes, &shape),
    };
    Ok(Some(a))
}

trait Cast<T> {
    fn cast_to(self) -> T;
}
impl Cast<i32> for i8 {
    fn cast_to(self) -> i32 {
        self as i32
    }
}
impl Cast<i32> for i16 {
    fn cast_to(self) -> i32 {
        self as i32
    }
}
impl Cast<u32> for u16 {
    fn cast_to(self) -> u32 {
        self as u32
    }
}
impl Cast<f32> for f64 {
    fn cast_to(self) -> f32 {
        self as f32
    }
}

/// Elementwise conversion of a byte buffer of `S` (possibly unaligned) to an array of `T`.
fn conv<S: bytemuck::Pod + Cast<T>, T: rmlx::Element>(bytes: &[u8], shape: &[usize]) -> Array {
    let n = std::mem::size_of::<S>();
    let v: Vec<T> = bytes
        .chunks_exact(n)
        .map(|c| bytemuck::pod_read_unaligned::<S>(c).cast_to())
        .collect();
    Array::from_slice(&v, shape).expect("element count matches the buffer's shape")
}
