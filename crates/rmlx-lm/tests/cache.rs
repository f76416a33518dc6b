//! KV caches against host references (mlx-lm's `cache.py` semantics).

use rmlx::Array;
use rmlx_lm::cache::{causal_mask, load_prompt_cache, save_prompt_cache, AttentionMask, KvCache};
use std::collections::HashMap;

const B: usize = 2;
const H: usize = 2;
const D: usize = 4;

/// Keys for positions `start..start+l` whose every element names its position:
/// `pos * 1000 + b * 100 + h * 10 + d` (values are the negation).
fn kv(start: usize, l: usize, d: usize) -> (Array, Array) {
    let mut k = Vec::with_capacity(B * H * l * d);
    for b in 0..B {
        for h in 0..H {
            for p in start..start + l {
                for e in 0..d {
                    k.push((p * 1000 + b * 100 + h * 10 + e) as f32);
                }
            }
        }
    }
    let v: Vec<f32> = k.iter().map(|x| -x).collect();
    (
        Array::from_slice(&k, &[B, H, l, d]).unwrap(),
        Array::from_slice(&v, &[B, H, l, d]).unwrap(),
    )
}

/// The positions held along the sequence axis (checking every element agrees with them).
fn positions(keys: &Array, values: &Array) -> Vec<usize> {
    let s = keys.shape().to_vec();
    assert_eq!(s, values.shape());
    let (k, v) = (
        keys.to_vec::<f32>().unwrap(),
        values.to_vec::<f32>().unwrap(),
    );
    let (n, d) = (s[2], s[3]);
    let pos: Vec<usize> = (0..n)
        .map(|i| (k[i * d] / 1000.0).round() as usize)
        .collect();
    for b in 0..s[0] {
        for h in 0..s[1] {
            for (i, &p) in pos.iter().enumerate() {
                for e in 0..d {
                    let at = ((b * s[1] + h) * n + i) * d + e;
                    let want = (p * 1000 + b * 100 + h * 10 + e) as f32;
                    assert_eq!((k[at], v[at]), (want, -want), "b{b} h{h} slot {i} e{e}");
                }
            }
        }
    }
    pos
}

#[test]
fn standard_equals_concatenation_across_growth() {
    let mut c = KvCache::standard();
    let mut off = 0;
    for l in [5, 1, 1, 300, 1, 7, 1] {
        let (k, v) = kv(off, l, D);
        let (ks, vs) = c.update_and_fetch(&k, &v).unwrap();
        off += l;
        assert_eq!(c.offset(), off);
        assert_eq!(positions(&ks, &vs), (0..off).collect::<Vec<_>>());
    }
}

#[test]
fn trim_forgets_the_last_positions() {
    let mut c = KvCache::standard();
    let (k, v) = kv(0, 10, D);
    c.update_and_fetch(&k, &v).unwrap();
    assert!(c.is_trimmable());
    assert_eq!(c.trim(3), 3);
    assert_eq!(c.offset(), 7);
    let (k, v) = kv(7, 2, D);
    let (ks, vs) = c.update_and_fetch(&k, &v).unwrap();
    assert_eq!(positions(&ks, &vs), (0..9).collect::<Vec<_>>());
    assert_eq!(c.trim(100), 9);
    assert_eq!(c.offset(), 0);
}

#[test]
fn rotating_equals_standard_inside_the_window_and_keeps_the_first_tokens() {
    let (max, keep) = (8, 2);
    let mut r = KvCache::rotating(max, keep).unwrap();
    let mut s = KvCache::standard();
    let mut off = 0;
    // a 3-token prefill, then decode far past the window
    for l in std::iter::once(3).chain(std::iter::repeat_n(1, 20)) {
        let (k, v) = kv(off, l, D);
        let (rk, rv) = r.update_and_fetch(&k, &v).unwrap();
        let (sk, sv) = s.update_and_fetch(&k, &v).unwrap();
        off += l;
        let mut got = positions(&rk, &rv);
        if off <= max {
            assert_eq!(
                got,
                positions(&sk, &sv),
                "inside the window the caches agree"
            );
            assert_eq!(r.is_trimmable(), off < max);
        } else {
            got.sort_unstable();
            let want: Vec<usize> = (0..keep).chain(off - (max - keep)..off).collect();
            assert_eq!(got, want, "offset {off}");
            assert!(!r.is_trimmable());
            assert_eq!(r.trim(1), 0);
        }
        assert_eq!(r.size(), off.min(max));
    }
}

#[test]
fn rotating_prefill_longer_than_the_window_needs_an_explicit_mask() {
    let (max, keep) = (8, 0);
    let mut r = KvCache::rotating(max, keep).unwrap();
    let AttentionMask::Array(m) = r.mask(12, None).unwrap() else {
        panic!("expected an array mask")
    };
    assert_eq!(m.shape(), &[12, 12]);
    let m = m.to_vec::<u8>().unwrap();
    for i in 0..12 {
        for j in 0..12 {
            assert_eq!(m[i * 12 + j] != 0, j <= i && i - j < max, "q{i} k{j}");
        }
    }
    let (k, v) = kv(0, 12, D);
    let (rk, rv) = r.update_and_fetch(&k, &v).unwrap();
    assert_eq!(positions(&rk, &rv), (0..12).collect::<Vec<_>>());
    // the next decode step sees exactly the last `max` positions, without a mask
    assert!(matches!(r.mask(1, None).unwrap(), AttentionMask::None));
    let (k, v) = kv(12, 1, D);
    let (rk, rv) = r.update_and_fetch(&k, &v).unwrap();
    let mut got = positions(&rk, &rv);
    got.sort_unstable();
    assert_eq!(got, (5..13).collect::<Vec<_>>());
    // a second prefill on a full window: max - 1 old positions + the new ones, windowed mask
    let AttentionMask::Array(m) = r.mask(4, None).unwrap() else {
        panic!("expected an array mask")
    };
    assert_eq!(m.shape(), &[4, 11]);
    let (k, v) = kv(13, 4, D);
    let (rk, rv) = r.update_and_fetch(&k, &v).unwrap();
    assert_eq!(positions(&rk, &rv), (6..17).collect::<Vec<_>>());
}

#[test]
fn masks_follow_mlx_lm() {
    let mut c = KvCache::standard();
    assert!(matches!(c.mask(1, None).unwrap(), AttentionMask::None));
    assert!(matches!(c.mask(5, None).unwrap(), AttentionMask::Causal));
    assert!(
        matches!(c.mask(5, Some(8)).unwrap(), AttentionMask::Causal),
        "window not reached"
    );
    let (k, v) = kv(0, 3, D);
    c.update_and_fetch(&k, &v).unwrap();
    let AttentionMask::Array(m) = c.mask(3, Some(4)).unwrap() else {
        panic!("expected an array mask")
    };
    assert_eq!(
        m.to_vec::<u8>().unwrap(),
        causal_mask(3, 3, Some(4)).unwrap().to_vec::<u8>().unwrap()
    );
    // mlx-lm create_causal_mask(3, 3, 4): query 3+i sees keys (i..=3+i)
    let want: Vec<u8> = (0..3)
        .flat_map(|i| (0..6).map(move |j| (j <= 3 + i && 3 + i - j < 4) as u8))
        .collect();
    assert_eq!(m.to_vec::<u8>().unwrap(), want);
}

fn check_quantized(bits: usize, tol: f32) {
    let d = 64;
    let mut c = KvCache::quantized(bits, 64).unwrap();
    let mut all_k: Vec<Vec<f32>> = vec![Vec::new(); B * H];
    let mut off = 0;
    for (step, l) in [7usize, 1, 1, 260].into_iter().enumerate() {
        let n = B * H * l * d;
        let k: Vec<f32> = (0..n)
            .map(|i| (((i * 37 + step * 11) % 200) as f32 / 100.0 - 1.0) * 0.8)
            .collect();
        let ka = Array::from_slice(&k, &[B, H, l, d]).unwrap();
        let va = rmlx::ops::neg(&ka);
        for bh in 0..B * H {
            all_k[bh].extend_from_slice(&k[bh * l * d..(bh + 1) * l * d]);
        }
        let (ks, vs) = c.update_and_fetch(&ka, &va).unwrap();
        off += l;
        assert_eq!(ks.shape(), &[B, H, off, d]);
        let (ks, vs) = (ks.to_vec::<f32>().unwrap(), vs.to_vec::<f32>().unwrap());
        let want: Vec<f32> = all_k.iter().flatten().copied().collect();
        for i in 0..want.len() {
            assert!(
                (ks[i] - want[i]).abs() <= tol,
                "{bits}-bit key {i}: {} vs {}",
                ks[i],
                want[i]
            );
            assert!(
                (vs[i] + want[i]).abs() <= tol,
                "{bits}-bit value {i}: {} vs {}",
                vs[i],
                -want[i]
            );
        }
    }
    // 8-bit stores 1/4 of f32 plus scales/biases; 4-bit about 1/8
    assert!(c.nbytes() < B * H * 512 * d * 4 * 2 / (32 / bits) * 2);
}

#[test]
fn quantized_cache_is_within_quantization_tolerance() {
    // One step of the affine grid over a group range of at most 1.6: MLX's quantizer snaps the
    // grid to make one edge exact (the scale grows by up to 1/(2*q0)), and the far edge can then
    // round past 2^bits - 1 and clamp a full step away (MLX itself gives -0.76994 for -0.776).
    check_quantized(8, 1.6 / 255.0 * 1.01);
    check_quantized(4, 1.6 / 15.0 * 1.1);
}

#[test]
fn bad_arguments_are_errors() {
    assert!(KvCache::rotating(4, 4).is_err());
    assert!(KvCache::quantized(7, 64).is_err());
    let mut c = KvCache::standard();
    let (k, v) = kv(0, 2, D);
    c.update_and_fetch(&k, &v).unwrap();
    let k3 = Array::from_slice(&[0f32; 8], &[2, 4]).unwrap();
    assert!(c.update_and_fetch(&k3, &k3).is_err());
    let (k5, v5) = kv(2, 1, D + 1);
    assert!(c.update_and_fetch(&k5, &v5).is_err(), "head_dim changed");
    let mut q = KvCache::quantized(4, 64).unwrap();
    assert!(
        q.update_and_fetch(&k, &v).is_err(),
        "head_dim 4 is not a multiple of 64"
    );
}

#[test]
fn prompt_cache_round_trip() {
    let dir = std::env::temp_dir().join(format!("rmlx_prompt_cache_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache.safetensors");
    let mut caches = vec![
        KvCache::standard(),
        KvCache::rotating(8, 2).unwrap(),
        KvCache::quantized(8, 64).unwrap(),
    ];
    let dims = [D, D, 64];
    for (c, &d) in caches.iter_mut().zip(&dims) {
        for (s, l) in [(0, 6), (6, 1), (7, 1), (8, 1), (9, 1)] {
            let (k, v) = kv(s, l, d);
            c.update_and_fetch(&k, &v).unwrap();
        }
    }
    let meta: HashMap<String, String> = [("model".to_string(), "tiny".to_string())].into();
    save_prompt_cache(&path, &caches, &meta).unwrap();
    let (mut loaded, m) = load_prompt_cache(&path).unwrap();
    assert_eq!(m, meta);
    assert_eq!(loaded.len(), 3);
    for ((a, b), &d) in caches.iter_mut().zip(loaded.iter_mut()).zip(&dims) {
        assert_eq!(a.class_name(), b.class_name());
        assert_eq!(a.offset(), b.offset());
        let (k, v) = kv(10, 1, d);
        let (ka, va) = a.update_and_fetch(&k, &v).unwrap();
        let (kb, vb) = b.update_and_fetch(&k, &v).unwrap();
        assert_eq!(
            ka.to_vec::<f32>().unwrap(),
            kb.to_vec::<f32>().unwrap(),
            "{}",
            a.class_name()
        );
        assert_eq!(va.to_vec::<f32>().unwrap(), vb.to_vec::<f32>().unwrap());
    }
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(load_prompt_cache(&path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// Cost of one decode write at SmolLM2-135M's KV shape ([1, 3, 1, 64] f32, one layer) as the
/// cache grows: `cargo test --release -p rmlx-lm --test cache -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_write_cost_by_depth() {
    for depth in [256usize, 1024, 4096] {
        let mut c = KvCache::standard();
        let k = Array::from_slice(&vec![0.5f32; 3 * depth * 64], &[1, 3, depth, 64]).unwrap();
        c.update_and_fetch(&k, &k).unwrap().0.eval().unwrap();
        let one = Array::from_slice(&[0.25f32; 3 * 64], &[1, 3, 1, 64]).unwrap();
        let mut times = Vec::new();
        for _ in 0..41 {
            let t = std::time::Instant::now();
            let (ks, vs) = c.update_and_fetch(&one, &one).unwrap();
            rmlx::eval(&[ks, vs]).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "depth {depth}: median {:.1} us per K+V decode write",
            times[20]
        );
    }
}
