//! Elementwise ops (unary, binary, where, arange) against NumPy/MLX fixtures made by
//! `scripts/fixtures/ops_numpy_elementwise.py`, plus error messages and large-array paths
//! (parallel chunks, scalar broadcast, strided gathers) checked against plain Rust loops.

mod common;

use common::{assert_close, for_each_device};
use rmlx::{ops, Array, Dtype};
use serde_json::Value;

use common::fixture::{load_fixture, Fixture};

fn run_elementwise(fx: &Fixture, case: &Value) -> Option<Array> {
    let op = case["op"].as_str().unwrap();
    let x = |i| fx.input(case, i);
    let y = match op {
        "abs" => ops::abs(&x(0)),
        "negative" => ops::negative(&x(0)),
        "exp" => ops::exp(&x(0)),
        "log" => ops::log(&x(0)),
        "log1p" => ops::log1p(&x(0)),
        "sqrt" => ops::sqrt(&x(0)),
        "rsqrt" => ops::rsqrt(&x(0)),
        "square" => ops::square(&x(0)),
        "sin" => ops::sin(&x(0)),
        "cos" => ops::cos(&x(0)),
        "tanh" => ops::tanh(&x(0)),
        "sigmoid" => ops::sigmoid(&x(0)),
        "erf" => ops::erf(&x(0)),
        "erfinv" => ops::erfinv(&x(0)),
        "silu" => ops::silu(&x(0)),
        "gelu" => ops::gelu(&x(0)),
        "gelu_approx" => ops::gelu_approx(&x(0)),
        "floor" => ops::floor(&x(0)),
        "ceil" => ops::ceil(&x(0)),
        "round" => ops::round(&x(0)),
        "sign" => ops::sign(&x(0)),
        "logical_not" => ops::logical_not(&x(0)),
        "bitwise_invert" => ops::bitwise_invert(&x(0)).unwrap(),
        "where" => ops::where_(&x(0), &x(1), &x(2)).unwrap(),
        _ => {
            let f: fn(&Array, &Array) -> rmlx::Result<Array> = match op {
                "add" => ops::add,
                "subtract" => ops::subtract,
                "multiply" => ops::multiply,
                "divide" => ops::divide,
                "floor_divide" => ops::floor_divide,
                "power" => ops::power,
                "maximum" => ops::maximum,
                "minimum" => ops::minimum,
                "remainder" => ops::remainder,
                "equal" => ops::equal,
                "not_equal" => ops::not_equal,
                "less" => ops::less,
                "less_equal" => ops::less_equal,
                "greater" => ops::greater,
                "greater_equal" => ops::greater_equal,
                "logical_and" => ops::logical_and,
                "logical_or" => ops::logical_or,
                "bitwise_and" => ops::bitwise_and,
                "bitwise_or" => ops::bitwise_or,
                "bitwise_xor" => ops::bitwise_xor,
                "left_shift" => ops::left_shift,
                "right_shift" => ops::right_shift,
                _ => return None,
            };
            f(&x(0), &x(1)).unwrap()
        }
    };
    Some(y)
}

#[test]
fn elementwise_fixtures() {
    let fx = load_fixture();
    for_each_device(|_| {
        let (mut n, mut failed) = (0, Vec::<String>::new());
        for case in &fx.cases {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_elementwise(&fx, case).map(|y| fx.check(case, &y))
            }));
            match r {
                Ok(Some(())) => n += 1,
                Ok(None) => {}
                Err(_) => failed.push(case["name"].as_str().unwrap().to_string()),
            }
        }
        assert!(
            failed.is_empty(),
            "{} failed cases: {failed:?}",
            failed.len()
        );
        // every elementwise case of the fixture (the rest are reductions, run by ops_reduce)
        assert!(n >= 342, "only {n} elementwise cases ran");
    });
}

/// Deterministic pseudo-random f32s in [-4, 4).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

#[test]
fn large_arrays_take_every_path() {
    for_each_device(|_| {
        // > several chunks, not a multiple of the chunk or the vector width
        let (r, c) = (517usize, 301usize);
        let (av, bv) = (data(r * c, 1), data(r * c, 2));
        let a = Array::from_slice(&av, &[r, c]).unwrap();
        let b = Array::from_slice(&bv, &[r, c]).unwrap();
        // contiguous + contiguous
        let got = ops::add(&a, &b).unwrap().to_vec::<f32>().unwrap();
        let want: Vec<f32> = av.iter().zip(&bv).map(|(x, y)| x + y).collect();
        assert_eq!(got, want);
        // scalar broadcast (stride 0) on either side
        let got = (&a * 2.0).to_vec::<f32>().unwrap();
        assert_eq!(got, av.iter().map(|x| x * 2.0).collect::<Vec<_>>());
        let two = Array::scalar(2.0f32);
        let got = ops::subtract(&two, &a).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(got, av.iter().map(|x| 2.0 - x).collect::<Vec<_>>());
        // strided (transposed) with a row broadcast
        let t = ops::transpose(&b.clone(), None).unwrap(); // [c, r]
        let row = Array::from_slice(&av[..r], &[r]).unwrap();
        let got = ops::multiply(&t, &row).unwrap().to_vec::<f32>().unwrap();
        for i in [0usize, 1, 77, c * r - 1] {
            let (ci, ri) = (i / r, i % r);
            assert_eq!(got[i], bv[ri * c + ci] * av[ri], "element {i}");
        }
        // exp matches std within an ulp or two
        let got = ops::exp(&a).to_vec::<f32>().unwrap();
        let want: Vec<f32> = av.iter().map(|x| x.exp()).collect();
        assert_close(&got, &want, 3e-7, 0.0, "exp");
        // half types through the same driver
        let h = ops::astype(&a, Dtype::BF16);
        let got = ops::sigmoid(&h).to_vec::<f32>().unwrap();
        let want: Vec<f32> = av
            .iter()
            .map(|&x| 1.0 / (1.0 + (-(half::bf16::from_f32(x).to_f32())).exp()))
            .collect();
        assert_close(&got, &want, 8e-3, 1e-3, "sigmoid bf16");
    });
}

#[test]
fn special_values() {
    for_each_device(|_| {
        let x = Array::from_vec(vec![
            -1000.0f32,
            1000.0,
            f32::NAN,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let s = ops::sigmoid(&x).to_vec::<f32>().unwrap();
        assert_eq!(&s[..2], &[0.0, 1.0]);
        assert!(s[2].is_nan());
        assert_eq!(&s[3..], &[0.5, 1.0, 0.0]);
        let e = ops::exp(&x).to_vec::<f32>().unwrap();
        assert_eq!(e[0], 0.0);
        assert_eq!(e[1], f32::INFINITY);
        assert!(e[2].is_nan());
        assert_eq!(&e[3..], &[1.0, f32::INFINITY, 0.0]);
        let u = Array::from_vec(vec![-1.0f32, 1.0, 1.5]);
        let v = ops::erfinv(&u).to_vec::<f32>().unwrap();
        assert_eq!(&v[..2], &[f32::NEG_INFINITY, f32::INFINITY]);
        assert!(v[2].is_nan());
        // integer power with a negative exponent is 0 except for |base| = 1 (MLX)
        let b = Array::from_vec(vec![2i32, 1, -1, -1]);
        let p = Array::from_vec(vec![-1i32, -3, -3, -2]);
        assert_eq!(
            ops::power(&b, &p).unwrap().to_vec::<i32>().unwrap(),
            vec![0, 1, -1, 1]
        );
    });
}

/// rmlx's fused SwiGLU gate equals silu(a) * b (rounded once), broadcasts, and takes integers
/// to float32.
#[test]
fn silu_mul_is_the_swiglu_gate() {
    for_each_device(|_| {
        let a: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let b: Vec<f32> = (0..40).map(|i| (i as f32 * 0.3).sin()).collect();
        let want: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| x / (1.0 + (-x).exp()) * y)
            .collect();
        let (aa, bb) = (
            Array::from_slice(&a, &[4, 10]).unwrap(),
            Array::from_slice(&b, &[4, 10]).unwrap(),
        );
        let got = ops::silu_mul(&aa, &bb).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &want, 1e-6, 1e-6, "silu_mul f32");
        let half = ops::silu_mul(
            &ops::astype(&aa, Dtype::BF16),
            &ops::astype(&bb, Dtype::BF16),
        );
        let half = ops::astype(&half.unwrap(), Dtype::F32)
            .to_vec::<f32>()
            .unwrap();
        assert_close(&half, &want, 2e-2, 2e-2, "silu_mul bf16");
        let row = ops::silu_mul(&aa, &Array::scalar(2.0f32)).unwrap();
        assert_eq!(row.shape(), &[4, 10]);
        let i = ops::silu_mul(
            &Array::from_vec(vec![1i32, -2]),
            &Array::from_vec(vec![3i32, 1]),
        );
        let i = i.unwrap();
        assert_eq!(i.dtype(), Dtype::F32);
        assert_close(
            &i.to_vec::<f32>().unwrap(),
            &[3.0 / (1.0 + (-1.0f32).exp()), -2.0 / (1.0 + 2.0f32.exp())],
            1e-6,
            1e-6,
            "silu_mul i32",
        );
    });
}

#[test]
fn arange_kernel() {
    for_each_device(|_| {
        let a = ops::arange(1.0, 2.0, 0.25, Dtype::F32).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 1.25, 1.5, 1.75]);
        let a = ops::arange(10.0, 0.0, -3.0, Dtype::I32).unwrap();
        assert_eq!(a.to_vec::<i32>().unwrap(), vec![10, 7, 4, 1]);
    });
}

#[test]
fn errors_name_the_op() {
    for_each_device(|_| {
        let a = Array::from_slice(&[1.0f32; 6], &[2, 3]).unwrap();
        let b = Array::from_slice(&[1.0f32; 4], &[4]).unwrap();
        let e = ops::add(&a, &b).unwrap_err().to_string();
        assert!(
            e.starts_with("[add]") && e.contains("(2,3)") && e.contains("(4,)"),
            "{e}"
        );
        let e = ops::where_(&Array::from_vec(vec![true as u8]), &a, &b)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("[where]"), "{e}");
        let e = ops::bitwise_and(&a, &a).unwrap_err().to_string();
        assert!(e.starts_with("[bitwise_and]"), "{e}");
        let e = ops::bitwise_invert(&a).unwrap_err().to_string();
        assert!(e.starts_with("[bitwise_invert]"), "{e}");
    });
}

/// Outputs above the streaming threshold (64 MiB) are written with non-temporal stores in
/// blocks: every element still lands where it belongs, for two arrays, an array and a scalar,
/// and a unary op, at a length that is not a multiple of any block or chunk.
#[test]
fn large_outputs_written_by_streaming_stores_are_exact() {
    rmlx::with_device(rmlx::Device::cpu(), || {
        let n = (16 << 20) + 1029;
        let a = ops::arange(0.0, n as f64, 1.0, Dtype::F32).unwrap();
        let two = Array::scalar(2.0f32);
        let check = |what: &str, y: &Array, f: &dyn Fn(f32) -> f32| {
            let v = y.to_vec::<f32>().unwrap();
            assert_eq!(v.len(), n, "{what}");
            for i in (0..n).step_by(4093).chain(n - 40..n) {
                assert_eq!(v[i], f(i as f32), "{what} [{i}]");
            }
        };
        check("a + a", &ops::add(&a, &a).unwrap(), &|x| x + x);
        check("a * 2", &ops::multiply(&a, &two).unwrap(), &|x| x * 2.0);
        check("-a", &ops::neg(&a), &|x| -x);
    });
}

/// On a GPU, binary ops whose operands are column blocks of matrices (the row-strided kernels:
/// the halves of a fused gate/up product, a broadcast row or column) equal the CPU.
#[test]
fn gpu_binary_on_column_blocks_matches_the_cpu() {
    let Some(g) = common::gpu() else { return };
    let m = ops::reshape(
        &ops::arange(0.0, 6.0 * 40.0, 1.0, Dtype::F32).unwrap(),
        &[6, 40],
    )
    .unwrap();
    let m = ops::multiply(&m, &Array::scalar(0.01f32)).unwrap();
    for dt in [Dtype::F32, Dtype::BF16] {
        let m = ops::astype(&m, dt);
        let left = ops::slice(&m, &[0, 0], &[6, 20], &[1, 1]).unwrap();
        let right = ops::slice(&m, &[0, 20], &[6, 40], &[1, 1]).unwrap();
        let row = ops::slice(&m, &[2, 3], &[3, 23], &[1, 1]).unwrap(); // [1, 20], broadcast
        let col = ops::slice(&m, &[0, 5], &[6, 6], &[1, 1]).unwrap(); // [6, 1], broadcast
        let f = || {
            [
                ops::silu_mul(&left, &right).unwrap(),
                ops::add(&left, &row).unwrap(),
                ops::multiply(&right, &left).unwrap(),
                ops::multiply(&left, &col).unwrap(),
            ]
        };
        let want = f();
        let got = rmlx::with_device(g, f);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let (a, b) = (ops::astype(a, Dtype::F32), ops::astype(b, Dtype::F32));
            // the GPU's expf may differ from the CPU's in the last bit (then rounded to bf16)
            let tol = if dt == Dtype::F32 { 1e-6 } else { 1e-2 };
            assert_close(
                &a.to_vec::<f32>().unwrap(),
                &b.to_vec::<f32>().unwrap(),
                tol,
                tol,
                &format!("{dt} op {i}"),
            );
        }
    }
}
