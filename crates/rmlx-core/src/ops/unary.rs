//! Elementwise functions of one array.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{Primitive, UnaryOp};

fn float_out(x: &Array) -> Dtype {
    if x.dtype().is_float() {
        x.dtype()
    } else {
        Dtype::F32
    }
}

#[track_caller]
fn unary(x: &Array, op: UnaryOp, dtype: Dtype) -> Array {
    let x = crate::ops::astype(x, dtype);
    Array::make(x.shape().into(), dtype, Primitive::Unary(op), [x])
}

macro_rules! float_unary {
    ($($(#[$m:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$m])*
        #[track_caller]
        pub fn $name(x: &Array) -> Array {
            unary(x, UnaryOp::$op, float_out(x))
        }
    )*};
}

float_unary! {
    exp => Exp, log => Log, log1p => Log1p, sqrt => Sqrt, rsqrt => Rsqrt,
    sin => Sin, cos => Cos, tanh => Tanh, sigmoid => Sigmoid, erf => Erf,
    /// Inverse error function.
    erfinv => ErfInv,
    /// `x * sigmoid(x)`.
    silu => Silu,
    /// Exact GELU: `x * (1 + erf(x / sqrt 2)) / 2`.
    gelu => Gelu,
    /// tanh approximation of GELU.
    gelu_approx => GeluApprox,
    tan => Tan,
    /// Inverse sine.
    arcsin => ArcSin,
    /// Inverse cosine.
    arccos => ArcCos,
    /// Inverse tangent.
    arctan => ArcTan,
    sinh => Sinh, cosh => Cosh,
    /// Inverse hyperbolic sine.
    arcsinh => ArcSinh,
    /// Inverse hyperbolic cosine.
    arccosh => ArcCosh,
    /// Inverse hyperbolic tangent.
    arctanh => ArcTanh,
    /// `e^x - 1`, accurate for small `x`.
    expm1 => Expm1,
    /// Base-2 logarithm.
    log2 => Log2,
    /// Base-10 logarithm.
    log10 => Log10,
}

macro_rules! same_type_unary {
    ($($name:ident => $op:ident),* $(,)?) => {$(
        #[track_caller]
        pub fn $name(x: &Array) -> Array {
            unary(x, UnaryOp::$op, x.dtype())
        }
    )*};
}

same_type_unary! { abs => Abs, negative => Neg, square => Square, sign => Sign }

/// Floor, ceil and round leave integer arrays unchanged.
macro_rules! rounding_unary {
    ($($name:ident => $op:ident),* $(,)?) => {$(
        #[track_caller]
        pub fn $name(x: &Array) -> Array {
            if x.dtype().is_float() { unary(x, UnaryOp::$op, x.dtype()) } else { x.clone() }
        }
    )*};
}
rounding_unary! { floor => Floor, ceil => Ceil, round => Round }

#[track_caller]
pub fn logical_not(x: &Array) -> Array {
    unary(x, UnaryOp::LogicalNot, Dtype::Bool)
}

#[track_caller]
pub fn bitwise_invert(x: &Array) -> Result<Array> {
    if x.dtype().is_float() {
        return Err(Error::dtype(
            "bitwise_invert",
            format!("not supported for {}", x.dtype()),
        ));
    }
    Ok(unary(x, UnaryOp::BitwiseInvert, x.dtype()))
}

/// `-x`; alias of `negative`.
#[track_caller]
pub fn neg(x: &Array) -> Array {
    negative(x)
}

/// `1 / x`.
#[track_caller]
pub fn reciprocal(x: &Array) -> Array {
    let one = Array::scalar_of(1.0, float_out(x));
    crate::ops::divide(&one, x).expect("a scalar broadcasts")
}

/// Rounds toward zero (integers unchanged).
#[track_caller]
pub fn trunc(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return x.clone();
    }
    let neg = crate::ops::less(x, &Array::scalar_of(0.0, x.dtype())).expect("a scalar broadcasts");
    crate::ops::where_(&neg, &ceil(x), &floor(x)).expect("same shapes")
}

/// `x * 180 / pi`.
#[track_caller]
pub fn degrees(x: &Array) -> Array {
    let k = Array::scalar_of(180.0 / std::f64::consts::PI, float_out(x));
    crate::ops::multiply(x, &k).expect("a scalar broadcasts")
}

/// `x * pi / 180`.
#[track_caller]
pub fn radians(x: &Array) -> Array {
    let k = Array::scalar_of(std::f64::consts::PI / 180.0, float_out(x));
    crate::ops::multiply(x, &k).expect("a scalar broadcasts")
}

/// A bool array of `x`'s shape, `value` everywhere (the predicates of integer arrays).
fn all_bool(x: &Array, value: bool) -> Array {
    crate::ops::full(x.shape(), value as u8 as f64, Dtype::Bool)
}

/// Where `x` is NaN (never, for integers).
#[track_caller]
pub fn isnan(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return all_bool(x, false);
    }
    crate::ops::not_equal(x, x).expect("same shapes")
}

/// Where `x` is +inf or -inf.
#[track_caller]
pub fn isinf(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return all_bool(x, false);
    }
    let inf = Array::scalar_of(f64::INFINITY, x.dtype());
    crate::ops::equal(&abs(x), &inf).expect("a scalar broadcasts")
}

/// Where `x` is +inf.
#[track_caller]
pub fn isposinf(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return all_bool(x, false);
    }
    let inf = Array::scalar_of(f64::INFINITY, x.dtype());
    crate::ops::equal(x, &inf).expect("a scalar broadcasts")
}

/// Where `x` is -inf.
#[track_caller]
pub fn isneginf(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return all_bool(x, false);
    }
    let inf = Array::scalar_of(f64::NEG_INFINITY, x.dtype());
    crate::ops::equal(x, &inf).expect("a scalar broadcasts")
}

/// Where `x` is neither infinite nor NaN.
#[track_caller]
pub fn isfinite(x: &Array) -> Array {
    if !x.dtype().is_float() {
        return all_bool(x, true);
    }
    // NaN < inf and inf < inf are both false.
    let inf = Array::scalar_of(f64::INFINITY, x.dtype());
    crate::ops::less(&abs(x), &inf).expect("a scalar broadcasts")
}

/// `x` with NaN replaced by `nan`, +inf by `posinf` and -inf by `neginf` (by default the
/// dtype's largest and lowest finite values). Integer arrays are returned unchanged.
#[track_caller]
pub fn nan_to_num(x: &Array, nan: f64, posinf: Option<f64>, neginf: Option<f64>) -> Array {
    let t = x.dtype();
    if !t.is_float() {
        return x.clone();
    }
    let fill = |v: f64| Array::scalar_of(v, t);
    let w = |c: Array, v: f64, y: &Array| crate::ops::where_(&c, &fill(v), y).expect("same shapes");
    let y = w(isnan(x), nan, x);
    let y = w(isposinf(x), posinf.unwrap_or(t.max_value()), &y);
    w(isneginf(x), neginf.unwrap_or(t.min_value()), &y)
}
