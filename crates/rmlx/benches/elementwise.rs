//! Elementwise and reduction bandwidth against a plain copy on the same machine, same run.
//!
//! `cargo bench -p rmlx --bench elementwise` prints, per size, GB/s (bytes read + written per
//! second, median of the rounds; each round runs every entry once) of:
//! - `copy`: `copy_from_slice` into a preallocated Vec, split over 2 threads (the roofline);
//! - `copy_fresh`: the same into a freshly allocated Vec each run (pays the page faults that
//!   a fresh op output pays too, as long as the core has no buffer cache);
//! - `add` (a + b), `mul` (a * b), `mul_scalar` (a * 2.0), `exp`, `sum` (all axes),
//!   `sum_rows` (last axis of [n/1024, 1024]), `sum_cols` (first axis of [n/1024, 1024]);
//!
//! and each op's ratio to `copy` (the median over rounds of the ratio within a round). Set `RMLX_BENCH_SIZES=1048576,16777216` to choose sizes
//! (default 1 Mi, 16 Mi and 64 Mi f32 elements).

use rmlx::{ops, Array};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Copies `src` into `dst` on 2 threads.
fn copy2(src: &[f32], dst: &mut [f32]) {
    let h = src.len() / 2;
    let (d0, d1) = dst.split_at_mut(h);
    std::thread::scope(|s| {
        s.spawn(|| d0.copy_from_slice(&src[..h]));
        d1.copy_from_slice(&src[h..]);
    });
}

fn main() {
    rmlx::init();
    let sizes: Vec<usize> = std::env::var("RMLX_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1 << 20, 1 << 24, 1 << 26]);
    println!(
        "elementwise bench: f32, {} rayon threads; GB/s = (bytes read + written) / median time",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for &n in &sizes {
        let runs = if n >= 1 << 24 { 11 } else { 31 };
        let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let a = Array::from_slice(&src, &[n]).unwrap();
        let b = Array::from_slice(&src, &[n]).unwrap();
        let mut dst = vec![0f32; n];
        let bytes = n * 4;

        let rows = ops::reshape(&a, &[(n / 1024) as i64, 1024]).unwrap();
        let eval = |y: Array| {
            y.eval().unwrap();
            std::hint::black_box(&y);
        };
        // (name, bytes moved, one run). Each round times every entry once, copy first, so
        // each op's ratio to copy compares runs seconds apart: this machine's bandwidth drifts
        // by tens of percent over minutes, which made ratios of separate medians unreliable.
        type Run<'a> = Box<dyn FnMut() + 'a>;
        let mut entries: Vec<(&str, usize, Run)> = vec![
            ("copy", 2 * bytes, Box::new(|| copy2(&src, &mut dst))),
            (
                "copy_fresh",
                2 * bytes,
                Box::new(|| {
                    let mut d: Vec<f32> = Vec::with_capacity(n);
                    // SAFETY: every element is written by copy2 before it is read.
                    #[allow(clippy::uninit_vec)]
                    unsafe {
                        d.set_len(n)
                    };
                    copy2(&src, &mut d);
                    std::hint::black_box(&d);
                }),
            ),
            (
                "add",
                3 * bytes,
                Box::new(|| eval(ops::add(&a, &b).unwrap())),
            ),
            (
                "mul",
                3 * bytes,
                Box::new(|| eval(ops::multiply(&a, &b).unwrap())),
            ),
            ("mul_scalar", 2 * bytes, Box::new(|| eval(&a * 2.0))),
            ("exp", 2 * bytes, Box::new(|| eval(ops::exp(&a)))),
            (
                "sum",
                bytes,
                Box::new(|| eval(ops::sum(&a, None, false).unwrap())),
            ),
            (
                "sum_rows",
                bytes,
                Box::new(|| eval(ops::sum(&rows, Some(&[-1]), false).unwrap())),
            ),
            (
                "sum_cols",
                bytes,
                Box::new(|| eval(ops::sum(&rows, Some(&[0]), false).unwrap())),
            ),
        ];
        for (_, _, f) in entries.iter_mut() {
            f(); // warm-up: page faults, buffer cache
        }
        let mut gbs: Vec<Vec<f64>> = vec![Vec::new(); entries.len()];
        for _ in 0..runs {
            for (i, (_, b, f)) in entries.iter_mut().enumerate() {
                let t = Instant::now();
                f();
                gbs[i].push(*b as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        println!(
            "n = {n} ({} MiB per f32 array), {runs} rounds; GB/s median, ratio = median over rounds of op / copy in the same round",
            bytes >> 20
        );
        for (i, (name, _, _)) in entries.iter().enumerate() {
            let ratio = median(gbs[i].iter().zip(&gbs[0]).map(|(v, c)| v / c).collect());
            println!(
                "  {name:<11} {:>7.2} GB/s   ratio {ratio:.2}",
                median(gbs[i].clone())
            );
        }
    }
}
