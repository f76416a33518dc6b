//! Random bits from the counter-based generator in `rmlx_core::ops::random`.
//!
//! Element `i` depends only on the key and `i`, so any chunking (and thread count) gives the
//! same bits.

use crate::copy::{contiguous, out_slice_mut, CHUNK};
use rayon::prelude::*;
use rmlx_core::ops::random::bits_at;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{ArrayData, Dtype, Error, Result};

/// `[key]` (u32 `[2]`) → u32 bits of the output's shape, laid out as MLX's `RandomBits`.
pub fn random_bits(key: &ArrayData, out: &OutputSpec) -> Result<ArrayData> {
    if key.dtype != Dtype::U32 || key.numel() != 2 || out.dtype != Dtype::U32 {
        return Err(Error::runtime(
            "random_bits",
            "expects a uint32 key of 2 words and a uint32 output",
        ));
    }
    let k = contiguous::<u32>(key);
    let k = (k[0], k[1]);
    let mut o = ArrayData::alloc(out.shape, Dtype::U32)?;
    let n = o.numel();
    let dst: &mut [u32] = out_slice_mut(&mut o);
    dst.par_chunks_mut(CHUNK / 4)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = c * (CHUNK / 4);
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = bits_at(k, n, base + j);
            }
        });
    Ok(o)
}
