//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn matmul(a: &ArrayData, b: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "matmul is not implemented on the CPU yet"))
}
