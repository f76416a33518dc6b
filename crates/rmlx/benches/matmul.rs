//! f32 GEMM GFLOP/s of `ops::matmul` (1024³, 4096³) next to NumPy/OpenBLAS (2 threads) in the
//! same run. `cargo bench -p rmlx --bench matmul`. Medians of a few repetitions.

use rmlx::{ops, random, Dtype};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rmlx_gflops(n: usize, reps: usize) -> f64 {
    let a = random::uniform(-1.0, 1.0, &[n, n], Dtype::F32, Some(&random::key(1))).unwrap();
    let b = random::uniform(-1.0, 1.0, &[n, n], Dtype::F32, Some(&random::key(2))).unwrap();
    rmlx::eval(&[a.clone(), b.clone()]).unwrap();
    ops::matmul(&a, &b).unwrap().eval().unwrap(); // warm-up
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            ops::matmul(&a, &b).unwrap().eval().unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    2.0 * (n as f64).powi(3) / median(times) / 1e9
}

const NUMPY: &str = r#"
import sys, time, numpy as np
from threadpoolctl import threadpool_limits
for n in map(int, sys.argv[1:]):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32); b = a.copy()
    with threadpool_limits(limits=2, user_api="blas"):
        a @ b; ts = []
        for _ in range(5 if n <= 1024 else 3):
            t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    ts.sort(); print(n, 2.0 * n**3 / ts[len(ts)//2] / 1e9)
"#;

fn main() {
    let py = std::env::var("RMLX_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/anchors/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let sizes = [1024usize, 4096];
    let np = std::process::Command::new(&py)
        .arg("-c")
        .arg(NUMPY)
        .args(sizes.iter().map(|s| s.to_string()))
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output();
    let np_out = np
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    println!("threads: rayon {}", rayon_threads());
    for n in sizes {
        let ours = rmlx_gflops(n, if n <= 1024 { 7 } else { 3 });
        let theirs: Option<f64> = np_out.lines().find_map(|l| {
            l.strip_prefix(&format!("{n} "))
                .and_then(|v| v.trim().parse().ok())
        });
        match theirs {
            Some(t) => println!(
                "f32 {n}^3: rmlx {ours:.1} GFLOP/s, numpy {t:.1} GFLOP/s, ratio numpy/rmlx {:.2}",
                t / ours
            ),
            None => println!("f32 {n}^3: rmlx {ours:.1} GFLOP/s (numpy not available at {py})"),
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
