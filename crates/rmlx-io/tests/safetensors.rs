//! safetensors load/save: MLX-written fixture, round trips, views, corrupt headers.

use rmlx_core::{bf16, f16, ops, Array, Dtype, MappedBytes};
use rmlx_io::{load_safetensors, parse_safetensors, save_safetensors, Metadata};
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/io")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rmlx-io-st-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn bytes_of(a: &Array) -> Vec<u8> {
    let d = a.data().unwrap();
    let s = d.dtype.size();
    d.buffer.as_slice()[d.offset * s..(d.offset + d.numel()) * s].to_vec()
}

#[test]
fn loads_mlx_written_file_of_every_dtype() {
    let (tensors, meta) = load_safetensors(fixture("mlx.safetensors")).unwrap();
    assert_eq!(meta.get("format").map(String::as_str), Some("mlx"));
    assert_eq!(meta.get("note").map(String::as_str), Some("fixture"));
    let get = |n: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n}"))
            .1
            .clone()
    };
    let base: Vec<i64> = (0..12).collect();
    let b = get("bool");
    assert_eq!((b.dtype(), b.shape()), (Dtype::Bool, &[3usize, 4][..]));
    assert_eq!(
        bytes_of(&b),
        base.iter().map(|i| (i % 3 == 0) as u8).collect::<Vec<_>>()
    );
    assert_eq!(
        get("u8").to_vec::<u8>().unwrap(),
        base.iter().map(|&i| i as u8).collect::<Vec<_>>()
    );
    assert_eq!(
        get("u32").to_vec::<u32>().unwrap(),
        base.iter()
            .map(|&i| (i * 1000003) as u32)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        get("i32").to_vec::<i32>().unwrap(),
        base.iter().map(|&i| i as i32 - 6).collect::<Vec<_>>()
    );
    assert_eq!(
        get("i64").to_vec::<i64>().unwrap(),
        base.iter().map(|&i| i - 6).collect::<Vec<_>>()
    );
    assert_eq!(
        get("f16").to_vec::<f16>().unwrap(),
        base.iter()
            .map(|&i| f16::from_f32(i as f32 / 4.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        get("bf16").to_vec::<bf16>().unwrap(),
        base.iter()
            .map(|&i| bf16::from_f32(i as f32 / 4.0 - 1.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        get("f32").to_vec::<f32>().unwrap(),
        base.iter()
            .map(|&i| i as f32 / 8.0 - 0.5)
            .collect::<Vec<_>>()
    );
    let s = get("scalar");
    assert_eq!((s.shape(), s.item::<f32>().unwrap()), (&[][..], 2.5));
    assert_eq!(get("empty").shape(), &[0, 3]);
    // MLX writes the header unpadded (650 bytes here), so the data starts at byte 658 and only
    // tensors whose file offset is a multiple of their element size can be zero-copy views;
    // the others are copied (with the right values, checked above).
    let raw = std::fs::read(fixture("mlx.safetensors")).unwrap();
    let data_start = 8 + u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&raw[8..data_start]).unwrap();
    let mut mapped = 0;
    for (n, a) in &tensors {
        let begin = header[n.as_str()]["data_offsets"][0].as_u64().unwrap() as usize;
        let aligned = (data_start + begin).is_multiple_of(a.dtype().size());
        if a.size() > 0 && aligned {
            assert!(a.data().unwrap().buffer.is_mapped(), "{n} was copied");
            mapped += 1;
        }
    }
    assert!(mapped >= 4, "bool, u8, f16, bf16 are mapped");
}

#[test]
fn null_metadata_as_mlx_writes_it() {
    let h = r#"{"__metadata__":null,"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h.as_bytes());
    b.extend([5u8, 6]);
    let (ts, meta) = parse_safetensors(Arc::new(b) as Arc<dyn MappedBytes>, "t").unwrap();
    assert!(meta.is_empty());
    assert_eq!(ts[0].1.to_vec::<u8>().unwrap(), vec![5, 6]);
}

/// A zero dimension makes a tensor empty, but the other dimensions must still describe a shape
/// whose strides fit (they are computed with zeros counted as one).
#[test]
fn empty_tensor_with_huge_dims_is_an_error() {
    let huge = r#"{"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#;
    assert!(parse_err(huge, 0).contains("too large"));
}

#[test]
fn round_trip_including_views_and_the_safetensors_crate() {
    let x = Array::from_slice(
        &(0..24).map(|i| i as f32 * 0.25).collect::<Vec<_>>(),
        &[2, 3, 4],
    )
    .unwrap();
    let t = ops::transpose(&x, Some(&[2, 0, 1])).unwrap(); // a strided view
    let h = Array::from_slice(&[f16::from_f32(1.5), f16::from_f32(-2.0)], &[2]).unwrap();
    let i = Array::from_slice(&[7i64, -9], &[1, 2]).unwrap();
    let u = Array::from_slice(&[1u8, 2, 3], &[3]).unwrap();
    let meta: Metadata = [("format".to_string(), "mlx".to_string())].into();
    let p = tmp("rt.safetensors");
    save_safetensors(
        &p,
        &[("x", &x), ("t", &t), ("h", &h), ("i", &i), ("u", &u)],
        &meta,
    )
    .unwrap();
    let (back, m2) = load_safetensors(&p).unwrap();
    assert_eq!(m2, meta);
    let get = |n: &str| back.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(
        get("x").to_vec::<f32>().unwrap(),
        x.to_vec::<f32>().unwrap()
    );
    assert_eq!(get("t").shape(), &[4, 2, 3]);
    // t[k, a, b] = x[a, b, k]
    let tv = bytes_of(&get("t"));
    let tv: Vec<f32> = tv
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for k in 0..4 {
        for a in 0..2 {
            for b in 0..3 {
                assert_eq!(tv[k * 6 + a * 3 + b], ((a * 12 + b * 4 + k) as f32) * 0.25);
            }
        }
    }
    assert_eq!(
        get("h").to_vec::<f16>().unwrap(),
        h.to_vec::<f16>().unwrap()
    );
    assert_eq!(get("i").to_vec::<i64>().unwrap(), vec![7, -9]);
    assert_eq!(get("u").to_vec::<u8>().unwrap(), vec![1, 2, 3]);
    // The reference parser accepts our file (it checks offsets are contiguous and aligned).
    let raw = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    assert_eq!(st.tensor("i").unwrap().dtype(), safetensors::Dtype::I64);
    assert_eq!(st.tensor("t").unwrap().shape(), &[4, 2, 3]);
    // Every tensor sits aligned for its dtype in the file.
    for (n, a) in &back {
        let d = a.data().unwrap();
        assert!(d.buffer.is_mapped(), "{n}");
    }
}

#[test]
fn unsupported_dtype_and_bad_destinations_are_errors() {
    let e = load_safetensors(fixture("f64.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64") && e.contains("'x'"), "{e}");
    let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
    let bad = PathBuf::from("/nonexistent-dir-rmlx/out.safetensors");
    let e = save_safetensors(&bad, &[("x", &x)], &Metadata::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent-dir-rmlx/out.safetensors"), "{e}");
    assert!(save_safetensors(
        tmp("dup.safetensors"),
        &[("x", &x), ("x", &x)],
        &Metadata::new()
    )
    .is_err());
    assert!(load_safetensors("/nonexistent-rmlx.safetensors")
        .unwrap_err()
        .to_string()
        .contains("nonexistent"));
}

fn parse_err(header: &str, data: usize) -> String {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    match parse_safetensors(Arc::new(b) as Arc<dyn MappedBytes>, "t.safetensors") {
        Ok(_) => panic!("accepted corrupt header {header}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn corrupt_headers_are_clear_errors() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(parse_safetensors(
        Arc::new({
            let mut b = (ok.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(ok.as_bytes());
            b.extend([0u8; 8]);
            b
        }) as Arc<dyn MappedBytes>,
        "ok"
    )
    .is_ok());
    // header length past the end of the file
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    let e = parse_safetensors(Arc::new(b) as Arc<dyn MappedBytes>, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the end"), "{e}");
    assert!(
        parse_safetensors(Arc::new(vec![1u8, 2]) as Arc<dyn MappedBytes>, "t")
            .unwrap_err()
            .to_string()
            .contains("too short")
    );
    assert!(parse_err("{not json", 0).contains("JSON"));
    assert!(parse_err("[1,2]", 0).contains("object"));
    let e = parse_err(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        4,
    );
    assert!(e.contains("'a'") && e.contains("outside"), "{e}");
    let e = parse_err(
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        8,
    );
    assert!(e.contains("'a'") && e.contains("12 bytes"), "{e}");
    let e = parse_err(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
        8,
    );
    assert!(e.contains("overlap"), "{e}");
    assert!(parse_err(
        r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
        8
    )
    .contains("Q9"));
    assert!(parse_err(
        r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
        8
    )
    .contains("shape"));
    assert!(parse_err(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
        8
    )
    .contains("outside"));
    let huge =
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#;
    assert!(parse_err(huge, 8).contains("too large"));
    assert!(parse_err(r#"{"__metadata__":{"k":1}}"#, 0).contains("not a string"));
    assert!(parse_err(r#"{"__metadata__":[]}"#, 0).contains("not an object"));
}
