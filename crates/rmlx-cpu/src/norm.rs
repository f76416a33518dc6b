//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn rms_norm(x: &[ArrayData], eps: f32, has_weight: bool, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "rms_norm is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn layer_norm(x: &[ArrayData], eps: f32, has_weight: bool, has_bias: bool, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "layer_norm is not implemented on the CPU yet"))
}
