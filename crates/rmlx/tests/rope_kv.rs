//! `fast::rope_kv_write`, a decode step's RoPE and KV cache write as one multi-output op: on
//! every device against its own definition (RoPE of the q and k heads, the rotated k and the v
//! written at each row's position, everything else of the caches untouched), the GPU kernel
//! bit for bit against the composition, and its argument checks.

mod common;

use common::for_each_device;
use rmlx::fast::{self, RopeSpec};
use rmlx::{ops, Array, Dtype};

use common::det_array as arr;

fn f32s(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

fn bits(a: &Array) -> Vec<u32> {
    f32s(a).iter().map(|v| v.to_bits()).collect()
}

/// Heads `a..z` of `qkv [B, 1, H, D]` as `[B, z - a, 1, D]`.
fn heads(qkv: &Array, a: usize, z: usize) -> Array {
    let s = ops::slice(
        qkv,
        &[0, 0, a as i64, 0],
        &[i64::MAX, 1, z as i64, i64::MAX],
        &[1, 1, 1, 1],
    )
    .unwrap();
    ops::transpose(&s, Some(&[0, 2, 1, 3])).unwrap()
}

struct Case {
    b: usize,
    nq: usize,
    nkv: usize,
    d: usize,
    dims: usize,
    dtype: Dtype,
    traditional: bool,
    freqs: bool,
    norm: bool,
    /// one cache pair per row (else one pair of batch B)
    per_row: bool,
    /// positions per row (one entry: all rows); past a cache's end clamps to its last slot
    pos: Vec<i32>,
    caps: Vec<usize>,
}

impl Case {
    /// The projection's heads, the q/k norm weight and the frequencies a case runs with.
    fn inputs(&self) -> (Array, Array, Array) {
        let h = self.nq + 2 * self.nkv;
        let fr: Vec<f32> = (0..self.dims / 2).map(|i| 1.5 + i as f32 * 7.0).collect();
        (
            arr(&[self.b, 1, h, self.d], 3, 2.0, self.dtype),
            arr(&[self.nq + self.nkv, self.d], 5, 1.5, self.dtype),
            Array::from_slice(&fr, &[self.dims / 2]).unwrap(),
        )
    }

    /// The rotation, with the frequencies `fr` where the case gives them.
    fn spec<'a>(&self, fr: &'a Array) -> RopeSpec<'a> {
        RopeSpec {
            dims: self.dims,
            traditional: self.traditional,
            base: (!self.freqs).then_some(10_000.0),
            scale: 0.5,
            freqs: self.freqs.then_some(fr),
        }
    }

    /// The case's caches before the write: a pair per row `[1, ..]` or one of batch B.
    fn caches(&self) -> Vec<(Array, Array)> {
        let cb = if self.per_row { 1 } else { self.b };
        self.caps
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                (
                    arr(&[cb, self.nkv, s, self.d], 10 + i as u32, 1.0, self.dtype),
                    arr(&[cb, self.nkv, s, self.d], 30 + i as u32, 1.0, self.dtype),
                )
            })
            .collect()
    }
}

/// Runs one case through `rope_kv_write` and checks it against its definition; returns the
/// outputs (q, then each cache's keys and values) for comparisons across paths.
fn run(c: &Case, fallback: bool) -> Vec<Array> {
    let h = c.nq + 2 * c.nkv;
    let (qkv, w, fr) = c.inputs();
    let spec = c.spec(&fr);
    let cb = if c.per_row { 1 } else { c.b };
    let caches = c.caches();
    let before: Vec<(Vec<f32>, Vec<f32>)> =
        caches.iter().map(|(k, v)| (f32s(k), f32s(v))).collect();
    let pos = Array::from_slice(&c.pos, &[c.pos.len()]).unwrap();
    let norm = c.norm.then_some((&w, 1e-5f32));
    let (q, written) = if fallback {
        fast::rope_kv_write_fallback(&qkv, c.nq, norm, spec, &pos, &caches).unwrap()
    } else {
        fast::rope_kv_write(&qkv, c.nq, norm, spec, &pos, &caches).unwrap()
    };
    drop(caches);
    // the definition: q and k heads through rope (or rms_norm_rope) together
    let qk = heads(&qkv, 0, c.nq + c.nkv);
    let full = spec.rotate(&qk, norm, &pos).unwrap();
    // heads a..z of the rotated [B, H, 1, D]
    let part = |a: usize, z: usize| {
        ops::slice(
            &full,
            &[0, a as i64, 0, 0],
            &[i64::MAX, z as i64, 1, i64::MAX],
            &[1, 1, 1, 1],
        )
        .unwrap()
    };
    let want_q = part(0, c.nq);
    assert_eq!(q.shape(), &[c.b, c.nq, 1, c.d]);
    assert_eq!(bits(&q), bits(&want_q), "q");
    let want_k = part(c.nq, c.nq + c.nkv);
    let (wk, wv) = (f32s(&want_k), f32s(&heads(&qkv, c.nq + c.nkv, h)));
    let row = c.d;
    let mut outs = vec![q.clone()];
    for (ci, (k, v)) in written.iter().enumerate() {
        let s = c.caps[ci];
        let (gk, gv) = (f32s(k), f32s(v));
        let (mut ek, mut ev) = before[ci].clone();
        for bb in 0..cb {
            let r = if c.per_row { ci } else { bb };
            let p = c.pos[if c.pos.len() == 1 { 0 } else { r }].clamp(0, s as i32 - 1) as usize;
            for hh in 0..c.nkv {
                let dst = ((bb * c.nkv + hh) * s + p) * row;
                let src = (r * c.nkv + hh) * row;
                ek[dst..dst + row].copy_from_slice(&wk[src..src + row]);
                ev[dst..dst + row].copy_from_slice(&wv[src..src + row]);
            }
        }
        let eq = |g: &[f32], e: &[f32]| g.iter().zip(e).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(eq(&gk, &ek), "keys of cache {ci}");
        assert!(eq(&gv, &ev), "values of cache {ci}");
        outs.push(k.clone());
        outs.push(v.clone());
    }
    outs
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (dtype, norm, freqs, traditional) in [
        (Dtype::F32, false, false, false),
        (Dtype::BF16, true, false, false),
        (Dtype::BF16, false, true, false),
        (Dtype::F16, true, true, true),
    ] {
        // one cache of batch 2, one position for both rows
        v.push(Case {
            b: 2,
            nq: 4,
            nkv: 2,
            d: 64,
            dims: 64,
            dtype,
            traditional,
            freqs,
            norm,
            per_row: false,
            pos: vec![5],
            caps: vec![9],
        });
        // a cache per row, each at its own position (row 2 past its end: clamped), a partial
        // rotation (features past `dims` pass through), head_dim 128
        v.push(Case {
            b: 3,
            nq: 8,
            nkv: 2,
            d: 128,
            dims: 96,
            dtype,
            traditional,
            freqs,
            norm,
            per_row: true,
            pos: vec![0, 17, 40],
            caps: vec![4, 20, 33],
        });
    }
    v
}

#[test]
fn rope_kv_write_equals_its_definition() {
    for_each_device(|dev| {
        for c in cases() {
            let fused = run(&c, false);
            let composed = run(&c, true);
            for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
                assert_eq!(
                    bits(a),
                    bits(b),
                    "output {i} on {dev:?}: kernel and composition differ"
                );
            }
        }
    });
}

/// `rope_kv_sdpa` against its definition, `rope_kv_write` and then `sdpa_rows` over positions
/// `0..=pos` of each row's cache: the caches bit for bit, the attention within rounding (on a
/// GPU one kernel folds the new key in from registers, in its own order). The cases cross the
/// kernel's key splits: the position at a split's first key, in a later split, past a cache's
/// end (clamped), and 8 query heads per KV head.
#[test]
fn rope_kv_sdpa_equals_write_then_attention() {
    let mut all = cases();
    for (b, nq, nkv, pos, caps, per_row) in [
        (1, 8, 1, vec![100], vec![300], true),
        (1, 4, 2, vec![299], vec![300], true),
        (1, 4, 2, vec![130], vec![700], true),
        (2, 8, 2, vec![0, 400], vec![600, 401], true),
        (2, 4, 1, vec![77], vec![90], false),
    ] {
        for (dtype, norm) in [(Dtype::BF16, true), (Dtype::F32, false)] {
            all.push(Case {
                b,
                nq,
                nkv,
                d: 128,
                dims: 128,
                dtype,
                traditional: false,
                freqs: false,
                norm,
                per_row,
                pos: pos.clone(),
                caps: caps.clone(),
            });
        }
    }
    for_each_device(|dev| {
        for c in &all {
            let (qkv, w, fr) = c.inputs();
            let spec = c.spec(&fr);
            let caches = || c.caches();
            let pos = Array::from_slice(&c.pos, &[c.pos.len()]).unwrap();
            let norm = c.norm.then_some((&w, 1e-5f32));
            let scale = 1.0 / (c.d as f32).sqrt();
            let (o, written) =
                fast::rope_kv_sdpa(&qkv, c.nq, norm, spec, &pos, &caches(), scale).unwrap();
            let (q, want) = fast::rope_kv_write(&qkv, c.nq, norm, spec, &pos, &caches()).unwrap();
            // the definition's attention: row r over its cache (or entry r of the one cache)
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            let mut lens = Vec::new();
            for r in 0..c.b {
                let (ci, e) = if c.per_row { (r, 0) } else { (0, r as i64) };
                let entry = |a: &Array| {
                    ops::slice(
                        a,
                        &[e, 0, 0, 0],
                        &[e + 1, i64::MAX, i64::MAX, i64::MAX],
                        &[1; 4],
                    )
                    .unwrap()
                };
                ks.push(entry(&want[ci].0));
                vs.push(entry(&want[ci].1));
                let p = c.pos[if c.pos.len() == 1 { 0 } else { r }];
                lens.push(p.clamp(0, c.caps[ci] as i32 - 1) + 1);
            }
            let lens = Array::from_slice(&lens, &[c.b]).unwrap();
            let want_o = fast::sdpa_rows_fallback(&q, &ks, &vs, &lens, scale).unwrap();
            assert_eq!(o.shape(), &[c.b, c.nq, 1, c.d]);
            for (i, ((k, v), (wk, wv))) in written.iter().zip(&want).enumerate() {
                assert_eq!(bits(k), bits(wk), "keys of cache {i} on {dev:?}");
                assert_eq!(bits(v), bits(wv), "values of cache {i} on {dev:?}");
            }
            let tol = if c.dtype == Dtype::F32 { 1e-5 } else { 1e-2 };
            let (got, exp) = (f32s(&o), f32s(&want_o));
            let worst = got
                .iter()
                .zip(&exp)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst <= tol,
                "attention on {dev:?}, b {} nq {} nkv {} pos {:?} caps {:?} {:?}: worst {worst:e}",
                c.b,
                c.nq,
                c.nkv,
                c.pos,
                c.caps,
                c.dtype
            );
        }
    });
}

/// A cache written step after step keeps every earlier write (the op's outputs feed the next
/// step, as a KV cache's buffers do).
#[test]
fn successive_writes_accumulate() {
    for_each_device(|_| {
        let (b, nq, nkv, d) = (1, 2, 1, 32);
        let spec = RopeSpec {
            dims: d,
            traditional: false,
            base: Some(10_000.0),
            scale: 1.0,
            freqs: None,
        };
        let mut cache = (
            ops::zeros(&[b, nkv, 8, d], Dtype::F32),
            ops::zeros(&[b, nkv, 8, d], Dtype::F32),
        );
        let mut vs = Vec::new();
        let mut kept = None;
        for step in 0..5 {
            if step == 2 {
                // held elsewhere: the op must copy, not write this buffer in place
                kept = Some(cache.1.clone());
            }
            let qkv = arr(&[b, 1, nq + 2 * nkv, d], 100 + step, 1.0, Dtype::F32);
            vs.push(f32s(&heads(&qkv, nq + nkv, nq + 2 * nkv)));
            let pos = Array::from_slice(&[step as i32], &[1]).unwrap();
            let (_, mut w) =
                fast::rope_kv_write(&qkv, nq, None, spec, &pos, std::slice::from_ref(&cache))
                    .unwrap();
            cache = w.remove(0);
            cache.1.eval().unwrap();
        }
        let got = f32s(&cache.1);
        for (p, v) in vs.iter().enumerate() {
            assert_eq!(&got[p * d..(p + 1) * d], &v[..], "value at position {p}");
        }
        assert!(
            got[5 * d..].iter().all(|&x| x == 0.0),
            "positions past the writes stay zero"
        );
        let kept = f32s(&kept.expect("kept"));
        assert_eq!(
            &kept[d..2 * d],
            &vs[1][..],
            "an earlier write seen by the kept buffer"
        );
        assert!(
            kept[2 * d..].iter().all(|&x| x == 0.0),
            "a buffer held elsewhere was written"
        );
    });
}

fn assert_err<T>(r: rmlx::Result<T>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with("[rope_kv_write]") && e.contains(needle),
                "unexpected message: {e}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let spec = RopeSpec {
        dims: 8,
        traditional: false,
        base: Some(10_000.0),
        scale: 1.0,
        freqs: None,
    };
    let qkv = ops::zeros(&[2, 1, 8, 8], Dtype::F32);
    let cache = |b: usize, h: usize| {
        (
            ops::zeros(&[b, h, 4, 8], Dtype::F32),
            ops::zeros(&[b, h, 4, 8], Dtype::F32),
        )
    };
    let p1 = Array::from_slice(&[0i32], &[1]).unwrap();
    let p2 = Array::from_slice(&[0i32, 1], &[2]).unwrap();
    // 8 heads are not 5 query heads and as many key as value heads
    assert_err(
        fast::rope_kv_write(&qkv, 5, None, spec, &p1, &[cache(2, 1)]),
        "query heads",
    );
    assert_err(
        fast::rope_kv_write(
            &ops::zeros(&[2, 3, 8, 8], Dtype::F32),
            4,
            None,
            spec,
            &p1,
            &[cache(2, 2)],
        ),
        "[B, 1, heads, D]",
    );
    assert_err(
        fast::rope_kv_write(
            &qkv,
            4,
            None,
            spec,
            &Array::from_slice(&[0i32; 3], &[3]).unwrap(),
            &[cache(2, 2)],
        ),
        "pos",
    );
    assert_err(
        fast::rope_kv_write(&qkv, 4, None, spec, &p1, &[cache(2, 3)]),
        "cache pair 0",
    );
    assert_err(
        fast::rope_kv_write(&qkv, 4, None, spec, &p2, &[cache(2, 2)]),
        "one position",
    );
    assert_err(
        fast::rope_kv_write(
            &qkv,
            4,
            None,
            spec,
            &p2,
            &[cache(1, 2), cache(1, 2), cache(1, 2)],
        ),
        "3 cache pairs",
    );
}
