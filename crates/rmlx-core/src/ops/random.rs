//! Random numbers from a counter-based generator (threefry2x32, 20 rounds, as JAX and MLX).
//!
//! Every draw is a pure function of a key (`u32[2]`) and the element's position, so results
//! do not depend on thread count or chunking, and `bits` matches MLX's `random.bits` bit for
//! bit (so `split` and `key` do too). Without an explicit key, draws split a global key
//! (`seed` resets it), as MLX does.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::Primitive;
use crate::shape::normalize_axis;
use std::sync::Mutex;

/// Threefry-2x32 with 20 rounds: a keyed bijection of a 64-bit counter (MLX's
/// `threefry2x32_hash`).
#[inline]
pub fn threefry2x32(key: (u32, u32), count: (u32, u32)) -> (u32, u32) {
    const ROT: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
    let ks = [key.0, key.1, key.0 ^ key.1 ^ 0x1BD1_1BDA];
    let (mut x0, mut x1) = (count.0.wrapping_add(ks[0]), count.1.wrapping_add(ks[1]));
    for i in 0..5usize {
        for &r in &ROT[i % 2] {
            x0 = x0.wrapping_add(x1);
            x1 = x1.rotate_left(r) ^ x0;
        }
        x0 = x0.wrapping_add(ks[(i + 1) % 3]);
        x1 = x1.wrapping_add(ks[(i + 2) % 3]).wrapping_add(i as u32 + 1);
    }
    (x0, x1)
}

/// Element `i` of `n` random u32s drawn from `key`, laid out as MLX's `RandomBits` does:
/// counter `(j, j + h')` fills elements `j` and `j + h'` where `h = n / 2`, `h' = h + n % 2`;
/// the middle element of an odd count takes the first word of counter `(h, 0)`.
#[inline]
pub fn bits_at(key: (u32, u32), n: usize, i: usize) -> u32 {
    let h = n / 2;
    let off = h + n % 2;
    if i < h {
        threefry2x32(key, (i as u32, (i + off) as u32)).0
    } else if n % 2 == 1 && i == h {
        threefry2x32(key, (h as u32, 0)).0
    } else {
        let j = i - off;
        threefry2x32(key, (j as u32, i as u32)).1
    }
}

/// The global key that key-less draws split; None until first use or `seed`.
static GLOBAL_KEY: Mutex<Option<(u32, u32)>> = Mutex::new(None);

fn key_words(seed: u64) -> (u32, u32) {
    ((seed >> 32) as u32, seed as u32)
}

/// Resets the global key to `key(seed)`.
pub fn seed(s: u64) {
    *GLOBAL_KEY.lock().unwrap_or_else(|e| e.into_inner()) = Some(key_words(s));
}

/// A key (u32 `[2]`: the seed's high and low words), as `mlx.core.random.key`.
#[track_caller]
pub fn key(seed: u64) -> Array {
    let (a, b) = key_words(seed);
    Array::from_vec(vec![a, b])
}

/// The next key from the global state: split it in two, keep the first, hand out the second.
#[track_caller]
fn next_key() -> Array {
    let mut g = GLOBAL_KEY.lock().unwrap_or_else(|e| e.into_inner());
    let k = *g.get_or_insert_with(|| {
        // Like MLX, an unseeded program starts from the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        key_words(t)
    });
    let new = (bits_at(k, 4, 0), bits_at(k, 4, 1));
    let out = (bits_at(k, 4, 2), bits_at(k, 4, 3));
    *g = Some(new);
    Array::from_vec(vec![out.0, out.1])
}

/// The key to use: the given one (checked) or the next from the global state.
#[track_caller]
fn resolve_key(op: &'static str, key: Option<&Array>) -> Result<Array> {
    match key {
        None => Ok(next_key()),
        Some(k) => {
            if k.dtype() != Dtype::U32 || k.shape() != [2] {
                return Err(Error::invalid(
                    op,
                    format!(
                        "key must be a uint32 array of shape (2,), got {} of shape {}",
                        k.dtype(),
                        crate::shape::fmt_shape(k.shape())
                    ),
                ));
            }
            Ok(k.clone())
        }
    }
}

/// Uniformly random u32 bits of `shape`.
#[track_caller]
pub fn bits(shape: &[usize], key: Option<&Array>) -> Result<Array> {
    let k = resolve_key("bits", key)?;
    Ok(Array::make(
        shape.into(),
        Dtype::U32,
        Primitive::RandomBits,
        [k],
    ))
}

/// `num` new keys (`[num, 2]`) derived from `key`.
#[track_caller]
pub fn split(key: &Array, num: usize) -> Result<Array> {
    let k = resolve_key("split", Some(key))?;
    Ok(Array::make(
        [num, 2].as_slice().into(),
        Dtype::U32,
        Primitive::RandomBits,
        [k],
    ))
}

fn check_float(op: &'static str, dtype: Dtype) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::dtype(
            op,
            format!("can only generate uniform numbers with real floating point type, got {dtype}"),
        ));
    }
    Ok(())
}

/// f32 in `[0, 1)`: the top 24 bits of each word as a mantissa, scaled by 2^-24 (exact).
#[track_caller]
fn unit_f32(shape: &[usize], key: &Array) -> Result<Array> {
    let b = bits(shape, Some(key))?;
    let top = crate::ops::right_shift(&b, &Array::scalar(8u32))?;
    crate::ops::multiply(
        &crate::ops::astype(&top, Dtype::F32),
        &Array::scalar(1.0f32 / 16_777_216.0),
    )
}

/// Uniform numbers in `[low, high)` of `shape` and float `dtype` (computed in f32).
#[track_caller]
pub fn uniform(
    low: f32,
    high: f32,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_float("uniform", dtype)?;
    if !(low.is_finite() && high.is_finite()) || high < low {
        return Err(Error::invalid(
            "uniform",
            format!("invalid range [{low}, {high})"),
        ));
    }
    let k = resolve_key("uniform", key)?;
    let u = unit_f32(shape, &k)?;
    let v = crate::ops::add(
        &crate::ops::multiply(&u, &Array::scalar(high - low))?,
        &Array::scalar(low),
    )?;
    // Rounding of `low + u * range` may reach `high`: keep the interval half-open.
    let below = if high > 0.0 {
        f32::from_bits(high.to_bits() - 1)
    } else if high == 0.0 {
        -f32::from_bits(1)
    } else {
        f32::from_bits(high.to_bits() + 1)
    };
    let v = if high > low {
        crate::ops::minimum(&v, &Array::scalar(below))?
    } else {
        v
    };
    Ok(crate::ops::astype(&v, dtype))
}

/// Normal numbers with mean `loc` and standard deviation `scale`: `sqrt(2) * erfinv(u)` of
/// `u` uniform in `(-1, 1)` (as MLX).
#[track_caller]
pub fn normal(
    shape: &[usize],
    dtype: Dtype,
    loc: f32,
    scale: f32,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_float() {
        return Err(Error::dtype(
            "normal",
            format!("can only generate normal numbers with real floating point type, got {dtype}"),
        ));
    }
    let k = resolve_key("normal", key)?;
    // u in [0, 1) → 2u - 1 + 2^-24 in (-1, 1): symmetric and never ±1 (erfinv(±1) = ±inf).
    let u = unit_f32(shape, &k)?;
    let s = crate::ops::add(
        &crate::ops::multiply(&u, &Array::scalar(2.0f32))?,
        &Array::scalar(-1.0f32 + 1.0 / 16_777_216.0),
    )?;
    scale_shift(
        &crate::ops::erfinv(&s),
        std::f32::consts::SQRT_2 * scale,
        loc,
        dtype,
    )
}

/// `x * scale + loc` in `dtype`: the last step of the location-scale distributions.
fn scale_shift(x: &Array, scale: f32, loc: f32, dtype: Dtype) -> Result<Array> {
    let y = crate::ops::add(
        &crate::ops::multiply(x, &Array::scalar(scale))?,
        &Array::scalar(loc),
    )?;
    Ok(crate::ops::astype(&y, dtype))
}

/// Integers uniform in `[low, high)` of an integer `dtype` (`bits % (high - low) + low`; the
/// modulo bias is below `(high - low) / 2^32`).
#[track_caller]
pub fn randint(
    low: i64,
    high: i64,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_integer() {
        return Err(Error::dtype(
            "randint",
            format!("can only generate integers with an integer dtype, got {dtype}"),
        ));
    }
    if high <= low || (high - low) > u32::MAX as i64 {
        return Err(Error::invalid(
            "randint",
            format!("invalid range [{low}, {high})"),
        ));
    }
    let k = resolve_key("randint", key)?;
    let b = bits(shape, Some(&k))?;
    let r = crate::ops::remainder(&b, &Array::scalar((high - low) as u32))?;
    let v = crate::ops::add(&crate::ops::astype(&r, Dtype::I64), &Array::scalar(low))?;
    Ok(crate::ops::astype(&v, dtype))
}

/// Samples category indices (u32) from unnormalised log-probabilities along `axis`
/// (Gumbel-max: `argmax(logits + gumbel)`). Output: `logits` without `axis`, plus a trailing
/// `[num_samples]` axis when given.
#[track_caller]
pub fn categorical(
    logits: &Array,
    axis: i32,
    num_samples: Option<usize>,
    key: Option<&Array>,
) -> Result<Array> {
    let ax = normalize_axis("categorical", axis, logits.ndim())?;
    let k = resolve_key("categorical", key)?;
    let mut l = crate::ops::moveaxis(logits, ax as i32, -1)?;
    if let Some(s) = num_samples {
        let l1 = crate::ops::expand_dims(&l, &[-2])?;
        let mut shape: Vec<usize> = l1.shape().to_vec();
        let nd = shape.len();
        shape[nd - 2] = s;
        l = crate::ops::broadcast_to(&l1, &shape)?;
    }
    let v = *l.shape().last().expect("at least 1-D");
    if v == 0 {
        return Err(Error::invalid(
            "categorical",
            "cannot sample from zero categories",
        ));
    }
    let u = unit_f32(l.shape(), &k)?;
    // Gumbel noise -log(-log(u)); u = 0 would give -inf, which never wins an argmax: harmless.
    let g = crate::ops::negative(&crate::ops::log(&crate::ops::negative(&crate::ops::log(
        &u,
    ))));
    let y = crate::ops::add(&crate::ops::astype(&l, Dtype::F32), &g)?;
    // argmax as the last element of a partition at v - 1 (O(v), no reduce kernel needed).
    let idx = crate::ops::argpartition(&y, (v - 1) as i32, Some(-1))?;
    let nd = idx.ndim();
    let mut start = vec![0i64; nd];
    start[nd - 1] = (v - 1) as i64;
    let stop: Vec<i64> = idx.shape().iter().map(|&d| d as i64).collect();
    let last = crate::ops::slice(&idx, &start, &stop, &vec![1; nd])?;
    crate::ops::squeeze(&last, &[-1])
}

/// Booleans that are true with probability `p` (broadcast to `shape`, or `p`'s shape when
/// `None`): `bits < p * 2^32`, as MLX (so the same key gives MLX's draws).
#[track_caller]
pub fn bernoulli(p: &Array, shape: Option<&[usize]>, key: Option<&Array>) -> Result<Array> {
    if !p.dtype().is_float() {
        return Err(Error::dtype(
            "bernoulli",
            format!("the probability p must be a float array, got {}", p.dtype()),
        ));
    }
    let shape = shape.unwrap_or(p.shape());
    if crate::shape::broadcast_shapes("bernoulli", shape, p.shape())?.as_slice() != shape {
        return Err(Error::invalid(
            "bernoulli",
            format!(
                "p of shape {} does not broadcast to shape {}",
                crate::shape::fmt_shape(p.shape()),
                crate::shape::fmt_shape(shape)
            ),
        ));
    }
    let k = resolve_key("bernoulli", key)?;
    let b = bits(shape, Some(&k))?;
    // p on the scale [0, next float above u32::MAX]: p >= 1 is always true, p <= 0 never.
    let upper = (u32::MAX as f32).next_up();
    let t = crate::ops::multiply(&crate::ops::astype(p, Dtype::F32), &Array::scalar(upper))?;
    crate::ops::less(&crate::ops::astype(&b, Dtype::F32), &t)
}

/// Normal numbers truncated to `[lower, upper]` (broadcast to `shape`), by inverting the
/// normal CDF on a uniform draw between the bounds' CDF values (as MLX and JAX).
#[track_caller]
pub fn truncated_normal(
    lower: &Array,
    upper: &Array,
    shape: Option<&[usize]>,
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_float() {
        return Err(Error::dtype(
            "truncated_normal",
            format!("only floating point dtypes are supported, got {dtype}"),
        ));
    }
    let bshape = crate::shape::broadcast_shapes("truncated_normal", lower.shape(), upper.shape())?;
    let shape: Vec<usize> = match shape {
        Some(s) => {
            if crate::shape::broadcast_shapes("truncated_normal", s, &bshape)?.as_slice() != s {
                return Err(Error::invalid(
                    "truncated_normal",
                    format!(
                        "bounds of shape {} do not broadcast to shape {}",
                        crate::shape::fmt_shape(&bshape),
                        crate::shape::fmt_shape(s)
                    ),
                ));
            }
            s.to_vec()
        }
        None => bshape.to_vec(),
    };
    let k = resolve_key("truncated_normal", key)?;
    let sqrt2 = Array::scalar(std::f32::consts::SQRT_2);
    let (lo, hi) = (
        crate::ops::astype(lower, Dtype::F32),
        crate::ops::astype(upper, Dtype::F32),
    );
    let a = crate::ops::erf(&crate::ops::divide(&lo, &sqrt2)?);
    let b = crate::ops::erf(&crate::ops::divide(&hi, &sqrt2)?);
    let u = unit_f32(&shape, &k)?;
    let u = crate::ops::add(
        &crate::ops::multiply(&u, &crate::ops::subtract(&b, &a)?)?,
        &a,
    )?;
    let z = crate::ops::multiply(&crate::ops::erfinv(&u), &sqrt2)?;
    let z = crate::ops::maximum(&crate::ops::minimum(&hi, &z)?, &lo)?;
    Ok(crate::ops::astype(&z, dtype))
}

/// Standard Gumbel numbers: `-log(-log(u))` of `u` uniform in `[0, 1)`.
#[track_caller]
pub fn gumbel(shape: &[usize], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    if !dtype.is_float() {
        return Err(Error::dtype(
            "gumbel",
            format!("only floating point dtypes are supported, got {dtype}"),
        ));
    }
    let u = uniform(0.0, 1.0, shape, Dtype::F32, key)?;
    let g = crate::ops::negative(&crate::ops::log(&crate::ops::negative(&crate::ops::log(
        &u,
    ))));
    Ok(crate::ops::astype(&g, dtype))
}

/// Laplace numbers with location `loc` and scale `scale`, by the inverse CDF
/// `sign(u) * log(1 - |u|)` of `u` uniform in `(-1, 1)` (as MLX; the law is symmetric).
#[track_caller]
pub fn laplace(
    shape: &[usize],
    dtype: Dtype,
    loc: f32,
    scale: f32,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_float() {
        return Err(Error::dtype(
            "laplace",
            format!("only real floating point types are supported, got {dtype}"),
        ));
    }
    let low = (-1.0f32).next_up();
    let u = uniform(low, 1.0, shape, Dtype::F32, key)?;
    let l = crate::ops::log1p(&crate::ops::negative(&crate::ops::abs(&u)));
    let s = crate::ops::multiply(&crate::ops::sign(&u), &l)?;
    scale_shift(&s, scale, loc, dtype)
}

/// A random permutation of `0..n` (uint32): the argsort of random bits, as MLX (so the same
/// key gives MLX's permutation).
#[track_caller]
pub fn permutation(n: usize, key: Option<&Array>) -> Result<Array> {
    let k = resolve_key("permutation", key)?;
    crate::ops::argsort(&bits(&[n], Some(&k))?, Some(0))
}

/// `x` with its entries along `axis` in random order.
#[track_caller]
pub fn permute(x: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    let ax = normalize_axis("permutation", axis, x.ndim())?;
    let p = permutation(x.shape()[ax], key)?;
    crate::ops::take(x, &p, Some(ax as i32))
}
