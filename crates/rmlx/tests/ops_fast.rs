//! The fused ops of `rmlx::fast` against MLX (`mx.fast.*`, fixtures written by
//! scripts/fixtures/fast_mlx.py), their fallbacks against the kernels, and argument errors.

mod common;

use common::{assert_close, for_each_device, vals};
use rmlx::fast::{self, Mask};
use rmlx::{ops, Array, Dtype};
use serde_json::Value;
use std::sync::OnceLock;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/fast");

struct Fixtures {
    bytes: Vec<u8>,
    cases: Vec<Value>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let bytes = std::fs::read(format!("{DIR}/data.safetensors")).expect("fixture data");
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/cases.json")).unwrap())
                .unwrap();
        Fixtures {
            bytes,
            cases: meta["cases"].as_array().unwrap().clone(),
        }
    })
}

fn tensor(key: &str) -> Array {
    let st = safetensors::SafeTensors::deserialize(&fixtures().bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    use safetensors::Dtype as S;
    let dt = match t.dtype() {
        S::F32 => Dtype::F32,
        S::F16 => Dtype::F16,
        S::BF16 => Dtype::BF16,
        S::I32 => Dtype::I32,
        S::BOOL => Dtype::Bool,
        d => panic!("{key}: unexpected dtype {d:?}"),
    };
    Array::from_bytes(t.data(), t.shape(), dt).unwrap()
}

/// Input `i` of a case (None where the case has none), with its transpose applied.
fn input(case: &Value, i: usize) -> Option<Array> {
    let spec = &case["inputs"][i];
    if spec.is_null() {
        return None;
    }
    let a = tensor(spec["key"].as_str().unwrap());
    Some(match spec["perm"].as_array() {
        Some(p) => {
            let p: Vec<i32> = p.iter().map(|v| v.as_i64().unwrap() as i32).collect();
            ops::transpose(&a, Some(&p)).unwrap()
        }
        None => a,
    })
}

fn tol(case: &Value, key: &str) -> (f32, f32) {
    (
        case[key][0].as_f64().unwrap() as f32,
        case[key][1].as_f64().unwrap() as f32,
    )
}

/// Which implementation a case runs through.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Fallback,
}

/// Runs one fixture case through `fast::*` (or its fallback).
fn run_case(case: &Value, path: Path) -> Array {
    let args = &case["args"];
    let fb = path == Path::Fallback;
    let f = |k: &str| args[k].as_f64().unwrap() as f32;
    match case["op"].as_str().unwrap() {
        "rms_norm" => {
            let (x, w) = (input(case, 0).unwrap(), input(case, 1));
            if fb {
                fast::rms_norm_fallback(&x, w.as_ref(), f("eps"))
            } else {
                fast::rms_norm(&x, w.as_ref(), f("eps"))
            }
        }
        "layer_norm" => {
            let (x, w, b) = (input(case, 0).unwrap(), input(case, 1), input(case, 2));
            if fb {
                fast::layer_norm_fallback(&x, w.as_ref(), b.as_ref(), f("eps"))
            } else {
                fast::layer_norm(&x, w.as_ref(), b.as_ref(), f("eps"))
            }
        }
        "rope" => {
            let x = input(case, 0).unwrap();
            let offset = input(case, 1)
                .unwrap_or_else(|| Array::scalar(args["offset"].as_i64().unwrap() as i32));
            let freqs = input(case, 2);
            let base = args["base"].as_f64().map(|b| b as f32);
            let (dims, trad) = (
                args["dims"].as_u64().unwrap() as usize,
                args["traditional"].as_bool().unwrap(),
            );
            if fb {
                fast::rope_fallback(&x, dims, trad, base, f("scale"), &offset, freqs.as_ref())
            } else {
                fast::rope(&x, dims, trad, base, f("scale"), &offset, freqs.as_ref())
            }
        }
        "sdpa" => {
            let (q, k, v, m) = (
                input(case, 0).unwrap(),
                input(case, 1).unwrap(),
                input(case, 2).unwrap(),
                input(case, 3),
            );
            let mask = match args["mask"].as_str().unwrap() {
                "none" => Mask::None,
                "causal" => Mask::Causal,
                _ => Mask::Array(m.as_ref().unwrap()),
            };
            if fb {
                fast::scaled_dot_product_attention_fallback(&q, &k, &v, f("scale"), mask)
            } else {
                fast::scaled_dot_product_attention(&q, &k, &v, f("scale"), mask)
            }
        }
        op => panic!("unknown op {op}"),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
}

/// Checks every fixture case of `op` on every device.
fn check_op(op: &str, path: Path) {
    let cases: Vec<&Value> = fixtures().cases.iter().filter(|c| c["op"] == op).collect();
    assert!(cases.len() >= 4, "fixtures for {op} missing");
    for_each_device(|_| {
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let y = run_case(case, path);
            let want_dtype = Dtype::parse(case["out_dtype"].as_str().unwrap()).unwrap();
            assert_eq!(y.dtype(), want_dtype, "{name}: dtype");
            let shape: Vec<usize> = case["out_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(y.shape(), shape.as_slice(), "{name}: shape");
            let got = vals(&y);
            let (rt, at) = tol(case, "tol");
            assert_close(
                &got,
                &vals(&tensor(case["want"].as_str().unwrap())),
                rt,
                at,
                &format!("{name} vs MLX"),
            );
            if path == Path::Fused {
                // The kernels compute in f32 and round once: close to MLX run in f32.
                let (rt, at) = tol(case, "tol_f32");
                assert_close(
                    &got,
                    &vals(&tensor(case["want_f32"].as_str().unwrap())),
                    rt,
                    at,
                    &format!("{name} vs MLX f32"),
                );
            }
        }
    });
}

#[test]
fn rms_norm_matches_mlx() {
    check_op("rms_norm", Path::Fused);
}

#[test]
fn layer_norm_matches_mlx() {
    check_op("layer_norm", Path::Fused);
}

#[test]
fn rope_matches_mlx() {
    check_op("rope", Path::Fused);
}

#[test]
fn sdpa_matches_mlx() {
    check_op("sdpa", Path::Fused);
}

#[test]
fn fallbacks_match_mlx() {
    for op in ["rms_norm", "layer_norm", "rope", "sdpa"] {
        check_op(op, Path::Fallback);
    }
}

/// Deterministic pseudo-random values in [-r, r).
fn noise(n: usize, seed: u32, r: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * r
        })
        .collect()
}

fn arr(shape: &[usize], seed: u32, r: f32, dtype: Dtype) -> Array {
    let n = shape.iter().product();
    ops::astype(
        &Array::from_slice(&noise(n, seed, r), shape).unwrap(),
        dtype,
    )
}

/// Larger shapes than the fixtures hold: kernel and fallback agree (prefill with many key
/// blocks, long decode that splits the keys, GQA (a KV head's query heads in one block or
/// shared among several), every mask kind, half types).
#[test]
fn sdpa_kernel_matches_fallback_on_large_shapes() {
    for_each_device(|_| {
        for (b, hq, hkv, l, s, d, dtype) in [
            (1, 8, 2, 1, 2000, 64, Dtype::F32),
            (2, 4, 1, 1, 700, 128, Dtype::F16),
            // 8 query heads of D = 128 per KV head: a GPU shares them among 4 blocks
            (2, 16, 2, 1, 900, 128, Dtype::BF16),
            (1, 4, 2, 70, 300, 32, Dtype::BF16),
            (1, 2, 2, 130, 130, 16, Dtype::F32),
        ] {
            let q = arr(&[b, hq, l, d], 1, 2.0, dtype);
            let k = arr(&[b, hkv, s, d], 2, 2.0, dtype);
            let v = arr(&[b, hkv, s, d], 3, 1.0, dtype);
            let keep = ops::greater(
                &arr(&[b, 1, l, s], 4, 1.0, Dtype::F32),
                &Array::scalar(-0.5f32),
            )
            .unwrap();
            let add = arr(&[1, hq, l, s], 5, 3.0, dtype);
            let scale = 1.0 / (d as f32).sqrt();
            for mask in [
                Mask::None,
                Mask::Causal,
                Mask::Array(&keep),
                Mask::Array(&add),
            ] {
                let y = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask).unwrap();
                let r =
                    fast::scaled_dot_product_attention_fallback(&q, &k, &v, scale, mask).unwrap();
                let tol = if dtype == Dtype::F32 { 1e-4 } else { 3e-2 };
                assert_close(
                    &vals(&y),
                    &vals(&r),
                    tol,
                    tol,
                    &format!("sdpa {dtype} l={l} s={s} {mask:?}"),
                );
            }
        }
        // decode over K/V rows 33 floats apart: not 16-byte aligned, so a GPU takes its
        // keys-across-warps kernel instead of the keys-across-lanes one
        let q = arr(&[1, 8, 1, 32], 6, 2.0, Dtype::F32);
        let wide = |seed| {
            let a = arr(&[1, 2, 300, 33], seed, 2.0, Dtype::F32);
            ops::slice(&a, &[0, 0, 0, 1], &[1, 2, 300, 33], &[1, 1, 1, 1]).unwrap()
        };
        let (k, v) = (wide(7), wide(8));
        let y = fast::scaled_dot_product_attention(&q, &k, &v, 0.2, Mask::None).unwrap();
        let r = fast::scaled_dot_product_attention_fallback(&q, &k, &v, 0.2, Mask::None).unwrap();
        assert_close(
            &vals(&y),
            &vals(&r),
            1e-4,
            1e-4,
            "sdpa decode, unaligned rows",
        );
    });
}

/// `sdpa_rows`: each row equals attention of that row over the first `lens[b]` keys of its own
/// buffers (whole buffers and views into longer ones; a row long enough to split its keys;
/// the 8B shape's 4 query heads per KV head of D = 128 in bf16), with a longest buffer of 2,100
/// slots and of 1,000 (the splits follow the longest).
#[test]
fn sdpa_rows_equals_attention_over_each_prefix() {
    for_each_device(|_| {
        for ((hq, hkv, d, dtype, tol), (caps, lens)) in [
            (4, 2, 64, Dtype::F32, 1e-5),
            (32, 8, 128, Dtype::BF16, 2e-2),
        ]
        .into_iter()
        .flat_map(|c| {
            [
                ([5usize, 2100, 300, 1], [3i32, 2100, 17, 1]),
                ([5, 1000, 300, 1], [3, 777, 17, 1]),
            ]
            .map(|r| (c, r))
        }) {
            let b = caps.len();
            let q = arr(&[b, hq, 1, d], 11, 2.0, dtype);
            // row 2's buffers are views: positions 100.. of a longer array
            let buf = |i: usize, seed: u32| {
                let a = arr(
                    &[1, hkv, caps[i] + 100 * (i == 2) as usize, d],
                    seed,
                    2.0,
                    dtype,
                );
                if i == 2 {
                    ops::slice(
                        &a,
                        &[0, 0, 100, 0],
                        &[1, i64::MAX, i64::MAX, i64::MAX],
                        &[1, 1, 1, 1],
                    )
                    .unwrap()
                } else {
                    a
                }
            };
            let ks: Vec<Array> = (0..b).map(|i| buf(i, 20 + i as u32)).collect();
            let vs: Vec<Array> = (0..b).map(|i| buf(i, 40 + i as u32)).collect();
            let l = Array::from_slice(&lens, &[b]).unwrap();
            let got = vals(&fast::sdpa_rows(&q, &ks, &vs, &l, 0.1).unwrap());
            for (i, &n) in lens.iter().enumerate() {
                let r = i as i64;
                let qb = ops::slice(
                    &q,
                    &[r, 0, 0, 0],
                    &[r + 1, i64::MAX, 1, i64::MAX],
                    &[1, 1, 1, 1],
                )
                .unwrap();
                let cut = |a: &Array| {
                    ops::slice(
                        a,
                        &[0, 0, 0, 0],
                        &[1, i64::MAX, n as i64, i64::MAX],
                        &[1, 1, 1, 1],
                    )
                    .unwrap()
                };
                let want = fast::scaled_dot_product_attention(
                    &qb,
                    &cut(&ks[i]),
                    &cut(&vs[i]),
                    0.1,
                    Mask::None,
                )
                .unwrap();
                assert_close(
                    &got[i * hq * d..(i + 1) * hq * d],
                    &vals(&want),
                    tol,
                    tol,
                    &format!("sdpa_rows {dtype} row {i} ({n} of {} keys)", caps[i]),
                );
            }
        }
    });
}

#[test]
fn norm_and_rope_kernels_match_fallbacks() {
    for_each_device(|_| {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let x = arr(&[3, 7, 4096], 7, 3.0, dtype);
            let w = arr(&[4096], 8, 1.0, dtype);
            let tol = if dtype == Dtype::F32 {
                1e-5
            } else if dtype == Dtype::F16 {
                2e-3
            } else {
                1.6e-2
            };
            let y = fast::rms_norm(&x, Some(&w), 1e-6).unwrap();
            let r = fast::rms_norm_fallback(&x, Some(&w), 1e-6).unwrap();
            assert_close(&vals(&y), &vals(&r), tol, tol, &format!("rms_norm {dtype}"));
            // one weight row per index of the second-to-last axis (joint q/k head norms),
            // through the general kernel too (a transposed, strided x)
            let w2 = arr(&[7, 4096], 10, 1.0, dtype);
            let y = fast::rms_norm(&x, Some(&w2), 1e-6).unwrap();
            let r = fast::rms_norm_fallback(&x, Some(&w2), 1e-6).unwrap();
            assert_close(
                &vals(&y),
                &vals(&r),
                tol,
                tol,
                &format!("rms_norm rows {dtype}"),
            );
            let xt = ops::transpose(&arr(&[7, 3, 72], 11, 3.0, dtype), Some(&[1, 0, 2])).unwrap();
            let w2 = arr(&[7, 72], 12, 1.0, dtype);
            let y = fast::rms_norm(&xt, Some(&w2), 1e-6).unwrap();
            let r = fast::rms_norm_fallback(&xt, Some(&w2), 1e-6).unwrap();
            assert_close(
                &vals(&y),
                &vals(&r),
                tol,
                tol,
                &format!("rms_norm rows, strided {dtype}"),
            );
            let y = fast::layer_norm(&x, Some(&w), Some(&w), 1e-5).unwrap();
            let r = fast::layer_norm_fallback(&x, Some(&w), Some(&w), 1e-5).unwrap();
            assert_close(
                &vals(&y),
                &vals(&r),
                tol,
                tol,
                &format!("layer_norm {dtype}"),
            );
            // rope: [B, L, H, D] viewed as [B, H, L, D], per-batch offsets, partial dims, with
            // and without a frequency array (L = 33: the GPU walks the heads per thread)
            let x =
                ops::transpose(&arr(&[2, 33, 4, 128], 9, 1.0, dtype), Some(&[0, 2, 1, 3])).unwrap();
            let off = Array::from_slice(&[5i32, 4000], &[2]).unwrap();
            let freqs = ops::add(
                &ops::abs(&arr(&[48], 13, 1.0, Dtype::F32)),
                &Array::scalar(1.0f32),
            )
            .unwrap();
            for (trad, fr) in [(false, None), (true, None), (false, Some(&freqs))] {
                let base = fr.is_none().then_some(10000.0);
                let y = fast::rope(&x, 96, trad, base, 1.0, &off, fr).unwrap();
                let r = fast::rope_fallback(&x, 96, trad, base, 1.0, &off, fr).unwrap();
                let tol = if dtype == Dtype::F32 {
                    2e-4
                } else if dtype == Dtype::F16 {
                    4e-3
                } else {
                    3e-2
                };
                assert_close(
                    &vals(&y),
                    &vals(&r),
                    tol,
                    tol,
                    &format!("rope {dtype} trad={trad} freqs={}", fr.is_some()),
                );
            }
        }
    });
}

/// Asserts `r` is an error whose message starts with `[op]` and contains `needle`.
fn assert_err<T: std::fmt::Debug>(r: rmlx::Result<T>, op: &str, needle: &str) {
    let e = r.expect_err("expected an error").to_string();
    assert!(
        e.starts_with(&format!("[{op}]")) && e.contains(needle),
        "unexpected message: {e}"
    );
}

#[test]
fn bad_arguments_are_errors() {
    let x = Array::from_slice(&[0f32; 24], &[2, 3, 4]).unwrap();
    let w3 = Array::from_slice(&[1f32; 3], &[3]).unwrap();
    let w4 = Array::from_slice(&[1f32; 4], &[4]).unwrap();
    let w22 = Array::from_slice(&[1f32; 4], &[2, 2]).unwrap();
    let xi = Array::from_slice(&[0i32; 24], &[2, 3, 4]).unwrap();
    assert_err(
        fast::rms_norm(&Array::scalar(1f32), None, 1e-5),
        "rms_norm",
        "at least 1 dimension",
    );
    assert_err(fast::rms_norm(&x, Some(&w3), 1e-5), "rms_norm", "same size");
    // a 2-D weight must be [R, D] for x [..., R, D] (here [3, 4])
    assert_err(
        fast::rms_norm(&x, Some(&w22), 1e-5),
        "rms_norm",
        "must be [R, D] for x [..., R, D]",
    );
    assert_err(
        fast::rms_norm(&xi, None, 1e-5),
        "rms_norm",
        "unsupported type",
    );
    assert_err(
        fast::layer_norm(&x, Some(&w4), Some(&w3), 1e-5),
        "layer_norm",
        "bias",
    );
    assert_err(
        fast::layer_norm_fallback(&x, Some(&w3), None, 1e-5),
        "layer_norm",
        "weight",
    );

    let off = Array::scalar(0i32);
    let x2 = Array::from_slice(&[0f32; 8], &[2, 4]).unwrap();
    assert_err(
        fast::rope(&x2, 4, false, Some(1e4), 1.0, &off, None),
        "rope",
        "at least 3 dimensions",
    );
    assert_err(
        fast::rope(&x, 3, false, Some(1e4), 1.0, &off, None),
        "rope",
        "even",
    );
    assert_err(
        fast::rope(&x, 6, false, Some(1e4), 1.0, &off, None),
        "rope",
        "must not exceed",
    );
    assert_err(
        fast::rope(&xi, 4, false, Some(1e4), 1.0, &off, None),
        "rope",
        "floating",
    );
    let off3 = Array::from_slice(&[0i32; 3], &[3]).unwrap();
    assert_err(
        fast::rope(&x, 4, false, Some(1e4), 1.0, &off3, None),
        "rope",
        "offset",
    );
    assert_err(
        fast::rope(&x, 4, false, Some(1e4), 1.0, &Array::scalar(1f32), None),
        "rope",
        "integer",
    );
    let fr = Array::from_slice(&[1f32; 2], &[2]).unwrap();
    assert_err(
        fast::rope(&x, 4, false, Some(1e4), 1.0, &off, Some(&fr)),
        "rope",
        "only one of base or freqs",
    );
    assert_err(
        fast::rope(&x, 4, false, None, 1.0, &off, None),
        "rope",
        "neither",
    );
    assert_err(
        fast::rope(&x, 4, false, None, 1.0, &off, Some(&w3)),
        "rope",
        "freqs must be one dimensional",
    );

    let op = "scaled_dot_product_attention";
    let q = Array::from_slice(&[0f32; 2 * 4 * 3 * 8], &[2, 4, 3, 8]).unwrap();
    let k = Array::from_slice(&[0f32; 2 * 2 * 5 * 8], &[2, 2, 5, 8]).unwrap();
    let k3 = Array::from_slice(&[0f32; 2 * 3 * 5 * 8], &[2, 3, 5, 8]).unwrap();
    let k6 = Array::from_slice(&[0f32; 2 * 2 * 5 * 6], &[2, 2, 5, 6]).unwrap();
    let v4 = Array::from_slice(&[0f32; 2 * 2 * 4 * 8], &[2, 2, 4, 8]).unwrap();
    let sd = |q: &Array, k: &Array, v: &Array, m: Mask| {
        fast::scaled_dot_product_attention(q, k, v, 1.0, m)
    };
    assert_err(sd(&x, &k, &k, Mask::None), op, "rank 4");
    assert_err(sd(&q, &k3, &k3, Mask::None), op, "multiple of n_kv_heads");
    assert_err(sd(&q, &k6, &k6, Mask::None), op, "matching last dimension");
    assert_err(sd(&q, &k, &v4, Mask::None), op, "same heads and length");
    let q1 = ops::slice(&q, &[0], &[1], &[1]).unwrap();
    assert_err(sd(&q1, &k, &k, Mask::None), op, "batch");
    let m5 = ops::astype(
        &Array::from_slice(&[1f32; 15], &[1, 1, 1, 3, 5]).unwrap(),
        Dtype::Bool,
    );
    assert_err(sd(&q, &k, &k, Mask::Array(&m5)), op, "at most rank 4");
    let m_bad = Array::from_slice(&[0f32; 12], &[3, 4]).unwrap();
    assert_err(sd(&q, &k, &k, Mask::Array(&m_bad)), op, "broadcast");
    let qh = ops::astype(&q, Dtype::F16);
    let (kh, m_f32) = (
        ops::astype(&k, Dtype::F16),
        Array::from_slice(&[0f32; 15], &[3, 5]).unwrap(),
    );
    assert_err(sd(&qh, &kh, &kh, Mask::Array(&m_f32)), op, "must promote");
    let qi = ops::astype(&q, Dtype::I32);
    let ki = ops::astype(&k, Dtype::I32);
    assert_err(sd(&qi, &ki, &ki, Mask::None), op, "unsupported type");
}

#[test]
fn sdpa_output_dtype_is_promoted() {
    // f16 queries with f32 keys/values compute and return f32, as MLX's result_type.
    let q = arr(&[1, 2, 3, 8], 11, 1.0, Dtype::F16);
    let k = arr(&[1, 1, 4, 8], 12, 1.0, Dtype::F32);
    let y = fast::scaled_dot_product_attention(&q, &k, &k, 0.3, Mask::Causal).unwrap();
    assert_eq!(y.dtype(), Dtype::F32);
    assert_eq!(y.shape(), &[1, 2, 3, 8]);
}

/// `rms_norm_rope` (the joint q/k norm and RoPE of a fused projection: one kernel on a GPU)
/// equals `rope(rms_norm_heads(x))`: x `[B, L, R, D]` viewed as `[B, R, L, D]` (strided), a
/// weight row per head or one `[D]` row, per-batch offsets, partial rotation, frequencies,
/// both pair layouts. Bit for bit on the CPU (the composition itself); on a GPU within the
/// rounding of one ulp of the normalised value (its sum of squares is taken in another order),
/// carried through the rotation.
#[test]
fn rms_norm_rope_equals_norm_then_rope() {
    for_each_device(|d| {
        let gpu = d.kind == rmlx::DeviceType::Gpu;
        for dtype in [Dtype::F32, Dtype::BF16] {
            let x =
                ops::transpose(&arr(&[2, 5, 6, 128], 21, 2.0, dtype), Some(&[0, 2, 1, 3])).unwrap();
            let off = Array::from_slice(&[3i32, 700], &[2]).unwrap();
            let freqs = ops::astype(&arr(&[48], 22, 1.0, Dtype::F32), Dtype::F32);
            let freqs = ops::add(&ops::abs(&freqs), &Array::scalar(1.0f32)).unwrap();
            for w in [arr(&[6, 128], 23, 1.0, dtype), arr(&[128], 24, 1.0, dtype)] {
                for trad in [false, true] {
                    for (dims, fr) in [(128, None), (96, Some(&freqs))] {
                        let base = fr.is_none().then_some(10000.0);
                        let what =
                            format!("{dtype} weight {:?} trad={trad} dims={dims}", w.shape());
                        let got =
                            fast::rms_norm_rope(&x, &w, 1e-6, dims, trad, base, 1.0, &off, fr)
                                .unwrap();
                        let n = fast::rms_norm_heads(&x, &w, 1e-6).unwrap();
                        let want = fast::rope(&n, dims, trad, base, 1.0, &off, fr).unwrap();
                        assert_eq!(got.shape(), want.shape(), "{what}");
                        assert_eq!(got.dtype(), want.dtype(), "{what}");
                        let (g, wv) = (vals(&got), vals(&want));
                        if gpu {
                            let tol = if dtype == Dtype::F32 { 1e-5 } else { 1.6e-2 };
                            assert_close(&g, &wv, tol, tol, &what);
                        } else {
                            assert_eq!(g, wv, "{what}");
                        }
                    }
                }
            }
        }
        // a weight with the wrong number of rows names the shapes
        let x = arr(&[1, 4, 3, 8], 25, 1.0, Dtype::F32);
        let w = arr(&[3, 8], 26, 1.0, Dtype::F32);
        let off = Array::scalar(0i32);
        assert_err(
            fast::rms_norm_rope(&x, &w, 1e-6, 8, false, Some(1e4), 1.0, &off, None),
            "rms_norm_rope",
            "[R, D]",
        );
    });
}
