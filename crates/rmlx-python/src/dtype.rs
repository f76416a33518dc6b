//! `mx.Dtype` and the dtype constants (`mx.float32`, `mx.bfloat16`, ...).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use rmlx::Dtype;

/// An array element type, as `mlx.core.Dtype`.
#[pyclass(name = "Dtype", module = "rmlx.core", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyDtype(pub Dtype);

#[pymethods]
impl PyDtype {
    /// Bytes per element.
    #[getter]
    fn size(&self) -> usize {
        self.0.size()
    }

    fn __repr__(&self) -> String {
        format!("rmlx.core.{}", self.0.name())
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// Reads a dtype argument: an `mx.Dtype`, a name (`"float32"`, `"bf16"`), or a NumPy dtype /
/// scalar type (by its name).
pub fn extract_dtype(ob: &Bound<'_, PyAny>) -> PyResult<Dtype> {
    if let Ok(d) = ob.cast::<PyDtype>() {
        return Ok(d.get().0);
    }
    let name: String = if let Ok(s) = ob.extract::<String>() {
        s
    } else if let Ok(n) = ob.getattr("__name__").and_then(|n| n.extract::<String>()) {
        // NumPy scalar types: np.float32, np.int64, ...
        n
    } else if let Ok(n) = ob.getattr("name").and_then(|n| n.extract::<String>()) {
        // np.dtype('float32')
        n
    } else {
        return Err(PyTypeError::new_err(format!(
            "[dtype] expected an rmlx.core.Dtype such as rmlx.core.float32, got {}",
            ob.get_type().name()?
        )));
    };
    Dtype::parse(&name).map_err(crate::errors::to_py)
}

/// Optional dtype keyword argument.
pub fn opt_dtype(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dtype>> {
    ob.filter(|o| !o.is_none()).map(extract_dtype).transpose()
}

/// A kind of dtypes, as `mlx.core.DtypeCategory`: `generic` ⊃ `number` ⊃ `inexact`
/// (`floating`, `complexfloating`) and `integer` (`signedinteger`, `unsignedinteger`);
/// `bool` is only `generic`.
#[pyclass(name = "DtypeCategory", module = "rmlx.core", eq, eq_int, hash, frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum PyDtypeCategory {
    complexfloating,
    floating,
    inexact,
    signedinteger,
    unsignedinteger,
    integer,
    number,
    generic,
}

impl PyDtypeCategory {
    /// The categories directly above this one.
    fn parent(self) -> Option<PyDtypeCategory> {
        use PyDtypeCategory::*;
        match self {
            complexfloating | floating => Some(inexact),
            signedinteger | unsignedinteger => Some(integer),
            inexact | integer => Some(number),
            number => Some(generic),
            generic => None,
        }
    }

    /// The most specific category of a dtype.
    fn of(d: Dtype) -> PyDtypeCategory {
        match d {
            Dtype::Bool => PyDtypeCategory::generic,
            Dtype::U8 | Dtype::U32 => PyDtypeCategory::unsignedinteger,
            Dtype::I32 | Dtype::I64 => PyDtypeCategory::signedinteger,
            Dtype::F16 | Dtype::BF16 | Dtype::F32 => PyDtypeCategory::floating,
        }
    }

    /// Whether `self` is `c` or lies below it.
    fn within(self, c: PyDtypeCategory) -> bool {
        let mut k = Some(self);
        while let Some(x) = k {
            if x == c {
                return true;
            }
            k = x.parent();
        }
        false
    }
}

enum DtypeOrCategory {
    Dtype(Dtype),
    Category(PyDtypeCategory),
}

fn dtype_or_category(ob: &Bound<'_, PyAny>) -> PyResult<DtypeOrCategory> {
    if let Ok(c) = ob.extract::<PyDtypeCategory>() {
        return Ok(DtypeOrCategory::Category(c));
    }
    extract_dtype(ob).map(DtypeOrCategory::Dtype)
}

/// Whether `arg1` (a dtype or category) is `arg2` or lies within the category `arg2`.
#[pyfunction]
fn issubdtype(arg1: &Bound<'_, PyAny>, arg2: &Bound<'_, PyAny>) -> PyResult<bool> {
    use DtypeOrCategory::*;
    Ok(match (dtype_or_category(arg1)?, dtype_or_category(arg2)?) {
        (Dtype(a), Dtype(b)) => a == b,
        (Dtype(a), Category(c)) => PyDtypeCategory::of(a).within(c),
        (Category(_), Dtype(_)) => false,
        (Category(a), Category(c)) => a.within(c),
    })
}

/// Whether `dtype` is of `kind`: a dtype, one of the array API's names ("bool", "signed
/// integer", "unsigned integer", "integral", "real floating", "complex floating",
/// "numeric"), or a tuple of those.
#[pyfunction]
fn isdtype(dtype: &Bound<'_, PyAny>, kind: &Bound<'_, PyAny>) -> PyResult<bool> {
    let d = extract_dtype(dtype)?;
    if let Ok(t) = kind.cast::<pyo3::types::PyTuple>() {
        for k in t.iter() {
            if isdtype(dtype, &k)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if let Ok(name) = kind.extract::<String>() {
        let c = PyDtypeCategory::of(d);
        return Ok(match name.as_str() {
            "bool" => d == Dtype::Bool,
            "signed integer" => c == PyDtypeCategory::signedinteger,
            "unsigned integer" => c == PyDtypeCategory::unsignedinteger,
            "integral" => d.is_integer(),
            "real floating" => d.is_float(),
            "complex floating" => false,
            "numeric" => d != Dtype::Bool,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "[isdtype] unknown kind '{name}'"
                )))
            }
        });
    }
    Ok(extract_dtype(kind)? == d)
}

/// The dtype of an array or a dtype (for `result_type` and `can_cast`).
fn dtype_of(ob: &Bound<'_, PyAny>) -> PyResult<Dtype> {
    if let Ok(a) = ob.cast::<crate::array::PyArray>() {
        return Ok(a.borrow().inner.dtype());
    }
    extract_dtype(ob)
}

/// The dtype MLX's promotion gives the arrays and dtypes together.
#[pyfunction]
#[pyo3(signature = (*arrays_and_dtypes))]
fn result_type(arrays_and_dtypes: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<PyDtype> {
    let mut t: Option<Dtype> = None;
    for x in arrays_and_dtypes.iter() {
        let d = dtype_of(&x)?;
        t = Some(t.map_or(d, |t| Dtype::promote(t, d)));
    }
    t.map(PyDtype).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(
            "[result_type] at least one array or dtype is needed",
        )
    })
}

/// Whether values of `from_` (an array or dtype) convert to `to` under type promotion
/// (promoting the two gives `to`).
#[pyfunction]
fn can_cast(from_: &Bound<'_, PyAny>, to: &Bound<'_, PyAny>) -> PyResult<bool> {
    let (f, t) = (dtype_of(from_)?, extract_dtype(to)?);
    Ok(Dtype::promote(f, t) == t)
}

/// The limits of a float dtype, as `mlx.core.finfo`.
#[pyclass(name = "finfo", module = "rmlx.core", frozen, get_all)]
pub struct PyFinfo {
    /// The lowest finite value.
    min: f64,
    /// The largest finite value.
    max: f64,
    /// The distance from 1 to the next larger value.
    eps: f64,
    /// The smallest positive normal value.
    smallest_normal: f64,
    /// Bits per element.
    bits: usize,
    dtype: PyDtype,
}

#[pymethods]
impl PyFinfo {
    #[new]
    fn new(dtype: &Bound<'_, PyAny>) -> PyResult<Self> {
        let d = extract_dtype(dtype)?;
        let eps = d.eps().ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("[finfo] dtype {d} is not inexact"))
        })?;
        let smallest_normal = match d {
            Dtype::F16 => half::f16::MIN_POSITIVE.to_f64(),
            Dtype::BF16 => half::bf16::MIN_POSITIVE.to_f64(),
            _ => f32::MIN_POSITIVE as f64,
        };
        Ok(PyFinfo {
            min: d.min_value(),
            max: d.max_value(),
            eps,
            smallest_normal,
            bits: d.size() * 8,
            dtype: PyDtype(d),
        })
    }

    fn __repr__(&self) -> String {
        // %g-like: plain digits for small limits (float16's 65504), exponents for large ones.
        let g = |v: f64| {
            if v.abs() >= 1e6 {
                format!("{v:e}")
            } else {
                format!("{v}")
            }
        };
        format!(
            "finfo(min={}, max={}, dtype={})",
            g(self.min),
            g(self.max),
            self.dtype.0.name()
        )
    }
}

/// The limits of an integer dtype, as `mlx.core.iinfo`.
#[pyclass(name = "iinfo", module = "rmlx.core", frozen, get_all)]
pub struct PyIinfo {
    /// The lowest value.
    min: i128,
    /// The largest value.
    max: i128,
    dtype: PyDtype,
}

#[pymethods]
impl PyIinfo {
    #[new]
    fn new(dtype: &Bound<'_, PyAny>) -> PyResult<Self> {
        let d = extract_dtype(dtype)?;
        let (min, max): (i128, i128) = match d {
            Dtype::Bool => (0, 1),
            Dtype::U8 => (0, u8::MAX as i128),
            Dtype::U32 => (0, u32::MAX as i128),
            Dtype::I32 => (i32::MIN as i128, i32::MAX as i128),
            Dtype::I64 => (i64::MIN as i128, i64::MAX as i128),
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "[iinfo] only integer types are supported, but {d} was provided"
                )))
            }
        };
        Ok(PyIinfo {
            min,
            max,
            dtype: PyDtype(d),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "iinfo(min={}, max={}, dtype={})",
            self.min,
            self.max,
            self.dtype.0.name()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDtype>()?;
    for d in Dtype::ALL {
        m.add(d.name(), PyDtype(d))?;
    }
    m.add("bool_", PyDtype(Dtype::Bool))?;
    m.add_class::<PyDtypeCategory>()?;
    use PyDtypeCategory::*;
    for (name, c) in [
        ("complexfloating", complexfloating),
        ("floating", floating),
        ("inexact", inexact),
        ("signedinteger", signedinteger),
        ("unsignedinteger", unsignedinteger),
        ("integer", integer),
        ("number", number),
        ("generic", generic),
    ] {
        m.add(name, c)?;
    }
    m.add_class::<PyFinfo>()?;
    m.add_class::<PyIinfo>()?;
    m.add_function(wrap_pyfunction!(issubdtype, m)?)?;
    m.add_function(wrap_pyfunction!(isdtype, m)?)?;
    m.add_function(wrap_pyfunction!(result_type, m)?)?;
    m.add_function(wrap_pyfunction!(can_cast, m)?)?;
    // mlx.core's constants.
    m.add("e", std::f64::consts::E)?;
    m.add("pi", std::f64::consts::PI)?;
    m.add("inf", f64::INFINITY)?;
    m.add("nan", f64::NAN)?;
    m.add("euler_gamma", 0.577_215_664_901_532_9_f64)?;
    m.add("newaxis", m.py().None())?;
    Ok(())
}
