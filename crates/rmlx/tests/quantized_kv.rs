//! The quantized KV cache's decode ops, one kernel each on a GPU:
//! - `fast::quantized_kv_write`, a decode step's keys and values quantized into the cache at a
//!   device-held position: on every device, bit for bit, the definition computed on the CPU
//!   (`quantize` of the new rows placed at the position, every other position untouched), for
//!   every bit width, group size and float dtype;
//! - `fast::quantized_sdpa_decode`, attention over the cache's first `len` positions read in
//!   place: on every device against the definition on the CPU (the positions dequantized, then
//!   attention over them);
//!
//! and their argument checks.

mod common;

use common::det_array as arr;
use common::for_each_device;
use rmlx::fast::{self, PackedRows};
use rmlx::{ops, Array, Device, Dtype};

/// Bit patterns: u32 codes as they are, floats widened to f32 (exact for halves).
fn bits(a: &Array) -> Vec<u32> {
    match a.dtype() {
        Dtype::U32 => a.to_vec::<u32>().unwrap(),
        _ => ops::astype(a, Dtype::F32)
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
    }
}

/// Packed rows of `x [B, H, S, D]` (what a quantized cache holds).
fn packed(x: &Array, gs: usize, b: usize) -> PackedRows {
    ops::quantize(x, gs, b).unwrap()
}

/// The definition on the CPU: `x`'s quantized rows written at position `p` (clamped) of `buf`.
fn expected(buf: &PackedRows, x: &Array, p: i64, gs: usize, b: usize) -> [Vec<u32>; 3] {
    rmlx::with_device(Device::cpu(), || {
        let s = buf.0.shape()[2] as i64;
        let p = p.clamp(0, s - 1);
        let (q, sc, bi) = ops::quantize(x, gs, b).unwrap();
        let put = |a: &Array, n: &Array| {
            bits(&ops::slice_update(a, n, &[0, 0, p, 0], &[1, 1, 1, 1]).unwrap())
        };
        [put(&buf.0, &q), put(&buf.1, &sc), put(&buf.2, &bi)]
    })
}

#[test]
fn quantized_kv_write_equals_quantize_then_write() {
    for_each_device(|dev| {
        for t in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for bits_n in [2, 3, 4, 5, 6, 8] {
                for gs in [32, 64, 128] {
                    // keys and values of different head sizes where the group allows it
                    let (dk, dv) = if gs == 128 { (128, 256) } else { (128, 64) };
                    let (b, h, s) = (2, 3, 5);
                    let seed = (bits_n * 131 + gs) as u32;
                    let kc = packed(&arr(&[b, h, s, dk], seed, 2.0, t), gs, bits_n);
                    let vc = packed(&arr(&[b, h, s, dv], seed + 1, 2.0, t), gs, bits_n);
                    let k = arr(&[b, h, 1, dk], seed + 2, 3.0, t);
                    let v = arr(&[b, h, 1, dv], seed + 3, 0.5, t);
                    // a position inside, and one past the end (clamped to the last)
                    for p in [3i32, 9] {
                        let pos = Array::from_slice(&[p], &[1]).unwrap();
                        let (kw, vw) =
                            fast::quantized_kv_write(&k, &v, &pos, &kc, &vc, gs, bits_n).unwrap();
                        let want_k = expected(&kc, &k, p as i64, gs, bits_n);
                        let want_v = expected(&vc, &v, p as i64, gs, bits_n);
                        let got = [&kw.0, &kw.1, &kw.2, &vw.0, &vw.1, &vw.2];
                        let want = want_k.iter().chain(&want_v);
                        for (i, (g, w)) in got.iter().zip(want).enumerate() {
                            assert!(
                                bits(g) == *w,
                                "{dev:?} {t} {bits_n}-bit group {gs} pos {p}: buffer {i} differs"
                            );
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn quantized_kv_write_checks_its_arguments() {
    let t = Dtype::F32;
    let kc = packed(&arr(&[1, 2, 4, 64], 1, 1.0, t), 64, 8);
    let k = arr(&[1, 2, 1, 64], 2, 1.0, t);
    let pos = Array::from_slice(&[1i32], &[1]).unwrap();
    let err = |r: rmlx::Result<(PackedRows, PackedRows)>| r.unwrap_err().to_string();
    // a group size the head does not split into
    let k96 = arr(&[1, 2, 1, 96], 3, 1.0, t);
    let e = err(fast::quantized_kv_write(&k96, &k, &pos, &kc, &kc, 64, 8));
    assert!(e.contains("head_dim 96"), "{e}");
    // buffers quantized at another bit width than asked
    let e = err(fast::quantized_kv_write(&k, &k, &pos, &kc, &kc, 64, 4));
    assert!(e.contains("codes"), "{e}");
    // two new positions, not one
    let k2 = arr(&[1, 2, 2, 64], 4, 1.0, t);
    let e = err(fast::quantized_kv_write(&k2, &k, &pos, &kc, &kc, 64, 8));
    assert!(e.contains("[B, H, 1, D]"), "{e}");
    // a float position, and unsupported bits
    let fpos = Array::from_slice(&[1.0f32], &[1]).unwrap();
    let e = err(fast::quantized_kv_write(&k, &k, &fpos, &kc, &kc, 64, 8));
    assert!(e.contains("pos"), "{e}");
    let e = err(fast::quantized_kv_write(&k, &k, &pos, &kc, &kc, 64, 7));
    assert!(e.contains("bits"), "{e}");
    // keys and values of different capacities
    let vc = packed(&arr(&[1, 2, 5, 64], 5, 1.0, t), 64, 8);
    let e = err(fast::quantized_kv_write(&k, &k, &pos, &kc, &vc, 64, 8));
    assert!(e.contains("different numbers of positions"), "{e}");
}

/// The definition on the CPU: positions `0..n` of both caches dequantized, then attention.
fn attention_over(
    q: &Array,
    kc: &PackedRows,
    vc: &PackedRows,
    n: usize,
    gs: usize,
    b: usize,
) -> Vec<f32> {
    rmlx::with_device(Device::cpu(), || {
        let first = |p: &PackedRows| {
            let cut = |a: &Array| {
                ops::slice(
                    a,
                    &[0, 0, 0, 0],
                    &[i64::MAX, i64::MAX, n as i64, i64::MAX],
                    &[1, 1, 1, 1],
                )
                .unwrap()
            };
            ops::dequantize(&cut(&p.0), &cut(&p.1), &cut(&p.2), gs, b).unwrap()
        };
        let scale = 1.0 / (q.shape()[3] as f32).sqrt();
        let o =
            fast::scaled_dot_product_attention(q, &first(kc), &first(vc), scale, fast::Mask::None)
                .unwrap();
        ops::astype(&o, Dtype::F32).to_vec::<f32>().unwrap()
    })
}

#[test]
fn quantized_sdpa_decode_equals_attention_over_the_dequantized_cache() {
    // (batch, query heads, KV heads, D, group, bits): the 8B's grouping (4 per KV head), one
    // per KV head, Qwen3's 8, D of 64; 3 bits (no kernel: composed on every device)
    let cases = [
        (1, 8, 2, 128, 64, 8),
        (2, 4, 4, 128, 32, 4),
        (1, 16, 2, 128, 128, 4),
        (1, 6, 2, 64, 64, 8),
        (1, 4, 2, 64, 32, 3),
    ];
    for_each_device(|dev| {
        for t in [Dtype::F32, Dtype::BF16] {
            for (i, &(b, hq, hkv, d, gs, bits_n)) in cases.iter().enumerate() {
                let s = 700;
                let seed = 17 * i as u32;
                let kc = packed(&arr(&[b, hkv, s, d], seed, 2.0, t), gs, bits_n);
                let vc = packed(&arr(&[b, hkv, s, d], seed + 1, 1.0, t), gs, bits_n);
                let q = arr(&[b, hq, 1, d], seed + 2, 2.0, t);
                // one key, a few, all (several key splits on a GPU), past the end (clamped)
                for n in [1usize, 77, 700, 900] {
                    let len = Array::from_slice(&[n as i32], &[1]).unwrap();
                    let scale = 1.0 / (d as f32).sqrt();
                    let got =
                        fast::quantized_sdpa_decode(&q, &kc, &vc, &len, scale, gs, bits_n).unwrap();
                    assert_eq!(got.shape(), &[b, hq, 1, d]);
                    assert_eq!(got.dtype(), t);
                    let got = ops::astype(&got, Dtype::F32).to_vec::<f32>().unwrap();
                    let want = attention_over(&q, &kc, &vc, n.min(s), gs, bits_n);
                    // bf16: the definition rounds each dequantized value to bf16, the kernel not
                    let tol = if t == Dtype::F32 { 1e-4 } else { 3e-2 };
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                        .fold(0.0f32, f32::max);
                    assert!(
                        worst <= tol,
                        "{dev:?} {t} case {i} ({bits_n}-bit, group {gs}, D {d}) len {n}: worst {worst:e}"
                    );
                }
            }
        }
    });
}

#[test]
fn quantized_sdpa_decode_checks_its_arguments() {
    let t = Dtype::F32;
    let kc = packed(&arr(&[1, 2, 4, 64], 1, 1.0, t), 64, 8);
    let len = Array::from_slice(&[2i32], &[1]).unwrap();
    let err = |r: rmlx::Result<Array>| r.unwrap_err().to_string();
    // 3 query heads over 2 KV heads
    let q3 = arr(&[1, 3, 1, 64], 2, 1.0, t);
    let e = err(fast::quantized_sdpa_decode(&q3, &kc, &kc, &len, 0.1, 64, 8));
    assert!(e.contains("does not group"), "{e}");
    // two queries per head
    let q2 = arr(&[1, 2, 2, 64], 3, 1.0, t);
    let e = err(fast::quantized_sdpa_decode(&q2, &kc, &kc, &len, 0.1, 64, 8));
    assert!(e.contains("[B, Hq, 1, D]"), "{e}");
    // values of another batch than the keys
    let vc = packed(&arr(&[2, 2, 4, 64], 4, 1.0, t), 64, 8);
    let q = arr(&[1, 2, 1, 64], 5, 1.0, t);
    let e = err(fast::quantized_sdpa_decode(&q, &kc, &vc, &len, 0.1, 64, 8));
    assert!(e.contains("values"), "{e}");
    // a float length
    let fl = Array::from_slice(&[2.0f32], &[1]).unwrap();
    let e = err(fast::quantized_sdpa_decode(&q, &kc, &kc, &fl, 0.1, 64, 8));
    assert!(e.contains("len"), "{e}");
}
