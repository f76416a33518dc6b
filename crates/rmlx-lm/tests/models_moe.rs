//! Mixture-of-experts checkpoints beyond the MLX fixtures' own layout (those are checked with the
//! other architectures in `models_mlx.rs`): Hugging Face per-expert tensors stacked at load, a
//! GGUF file with `ffn_*_exps` tensors, and clear errors for inconsistent MoE checkpoints.
//! References: tests/fixtures/models/{qwen3_moe,mixtral}/reference.safetensors
//! (scripts/fixtures/tiny_moe_mlx.py) and tests/fixtures/models/qwen3_moe_gguf/
//! (scripts/fixtures/tiny_moe_gguf.py, written from the same dense weights).

use rmlx::{ops, Array, Dtype};
use rmlx_lm::load::{load_model, LoadOptions};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

/// (tokens, logits) of an MLX reference file.
fn reference(dir: &Path) -> (Vec<u32>, Vec<f32>) {
    let (t, _) = rmlx::io::load_safetensors(dir.join("reference.safetensors")).unwrap();
    let get = |n: &str| t.iter().find(|(k, _)| k == n).unwrap().1.clone();
    (
        get("tokens").to_vec::<u32>().unwrap(),
        get("logits").to_vec::<f32>().unwrap(),
    )
}

/// Uncached logits of `path` (a directory or a GGUF file) against the MLX reference in `refdir`.
fn check(path: &Path, refdir: &Path) {
    let (model, _) = load_model(path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (tokens, want) = reference(refdir);
    let ids = Array::from_slice(&tokens, &[1, tokens.len()]).unwrap();
    let got = ops::astype(&model.forward(&ids, &mut []).unwrap(), Dtype::F32)
        .to_vec::<f32>()
        .unwrap();
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-3 * scale,
        "{}: max |Δ| {worst} vs MLX (scale {scale})",
        path.display()
    );
}

fn scratch(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("rmlx_models_moe_{tag}_{}_{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of a stacked fixture with its experts split into Hugging Face's per-expert tensors
/// (`{block}.experts.E.{hf}.weight`), optionally with `edit` applied to the config.
fn per_expert_copy(
    src: &str,
    block: &str,
    names: &[(&str, &str)],
    edit: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let src = fixture(src);
    let dst = scratch(&format!("{block}_{}", names[0].0));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    let (t, meta) = rmlx::io::load_safetensors(src.join("model.safetensors")).unwrap();
    let mut out: Vec<(String, Array)> = Vec::new();
    for (k, a) in t {
        let split = names.iter().find_map(|(hf, ours)| {
            let stem = k.strip_suffix(&format!("{block}.switch_mlp.{ours}.weight"))?;
            Some((stem.to_string(), *hf))
        });
        match split {
            Some((stem, hf)) => {
                for e in 0..a.shape()[0] {
                    let s = ops::slice(
                        &a,
                        &[e as i64, 0, 0],
                        &[e as i64 + 1, i64::MAX, i64::MAX],
                        &[1, 1, 1],
                    )
                    .unwrap();
                    let s = ops::contiguous(&ops::squeeze(&s, &[0]).unwrap());
                    out.push((format!("{stem}{block}.experts.{e}.{hf}.weight"), s));
                }
            }
            None => out.push((k, a)),
        }
    }
    let refs: Vec<(String, &Array)> = out.iter().map(|(k, a)| (k.clone(), a)).collect();
    rmlx::io::save_safetensors(dst.join("model.safetensors"), &refs, &meta).unwrap();
    std::fs::copy(
        src.join("reference.safetensors"),
        dst.join("reference.safetensors"),
    )
    .unwrap();
    dst
}

#[test]
fn hugging_face_per_expert_tensors_are_stacked_at_load() {
    let d = per_expert_copy(
        "mixtral",
        "block_sparse_moe",
        &[("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")],
        |_| {},
    );
    check(&d, &d);
    let d = per_expert_copy(
        "qwen3_moe",
        "mlp",
        &[
            ("gate_proj", "gate_proj"),
            ("up_proj", "up_proj"),
            ("down_proj", "down_proj"),
        ],
        |_| {},
    );
    check(&d, &d);
}

#[test]
fn gguf_moe_tensors_load() {
    let f = fixture("qwen3_moe_gguf/model.gguf");
    check(&f, &fixture("qwen3_moe"));
}

fn load_err(dir: &Path) -> String {
    match load_model(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} should fail to load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn inconsistent_moe_checkpoints_fail_clearly() {
    // more experts per token than experts
    let d = per_expert_copy("mixtral", "block_sparse_moe", &[("w1", "gate_proj")], |c| {
        c["num_experts_per_tok"] = 9.into()
    });
    let e = load_err(&d);
    assert!(e.contains("num_experts_per_tok (9)"), "{e}");
    // a config with fewer experts than the checkpoint
    let d = per_expert_copy("qwen3_moe", "mlp", &[("gate_proj", "gate_proj")], |c| {
        c["num_experts"] = 4.into()
    });
    let e = load_err(&d);
    assert!(e.contains("more than the 4 experts"), "{e}");
    // a stacked checkpoint whose config declares a different expert count
    let d = per_expert_copy("mixtral", "block_sparse_moe", &[("w1", "nothing")], |c| {
        c["num_local_experts"] = 3.into()
    });
    let e = load_err(&d);
    assert!(
        e.contains("block_sparse_moe.gate") && e.contains("[3, 64]"),
        "{e}"
    );
}
