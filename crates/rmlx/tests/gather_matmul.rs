//! `gather_qmm` / `gather_mm` (mixture-of-experts products) against `mx.gather_qmm` /
//! `mx.gather_mm`, on every device; a property test that `gather_qmm` equals a loop of
//! `quantized_matmul` over the index entries; bad input.
//! Fixtures: tests/fixtures/gather/ (scripts/fixtures/gather_mlx.py, mlx 0.32.4 CPU).

mod common;

use common::{assert_close, for_each_device, vals};
use proptest::prelude::*;
use rmlx::ops::quantized::with_exact_decode;
use rmlx::ops::{gather_mm, gather_qmm, quantize, quantized_matmul};
use rmlx::{ops, Array, Dtype};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gather")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load(st: &safetensors::SafeTensors, key: &str) -> Array {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let dtype = match t.dtype() {
        safetensors::Dtype::F32 => Dtype::F32,
        safetensors::Dtype::F16 => Dtype::F16,
        safetensors::Dtype::BF16 => Dtype::BF16,
        safetensors::Dtype::U32 => Dtype::U32,
        d => panic!("{key}: unexpected dtype {d:?}"),
    };
    Array::from_bytes(t.data(), t.shape(), dtype).unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

#[test]
fn gather_matches_mlx() {
    let bytes = fixture("gather.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&fixture("meta.json")).unwrap();
    let cases = meta["cases"].as_object().unwrap();
    for_each_device(|_| {
        for exact in [true, false] {
            with_exact_decode(exact, || {
                for (name, c) in cases {
                    let ld = |p: &str| load(&st, &format!("{name}_{p}"));
                    let (lhs, rhs) = (
                        c["lhs"].as_bool().unwrap().then(|| ld("lhs")),
                        c["rhs"].as_bool().unwrap().then(|| ld("rhs")),
                    );
                    let sorted = c["sorted_indices"].as_bool().unwrap();
                    let got = if c["op"] == "gather_mm" {
                        gather_mm(&ld("x"), &ld("w"), lhs.as_ref(), rhs.as_ref(), sorted).unwrap()
                    } else {
                        gather_qmm(
                            &ld("x"),
                            &ld("wq"),
                            &ld("scales"),
                            &ld("biases"),
                            lhs.as_ref(),
                            rhs.as_ref(),
                            c["transpose"].as_bool().unwrap(),
                            c["group_size"].as_u64().unwrap() as usize,
                            c["bits"].as_u64().unwrap() as usize,
                            sorted,
                        )
                        .unwrap()
                    };
                    let want = ld("out");
                    assert_eq!(got.shape(), want.shape(), "{name} shape");
                    assert_eq!(got.dtype(), want.dtype(), "{name} dtype");
                    let want = vals(&want);
                    let scale = max_abs(&want);
                    // the int8-activation decode path and half dtypes carry their known error
                    let loose = !exact || got.dtype() != Dtype::F32;
                    let (rtol, atol) = if loose { (1e-2, 2e-2) } else { (1e-4, 1e-5) };
                    let what = format!("{name} (exact={exact})");
                    assert_close(&vals(&got), &want, rtol, atol * scale, &what);
                }
            });
        }
    });
}

/// `gather_mm` reads a transposed view of stacked `[E, N, K]` weights in place (as
/// `SwitchLinear` passes them) and equals the copy.
#[test]
fn gather_mm_reads_transposed_weights() {
    for_each_device(|_| {
        let (e, n, k) = (3, 20, 48);
        let w = ops::random::normal(&[e, n, k], Dtype::F32, 0.0, 1.0, Some(&ops::random::key(1)))
            .unwrap();
        let x = ops::random::normal(&[4, 1, k], Dtype::F32, 0.0, 1.0, Some(&ops::random::key(2)))
            .unwrap();
        let wt = ops::swapaxes(&w, -1, -2).unwrap();
        let idx = Array::from_slice(&[2u32, 0, 2, 1], &[4]).unwrap();
        let a = vals(&gather_mm(&x, &wt, None, Some(&idx), false).unwrap());
        let b = vals(&gather_mm(&x, &ops::contiguous(&wt), None, Some(&idx), false).unwrap());
        assert_close(&a, &b, 1e-5, 1e-5, "view vs copy");
    });
}

fn err_msg<T: std::fmt::Debug>(r: rmlx::Result<T>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn bad_arguments_are_clear_errors() {
    let w = Array::from_slice(&vec![0.5f32; 4 * 16 * 64], &[4, 16, 64]).unwrap();
    let (wq, s, b) = quantize(&w, 64, 4).unwrap();
    let x = Array::from_slice(&vec![1f32; 2 * 64], &[2, 1, 64]).unwrap();
    let fidx = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
    let msg = err_msg(gather_qmm(
        &x,
        &wq,
        &s,
        &b,
        None,
        Some(&fidx),
        true,
        64,
        4,
        false,
    ));
    assert!(
        msg.contains("[gather_qmm]") && msg.contains("rhs_indices must be integers"),
        "{msg}"
    );
    let x32 = Array::from_slice(&vec![1f32; 2 * 32], &[2, 1, 32]).unwrap();
    let i = Array::from_slice(&[0u32, 3], &[2]).unwrap();
    let msg = err_msg(gather_qmm(
        &x32,
        &wq,
        &s,
        &b,
        None,
        Some(&i),
        true,
        64,
        4,
        false,
    ));
    assert!(msg.contains("K = 64"), "{msg}");
    let i3 = Array::from_slice(&[0u32, 1, 2], &[3]).unwrap();
    let msg = err_msg(gather_qmm(
        &x,
        &wq,
        &s,
        &b,
        Some(&i),
        Some(&i3),
        true,
        64,
        4,
        false,
    ));
    assert!(msg.contains("do not broadcast"), "{msg}");
    let v = Array::from_slice(&vec![1f32; 64], &[64]).unwrap();
    assert!(err_msg(gather_qmm(
        &v,
        &wq,
        &s,
        &b,
        None,
        Some(&i),
        true,
        64,
        4,
        false
    ))
    .contains("at least 2 dimensions"));
    // an expert index past the stack is an error at evaluation on the CPU, naming the index
    let bad = Array::from_slice(&[0u32, 9], &[2]).unwrap();
    let y = gather_qmm(&x, &wq, &s, &b, None, Some(&bad), true, 64, 4, false).unwrap();
    let msg = err_msg(y.to_vec::<f32>());
    assert!(
        msg.contains("rhs_indices holds 9") && msg.contains("4 matrices"),
        "{msg}"
    );
    let msg = err_msg(gather_mm(&x, &w, None, Some(&i), false));
    assert!(
        msg.contains("[gather_mm]") && msg.contains("cannot be multiplied"),
        "{msg}"
    );
}

/// `gather_qmm` over entries equals `quantized_matmul` of each entry's `x` block with its
/// expert, whatever the order, repeats, row counts and quantization.
fn check_against_loop(
    e: usize,
    m: usize,
    rhs: &[u32],
    bits: usize,
    gs: usize,
    sorted: bool,
) -> Result<(), TestCaseError> {
    let (n, k) = (24, 128);
    let w =
        ops::random::normal(&[e, n, k], Dtype::F32, 0.0, 1.0, Some(&ops::random::key(7))).unwrap();
    let (wq, s, b) = quantize(&w, gs, bits).unwrap();
    let bsz = rhs.len();
    let x = ops::random::normal(
        &[bsz, m, k],
        Dtype::F32,
        0.0,
        1.0,
        Some(&ops::random::key(8)),
    )
    .unwrap();
    let ri = Array::from_slice(rhs, &[bsz]).unwrap();
    let got = vals(&gather_qmm(&x, &wq, &s, &b, None, Some(&ri), true, gs, bits, sorted).unwrap());
    let mut want = Vec::new();
    for (i, &r) in rhs.iter().enumerate() {
        let (i, r) = (i as i64, r as i64);
        let xi = ops::slice(&x, &[i, 0, 0], &[i + 1, m as i64, k as i64], &[1, 1, 1]).unwrap();
        let xi = ops::reshape(&xi, &[m as i64, k as i64]).unwrap();
        let pick = |a: &Array| {
            let nd = a.shape()[2] as i64;
            let t = ops::slice(a, &[r, 0, 0], &[r + 1, n as i64, nd], &[1, 1, 1]).unwrap();
            ops::reshape(&t, &[n as i64, nd]).unwrap()
        };
        let y = quantized_matmul(&xi, &pick(&wq), &pick(&s), &pick(&b), true, gs, bits).unwrap();
        want.extend(vals(&y));
    }
    // Stacked runs may take the prefill kernel where the loop takes the int8 decode kernel
    // (the default mode), so allow the int8 error; a wrong
    // expert or row is off by the order of max|out|.
    let scale = max_abs(&want);
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        prop_assert!((g - w).abs() <= 3e-2 * scale, "entry {j}: {g} vs {w}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gather_qmm_equals_a_loop_of_quantized_matmul(
        e in 1usize..5,
        m in prop::sample::select(vec![1usize, 2, 9]),
        raw in prop::collection::vec(0u32..64, 1..12),
        q in prop::sample::select(vec![(4usize, 64usize), (8, 32), (3, 32), (2, 128)]),
        sort in any::<bool>(),
    ) {
        let mut rhs: Vec<u32> = raw.iter().map(|r| r % e as u32).collect();
        if sort {
            rhs.sort();
        }
        check_against_loop(e, m, &rhs, q.0, q.1, sort)?;
    }
}

/// On a GPU, prefill-sized products of 16-bit x take the grouped tensor-core kernel: sorted
/// runs longer and shorter than a tile, unsorted entries, several rows per entry gathered
/// through lhs, N not a multiple of the tile, every width and group size. Checked against f64
/// products with the dequantized weights (the kernel rounds them to x's dtype: ~1e-2 of the
/// output's scale at most; a wrong row, expert or column is off by the scale itself).
#[test]
fn gpu_grouped_prefill_matches_f64_products() {
    let Some(g) = common::gpu() else { return };
    let (e, n, k) = (7usize, 200usize, 256usize);
    // expert counts 0, 70, 1, 129, 0, 3, 60 (sorted), then a shuffled copy
    let counts = [0usize, 70, 1, 129, 0, 3, 60];
    let sorted: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(ex, &c)| std::iter::repeat_n(ex as u32, c))
        .collect();
    let shuffled: Vec<u32> = (0..sorted.len())
        .map(|i| sorted[(i * 101) % sorted.len()])
        .collect();
    let key = |s| ops::random::key(s);
    for (bits, gs, xd) in [
        (4usize, 64usize, Dtype::BF16),
        (8, 32, Dtype::BF16),
        (2, 128, Dtype::F16),
        (3, 64, Dtype::BF16),
        (5, 32, Dtype::F16),
        (6, 128, Dtype::BF16),
    ] {
        let w = ops::random::normal(&[e, n, k], Dtype::F32, 0.0, 0.1, Some(&key(40))).unwrap();
        let (wq, s, b) = quantize(&ops::astype(&w, xd), gs, bits).unwrap();
        let dense = vals(&ops::astype(
            &ops::dequantize(&wq, &s, &b, gs, bits).unwrap(),
            Dtype::F32,
        ));
        for (m, rhs, lhs) in [
            (1usize, sorted.clone(), None),
            (1, shuffled.clone(), None),
            (3, sorted[60..110].to_vec(), Some(5usize)),
        ] {
            let what = format!("bits {bits} gs {gs} {xd} m {m} entries {}", rhs.len());
            let bx = lhs.unwrap_or(rhs.len());
            let x = ops::random::normal(&[bx, m, k], Dtype::F32, 0.0, 1.0, Some(&key(41))).unwrap();
            let x = ops::astype(&x, xd);
            let xv = vals(&ops::astype(&x, Dtype::F32));
            let li: Vec<u32> = (0..rhs.len()).map(|i| (i * 3 % bx) as u32).collect();
            let (la, ra) = (
                Array::from_slice(&li, &[rhs.len()]).unwrap(),
                Array::from_slice(&rhs, &[rhs.len()]).unwrap(),
            );
            let lhs_arg = lhs.map(|_| &la);
            let got = rmlx::with_device(g, || {
                gather_qmm(&x, &wq, &s, &b, lhs_arg, Some(&ra), true, gs, bits, true).unwrap()
            });
            assert_eq!(got.shape(), &[rhs.len(), m, n], "{what}");
            let got = vals(&ops::astype(&got, Dtype::F32));
            let mut want = Vec::with_capacity(got.len());
            for (i, &ex) in rhs.iter().enumerate() {
                let xb = if lhs.is_some() { li[i] as usize } else { i };
                for r in 0..m {
                    let xr = &xv[(xb * m + r) * k..(xb * m + r + 1) * k];
                    for col in 0..n {
                        let wr = &dense[(ex as usize * n + col) * k..][..k];
                        want.push(
                            xr.iter()
                                .zip(wr)
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum::<f64>(),
                        );
                    }
                }
            }
            let scale = want.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
            for (j, (gv, wv)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*gv as f64 - wv).abs() <= 1.5e-2 * scale,
                    "{what}: [{j}] {gv} vs {wv} (scale {scale})"
                );
            }
        }
    }
}
