//! `mx.array`: construction, properties, conversion back to Python and NumPy (buffer
//! protocol, zero-copy), operators with broadcasting and weak Python scalars, and the
//! method forms of the common ops.

use crate::args;
use crate::convert::{operand, operands, to_array};
use crate::device::on;
use crate::dtype::{extract_dtype, opt_dtype, PyDtype};
use crate::errors::guard;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use pyo3::{ffi, IntoPyObjectExt};
use rmlx::dtype::Bool8;
use rmlx::{ops, Array, ArrayData, Dtype};
use std::os::raw::c_int;

/// An n-dimensional lazy array, as `mlx.core.array`: ops build a graph, values are computed
/// by `mx.eval` or when read (`item`, `tolist`, printing, NumPy conversion).
#[pyclass(name = "array", module = "rmlx.core", sequence)]
pub struct PyArray {
    pub inner: Array,
}

impl From<Array> for PyArray {
    fn from(inner: Array) -> Self {
        PyArray { inner }
    }
}

/// Evaluates `arrays` with the GIL released.
pub fn eval_py(py: Python<'_>, arrays: &[Array]) -> PyResult<()> {
    py.detach(|| guard(|| rmlx::eval(arrays)))
}

/// Host values of an evaluated array, in the Python type each dtype reads as.
enum Values {
    Bool(Vec<Bool8>),
    Int(Vec<i64>),
    Float(Vec<f32>),
}

fn host_values(py: Python<'_>, a: &Array) -> PyResult<Values> {
    let a = a.clone();
    py.detach(move || {
        guard(|| {
            let d = a.dtype();
            Ok::<_, rmlx::Error>(if d == Dtype::Bool {
                Values::Bool(a.to_vec::<Bool8>()?)
            } else if d.is_integer() {
                Values::Int(a.to_vec::<i64>()?)
            } else {
                Values::Float(a.to_vec::<f32>()?)
            })
        })
    })
}

fn value_at(py: Python<'_>, v: &Values, i: usize) -> PyResult<Py<PyAny>> {
    match v {
        Values::Bool(b) => (b[i].0 != 0).into_py_any(py),
        Values::Int(x) => x[i].into_py_any(py),
        Values::Float(x) => (x[i] as f64).into_py_any(py),
    }
}

fn nested(py: Python<'_>, v: &Values, shape: &[usize], start: usize) -> PyResult<Py<PyAny>> {
    if shape.is_empty() {
        return value_at(py, v, start);
    }
    let inner: usize = shape[1..].iter().product();
    let items = (0..shape[0])
        .map(|i| nested(py, v, &shape[1..], start + i * inner))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any().unbind())
}

/// What a buffer export keeps alive: the data and the shape/stride arrays it points into.
struct Export {
    _data: ArrayData,
    shape: Vec<ffi::Py_ssize_t>,
    strides: Vec<ffi::Py_ssize_t>,
}

fn buffer_format(d: Dtype) -> Option<&'static std::ffi::CStr> {
    Some(match d {
        Dtype::Bool => c"?",
        Dtype::U8 => c"B",
        Dtype::U32 => c"I",
        Dtype::I32 => c"i",
        Dtype::I64 => c"q",
        Dtype::F16 => c"e",
        Dtype::F32 => c"f",
        Dtype::BF16 => return None,
    })
}

impl PyArray {
    fn binop(
        &self,
        other: &Bound<'_, PyAny>,
        f: fn(&Array, &Array) -> rmlx::Result<Array>,
        reflected: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let o = match operand(other) {
            Ok(o) => o,
            // Unknown operand types let Python try the other side's method.
            Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                return Ok(py.NotImplemented());
            }
            Err(e) => return Err(e),
        };
        let o = o.resolve(Some(self.inner.dtype()));
        let r = if reflected {
            guard(|| f(&o, &self.inner))?
        } else {
            guard(|| f(&self.inner, &o))?
        };
        PyArray::from(r).into_py_any(py)
    }

    fn scalar_value(&self, py: Python<'_>, what: &str) -> PyResult<Py<PyAny>> {
        if self.inner.size() != 1 {
            return Err(PyValueError::new_err(format!(
                "[{what}] only arrays with one element can be converted to Python scalars, got shape {:?}",
                self.inner.shape()
            )));
        }
        let v = host_values(py, &self.inner)?;
        value_at(py, &v, 0)
    }
}

macro_rules! binops {
    ($($name:ident, $rname:ident => $f:path;)*) => {
        #[pymethods]
        impl PyArray {$(
            fn $name(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                self.binop(other, $f, false)
            }
            fn $rname(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                self.binop(other, $f, true)
            }
        )*}
    };
}

binops! {
    __add__, __radd__ => ops::add;
    __sub__, __rsub__ => ops::subtract;
    __mul__, __rmul__ => ops::multiply;
    __truediv__, __rtruediv__ => ops::divide;
    __floordiv__, __rfloordiv__ => ops::floor_divide;
    __mod__, __rmod__ => ops::remainder;
    __matmul__, __rmatmul__ => ops::matmul;
    __and__, __rand__ => bitwise_or_logical_and;
    __or__, __ror__ => bitwise_or_logical_or;
    __xor__, __rxor__ => ops::bitwise_xor;
    __lshift__, __rlshift__ => ops::left_shift;
    __rshift__, __rrshift__ => ops::right_shift;
}

/// `&` on bool arrays is logical, on integers bitwise (as MLX).
fn bitwise_or_logical_and(a: &Array, b: &Array) -> rmlx::Result<Array> {
    if a.dtype() == Dtype::Bool && b.dtype() == Dtype::Bool {
        ops::logical_and(a, b)
    } else {
        ops::bitwise_and(a, b)
    }
}

fn bitwise_or_logical_or(a: &Array, b: &Array) -> rmlx::Result<Array> {
    if a.dtype() == Dtype::Bool && b.dtype() == Dtype::Bool {
        ops::logical_or(a, b)
    } else {
        ops::bitwise_or(a, b)
    }
}

macro_rules! reductions {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {
        #[pymethods]
        impl PyArray {$(
            $(#[$m])*
            #[pyo3(signature = (axis = None, keepdims = false, *, stream = None))]
            fn $name(
                &self,
                axis: Option<&Bound<'_, PyAny>>,
                keepdims: bool,
                stream: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<PyArray> {
                let ax = args::axes(axis)?;
                on(stream, || $f(&self.inner, ax.as_deref(), keepdims)).map(PyArray::from)
            }
        )*}
    };
}

reductions! {
    /// Sum over `axis` (all axes when None).
    sum => ops::sum;
    /// Product over `axis`.
    prod => ops::prod;
    /// Maximum over `axis`.
    max => ops::max;
    /// Minimum over `axis`.
    min => ops::min;
    /// Mean over `axis`.
    mean => ops::mean;
    /// Whether any element over `axis` is true.
    any => ops::any;
    /// Whether all elements over `axis` are true.
    all => ops::all;
    /// `log(sum(exp(x)))` over `axis`, computed stably.
    logsumexp => ops::logsumexp;
}

macro_rules! unary_methods {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {
        #[pymethods]
        impl PyArray {$(
            $(#[$m])*
            #[pyo3(signature = (*, stream = None))]
            fn $name(&self, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
                on(stream, || Ok::<_, rmlx::Error>($f(&self.inner))).map(PyArray::from)
            }
        )*}
    };
}

unary_methods! {
    /// Elementwise absolute value.
    abs => ops::abs;
    /// Elementwise `e^x`.
    exp => ops::exp;
    /// Elementwise natural logarithm.
    log => ops::log;
    /// Elementwise `log(1 + x)`.
    log1p => ops::log1p;
    /// Elementwise square root.
    sqrt => ops::sqrt;
    /// Elementwise `1 / sqrt(x)`.
    rsqrt => ops::rsqrt;
    /// Elementwise `x * x`.
    square => ops::square;
    /// Elementwise sine.
    sin => ops::sin;
    /// Elementwise cosine.
    cos => ops::cos;
    /// Elementwise `1 / x`.
    reciprocal => ops::reciprocal;
}

macro_rules! scan_methods {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {
        #[pymethods]
        impl PyArray {$(
            $(#[$m])*
            #[pyo3(signature = (axis = None, *, reverse = false, inclusive = true, stream = None))]
            fn $name(
                &self,
                axis: Option<i32>,
                reverse: bool,
                inclusive: bool,
                stream: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<PyArray> {
                on(stream, || $f(&self.inner, axis, reverse, inclusive)).map(PyArray::from)
            }
        )*}
    };
}

scan_methods! {
    /// Cumulative sum along `axis` (of the flattened array when None).
    cumsum => ops::cumsum;
    /// Cumulative product along `axis`.
    cumprod => ops::cumprod;
    /// Cumulative maximum along `axis`.
    cummax => ops::cummax;
    /// Cumulative minimum along `axis`.
    cummin => ops::cummin;
}

#[pymethods]
impl PyArray {
    /// `mx.array(val, dtype=None)`: from a Python scalar, a nested list or tuple, another
    /// array, or any object with the buffer protocol (NumPy). Python ints give int32 (int64
    /// when too large), floats float32, NumPy float64 becomes float32.
    #[new]
    #[pyo3(signature = (val, dtype = None))]
    fn new(val: &Bound<'_, PyAny>, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let d = opt_dtype(dtype)?;
        Ok(PyArray::from(to_array(val, d)?))
    }

    /// The element type.
    #[getter]
    fn dtype(&self) -> PyDtype {
        PyDtype(self.inner.dtype())
    }

    /// The dimensions, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.shape())
    }

    /// The number of dimensions.
    #[getter]
    fn ndim(&self) -> usize {
        self.inner.ndim()
    }

    /// The number of elements.
    #[getter]
    fn size(&self) -> usize {
        self.inner.size()
    }

    /// Bytes of the elements (`size * itemsize`).
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.nbytes()
    }

    /// Bytes per element.
    #[getter]
    fn itemsize(&self) -> usize {
        self.inner.dtype().size()
    }

    /// The transpose (all axes reversed).
    #[getter(T)]
    fn t(&self) -> PyResult<PyArray> {
        guard(|| ops::transpose(&self.inner, None)).map(PyArray::from)
    }

    /// The value of a one-element array as a Python scalar (evaluates).
    fn item(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.scalar_value(py, "item")
    }

    /// The values as nested Python lists (evaluates).
    fn tolist(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = host_values(py, &self.inner)?;
        nested(py, &v, self.inner.shape(), 0)
    }

    /// A copy converted to `dtype`.
    #[pyo3(signature = (dtype, stream = None))]
    fn astype(
        &self,
        dtype: &Bound<'_, PyAny>,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let d = extract_dtype(dtype)?;
        on(stream, || Ok::<_, rmlx::Error>(ops::astype(&self.inner, d))).map(PyArray::from)
    }

    /// The same elements in a new shape (`a.reshape(2, 3)` or `a.reshape((2, 3))`).
    #[pyo3(signature = (*shape, stream = None))]
    fn reshape(
        &self,
        shape: &Bound<'_, PyTuple>,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let s = if shape.len() == 1 {
            args::shape_i64(&shape.get_item(0)?)?
        } else {
            shape.extract::<Vec<i64>>()?
        };
        on(stream, || ops::reshape(&self.inner, &s)).map(PyArray::from)
    }

    /// Axes permuted (`a.transpose(1, 0, 2)`; reversed when none are given).
    #[pyo3(signature = (*axes, stream = None))]
    fn transpose(
        &self,
        axes: &Bound<'_, PyTuple>,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let ax: Option<Vec<i32>> = match axes.len() {
            0 => None,
            1 => args::axes(Some(&axes.get_item(0)?))?,
            _ => Some(axes.extract()?),
        };
        on(stream, || ops::transpose(&self.inner, ax.as_deref())).map(PyArray::from)
    }

    /// Axes `start_axis..=end_axis` merged into one.
    #[pyo3(signature = (start_axis = 0, end_axis = -1, *, stream = None))]
    fn flatten(
        &self,
        start_axis: i32,
        end_axis: i32,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        on(stream, || ops::flatten(&self.inner, start_axis, end_axis)).map(PyArray::from)
    }

    /// Size-1 axes removed (all of them when `axis` is None).
    #[pyo3(signature = (axis = None, *, stream = None))]
    fn squeeze(
        &self,
        axis: Option<&Bound<'_, PyAny>>,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let ax = args::axes(axis)?;
        on(stream, || crate::ops_shape::squeeze_impl(&self.inner, ax)).map(PyArray::from)
    }

    /// Two axes exchanged.
    #[pyo3(signature = (axis1, axis2, *, stream = None))]
    fn swapaxes(
        &self,
        axis1: i32,
        axis2: i32,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        on(stream, || ops::swapaxes(&self.inner, axis1, axis2)).map(PyArray::from)
    }

    /// Axis `source` moved to position `destination`.
    #[pyo3(signature = (source, destination, *, stream = None))]
    fn moveaxis(
        &self,
        source: i32,
        destination: i32,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        on(stream, || ops::moveaxis(&self.inner, source, destination)).map(PyArray::from)
    }

    /// Variance over `axis` with `ddof` delta degrees of freedom.
    #[pyo3(signature = (axis = None, keepdims = false, ddof = 0, *, stream = None))]
    fn var(
        &self,
        axis: Option<&Bound<'_, PyAny>>,
        keepdims: bool,
        ddof: usize,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let ax = args::axes(axis)?;
        on(stream, || {
            ops::var(&self.inner, ax.as_deref(), keepdims, ddof)
        })
        .map(PyArray::from)
    }

    /// Standard deviation over `axis`.
    #[pyo3(signature = (axis = None, keepdims = false, ddof = 0, *, stream = None))]
    fn std(
        &self,
        axis: Option<&Bound<'_, PyAny>>,
        keepdims: bool,
        ddof: usize,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        let ax = args::axes(axis)?;
        on(stream, || {
            ops::var(&self.inner, ax.as_deref(), keepdims, ddof).map(|v| ops::sqrt(&v))
        })
        .map(PyArray::from)
    }

    /// Index of the maximum along `axis` (of the flattened array when None).
    #[pyo3(signature = (axis = None, keepdims = false, *, stream = None))]
    fn argmax(
        &self,
        axis: Option<i32>,
        keepdims: bool,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        on(stream, || ops::argmax(&self.inner, axis, keepdims)).map(PyArray::from)
    }

    /// Index of the minimum along `axis`.
    #[pyo3(signature = (axis = None, keepdims = false, *, stream = None))]
    fn argmin(
        &self,
        axis: Option<i32>,
        keepdims: bool,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        on(stream, || ops::argmin(&self.inner, axis, keepdims)).map(PyArray::from)
    }

    /// Rounded to `decimals` places (0: to the nearest integer, halves to even).
    #[pyo3(signature = (decimals = 0, *, stream = None))]
    fn round(&self, decimals: i32, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
        on(stream, || {
            crate::ops_elementwise::round_impl(&self.inner, decimals)
        })
        .map(PyArray::from)
    }

    /// Split into equal sections or at indices along `axis`.
    #[pyo3(signature = (indices_or_sections, axis = 0, *, stream = None))]
    fn split(
        &self,
        indices_or_sections: &Bound<'_, PyAny>,
        axis: i32,
        stream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyArray>> {
        crate::ops_shape::split_impl(&self.inner, indices_or_sections, axis, stream)
    }

    /// A NumPy array over the same memory (read-only) or, with `dtype`/`copy=True`, a copy.
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if slf.borrow().inner.dtype() == Dtype::BF16 {
            return Err(PyValueError::new_err(
                "[array] NumPy has no bfloat16: convert with .astype(mx.float32) first",
            ));
        }
        let np = py.import("numpy")?;
        let mut out = np.call_method1("asarray", (slf,))?;
        if let Some(d) = dtype.filter(|d| !d.is_none()) {
            out = out.call_method1("astype", (d,))?;
        } else if copy == Some(true) {
            out = out.call_method0("copy")?;
        }
        Ok(out)
    }

    /// Buffer protocol: a read-only, C-contiguous view of the evaluated data (zero-copy when
    /// the array is already contiguous). bfloat16 has no buffer format.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("view is null"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "rmlx arrays are immutable: use numpy.array(a) for a writable copy",
            ));
        }
        let a = slf.borrow().inner.clone();
        let Some(format) = buffer_format(a.dtype()) else {
            return Err(PyBufferError::new_err(
                "bfloat16 has no buffer format: convert with .astype(mx.float32) first",
            ));
        };
        let py = slf.py();
        let data = py.detach(|| {
            guard(|| {
                a.eval()?;
                let c = ops::contiguous(&a);
                let d = c.data()?;
                d.buffer.ensure_host()?;
                Ok::<_, rmlx::Error>(d)
            })
        })?;
        let item = data.dtype.size();
        let ex = Box::new(Export {
            shape: data.shape.iter().map(|&d| d as ffi::Py_ssize_t).collect(),
            strides: data
                .strides
                .iter()
                .map(|&s| (s as usize * item) as ffi::Py_ssize_t)
                .collect(),
            _data: data.clone(),
        });
        let bytes = data.buffer.as_slice();
        let start = data.offset * item;
        let len = data.numel() * item;
        // SAFETY: `view` is a valid Py_buffer to fill; the pointers stay valid while `ex`
        // (freed in __releasebuffer__) holds the data.
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = bytes[start..start + len].as_ptr() as *mut _;
            (*view).len = len as ffi::Py_ssize_t;
            (*view).readonly = 1;
            (*view).itemsize = item as ffi::Py_ssize_t;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                format.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = ex.shape.len() as c_int;
            (*view).shape = ex.shape.as_ptr() as *mut _;
            (*view).strides = ex.strides.as_ptr() as *mut _;
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = Box::into_raw(ex) as *mut _;
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, view: *mut ffi::Py_buffer) {
        // SAFETY: internal was set by __getbuffer__ to a leaked Box<Export>.
        unsafe {
            let p = (*view).internal as *mut Export;
            if !p.is_null() {
                drop(Box::from_raw(p));
                (*view).internal = std::ptr::null_mut();
            }
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let a = self.inner.clone();
        eval_py(py, std::slice::from_ref(&a))?;
        // Formatting evaluates a float copy: without the GIL, like every evaluation, so an
        // async_eval thread that releases a NumPy buffer (which needs the GIL) cannot deadlock.
        Ok(py.detach(move || format!("{a}")))
    }

    fn __str__(&self, py: Python<'_>) -> PyResult<String> {
        self.__repr__(py)
    }

    fn __len__(&self) -> PyResult<usize> {
        self.inner
            .shape()
            .first()
            .copied()
            .ok_or_else(|| PyTypeError::new_err("len() of a 0-d array"))
    }

    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let n = slf.borrow().__len__()?;
        let items = (0..n)
            .map(|i| slf.get_item(i))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(slf.py(), items)?
            .into_any()
            .try_iter()?
            .into_any()
            .unbind())
    }

    fn __bool__(&self, py: Python<'_>) -> PyResult<bool> {
        self.scalar_value(py, "bool")?.bind(py).is_truthy()
    }

    fn __int__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.scalar_value(py, "int")?;
        v.bind(py).call_method0("__int__").map(Bound::unbind)
    }

    fn __float__(&self, py: Python<'_>) -> PyResult<f64> {
        self.scalar_value(py, "float")?.extract(py)
    }

    fn __index__(&self, py: Python<'_>) -> PyResult<i64> {
        if !self.inner.dtype().is_integer() {
            return Err(PyTypeError::new_err(
                "only integer arrays can be used as an index",
            ));
        }
        self.scalar_value(py, "index")?.extract(py)
    }

    fn __neg__(&self) -> PyArray {
        PyArray::from(ops::negative(&self.inner))
    }

    fn __abs__(&self) -> PyArray {
        PyArray::from(ops::abs(&self.inner))
    }

    fn __invert__(&self) -> PyResult<PyArray> {
        if self.inner.dtype() == Dtype::Bool {
            return Ok(PyArray::from(ops::logical_not(&self.inner)));
        }
        guard(|| ops::bitwise_invert(&self.inner)).map(PyArray::from)
    }

    fn __pow__(
        &self,
        other: &Bound<'_, PyAny>,
        _m: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.binop(other, ops::power, false)
    }

    fn __rpow__(
        &self,
        other: &Bound<'_, PyAny>,
        _m: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.binop(other, ops::power, true)
    }

    fn __richcmp__(
        &self,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        use pyo3::basic::CompareOp::*;
        let f = match op {
            Lt => ops::less,
            Le => ops::less_equal,
            Eq => ops::equal,
            Ne => ops::not_equal,
            Gt => ops::greater,
            Ge => ops::greater_equal,
        };
        self.binop(other, f, false)
    }

    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<PyArray> {
        crate::indexing::get(&self.inner, key).map(PyArray::from)
    }

    fn __setitem__(&mut self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = operand(value)?.resolve(Some(self.inner.dtype()));
        self.inner = crate::indexing::set(&self.inner, key, &v)?;
        Ok(())
    }

    fn __copy__(&self) -> PyArray {
        PyArray::from(self.inner.clone())
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyArray {
        PyArray::from(self.inner.clone())
    }
}

/// `(a, b)` of a function's two array-like arguments (scalars typed by the other side).
pub fn pair(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<(Array, Array)> {
    operands(a, b)
}
