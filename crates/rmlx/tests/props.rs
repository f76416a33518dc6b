//! Property tests: broadcasting `add` vs a naive reference, chains of views vs a Vec-based
//! reference, and evaluation-order independence.

mod common;

use proptest::prelude::*;
use rmlx::{ops, Array};

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Two broadcastable shapes: a base shape and, per axis, whether each side keeps it or has 1.
fn bshapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (prop::collection::vec((1usize..4, 0u8..3), 0..4), 0usize..3).prop_map(|(dims, drop)| {
        let a: Vec<usize> = dims
            .iter()
            .map(|(d, m)| if *m == 1 { 1 } else { *d })
            .collect();
        let b: Vec<usize> = dims
            .iter()
            .map(|(d, m)| if *m == 2 { 1 } else { *d })
            .collect();
        let k = drop.min(b.len());
        (a, b[k..].to_vec())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn add_broadcasts_like_numpy((sa, sb) in bshapes()) {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let va: Vec<f32> = (0..na).map(|i| i as f32).collect();
        let vb: Vec<f32> = (0..nb).map(|i| 1000.0 * i as f32).collect();
        let a = Array::from_slice(&va, &sa).unwrap();
        let b = Array::from_slice(&vb, &sb).unwrap();
        let got = ops::add(&a, &b).unwrap();
        let nd = sa.len().max(sb.len());
        let pa: Vec<usize> = std::iter::repeat_n(1, nd - sa.len()).chain(sa.iter().copied()).collect();
        let pb: Vec<usize> = std::iter::repeat_n(1, nd - sb.len()).chain(sb.iter().copied()).collect();
        let out: Vec<usize> = pa.iter().zip(&pb).map(|(x, y)| *x.max(y)).collect();
        prop_assert_eq!(got.shape(), out.as_slice());
        let (sta, stb, sto) = (strides(&pa), strides(&pb), strides(&out));
        let n: usize = out.iter().product();
        let want: Vec<f32> = (0..n).map(|f| {
            let (mut ia, mut ib) = (0, 0);
            for ax in 0..nd {
                let i = (f / sto[ax]) % out[ax];
                if pa[ax] > 1 { ia += i * sta[ax]; }
                if pb[ax] > 1 { ib += i * stb[ax]; }
            }
            va[ia] + vb[ib]
        }).collect();
        prop_assert_eq!(common::vals(&got), want);
    }

    #[test]
    fn view_chains_match_reference(
        shape in prop::collection::vec(1usize..5, 1..4),
        ops_list in prop::collection::vec((0u8..3, 0usize..8, 0usize..8, 1i64..3), 1..5),
    ) {
        // Reference: a Vec of values with an explicit shape.
        let n: usize = shape.iter().product();
        let mut rv: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut rs = shape.clone();
        let mut x = Array::from_slice(&rv, &shape).unwrap();
        for (op, p, q, step) in ops_list {
            match op {
                0 => {
                    // transpose: reverse axes
                    let st = strides(&rs);
                    let ns: Vec<usize> = rs.iter().rev().copied().collect();
                    let nst = strides(&ns);
                    let total: usize = ns.iter().product();
                    rv = (0..total).map(|f| {
                        let mut src = 0;
                        for (k, d) in ns.iter().enumerate() {
                            let i = (f / nst[k]) % d;
                            src += i * st[rs.len() - 1 - k];
                        }
                        rv[src]
                    }).collect();
                    rs = ns;
                    x = ops::transpose(&x, None).unwrap();
                }
                1 => {
                    // slice axis p % nd from q % dim with step
                    let ax = p % rs.len();
                    let d = rs[ax];
                    let b = q % d;
                    let st = strides(&rs);
                    let keep: Vec<usize> = (b..d).step_by(step as usize).collect();
                    let mut ns = rs.clone();
                    ns[ax] = keep.len();
                    let nst = strides(&ns);
                    let total: usize = ns.iter().product();
                    rv = (0..total).map(|f| {
                        let mut src = 0;
                        for (k, dd) in ns.iter().enumerate() {
                            let i = (f / nst[k]) % dd;
                            src += if k == ax { keep[i] } else { i } * st[k];
                        }
                        rv[src]
                    }).collect();
                    let mut start = vec![0i64; rs.len()];
                    let stop: Vec<i64> = rs.iter().map(|&d| d as i64).collect();
                    let mut steps = vec![1i64; rs.len()];
                    start[ax] = b as i64;
                    steps[ax] = step;
                    rs = ns;
                    x = ops::slice(&x, &start, &stop, &steps).unwrap();
                }
                _ => {
                    // reshape: flatten, or split the first axis when it factors
                    let total: usize = rs.iter().product();
                    let ns = if p % 2 == 0 || rs.len() >= 4 { vec![total] } else { vec![1, total] };
                    rs = ns.clone();
                    let ns_i: Vec<i64> = ns.iter().map(|&d| d as i64).collect();
                    x = ops::reshape(&x, &ns_i).unwrap();
                }
            }
            prop_assert_eq!(x.shape(), rs.as_slice());
        }
        prop_assert_eq!(common::vals(&x), rv);
    }

    #[test]
    fn eval_order_does_not_matter(order in prop::sample::subsequence((0usize..6).collect::<Vec<_>>(), 0..6)) {
        // A small DAG: evaluate some intermediates first (in the drawn order), then the root.
        let build = || {
            let a = Array::from_vec((0..8).map(|i| i as f32).collect::<Vec<_>>());
            let b = ops::add(&a, &Array::scalar(1.0f32)).unwrap();
            let c = ops::multiply(&b, &b).unwrap();
            let d = ops::transpose(&ops::reshape(&c, &[2, 4]).unwrap(), None).unwrap();
            let e = ops::subtract(&d, &ops::reshape(&a, &[4, 2]).unwrap()).unwrap();
            let f = ops::add(&e, &ops::contiguous(&d)).unwrap();
            vec![b, c, d, e, f.clone(), f]
        };
        let reference = common::vals(&build()[5]);
        let nodes = build();
        for i in order {
            nodes[i].eval().unwrap();
        }
        prop_assert_eq!(common::vals(&nodes[5]), reference);
    }
}
