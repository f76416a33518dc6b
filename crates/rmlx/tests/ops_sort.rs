//! sort/argsort against a reference sort (NumPy goldens live in ops_indexing), argpartition,
//! partition and topk properties, NaN ordering, stability, errors.

mod common;

use rmlx::{ops, Array, Dtype};

fn lcg(n: usize, seed: u64, modulo: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % modulo) as f32
        })
        .collect()
}

#[test]
fn sort_non_last_axis_and_dtypes() {
    common::for_each_device(|_| {
        // [3, 50, 4] sorted along axis 1: lanes are strided (post = 4)
        let v = lcg(600, 1, 17);
        let x = Array::from_slice(&v, &[3, 50, 4]).unwrap();
        for dt in [
            Dtype::F32,
            Dtype::BF16,
            Dtype::F16,
            Dtype::I32,
            Dtype::I64,
            Dtype::U8,
            Dtype::U32,
        ] {
            let xs = ops::astype(&x, dt);
            let s = ops::sort(&xs, Some(1)).unwrap();
            let a = ops::argsort(&xs, Some(-2)).unwrap();
            assert_eq!((s.dtype(), a.dtype()), (dt, Dtype::U32));
            let (sv, av) = (common::vals(&s), a.to_vec::<u32>().unwrap());
            for p in 0..3 {
                for q in 0..4 {
                    let mut lane: Vec<(f32, u32)> = (0..50)
                        .map(|i| (v[p * 200 + i * 4 + q], i as u32))
                        .collect();
                    lane.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap()); // stable
                    for (i, (val, idx)) in lane.iter().enumerate() {
                        assert_eq!(sv[p * 200 + i * 4 + q], *val, "{dt} sort p{p} q{q} i{i}");
                        assert_eq!(
                            av[p * 200 + i * 4 + q],
                            *idx,
                            "{dt} argsort (stable) p{p} q{q} i{i}"
                        );
                    }
                }
            }
        }
        // i64 beyond f64's exact range keeps its order
        let big = Array::from_vec(vec![i64::MAX, i64::MAX - 1, i64::MIN, 0]);
        assert_eq!(
            ops::sort(&big, None).unwrap().to_vec::<i64>().unwrap(),
            vec![i64::MIN, 0, i64::MAX - 1, i64::MAX]
        );
    });
}

#[test]
fn nan_last() {
    common::for_each_device(|_| {
        let x = Array::from_vec(vec![
            3.0f32,
            f32::NAN,
            -f32::INFINITY,
            1.0,
            f32::NAN,
            f32::INFINITY,
        ]);
        let s = common::vals(&ops::sort(&x, Some(0)).unwrap());
        assert_eq!(&s[..4], &[-f32::INFINITY, 1.0, 3.0, f32::INFINITY]);
        assert!(s[4].is_nan() && s[5].is_nan());
        assert_eq!(
            ops::argsort(&x, None).unwrap().to_vec::<u32>().unwrap(),
            vec![2, 3, 0, 5, 1, 4]
        );
    });
}

#[test]
fn partition_properties() {
    common::for_each_device(|_| {
        let v = lcg(8 * 33, 7, 1000);
        let x = Array::from_slice(&v, &[8, 33]).unwrap();
        for kth in [0i32, 5, 16, 32, -1, -33] {
            let k = if kth < 0 {
                (kth + 33) as usize
            } else {
                kth as usize
            };
            let idx = ops::argpartition(&x, kth, Some(1))
                .unwrap()
                .to_vec::<u32>()
                .unwrap();
            let part = common::vals(&ops::partition(&x, kth, Some(-1)).unwrap());
            for r in 0..8 {
                let lane = &v[r * 33..(r + 1) * 33];
                let mut sorted = lane.to_vec();
                sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let ix = &idx[r * 33..(r + 1) * 33];
                // a permutation of 0..33
                let mut seen = ix.to_vec();
                seen.sort();
                assert_eq!(seen, (0..33).collect::<Vec<u32>>());
                let kv = lane[ix[k] as usize];
                assert_eq!(kv, sorted[k], "kth {kth} row {r}");
                assert!(ix[..k].iter().all(|&i| lane[i as usize] <= kv));
                assert!(ix[k + 1..].iter().all(|&i| lane[i as usize] >= kv));
                assert_eq!(part[r * 33 + k], sorted[k]);
            }
        }
        // along axis 0 (strided lanes)
        let idx = ops::argpartition(&x, 3, Some(0)).unwrap();
        assert_eq!(idx.shape(), &[8, 33]);
        let p = common::vals(&ops::take_along_axis(&x, &idx, Some(0)).unwrap());
        for c in 0..33 {
            let mut col: Vec<f32> = (0..8).map(|r| v[r * 33 + c]).collect();
            col.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert_eq!(p[3 * 33 + c], col[3]);
        }
    });
}

#[test]
fn topk_values() {
    common::for_each_device(|_| {
        let v = lcg(4 * 20, 3, 10_000);
        let x = Array::from_slice(&v, &[4, 20]).unwrap();
        let t = ops::topk(&x, 5, Some(-1)).unwrap();
        assert_eq!(t.shape(), &[4, 5]);
        let tv = common::vals(&t);
        for r in 0..4 {
            let mut want = v[r * 20..(r + 1) * 20].to_vec();
            want.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let mut got = tv[r * 5..(r + 1) * 5].to_vec();
            got.sort_by(|a, b| b.partial_cmp(a).unwrap());
            assert_eq!(got, want[..5].to_vec());
        }
        let t = ops::topk(&x, 2, None).unwrap();
        assert_eq!(t.shape(), &[2]);
        assert_eq!(ops::topk(&x, 0, Some(0)).unwrap().shape(), &[0, 20]);
        assert_eq!(ops::topk(&x, 20, Some(1)).unwrap().shape(), &[4, 20]);
    });
}

#[test]
fn errors() {
    common::for_each_device(|_| {
        let x = ops::zeros(&[5], Dtype::F32);
        let e = ops::topk(&x, 7, Some(-1)).unwrap_err().to_string();
        assert_eq!(
            e,
            "[topk] received invalid k=7 along axis -1 for array with shape (5,)"
        );
        let e = ops::partition(&x, 7, Some(-1)).unwrap_err().to_string();
        assert_eq!(
            e,
            "[partition] received invalid kth 7 along axis -1 for array with shape (5,)"
        );
        let e = ops::argpartition(&x, -6, Some(0)).unwrap_err().to_string();
        assert!(
            e.starts_with("[argpartition] received invalid kth -6"),
            "{e}"
        );
        let e = ops::sort(&x, Some(1)).unwrap_err().to_string();
        assert_eq!(e, "[sort] axis 1 is out of bounds for array of dimension 1");
        let e = ops::argsort(&Array::scalar(1.0f32), Some(0))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("[argsort]"), "{e}");
        // a 0-d array with axis None sorts as one element
        assert_eq!(
            common::vals(&ops::sort(&Array::scalar(2.0f32), None).unwrap()),
            vec![2.0]
        );
    });
}
