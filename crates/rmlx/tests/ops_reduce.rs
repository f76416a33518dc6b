//! Reductions, arg-reductions, var, logsumexp, softmax and scans against NumPy/MLX fixtures
//! (`scripts/fixtures/ops_numpy_elementwise.py`), error messages, and the row/column/strided
//! reduction paths on arrays larger than one parallel chunk.

mod common;

use common::{assert_close, for_each_device};
use rmlx::{ops, Array, Dtype};
use serde_json::Value;

use common::fixture::{load_fixture, Fixture};

fn axes_arg(case: &Value) -> Option<Vec<i32>> {
    case["args"]["axes"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_i64().unwrap() as i32).collect())
}

fn axis_arg(case: &Value) -> Option<i32> {
    case["args"]["axis"].as_i64().map(|v| v as i32)
}

fn flag(case: &Value, name: &str) -> bool {
    case["args"][name].as_bool().unwrap_or(false)
}

fn run_reduce(fx: &Fixture, case: &Value) -> Option<Array> {
    let op = case["op"].as_str().unwrap();
    let x = fx.input(case, 0);
    let axes = axes_arg(case);
    let ax = axes.as_deref();
    let keep = flag(case, "keepdims");
    let y = match op {
        "sum" => ops::sum(&x, ax, keep),
        "prod" => ops::prod(&x, ax, keep),
        "max" => ops::max(&x, ax, keep),
        "min" => ops::min(&x, ax, keep),
        "mean" => ops::mean(&x, ax, keep),
        "any" => ops::any(&x, ax, keep),
        "all" => ops::all(&x, ax, keep),
        "logsumexp" => ops::logsumexp(&x, ax, keep),
        "var" => ops::var(
            &x,
            ax,
            keep,
            case["args"]["ddof"].as_u64().unwrap() as usize,
        ),
        "softmax" => ops::softmax(&x, ax, flag(case, "precise")),
        "argmax" => ops::argmax(&x, axis_arg(case), keep),
        "argmin" => ops::argmin(&x, axis_arg(case), keep),
        "cumsum" => ops::cumsum(
            &x,
            axis_arg(case),
            flag(case, "reverse"),
            flag(case, "inclusive"),
        ),
        "cumprod" => ops::cumprod(
            &x,
            axis_arg(case),
            flag(case, "reverse"),
            flag(case, "inclusive"),
        ),
        "cummax" => ops::cummax(
            &x,
            axis_arg(case),
            flag(case, "reverse"),
            flag(case, "inclusive"),
        ),
        "cummin" => ops::cummin(
            &x,
            axis_arg(case),
            flag(case, "reverse"),
            flag(case, "inclusive"),
        ),
        _ => return None,
    };
    Some(y.unwrap_or_else(|e| panic!("{}: {e}", case["name"])))
}

#[test]
fn reduce_fixtures() {
    let fx = load_fixture();
    for_each_device(|_| {
        let (mut n, mut failed) = (0, Vec::<String>::new());
        for case in &fx.cases {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_reduce(&fx, case).map(|y| fx.check(case, &y))
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
        assert!(n > 300, "only {n} reduction cases ran");
    });
}

/// Deterministic pseudo-random f32s in [-1, 1).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn large_reductions_every_layout() {
    for_each_device(|_| {
        let (a, b, c) = (37usize, 129usize, 61usize); // 291k elements: several chunks
        let v = data(a * b * c, 7);
        let x = Array::from_slice(&v, &[a, b, c]).unwrap();
        let at = |i: usize, j: usize, k: usize| v[(i * b + j) * c + k] as f64;
        // all axes (one long row split across threads)
        let got = ops::sum(&x, None, false).unwrap().item::<f32>().unwrap();
        let want: f64 = v.iter().map(|&t| t as f64).sum();
        assert!((got as f64 - want).abs() < 1e-2, "{got} vs {want}");
        // last axis (rows), first axis (columns), middle axis (column blocks), [0, 2] (copy path)
        let cases: [(&[i32], Vec<usize>); 4] = [
            (&[-1], vec![a, b]),
            (&[0], vec![b, c]),
            (&[1], vec![a, c]),
            (&[0, 2], vec![b]),
        ];
        for (axes, shape) in cases {
            let got = ops::sum(&x, Some(axes), false).unwrap();
            assert_eq!(got.shape(), shape.as_slice());
            let got = got.to_vec::<f32>().unwrap();
            let mut want = vec![0f64; got.len()];
            for i in 0..a {
                for j in 0..b {
                    for k in 0..c {
                        let o = match axes {
                            [-1] => i * b + j,
                            [0] => j * c + k,
                            [1] => i * c + k,
                            _ => j,
                        };
                        want[o] += at(i, j, k);
                    }
                }
            }
            let want: Vec<f32> = want.into_iter().map(|w| w as f32).collect();
            assert_close(&got, &want, 1e-4, 1e-4, &format!("sum {axes:?}"));
        }
        // max over a transposed view (strided → copy path) and argmax over axis 0
        let t = ops::transpose(&x, Some(&[2, 0, 1])).unwrap();
        let got = ops::max(&t, Some(&[-1]), false)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let mut want = vec![f32::NEG_INFINITY; c * a];
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    want[k * a + i] = want[k * a + i].max(v[(i * b + j) * c + k]);
                }
            }
        }
        assert_eq!(got, want);
        let am = ops::argmax(&x, Some(0), false)
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        for (o, &idx) in am.iter().enumerate().step_by(97) {
            let (j, k) = (o / c, o % c);
            let best = (0..a)
                .map(|i| v[(i * b + j) * c + k])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(v[(idx as usize * b + j) * c + k], best);
        }
        // softmax rows sum to one; cumsum of ones counts
        let s = ops::softmax(&x, Some(&[-1]), false).unwrap();
        let rs = ops::sum(&s, Some(&[-1]), false)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(rs.iter().all(|r| (r - 1.0).abs() < 1e-5));
        let ones = ops::ones(&[3, 100_000], Dtype::I32);
        let cs = ops::cumsum(&ones, Some(1), false, true)
            .unwrap()
            .to_vec::<i32>()
            .unwrap();
        assert_eq!(cs[99_999], 100_000);
        assert_eq!(cs[100_000], 1);
    });
}

#[test]
fn empty_reductions() {
    for_each_device(|_| {
        let z = ops::zeros(&[0, 3], Dtype::F32);
        assert_eq!(
            ops::sum(&z, Some(&[0]), false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![0.0; 3]
        );
        assert_eq!(
            ops::prod(&z, Some(&[0]), false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![1.0; 3]
        );
        assert_eq!(
            ops::sum(&z, None, false).unwrap().item::<f32>().unwrap(),
            0.0
        );
        let e = ops::max(&z, Some(&[0]), false).unwrap_err().to_string();
        assert!(e.starts_with("[max]") && e.contains("size 0"), "{e}");
        let e = ops::min(&z, None, false).unwrap_err().to_string();
        assert!(e.starts_with("[min]"), "{e}");
        let e = ops::argmax(&z, Some(1), false).unwrap_err().to_string();
        assert!(e.starts_with("[argmax]"), "{e}");
        let e = ops::logsumexp(&z, None, false).unwrap_err().to_string();
        assert!(e.starts_with("[logsumexp]"), "{e}");
    });
}

#[test]
fn bad_axes_are_errors() {
    for_each_device(|_| {
        let x = ops::ones(&[2, 3], Dtype::F32);
        for (name, r) in [
            ("sum", ops::sum(&x, Some(&[2]), false)),
            ("mean", ops::mean(&x, Some(&[-3]), false)),
            ("max", ops::max(&x, Some(&[0, 0]), false)),
            ("var", ops::var(&x, Some(&[5]), false, 0)),
            ("logsumexp", ops::logsumexp(&x, Some(&[2]), false)),
            ("softmax", ops::softmax(&x, Some(&[2]), false)),
            ("argmin", ops::argmin(&x, Some(2), false)),
            ("cumsum", ops::cumsum(&x, Some(-3), false, true)),
            ("cummax", ops::cummax(&x, Some(2), false, true)),
        ] {
            let e = r.unwrap_err().to_string();
            assert!(e.starts_with(&format!("[{name}]")), "{name}: {e}");
        }
    });
}
