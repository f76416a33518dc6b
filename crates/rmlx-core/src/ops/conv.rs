//! Convolutions (MLX's `conv_general` and the `conv1d/2d/3d`, `conv_transpose*` forms),
//! composed as im2col: one strided view of the padded input per kernel tap, stacked, then a
//! matmul per group. Memory is the input times the number of taps; no new primitive.
//!
//! Layouts are MLX's, channels last: input `[N, spatial..., C_in]`, weight
//! `[C_out, spatial..., C_in / groups]`, output `[N, spatial_out..., C_out]`.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::{
    astype, flip, matmul, pad, reshape, slice, slice_update, stack, swapaxes, transpose, zeros,
};
use crate::shape::fmt_shape;

/// The arguments of `conv_general`; each per-axis list may have one entry for every spatial
/// axis, or one (or none) that applies to all.
#[derive(Clone, Debug)]
pub struct ConvOptions {
    pub stride: Vec<usize>,
    /// Zeros added before each spatial axis (negative crops).
    pub padding_lo: Vec<i64>,
    /// Zeros added after each spatial axis (negative crops).
    pub padding_hi: Vec<i64>,
    pub kernel_dilation: Vec<usize>,
    /// Zeros inserted between input elements (`stride` of a transposed convolution).
    pub input_dilation: Vec<usize>,
    pub groups: usize,
    /// Flip the kernel (a true convolution; false is cross-correlation, as MLX/PyTorch).
    pub flip: bool,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            stride: vec![],
            padding_lo: vec![],
            padding_hi: vec![],
            kernel_dilation: vec![],
            input_dilation: vec![],
            groups: 1,
            flip: false,
        }
    }
}

/// `v` as one entry per spatial axis (`default` when empty, the single entry repeated).
fn per_axis<T: Copy + std::fmt::Debug>(
    what: &str,
    v: &[T],
    n: usize,
    default: T,
) -> Result<Vec<T>> {
    match v.len() {
        0 => Ok(vec![default; n]),
        1 => Ok(vec![v[0]; n]),
        k if k == n => Ok(v.to_vec()),
        _ => Err(Error::invalid(
            "conv",
            format!("invalid {what} {v:?} for {n}D convolution"),
        )),
    }
}

/// The general N-D (N = 1, 2, 3) convolution of MLX's `conv_general`.
#[track_caller]
pub fn conv_general(input: &Array, weight: &Array, o: &ConvOptions) -> Result<Array> {
    let op = "conv";
    let nd = input.ndim().saturating_sub(2);
    if !(1..=3).contains(&nd) {
        return Err(Error::invalid(
            op,
            format!(
                "only inputs with 1-3 spatial dimensions work; the input must be [N, ..., C_in], got {}",
                fmt_shape(input.shape())
            ),
        ));
    }
    if !input.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!(
                "invalid input array with type {}; convolution only supports floating point types",
                input.dtype()
            ),
        ));
    }
    if weight.ndim() != nd + 2 {
        return Err(Error::invalid(
            op,
            format!(
                "invalid weight array of shape {} for {nd}D convolution: expected [C_out, ..., C_in] with {} dimensions",
                fmt_shape(weight.shape()),
                nd + 2
            ),
        ));
    }
    let g = o.groups;
    let c_in = input.shape()[nd + 1];
    let c_out = weight.shape()[0];
    if g == 0 || !c_in.is_multiple_of(g) || !c_out.is_multiple_of(g) {
        return Err(Error::invalid(
            op,
            format!(
                "the input channels ({c_in}) and output channels ({c_out}) must be divisible by the number of groups ({g})"
            ),
        ));
    }
    if c_in != g * weight.shape()[nd + 1] {
        return Err(Error::invalid(
            op,
            format!(
                "with {g} group(s), weights of shape {} expect {} input channels but the input {} has {c_in}",
                fmt_shape(weight.shape()),
                g * weight.shape()[nd + 1],
                fmt_shape(input.shape())
            ),
        ));
    }
    let stride = per_axis("strides", &o.stride, nd, 1)?;
    let mut lo = per_axis("padding", &o.padding_lo, nd, 0)?;
    let mut hi = per_axis("padding", &o.padding_hi, nd, 0)?;
    let kdil = per_axis("kernel dilation", &o.kernel_dilation, nd, 1)?;
    let idil = per_axis("input dilation", &o.input_dilation, nd, 1)?;
    if stride.contains(&0) || kdil.contains(&0) || idil.contains(&0) {
        return Err(Error::invalid(
            op,
            format!(
                "strides {stride:?}, kernel dilation {kdil:?} and input dilation {idil:?} must be positive"
            ),
        ));
    }
    let t = Dtype::promote(input.dtype(), weight.dtype());
    let mut x = astype(input, t);
    let mut w = astype(weight, t);
    if o.flip {
        let axes: Vec<i32> = (1..=nd as i32).collect();
        w = flip(&w, Some(&axes))?;
    }
    // Input dilation: the elements spread `d` apart with zeros between.
    if idil.iter().any(|&d| d > 1) {
        let mut shape = x.shape().to_vec();
        for a in 0..nd {
            shape[a + 1] = (shape[a + 1].max(1) - 1) * idil[a] + 1;
            if x.shape()[a + 1] == 0 {
                shape[a + 1] = 0;
            }
        }
        let mut step = vec![1i64; nd + 2];
        for a in 0..nd {
            step[a + 1] = idil[a] as i64;
        }
        x = slice_update(&zeros(&shape, t), &x, &vec![0; nd + 2], &step)?;
    }
    // Negative padding crops, positive pads with zeros.
    let mut start = vec![0i64; nd + 2];
    let mut stop: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    for a in 0..nd {
        if lo[a] < 0 {
            start[a + 1] = -lo[a];
            lo[a] = 0;
        }
        if hi[a] < 0 {
            stop[a + 1] += hi[a];
            hi[a] = 0;
        }
    }
    x = slice(&x, &start, &stop, &vec![1; nd + 2])?;
    let mut widths = vec![(0usize, 0usize); nd + 2];
    for a in 0..nd {
        widths[a + 1] = (lo[a] as usize, hi[a] as usize);
    }
    x = pad(&x, &widths, 0.0)?;
    // Output sizes.
    let k: Vec<usize> = weight.shape()[1..=nd].to_vec();
    let mut out = Vec::with_capacity(nd);
    for a in 0..nd {
        let span = (k[a].max(1) - 1) * kdil[a] + 1;
        let size = x.shape()[a + 1];
        if k[a] == 0 || size < span {
            return Err(Error::invalid(
                op,
                format!(
                    "the spatial dimensions of the input after padding cannot be smaller than the weight's: axis {} of input {} (padding {:?} | {:?}) against weight {}",
                    a + 1,
                    fmt_shape(input.shape()),
                    o.padding_lo,
                    o.padding_hi,
                    fmt_shape(weight.shape())
                ),
            ));
        }
        out.push((size - span) / stride[a] + 1);
    }
    // One strided view per kernel tap: taps[j] = x[:, i*s + tap*d, ...] for i < out.
    let n = x.shape()[0];
    let taps: usize = k.iter().product();
    let mut views = Vec::with_capacity(taps);
    let mut tap = vec![0usize; nd];
    for _ in 0..taps {
        let mut b = vec![0i64; nd + 2];
        let mut e: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        let mut s = vec![1i64; nd + 2];
        for a in 0..nd {
            b[a + 1] = (tap[a] * kdil[a]) as i64;
            e[a + 1] = b[a + 1] + ((out[a] - 1) * stride[a] + 1) as i64;
            s[a + 1] = stride[a] as i64;
        }
        views.push(slice(&x, &b, &e, &s)?);
        for a in (0..nd).rev() {
            tap[a] += 1;
            if tap[a] < k[a] {
                break;
            }
            tap[a] = 0;
        }
    }
    // patches: [N, out..., taps, C_in] → [g, M, taps * C_in/g]
    let patches = stack(&views, nd as i32 + 1)?;
    let m: usize = n * out.iter().product::<usize>();
    let cg = c_in / g;
    let og = c_out / g;
    let p = reshape(&patches, &[m as i64, taps as i64, g as i64, cg as i64])?;
    let p = reshape(
        &transpose(&p, Some(&[2, 0, 1, 3]))?,
        &[g as i64, m as i64, (taps * cg) as i64],
    )?;
    // weight: [C_out, k..., C_in/g] → [g, taps * C_in/g, C_out/g]
    let wm = reshape(&w, &[g as i64, og as i64, (taps * cg) as i64])?;
    let wm = swapaxes(&wm, 1, 2)?;
    let y = matmul(&p, &wm)?; // [g, M, C_out/g]
    let y = transpose(&y, Some(&[1, 0, 2]))?;
    let mut shape: Vec<i64> = vec![n as i64];
    shape.extend(out.iter().map(|&d| d as i64));
    shape.push(c_out as i64);
    reshape(&y, &shape)
}

/// The transposed convolution (MLX's `conv_transpose_general`): `conv_general` over the
/// input dilated by `stride`, padded so the output is the input's preimage size
/// (`output_padding` more at the end), with the kernel flipped.
#[track_caller]
pub fn conv_transpose(
    input: &Array,
    weight: &Array,
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    output_padding: &[usize],
    groups: usize,
) -> Result<Array> {
    let nd = input.ndim().saturating_sub(2);
    if weight.ndim() != nd + 2 || !(1..=3).contains(&nd) {
        // conv_general reports the shapes.
        return conv_general(input, weight, &ConvOptions::default());
    }
    let stride = per_axis("strides", stride, nd, 1)?;
    let padding = per_axis("padding", padding, nd, 0)?;
    let dilation = per_axis("kernel dilation", dilation, nd, 1)?;
    let output_padding = per_axis("output padding", output_padding, nd, 0)?;
    let (mut lo, mut hi) = (Vec::with_capacity(nd), Vec::with_capacity(nd));
    for a in 0..nd {
        let k = weight.shape()[a + 1] as i64;
        let span = 1 + dilation[a] as i64 * (k - 1);
        lo.push(span - padding[a] as i64 - 1);
        let conv_out = (input.shape()[a + 1] as i64 - 1) * stride[a] as i64 - 2 * padding[a] as i64
            + dilation[a] as i64 * (k - 1)
            + 1;
        let dilated = 1 + stride[a] as i64 * (input.shape()[a + 1] as i64 - 1);
        hi.push(conv_out - dilated + padding[a] as i64 + output_padding[a] as i64);
    }
    conv_general(
        input,
        weight,
        &ConvOptions {
            stride: vec![1],
            padding_lo: lo,
            padding_hi: hi,
            kernel_dilation: dilation,
            input_dilation: stride,
            groups,
            flip: true,
        },
    )
}

/// The discrete convolution of two 1-D arrays (NumPy's `convolve`, the longer one as the
/// signal): `mode` "full", "same" or "valid".
#[track_caller]
pub fn convolve(a: &Array, v: &Array, mode: &str) -> Result<Array> {
    if a.ndim() != 1 || v.ndim() != 1 {
        return Err(Error::invalid("convolve", "inputs must be 1-D"));
    }
    if a.size() == 0 || v.size() == 0 {
        return Err(Error::invalid("convolve", "inputs cannot be empty"));
    }
    let (x, k) = if a.size() < v.size() { (v, a) } else { (a, v) };
    let kn = k.size() as i64;
    let (lo, hi) = match mode {
        "full" => (kn - 1, kn - 1),
        "valid" => (0, 0),
        // Odd kernels pad symmetrically; even ones one less at the end.
        "same" => (
            kn / 2,
            if kn % 2 == 1 {
                kn / 2
            } else {
                (kn / 2 - 1).max(0)
            },
        ),
        _ => {
            return Err(Error::invalid(
                "convolve",
                format!("invalid mode {mode:?}; expected 'full', 'same' or 'valid'"),
            ))
        }
    };
    let x3 = reshape(x, &[1, -1, 1])?;
    let k3 = reshape(k, &[1, -1, 1])?;
    let y = conv_general(
        &x3,
        &k3,
        &ConvOptions {
            padding_lo: vec![lo],
            padding_hi: vec![hi],
            flip: true,
            ..ConvOptions::default()
        },
    )?;
    reshape(&y, &[-1])
}
