//! Attention over a quantized KV cache read in place (`models::quantized_attention`) against
//! the definition: `fast::scaled_dot_product_attention` over the same cache dequantized. Both
//! see the same quantized values, so they differ only by rounding order (float32: measured
//! ≤ 2.4e-7 of max(1, |o|), checked at 1e-5); bfloat16 activations round the scores and
//! probabilities (measured ≤ 5.9e-3, checked at 2e-2). And a model decoding on an 8-bit cache
//! stays near the same model on a standard cache (measured 5.7e-3 of the largest logit, checked
//! at 2e-2; the in-place attention with its scale halved gave 0.21). The models read a
//! quantized cache in place only when asked (`set_in_place`), as the model test does.

use rmlx::{fast, ops, Array, Dtype};
use rmlx_lm::cache::{AttentionMask, Fetched, KvCache};
use rmlx_lm::models::quantized_attention::{quantized_sdpa, set_in_place};

#[path = "support/peaked_llama.rs"]
mod peaked_llama;
#[allow(dead_code)] // this binary uses one of the shared helpers
mod support;
use peaked_llama::peaked_llama;
use support::max_abs_diff;

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0) * 0.9)
        .collect()
}

fn f32s(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

/// One sequence of steps (`(l, window)`) through two copies of a quantized cache, comparing
/// the in-place attention with the definition at every step.
fn check(bits: usize, b: usize, hq: usize, hkv: usize, d: usize, t: Dtype, tol: f32) {
    let mut packed = KvCache::quantized(bits, 64).unwrap();
    let mut dense = packed.clone();
    let scale = 1.0 / (d as f32).sqrt();
    for (step, (l, window)) in [
        (7usize, None),
        (1, None),
        (1, None),
        (5, None),
        (3, Some(6)),
    ]
    .into_iter()
    .enumerate()
    {
        let arr = |n: usize, h: usize, seed: usize| {
            let a = Array::from_slice(&data(b * h * n * d, seed), &[b, h, n, d]).unwrap();
            ops::astype(&a, t)
        };
        let (q, k, v) = (
            arr(l, hq, 3 * step),
            arr(l, hkv, 3 * step + 1),
            arr(l, hkv, 3 * step + 2),
        );
        let mask = packed.mask(l, window).unwrap();
        let Fetched::Packed(kv) = packed.update_and_fetch_packed(&k, &v).unwrap() else {
            panic!("a quantized cache gives its packed rows")
        };
        let got = quantized_sdpa(&q, &kv, scale, &mask).unwrap();
        let (kd, vd) = dense.update_and_fetch(&k, &v).unwrap();
        let m = match &mask {
            AttentionMask::None => fast::Mask::None,
            AttentionMask::Causal => fast::Mask::Causal,
            AttentionMask::Array(a) => fast::Mask::Array(a),
        };
        let want = fast::scaled_dot_product_attention(&q, &kd, &vd, scale, m).unwrap();
        assert_eq!(got.shape(), want.shape());
        assert_eq!(got.dtype(), want.dtype());
        let (g, w) = (f32s(&got), f32s(&want));
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(
            worst <= tol,
            "{bits}-bit, b {b} hq {hq} hkv {hkv} d {d} {t}, step {step} (l {l}, {mask:?}): worst {worst:e}"
        );
    }
}

#[test]
fn quantized_attention_equals_attention_over_the_dequantized_cache() {
    // 4 query heads per KV head (Llama-8B's grouping), 1 (MHA), a batch of 2, D of 64 and 128;
    // the steps cross a prefill, decode steps, a causal chunk with an offset and a window mask
    check(8, 1, 8, 2, 64, Dtype::F32, 1e-5);
    check(4, 2, 4, 4, 128, Dtype::F32, 1e-5);
    check(4, 1, 6, 2, 64, Dtype::F32, 1e-5);
    check(8, 1, 8, 2, 128, Dtype::BF16, 2e-2);
}

#[test]
fn bad_shapes_are_errors() {
    let mut c = KvCache::quantized(8, 64).unwrap();
    let k = Array::from_slice(&data(2 * 3 * 64, 1), &[1, 2, 3, 64]).unwrap();
    let Fetched::Packed(kv) = c.update_and_fetch_packed(&k, &k).unwrap() else {
        panic!("packed")
    };
    // 3 query heads do not group over 2 KV heads
    let q = Array::from_slice(&data(3 * 64, 2), &[1, 3, 1, 64]).unwrap();
    let e = quantized_sdpa(&q, &kv, 0.125, &AttentionMask::None).unwrap_err();
    assert!(e.to_string().contains("quantized_sdpa"), "{e}");
    let q3 = Array::from_slice(&data(4 * 64, 2), &[4, 1, 64]).unwrap();
    assert!(quantized_sdpa(&q3, &kv, 0.125, &AttentionMask::None).is_err());
}

/// A model decoding on an 8-bit cache (attention read in place) stays within the cache's
/// quantization error of the same model on a standard cache, prefill and decode steps alike.
#[test]
fn a_model_decodes_on_an_8_bit_cache_near_a_standard_one() {
    set_in_place(true); // opt-in (process-wide: this binary's other tests call the op directly)
    let dir = std::env::temp_dir().join(format!("rmlx_qattn_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    peaked_llama(&dir);
    let (model, _) = rmlx_lm::load::load_model(&dir, &Default::default()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let tokens: Vec<u32> = vec![5, 17, 42, 7, 99, 3, 250, 11, 64, 128];
    let ids = |t: &[u32]| Array::from_slice(t, &[1, t.len()]).unwrap();
    let mut standard = model.make_caches();
    let mut quantized: Vec<KvCache> = (0..model.num_layers())
        .map(|_| KvCache::quantized(8, 64).unwrap())
        .collect();
    let mut worst = 0.0f32;
    let mut run = |span: &[u32]| {
        let a = f32s(&model.forward(&ids(span), &mut standard).unwrap());
        let b = f32s(&model.forward(&ids(span), &mut quantized).unwrap());
        let top = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs() / top);
        }
    };
    run(&tokens[..6]);
    for i in 6..tokens.len() {
        run(&tokens[i..i + 1]);
    }
    assert!(worst > 0.0, "the 8-bit cache changed nothing: was it used?");
    assert!(
        worst < 2e-2,
        "8-bit cache logits off by {worst:e} of the largest"
    );
}

/// Positions `0..n` of axis 2 of a cache buffer, as bits (codes are u32, scales and biases
/// float).
fn prefix_bits(a: &Array, n: usize) -> Vec<u32> {
    let p = ops::slice(
        a,
        &[0, 0, 0, 0],
        &[i64::MAX, i64::MAX, n as i64, i64::MAX],
        &[1, 1, 1, 1],
    )
    .unwrap();
    match p.dtype() {
        Dtype::U32 => p.to_vec::<u32>().unwrap(),
        _ => f32s(&p).iter().map(|x| x.to_bits()).collect(),
    }
}

/// A decode step writing a quantized cache at a device-held position (the step CUDA graph
/// replay records: the packed rows written at the position, attention over the whole buffers
/// under the position mask) gives an ordinary step's logits and writes the same packed rows,
/// 4- and 8-bit, with the attention dequantized or read in place (whichever this binary's
/// process-wide switch says when it runs).
#[test]
fn device_positioned_steps_on_a_quantized_cache_equal_ordinary_steps() {
    let dir = std::env::temp_dir().join(format!("rmlx_qpos_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    peaked_llama(&dir);
    let (model, _) = rmlx_lm::load::load_model(&dir, &Default::default()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let ids = |t: &[u32]| Array::from_slice(t, &[1, t.len()]).unwrap();
    for bits in [4, 8] {
        let mut plain: Vec<KvCache> = (0..model.num_layers())
            .map(|_| KvCache::quantized(bits, 64).unwrap())
            .collect();
        model
            .forward_last(&ids(&[5, 17, 42, 7, 99, 3]), &mut plain)
            .unwrap()
            .eval()
            .unwrap();
        let mut placed = plain.clone();
        for (step, tok) in [250u32, 11, 64].into_iter().enumerate() {
            let want = f32s(&model.forward_last(&ids(&[tok]), &mut plain).unwrap());
            let at = Array::from_slice(&[placed[0].offset() as i32], &[1]).unwrap();
            for c in placed.iter_mut() {
                assert!(c.set_position_array(Some(at.clone())));
                assert_eq!(c.capacity(), 256, "a quantized cache's capacity");
            }
            let got = model.forward_last(&ids(&[tok]), &mut placed);
            for c in placed.iter_mut() {
                c.set_position_array(None);
            }
            let (worst, top) = max_abs_diff(&f32s(&got.unwrap()), &want);
            assert!(
                worst <= 1e-4 * top,
                "{bits}-bit step {step}: logits off by {worst} (largest {top})"
            );
            for (l, (a, b)) in plain.iter().zip(&placed).enumerate() {
                assert_eq!(a.offset(), b.offset(), "{bits}-bit layer {l}: offsets");
                let (sa, sb) = (a.storage(), b.storage());
                assert_eq!(sa.len(), 6, "codes, scales and biases of keys and values");
                for (i, (x, y)) in sa.iter().zip(&sb).enumerate() {
                    assert_eq!(
                        prefix_bits(x, a.offset()),
                        prefix_bits(y, a.offset()),
                        "{bits}-bit step {step} layer {l}: buffer {i}"
                    );
                }
            }
        }
    }
}

/// A device-positioned write goes where the device-held position says (here 5, past the 3
/// positions written), needs a buffer with room (a clear error otherwise), and the mask of
/// such a step spans the whole buffer up to the position.
#[test]
fn device_positioned_quantized_writes_go_to_the_position() {
    let kv = |n: usize| Array::from_slice(&data(2 * n * 64, n), &[1, 2, n, 64]).unwrap();
    let at = Array::from_slice(&[5i32], &[1]).unwrap();
    let mut c = KvCache::quantized(8, 64).unwrap();
    c.set_position_array(Some(at.clone()));
    let e = c.update_and_fetch(&kv(1), &kv(1)).unwrap_err();
    assert!(e.to_string().contains("device-positioned"), "{e}");
    c.set_position_array(None);
    c.update_and_fetch(&kv(3), &kv(3)).unwrap();
    c.set_position_array(Some(at));
    assert!(c
        .update_and_fetch(&kv(2), &kv(2))
        .unwrap_err()
        .to_string()
        .contains("one position"));
    let AttentionMask::Array(m) = c.mask(1, None).unwrap() else {
        panic!("a device-positioned step's mask is an array")
    };
    assert_eq!(m.shape(), &[1, 256]);
    let keep = ops::astype(&m, Dtype::F32).to_vec::<f32>().unwrap();
    assert!(keep[..6].iter().all(|&x| x == 1.0) && keep[6..].iter().all(|&x| x == 0.0));
    let (k, v) = c.update_and_fetch(&kv(1), &kv(1)).unwrap();
    assert_eq!((k.shape()[2], v.shape()[2], c.offset()), (256, 256, 4));
    // codes of key head 0: positions 3 and 4 untouched (zeros), 5 written
    let codes = c.storage()[0].to_vec::<u32>().unwrap();
    let row = |p: usize| &codes[p * 16..(p + 1) * 16];
    assert!(row(3).iter().chain(row(4)).all(|&w| w == 0));
    assert!(row(5).iter().any(|&w| w != 0));
    // the dequantized keys at 5 are the new key (8-bit: within half a step of its group)
    let k5 = f32s(&ops::slice(&k, &[0, 0, 5, 0], &[1, 1, 6, 64], &[1, 1, 1, 1]).unwrap());
    let want = &data(2 * 64, 1)[..64];
    assert!(k5.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-2));
    c.advance(252).unwrap();
    assert!(c.advance(1).is_err(), "past the capacity");
}
