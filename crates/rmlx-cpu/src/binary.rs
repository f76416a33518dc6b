//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn binary(a: &ArrayData, b: &ArrayData, op: BinaryOp, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "binary is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn where_(c: &ArrayData, a: &ArrayData, b: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "where is not implemented on the CPU yet"))
}
