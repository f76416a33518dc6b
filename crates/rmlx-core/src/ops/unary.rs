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
    Array::make(x.shape().into(), dtype, Primitive::Unary(op), vec![x])
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
