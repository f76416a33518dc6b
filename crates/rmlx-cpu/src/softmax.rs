//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn softmax(x: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "softmax is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn logsumexp(x: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "logsumexp is not implemented on the CPU yet"))
}
