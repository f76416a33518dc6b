//! Non-temporal output writes for element-wise kernels whose output is larger than the
//! last-level cache. An ordinary store first reads the destination line into the cache (the
//! read-for-ownership), a fourth stream of traffic for `a + b` on top of its two reads and one
//! write; a streaming store sends the line straight to memory. Outputs that fit the cache keep
//! ordinary stores, so the next op finds them there.

use rmlx_core::dtype::Element;
use std::ops::Range;

/// Output bytes from which element-wise kernels stream their writes (above the 32–48 MiB of
/// L3 of the servers this runs on; smaller outputs stay cache-resident for the next op).
pub const STREAM_MIN_BYTES: usize = 64 << 20;

/// Bytes computed per step into a small L1-resident buffer before they are streamed out.
const BLOCK_BYTES: usize = 8 << 10;

/// Whether an output of `n` elements of `O` should be written with streaming stores.
pub fn should_stream<O>(n: usize) -> bool {
    cfg!(target_arch = "x86_64") && n * std::mem::size_of::<O>() >= STREAM_MIN_BYTES
}

/// Fills `dst` block by block: `fill(range, block)` computes `dst[range]` into `block` (a
/// buffer from `tmp`), which is then copied to `dst` with streaming stores. Ends with a store
/// fence, so the results are visible to whichever thread reads them next.
pub fn fill_streamed<O: Element>(
    dst: &mut [O],
    tmp: &mut Vec<O>,
    mut fill: impl FnMut(Range<usize>, &mut [O]),
) {
    let per = (BLOCK_BYTES / std::mem::size_of::<O>()).max(1);
    tmp.resize(per.min(dst.len()), O::zeroed());
    let mut start = 0;
    while start < dst.len() {
        let n = per.min(dst.len() - start);
        fill(start..start + n, &mut tmp[..n]);
        store_streaming(
            bytemuck::cast_slice(&tmp[..n]),
            bytemuck::cast_slice_mut(&mut dst[start..start + n]),
        );
        start += n;
    }
    store_fence();
}

/// `dst.copy_from_slice(src)` with 16-byte streaming stores for the aligned middle.
fn store_streaming(src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let body = (dst.len() - head) / 16 * 16;
        for i in (head..head + body).step_by(16) {
            // SAFETY: i + 16 <= dst.len() == src.len(); dst + i is 16-byte aligned (head);
            // the load is unaligned. SSE2 is part of x86_64.
            unsafe {
                let v = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm_stream_si128(dst.as_mut_ptr().add(i) as *mut __m128i, v);
            }
        }
        dst[head + body..].copy_from_slice(&src[head + body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a fence has no preconditions (SSE is part of x86_64).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_fill_equals_a_plain_one_at_any_alignment_and_length() {
        for (offset, len) in [
            (0usize, 0usize),
            (1, 5),
            (3, 4097),
            (0, 20_000),
            (7, 65_536),
        ] {
            let mut buf = vec![0u8; offset + len];
            let dst = &mut buf[offset..];
            let mut tmp = Vec::new();
            fill_streamed(dst, &mut tmp, |r, o| {
                for (v, i) in o.iter_mut().zip(r) {
                    *v = (i * 7 % 251) as u8;
                }
            });
            let want: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(&buf[offset..], &want[..], "offset {offset} len {len}");
        }
    }
}
