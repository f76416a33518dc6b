//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn arange(start: f64, step: f64, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "arange is not implemented on the CPU yet"))
}
