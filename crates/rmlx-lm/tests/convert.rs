//! `convert` writes bit-for-bit what `mlx_lm.convert -q --q-bits 4 --q-group-size 64 --dtype
//! float16` wrote from the same tiny float32 checkpoint (tests/fixtures/convert, made by
//! scripts/fixtures/convert_mlx.py).

use rmlx::{Array, Dtype};
use rmlx_lm::convert::{convert, ConvertOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/convert")
}

fn tensors(dir: &Path) -> BTreeMap<String, Array> {
    let (t, _) = rmlx::io::load_safetensors(dir.join("model.safetensors")).unwrap();
    t.into_iter().collect()
}

/// The raw bits of every element, whatever the dtype.
fn bits(a: &Array) -> Vec<u64> {
    match a.dtype() {
        Dtype::U32 => a
            .to_vec::<u32>()
            .unwrap()
            .into_iter()
            .map(u64::from)
            .collect(),
        Dtype::F16 => a
            .to_vec::<rmlx::f16>()
            .unwrap()
            .into_iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        Dtype::BF16 => a
            .to_vec::<rmlx::bf16>()
            .unwrap()
            .into_iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        Dtype::F32 => a
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        d => panic!("unexpected dtype {d}"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rmlx_convert_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quantized_matches_mlx_lm_bit_for_bit() {
    matches_mlx_lm("src", "mlx_q4");
}

/// Qwen3-MoE from Hugging Face's per-expert layout: experts stacked, the router at 8 bits with
/// its per-module entries in `quantization` (scripts/fixtures/convert_moe_mlx.py).
#[test]
fn moe_quantized_matches_mlx_lm_bit_for_bit() {
    matches_mlx_lm("moe_src", "moe_mlx_q4");
}

fn matches_mlx_lm(src: &str, reference: &str) {
    let out = tmp(reference);
    let opts = ConvertOptions {
        quantize: true,
        q_bits: 4,
        q_group_size: 64,
        dtype: Some(Dtype::F16),
    };
    convert(&fixtures().join(src), &out, &opts).unwrap();
    let (ours, theirs) = (tensors(&out), tensors(&fixtures().join(reference)));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, want) in &theirs {
        let got = &ours[name];
        assert_eq!(
            (got.dtype(), got.shape()),
            (want.dtype(), want.shape()),
            "{name}"
        );
        assert!(
            bits(got) == bits(want),
            "{name}: values differ from mlx_lm.convert's"
        );
    }
    let cfg = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap()
    };
    assert_eq!(cfg(&out), cfg(&fixtures().join(reference)));
    let index = |d: &Path| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        v["weight_map"].clone()
    };
    assert_eq!(index(&out), index(&fixtures().join(reference)));
    assert!(out.join("tokenizer.json").is_file() && out.join("tokenizer_config.json").is_file());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn dense_cast_and_bad_options() {
    let out = tmp("f16");
    let opts = ConvertOptions {
        quantize: false,
        dtype: Some(Dtype::F16),
        ..Default::default()
    };
    convert(&fixtures().join("src"), &out, &opts).unwrap();
    let t = tensors(&out);
    assert!(t.values().all(|a| a.dtype() == Dtype::F16));
    assert!(!t.keys().any(|k| k.ends_with(".scales")));
    std::fs::remove_dir_all(&out).ok();
    let bad = ConvertOptions {
        quantize: true,
        q_bits: 7,
        ..Default::default()
    };
    let e = convert(&fixtures().join("src"), &tmp("bad"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--q-bits"), "{e}");
    let e = convert(
        Path::new("/nonexistent/model"),
        &tmp("bad2"),
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model"), "{e}");
}
