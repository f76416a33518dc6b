//! .npy load/save against NumPy-written fixtures.

use rmlx_core::{f16, ops, Array, Dtype};
use rmlx_io::{load_npy, save_npy};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/io")
        .join(name)
}

/// Row-major bytes of an evaluated (possibly strided) array, gathered in the test.
fn f32s(a: &Array) -> Vec<f32> {
    let d = a.data().unwrap();
    let buf: &[f32] = d.buffer_as::<f32>();
    let mut out = Vec::new();
    let (r, c) = (d.shape[0], d.shape[1]);
    for i in 0..r {
        for j in 0..c {
            out.push(
                buf[(d.offset as isize + i as isize * d.strides[0] + j as isize * d.strides[1])
                    as usize],
            );
        }
    }
    out
}

#[test]
fn loads_numpy_files() {
    let want: Vec<f32> = (0..12).map(|i| i as f32 / 8.0 - 0.5).collect();
    for name in ["f32.npy", "fortran.npy", "v2.npy"] {
        let a = load_npy(fixture(name)).unwrap();
        assert_eq!(
            (a.dtype(), a.shape()),
            (Dtype::F32, &[3usize, 4][..]),
            "{name}"
        );
        assert_eq!(f32s(&a), want, "{name}");
    }
    let h = load_npy(fixture("f16.npy")).unwrap();
    assert_eq!(
        h.to_vec::<f16>().unwrap(),
        (0..12)
            .map(|i| f16::from_f32(i as f32 / 4.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        load_npy(fixture("i64.npy"))
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        (-6..6).collect::<Vec<i64>>()
    );
    assert_eq!(
        load_npy(fixture("u8.npy")).unwrap().to_vec::<u8>().unwrap(),
        (0..12).collect::<Vec<u8>>()
    );
    let b = load_npy(fixture("bool.npy")).unwrap();
    assert_eq!(b.dtype(), Dtype::Bool);
    let s = load_npy(fixture("scalar.npy")).unwrap();
    assert_eq!((s.shape(), s.item::<f32>().unwrap()), (&[][..], 2.5));
}

#[test]
fn refuses_big_endian_object_and_f64() {
    let e = load_npy(fixture("big_endian.npy")).unwrap_err().to_string();
    assert!(
        e.contains("big-endian") && e.contains("big_endian.npy"),
        "{e}"
    );
    assert!(load_npy(fixture("object.npy"))
        .unwrap_err()
        .to_string()
        .contains("object"));
    assert!(load_npy(fixture("f64.npy"))
        .unwrap_err()
        .to_string()
        .contains("<f8"));
}

#[test]
fn save_round_trips_and_numpy_layout() {
    let dir = std::env::temp_dir().join(format!("rmlx-io-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = Array::from_slice(
        &(0..12).map(|i| i as f32 / 8.0 - 0.5).collect::<Vec<_>>(),
        &[3, 4],
    )
    .unwrap();
    let p = dir.join("x.npy");
    save_npy(&p, &x).unwrap();
    // Byte-identical to NumPy's own file for the same array.
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(fixture("f32.npy")).unwrap()
    );
    let t = ops::transpose(&x, None).unwrap();
    save_npy(dir.join("t.npy"), &t).unwrap();
    let back = load_npy(dir.join("t.npy")).unwrap();
    assert_eq!(back.shape(), &[4, 3]);
    assert_eq!(f32s(&back), f32s(&t));
    let v = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    save_npy(dir.join("v.npy"), &v).unwrap();
    assert_eq!(
        load_npy(dir.join("v.npy"))
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        vec![1, 2, 3]
    );
    let bf = Array::from_slice(&[rmlx_core::bf16::from_f32(1.0)], &[1]).unwrap();
    assert!(save_npy(dir.join("bf.npy"), &bf)
        .unwrap_err()
        .to_string()
        .contains("bfloat16"));
}
