//! MLX affine quantization: bit-exact `quantize`/`dequantize` against MLX's own output,
//! `quantized_matmul` against `mx.quantized_matmul`, round-trip property, bad input.
//! Fixtures: tests/fixtures/quant/ (scripts/fixtures/quant_mlx.py, mlx 0.32.4 CPU).

mod common;

use common::{assert_close, for_each_device, vals};
use rmlx::ops::quantized::{with_exact_decode, DECODE_FAMILY_ROWS, DECODE_MAX_ROWS};
use rmlx::ops::{dequantize, quantize, quantized_matmul};
use rmlx::{Array, Device, DeviceType, Dtype};

/// Whether a transposed product of `rows` rows takes the int8 decode family on `device` (outside
/// exact mode, 4/8-bit, groups of 32+): every backend up to `DECODE_MAX_ROWS`, and the CPU runs
/// short prompts, up to `DECODE_FAMILY_ROWS`, in passes of its decode kernel.
fn int8_rows(device: Device, rows: usize) -> bool {
    rows <= DECODE_MAX_ROWS || (device.kind == DeviceType::Cpu && rows <= DECODE_FAMILY_ROWS)
}
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quant")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load(st: &safetensors::SafeTensors, key: &str) -> Array {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let dtype = match t.dtype() {
        safetensors::Dtype::F32 => Dtype::F32,
        safetensors::Dtype::F16 => Dtype::F16,
        safetensors::Dtype::BF16 => Dtype::BF16,
        safetensors::Dtype::U32 => Dtype::U32,
        d => panic!("{key}: unexpected dtype {d:?}"),
    };
    Array::from_bytes(t.data(), t.shape(), dtype).unwrap()
}

/// f32 bit patterns (half values widen exactly, so equal bits mean equal halves).
fn bits_of(a: &Array) -> Vec<u32> {
    vals(a).iter().map(|v| v.to_bits()).collect()
}

#[test]
fn quantize_and_dequantize_are_bit_exact_with_mlx() {
    let bytes = fixture("quant.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for_each_device(|_| {
        let mut keys: Vec<String> = ["f32", "f16", "bf16"]
            .iter()
            .flat_map(|d| {
                [2, 3, 4, 5, 6, 8]
                    .iter()
                    .flat_map(move |b| [32, 64, 128].map(|g| format!("{d}_b{b}_g{g}")))
            })
            .collect();
        keys.push("stacked".into());
        for key in keys {
            let (bits, gs) = if key == "stacked" {
                (4, 32)
            } else {
                let p: Vec<&str> = key.split('_').collect();
                (p[1][1..].parse().unwrap(), p[2][1..].parse().unwrap())
            };
            let w = load(&st, &format!("{key}_w"));
            let (wq, s, b) = quantize(&w, gs, bits).unwrap();
            let want_wq = load(&st, &format!("{key}_wq"));
            assert_eq!(wq.shape(), want_wq.shape(), "{key} wq shape");
            assert_eq!(s.dtype(), w.dtype(), "{key} scales dtype");
            assert_eq!(
                wq.to_vec::<u32>().unwrap(),
                want_wq.to_vec::<u32>().unwrap(),
                "{key} wq"
            );
            assert_eq!(
                bits_of(&s),
                bits_of(&load(&st, &format!("{key}_scales"))),
                "{key} scales"
            );
            assert_eq!(
                bits_of(&b),
                bits_of(&load(&st, &format!("{key}_biases"))),
                "{key} biases"
            );
            let d = dequantize(
                &want_wq,
                &load(&st, &format!("{key}_scales")),
                &load(&st, &format!("{key}_biases")),
                gs,
                bits,
            )
            .unwrap();
            assert_eq!(d.dtype(), w.dtype());
            assert_eq!(
                bits_of(&d),
                bits_of(&load(&st, &format!("{key}_deq"))),
                "{key} dequantize"
            );
        }
    });
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

#[test]
fn quantized_matmul_matches_mlx() {
    let bytes = fixture("qmm.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&fixture("meta.json")).unwrap();
    let cases = meta["qmm"].as_object().unwrap();
    for_each_device(|device| {
        // Exact float decode path first (tight tolerance), then the default int8 decode path.
        for exact in [true, false] {
            with_exact_decode(exact, || {
                for (name, c) in cases {
                    let (t, gs, bits) = (
                        c["transpose"].as_bool().unwrap(),
                        c["group_size"].as_u64().unwrap() as usize,
                        c["bits"].as_u64().unwrap() as usize,
                    );
                    let ld = |p: &str| load(&st, &format!("{name}_{p}"));
                    let want = ld("out");
                    let got = quantized_matmul(
                        &ld("x"),
                        &ld("wq"),
                        &ld("scales"),
                        &ld("biases"),
                        t,
                        gs,
                        bits,
                    )
                    .unwrap();
                    assert_eq!(got.shape(), want.shape(), "{name} shape");
                    assert_eq!(got.dtype(), want.dtype(), "{name} dtype");
                    let want = vals(&want);
                    let scale = max_abs(&want);
                    let half = got.dtype() != Dtype::F32;
                    let rows = ld("x").size() / ld("x").dim(-1);
                    let int8 = !exact && t && (bits == 4 || bits == 8) && int8_rows(device, rows);
                    // outside exact mode a GPU multiplies half x by weights rounded to x's dtype
                    // on the tensor cores (as MLX does): a few half ulps
                    let half_weights = !exact && half && rows > 8;
                    let tol = if int8 || half_weights { 2e-2 } else { 1e-5 };
                    if !half {
                        assert_close(
                            &vals(&got),
                            &want,
                            1e-4,
                            tol * scale,
                            &format!("{name} (exact={exact})"),
                        );
                        continue;
                    }
                    // MLX accumulates half products with half-precision steps (its bf16 results
                    // are off by up to ~4% of max|out| from an f64 reference), so half cases are
                    // checked tightly against f64 and loosely against MLX.
                    let f = |a: Array| rmlx::ops::astype(&a, Dtype::F32);
                    let wd = vals(
                        &dequantize(&ld("wq"), &f(ld("scales")), &f(ld("biases")), gs, bits)
                            .unwrap(),
                    );
                    let n = wd.len() / ld("x").dim(-1);
                    let exact_ref = matmul_t(&vals(&ld("x")), &wd, rows, n, ld("x").dim(-1));
                    let what = format!("{name} (exact={exact}) vs f64");
                    assert_close(&vals(&got), &exact_ref, 1e-2, tol * scale, &what);
                    assert_close(
                        &vals(&got),
                        &want,
                        1e-2,
                        5e-2 * scale,
                        &format!("{name} (exact={exact}) vs MLX"),
                    );
                }
            });
        }
    });
}

/// A deterministic pseudo-random f32 vector in [-1, 1) scaled per 64-chunk.
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            u * (1.0 + (i / 64 % 5) as f32) + ((i / 64 % 3) as f32 - 1.0) * 0.3
        })
        .collect()
}

#[test]
fn round_trip_error_is_within_half_a_step() {
    for_each_device(|_| {
        for (di, dtype) in [Dtype::F32, Dtype::F16, Dtype::BF16]
            .into_iter()
            .enumerate()
        {
            let eps = match dtype {
                Dtype::F32 => f32::EPSILON,
                Dtype::F16 => 2f32.powi(-10),
                _ => 2f32.powi(-7),
            };
            for bits in [2usize, 3, 4, 5, 6, 8] {
                for gs in [16usize, 32, 64, 128] {
                    let (n, k) = (3, 256);
                    let w = Array::from_slice(
                        &rand_vec(n * k, (di * 100 + bits * 10 + gs) as u64),
                        &[n, k],
                    )
                    .unwrap();
                    let w = rmlx::ops::astype(&w, dtype);
                    let (wq, s, b) = quantize(&w, gs, bits).unwrap();
                    let d = vals(&dequantize(&wq, &s, &b, gs, bits).unwrap());
                    let (wv, sv, bv) = (vals(&w), vals(&s), vals(&b));
                    let top = ((1 << bits) - 1) as f32;
                    for i in 0..n * k {
                        let g = i / gs;
                        let (sc, bi) = (sv[g].abs(), bv[g]);
                        let err = (d[i] - wv[i]).abs();
                        // Rounding of scale/bias/result to the dtype.
                        let slack = 2.0 * eps * (top * sc + bi.abs() + wv[i].abs());
                        let q = ((d[i] - bi) / sv[g]).round();
                        // MLX rescales so the larger edge is exact; the far end can then sit up
                        // to one step past the last code and is clamped there.
                        let bound = if q == top || q == 0.0 { sc } else { 0.5 * sc };
                        assert!(
                            err <= bound + slack,
                            "{dtype} bits {bits} gs {gs} elem {i}: w {} deq {} scale {sc} err {err}",
                            wv[i],
                            d[i]
                        );
                    }
                }
            }
        }
    });
}

/// `x @ w.T` in f64 from f32 values.
fn matmul_t(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut o = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            o[i * n + j] = (0..k)
                .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                .sum::<f64>() as f32;
        }
    }
    o
}

#[test]
fn group16_f32_scales_half_x_and_views() {
    for_each_device(|device| {
        let (n, k) = (40, 512);
        for bits in [2usize, 3, 4, 5, 6, 8] {
            for gs in [16usize, 64] {
                let w =
                    Array::from_slice(&rand_vec(n * k, bits as u64 + gs as u64), &[n, k]).unwrap();
                let (wq, s, b) = quantize(&w, gs, bits).unwrap();
                let wd = vals(&dequantize(&wq, &s, &b, gs, bits).unwrap());
                for m in [1usize, 5, 9, 33] {
                    // Half x with f32 scales: the result is f32 (MLX promotion).
                    let x = rmlx::ops::astype(
                        &Array::from_slice(&rand_vec(m * k, 7 + m as u64), &[m, k]).unwrap(),
                        Dtype::F16,
                    );
                    let want = matmul_t(&vals(&x), &wd, m, n, k);
                    let got = quantized_matmul(&x, &wq, &s, &b, true, gs, bits).unwrap();
                    assert_eq!(got.dtype(), Dtype::F32);
                    let tol = if int8_rows(device, m) && gs % 32 == 0 && (bits == 4 || bits == 8) {
                        1e-2
                    } else {
                        1e-5
                    };
                    assert_close(
                        &vals(&got),
                        &want,
                        1e-4,
                        tol * max_abs(&want),
                        &format!("b{bits} g{gs} m{m}"),
                    );
                }
                // transpose=false on the transposed quantization: w2 = w.T quantized along N.
                let (kk, nn) = (64, 256);
                let w2 = Array::from_slice(&rand_vec(kk * nn, 99), &[kk, nn]).unwrap();
                let (wq2, s2, b2) = quantize(&w2, gs, bits).unwrap();
                let w2d = vals(&dequantize(&wq2, &s2, &b2, gs, bits).unwrap());
                let w2t: Vec<f32> = (0..nn * kk).map(|i| w2d[(i % kk) * nn + i / kk]).collect();
                let x = Array::from_slice(&rand_vec(3 * kk, 5), &[3, kk]).unwrap();
                let got = quantized_matmul(&x, &wq2, &s2, &b2, false, gs, bits).unwrap();
                let want = matmul_t(&vals(&x), &w2t, 3, nn, kk);
                assert_close(
                    &vals(&got),
                    &want,
                    1e-4,
                    1e-5 * max_abs(&want),
                    &format!("nt b{bits} g{gs}"),
                );
            }
        }
        // A non-contiguous x (transposed view) gives the same result as its copy.
        let w = Array::from_slice(&rand_vec(64 * 128, 3), &[64, 128]).unwrap();
        let (wq, s, b) = quantize(&w, 32, 4).unwrap();
        let xt = Array::from_slice(&rand_vec(128 * 4, 4), &[128, 4]).unwrap();
        let x = rmlx::ops::transpose(&xt, None).unwrap();
        let a = vals(&quantized_matmul(&x, &wq, &s, &b, true, 32, 4).unwrap());
        let c =
            vals(&quantized_matmul(&rmlx::ops::contiguous(&x), &wq, &s, &b, true, 32, 4).unwrap());
        assert_eq!(a, c);
    });
}

fn err_msg<T: std::fmt::Debug>(r: rmlx::Result<T>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn bad_arguments_are_clear_errors() {
    let w = Array::from_slice(&rand_vec(4 * 96, 1), &[4, 96]).unwrap();
    assert!(err_msg(quantize(&w, 64, 4)).contains("[quantize]"));
    assert!(err_msg(quantize(&w, 64, 4)).contains("(4,96)"));
    assert!(err_msg(quantize(&w, 32, 7)).contains("bits must be one of"));
    assert!(err_msg(quantize(&w, 48, 4)).contains("group_size"));
    let v = Array::from_slice(&rand_vec(64, 1), &[64]).unwrap();
    assert!(err_msg(quantize(&v, 32, 4)).contains("at least 2 dimensions"));
    let wi = Array::from_slice(&[1i32; 64], &[2, 32]).unwrap();
    assert!(err_msg(quantize(&wi, 32, 4)).contains("float"));

    let w = Array::from_slice(&rand_vec(8 * 128, 2), &[8, 128]).unwrap();
    let (wq, s, b) = quantize(&w, 64, 4).unwrap();
    // scales for another group size
    let msg = err_msg(dequantize(&wq, &s, &b, 32, 4));
    assert!(
        msg.contains("[dequantize]") && msg.contains("(8,16)") && msg.contains("(8,2)"),
        "{msg}"
    );
    // bits that disagree with the packing
    assert!(err_msg(dequantize(&wq, &s, &b, 64, 8)).contains("does not match scales"));
    let b2 = rmlx::ops::astype(&b, Dtype::F16);
    assert!(err_msg(dequantize(&wq, &s, &b2, 64, 4)).contains("same dtype"));
    let x = Array::from_slice(&rand_vec(2 * 64, 3), &[2, 64]).unwrap();
    let msg = err_msg(quantized_matmul(&x, &wq, &s, &b, true, 64, 4));
    assert!(
        msg.contains("[quantized_matmul]") && msg.contains("(2,64)") && msg.contains("K = 128"),
        "{msg}"
    );
    let wqf = rmlx::ops::astype(&wq, Dtype::F32);
    assert!(err_msg(quantized_matmul(&x, &wqf, &s, &b, true, 64, 4)).contains("uint32"));
}

/// The decode mode is fixed in each product when it is recorded: a product built inside
/// `with_exact_decode(true, ..)` and evaluated outside it (or on another thread) stays exact,
/// scopes nest and restore, and another thread keeps the process default meanwhile.
#[test]
fn decode_mode_is_recorded_per_op() {
    let (n, k) = (64, 256);
    let w = Array::from_slice(&rand_vec(n * k, 11), &[n, k]).unwrap();
    let (wq, s, b) = quantize(&w, 32, 4).unwrap();
    let x = Array::from_slice(&rand_vec(k, 12), &[1, k]).unwrap();
    let prod = || quantized_matmul(&x, &wq, &s, &b, true, 32, 4).unwrap();
    let exact = with_exact_decode(true, || {
        assert!(rmlx::ops::quantized::exact_decode());
        let inner = with_exact_decode(false, prod);
        assert!(rmlx::ops::quantized::exact_decode(), "scope not restored");
        (prod(), inner)
    });
    let (exact, inner) = exact;
    assert!(!rmlx::ops::quantized::exact_decode());
    let other_thread = std::thread::scope(|t| {
        let h = t.spawn(|| with_exact_decode(true, || vals(&prod())));
        let default = vals(&prod());
        (h.join().unwrap(), default)
    });
    // Evaluated here, outside the scope and after it ended.
    let (exact, inner, default) = (vals(&exact), vals(&inner), vals(&prod()));
    let wd = vals(&dequantize(&wq, &s, &b, 32, 4).unwrap());
    let want = matmul_t(&vals(&x), &wd, 1, n, k);
    assert_close(
        &exact,
        &want,
        1e-5,
        1e-5,
        "recorded exact, evaluated outside",
    );
    assert_eq!(other_thread.0, exact, "exact scope on another thread");
    assert_eq!(
        other_thread.1, default,
        "default here while another thread is exact"
    );
    assert_eq!(
        inner, default,
        "inner scope records the default (int8) mode"
    );
    // On machines with the int8 kernel the two modes differ (on others both are exact).
    let gap = default
        .iter()
        .zip(&exact)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(gap <= 1e-2 * max_abs(&want), "int8 error {gap}");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(
            gap > 0.0,
            "int8 and exact products are identical: mode not applied"
        );
    }
}

/// The GPU's int8 decode kernels quantize x inside each block where `M·K` is small (one row
/// of 2048 here) and by a launch of their own otherwise (eight rows of 2048): both
/// must give each row the same product, and both must stay within the int8 error of the exact
/// float product. CPU: the same check of its int8 path (rows 1 and 8 take one kernel there).
#[test]
fn int8_decode_rows_agree_whether_x_is_quantized_in_the_kernel_or_before() {
    let (m, k, n) = (8usize, 2048usize, 96usize);
    let key = |s| rmlx::ops::random::key(s);
    let x = rmlx::ops::random::normal(&[m, k], Dtype::F32, 0.0, 1.0, Some(&key(71))).unwrap();
    let w = rmlx::ops::random::normal(&[n, k], Dtype::F32, 0.0, 0.05, Some(&key(72))).unwrap();
    for_each_device(|_| {
        for (bits, dt) in [(4, Dtype::BF16), (8, Dtype::BF16), (4, Dtype::F32)] {
            let w = rmlx::ops::astype(&w, dt);
            let x = rmlx::ops::astype(&x, dt);
            let (wq, s, b) = quantize(&w, 64, bits).unwrap();
            let qmm = |x: &Array| quantized_matmul(x, &wq, &s, &b, true, 64, bits).unwrap();
            let all = vals(&qmm(&x));
            let exact = vals(&with_exact_decode(true, || qmm(&x)));
            let scale = max_abs(&exact);
            for i in 0..m {
                let row = rmlx::ops::slice(&x, &[i as i64, 0], &[i as i64 + 1, k as i64], &[1, 1])
                    .unwrap();
                let one = vals(&qmm(&row));
                let what = format!("row {i}, {bits}-bit, {dt}");
                // the same int8 blocks (Σx summed in another order): a rounding of the output
                assert_close(&one, &all[i * n..(i + 1) * n], 0.0, 1e-2 * scale, &what);
                assert_close(&one, &exact[i * n..(i + 1) * n], 0.0, 2e-2 * scale, &what);
            }
        }
    });
}

/// `quantized_matmul_add` (a residual added by the product, in the GPU decode kernels'
/// epilogue) equals the two ops bit for bit: decode rows, prefill rows, the int8 and the exact
/// paths, and an addend that broadcasts (which takes the two ops).
#[test]
fn quantized_matmul_add_equals_product_plus_addend() {
    use rmlx::ops::{add, quantized_matmul_add};
    let key = |s| rmlx::ops::random::key(s);
    let (k, n) = (256usize, 80usize);
    let w = rmlx::ops::random::normal(&[n, k], Dtype::F32, 0.0, 0.05, Some(&key(81))).unwrap();
    for_each_device(|_| {
        for dt in [Dtype::BF16, Dtype::F32] {
            let (wq, s, b) = quantize(&rmlx::ops::astype(&w, dt), 64, 4).unwrap();
            for rows in [1usize, 3, 20] {
                let x =
                    rmlx::ops::random::normal(&[1, rows, k], Dtype::F32, 0.0, 1.0, Some(&key(82)))
                        .unwrap();
                let x = rmlx::ops::astype(&x, dt);
                let r =
                    rmlx::ops::random::normal(&[1, rows, n], Dtype::F32, 0.0, 1.0, Some(&key(83)))
                        .unwrap();
                let r = rmlx::ops::astype(&r, dt);
                for exact in [false, true] {
                    with_exact_decode(exact, || {
                        let what = format!("{dt}, {rows} rows, exact={exact}");
                        let want =
                            add(&quantized_matmul(&x, &wq, &s, &b, true, 64, 4).unwrap(), &r)
                                .unwrap();
                        let got = quantized_matmul_add(&x, &wq, &s, &b, &r, true, 64, 4).unwrap();
                        assert_eq!(got.shape(), want.shape(), "{what}");
                        assert_eq!(bits_of(&got), bits_of(&want), "{what}");
                        // an addend of another shape broadcasts through the two ops
                        let rb = rmlx::ops::astype(
                            &Array::from_slice(&vec![0.5f32; n], &[n]).unwrap(),
                            dt,
                        );
                        let want = add(
                            &quantized_matmul(&x, &wq, &s, &b, true, 64, 4).unwrap(),
                            &rb,
                        )
                        .unwrap();
                        let got = quantized_matmul_add(&x, &wq, &s, &b, &rb, true, 64, 4).unwrap();
                        assert_eq!(bits_of(&got), bits_of(&want), "{what}, broadcast addend");
                    });
                }
            }
        }
    });
}

/// `rms_norm_quantized_matmul` (a pre-norm layer's first product; the GPU's int8 decode
/// kernels quantize x ∘ weight, in the kernel's blocks for short rows and in the quantizing
/// launch for long ones, and scale by 1/rms) equals the norm then the product: bit for bit where
/// the norm runs as its own op (the CPU, the float kernels of 3-bit weights and of exact mode,
/// prefill rows), within the int8 path's error where it rides on the quantization.
#[test]
fn rms_norm_quantized_matmul_equals_norm_then_product() {
    use rmlx::fast::rms_norm;
    use rmlx::ops::rms_norm_quantized_matmul;
    let key = |s| rmlx::ops::random::key(s);
    let n = 72usize;
    for_each_device(|d| {
        let gpu = d.kind == rmlx::DeviceType::Gpu;
        for k in [576usize, 4096] {
            let w =
                rmlx::ops::random::normal(&[n, k], Dtype::F32, 0.0, 0.05, Some(&key(91))).unwrap();
            let nw = rmlx::ops::random::normal(&[k], Dtype::F32, 1.0, 0.2, Some(&key(92))).unwrap();
            for (bits, dt) in [
                (4, Dtype::BF16),
                (8, Dtype::BF16),
                (4, Dtype::F32),
                (3, Dtype::BF16),
            ] {
                let (wq, s, b) = quantize(&rmlx::ops::astype(&w, dt), 64, bits).unwrap();
                let nw = rmlx::ops::astype(&nw, dt);
                for rows in [1usize, 3, 8, 20] {
                    // rows of different scales: the norm matters
                    let x = rmlx::ops::random::normal(
                        &[1, rows, k],
                        Dtype::F32,
                        0.0,
                        3.0,
                        Some(&key(93)),
                    )
                    .unwrap();
                    let x = rmlx::ops::astype(&x, dt);
                    for exact in [false, true] {
                        with_exact_decode(exact, || {
                            let what =
                                format!("K {k}, {bits}-bit, {dt}, {rows} rows, exact={exact}");
                            let normed = rms_norm(&x, Some(&nw), 1e-5).unwrap();
                            let want =
                                quantized_matmul(&normed, &wq, &s, &b, true, 64, bits).unwrap();
                            let got =
                                rms_norm_quantized_matmul(&x, &nw, 1e-5, &wq, &s, &b, 64, bits)
                                    .unwrap();
                            assert_eq!(got.shape(), want.shape(), "{what}");
                            assert_eq!(got.dtype(), want.dtype(), "{what}");
                            let int8 = gpu && !exact && rows <= 8 && bits != 3;
                            if int8 {
                                let (g, wv) = (vals(&got), vals(&want));
                                let scale = max_abs(&wv);
                                assert_close(&g, &wv, 0.0, 1e-2 * scale, &what);
                            } else {
                                assert_eq!(bits_of(&got), bits_of(&want), "{what}");
                            }
                        });
                    }
                }
            }
        }
        // a norm weight that does not match x's last axis is an error naming the norm
        let x = Array::from_slice(&[1.0f32; 64], &[1, 64]).unwrap();
        let (wq, s, b) = quantize(
            &Array::from_slice(&vec![0.5f32; 64 * 32], &[32, 64]).unwrap(),
            64,
            4,
        )
        .unwrap();
        let bad = Array::from_slice(&[1.0f32; 32], &[32]).unwrap();
        let e = rms_norm_quantized_matmul(&x, &bad, 1e-5, &wq, &s, &b, 64, 4)
            .and_then(|y| y.eval().map(|_| y))
            .expect_err("a 32-element norm weight for 64 features must fail")
            .to_string();
        assert!(e.contains("rms_norm"), "{e}");
    });
}
