//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn rope(x: &[ArrayData], dims: usize, traditional: bool, base: f32, scale: f32, has_freqs: bool, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "rope is not implemented on the CPU yet"))
}
