//! A tiny checkpoint with heads of 64 features (the smallest a quantized KV cache takes at
//! group 64; the committed fixtures' heads have 8 or 16), for the tests of quantized caches.

use rmlx::Array;

/// A 2-layer Llama (hidden 256, 4 heads of 64 over 2 KV heads, float32) whose q/k weights are
/// large enough for peaked attention (random-weight models' scores are near zero, so their
/// softmax is near uniform and hides attention mistakes), written as a Hugging Face checkpoint.
pub fn peaked_llama(dir: &std::path::Path) {
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
