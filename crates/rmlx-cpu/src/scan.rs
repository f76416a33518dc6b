//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn scan(x: &ArrayData, op: ScanOp, axis: usize, reverse: bool, inclusive: bool, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "scan is not implemented on the CPU yet"))
}
