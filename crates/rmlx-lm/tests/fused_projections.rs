//! The model code a GPU runs, checked on the CPU: with `RMLX_FUSE=1` the q/k/v and gate/up
//! projections are fused, so attention takes its joint path (the query and key heads of the
//! fused product normalised, each head by its own weight row, and rotated as one array).
//! Logits must equal mlx-lm's on the tiny MLX checkpoints, in one pass and decoding token by
//! token, as the unfused code's do (models_mlx.rs).
//!
//! Its own test binary: the switch is a process environment variable, read at load.

use rmlx::{Array, Dtype};
use rmlx_lm::load::{load_model, LoadOptions};
use std::path::Path;
use support::{assert_logits_close_rel, mlx_reference};

mod support;

/// The tolerance of models_mlx.rs: summation order only.
fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_logits_close_rel(what, got, want, 1e-3);
}

fn ids(tokens: &[u32]) -> Array {
    Array::from_slice(tokens, &[1, tokens.len()]).unwrap()
}

fn logits(a: &Array) -> Vec<f32> {
    rmlx::ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

#[test]
fn fused_projections_match_mlx_on_the_cpu() {
    rmlx::init();
    // SAFETY: set before any other thread of this binary reads the environment (one test).
    unsafe { std::env::set_var("RMLX_FUSE", "1") };
    // llama: no q/k norms; qwen3 and gemma3: both (gemma3 with its (1 + w) weights and
    // sliding-window layers); the 4-bit ones also take the pre-norms into their products and
    // the gate/up product with SwiGLU as one op (composed on the CPU), in MLX's float product
    rmlx::ops::quantized::set_exact_decode(true);
    for name in [
        "llama",
        "qwen3",
        "gemma3",
        "llama_q4",
        "qwen3_q4",
        "gemma3_q4",
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name);
        let (model, _) = rmlx::with_device(rmlx::Device::cpu(), || {
            load_model(&dir, &LoadOptions::default())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (tokens, want, v) = mlx_reference(&dir);
        rmlx::with_device(rmlx::Device::cpu(), || {
            let mut caches = model.make_caches();
            let got = logits(&model.forward(&ids(&tokens), &mut caches).unwrap());
            close(&format!("{name} fused, one pass"), &got, &want);
            let mut caches = model.make_caches();
            let first = logits(&model.forward(&ids(&tokens[..3]), &mut caches).unwrap());
            close(
                &format!("{name} fused, prefill 0..3"),
                &first,
                &want[..3 * v],
            );
            for i in 3..tokens.len() {
                let step = logits(&model.forward(&ids(&tokens[i..i + 1]), &mut caches).unwrap());
                close(
                    &format!("{name} fused, step {i}"),
                    &step,
                    &want[i * v..(i + 1) * v],
                );
            }
        });
    }
}
