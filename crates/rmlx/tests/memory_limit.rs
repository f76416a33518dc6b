//! The memory API in a process of its own (the counters are global, so no other test may
//! allocate concurrently): active/peak tell the truth and the limit turns into an error.

use rmlx::{ops, Array, Device, Dtype};
use std::sync::Mutex;

/// The two tests share the global counters; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The devices to check: the CPU, and the GPU where there is one (its allocator counts in
/// the same process-wide functions, as MLX's do on CUDA).
fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    if rmlx::is_available(Device::gpu(0)) {
        d.push(Device::gpu(0));
    } else {
        eprintln!("skipped on the GPU: no CUDA device here");
    }
    d
}

#[test]
fn memory_api_tells_the_truth_and_limit_is_an_error() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rmlx::init();
    for dev in devices() {
        rmlx::with_device(dev, || {
            let base = rmlx::active_memory();
            rmlx::reset_peak_memory();
            let a = ops::add(&ops::ones(&[1 << 20], Dtype::F32), &Array::scalar(1.0f32)).unwrap();
            a.eval().unwrap();
            // the result is a fresh 4 MiB buffer
            assert!(
                rmlx::active_memory() >= base + (4 << 20),
                "{dev}: active {}",
                rmlx::active_memory()
            );
            assert!(rmlx::peak_memory() >= base + (4 << 20), "{dev}");
            drop(a);
            assert!(
                rmlx::active_memory() < base + (4 << 20),
                "{dev}: freed on drop"
            );

            // each allocator (host, device) has the cap on its own
            let old = rmlx::set_memory_limit(1 << 20);
            let b = ops::add(&ops::ones(&[1 << 20], Dtype::F32), &Array::scalar(1.0f32)).unwrap();
            let err = b.eval().unwrap_err().to_string();
            rmlx::set_memory_limit(old);
            assert!(
                err.contains("out of memory") && err.contains("memory limit"),
                "{dev}: {err}"
            );
            // after raising the limit the same graph evaluates
            let c = ops::add(&ops::ones(&[1 << 20], Dtype::F32), &Array::scalar(1.0f32)).unwrap();
            assert_eq!(c.to_vec::<f32>().unwrap()[7], 2.0, "{dev}");
        });
    }
}

#[test]
fn cache_reuses_and_clears() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rmlx::init();
    let a = ops::add(&ops::ones(&[1 << 18], Dtype::F32), &Array::scalar(1.0f32)).unwrap();
    a.eval().unwrap();
    drop(a);
    assert!(
        rmlx::cache_memory() >= 1 << 20,
        "freed buffer kept for reuse"
    );
    // a reused buffer must not leak old values into a zero-initialised allocation
    let z = ops::zeros(&[1 << 18], Dtype::F32);
    let z = ops::contiguous(&ops::add(&z, &Array::scalar(0.0f32)).unwrap());
    assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    rmlx::clear_cache();
    assert_eq!(rmlx::cache_memory(), 0);
}
