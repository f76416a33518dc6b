//! Elementwise functions of two arrays with NumPy broadcasting and MLX type promotion, and
//! the arithmetic operators for model code.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::shape::common_shape;
use crate::primitive::{BinaryOp, Primitive};

#[track_caller]
fn binary(op_name: &'static str, a: &Array, b: &Array, op: BinaryOp) -> Result<Array> {
    let mut t = Dtype::promote(a.dtype(), b.dtype());
    use BinaryOp::*;
    match op {
        Divide | ArcTan2 | SiluMul if !t.is_float() => t = Dtype::F32,
        BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift if t.is_float() => {
            return Err(Error::dtype(
                op_name,
                format!("not supported for {} and {}", a.dtype(), b.dtype()),
            ))
        }
        LogicalAnd | LogicalOr => t = Dtype::Bool,
        _ => {}
    }
    let (a, b) = (astype(a, t), astype(b, t));
    let shape = common_shape(op_name, &[&a, &b])?;
    let out = if op.is_predicate() { Dtype::Bool } else { t };
    // Inputs keep their own shapes: evaluation broadcasts them as strided views (no graph node
    // per broadcast operand, which was half the nodes of `x + 1`).
    Ok(Array::make(shape, out, Primitive::Binary(op), [a, b]))
}

macro_rules! binary_fns {
    ($($(#[$m:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$m])*
        #[track_caller]
        pub fn $name(a: &Array, b: &Array) -> Result<Array> {
            binary(stringify!($name), a, b, BinaryOp::$op)
        }
    )*};
}

binary_fns! {
    add => Add, subtract => Subtract, multiply => Multiply,
    /// True division: integers give float32.
    divide => Divide,
    floor_divide => FloorDivide, power => Power, maximum => Maximum, minimum => Minimum,
    /// Python's `%`: the result has the sign of the divisor.
    remainder => Remainder,
    equal => Equal, not_equal => NotEqual, less => Less, less_equal => LessEqual,
    greater => Greater, greater_equal => GreaterEqual,
    logical_and => LogicalAnd, logical_or => LogicalOr,
    bitwise_and => BitwiseAnd, bitwise_or => BitwiseOr, bitwise_xor => BitwiseXor,
    left_shift => LeftShift, right_shift => RightShift,
    /// The angle of the point `(b, a)` in `[-pi, pi]` (integers give float32).
    arctan2 => ArcTan2,
    /// `silu(a) * b`, the SwiGLU gate of an MLP, as one element-wise pass rounded once (rmlx's
    /// own; MLX composes `silu` and `multiply`). Integers give float32.
    silu_mul => SiluMul,
}

/// `log(exp(a) + exp(b))` without overflow (integers give float32; half types are computed
/// in float32).
#[track_caller]
pub fn logaddexp(a: &Array, b: &Array) -> Result<Array> {
    let t = Dtype::promote(a.dtype(), b.dtype());
    let t = if t.is_float() { t } else { Dtype::F32 };
    let (x, y) = (astype(a, Dtype::F32), astype(b, Dtype::F32));
    let m = maximum(&x, &y)?;
    // m + log1p(e^-|a-b|); where a == b (also both +inf or both -inf, whose difference is
    // NaN) the result is m + ln 2.
    let d = crate::ops::negative(&crate::ops::abs(&subtract(&x, &y)?));
    let r = add(&m, &crate::ops::log1p(&crate::ops::exp(&d)))?;
    let same = add(&m, &Array::scalar(std::f32::consts::LN_2))?;
    let r = where_(&equal(&x, &y)?, &same, &r)?;
    Ok(astype(&r, t))
}

/// Elementwise exclusive or of truth values (bool).
#[track_caller]
pub fn logical_xor(a: &Array, b: &Array) -> Result<Array> {
    not_equal(&astype(a, Dtype::Bool), &astype(b, Dtype::Bool))
}

/// Picks from `a` where `cond` is true, else from `b` (all broadcast together).
#[track_caller]
pub fn where_(cond: &Array, a: &Array, b: &Array) -> Result<Array> {
    let t = Dtype::promote(a.dtype(), b.dtype());
    let c = astype(cond, Dtype::Bool);
    let (a, b) = (astype(a, t), astype(b, t));
    let shape = common_shape("where", &[&c, &a, &b])?;
    Ok(Array::make(shape, t, Primitive::Where, [c, a, b]))
}

/// Clamps into `[lo, hi]`; either bound may be absent.
#[track_caller]
pub fn clip(x: &Array, lo: Option<&Array>, hi: Option<&Array>) -> Result<Array> {
    if lo.is_none() && hi.is_none() {
        return Err(Error::invalid("clip", "one of lo and hi must be given"));
    }
    let mut y = x.clone();
    if let Some(l) = lo {
        y = maximum(&y, l)?;
    }
    if let Some(h) = hi {
        y = minimum(&y, h)?;
    }
    Ok(y)
}

// Operators for model code, where shapes are right by construction: a mismatch is a bug and
// panics with the op's message. User-facing paths call the `Result` functions.
macro_rules! operator {
    ($tr:ident, $m:ident, $f:ident) => {
        impl std::ops::$tr<&Array> for &Array {
            type Output = Array;
            #[track_caller]
            fn $m(self, rhs: &Array) -> Array {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $m(self, rhs: Array) -> Array {
                $f(&self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<&Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $m(self, rhs: &Array) -> Array {
                $f(&self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<f32> for &Array {
            type Output = Array;
            #[track_caller]
            fn $m(self, rhs: f32) -> Array {
                $f(self, &scalar_like(self, rhs)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<f32> for Array {
            type Output = Array;
            #[track_caller]
            fn $m(self, rhs: f32) -> Array {
                $f(&self, &scalar_like(&self, rhs)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}
operator!(Add, add, add);
operator!(Sub, sub, subtract);
operator!(Mul, mul, multiply);
operator!(Div, div, divide);

impl std::ops::Neg for &Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        crate::ops::negative(self)
    }
}
impl std::ops::Neg for Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        crate::ops::negative(&self)
    }
}

/// A Python-style "weak" scalar: takes the array's dtype when that is a float, else float32.
pub fn scalar_like(x: &Array, v: f32) -> Array {
    let t = if x.dtype().is_float() {
        x.dtype()
    } else {
        Dtype::F32
    };
    Array::scalar_of(v as f64, t)
}
