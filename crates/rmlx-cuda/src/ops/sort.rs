//! Sort, argsort and argpartition along an axis: bitonic sorts of (key, index) items, compared
//! lexicographically, so the result is the CPU's stable sort (NaN last, -0 == +0). A lane of up
//! to 4096 elements (2048 for i64) is sorted in shared memory by one block; longer lanes
//! (vocabularies) are padded to a power of two in global memory, presorted in shared-memory
//! blocks, then merged by one launch per global substep and a shared-memory pass for the
//! substeps that fit a block. Argpartition returns the full stable argsort, which satisfies the
//! partition contract.

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, output, tag};
use crate::launch::{Args, Grid};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

const CUH: &str = include_str!("../../kernels/sort.cuh");

/// Bytes of one item and the C name of its type.
fn item_of(d: Dtype) -> (usize, &'static str) {
    if d == Dtype::I64 {
        (16, "It64")
    } else {
        (8, "It32")
    }
}

/// Items a block sorts in shared memory (32 KiB of them).
fn shared_items(d: Dtype) -> usize {
    (32 << 10) / item_of(d).0
}

fn what(idx: bool) -> &'static str {
    if idx {
        "idx"
    } else {
        "val"
    }
}

/// The kernel sorting whole lanes in shared memory.
pub fn small_wrapper(d: Dtype, idx: bool) -> (String, String) {
    let name = format!("sort_small_{}_{}", tag(d), what(idx));
    let t = ctype(d);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 nlanes, i64 n, i64 post, int P, void* out) {{\n  sort_small<{t}, {idx}>(x, nlanes, n, post, P, out);\n}}\n"
    );
    (name, src)
}

pub fn init_wrapper(d: Dtype) -> (String, String) {
    let name = format!("sort_init_{}", tag(d));
    let t = ctype(d);
    let it = item_of(d).1;
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 nlanes, i64 n, i64 post, int logp, {it}* items) {{\n  sort_init<{t}>(x, nlanes, n, post, logp, items);\n}}\n"
    );
    (name, src)
}

pub fn out_wrapper(d: Dtype, idx: bool) -> (String, String) {
    let name = format!("sort_out_{}_{}", tag(d), what(idx));
    let t = ctype(d);
    let it = item_of(d).1;
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 nlanes, i64 n, i64 post, int logp, const {it}* items, void* out) {{\n  sort_out<{t}, {idx}>(x, nlanes, n, post, logp, items, out);\n}}\n"
    );
    (name, src)
}

/// The shared-block pass and the global substep over items of type `it`.
pub fn merge_wrappers(it: &str) -> [(String, String); 2] {
    let b = format!("sort_block_{}", it.to_lowercase());
    let s = format!("sort_step_{}", it.to_lowercase());
    [
        (
            b.clone(),
            format!(
                "extern \"C\" __global__ void {b}({it}* items, i64 total, int S, i64 P, i64 klo, i64 khi) {{\n  sort_block<{it}>(items, total, S, P, klo, khi);\n}}\n"
            ),
        ),
        (
            s.clone(),
            format!(
                "extern \"C\" __global__ void {s}({it}* items, i64 total, i64 P, i64 k, i64 j) {{\n  sort_step<{it}>(items, total, P, k, j);\n}}\n"
            ),
        ),
    ]
}

fn threads_for(pairs: usize) -> u32 {
    pairs.clamp(32, 1024).next_power_of_two().min(1024) as u32
}

/// Sorts along `axis`: the values (`idx` false, output dtype of `x`) or the u32 indices.
fn sort_impl(
    gpu: &Arc<Gpu>,
    x: &ArrayData,
    axis: usize,
    idx: bool,
    op: &'static str,
) -> Result<ArrayData> {
    if axis >= x.shape.len() {
        return Err(Error::invalid(
            op,
            format!("axis {axis} out of range for {} dimensions", x.shape.len()),
        ));
    }
    let od = if idx { Dtype::U32 } else { x.dtype };
    let (out, yptr) = output(gpu, &x.shape, od)?;
    let n = x.shape[axis];
    if out.numel() == 0 || n == 0 {
        return Ok(out);
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid(
            op,
            format!("an axis of {n} elements does not fit u32 indices"),
        ));
    }
    let post: usize = x.shape[axis + 1..].iter().product();
    let nlanes = out.numel() / n;
    let (_keep, dev) = contiguous_input(gpu, x)?;
    let d = x.dtype;
    let p = n.next_power_of_two();
    let s = shared_items(d);
    let isz = item_of(d).0;
    let get = |(name, body): (String, String)| -> Result<(cudarc::driver::CudaFunction, String)> {
        let f = gpu
            .kernels
            .get(&gpu.ctx, &name, &format!("{CUH}\n{body}"))?;
        Ok((f, name))
    };
    if p <= s {
        let (f, name) = get(small_wrapper(d, idx))?;
        let mut a = Args::new();
        a.ptr(dev.base())
            .i64(nlanes as i64)
            .i64(n as i64)
            .i64(post as i64)
            .i32(p as i32)
            .ptr(yptr);
        let mut g = Grid::rows(nlanes, threads_for(p / 2));
        g.shared = (p * isz) as u32;
        gpu.launch(&f, &name, g, &mut a)?;
        return Ok(out);
    }
    let logp = p.trailing_zeros() as i32;
    let total = nlanes * p;
    let items = gpu.alloc.alloc(total * isz)?;
    let (fi, ni) = get(init_wrapper(d))?;
    let mut a = Args::new();
    a.ptr(dev.base())
        .i64(nlanes as i64)
        .i64(n as i64)
        .i64(post as i64)
        .i32(logp)
        .ptr(items.ptr);
    gpu.launch(&fi, &ni, Grid::elems(total), &mut a)?;
    let [bw, sw] = merge_wrappers(item_of(d).1);
    let (fb, nb) = get(bw)?;
    let (fs, ns) = get(sw)?;
    let block = |klo: usize, khi: usize| -> Result<()> {
        let mut a = Args::new();
        a.ptr(items.ptr)
            .i64(total as i64)
            .i32(s as i32)
            .i64(p as i64)
            .i64(klo as i64)
            .i64(khi as i64);
        let mut g = Grid::rows(total / s, threads_for(s / 2));
        g.shared = (s * isz) as u32;
        gpu.launch(&fb, &nb, g, &mut a)
    };
    block(2, s)?;
    let mut k = 2 * s;
    while k <= p {
        let mut j = k / 2;
        while j >= s {
            let mut a = Args::new();
            a.ptr(items.ptr)
                .i64(total as i64)
                .i64(p as i64)
                .i64(k as i64)
                .i64(j as i64);
            gpu.launch(&fs, &ns, Grid::elems(total / 2), &mut a)?;
            j /= 2;
        }
        block(k, k)?;
        k *= 2;
    }
    let (fo, no) = get(out_wrapper(d, idx))?;
    let mut a = Args::new();
    a.ptr(dev.base())
        .i64(nlanes as i64)
        .i64(n as i64)
        .i64(post as i64)
        .i32(logp)
        .ptr(items.ptr)
        .ptr(yptr);
    gpu.launch(&fo, &no, Grid::elems(nlanes * n), &mut a)?;
    // the stream orders any reuse of `items` after these kernels
    drop(items);
    Ok(out)
}

/// `Primitive::Sort`: `x` sorted ascending along `axis` (NaN last).
pub fn sort(gpu: &Arc<Gpu>, x: &ArrayData, axis: usize) -> Result<ArrayData> {
    sort_impl(gpu, x, axis, false, "sort")
}

/// `Primitive::Argsort`: stable u32 indices that sort along `axis`.
pub fn argsort(gpu: &Arc<Gpu>, x: &ArrayData, axis: usize) -> Result<ArrayData> {
    sort_impl(gpu, x, axis, true, "argsort")
}

/// `Primitive::Argpartition`: the stable argsort, which puts every element, the `kth`
/// included, in sorted position.
pub fn argpartition(gpu: &Arc<Gpu>, x: &ArrayData, kth: usize, axis: usize) -> Result<ArrayData> {
    if axis < x.shape.len() && kth >= x.shape[axis] && x.shape[axis] > 0 {
        return Err(Error::invalid(
            "argpartition",
            format!("kth {kth} out of range for an axis of {}", x.shape[axis]),
        ));
    }
    sort_impl(gpu, x, axis, true, "argpartition")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every sorting kernel compiles with NVRTC for sm_90.
    #[test]
    fn sort_kernels_compile() {
        let mut body = String::new();
        for d in Dtype::ALL {
            for idx in [false, true] {
                body.push_str(&small_wrapper(d, idx).1);
                body.push_str(&out_wrapper(d, idx).1);
            }
            body.push_str(&init_wrapper(d).1);
        }
        for it in ["It32", "It64"] {
            for (_, w) in merge_wrappers(it) {
                body.push_str(&w);
            }
        }
        assert_compiles("sort_all", &format!("{CUH}\n{body}"));
    }

    /// The bitonic schedule the host runs sorts: simulated on the CPU for a long lane.
    #[test]
    fn bitonic_schedule_sorts() {
        let (n, s) = (1000usize, 64usize);
        let p = n.next_power_of_two();
        let mut v: Vec<u64> = (0..p as u64)
            .map(|i| {
                if (i as usize) < n {
                    ((i * 7919) % 97) << 32 | i
                } else {
                    u64::MAX
                }
            })
            .collect();
        let step = |v: &mut Vec<u64>, k: usize, j: usize| {
            for t in 0..p / 2 {
                let i = ((t & !(j - 1)) << 1) | (t & (j - 1));
                let asc = (i & (p - 1)) & k == 0;
                let (a, b) = (v[i], v[i + j]);
                if if asc { b < a } else { a < b } {
                    v[i] = b;
                    v[i + j] = a;
                }
            }
        };
        let block = |v: &mut Vec<u64>, klo: usize, khi: usize| {
            let mut k = klo;
            while k <= khi {
                let mut j = (k / 2).min(s / 2);
                while j > 0 {
                    step(v, k, j);
                    j /= 2;
                }
                k *= 2;
            }
        };
        block(&mut v, 2, s);
        let mut k = 2 * s;
        while k <= p {
            let mut j = k / 2;
            while j >= s {
                step(&mut v, k, j);
                j /= 2;
            }
            block(&mut v, k, k);
            k *= 2;
        }
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }
}
