//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn random_bits(key: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "random_bits is not implemented on the CPU yet"))
}
