//! Elementwise ops as module functions: `mx.exp(a)`, `mx.add(a, b)`, `mx.where(c, x, y)`, ...
//! Arguments are arrays or anything `mx.array` accepts; Python scalars are weakly typed.

use crate::array::{pair, PyArray};
use crate::convert::{operand, to_array};
use crate::device::on;
use pyo3::prelude::*;
use rmlx::{ops, Array, Dtype};

macro_rules! unary {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (a, /, *, stream = None))]
        pub fn $name(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
            let a = to_array(a, None)?;
            on(stream, || Ok::<_, rmlx::Error>($f(&a))).map(PyArray::from)
        }
    )*};
}

unary! {
    /// Elementwise absolute value.
    abs => ops::abs;
    /// Elementwise `-a`.
    negative => ops::negative;
    /// Elementwise `e^a`.
    exp => ops::exp;
    /// Elementwise natural logarithm.
    log => ops::log;
    /// Elementwise `log(1 + a)`, accurate for small `a`.
    log1p => ops::log1p;
    /// Elementwise square root.
    sqrt => ops::sqrt;
    /// Elementwise reciprocal square root.
    rsqrt => ops::rsqrt;
    /// Elementwise `a * a`.
    square => ops::square;
    /// Elementwise sine.
    sin => ops::sin;
    /// Elementwise cosine.
    cos => ops::cos;
    /// Elementwise hyperbolic tangent.
    tanh => ops::tanh;
    /// Elementwise logistic sigmoid `1 / (1 + e^-a)`.
    sigmoid => ops::sigmoid;
    /// Elementwise error function.
    erf => ops::erf;
    /// Elementwise inverse error function.
    erfinv => ops::erfinv;
    /// Elementwise floor (integers unchanged).
    floor => ops::floor;
    /// Elementwise ceiling (integers unchanged).
    ceil => ops::ceil;
    /// Elementwise sign: -1, 0 or 1.
    sign => ops::sign;
    /// Elementwise logical not (result bool).
    logical_not => ops::logical_not;
    /// Elementwise `1 / a`.
    reciprocal => ops::reciprocal;
    /// Elementwise tangent.
    tan => ops::tan;
    /// Elementwise inverse sine.
    arcsin => ops::arcsin;
    /// Elementwise inverse cosine.
    arccos => ops::arccos;
    /// Elementwise inverse tangent.
    arctan => ops::arctan;
    /// Elementwise hyperbolic sine.
    sinh => ops::sinh;
    /// Elementwise hyperbolic cosine.
    cosh => ops::cosh;
    /// Elementwise inverse hyperbolic sine.
    arcsinh => ops::arcsinh;
    /// Elementwise inverse hyperbolic cosine.
    arccosh => ops::arccosh;
    /// Elementwise inverse hyperbolic tangent.
    arctanh => ops::arctanh;
    /// Elementwise `e^a - 1`, accurate for small `a`.
    expm1 => ops::expm1;
    /// Elementwise base-2 logarithm.
    log2 => ops::log2;
    /// Elementwise base-10 logarithm.
    log10 => ops::log10;
    /// Elementwise rounding toward zero (integers unchanged).
    trunc => ops::trunc;
    /// Radians to degrees.
    degrees => ops::degrees;
    /// Degrees to radians.
    radians => ops::radians;
    /// Where `a` is NaN (bool).
    isnan => ops::isnan;
    /// Where `a` is +inf or -inf (bool).
    isinf => ops::isinf;
    /// Where `a` is +inf (bool).
    isposinf => ops::isposinf;
    /// Where `a` is -inf (bool).
    isneginf => ops::isneginf;
    /// Where `a` is finite: neither infinite nor NaN (bool).
    isfinite => ops::isfinite;
}

/// `a` itself (there are no gradients to stop in rmlx).
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
pub fn stop_gradient(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(a)).map(PyArray::from)
}

/// Elementwise `+a` (a copy of `a`).
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
pub fn positive(a: &Bound<'_, PyAny>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || Ok::<_, rmlx::Error>(a)).map(PyArray::from)
}

/// `a` with NaN replaced by `nan`, +inf by `posinf` and -inf by `neginf` (by default the
/// largest and lowest finite values of the dtype); integer arrays are returned unchanged.
#[pyfunction]
#[pyo3(signature = (a, nan = 0.0, posinf = None, neginf = None, *, stream = None))]
pub fn nan_to_num(
    a: &Bound<'_, PyAny>,
    nan: f64,
    posinf: Option<f64>,
    neginf: Option<f64>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || {
        Ok::<_, rmlx::Error>(ops::nan_to_num(&a, nan, posinf, neginf))
    })
    .map(PyArray::from)
}

/// `[a // b, a % b]` elementwise, with Python's sign rules.
#[pyfunction]
#[pyo3(signature = (a, b, *, stream = None))]
pub fn divmod(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyArray>> {
    let (a, b) = pair(a, b)?;
    on(stream, || {
        Ok::<_, rmlx::Error>(vec![ops::floor_divide(&a, &b)?, ops::remainder(&a, &b)?])
    })
    .map(|v| v.into_iter().map(PyArray::from).collect())
}

/// Elementwise bitwise not of an integer or bool array.
#[pyfunction]
#[pyo3(signature = (a, /, *, stream = None))]
pub fn bitwise_invert(
    a: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || ops::bitwise_invert(&a)).map(PyArray::from)
}

/// Rounds to `decimals` places: `round(a * 10^d) / 10^d`, halves to even.
pub fn round_impl(a: &Array, decimals: i32) -> rmlx::Result<Array> {
    if decimals == 0 || !a.dtype().is_float() {
        return Ok(ops::round(a));
    }
    let s = Array::scalar_of(10f64.powi(decimals), a.dtype());
    ops::divide(&ops::round(&ops::multiply(a, &s)?), &s)
}

/// Elementwise rounding to `decimals` places (halves to even, as NumPy).
#[pyfunction]
#[pyo3(signature = (a, /, decimals = 0, *, stream = None))]
pub fn round(
    a: &Bound<'_, PyAny>,
    decimals: i32,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    on(stream, || round_impl(&a, decimals)).map(PyArray::from)
}

macro_rules! binary {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[pyfunction]
        #[pyo3(signature = (a, b, /, *, stream = None))]
        pub fn $name(
            a: &Bound<'_, PyAny>,
            b: &Bound<'_, PyAny>,
            stream: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyArray> {
            let (a, b) = pair(a, b)?;
            on(stream, || $f(&a, &b)).map(PyArray::from)
        }
    )*};
}

binary! {
    /// Elementwise `a + b` with broadcasting.
    add => ops::add;
    /// Elementwise `a - b`.
    subtract => ops::subtract;
    /// Elementwise `a * b`.
    multiply => ops::multiply;
    /// Elementwise true division (integers give float32).
    divide => ops::divide;
    /// Elementwise `a // b`.
    floor_divide => ops::floor_divide;
    /// Elementwise `a ** b`.
    power => ops::power;
    /// Elementwise maximum.
    maximum => ops::maximum;
    /// Elementwise minimum.
    minimum => ops::minimum;
    /// Elementwise `a % b` (sign of the divisor, as Python).
    remainder => ops::remainder;
    /// Elementwise `a == b` (bool).
    equal => ops::equal;
    /// Elementwise `a != b`.
    not_equal => ops::not_equal;
    /// Elementwise `a < b`.
    less => ops::less;
    /// Elementwise `a <= b`.
    less_equal => ops::less_equal;
    /// Elementwise `a > b`.
    greater => ops::greater;
    /// Elementwise `a >= b`.
    greater_equal => ops::greater_equal;
    /// Elementwise logical and (bool).
    logical_and => ops::logical_and;
    /// Elementwise logical or (bool).
    logical_or => ops::logical_or;
    /// Elementwise bitwise and of integers.
    bitwise_and => ops::bitwise_and;
    /// Elementwise bitwise or of integers.
    bitwise_or => ops::bitwise_or;
    /// Elementwise bitwise xor of integers.
    bitwise_xor => ops::bitwise_xor;
    /// Elementwise `a << b`.
    left_shift => ops::left_shift;
    /// Elementwise `a >> b`.
    right_shift => ops::right_shift;
    /// Matrix product with NumPy's batching rules.
    matmul => ops::matmul;
    /// Elementwise angle of the point `(b, a)`, in `[-pi, pi]`.
    arctan2 => ops::arctan2;
    /// Elementwise `log(e^a + e^b)`, without overflow.
    logaddexp => ops::logaddexp;
    /// Elementwise exclusive or of truth values (bool).
    logical_xor => ops::logical_xor;
}

/// Elements of `x` where `condition` is true, else of `y` (all broadcast together).
#[pyfunction]
#[pyo3(name = "where", signature = (condition, x, y, /, *, stream = None))]
pub fn where_(
    condition: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let c = to_array(condition, None)?;
    let (x, y) = pair(x, y)?;
    on(stream, || ops::where_(&c, &x, &y)).map(PyArray::from)
}

/// `a` clamped into `[a_min, a_max]` (either bound may be None).
#[pyfunction]
#[pyo3(signature = (a, /, a_min, a_max, *, stream = None))]
pub fn clip(
    a: &Bound<'_, PyAny>,
    a_min: Option<&Bound<'_, PyAny>>,
    a_max: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let a = to_array(a, None)?;
    let bound = |b: Option<&Bound<'_, PyAny>>| -> PyResult<Option<Array>> {
        b.filter(|b| !b.is_none())
            .map(|b| operand(b).map(|o| o.resolve(Some(a.dtype()))))
            .transpose()
    };
    let (lo, hi) = (bound(a_min)?, bound(a_max)?);
    on(stream, || ops::clip(&a, lo.as_ref(), hi.as_ref())).map(PyArray::from)
}

/// Whether all elements of `a` and `b` are close: `|a - b| <= atol + rtol * |b|`.
#[pyfunction]
#[pyo3(signature = (a, b, /, rtol = 1e-5, atol = 1e-8, *, equal_nan = false, stream = None))]
pub fn allclose(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    rtol: f64,
    atol: f64,
    equal_nan: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || {
        let close = isclose_impl(&a, &b, rtol, atol, equal_nan)?;
        ops::all(&close, None, false)
    })
    .map(PyArray::from)
}

/// Elementwise `|a - b| <= atol + rtol * |b|`.
#[pyfunction]
#[pyo3(signature = (a, b, /, rtol = 1e-5, atol = 1e-8, *, equal_nan = false, stream = None))]
pub fn isclose(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    rtol: f64,
    atol: f64,
    equal_nan: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || isclose_impl(&a, &b, rtol, atol, equal_nan)).map(PyArray::from)
}

fn isclose_impl(
    a: &Array,
    b: &Array,
    rtol: f64,
    atol: f64,
    equal_nan: bool,
) -> rmlx::Result<Array> {
    let t = Dtype::promote(Dtype::promote(a.dtype(), b.dtype()), Dtype::F32);
    let (a, b) = (ops::astype(a, t), ops::astype(b, t));
    let diff = ops::abs(&ops::subtract(&a, &b)?);
    let tol = ops::add(
        &Array::scalar(atol as f32),
        &ops::multiply(&Array::scalar(rtol as f32), &ops::abs(&b))?,
    )?;
    let close = ops::logical_or(&ops::less_equal(&diff, &tol)?, &ops::equal(&a, &b)?)?;
    if !equal_nan {
        return Ok(close);
    }
    let nan_a = ops::not_equal(&a, &a)?;
    let nan_b = ops::not_equal(&b, &b)?;
    ops::logical_or(&close, &ops::logical_and(&nan_a, &nan_b)?)
}

/// Whether `a` and `b` have the same shape and elements.
#[pyfunction]
#[pyo3(signature = (a, b, /, equal_nan = false, *, stream = None))]
pub fn array_equal(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    equal_nan: bool,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyArray> {
    let (a, b) = pair(a, b)?;
    on(stream, || {
        if a.shape() != b.shape() {
            return Ok(Array::scalar(rmlx::dtype::Bool8(0)));
        }
        let eq = if equal_nan {
            isclose_impl(&a, &b, 0.0, 0.0, true)?
        } else {
            ops::equal(&a, &b)?
        };
        ops::all(&eq, None, false)
    })
    .map(PyArray::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => {$( m.add_function(wrap_pyfunction!($f, m)?)?; )*};
    }
    add!(
        abs,
        negative,
        exp,
        log,
        log1p,
        sqrt,
        rsqrt,
        square,
        sin,
        cos,
        tanh,
        sigmoid,
        erf,
        erfinv,
        floor,
        ceil,
        sign,
        logical_not,
        reciprocal,
        bitwise_invert,
        round,
        add,
        subtract,
        multiply,
        divide,
        floor_divide,
        power,
        maximum,
        minimum,
        remainder,
        equal,
        not_equal,
        less,
        less_equal,
        greater,
        greater_equal,
        logical_and,
        logical_or,
        bitwise_and,
        bitwise_or,
        bitwise_xor,
        left_shift,
        right_shift,
        matmul,
        where_,
        clip,
        allclose,
        isclose,
        array_equal,
        tan,
        arcsin,
        arccos,
        arctan,
        sinh,
        cosh,
        arcsinh,
        arccosh,
        arctanh,
        expm1,
        log2,
        log10,
        trunc,
        degrees,
        radians,
        isnan,
        isinf,
        isposinf,
        isneginf,
        isfinite,
        stop_gradient,
        positive,
        nan_to_num,
        divmod,
        arctan2,
        logaddexp,
        logical_xor
    );
    // mlx.core's other names for the same functions.
    for (alias, name) in [
        ("acos", "arccos"),
        ("acosh", "arccosh"),
        ("asin", "arcsin"),
        ("asinh", "arcsinh"),
        ("atan", "arctan"),
        ("atanh", "arctanh"),
        ("atan2", "arctan2"),
        ("pow", "power"),
        ("bitwise_left_shift", "left_shift"),
        ("bitwise_right_shift", "right_shift"),
    ] {
        m.add(alias, m.getattr(name)?)?;
    }
    Ok(())
}
