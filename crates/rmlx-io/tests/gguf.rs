//! GGUF reader and lossless affine import, checked against gguf-py
//! (fixtures: scripts/fixtures/gguf_fixtures.py; exact equality, no tolerance).

use rmlx_core::{Dtype, MappedBytes};
use rmlx_io::{GgmlType, GgufFile, GgufValue, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/io")
        .join(name)
}

fn open() -> GgufFile {
    GgufFile::open(fixture("quants.gguf")).unwrap()
}

fn from(bytes: Vec<u8>) -> rmlx_core::Result<GgufFile> {
    GgufFile::from_bytes(Arc::new(bytes) as Arc<dyn MappedBytes>, "test.gguf")
}

fn err_of(bytes: Vec<u8>) -> String {
    match from(bytes) {
        Ok(_) => panic!("corrupt file parsed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn metadata_of_every_type() {
    let f = open();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    let m = f.metadata();
    assert_eq!(m["t.u8"], GgufValue::U8(200));
    assert_eq!(m["t.i8"], GgufValue::I8(-100));
    assert_eq!(m["t.u16"], GgufValue::U16(60000));
    assert_eq!(m["t.i16"], GgufValue::I16(-30000));
    assert_eq!(m["t.u32"], GgufValue::U32(4_000_000_000));
    assert_eq!(m["t.i32"], GgufValue::I32(-2_000_000_000));
    assert_eq!(m["t.f32"], GgufValue::F32(1.5));
    assert_eq!(m["t.u64"], GgufValue::U64((1 << 63) + 5));
    assert_eq!(m["t.i64"], GgufValue::I64(-(1 << 62)));
    assert_eq!(m["t.f64"], GgufValue::F64(0.1));
    assert_eq!(m["t.bool"], GgufValue::Bool(true));
    assert_eq!(
        m["t.nested"],
        GgufValue::Array(vec![
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]),
            GgufValue::Array(vec![GgufValue::I32(3)])
        ])
    );
    assert_eq!(f.get_str("t.str").unwrap(), "héllo");
    assert_eq!(f.get_str("general.architecture").unwrap(), "test");
    assert_eq!(f.get_u32("t.u8").unwrap(), 200);
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("t.u64").unwrap(), (1 << 63) + 5);
    assert_eq!(f.get_i64("t.i8").unwrap(), -100);
    assert_eq!(f.get_f32("t.f64").unwrap(), 0.1f32);
    assert!(f.get_bool("t.bool").unwrap());
    assert_eq!(f.get_i32_array("t.arr_i32").unwrap(), vec![1, -2, 3]);
    assert_eq!(f.get_f32_array("t.arr_f32").unwrap(), vec![0.5, 0.25]);
    assert_eq!(f.get_str_array("t.arr_str").unwrap(), vec!["a", "bc", ""]);
    // Wrong types and missing keys are errors naming the key.
    let e = f.get_u32("t.i8").unwrap_err().to_string();
    assert!(e.contains("t.i8") && e.contains("i8"), "{e}");
    assert!(f
        .get_u32("t.u64")
        .unwrap_err()
        .to_string()
        .contains("t.u64"));
    assert!(f
        .get_str("t.u8")
        .unwrap_err()
        .to_string()
        .contains("string"));
    assert!(f.get_str("nope").unwrap_err().to_string().contains("nope"));
    assert!(f.get_str_array("t.arr_i32").is_err());
}

#[test]
fn tensor_table_in_rmlx_order() {
    let f = open();
    let q4k = f.tensor_info("q4_k_3d").unwrap();
    assert_eq!(
        (q4k.ggml_type, q4k.shape.as_slice(), q4k.nbytes),
        (GgmlType::Q4_K, &[2usize, 2, 256][..], Some(4 * 144))
    );
    assert_eq!(q4k.offset % 64, 0, "data aligned to general.alignment");
    assert_eq!(f.tensor_info("bf16").unwrap().shape, vec![2, 3]);
    assert_eq!(f.tensors().len(), 18);
}

/// The imported affine triple dequantizes to exactly gguf-py's floats, with the documented
/// group size, bits and scale dtype per type.
#[test]
fn import_equals_gguf_py_dequantization() {
    let f = open();
    let bytes = std::fs::read(fixture("quants_ref.safetensors")).unwrap();
    let refs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let expect: &[(&str, usize, usize, Dtype)] = &[
        ("q4_0", 32, 4, Dtype::F16),
        ("q4_1", 32, 4, Dtype::F16),
        ("q5_0", 32, 5, Dtype::F16),
        ("q5_1", 32, 5, Dtype::F16),
        ("q8_0", 32, 8, Dtype::F16),
        ("q4_0_3d", 32, 4, Dtype::F16),
        ("q8_0_big", 32, 8, Dtype::F32), // -128 * 1024 overflows f16
        ("q2_k", 16, 2, Dtype::F32),
        ("q3_k", 16, 3, Dtype::F32),
        ("q4_k", 32, 4, Dtype::F32),
        ("q5_k", 32, 5, Dtype::F32),
        ("q6_k", 16, 6, Dtype::F32),
        ("q4_k_3d", 32, 4, Dtype::F32),
    ];
    for &(name, group, nbits, sdtype) in expect {
        let r = refs.tensor(name).unwrap();
        let want: Vec<f32> = r
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let t = f.load(name).unwrap();
        let Tensor::Quantized {
            wq,
            scales,
            biases,
            group_size,
            bits,
        } = &t
        else {
            panic!("{name}: not quantized")
        };
        assert_eq!((*group_size, *bits), (group, nbits), "{name}");
        assert_eq!(
            (scales.dtype(), biases.dtype(), wq.dtype()),
            (sdtype, sdtype, Dtype::U32),
            "{name}"
        );
        let shape = r.shape().to_vec();
        let k = shape[shape.len() - 1];
        let lead = &shape[..shape.len() - 1];
        assert_eq!(wq.shape(), [lead, &[k * nbits / 32]].concat(), "{name}");
        assert_eq!(scales.shape(), [lead, &[k / group]].concat(), "{name}");
        assert_eq!(t.shape(), shape, "{name}");
        let got = t.to_f32_vec().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        // Equal as numbers: only the sign of a zero may differ (`d*8 + -8d` is +0 where gguf's
        // `d*(8-8)` is -0 for a negative d).
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "{name}[{i}]: {g} vs gguf-py {w}");
        }
    }
}

/// The K-quant scales really need f32: rounding them to f16 would change the values.
#[test]
fn kquant_scales_are_not_exact_in_f16() {
    let f = open();
    for name in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let Tensor::Quantized { scales, .. } = f.load(name).unwrap() else {
            panic!()
        };
        let s = scales.to_vec::<f32>().unwrap();
        let lossy = s
            .iter()
            .filter(|&&x| rmlx_core::f16::from_f32(x).to_f32() != x)
            .count();
        assert!(
            lossy > 0,
            "{name}: {s:?}: every scale fits f16, the fixture does not exercise f32 scales"
        );
    }
}

/// A GGUF v3 file in memory holding one f32 tensor `w` of `shape` (values 0, 1, 2, ...).
fn one_f32_tensor(shape: &[usize]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(0u64.to_le_bytes()); // metadata
    b.extend(1u64.to_le_bytes());
    b.push(b'w');
    b.extend((shape.len() as u32).to_le_bytes());
    // GGUF lists dimensions innermost first
    for d in shape.iter().rev() {
        b.extend((*d as u64).to_le_bytes());
    }
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes()); // offset in the data section
    b.resize(b.len().next_multiple_of(32), 0);
    let n: usize = shape.iter().product();
    for i in 0..n {
        b.extend((i as f32).to_le_bytes());
    }
    b
}

#[test]
fn large_dense_tensors_are_zero_copy_and_small_ones_copied() {
    // Large: a view of the mapping. Small (a norm weight): a copy, so that the file's pages
    // can leave memory once the model is loaded.
    for (shape, mapped) in [([512, 1024], true), ([4, 8], false)] {
        let src: Arc<dyn MappedBytes> = Arc::new(one_f32_tensor(&shape));
        let f = GgufFile::from_bytes(src, "test").unwrap();
        let t = f.load("w").unwrap();
        let Tensor::Dense(a) = &t else {
            panic!("dense")
        };
        assert_eq!(a.shape(), &shape[..]);
        assert_eq!(a.data().unwrap().buffer.is_mapped(), mapped, "{shape:?}");
        let v = t.to_f32_vec().unwrap();
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as f32),
            "{shape:?}"
        );
    }
}

#[test]
fn small_dense_tensors_are_copied_exactly() {
    let f = open();
    let cases: [(&str, Dtype, Vec<f32>); 3] = [
        ("f32", Dtype::F32, (0..12).map(|i| i as f32 - 5.5).collect()),
        (
            "f16",
            Dtype::F16,
            (0..8)
                .map(|i| rmlx_core::f16::from_f32(i as f32 / 3.0).to_f32())
                .collect(),
        ),
        (
            "bf16",
            Dtype::BF16,
            (0..6).map(|i| i as f32 - 2.25).collect(),
        ),
    ];
    for (name, dtype, want) in cases {
        let t = f.load(name).unwrap();
        let Tensor::Dense(a) = &t else {
            panic!("{name}")
        };
        assert_eq!(a.dtype(), dtype);
        assert!(!a.data().unwrap().buffer.is_mapped(), "{name} not copied");
        assert_eq!(t.to_f32_vec().unwrap(), want, "{name}");
    }
}

#[test]
fn unsupported_types_are_refused_by_name() {
    let f = open();
    for (name, ty) in [("iq4_nl", "IQ4_NL"), ("q8_1", "Q8_1")] {
        let e = f.load(name).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(ty), "{e}");
    }
    assert!(f
        .load("missing")
        .unwrap_err()
        .to_string()
        .contains("missing"));
}

#[test]
fn version_2_reads_the_same() {
    let mut b = std::fs::read(fixture("quants.gguf")).unwrap();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = from(b).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors(), open().tensors());
    assert_eq!(f.metadata(), open().metadata());
}

#[test]
fn corrupt_files_are_clear_errors() {
    let good = std::fs::read(fixture("quants.gguf")).unwrap();
    let with = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    assert!(err_of(with(0, b"GGUX")).contains("magic"));
    assert!(err_of(with(4, &1u32.to_le_bytes())).contains("version 1"));
    assert!(err_of(with(4, &7u32.to_le_bytes())).contains("version 7"));
    assert!(err_of(with(4, &3u32.to_be_bytes())).contains("big-endian"));
    assert!(err_of(vec![]).contains("too short"));
    // A tensor count the file cannot hold is refused before any allocation.
    assert!(err_of(with(8, &u64::MAX.to_le_bytes())).contains("tensor count"));
    assert!(err_of(with(16, &(1u64 << 60).to_le_bytes())).contains("metadata count"));
    // Truncated inside the header, and inside the data: the latter names the tensor.
    let e = err_of(good[..200].to_vec());
    assert!(
        e.contains("truncated") || e.contains("rest of the file"),
        "{e}"
    );
    let e = err_of(good[..1000].to_vec());
    assert!(e.contains("truncated"), "{e}");
    // q8_1 is the last tensor, followed by gguf-py's padding to the 64-byte alignment, so cut
    // into its own bytes (dropping only padding is a valid file).
    let q81 = open().tensor_info("q8_1").unwrap().clone();
    let q81_end = q81.offset + q81.nbytes.unwrap();
    assert!(q81_end < good.len(), "fixture ends with padding");
    assert!(from(good[..q81_end].to_vec()).is_ok());
    let e = err_of(good[..q81_end - 10].to_vec());
    assert!(e.contains("'q8_1'") && e.contains("past the end"), "{e}");
}

#[test]
fn row_length_must_be_whole_blocks() {
    // Patch q4_0's innermost dim (64) to 48: not a multiple of the 32-element block.
    let good = std::fs::read(fixture("quants.gguf")).unwrap();
    let name = b"q4_0";
    let at = good
        .windows(name.len() + 4)
        .position(|w| &w[..4] == name && w[4..8] == 2u32.to_le_bytes())
        .unwrap();
    let mut b = good.clone();
    let dim0 = at + name.len() + 4;
    assert_eq!(
        u64::from_le_bytes(b[dim0..dim0 + 8].try_into().unwrap()),
        64
    );
    b[dim0..dim0 + 8].copy_from_slice(&48u64.to_le_bytes());
    let e = err_of(b.clone());
    assert!(e.contains("q4_0") && e.contains("48"), "{e}");
    // 128 columns: twice the bytes, so q4_0 runs into the next tensor.
    b[dim0..dim0 + 8].copy_from_slice(&128u64.to_le_bytes());
    let e = err_of(b);
    assert!(e.contains("q4_0") && e.contains("overlaps"), "{e}");
}

/// A tensor with a zero dimension holds no bytes whatever its other dimensions say; loading it
/// must not size anything from a huge row length (this once aborted on a 2^40-byte allocation).
#[test]
fn empty_quantized_tensor_with_huge_rows_loads_empty() {
    let good = std::fs::read(fixture("quants.gguf")).unwrap();
    let name = b"q4_0";
    let at = good
        .windows(name.len() + 4)
        .position(|w| &w[..4] == name && w[4..8] == 2u32.to_le_bytes())
        .unwrap();
    let dim0 = at + name.len() + 4;
    let mut b = good.clone();
    b[dim0..dim0 + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    b[dim0 + 8..dim0 + 16].copy_from_slice(&0u64.to_le_bytes());
    let f = from(b).unwrap();
    let Tensor::Quantized { wq, scales, .. } = f.load("q4_0").unwrap() else {
        panic!("quantized")
    };
    assert_eq!(wq.shape(), &[0, (1usize << 60) / 32 * 4]);
    assert_eq!(scales.shape(), &[0, (1usize << 60) / 32]);
    // Zero rows, but a row length whose strides would not fit isize: refused when parsed.
    let mut b = good.clone();
    b[dim0..dim0 + 8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    b[dim0 + 8..dim0 + 16].copy_from_slice(&0u64.to_le_bytes());
    let e = err_of(b);
    assert!(e.contains("q4_0") && e.contains("too large"), "{e}");
}
