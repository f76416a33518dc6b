//! Graph overhead: build and evaluate a chain of 10,000 `x = x + 1` on a `[16]` f32 array;
//! µs per op, next to the same chain in MLX (Python) in the same run.
//! `cargo bench -p rmlx --bench graph`.

use rmlx::{ops, Array, Dtype};
use std::time::Instant;

const N: usize = 10_000;

fn once() -> f64 {
    let t = Instant::now();
    let mut x = ops::zeros(&[16], Dtype::F32);
    let one = Array::scalar(1.0f32);
    for _ in 0..N {
        x = ops::add(&x, &one).unwrap();
    }
    x.eval().unwrap();
    let us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    assert_eq!(x.to_vec::<f32>().unwrap()[0], N as f32);
    us
}

const MLX: &str = r#"
import time, mlx.core as mx
ts = []
for _ in range(7):
    t = time.perf_counter(); x = mx.zeros((16,))
    for _ in range(10000): x = x + 1
    mx.eval(x); ts.append(time.perf_counter() - t)
ts.sort(); print(ts[3] * 1e6 / 10000)
"#;

fn main() {
    once();
    let mut v: Vec<f64> = (0..7).map(|_| once()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ours = v[3];
    let py = std::env::var("RMLX_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/anchors/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let mlx = std::process::Command::new(&py)
        .arg("-c")
        .arg(MLX)
        .env("MLX_DEVICE", "cpu")
        .output();
    let mlx: Option<f64> = mlx
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    match mlx {
        Some(m) => println!("chain of {N} adds on [16]: rmlx {ours:.2} us/op (median of 7), mlx {m:.2} us/op, ratio rmlx/mlx {:.2}", ours / m),
        None => println!("chain of {N} adds on [16]: rmlx {ours:.2} us/op (median of 7); mlx not available at {py}"),
    }
}
