//! The ops added for mlx.core's names (inverse/hyperbolic functions, predicates, shape and
//! linear-algebra compositions, median, masked_scatter, bernoulli/permutation) against MLX's
//! own outputs (`scripts/fixtures/ops_mlx_extra.py`), on every device; plus argument errors
//! and the distributions of the random draws MLX computes from different uniforms.

mod common;

use common::fixture::{load_fixture_dir, Fixture};
use common::{assert_close, for_each_device, vals};
use rmlx::ops::{self, NormOrd};
use rmlx::{Array, Dtype};
use serde_json::Value;

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn axes(v: &Value) -> Option<Vec<i32>> {
    (!v.is_null()).then(|| ints(v).into_iter().map(|x| x as i32).collect())
}

fn run(fx: &Fixture, case: &Value) -> Array {
    let op = case["op"].as_str().unwrap();
    let g = &case["args"];
    let x = |i| fx.input(case, i);
    let f = |k: &str| g[k].as_f64().unwrap();
    let i = |k: &str| g[k].as_i64().unwrap();
    match op {
        "tan" => ops::tan(&x(0)),
        "arcsin" => ops::arcsin(&x(0)),
        "arccos" => ops::arccos(&x(0)),
        "arctan" => ops::arctan(&x(0)),
        "sinh" => ops::sinh(&x(0)),
        "cosh" => ops::cosh(&x(0)),
        "arcsinh" => ops::arcsinh(&x(0)),
        "arccosh" => ops::arccosh(&x(0)),
        "arctanh" => ops::arctanh(&x(0)),
        "expm1" => ops::expm1(&x(0)),
        "log2" => ops::log2(&x(0)),
        "log10" => ops::log10(&x(0)),
        "trunc" => ops::trunc(&x(0)),
        "degrees" => ops::degrees(&x(0)),
        "radians" => ops::radians(&x(0)),
        "isnan" => ops::isnan(&x(0)),
        "isinf" => ops::isinf(&x(0)),
        "isposinf" => ops::isposinf(&x(0)),
        "isneginf" => ops::isneginf(&x(0)),
        "isfinite" => ops::isfinite(&x(0)),
        "nan_to_num" => ops::nan_to_num(
            &x(0),
            g["nan"].as_f64().unwrap_or(0.0),
            g["posinf"].as_f64(),
            g["neginf"].as_f64(),
        ),
        "arctan2" => ops::arctan2(&x(0), &x(1)).unwrap(),
        "logaddexp" => ops::logaddexp(&x(0), &x(1)).unwrap(),
        "logical_xor" => ops::logical_xor(&x(0), &x(1)).unwrap(),
        "flip" => ops::flip(&x(0), axes(&g["axes"]).as_deref()).unwrap(),
        "roll" => ops::roll(&x(0), &ints(&g["shift"]), axes(&g["axes"]).as_deref()).unwrap(),
        "repeat" => ops::repeat(
            &x(0),
            i("repeats") as usize,
            g["axis"].as_i64().map(|a| a as i32),
        )
        .unwrap(),
        "tile" => {
            let reps: Vec<usize> = ints(&g["reps"]).iter().map(|&r| r as usize).collect();
            ops::tile(&x(0), &reps).unwrap()
        }
        "meshgrid" => {
            let xs = [x(0), x(1), x(2)];
            let all = ops::meshgrid(
                &xs,
                g["sparse"].as_bool().unwrap(),
                g["indexing"].as_str().unwrap(),
            )
            .unwrap();
            all[i("index") as usize].clone()
        }
        "atleast" => ops::atleast_nd(&x(0), i("n") as usize).unwrap(),
        "unflatten" => ops::unflatten(&x(0), i("axis") as i32, &ints(&g["shape"])).unwrap(),
        "diff" => ops::diff(&x(0), i("n") as usize, i("axis") as i32).unwrap(),
        "median" => ops::median(
            &x(0),
            axes(&g["axes"]).as_deref(),
            g["keepdims"].as_bool().unwrap_or(false),
        )
        .unwrap(),
        "count_nonzero" => ops::count_nonzero(
            &x(0),
            axes(&g["axes"]).as_deref(),
            g["keepdims"].as_bool().unwrap(),
        )
        .unwrap(),
        "outer" => ops::outer(&x(0), &x(1)).unwrap(),
        "inner" => ops::inner(&x(0), &x(1)).unwrap(),
        "tensordot" => match g.get("n") {
            Some(n) => ops::tensordot_n(&x(0), &x(1), n.as_u64().unwrap() as usize).unwrap(),
            None => {
                let (a, b) = (axes(&g["axes_a"]).unwrap(), axes(&g["axes_b"]).unwrap());
                ops::tensordot(&x(0), &x(1), &a, &b).unwrap()
            }
        },
        "kron" => ops::kron(&x(0), &x(1)).unwrap(),
        "addmm" => ops::addmm(&x(0), &x(1), &x(2), f("alpha") as f32, f("beta") as f32).unwrap(),
        "vecdot" => ops::vecdot(&x(0), &x(1), i("axis") as i32).unwrap(),
        "diagonal" => {
            ops::diagonal(&x(0), i("offset"), i("axis1") as i32, i("axis2") as i32).unwrap()
        }
        "diag" => ops::diag(&x(0), i("k")).unwrap(),
        "trace" => ops::trace(
            &x(0),
            i("offset"),
            i("axis1") as i32,
            i("axis2") as i32,
            g["dtype"].as_str().map(|d| Dtype::parse(d).unwrap()),
        )
        .unwrap(),
        "tri" => ops::tri(
            i("n") as usize,
            g["m"].as_u64().map(|m| m as usize),
            i("k"),
            Dtype::F32,
        )
        .unwrap(),
        "norm" => {
            let ord = match &g["ord"] {
                Value::Null => NormOrd::Default,
                // JSON has no infinities: the fixture spells them "inf" and "-inf".
                Value::String(s) => match s.parse::<f64>() {
                    Ok(p) => NormOrd::P(p),
                    Err(_) => NormOrd::Name(s.as_str()),
                },
                v => NormOrd::P(v.as_f64().unwrap()),
            };
            ops::norm(
                &x(0),
                ord,
                axes(&g["axes"]).as_deref(),
                g["keepdims"].as_bool().unwrap(),
            )
            .unwrap()
        }
        "cross" => ops::cross(&x(0), &x(1), i("axis") as i32).unwrap(),
        "hadamard_transform" => {
            ops::hadamard_transform(&x(0), g["scale"].as_f64().map(|s| s as f32)).unwrap()
        }
        "window" => match g["kind"].as_str().unwrap() {
            "bartlett" => ops::bartlett(i("m") as usize),
            "blackman" => ops::blackman(i("m") as usize),
            "hamming" => ops::hamming(i("m") as usize),
            _ => ops::hanning(i("m") as usize),
        }
        .unwrap(),
        "searchsorted" => ops::searchsorted(&x(0), &x(1), g["right"].as_bool().unwrap()).unwrap(),
        "conv_general" => {
            let v = |k: &str| -> Vec<i64> {
                match &g[k] {
                    Value::Null => vec![],
                    Value::Array(_) => ints(&g[k]),
                    n => vec![n.as_i64().unwrap()],
                }
            };
            let u = |k: &str| v(k).iter().map(|&x| x as usize).collect::<Vec<_>>();
            let (lo, hi) = match &g["padding"] {
                Value::Array(p) if p.len() == 2 && p[0].is_array() => (ints(&p[0]), ints(&p[1])),
                _ => (v("padding"), v("padding")),
            };
            let o = ops::ConvOptions {
                stride: u("stride"),
                padding_lo: lo,
                padding_hi: hi,
                kernel_dilation: u("kernel_dilation"),
                input_dilation: u("input_dilation"),
                groups: g["groups"].as_u64().unwrap_or(1) as usize,
                flip: g["flip"].as_bool().unwrap_or(false),
            };
            ops::conv_general(&x(0), &x(1), &o).unwrap()
        }
        "conv_transpose" => {
            let u = |k: &str| -> Vec<usize> {
                g.get(k)
                    .map(|v| ints(v).iter().map(|&x| x as usize).collect())
                    .unwrap_or_default()
            };
            ops::conv_transpose(
                &x(0),
                &x(1),
                &u("stride"),
                &u("padding"),
                &u("dilation"),
                &u("output_padding"),
                1,
            )
            .unwrap()
        }
        "einsum" => {
            let n = case["inputs"].as_array().unwrap().len();
            let xs: Vec<Array> = (0..n).map(x).collect();
            ops::einsum(g["subscripts"].as_str().unwrap(), &xs).unwrap()
        }
        "convolve" => ops::convolve(&x(0), &x(1), g["mode"].as_str().unwrap()).unwrap(),
        "masked_scatter" => ops::masked_scatter(&x(0), &x(1), &x(2)).unwrap(),
        "bernoulli" => {
            let shape: Vec<usize> = ints(&g["shape"]).iter().map(|&d| d as usize).collect();
            let p = ops::reshape(&x(0), &[5]).unwrap();
            let p = ops::broadcast_to(&p, &shape).unwrap();
            ops::random::bernoulli(&p, Some(&shape), Some(&x(1))).unwrap()
        }
        "permutation" => ops::random::permutation(i("n") as usize, Some(&x(0))).unwrap(),
        _ => panic!("unknown op {op}"),
    }
}

#[test]
fn matches_mlx() {
    let fx = load_fixture_dir("ops_extra");
    for_each_device(|d| {
        let mut failed = Vec::new();
        let mut n = 0;
        for case in &fx.cases {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fx.check(case, &run(&fx, case))
            }));
            match r {
                Ok(()) => n += 1,
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "panic".into());
                    failed.push(format!("{}: {msg}", case["name"].as_str().unwrap()));
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{d:?}: {} of {} cases failed:\n{}",
            failed.len(),
            fx.cases.len(),
            failed.join("\n")
        );
        assert!(n >= 290, "only {n} cases ran");
    });
}

#[test]
fn argument_errors() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let msg = |r: rmlx::Result<Array>| r.unwrap_err().to_string();
    assert!(msg(ops::diagonal(&a, 0, 1, 1)).contains("[diagonal]"));
    assert!(msg(ops::diag(&ops::expand_dims(&a, &[0]).unwrap(), 0)).contains("1-D or 2-D"));
    assert!(msg(ops::tensordot(&a, &a, &[1], &[1, 0])).contains("same number"));
    assert!(msg(ops::tensordot(&a, &a, &[0], &[1])).contains("differ in size"));
    assert!(msg(ops::inner(&a, &ops::transpose(&a, None).unwrap())).contains("[inner]"));
    assert!(msg(ops::roll(&a, &[1, 2, 3], Some(&[0, 1]))).contains("same length"));
    assert!(msg(ops::roll(&a, &[], None)).contains("[roll]"));
    assert!(
        msg(ops::meshgrid(std::slice::from_ref(&a), false, "zz").map(|v| v[0].clone()))
            .contains("'xy'")
    );
    assert!(msg(ops::unflatten(&a, 1, &[2, -1])).contains("[unflatten]"));
    assert!(msg(ops::diff(&Array::scalar(1.0f32), 1, 0)).contains("[diff]"));
    assert!(msg(ops::median(&ops::zeros(&[0], Dtype::F32), None, false)).contains("empty"));
    assert!(msg(ops::norm(&a, NormOrd::P(2.0), None, false)).contains("svd"));
    assert!(msg(ops::norm(&a, NormOrd::Name("nuc"), None, false)).contains("svd"));
    assert!(msg(ops::norm(&a, NormOrd::Name("fro"), Some(&[0]), false)).contains("matrices"));
    assert!(msg(ops::norm(
        &ops::zeros(&[2, 2, 2], Dtype::F32),
        NormOrd::P(1.0),
        None,
        false
    ))
    .contains("axes"));
    let wide = ops::zeros(&[2, 4], Dtype::F32);
    assert!(msg(ops::cross(&wide, &wide, -1)).contains("size 2 or 3"));
    assert!(msg(ops::hadamard_transform(&a, None)).contains("power-of-two"));
    assert!(msg(ops::vecdot(&a, &ops::reshape(&a, &[3, 2]).unwrap(), -1)).contains("[vecdot]"));
    assert!(msg(ops::searchsorted(&a, &a, false)).contains("1-D"));
    let mask = Array::from_slice(&[1u8, 0], &[2]).unwrap();
    assert!(msg(ops::masked_scatter(&a, &mask, &a)).contains("boolean"));
    let mask = ops::astype(&mask, Dtype::Bool);
    let mask3 = ops::astype(&Array::from_slice(&[1u8, 0, 1], &[3]).unwrap(), Dtype::Bool);
    assert!(msg(ops::masked_scatter(&a, &mask3, &a)).contains("beginning"));
    assert!(msg(ops::masked_scatter(
        &a,
        &mask,
        &ops::zeros(&[1, 2, 3], Dtype::F32)
    ))
    .contains("broadcastable"));
    assert!(msg(ops::masked_scatter(
        &a,
        &mask,
        &ops::zeros(&[0, 3], Dtype::F32)
    ))
    .contains("no values"));
    let x = ops::zeros(&[1, 5, 4], Dtype::F32);
    let w = ops::zeros(&[2, 3, 4], Dtype::F32);
    let conv = |x: &Array, w: &Array, o: ops::ConvOptions| msg(ops::conv_general(x, w, &o));
    assert!(conv(&ops::zeros(&[5, 4], Dtype::F32), &w, Default::default()).contains("1-3 spatial"));
    assert!(conv(&ops::zeros(&[1, 5, 4], Dtype::I32), &w, Default::default()).contains("floating"));
    assert!(
        conv(&x, &ops::zeros(&[2, 3, 3], Dtype::F32), Default::default())
            .contains("input channels")
    );
    assert!(conv(
        &x,
        &w,
        ops::ConvOptions {
            groups: 3,
            ..Default::default()
        }
    )
    .contains("divisible"));
    assert!(conv(
        &x,
        &w,
        ops::ConvOptions {
            stride: vec![0],
            ..Default::default()
        }
    )
    .contains("positive"));
    assert!(conv(
        &x,
        &w,
        ops::ConvOptions {
            stride: vec![1, 1],
            ..Default::default()
        }
    )
    .contains("1D"));
    assert!(conv(&x, &ops::zeros(&[2, 9, 4], Dtype::F32), Default::default()).contains("smaller"));
    assert!(msg(ops::convolve(&x, &w, "full")).contains("1-D"));
    let v = ops::zeros(&[3], Dtype::F32);
    assert!(msg(ops::convolve(&v, &v, "middle")).contains("mode"));
    let m = ops::zeros(&[2, 3], Dtype::F32);
    let ein = |s: &str, xs: &[Array]| msg(ops::einsum(s, xs));
    assert!(ein("ij,jk->ik", std::slice::from_ref(&m)).contains("operands"));
    assert!(ein("ijk", std::slice::from_ref(&m)).contains("subscripts"));
    assert!(ein("ij->ii", std::slice::from_ref(&m)).contains("repeat"));
    assert!(ein("ij->k", std::slice::from_ref(&m)).contains("does not appear"));
    assert!(ein("ij,ij->i", &[m.clone(), ops::zeros(&[2, 4], Dtype::F32)]).contains("sizes"));
    assert!(ein("i1", std::slice::from_ref(&m)).contains("character"));
    let p = Array::from_slice(&[0.5f32, 0.5], &[2]).unwrap();
    assert!(msg(ops::random::bernoulli(&p, Some(&[3]), None)).contains("broadcast"));
    assert!(msg(ops::random::bernoulli(&Array::scalar(1i32), None, None)).contains("float"));
    assert!(msg(ops::random::gumbel(&[2], Dtype::I32, None)).contains("floating"));
}

#[test]
fn masked_scatter_short_source_fails_at_evaluation_on_the_cpu() {
    rmlx::init();
    rmlx::with_device(rmlx::Device::cpu(), || {
        let a = ops::zeros(&[4], Dtype::F32);
        let mask = ops::astype(
            &Array::from_slice(&[1u8, 1, 1, 0], &[4]).unwrap(),
            Dtype::Bool,
        );
        let v = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let out = ops::masked_scatter(&a, &mask, &v).unwrap();
        let e = out.eval().unwrap_err().to_string();
        assert!(e.contains("out of bounds"), "{e}");
    });
}

/// Mean and variance of a draw, for the distributions whose uniforms differ from MLX's.
fn moments(x: &Array) -> (f32, f32) {
    let v = vals(x);
    let n = v.len() as f32;
    let m = v.iter().sum::<f32>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n)
}

#[test]
fn random_distributions() {
    for_each_device(|_| {
        let key = ops::random::key(3);
        let n = 200_000;
        // Gumbel: mean = Euler's gamma, variance = pi^2 / 6.
        let g = ops::random::gumbel(&[n], Dtype::F32, Some(&key)).unwrap();
        let (m, v) = moments(&g);
        assert!(
            (m - 0.577_215_7).abs() < 0.02 && (v - 1.644_934).abs() < 0.05,
            "{m} {v}"
        );
        // Laplace(loc 1, scale 2): mean 1, variance 2 * scale^2 = 8.
        let l = ops::random::laplace(&[n], Dtype::F32, 1.0, 2.0, Some(&key)).unwrap();
        let (m, v) = moments(&l);
        assert!((m - 1.0).abs() < 0.05 && (v - 8.0).abs() < 0.3, "{m} {v}");
        // Truncated to [-1, 2]: inside the bounds; mean of the standard normal truncated there.
        let lo = Array::scalar(-1.0f32);
        let hi = Array::scalar(2.0f32);
        let t =
            ops::random::truncated_normal(&lo, &hi, Some(&[n]), Dtype::F32, Some(&key)).unwrap();
        let tv = vals(&t);
        assert!(tv.iter().all(|&x| (-1.0..=2.0).contains(&x)));
        let (m, _) = moments(&t);
        assert!((m - 0.2297).abs() < 0.02, "{m}");
        // A permutation of 0..n, and permute takes along the axis.
        let p = ops::random::permutation(1000, Some(&key)).unwrap();
        let mut pv = p.to_vec::<u32>().unwrap();
        pv.sort_unstable();
        assert_eq!(pv, (0..1000).collect::<Vec<u32>>());
        let x = ops::reshape(&ops::arange(0.0, 12.0, 1.0, Dtype::F32).unwrap(), &[3, 4]).unwrap();
        let y = ops::random::permute(&x, 1, Some(&key)).unwrap();
        let rows = vals(&ops::sum(&y, Some(&[1]), false).unwrap());
        assert_close(
            &rows,
            &[6.0, 22.0, 38.0],
            0.0,
            0.0,
            "rows keep their elements",
        );
        // Bernoulli frequency.
        let b = ops::random::bernoulli(&Array::scalar(0.3f32), Some(&[n]), Some(&key)).unwrap();
        let (m, _) = moments(&ops::astype(&b, Dtype::F32));
        assert!((m - 0.3).abs() < 0.01, "{m}");
    });
}
