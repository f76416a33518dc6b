//! Indexing ops against NumPy goldens (tests/fixtures/ops_indexing, made by
//! scripts/fixtures/ops_numpy_indexing.py): take, take_along_axis, put_along_axis,
//! concatenate, pad, tril/triu, sort/argsort; plus errors and edge cases.

mod common;

use rmlx::{ops, Array, Dtype};
use safetensors::SafeTensors;
use serde_json::Value;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/ops_indexing"
);

fn load(st: &SafeTensors, name: &str) -> Option<Array> {
    let t = st.tensor(name).ok()?;
    let dtype = match t.dtype() {
        safetensors::Dtype::F32 => Dtype::F32,
        safetensors::Dtype::F16 => Dtype::F16,
        safetensors::Dtype::I32 => Dtype::I32,
        safetensors::Dtype::I64 => Dtype::I64,
        safetensors::Dtype::U8 => Dtype::U8,
        safetensors::Dtype::U32 => Dtype::U32,
        d => panic!("fixture dtype {d:?} not handled"),
    };
    Some(Array::from_bytes(t.data(), t.shape(), dtype).expect("fixture tensor"))
}

fn axis_of(m: &Value) -> Option<i32> {
    m.get("axis").and_then(|a| a.as_i64()).map(|a| a as i32)
}

/// Exact comparison through f32 (every fixture value is exactly representable), NaN == NaN.
fn assert_same(got: &Array, want: &Array, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (common::vals(got), common::vals(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

#[test]
fn numpy_goldens() {
    let bytes = std::fs::read(format!("{DIR}/cases.safetensors")).expect("fixture file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let meta: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/cases.json")).unwrap())
            .unwrap();
    assert!(meta.len() > 100, "fixture has {} cases", meta.len());
    common::for_each_device(|_| {
        for m in &meta {
            let name = m["name"].as_str().unwrap();
            let op = m["op"].as_str().unwrap();
            let mut x = load(&st, &format!("{name}.x")).unwrap();
            if m["x_t"].as_bool().unwrap_or(false) {
                // stored transposed: transposing back gives a non-contiguous view
                x = ops::transpose(&x, None).unwrap();
            }
            let want = load(&st, &format!("{name}.out")).unwrap();
            let idx = load(&st, &format!("{name}.idx"));
            let vals = load(&st, &format!("{name}.vals"));
            let ax = axis_of(m);
            let got = match op {
                "take" => ops::take(&x, idx.as_ref().unwrap(), ax),
                "take_along_axis" => ops::take_along_axis(&x, idx.as_ref().unwrap(), ax),
                "put_along_axis" => {
                    ops::put_along_axis(&x, idx.as_ref().unwrap(), vals.as_ref().unwrap(), ax)
                }
                "concatenate" => {
                    let y = load(&st, &format!("{name}.y")).unwrap();
                    let mut xs = vec![x.clone(), y];
                    if let Some(z) = load(&st, &format!("{name}.z")) {
                        xs.push(z);
                    }
                    ops::concatenate(&xs, ax.unwrap())
                }
                "pad" => {
                    let w: Vec<(usize, usize)> = m["widths"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            (
                                p[0].as_u64().unwrap() as usize,
                                p[1].as_u64().unwrap() as usize,
                            )
                        })
                        .collect();
                    ops::pad(&x, &w, m["value"].as_f64().unwrap())
                }
                "tril" => ops::tril(&x, m["k"].as_i64().unwrap()),
                "triu" => ops::triu(&x, m["k"].as_i64().unwrap()),
                "sort" => ops::sort(&x, ax),
                "argsort" => ops::argsort(&x, ax),
                _ => panic!("unknown op {op}"),
            }
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_same(&got, &want, name);
        }
    });
}

#[test]
fn take_bf16_and_embedding_rows() {
    common::for_each_device(|_| {
        let table = ops::astype(
            &ops::reshape(&ops::arange(0.0, 40.0, 1.0, Dtype::F32).unwrap(), &[10, 4]).unwrap(),
            Dtype::BF16,
        );
        let ids = Array::from_slice(&[9i32, 0, -1, 3], &[2, 2]).unwrap();
        let out = ops::take(&table, &ids, Some(0)).unwrap();
        assert_eq!(out.shape(), &[2, 2, 4]);
        assert_eq!(out.dtype(), Dtype::BF16);
        let v = common::vals(&out);
        assert_eq!(&v[..4], &[36.0, 37.0, 38.0, 39.0]);
        assert_eq!(&v[8..12], &[36.0, 37.0, 38.0, 39.0]);
        assert_eq!(&v[12..], &[12.0, 13.0, 14.0, 15.0]);
        // a sliced (row-strided) table: rows 1, 3, 5, ... of the original
        let odd = ops::slice(&table, &[1, 1], &[10, 4], &[2, 1]).unwrap();
        let out = ops::take(&odd, &Array::from_vec(vec![1u8, 4]), Some(0)).unwrap();
        assert_eq!(common::vals(&out), vec![13.0, 14.0, 15.0, 37.0, 38.0, 39.0]);
    });
}

#[test]
fn index_errors() {
    common::for_each_device(|_| {
        let x = ops::reshape(&ops::arange(0.0, 6.0, 1.0, Dtype::F32).unwrap(), &[2, 3]).unwrap();
        let fi = Array::from_vec(vec![1.0f32]);
        let e = ops::take(&x, &fi, Some(0)).unwrap_err().to_string();
        assert!(e.starts_with("[take]") && e.contains("integral"), "{e}");
        let e = ops::take(&x, &Array::from_vec(vec![0i32]), Some(2))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "[take] axis 2 is out of bounds for array of dimension 2");
        // out of range indices: an error at evaluation, not a wild read
        let e = ops::take(&x, &Array::from_vec(vec![3i32]), Some(0))
            .unwrap()
            .eval()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[take] index 3 is out of bounds for axis 0 with size 2"),
            "{e}"
        );
        let e = ops::take(&x, &Array::from_vec(vec![-4i64]), Some(1))
            .unwrap()
            .eval()
            .unwrap_err()
            .to_string();
        assert!(e.contains("index -4 is out of bounds"), "{e}");
        let e = ops::take_along_axis(&x, &Array::from_vec(vec![0i32]), Some(0))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "[take_along_axis] indices of dimension 1 do not match array of dimension 2"
        );
        let bad = Array::from_slice(&[0i32, 5], &[1, 2]).unwrap();
        let e = ops::take_along_axis(&x, &bad, Some(1))
            .unwrap()
            .eval()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[take_along_axis] index 5 is out of bounds"),
            "{e}"
        );
        let e = ops::put_along_axis(&x, &bad, &Array::scalar(1.0f32), Some(1))
            .unwrap()
            .eval()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[put_along_axis] index 5 is out of bounds"),
            "{e}"
        );
        let e = ops::put_along_axis(
            &x,
            &Array::from_slice(&[0i32; 8], &[4, 2]).unwrap(),
            &Array::scalar(1.0f32),
            Some(1),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("[put_along_axis]"), "{e}");
        let e = ops::take(
            &ops::zeros(&[0, 3], Dtype::F32),
            &Array::from_vec(vec![0i32]),
            Some(0),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("[take]"), "{e}");
        let e = ops::tril(&Array::from_vec(vec![1.0f32, 2.0]), 0)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "[tril] array must be at least 2-D");
    });
}

#[test]
fn put_along_axis_last_write_wins_and_dtype() {
    common::for_each_device(|_| {
        let x = ops::zeros(&[1, 4], Dtype::I32);
        let idx = Array::from_slice(&[2i32, 2, 0], &[1, 3]).unwrap();
        let v = Array::from_slice(&[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
        let out = ops::put_along_axis(&x, &idx, &v, Some(-1)).unwrap();
        assert_eq!(out.dtype(), Dtype::I32);
        assert_eq!(out.to_vec::<i32>().unwrap(), vec![3, 0, 2, 0]);
        // axis None writes into the flattened array
        let out = ops::put_along_axis(
            &ops::zeros(&[2, 2], Dtype::F32),
            &Array::from_vec(vec![3u32]),
            &Array::scalar(5.0f32),
            None,
        )
        .unwrap();
        assert_eq!(out.shape(), &[4]);
        assert_eq!(common::vals(&out), vec![0.0, 0.0, 0.0, 5.0]);
    });
}

#[test]
fn zero_size_and_scalars() {
    common::for_each_device(|_| {
        let x = ops::zeros(&[0, 3], Dtype::F32);
        let out = ops::take(&x, &Array::from_vec(Vec::<i32>::new()), Some(0)).unwrap();
        assert_eq!(out.shape(), &[0, 3]);
        assert_eq!(out.to_vec::<f32>().unwrap().len(), 0);
        let out = ops::take(&x, &Array::from_vec(vec![1i32, 2]), Some(1)).unwrap();
        assert_eq!(out.shape(), &[0, 2]);
        out.eval().unwrap();
        // a 0-d array with axis None is taken from as a 1-element vector
        let s = Array::scalar(7.0f32);
        let out = ops::take(&s, &Array::from_vec(vec![0i32, -1]), None).unwrap();
        assert_eq!(common::vals(&out), vec![7.0, 7.0]);
        let out = ops::sort(&ops::zeros(&[2, 0], Dtype::F32), Some(1)).unwrap();
        assert_eq!(out.shape(), &[2, 0]);
        out.eval().unwrap();
        let c = ops::concatenate(
            &[
                ops::zeros(&[0, 2], Dtype::F32),
                ops::zeros(&[0, 2], Dtype::F32),
            ],
            0,
        )
        .unwrap();
        assert_eq!(c.shape(), &[0, 2]);
        c.eval().unwrap();
    });
}

/// `slice_update_at` (position read from an array) equals `slice_update` at the same start,
/// clamps a start past the end, writes in place when the buffer is donated, and checks shapes.
#[test]
fn slice_update_at_matches_static_update() {
    common::for_each_device(|_| {
        let base = ops::reshape(
            &ops::arange(0.0, 2.0 * 3.0 * 8.0 * 4.0, 1.0, Dtype::F32).unwrap(),
            &[2, 3, 8, 4],
        )
        .unwrap();
        let upd = ops::astype(
            &ops::reshape(
                &ops::arange(-24.0, 0.0, 1.0, Dtype::F32).unwrap(),
                &[2, 3, 1, 4],
            )
            .unwrap(),
            Dtype::BF16,
        );
        for (at, want_at) in [(0i32, 0i64), (5, 5), (7, 7), (12, 7), (-3, 0)] {
            let pos = Array::from_slice(&[at], &[1]).unwrap();
            let got = ops::slice_update_at(&base, &upd, &pos, 2).unwrap();
            let want = ops::slice_update(&base, &upd, &[0, 0, want_at], &[1, 1, 1]).unwrap();
            assert_eq!(got.dtype(), Dtype::F32);
            assert_eq!(common::vals(&got), common::vals(&want), "start {at}");
        }
        // two updates of the same buffer: the second sees the first (in place or not)
        let p0 = Array::from_slice(&[1i32], &[1]).unwrap();
        let p1 = Array::from_slice(&[2i64], &[]).unwrap();
        let a = ops::slice_update_at(&base, &upd, &p0, -2).unwrap();
        let b = ops::slice_update_at(&a, &upd, &p1, 2).unwrap();
        let w = ops::slice_update(
            &base,
            &ops::concatenate(&[upd.clone(), upd.clone()], 2).unwrap(),
            &[0, 0, 1],
            &[1, 1, 1],
        )
        .unwrap();
        assert_eq!(common::vals(&b), common::vals(&w));
        // bad shapes and starts are errors naming the op
        let bad = ops::reshape(&upd, &[3, 2, 1, 4]).unwrap();
        let e = ops::slice_update_at(&base, &bad, &p0, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("slice_update_at"), "{e}");
        let fpos = Array::from_slice(&[1.0f32], &[1]).unwrap();
        assert!(ops::slice_update_at(&base, &upd, &fpos, 2).is_err());
    });
}

/// On a GPU, `take` of whole rows (the 16-byte row-copy kernel where slices allow it, the
/// element kernel where they do not) equals the CPU: several dtypes, negative and repeated
/// indices, leading axes before the taken one, an offset view, rows too short or misaligned
/// for 16-byte copies.
#[test]
fn gpu_take_of_rows_matches_the_cpu() {
    let Some(g) = common::gpu() else { return };
    let base = ops::arange(0.0, 4.0 * 6.0 * 24.0, 1.0, Dtype::F32).unwrap();
    let base = ops::reshape(&base, &[4, 6, 24]).unwrap();
    let idx = Array::from_slice(&[5i32, -1, 0, 2, 2, -6], &[2, 3]).unwrap();
    for dt in [Dtype::F32, Dtype::BF16, Dtype::U8, Dtype::F16] {
        let a = ops::astype(&base, dt);
        let cases = [
            (a.clone(), 1),
            (
                ops::slice(&a, &[1, 0, 8], &[3, 6, 24], &[1, 1, 1]).unwrap(),
                1,
            ), // row tails
            (
                ops::slice(&a, &[0, 0, 0], &[4, 6, 12], &[1, 1, 1]).unwrap(),
                1,
            ), // short rows
            (ops::reshape(&a, &[24, 24]).unwrap(), 0),
        ];
        for (i, (x, axis)) in cases.iter().enumerate() {
            let want = ops::take(x, &idx, Some(*axis)).unwrap();
            let got = rmlx::with_device(g, || ops::take(x, &idx, Some(*axis)).unwrap());
            assert_eq!(got.shape(), want.shape(), "{dt} case {i}");
            let (got, want) = (
                ops::astype(&got, Dtype::F32),
                ops::astype(&want, Dtype::F32),
            );
            assert_eq!(
                got.to_vec::<f32>().unwrap(),
                want.to_vec::<f32>().unwrap(),
                "{dt} case {i}"
            );
        }
    }
}

/// On a GPU, `put_along_axis` over few lanes (the two-pass scatter) equals the CPU, repeated
/// indices included (the last write wins), with negative indices; and a permutation's inverse.
#[test]
fn gpu_scatter_over_few_lanes_matches_the_cpu() {
    let Some(g) = common::gpu() else { return };
    let n = 3000usize;
    // 1-D, repeated and negative indices
    let idx: Vec<i32> = (0..n)
        .map(|i| ((i * 37) % 500) as i32 - if i % 7 == 0 { 500 } else { 0 })
        .collect();
    let vals = ops::arange(0.0, n as f64, 1.0, Dtype::F32).unwrap();
    let base = ops::full(&[500], -1.0, Dtype::F32);
    let ia = Array::from_slice(&idx, &[n]).unwrap();
    let f = || ops::put_along_axis(&base, &ia, &vals, Some(0)).unwrap();
    let (want, got) = (f(), rmlx::with_device(g, f));
    assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    // 2-D along axis 0 with 3 lanes
    let idx2: Vec<u32> = (0..40 * 3).map(|i| ((i * 11) % 9) as u32).collect();
    let ia2 = Array::from_slice(&idx2, &[40, 3]).unwrap();
    let v2 = ops::reshape(&ops::arange(0.0, 120.0, 1.0, Dtype::F32).unwrap(), &[40, 3]).unwrap();
    let b2 = ops::zeros(&[9, 3], Dtype::F32);
    let f2 = || ops::put_along_axis(&b2, &ia2, &v2, Some(0)).unwrap();
    let (want, got) = (f2(), rmlx::with_device(g, f2));
    assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    // the inverse of a permutation
    let perm: Vec<u32> = (0..n).map(|i| ((i * 1237) % n) as u32).collect();
    let pa = Array::from_slice(&perm, &[n]).unwrap();
    let pos = ops::arange(0.0, n as f64, 1.0, Dtype::U32).unwrap();
    let inv = rmlx::with_device(g, || {
        ops::put_along_axis(&ops::zeros(&[n], Dtype::U32), &pa, &pos, Some(0)).unwrap()
    });
    let inv = inv.to_vec::<u32>().unwrap();
    for (i, &p) in perm.iter().enumerate() {
        assert_eq!(inv[p as usize], i as u32);
    }
}
