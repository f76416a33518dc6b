//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn unary(x: &ArrayData, op: UnaryOp, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "unary is not implemented on the CPU yet"))
}
