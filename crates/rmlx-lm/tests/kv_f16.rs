//! An f16 KV cache under f32 activations on the CPU (`rmlx_lm::cache::set_cpu_kv_f16`, off by
//! default), in a binary of its own: the switch is process-wide, and the other model tests hold
//! rmlx to MLX's f32 cache at 1e-3.
//!
//! Tolerance: rounding keys and values to f16 moves each by at most 2^-11 of itself (~4.9e-4);
//! through the tiny float32 fixtures that gave up to ~1.0e-3 of max(1, max|logit|) (qwen2,
//! against 1e-5 with an f32 cache). The check is 5e-3, 5x that, and far below what a wrong
//! cache gives (a lost or misplaced position moves logits by the order of the logits).

use rmlx::{Array, Dtype};
use rmlx_lm::cache::set_cpu_kv_f16;
use rmlx_lm::load::{load_model, LoadOptions};
use std::path::Path;
use support::{assert_logits_close_rel, mlx_reference};

mod support;

fn logits_vec(a: &Array) -> Vec<f32> {
    rmlx::ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

#[test]
fn f16_cache_decodes_within_tolerance_of_mlx() {
    set_cpu_kv_f16(true);
    for name in ["llama", "qwen2", "qwen3", "gemma3"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name);
        let model = load_model(&dir, &LoadOptions::default()).unwrap().0;
        let (tokens, want, v) = mlx_reference(&dir);
        let ids = |t: &[u32]| Array::from_slice(t, &[1, t.len()]).unwrap();
        // a 3-token prefill, then one token at a time (gemma3's rotating caches wrap)
        let mut caches = model.make_caches();
        let first = logits_vec(&model.forward(&ids(&tokens[..3]), &mut caches).unwrap());
        assert_logits_close_rel(&format!("{name} prefill"), &first, &want[..3 * v], 5e-3);
        for i in 3..tokens.len() {
            let step = logits_vec(&model.forward(&ids(&tokens[i..i + 1]), &mut caches).unwrap());
            let what = format!("{name} decode step {i}");
            assert_logits_close_rel(&what, &step, &want[i * v..(i + 1) * v], 5e-3);
        }
        // what each cache holds (f32 keys/values would be stored as they come)
        for c in &caches {
            assert_eq!(c.storage_dtype(Dtype::F32), Dtype::F16, "{name}");
        }
    }
}
