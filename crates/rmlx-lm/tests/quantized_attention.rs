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

/// A 2-layer Llama (hidden 256, 4 heads of 64 over 2 KV heads, float32) whose q/k weights are
/// large enough for peaked attention (random-weight models' scores are near zero, so their
/// softmax is near uniform and hides attention mistakes), written as a Hugging Face checkpoint.
fn peaked_llama(dir: &std::path::Path) {
    let (h, kv, inter, vocab, layers) = (256usize, 128usize, 512usize, 300usize, 2usize);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut mat = |shape: &[usize], amp: f32| -> Array {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * amp
            })
            .collect();
        Array::from_slice(&v, shape).unwrap()
    };
    let ones = |n: usize| Array::from_slice(&vec![1.0f32; n], &[n]).unwrap();
    let mut t: Vec<(String, Array)> = vec![
        ("model.embed_tokens.weight".into(), mat(&[vocab, h], 1.0)),
        ("model.norm.weight".into(), ones(h)),
    ];
    for i in 0..layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        t.push((p("input_layernorm.weight"), ones(h)));
        t.push((p("post_attention_layernorm.weight"), ones(h)));
        t.push((p("self_attn.q_proj.weight"), mat(&[h, h], 0.15)));
        t.push((p("self_attn.k_proj.weight"), mat(&[kv, h], 0.15)));
        t.push((p("self_attn.v_proj.weight"), mat(&[kv, h], 0.1)));
        t.push((p("self_attn.o_proj.weight"), mat(&[h, h], 0.1)));
        t.push((p("mlp.gate_proj.weight"), mat(&[inter, h], 0.1)));
        t.push((p("mlp.up_proj.weight"), mat(&[inter, h], 0.1)));
        t.push((p("mlp.down_proj.weight"), mat(&[h, inter], 0.1)));
    }
    let refs: Vec<(&str, &Array)> = t.iter().map(|(n, a)| (n.as_str(), a)).collect();
    rmlx::io::save_safetensors(dir.join("model.safetensors"), &refs, &Default::default()).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 300,
            "tie_word_embeddings": true, "torch_dtype": "float32"}"#,
    )
    .unwrap();
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
