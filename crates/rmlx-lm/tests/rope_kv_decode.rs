//! A decode step that writes its cache at a device-held position (the path CUDA graph replay
//! records) goes through `fast::rope_kv_write` where the q/k/v projection is fused, or (heads
//! of 128 features, or any with `RMLX_ROPE_KV_SDPA=1`, as here) through `fast::rope_kv_sdpa`,
//! the attention in the same op; on the CPU those ops compose. Here, on every CI run: such
//! steps give the logits of ordinary steps and leave the same keys and values in the cache, for
//! a plain, a q/k-normed and a MoE architecture (q/k/v fused on the CPU by `RMLX_FUSE=1`, the
//! attention by `RMLX_ROPE_KV_SDPA=1`: this file is its own process; the other tests' tiny
//! models, heads of 8 and 16 features, take `rope_kv_write`).

use rmlx::{ops, Array, Dtype};
use rmlx_lm::load::{load_model, LoadOptions};
use std::path::Path;

fn f32s(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

/// Positions `0..n` of axis 2 of a cache buffer.
fn prefix(a: &Array, n: usize) -> Vec<f32> {
    f32s(
        &ops::slice(
            a,
            &[0, 0, 0, 0],
            &[i64::MAX, i64::MAX, n as i64, i64::MAX],
            &[1, 1, 1, 1],
        )
        .unwrap(),
    )
}

#[test]
fn device_positioned_steps_equal_ordinary_steps() {
    std::env::set_var("RMLX_FUSE", "1");
    std::env::set_var("RMLX_ROPE_KV_SDPA", "1");
    rmlx::init();
    for arch in ["llama_q4", "qwen3_q4", "qwen3_moe_q4"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(arch);
        let (model, _) = load_model(&dir, &LoadOptions::default()).unwrap();
        let prompt: Vec<u32> = (1..=9).collect();
        let mut caches = model.make_caches();
        let p = Array::from_slice(&prompt, &[1, prompt.len()]).unwrap();
        model.forward_last(&p, &mut caches).unwrap().eval().unwrap();
        let (mut plain, mut placed) = (caches.clone(), caches);
        for step in 0..3u32 {
            let tok = Array::from_slice(&[10 + step], &[1, 1]).unwrap();
            let want = f32s(&model.forward_last(&tok, &mut plain).unwrap());
            let at = Array::from_slice(&[placed[0].offset() as i32], &[1]).unwrap();
            for c in placed.iter_mut() {
                assert!(c.set_position_array(Some(at.clone())));
            }
            let got = model.forward_last(&tok, &mut placed);
            for c in placed.iter_mut() {
                c.set_position_array(None);
            }
            let got = f32s(&got.unwrap());
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * scale,
                    "{arch} step {step} logit {i}: {g} against {w}"
                );
            }
            for (l, (a, b)) in plain.iter().zip(&placed).enumerate() {
                assert_eq!(a.offset(), b.offset(), "{arch} layer {l}: offsets");
                let n = a.offset();
                let ((ka, va), (kb, vb)) = (a.buffers().unwrap(), b.buffers().unwrap());
                let same =
                    |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same(&prefix(&ka, n), &prefix(&kb, n)),
                    "{arch} layer {l}: keys"
                );
                assert!(
                    same(&prefix(&va, n), &prefix(&vb, n)),
                    "{arch} layer {l}: values"
                );
            }
        }
    }
}
