//! The CUDA backend's contract beyond single ops: unified memory (data moves by itself, once),
//! the on-disk kernel cache, device memory accounting and out-of-memory errors, bad devices,
//! and a differential test of CPU against GPU on random shapes, strides and dtypes.
//! Skips, saying so, where no CUDA device is present.

use rmlx::ops::quantized::with_exact_decode;
mod common;

use common::gpu;
use rmlx::{ops, Array, Device, Dtype};

/// Tests here count process-wide transfers: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn missing_gpu_is_a_clear_error() {
    rmlx::init();
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = rmlx::cuda::device_count();
    let x = rmlx::with_device(Device::gpu(n + 3), || {
        ops::add(&Array::from_vec(vec![1.0f32]), &Array::scalar(1.0f32)).unwrap()
    });
    let e = x.eval().unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(!rmlx::is_available(Device::gpu(n + 3)));
}

#[test]
fn data_moves_by_itself_once() {
    let Some(g) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let host = Array::from_vec((0..1000).map(|i| i as f32).collect());
    host.eval().unwrap();
    let up0 = rmlx::cuda::stats::uploads();
    // two GPU ops read the same host array: one upload
    let (a, b) = rmlx::with_device(g, || {
        (
            ops::multiply(&host, &host).unwrap(),
            ops::add(&host, &Array::scalar(1.0f32)).unwrap(),
        )
    });
    rmlx::eval(&[a.clone(), b.clone()]).unwrap();
    let up = rmlx::cuda::stats::uploads() - up0;
    assert!(up <= 2, "{up} uploads for one host array (+ one scalar)");
    // a GPU result read twice on the CPU: one download
    let d0 = rmlx::cuda::stats::downloads();
    let c1 = ops::add(&a, &Array::scalar(1.0f32)).unwrap();
    let c2 = ops::subtract(&a, &Array::scalar(1.0f32)).unwrap();
    rmlx::eval(&[c1.clone(), c2.clone()]).unwrap();
    assert_eq!(rmlx::cuda::stats::downloads() - d0, 1);
    assert_eq!(c1.to_vec::<f32>().unwrap()[3], 10.0);
    assert_eq!(c2.to_vec::<f32>().unwrap()[3], 8.0);
    // a CPU result back on the GPU
    let back = rmlx::with_device(g, || ops::sum(&c1, None, false).unwrap());
    let want: f32 = (0..1000).map(|i| (i * i) as f32 + 1.0).sum();
    assert!((back.item::<f32>().unwrap() - want).abs() <= want * 1e-5);
}

#[test]
fn kernels_are_cached_on_disk() {
    let Some(_) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("rmlx_kcache_{}", std::process::id()));
    std::env::set_var("RMLX_KERNEL_CACHE", &dir);
    let (name, body) = (
        "cache_probe_kernel",
        "extern \"C\" __global__ void cache_probe_kernel(float* y) { y[0] = 42.0f; }",
    );
    let (ctx, arch) = {
        let g = rmlx::cuda::context::gpu(0).unwrap();
        (g.ctx.clone(), g.arch.clone())
    };
    let c0 = rmlx::cuda::stats::compiles();
    rmlx::cuda::kernels::KernelCache::new(arch.clone())
        .get(&ctx, name, body)
        .unwrap();
    assert_eq!(rmlx::cuda::stats::compiles() - c0, 1, "first use compiles");
    // a fresh cache, as in a new process: found on disk
    rmlx::cuda::kernels::KernelCache::new(arch)
        .get(&ctx, name, body)
        .unwrap();
    assert_eq!(
        rmlx::cuda::stats::compiles() - c0,
        1,
        "second start compiles nothing"
    );
    assert!(std::fs::read_dir(&dir).unwrap().count() >= 1);
    std::env::remove_var("RMLX_KERNEL_CACHE");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_errors_show_nvrtc_log() {
    let Some(_) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = rmlx::cuda::context::gpu(0).unwrap();
    let e = rmlx::cuda::kernels::KernelCache::new(g.arch.clone())
        .get(
            &g.ctx,
            "broken_kernel",
            "extern \"C\" __global__ void broken_kernel() { undeclared_thing; }",
        )
        .expect_err("a broken kernel must not compile")
        .to_string();
    assert!(
        e.contains("broken_kernel") && e.contains("undeclared_thing"),
        "{e}"
    );
}

#[test]
fn memory_is_accounted_and_oom_is_an_error() {
    let Some(g) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = rmlx::cuda::active_memory(0);
    let x = rmlx::with_device(g, || ops::contiguous(&ops::zeros(&[1 << 20], Dtype::F32)));
    x.eval().unwrap();
    assert!(rmlx::cuda::active_memory(0) >= before + (4 << 20));
    assert!(rmlx::cuda::peak_memory(0) >= before + (4 << 20));
    drop(x);
    assert!(rmlx::cuda::active_memory(0) <= before + 4096);
    assert!(
        rmlx::cuda::cache_memory(0) >= 4 << 20,
        "freed blocks are cached"
    );
    rmlx::cuda::clear_cache(0);
    assert_eq!(rmlx::cuda::cache_memory(0), 0);
    // a limit below the request: a clear error, and the process goes on
    let old = rmlx::cuda::set_memory_limit(0, rmlx::cuda::active_memory(0) + (1 << 20)).unwrap();
    let big = rmlx::with_device(g, || ops::contiguous(&ops::zeros(&[1 << 24], Dtype::F32)));
    let e = big.eval().unwrap_err().to_string();
    rmlx::cuda::set_memory_limit(0, old).unwrap();
    assert!(e.contains("memory limit") && e.contains("67108864"), "{e}");
    let ok = rmlx::with_device(g, || ops::contiguous(&ops::zeros(&[1 << 24], Dtype::F32)));
    ok.eval().unwrap();
    // far more than the card has: the driver's refusal is an error naming sizes
    let old = rmlx::cuda::set_memory_limit(0, usize::MAX).unwrap();
    let huge = rmlx::with_device(g, || {
        ops::contiguous(&ops::zeros(&[1usize << 40], Dtype::U8))
    });
    let e = huge.eval().unwrap_err().to_string();
    rmlx::cuda::set_memory_limit(0, old).unwrap();
    assert!(e.contains("bytes"), "{e}");
}

/// A tiny deterministic generator for the differential test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn same(what: &str, c: &Array, g: &Array) {
    let (c, g) = (
        ops::astype(c, Dtype::F32).to_vec::<f32>().unwrap(),
        ops::astype(g, Dtype::F32).to_vec::<f32>().unwrap(),
    );
    assert_eq!(c.len(), g.len(), "{what}");
    for (i, (a, b)) in c.iter().zip(&g).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 2e-3 * a.abs().max(1.0);
        assert!(ok, "{what}: element {i}: cpu {a} vs gpu {b}");
    }
}

/// CPU and GPU agree on random shapes, strided views and dtypes across op families.
#[test]
fn cpu_and_gpu_agree_on_random_inputs() {
    let Some(g) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = Lcg(7);
    let dtypes = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I32];
    for case in 0..60 {
        let nd = 1 + r.below(4);
        let shape: Vec<usize> = (0..nd).map(|_| 1 + r.below(9)).collect();
        let dt = dtypes[r.below(dtypes.len())];
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| (r.below(2001) as f32 - 1000.0) / 100.0)
            .collect();
        let base = ops::astype(&Array::from_slice(&vals, &shape).unwrap(), dt);
        base.eval().unwrap();
        // a strided view: reversed-order transpose
        let perm: Vec<i32> = (0..nd as i32).rev().collect();
        let view = ops::transpose(&base, Some(&perm)).unwrap();
        let ax = (r.below(nd)) as i32;
        let build = |x: &Array| -> Vec<(String, Array)> {
            let mut v = vec![
                ("exp".into(), ops::exp(&ops::astype(x, Dtype::F32))),
                (
                    "add_bcast".into(),
                    ops::add(x, &ops::sum(x, Some(&[ax]), true).unwrap()).unwrap(),
                ),
                ("mul".into(), ops::multiply(x, x).unwrap()),
                ("sum".into(), ops::sum(x, Some(&[ax]), true).unwrap()),
                ("max".into(), ops::max(x, Some(&[ax]), false).unwrap()),
                ("argmax".into(), ops::argmax(x, Some(ax), false).unwrap()),
                (
                    "cumsum".into(),
                    ops::cumsum(x, Some(ax), false, true).unwrap(),
                ),
                ("sort".into(), ops::sort(x, Some(ax)).unwrap()),
                ("argsort".into(), ops::argsort(x, Some(ax)).unwrap()),
                ("contiguous".into(), ops::contiguous(x)),
            ];
            if dt.is_float() {
                v.push((
                    "softmax".into(),
                    ops::softmax(x, Some(&[-1]), false).unwrap(),
                ));
                v.push(("tanh".into(), ops::tanh(x)));
                v.push(("silu_mul".into(), ops::silu_mul(x, &ops::cos(x)).unwrap()));
            }
            v
        };
        for (label, x) in [("contiguous", &base), ("transposed", &view)] {
            let cpu = build(x);
            let gpu = rmlx::with_device(g, || build(x));
            for ((name, c), (_, gg)) in cpu.iter().zip(&gpu) {
                same(
                    &format!("case {case} {name} {label} {dt} {shape:?} axis {ax}"),
                    c,
                    gg,
                );
            }
        }
    }
}

fn max_rel(what: &str, c: &Array, g: &Array) -> f32 {
    let (c, g) = (
        ops::astype(c, Dtype::F32).to_vec::<f32>().unwrap(),
        ops::astype(g, Dtype::F32).to_vec::<f32>().unwrap(),
    );
    let scale = c.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let worst = c
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max |Δ| {worst:.3e} of scale {scale:.3e}");
    worst / scale
}

/// The op shapes of SmolLM2-135M (hidden 576, 9 query / 3 KV heads of 64, MLP 1536, bf16,
/// 2- to 8-bit weights): CPU (exact float product) and GPU agree to rounding.
#[test]
fn smollm2_shapes_agree() {
    let Some(g) = gpu() else { return };
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    with_exact_decode(true, || {
        let key = rmlx::random::key(3);
        let rnd = |shape: &[usize], dt: Dtype, k: u64| {
            let a = rmlx::random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&rmlx::random::key(k)))
                .unwrap();
            ops::astype(&a, dt)
        };
        let _ = key;
        let bf = Dtype::BF16;
        for (m, bits) in [
            (1usize, 2usize),
            (1, 3),
            (1, 4),
            (1, 6),
            (1, 8),
            (12, 2),
            (12, 4),
            (37, 2),
        ] {
            for (n, k) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
                let w = rnd(&[n, k], bf, 11);
                let (wq, s, b) = ops::quantize(&w, 64, bits).unwrap();
                rmlx::eval(&[wq.clone(), s.clone(), b.clone()]).unwrap();
                let x = rnd(&[1, m, k], bf, 12);
                x.eval().unwrap();
                let f = |x: &Array| ops::quantized_matmul(x, &wq, &s, &b, true, 64, bits).unwrap();
                let c = f(&x);
                let gg = rmlx::with_device(g, || f(&x));
                let r = max_rel(&format!("qmm m={m} bits={bits} {n}x{k}"), &c, &gg);
                assert!(r < 2e-2, "qmm m={m} bits={bits} {n}x{k}: relative {r}");
            }
        }
        // norm, rope, attention at the model's sizes
        let x = rnd(&[1, 37, 576], bf, 13);
        let wn = rnd(&[576], bf, 14);
        let f = |x: &Array| rmlx::fast::rms_norm(x, Some(&wn), 1e-5).unwrap();
        assert!(max_rel("rms_norm", &f(&x), &rmlx::with_device(g, || f(&x))) < 1e-2);
        let q = rnd(&[1, 9, 37, 64], bf, 15);
        let kk = rnd(&[1, 3, 37, 64], bf, 16);
        let v = rnd(&[1, 3, 37, 64], bf, 17);
        for off in [0i32, 5, 1000] {
            let o = Array::scalar(off);
            let f =
                |x: &Array| rmlx::fast::rope(x, 64, false, Some(100000.0), 1.0, &o, None).unwrap();
            assert!(
                max_rel(
                    &format!("rope offset {off}"),
                    &f(&q),
                    &rmlx::with_device(g, || f(&q))
                ) < 1e-2
            );
        }
        for (l, mask) in [
            (37usize, rmlx::fast::Mask::Causal),
            (1, rmlx::fast::Mask::None),
        ] {
            let qq = ops::slice(
                &q,
                &[0, 0, 37 - l as i64, 0],
                &[1, 9, 37, 64],
                &[1, 1, 1, 1],
            )
            .unwrap();
            let f = |q: &Array| {
                rmlx::fast::scaled_dot_product_attention(q, &kk, &v, 0.125, mask).unwrap()
            };
            assert!(
                max_rel(
                    &format!("sdpa L={l}"),
                    &f(&qq),
                    &rmlx::with_device(g, || f(&qq))
                ) < 2e-2
            );
        }
        // the tied, quantized embedding: gather rows, dequantize
        let emb = rnd(&[49152, 576], bf, 18);
        let (wq, s, b) = ops::quantize(&emb, 64, 2).unwrap();
        rmlx::eval(&[wq.clone(), s.clone(), b.clone()]).unwrap();
        let ids = Array::from_vec(vec![1u32, 9690, 198, 49151, 0]);
        let f = || {
            let t = |a: &Array| ops::take(a, &ids, Some(0)).unwrap();
            ops::dequantize(&t(&wq), &t(&s), &t(&b), 64, 2).unwrap()
        };
        assert!(max_rel("embedding rows", &f(), &rmlx::with_device(g, f)) < 1e-3);
    });
}

/// A fault inside a kernel is an error, never a crash: reported by the next synchronisation,
/// or by the faulting kernel itself under `RMLX_CUDA_SYNC=1`; later GPU work then fails with
/// an error too (CUDA keeps a faulted context unusable). Runs in a child process, since the
/// fault poisons the context for the rest of the process.
#[test]
fn kernel_fault_is_an_error() {
    let Some(_) = gpu() else { return };
    if std::env::var_os("RMLX_FAULT_CHILD").is_some() {
        let g = rmlx::cuda::context::gpu(0).unwrap();
        let src = "extern \"C\" __global__ void fault_kernel(float* p) { p[threadIdx.x] = 1.0f; }";
        let f = g.kernels.get(&g.ctx, "fault_kernel", src).unwrap();
        let mut a = rmlx::cuda::launch::Args::new();
        a.ptr(8); // not a device address
        let e = match g.launch(
            &f,
            "fault_kernel",
            rmlx::cuda::launch::Grid::elems(32),
            &mut a,
        ) {
            Err(e) => e.to_string(),
            Ok(()) => g.synchronize().unwrap_err().to_string(),
        };
        println!("FAULT_ERROR: {e}");
        let x = rmlx::with_device(Device::gpu(0), || {
            ops::add(&Array::from_vec(vec![1f32; 64]), &Array::scalar(1f32)).unwrap()
        });
        println!("AFTER: {:?}", x.to_vec::<f32>().map_err(|e| e.to_string()));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for sync in ["0", "1"] {
        let out = std::process::Command::new(&exe)
            .args([
                "kernel_fault_is_an_error",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RMLX_FAULT_CHILD", "1")
            .env("RMLX_CUDA_SYNC", sync)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "RMLX_CUDA_SYNC={sync}: {}",
            s.lines()
                .filter(|l| l.starts_with("FAULT") || l.starts_with("AFTER"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        assert!(
            out.status.success(),
            "the child crashed: {s} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            s.contains("FAULT_ERROR: ") && s.contains("ILLEGAL_ADDRESS"),
            "{s}"
        );
        if sync == "1" {
            assert!(s.contains("kernel fault_kernel failed"), "{s}");
        }
        assert!(s.contains("AFTER: Err("), "{s}");
    }
}
