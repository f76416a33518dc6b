//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn reduce(x: &ArrayData, op: ReduceOp, axes: &[usize], out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "reduce is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn arg_reduce(x: &ArrayData, op: ArgReduceOp, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "arg_reduce is not implemented on the CPU yet"))
}
