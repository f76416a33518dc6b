//! Property tests over mutated files: the safetensors, GGUF and npy parsers return `Err` (or a
//! valid result) for truncated files, flipped bytes and huge length fields, never panic, and
//! never allocate more than the file could justify (counts are checked against the bytes left).

use proptest::prelude::*;
use rmlx_core::MappedBytes;
use rmlx_io::{parse_npy, parse_safetensors, GgufFile, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/io")
            .join(name),
    )
    .unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    /// Overwrite 8 bytes with a huge little-endian value (length and count fields).
    Huge(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Mutation::Flip),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1u64 << 40),
                Just(u32::MAX as u64),
                any::<u64>()
            ]
        )
            .prop_map(|(a, v)| Mutation::Huge(a, v)),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation, header_bias: usize) -> Vec<u8> {
    // Most mutations land in the first `header_bias` bytes, where the parsers' decisions are.
    let pos = |p: usize, len: usize| {
        if !p.is_multiple_of(4) && header_bias < len {
            p % header_bias
        } else {
            p % len.max(1)
        }
    };
    match m {
        Mutation::Truncate(n) => b.truncate(pos(*n, b.len())),
        Mutation::Flip(fs) => {
            for &(p, v) in fs {
                let at = pos(p, b.len());
                b[at] ^= v.max(1);
            }
        }
        Mutation::Huge(p, v) => {
            let at = pos(*p, b.len().saturating_sub(8));
            if b.len() >= 8 {
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    b
}

fn src(b: Vec<u8>) -> Arc<dyn MappedBytes> {
    Arc::new(b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gguf_never_panics(m in mutation()) {
        let b = apply(fixture("quants.gguf"), &m, 1500);
        if let Ok(f) = GgufFile::from_bytes(src(b), "fuzz.gguf") {
            // Whatever parsed must load or fail cleanly, and a quantized import must match its shape.
            for t in f.tensors().to_vec() {
                if let Ok(Tensor::Quantized { wq, .. }) = f.load(&t.name) {
                    prop_assert_eq!(wq.shape()[..wq.ndim() - 1].to_vec(), t.shape[..t.shape.len() - 1].to_vec());
                }
            }
        }
    }

    #[test]
    fn safetensors_never_panics(m in mutation()) {
        let b = apply(fixture("mlx.safetensors"), &m, 700);
        if let Ok((ts, _)) = parse_safetensors(src(b), "fuzz.safetensors") {
            for (_, a) in ts {
                prop_assert!(a.data().is_ok());
            }
        }
    }

    #[test]
    fn npy_never_panics(m in mutation(), which in 0usize..4) {
        let name = ["f32.npy", "fortran.npy", "v2.npy", "bool.npy"][which];
        let b = apply(fixture(name), &m, 128);
        if let Ok(a) = parse_npy(src(b), "fuzz.npy") {
            prop_assert!(a.data().is_ok());
        }
    }
}
