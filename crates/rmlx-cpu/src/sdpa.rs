//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn sdpa(x: &[ArrayData], scale: f32, mask: SdpaMask, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "sdpa is not implemented on the CPU yet"))
}
