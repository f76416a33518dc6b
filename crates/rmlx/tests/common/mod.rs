//! Shared test helpers: run one body on every available device; compare with fixtures.
#![allow(dead_code)]

pub mod fixture;

use rmlx::{Array, Device};

/// Every device a test body should run on: the CPU, and GPU 0 when a GPU backend has one.
pub fn devices() -> Vec<Device> {
    rmlx::init();
    let mut v = vec![Device::cpu()];
    if rmlx::is_available(Device::gpu(0)) {
        v.push(Device::gpu(0));
    } else {
        eprintln!("skipped on GPU: no CUDA device");
    }
    v
}

/// GPU 0 when a GPU backend has one; else None, saying the test is skipped.
pub fn gpu() -> Option<Device> {
    rmlx::init();
    if rmlx::is_available(Device::gpu(0)) {
        Some(Device::gpu(0))
    } else {
        eprintln!("skipped: no CUDA device");
        None
    }
}

/// Runs `body` once per device with that device as the default.
pub fn for_each_device(mut body: impl FnMut(Device)) {
    for d in devices() {
        rmlx::with_device(d, || body(d));
    }
}

/// Asserts `|a - b| <= atol + rtol * |b|` elementwise, naming the first bad index.
pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (rtol {rtol}, atol {atol})"
        );
    }
}

/// The f32 values of an array (evaluated).
pub fn vals(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().expect("evaluates")
}

/// Deterministic values in [-r, r) of `shape` (an xorshift stream from `seed`), cast to `dtype`.
pub fn det_array(shape: &[usize], seed: u32, r: f32, dtype: rmlx::Dtype) -> Array {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(777);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * r
        })
        .collect();
    rmlx::ops::astype(&Array::from_slice(&v, shape).unwrap(), dtype)
}
