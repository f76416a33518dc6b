//! Elementwise and reduction bandwidth against a plain copy on the same machine, same run.
//!
//! `cargo bench -p rmlx --bench elementwise` prints, per size, GB/s (bytes read + written per
//! second, median of the runs) of:
//! - `copy`: `copy_from_slice` into a preallocated Vec, split over 2 threads (the roofline);
//! - `copy_fresh`: the same into a freshly allocated Vec each run (pays the page faults that
//!   a fresh op output pays too, as long as the core has no buffer cache);
//! - `add` (a + b), `mul` (a * b), `mul_scalar` (a * 2.0), `exp`, `sum` (all axes),
//!   `sum_rows` (last axis of [n/1024, 1024]), `sum_cols` (first axis of [n/1024, 1024]);
//!
//! and each op's ratio to `copy`. Set `RMLX_BENCH_SIZES=1048576,16777216` to choose sizes
//! (default 1 Mi, 16 Mi and 64 Mi f32 elements).

use rmlx::{ops, Array};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `runs` calls of `f` (after one warm-up).
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
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
        let runs = if n >= 1 << 26 {
            7
        } else if n >= 1 << 24 {
            11
        } else {
            31
        };
        let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let a = Array::from_slice(&src, &[n]).unwrap();
        let b = Array::from_slice(&src, &[n]).unwrap();
        let mut dst = vec![0f32; n];
        let gb = |bytes: usize, secs: f64| bytes as f64 / secs / 1e9;
        let bytes = n * 4;

        let t_copy = time(runs, || copy2(&src, &mut dst));
        let copy = gb(2 * bytes, t_copy);
        let t_fresh = time(runs, || {
            let mut d: Vec<f32> = Vec::with_capacity(n);
            // SAFETY: every element is written by copy2 before it is read.
            #[allow(clippy::uninit_vec)]
            unsafe {
                d.set_len(n)
            };
            copy2(&src, &mut d);
            std::hint::black_box(&d);
        });
        let rows = ops::reshape(&a, &[(n / 1024) as i64, 1024]).unwrap();
        let eval = |y: Array| {
            y.eval().unwrap();
            std::hint::black_box(&y);
        };
        let results = [
            ("copy_fresh", gb(2 * bytes, t_fresh)),
            (
                "add",
                gb(3 * bytes, time(runs, || eval(ops::add(&a, &b).unwrap()))),
            ),
            (
                "mul",
                gb(
                    3 * bytes,
                    time(runs, || eval(ops::multiply(&a, &b).unwrap())),
                ),
            ),
            ("mul_scalar", gb(2 * bytes, time(runs, || eval(&a * 2.0)))),
            ("exp", gb(2 * bytes, time(runs, || eval(ops::exp(&a))))),
            (
                "sum",
                gb(
                    bytes,
                    time(runs, || eval(ops::sum(&a, None, false).unwrap())),
                ),
            ),
            (
                "sum_rows",
                gb(
                    bytes,
                    time(runs, || eval(ops::sum(&rows, Some(&[-1]), false).unwrap())),
                ),
            ),
            (
                "sum_cols",
                gb(
                    bytes,
                    time(runs, || eval(ops::sum(&rows, Some(&[0]), false).unwrap())),
                ),
            ),
        ];
        println!(
            "n = {n} ({} MiB per f32 array), median of {runs} runs",
            bytes >> 20
        );
        println!("  {:<11} {:>7.2} GB/s   ratio 1.00", "copy", copy);
        for (name, v) in results {
            println!("  {name:<11} {v:>7.2} GB/s   ratio {:.2}", v / copy);
        }
    }
}
