//! Random numbers: keys and splits bit-exact with MLX, determinism per key, independence from
//! chunking and thread count, and statistical checks of the distributions.

mod common;

use rmlx::{ops, random, Array, Dtype};

fn u32s(a: &Array) -> Vec<u32> {
    a.to_vec::<u32>().unwrap()
}

fn mean_var(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var)
}

#[test]
fn keys_and_splits_match_mlx() {
    common::for_each_device(|_| {
        assert_eq!(u32s(&random::key((1u64 << 33) + 7)), vec![2, 7]);
        // values printed by mlx.core.random.split (MLX 0.32.4)
        let s = random::split(&random::key(0), 3).unwrap();
        assert_eq!(s.shape(), &[3, 2]);
        assert_eq!(
            u32s(&s),
            vec![2467461003, 428148500, 3186719485, 3840466878, 2562233961, 1946702221]
        );
        let s = random::split(&random::key(42), 5).unwrap();
        assert_eq!(
            u32s(&s),
            vec![
                2765691542, 1385194879, 831049250, 3807460095, 3616728933, 824333390, 1482326074,
                1083977345, 2713995981, 2812206153
            ]
        );
        let s = random::split(&random::key(7), 2).unwrap();
        assert_eq!(u32s(&s), vec![966301609, 989289821, 1948237315, 1058547403]);
        let s = random::split(&random::key((1u64 << 40) + 123), 4).unwrap();
        assert_eq!(
            u32s(&s)[..4],
            [3925934981, 667203082, 747694531, 4171705676]
        );
    });
}

#[test]
fn determinism_and_chunk_independence() {
    common::for_each_device(|_| {
        let k = random::key(11);
        let a = u32s(&random::bits(&[3, 5], Some(&k)).unwrap());
        let b = u32s(&random::bits(&[3, 5], Some(&k)).unwrap());
        assert_eq!(a, b, "same key, same bits");
        let c = u32s(&random::bits(&[3, 5], Some(&random::key(12))).unwrap());
        assert_ne!(a, c, "different keys differ");
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() == a.len());
        // A large draw is computed in parallel chunks: it must equal the serial formula.
        let n = 300_001; // odd: exercises the middle element
        let big = u32s(&random::bits(&[n], Some(&k)).unwrap());
        for i in [0, 1, n / 2 - 1, n / 2, n / 2 + 1, n - 1, 12345, 250_000] {
            assert_eq!(
                big[i],
                rmlx::ops::random::bits_at((0, 11), n, i),
                "element {i}"
            );
        }
        // and the same with one thread
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = pool.install(|| u32s(&random::bits(&[n], Some(&k)).unwrap()));
        assert_eq!(big, one, "thread count changes nothing");
        // the global state: seed resets it
        random::seed(5);
        let x = u32s(&random::bits(&[8], None).unwrap());
        let y = u32s(&random::bits(&[8], None).unwrap());
        assert_ne!(x, y, "successive key-less draws differ");
        random::seed(5);
        assert_eq!(x, u32s(&random::bits(&[8], None).unwrap()));
    });
}

#[test]
fn uniform_statistics() {
    common::for_each_device(|_| {
        let n = 200_000;
        let u = random::uniform(-2.0, 3.0, &[n], Dtype::F32, Some(&random::key(1))).unwrap();
        let v = common::vals(&u);
        assert!(v.iter().all(|&x| (-2.0..3.0).contains(&x)));
        let (m, var) = mean_var(&v);
        // mean 0.5, variance 25/12; standard error of the mean ~0.0032
        assert!((m - 0.5).abs() < 0.02, "mean {m}");
        assert!((var - 25.0 / 12.0).abs() < 0.03, "var {var}");
        // a histogram of 10 bins is flat within 5 sigma
        let mut h = [0usize; 10];
        for &x in &v {
            h[(((x + 2.0) / 5.0 * 10.0) as usize).min(9)] += 1;
        }
        for c in h {
            assert!((c as f64 - 20_000.0).abs() < 5.0 * 134.0, "bins {h:?}");
        }
        for dt in [Dtype::F16, Dtype::BF16] {
            let u = random::uniform(0.0, 1.0, &[1000], dt, Some(&random::key(2))).unwrap();
            assert_eq!(u.dtype(), dt);
            let v = common::vals(&u);
            assert!(v.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
        let e = random::uniform(0.0, 1.0, &[2], Dtype::I32, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("[uniform]"), "{e}");
        let e = random::uniform(
            0.0,
            1.0,
            &[2],
            Dtype::F32,
            Some(&Array::from_vec(vec![1u32, 2, 3])),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "[uniform] key must be a uint32 array of shape (2,), got uint32 of shape (3,)"
        );
    });
}

#[test]
fn normal_statistics() {
    common::for_each_device(|_| {
        let n = 200_000;
        let z = random::normal(&[n], Dtype::F32, 1.5, 2.0, Some(&random::key(3))).unwrap();
        let v = common::vals(&z);
        assert!(v.iter().all(|x| x.is_finite()));
        let (m, var) = mean_var(&v);
        assert!((m - 1.5).abs() < 0.03, "mean {m}");
        assert!((var - 4.0).abs() < 0.08, "var {var}");
        // one-sigma mass 68.27%
        let inside = v.iter().filter(|&&x| (x - 1.5).abs() < 2.0).count() as f64 / n as f64;
        assert!(
            (inside - 0.6827).abs() < 0.006,
            "within one sigma: {inside}"
        );
        let z = random::normal(&[4, 4], Dtype::BF16, 0.0, 1.0, Some(&random::key(3))).unwrap();
        assert_eq!((z.shape(), z.dtype()), (&[4usize, 4][..], Dtype::BF16));
    });
}

#[test]
fn randint_and_categorical() {
    common::for_each_device(|_| {
        let r = random::randint(-3, 4, &[70_000], Dtype::I32, Some(&random::key(4))).unwrap();
        assert_eq!(r.dtype(), Dtype::I32);
        let v = r.to_vec::<i32>().unwrap();
        let mut h = [0usize; 7];
        for &x in &v {
            assert!((-3..4).contains(&x));
            h[(x + 3) as usize] += 1;
        }
        for c in h {
            assert!((c as f64 - 10_000.0).abs() < 500.0, "counts {h:?}");
        }
        let e = random::randint(3, 3, &[1], Dtype::I32, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("[randint]"), "{e}");
        // categorical: frequencies follow softmax(logits)
        let p = [0.1f32, 0.2, 0.3, 0.4];
        let logits = Array::from_vec(p.iter().map(|x| x.ln()).collect::<Vec<_>>());
        let s = random::categorical(&logits, -1, Some(40_000), Some(&random::key(9))).unwrap();
        assert_eq!((s.shape(), s.dtype()), (&[40_000usize][..], Dtype::U32));
        let mut h = [0usize; 4];
        for x in u32s(&s) {
            h[x as usize] += 1;
        }
        for (c, p) in h.iter().zip(p) {
            let f = *c as f64 / 40_000.0;
            assert!((f - p as f64).abs() < 0.012, "frequencies {h:?}");
        }
        // batched logits along axis 0, no num_samples: one sample per column
        let l = ops::transpose(
            &Array::from_slice(&[0.0f32, -100.0, -100.0, -100.0, 0.0, -100.0], &[2, 3]).unwrap(),
            None,
        )
        .unwrap();
        let s = random::categorical(&l, 0, None, Some(&random::key(1))).unwrap();
        assert_eq!(s.shape(), &[2]);
        assert_eq!(u32s(&s), vec![0, 1]);
    });
}
