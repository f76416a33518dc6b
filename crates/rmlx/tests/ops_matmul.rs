//! matmul against a naive f64 reference: NumPy shape rules (1-D operands, batch
//! broadcasting), non-contiguous views, f32/f16/bf16, zero sizes, errors.

mod common;

use rmlx::{ops, Array, Dtype};

/// Deterministic values in [-1, 1) (a small LCG; the test must not depend on `random`).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn arr(shape: &[usize], seed: u64) -> Array {
    Array::from_slice(&data(shape.iter().product(), seed), shape).unwrap()
}

/// NumPy matmul of row-major data, in f64.
fn reference(a: &[f32], ash: &[usize], b: &[f32], bsh: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let (mut ash2, mut bsh2) = (ash.to_vec(), bsh.to_vec());
    if ash.len() == 1 {
        ash2.insert(0, 1);
    }
    if bsh.len() == 1 {
        bsh2.push(1);
    }
    let (m, k, n) = (
        ash2[ash2.len() - 2],
        ash2[ash2.len() - 1],
        bsh2[bsh2.len() - 1],
    );
    let (ab, bb) = (&ash2[..ash2.len() - 2], &bsh2[..bsh2.len() - 2]);
    let nb = ab.len().max(bb.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, nb - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (ap, bp) = (pad(ab), pad(bb));
    let batch: Vec<usize> = ap.iter().zip(&bp).map(|(x, y)| *x.max(y)).collect();
    let total: usize = batch.iter().product();
    let mut out = vec![0f32; total * m * n];
    for bi in 0..total {
        // batch multi-index → offsets in a and b (size-1 axes broadcast)
        let (mut rem, mut ao, mut bo, mut astr, mut bstr) = (bi, 0, 0, 1, 1);
        for ax in (0..nb).rev() {
            let i = rem % batch[ax];
            rem /= batch[ax];
            ao += if ap[ax] == 1 { 0 } else { i * astr };
            bo += if bp[ax] == 1 { 0 } else { i * bstr };
            astr *= ap[ax];
            bstr *= bp[ax];
        }
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    acc += a[ao * m * k + i * k + p] as f64 * b[bo * k * n + p * n + j] as f64;
                }
                out[bi * m * n + i * n + j] = acc as f32;
            }
        }
    }
    let mut shape = batch;
    if ash.len() > 1 {
        shape.push(m);
    }
    if bsh.len() > 1 {
        shape.push(n);
    }
    (out, shape)
}

fn check(ash: &[usize], bsh: &[usize], seed: u64) {
    let (a, b) = (arr(ash, seed), arr(bsh, seed + 1));
    let got = ops::matmul(&a, &b).unwrap();
    let (want, shape) = reference(&common::vals(&a), ash, &common::vals(&b), bsh);
    assert_eq!(got.shape(), shape.as_slice(), "{ash:?} @ {bsh:?}");
    common::assert_close(
        &common::vals(&got),
        &want,
        1e-4,
        1e-4,
        &format!("{ash:?} @ {bsh:?}"),
    );
}

#[test]
fn numpy_shape_rules() {
    common::for_each_device(|_| {
        for (a, b) in [
            (vec![2, 3], vec![3, 4]),
            (vec![1, 1], vec![1, 1]),
            (vec![3], vec![3, 5]),
            (vec![4, 3], vec![3]),
            (vec![7], vec![7]),
            (vec![2, 3, 4], vec![4, 5]),
            (vec![4], vec![2, 4, 3]),
            (vec![2, 1, 3, 4], vec![5, 4, 6]),
            (vec![3, 1, 2, 4], vec![1, 2, 4, 2]),
            (vec![130, 70], vec![70, 91]),
            (vec![5, 33, 17], vec![5, 17, 9]),
            (vec![2, 65, 64], vec![64, 66]),
        ] {
            check(&a, &b, a.len() as u64 * 31 + b.iter().sum::<usize>() as u64);
        }
    });
}

#[test]
fn transposed_and_strided_views() {
    common::for_each_device(|_| {
        let a = arr(&[40, 30], 3);
        let b = arr(&[50, 40], 4);
        // a.T @ b.T: both column-major views, read in place
        let at = ops::transpose(&a, None).unwrap();
        let bt = ops::transpose(&b, None).unwrap();
        let got = ops::matmul(&at, &bt).unwrap();
        let atv = common::vals(&at);
        let btv = common::vals(&bt);
        let (want, shape) = reference(&atv, &[30, 40], &btv, &[40, 50]);
        assert_eq!(got.shape(), shape.as_slice());
        common::assert_close(&common::vals(&got), &want, 1e-4, 1e-4, "a.T @ b.T");
        // every other row and a reversed column order
        let s = ops::slice(&a, &[0, 29], &[40, -31], &[2, -1]).unwrap(); // [20, 30]
        let bb = arr(&[30, 7], 5);
        let got = ops::matmul(&s, &bb).unwrap();
        let (want, _) = reference(&common::vals(&s), &[20, 30], &common::vals(&bb), &[30, 7]);
        common::assert_close(&common::vals(&got), &want, 1e-4, 1e-4, "strided slice");
        // batch transposed: [3, 4, 5] viewed as [3, 5, 4] via swapaxes
        let c = arr(&[3, 4, 5], 6);
        let ct = ops::swapaxes(&c, -1, -2).unwrap();
        let d = arr(&[3, 4, 2], 7);
        let got = ops::matmul(&ct, &d).unwrap();
        let (want, _) = reference(
            &common::vals(&ct),
            &[3, 5, 4],
            &common::vals(&d),
            &[3, 4, 2],
        );
        common::assert_close(&common::vals(&got), &want, 1e-4, 1e-4, "batched swapaxes");
    });
}

#[test]
fn half_types() {
    common::for_each_device(|_| {
        for dt in [Dtype::F16, Dtype::BF16] {
            let a = ops::astype(&arr(&[2, 9, 33], 11), dt);
            let b = ops::astype(&ops::transpose(&arr(&[17, 33], 12), None).unwrap(), dt);
            let got = ops::matmul(&a, &b).unwrap();
            assert_eq!(got.dtype(), dt);
            let (want, shape) =
                reference(&common::vals(&a), &[2, 9, 33], &common::vals(&b), &[33, 17]);
            assert_eq!(got.shape(), shape.as_slice());
            let tol = if dt == Dtype::F16 { 4e-3 } else { 2e-2 };
            common::assert_close(&common::vals(&got), &want, tol, tol, &format!("{dt}"));
        }
        // mixed f16 @ f32 promotes to f32; f16 @ bf16 to f32 as in MLX
        let a = ops::astype(&arr(&[3, 4], 1), Dtype::F16);
        let b = ops::astype(&arr(&[4, 2], 2), Dtype::BF16);
        assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), Dtype::F32);
        assert_eq!(
            ops::matmul(&a, &arr(&[4, 2], 2)).unwrap().dtype(),
            Dtype::F32
        );
    });
}

#[test]
fn zero_sizes() {
    common::for_each_device(|_| {
        let z = ops::matmul(
            &ops::zeros(&[3, 0], Dtype::F32),
            &ops::zeros(&[0, 4], Dtype::F32),
        )
        .unwrap();
        assert_eq!(z.shape(), &[3, 4]);
        assert_eq!(common::vals(&z), vec![0.0; 12]);
        let z = ops::matmul(&ops::zeros(&[0, 5], Dtype::F32), &arr(&[5, 4], 1)).unwrap();
        assert_eq!(z.shape(), &[0, 4]);
        z.eval().unwrap();
        let z = ops::matmul(
            &ops::zeros(&[2, 0, 3, 5], Dtype::BF16),
            &ops::zeros(&[5, 1], Dtype::BF16),
        )
        .unwrap();
        assert_eq!(z.shape(), &[2, 0, 3, 1]);
        z.eval().unwrap();
    });
}

#[test]
fn errors() {
    common::for_each_device(|_| {
        let e = ops::matmul(
            &ops::zeros(&[2, 3], Dtype::F32),
            &ops::zeros(&[4, 5], Dtype::F32),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "[matmul] shapes (2,3) and (4,5) cannot be multiplied");
        let e = ops::matmul(&ops::zeros(&[3], Dtype::F32), &ops::zeros(&[4], Dtype::F32))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "[matmul] shapes (3,) and (4,) cannot be multiplied");
        let e = ops::matmul(
            &ops::zeros(&[2, 2, 3], Dtype::F32),
            &ops::zeros(&[3, 3, 1], Dtype::F32),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("[matmul] shapes (2,2,3) and (3,3,1) cannot be multiplied"),
            "{e}"
        );
        // integers are rejected, as in MLX
        let e = ops::matmul(
            &ops::zeros(&[2, 2], Dtype::I32),
            &ops::zeros(&[2, 2], Dtype::I32),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("[matmul] Only inexact types are supported"),
            "{e}"
        );
        let e = ops::matmul(&Array::scalar(1.0f32), &ops::zeros(&[2, 2], Dtype::F32))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("[matmul]"), "{e}");
    });
}
