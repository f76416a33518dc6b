//! Quantized matmul on the CPU: decode GB/s against a plain memory copy, prefill GFLOP/s
//! against an f32 GEMM of the same shape, and MLX's `mx.quantized_matmul` (CPU) in the same run.
//!
//! `cargo bench -p rmlx --bench qmatmul` (env: `RMLX_BENCH_MLX=0` skips MLX; `RMLX_BENCH_PY`
//! names the Python with mlx, default `~/anchors/venv/bin/python`; `RMLX_BENCH_QUICK=1` runs
//! fewer iterations; `RMLX_BENCH_ROTATE_MIB=0` multiplies one matrix over and over, as llama.cpp's
//! `test-backend-ops` does; `RMLX_BENCH_SHAPES=1536x576,576x1536` picks the decode shapes N×K
//! and `RMLX_BENCH_GS=32` the group size, for small-model shapes). Weights rotate among enough matrices (>= 128 MiB) that they cannot sit
//! in the last-level cache; values are random (speed does not depend on them).

use half::bf16;
use rmlx_cpu::quantized::qmm::{qmm_t, sgemm_nt};
use rmlx_cpu::quantized::qmv::{qmv, Packed};
use std::time::Instant;

/// Bytes of rotating weights: `RMLX_BENCH_ROTATE_MIB` MiB (default 128). `0` multiplies one
/// matrix over and over, as llama.cpp's `test-backend-ops perf` does (part of it may then stay
/// in the last-level cache): the mode to compare with it like for like.
fn rotate_bytes() -> usize {
    std::env::var("RMLX_BENCH_ROTATE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(128)
        << 20
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Mat {
    wq: Vec<u32>,
    s: Vec<bf16>,
    b: Vec<bf16>,
}

fn rnd(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The decode shapes (N, K): `RMLX_BENCH_SHAPES` (`NxK,NxK`) or the issue's three.
fn decode_shapes() -> Vec<(usize, usize)> {
    match std::env::var("RMLX_BENCH_SHAPES") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                let (n, k) = s.split_once('x').expect("RMLX_BENCH_SHAPES: NxK,NxK");
                (n.trim().parse().unwrap(), k.trim().parse().unwrap())
            })
            .collect(),
        Err(_) => vec![(4096, 4096), (4096, 14336), (14336, 4096)],
    }
}

/// The decode products' group size: `RMLX_BENCH_GS` (32, 64 or 128), default 64.
fn group_size() -> usize {
    std::env::var("RMLX_BENCH_GS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn mats(n: usize, k: usize, bits: usize, gs: usize, count: usize) -> Vec<Mat> {
    (0..count)
        .map(|c| {
            let mut seed = 0x1234_5678_9abc_def1u64 ^ (c as u64 * 7919);
            let wq = (0..n * k * bits / 32)
                .map(|_| rnd(&mut seed) as u32)
                .collect();
            let g = n * k / gs;
            let s = (0..g)
                .map(|_| bf16::from_f32((rnd(&mut seed) % 1000) as f32 * 1e-5 + 1e-3))
                .collect();
            let b = (0..g)
                .map(|_| bf16::from_f32(-((rnd(&mut seed) % 1000) as f32) * 1e-4))
                .collect();
            Mat { wq, s, b }
        })
        .collect()
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `f` on matching halves/parts of `dst` and `src`, one scoped thread per core.
fn par_zip(dst: &mut [u8], src: &[u8], f: impl Fn(&mut [u8], &[u8]) + Sync) {
    let part = dst.len().div_ceil(threads());
    std::thread::scope(|sc| {
        for (d, s) in dst.chunks_mut(part).zip(src.chunks(part)) {
            let f = &f;
            sc.spawn(move || f(d, s));
        }
    });
}

/// The copy reference: 256 MiB copied on all cores (STREAM-style; GB/s = bytes read + written).
struct Copier {
    src: Vec<u8>,
    dst: Vec<u8>,
    /// The read-only pass's source (its own 256 MiB).
    words: Vec<u64>,
}

impl Copier {
    fn new() -> Copier {
        let n = 256 << 20;
        Copier {
            src: vec![1u8; n],
            dst: vec![0u8; n],
            words: vec![1u64; n / 8],
        }
    }

    /// One copy, GB/s.
    fn once(&mut self) -> f64 {
        let t0 = Instant::now();
        par_zip(&mut self.dst, &self.src, |d, s| d.copy_from_slice(s));
        std::hint::black_box(&self.dst);
        2.0 * self.src.len() as f64 / t0.elapsed().as_secs_f64() / 1e9
    }

    /// One read-only pass over the source (a sum of u64 words on all cores), GB/s read.
    fn read_once(&self) -> f64 {
        let words = &self.words;
        let t0 = Instant::now();
        let th = threads();
        let s: u64 = std::thread::scope(|sc| {
            let hs: Vec<_> = words
                .chunks(words.len().div_ceil(th))
                .map(|c| sc.spawn(move || c.iter().fold(0u64, |a, v| a.wrapping_add(*v))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .fold(0u64, |a, v| a.wrapping_add(v))
        });
        std::hint::black_box(s);
        (words.len() * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9
    }

    /// Median of `iters` copies, GB/s.
    fn median(&mut self, iters: usize) -> f64 {
        median((0..iters).map(|_| self.once()).collect())
    }
}

/// Decode products over rotating matrices. Each round copies 256 MiB, then multiplies by every
/// matrix once (one pass over >= 128 MiB of weights; or by one matrix 16 times, see
/// [`rotate_bytes`]); the printed ratio is the median over rounds
/// of the product's GB/s to the copy's in the same round: this machine's bandwidth drifts by tens
/// of percent within minutes, so a copy timed once at the start made ratios unreliable.
fn decode(n: usize, k: usize, bits: usize, rounds: usize, copier: &mut Copier) {
    let gs = group_size();
    let bytes = n * k * bits / 8 + 2 * (n * k / gs) * 2;
    // rotating: every matrix once per round; repeated: one matrix 16 times in a row (after the
    // round's copy, which flushes the caches, only the first of them starts cold)
    let (count, calls) = match rotate_bytes() {
        0 => (1, 16),
        r => {
            let c = r.div_ceil(bytes).max(2);
            (c, c)
        }
    };
    let ms = mats(n, k, bits, gs, count);
    let x: Vec<f32> = (0..k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let mut out = vec![0f32; n];
    for exact in [false, true] {
        let (mut per_call, mut gbs, mut ratio, mut ratio_read) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds + 1 {
            let copy = copier.once();
            let read = copier.read_once();
            let t0 = Instant::now();
            for m in ms.iter().cycle().take(calls) {
                let w = Packed {
                    wq: &m.wq,
                    scales: &m.s,
                    biases: &m.b,
                    n,
                    k,
                    group_size: gs,
                    bits,
                };
                qmv(&x, 1, &w, exact, &mut out);
            }
            let dt = t0.elapsed().as_secs_f64();
            if round > 0 {
                // round 0 warms up
                let g = (calls * bytes) as f64 / dt / 1e9;
                per_call.push(dt / calls as f64);
                gbs.push(g);
                ratio.push(g / copy);
                ratio_read.push(g / read);
            }
        }
        println!(
            "qmv  {bits}-bit g{gs} N={n:5} K={k:5} {:5}: {:8.1} us  {:6.2} GB/s  {:5.1}% of copy  {:5.1}% of read-only  ({count} matrices, {} MiB, {calls} products a round, {rounds} rounds)",
            if exact { "exact" } else { "int8" },
            median(per_call) * 1e6,
            median(gbs),
            100.0 * median(ratio),
            100.0 * median(ratio_read),
            (count * bytes) >> 20
        );
    }
}

fn prefill(m: usize, n: usize, k: usize, iters: usize) {
    let (bits, gs) = (4, 64);
    let mats = mats(n, k, bits, gs, 1);
    let w = Packed {
        wq: &mats[0].wq,
        scales: &mats[0].s,
        biases: &mats[0].b,
        n,
        k,
        group_size: gs,
        bits,
    };
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let wf: Vec<f32> = (0..n * k).map(|i| (i % 11) as f32 * 0.01).collect();
    let mut out = vec![0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let (mut tq, mut tf) = (vec![], vec![]);
    for _ in 0..iters {
        let t0 = Instant::now();
        qmm_t(&x, m, &w, &mut out);
        tq.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        sgemm_nt(&x, m, &wf, n, k, &mut out);
        tf.push(t0.elapsed().as_secs_f64());
    }
    let (gq, gf) = (flops / median(tq) / 1e9, flops / median(tf) / 1e9);
    println!("qmm  4-bit g64 M={m} N={n} K={k}: {gq:7.1} GFLOP/s; f32 gemm same shape: {gf:7.1} GFLOP/s; ratio {:.2}", gq / gf);
}

const MLX_SCRIPT: &str = r#"
import sys, time, mlx.core as mx
mx.set_default_device(mx.cpu)
iters = int(sys.argv[1])
def bench(n, k, bits, m, iters=iters):
    gs = 64
    bytes_ = n * k * bits // 8 + 2 * (n * k // gs) * 2
    count = max(2, -(-(128 << 20) // bytes_)) if m == 1 else 1
    mats = []
    for c in range(count):
        w = mx.random.normal((n, k)).astype(mx.bfloat16)
        mats.append(mx.quantize(w, group_size=gs, bits=bits))
    mx.eval(mats)
    x = mx.random.normal((m, k)).astype(mx.bfloat16)
    ts = []
    for it in range(iters + count):
        wq, s, b = mats[it % count]
        t0 = time.perf_counter()
        mx.eval(mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=gs, bits=bits))
        if it >= count:
            ts.append(time.perf_counter() - t0)
    t = sorted(ts)[len(ts) // 2]
    if m == 1:
        print(f"mlx qmv {bits}-bit g64 N={n:5} K={k:5} bf16: {t*1e6:10.1f} us {bytes_/t/1e9:6.3f} GB/s ({count} matrices)")
    else:
        print(f"mlx qmm {bits}-bit g64 M={m} N={n} K={k} bf16: {2*m*n*k/t/1e9:7.2f} GFLOP/s")
    sys.stdout.flush()
for (n, k) in [(4096, 4096), (4096, 14336), (14336, 4096)]:
    for bits in (4, 8):
        bench(n, k, bits, 1)
# MLX's CPU qmm is scalar loops: one timed run of the 512-row product is enough.
bench(4096, 4096, 4, 512, iters=1)
"#;

fn main() {
    let quick = std::env::var("RMLX_BENCH_QUICK").is_ok_and(|v| v == "1");
    let iters = if quick { 9 } else { 41 };
    println!(
        "rmlx qmatmul bench: {} threads, avx2={} fma={}",
        threads(),
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma")
    );
    let mut copier = Copier::new();
    println!(
        "memory copy (read+write): {:.2} GB/s; read-only: {:.2} GB/s",
        copier.median(iters.min(15)),
        median((0..iters.min(15)).map(|_| copier.read_once()).collect())
    );
    let rounds = if quick { 9 } else { 15 };
    for (n, k) in decode_shapes() {
        for bits in [4, 8] {
            decode(n, k, bits, rounds, &mut copier);
        }
    }
    prefill(512, 4096, 4096, if quick { 3 } else { 7 });
    println!(
        "memory copy again (drift check): {:.2} GB/s",
        copier.median(iters.min(15))
    );
    if std::env::var("RMLX_BENCH_MLX").is_ok_and(|v| v == "0") {
        return;
    }
    let py = std::env::var("RMLX_BENCH_PY").unwrap_or_else(|_| {
        format!(
            "{}/anchors/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    match std::process::Command::new(&py)
        .args(["-c", MLX_SCRIPT, &(if quick { 5 } else { 21 }).to_string()])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => println!("MLX comparison failed ({s})"),
        Err(e) => println!("MLX comparison skipped: {py}: {e}"),
    }
}
