//! `fast::quantized_kv_write`, a decode step's keys and values quantized into a quantized KV
//! cache at a device-held position (one kernel on a GPU): on every device, bit for bit, the
//! definition computed on the CPU (`quantize` of the new rows placed at the position, every
//! other position untouched), for every bit width, group size and float dtype; and its argument
//! checks.

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
