//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn quantize(w: &ArrayData, group_size: usize, bits: usize, part: u8, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "quantize is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn dequantize(x: &[ArrayData], group_size: usize, bits: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "dequantize is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn quantized_matmul(x: &[ArrayData], group_size: usize, bits: usize, transpose: bool, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "quantized_matmul is not implemented on the CPU yet"))
}
