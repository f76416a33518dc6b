//! The fused mixture-of-experts decode ops (`rmlx::fast::{moe_route, gather_qmm_swiglu,
//! gather_qmm_weighted_sum}`): their definition checked against plain loops on the CPU, their
//! argument checks, and the GPU kernels against the CPU composition (skipped, saying so, where
//! no CUDA device is present).

use rmlx::fast::{self, ExpertStack, MoeRouting};
mod common;

use common::gpu;
use rmlx::{ops, Array, Dtype};

fn normal(shape: &[usize], seed: u64, std: f32) -> Array {
    let key = ops::random::key(seed);
    ops::random::normal(shape, Dtype::F32, 0.0, std, Some(&key)).unwrap()
}

fn f32s(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap()
}

/// A quantized stack `[E, N, K]` and its dequantized weights.
struct Stack {
    wq: Array,
    scales: Array,
    biases: Array,
    dense: Vec<f32>,
}

impl Stack {
    fn new(e: usize, n: usize, k: usize, gs: usize, bits: usize, sd: Dtype, seed: u64) -> Stack {
        let w = ops::astype(&normal(&[e, n, k], seed, 0.1), sd);
        let (wq, scales, biases) = ops::quantize(&w, gs, bits).unwrap();
        let dense = f32s(&ops::dequantize(&wq, &scales, &biases, gs, bits).unwrap());
        Stack {
            wq,
            scales,
            biases,
            dense,
        }
    }
    fn view(&self) -> ExpertStack<'_> {
        ExpertStack {
            wq: &self.wq,
            scales: &self.scales,
            biases: &self.biases,
        }
    }
    /// `x · W[e][n]` in f64.
    fn dot(&self, e: usize, n: usize, x: &[f32]) -> f64 {
        let k = x.len();
        let nn = self.wq.shape()[1];
        let row = &self.dense[(e * nn + n) * k..(e * nn + n + 1) * k];
        row.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum()
    }
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tol * scale,
            "{what}: element {i}: {g} vs {w} (scale {scale:.3e})"
        );
    }
}

/// Row `t`'s (index, weight) pairs sorted by index.
fn pairs(i: &[u32], w: &[f32], t: usize, k: usize) -> Vec<(u32, f32)> {
    let mut p: Vec<(u32, f32)> = (0..k).map(|j| (i[t * k + j], w[t * k + j])).collect();
    p.sort_by_key(|x| x.0);
    p
}

#[test]
fn route_picks_the_top_k_with_each_mode_s_weights() {
    let (t, e, k) = (5usize, 16usize, 3usize);
    let l = normal(&[t, e], 1, 2.0);
    let lv = f32s(&l);
    for mode in [
        MoeRouting::SoftmaxTopK { renormalize: false },
        MoeRouting::SoftmaxTopK { renormalize: true },
        MoeRouting::TopKSoftmax,
        MoeRouting::SigmoidTopK { renormalize: false },
        MoeRouting::SigmoidTopK { renormalize: true },
    ] {
        let (i, w) = fast::moe_route(&l, k, mode).unwrap();
        assert_eq!((i.shape(), i.dtype()), (&[t, k][..], Dtype::U32));
        assert_eq!((w.shape(), w.dtype()), (&[t, k][..], Dtype::F32));
        let (iv, wv) = (i.to_vec::<u32>().unwrap(), w.to_vec::<f32>().unwrap());
        for r in 0..t {
            let row: Vec<f64> = lv[r * e..(r + 1) * e].iter().map(|&v| v as f64).collect();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let mut top: Vec<usize> = order[..k].to_vec();
            top.sort();
            let got = pairs(&iv, &wv, r, k);
            let gi: Vec<usize> = got.iter().map(|p| p.0 as usize).collect();
            assert_eq!(gi, top, "{mode:?} row {r}");
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            let raw: Vec<f64> = top
                .iter()
                .map(|&j| match mode {
                    MoeRouting::SoftmaxTopK { .. } => (row[j] - mx).exp() / z,
                    MoeRouting::TopKSoftmax => (row[j] - mx).exp(),
                    MoeRouting::SigmoidTopK { .. } => 1.0 / (1.0 + (-row[j]).exp()),
                })
                .collect();
            let norm = match mode {
                MoeRouting::SoftmaxTopK { renormalize }
                | MoeRouting::SigmoidTopK { renormalize } => renormalize,
                MoeRouting::TopKSoftmax => true,
            };
            let s: f64 = if norm { raw.iter().sum() } else { 1.0 };
            let want: Vec<f64> = raw.iter().map(|v| v / s).collect();
            let gw: Vec<f32> = got.iter().map(|p| p.1).collect();
            close(&format!("{mode:?} row {r}"), &gw, &want, 1e-5);
        }
    }
}

#[test]
fn swiglu_and_weighted_sum_equal_loops_over_the_chosen_experts() {
    // the exact float products (the decode path's int8 activations are checked elsewhere)
    rmlx::ops::quantized::with_exact_decode(true, swiglu_and_weighted_sum_loops);
}

fn swiglu_and_weighted_sum_loops() {
    let (t, e, k, d, h) = (3usize, 6usize, 2usize, 64usize, 128usize);
    for (gs, bits) in [(32, 4), (64, 8), (32, 3)] {
        let gate = Stack::new(e, h, d, gs, bits, Dtype::F32, 10);
        let up = Stack::new(e, h, d, gs, bits, Dtype::F32, 11);
        let down = Stack::new(e, d, h, gs, bits, Dtype::F32, 12);
        let x = normal(&[1, t, d], 13, 1.0);
        let ids: Vec<u32> = vec![0, 5, 3, 3, 2, 4];
        let idx = Array::from_slice(&ids, &[1, t, k]).unwrap();
        let wts = Array::from_slice(&[0.7f32, 0.3, 0.5, 0.5, 0.1, 0.9], &[1, t, k]).unwrap();
        let hid = fast::gather_qmm_swiglu(&x, gate.view(), up.view(), &idx, gs, bits).unwrap();
        assert_eq!(hid.shape(), &[1, t, k, h]);
        let xv = f32s(&x);
        let mut want_h = Vec::new();
        for p in 0..t * k {
            let xr = &xv[(p / k) * d..(p / k + 1) * d];
            for n in 0..h {
                let g = gate.dot(ids[p] as usize, n, xr);
                want_h.push(g / (1.0 + (-g).exp()) * up.dot(ids[p] as usize, n, xr));
            }
        }
        close(&format!("swiglu g{gs} b{bits}"), &f32s(&hid), &want_h, 1e-4);
        let res = normal(&[1, t, d], 14, 1.0);
        let y = fast::gather_qmm_weighted_sum(&hid, down.view(), &idx, &wts, Some(&res), gs, bits)
            .unwrap();
        assert_eq!(y.shape(), &[1, t, d]);
        let (hv, wv) = (f32s(&hid), f32s(&wts));
        let mut want_y: Vec<f64> = f32s(&res).iter().map(|&v| v as f64).collect();
        for p in 0..t * k {
            for n in 0..d {
                want_y[(p / k) * d + n] +=
                    wv[p] as f64 * down.dot(ids[p] as usize, n, &hv[p * h..(p + 1) * h]);
            }
        }
        close(
            &format!("weighted sum g{gs} b{bits}"),
            &f32s(&y),
            &want_y,
            1e-4,
        );
    }
}

fn err<T: std::fmt::Debug>(r: rmlx::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_arguments_are_clear_errors() {
    let l = normal(&[2, 8], 1, 1.0);
    let m = err(fast::moe_route(&l, 9, MoeRouting::TopKSoftmax));
    assert!(m.contains("9 of 8 experts"), "{m}");
    let m = err(fast::moe_route(
        &ops::astype(&l, Dtype::I32),
        2,
        MoeRouting::TopKSoftmax,
    ));
    assert!(m.contains("logits"), "{m}");
    let s = Stack::new(4, 32, 64, 32, 4, Dtype::F32, 2);
    let x = normal(&[2, 64], 3, 1.0);
    let idx = Array::from_slice(&[0u32, 1, 2, 3], &[2, 2]).unwrap();
    let m = err(fast::gather_qmm_swiglu(
        &normal(&[2, 48], 3, 1.0),
        s.view(),
        s.view(),
        &idx,
        32,
        4,
    ));
    assert!(m.contains("K = 64"), "{m}");
    let bad_idx = Array::from_slice(&[0u32, 1, 2], &[3, 1]).unwrap();
    let m = err(fast::gather_qmm_swiglu(
        &x,
        s.view(),
        s.view(),
        &bad_idx,
        32,
        4,
    ));
    assert!(m.contains("leading axes"), "{m}");
    let m = err(fast::gather_qmm_swiglu(
        &x,
        s.view(),
        s.view(),
        &ops::astype(&idx, Dtype::F32),
        32,
        4,
    ));
    assert!(m.contains("integers"), "{m}");
    let other = Stack::new(4, 16, 64, 32, 4, Dtype::F32, 4);
    let m = err(fast::gather_qmm_swiglu(
        &x,
        s.view(),
        other.view(),
        &idx,
        32,
        4,
    ));
    assert!(m.contains("must match"), "{m}");
    let hid = normal(&[2, 2, 32], 5, 1.0);
    let down = Stack::new(4, 64, 32, 32, 4, Dtype::F32, 6);
    let m = err(fast::gather_qmm_weighted_sum(
        &hid,
        down.view(),
        &idx,
        &normal(&[2, 3], 7, 1.0),
        None,
        32,
        4,
    ));
    assert!(m.contains("weights (2,3)"), "{m}");
    let fw = ops::astype(&idx, Dtype::F32);
    let m = err(fast::gather_qmm_weighted_sum(
        &normal(&[2, 3, 32], 5, 1.0),
        down.view(),
        &idx,
        &fw,
        None,
        32,
        4,
    ));
    assert!(m.contains("one row per chosen expert"), "{m}");
    let m = err(fast::gather_qmm_weighted_sum(
        &hid,
        down.view(),
        &idx,
        &fw,
        Some(&normal(&[2, 32], 8, 1.0)),
        32,
        4,
    ));
    assert!(
        m.contains("residual (2,32) must have the output's shape (2,64)"),
        "{m}"
    );
    let m = err(fast::gather_qmm_weighted_sum(
        &hid,
        down.view(),
        &idx,
        &ops::astype(&idx, Dtype::F32),
        None,
        64,
        4,
    ));
    assert!(m.contains("group"), "{m}");
}

/// `view` reinterprets bytes without a copy; the routing output's weights arrive through it.
#[test]
fn view_reinterprets_bytes() {
    let x = Array::from_slice(&[1.5f32, -2.0, 0.0], &[3]).unwrap();
    let u = ops::view(&x, Dtype::U32).unwrap();
    let want: Vec<u32> = [1.5f32, -2.0, 0.0].iter().map(|v| v.to_bits()).collect();
    assert_eq!(u.to_vec::<u32>().unwrap(), want);
    let back = ops::view(&ops::slice(&u, &[1], &[3], &[1]).unwrap(), Dtype::F32).unwrap();
    assert_eq!(back.to_vec::<f32>().unwrap(), vec![-2.0, 0.0]);
    let m = err(ops::view(&x, Dtype::F16));
    assert!(m.contains("element size"), "{m}");
}

/// The GPU routing kernel's choice where scores tie: the larger value first, equal values (and
/// -0 against +0) to the lower index, a NaN logit ranked as -inf, as the kernel's contract says;
/// 128 experts choose 8 with ties straddling the cut.
#[test]
fn gpu_route_breaks_ties_to_the_lower_index() {
    let Some(g) = gpu() else { return };
    let (e, k) = (128usize, 8usize);
    let mut rows: Vec<Vec<f32>> = Vec::new();
    // a run of equal maxima longer than k, spread over lanes and rounds of 32
    rows.push(
        (0..e)
            .map(|i| {
                if i % 9 == 4 {
                    2.5
                } else {
                    (i % 7) as f32 * 0.1
                }
            })
            .collect(),
    );
    // -0 and +0 are equal; NaN and -inf come after every number
    rows.push(
        (0..e)
            .map(|i| match i % 5 {
                0 => -0.0,
                1 => 0.0,
                2 => f32::NAN,
                3 => f32::NEG_INFINITY,
                _ => -1.0,
            })
            .collect(),
    );
    // fewer numbers than k: the rest from NaN and -inf alike, by index
    rows.push(
        (0..e)
            .map(|i| match i {
                7 => 1.0,
                50 => -0.0,
                90 => 0.0,
                _ if i % 2 == 0 => f32::NAN,
                _ => f32::NEG_INFINITY,
            })
            .collect(),
    );
    // a few distinct leaders, then a tie at the cut
    rows.push(
        (0..e)
            .map(|i| {
                if i >= 120 {
                    3.0 + i as f32
                } else if i % 3 == 0 {
                    1.0
                } else {
                    -2.0
                }
            })
            .collect(),
    );
    let flat: Vec<f32> = rows.concat();
    let l = Array::from_slice(&flat, &[rows.len(), e]).unwrap();
    let (gi, _) = rmlx::with_device(g, || {
        fast::moe_route(&l, k, MoeRouting::TopKSoftmax).unwrap()
    });
    let gi = gi.to_vec::<u32>().unwrap();
    for (r, row) in rows.iter().enumerate() {
        let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
        let mut order: Vec<usize> = (0..e).collect();
        // stable: equal keys keep index order
        order.sort_by(|&a, &b| key(row[b]).partial_cmp(&key(row[a])).unwrap());
        let mut want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
        want.sort();
        let mut got: Vec<u32> = gi[r * k..(r + 1) * k].to_vec();
        got.sort();
        assert_eq!(got, want, "row {r}");
    }
}

/// The GPU kernels equal the CPU composition: routing (the same experts, weights to f32
/// rounding), and both expert products for 2- to 8-bit stacks, f32 and bf16, one to several
/// tokens, Qwen3-MoE's 128-choose-8 shape included.
#[test]
fn gpu_kernels_match_the_cpu_composition() {
    let Some(g) = gpu() else { return };
    // many experts too: 256, and 300 (not a multiple of 32)
    for (t, e, k) in [
        (1usize, 128usize, 8usize),
        (3, 8, 2),
        (2, 40, 5),
        (1, 256, 8),
        (2, 300, 6),
    ] {
        let l = normal(&[1, t, e], 20 + e as u64, 3.0);
        for mode in [
            MoeRouting::SoftmaxTopK { renormalize: true },
            MoeRouting::SoftmaxTopK { renormalize: false },
            MoeRouting::TopKSoftmax,
            MoeRouting::SigmoidTopK { renormalize: true },
        ] {
            for ld in [Dtype::F32, Dtype::BF16] {
                let l = ops::astype(&l, ld);
                let (ci, cw) = fast::moe_route(&l, k, mode).unwrap();
                let (gi, gw) = rmlx::with_device(g, || fast::moe_route(&l, k, mode).unwrap());
                let (ci, cw) = (ci.to_vec::<u32>().unwrap(), cw.to_vec::<f32>().unwrap());
                let (gi, gw) = (gi.to_vec::<u32>().unwrap(), gw.to_vec::<f32>().unwrap());
                for r in 0..t {
                    let (c, gg) = (pairs(&ci, &cw, r, k), pairs(&gi, &gw, r, k));
                    for ((a, wa), (b, wb)) in c.iter().zip(&gg) {
                        assert_eq!(
                            a, b,
                            "route {mode:?} {ld} t{t} e{e} row {r}: {c:?} vs {gg:?}"
                        );
                        assert!(
                            (wa - wb).abs() <= 1e-5,
                            "route {mode:?} {ld}: {c:?} vs {gg:?}"
                        );
                    }
                }
            }
        }
    }
    for (t, e, k, d, h, gs, bits, dt) in [
        (
            1usize,
            128usize,
            8usize,
            2048usize,
            768usize,
            64usize,
            4usize,
            Dtype::BF16,
        ),
        (1, 8, 2, 256, 128, 32, 8, Dtype::F32),
        (3, 8, 2, 256, 128, 128, 4, Dtype::BF16),
        (2, 6, 3, 128, 64, 32, 3, Dtype::F32),
        (4, 6, 2, 192, 128, 64, 6, Dtype::F32),
        // rows too long for a block to quantize x itself: the separate int8 launch on a GPU
        (1, 4, 2, 4096, 64, 32, 4, Dtype::BF16),
    ] {
        let what = format!("t{t} e{e} k{k} d{d} h{h} g{gs} b{bits} {dt}");
        let gate = Stack::new(e, h, d, gs, bits, dt, 30);
        let up = Stack::new(e, h, d, gs, bits, dt, 31);
        let down = Stack::new(e, d, h, gs, bits, dt, 32);
        let x = ops::astype(&normal(&[1, t, d], 33, 1.0), dt);
        let ids: Vec<u32> = (0..t * k).map(|p| ((p * 5 + p / k) % e) as u32).collect();
        let idx = Array::from_slice(&ids, &[1, t, k]).unwrap();
        let wts = ops::softmax(&normal(&[1, t, k], 34, 1.0), Some(&[-1]), true).unwrap();
        let res = ops::astype(&normal(&[1, t, d], 35, 1.0), dt);
        let run = || {
            let hid = fast::gather_qmm_swiglu(&x, gate.view(), up.view(), &idx, gs, bits).unwrap();
            let y = fast::gather_qmm_weighted_sum(&hid, down.view(), &idx, &wts, None, gs, bits)
                .unwrap();
            let yr =
                fast::gather_qmm_weighted_sum(&hid, down.view(), &idx, &wts, Some(&res), gs, bits)
                    .unwrap();
            (hid, y, yr)
        };
        let (ch, cy, cyr) = rmlx::ops::quantized::with_exact_decode(true, run);
        // exact: the float kernels; else 4- and 8-bit stacks take int8 activations
        for exact in [true, false] {
            let (gh, gy, gyr) =
                rmlx::ops::quantized::with_exact_decode(exact, || rmlx::with_device(g, run));
            assert_eq!(gh.shape(), &[1, t, k, h]);
            assert_eq!(gy.shape(), &[1, t, d]);
            // the composition rounds each product to bf16 before SiLU, the product and the sum;
            // int8 activations err by ~3e-3 of the scale
            let int8 = !exact && (bits == 4 || bits == 8);
            let tol = match (dt == Dtype::BF16, int8) {
                (true, _) => 3e-2,
                (false, true) => 1e-2,
                (false, false) => 1e-4,
            };
            let what = format!("{what} exact={exact}");
            let want: Vec<f64> = f32s(&ch).iter().map(|&v| v as f64).collect();
            close(&format!("swiglu {what}"), &f32s(&gh), &want, tol);
            let want: Vec<f64> = f32s(&cy).iter().map(|&v| v as f64).collect();
            close(&format!("weighted sum {what}"), &f32s(&gy), &want, tol);
            let want: Vec<f64> = f32s(&cyr).iter().map(|&v| v as f64).collect();
            close(
                &format!("weighted sum + residual {what}"),
                &f32s(&gyr),
                &want,
                tol,
            );
            eprintln!("GPU vs CPU fused MoE ops agree: {what}");
        }
    }
}

/// `gather_qmm_swiglu_normed` (a pre-norm MoE layer's experts; the GPU's int8 kernels normalise
/// x as they quantize it, in the kernel's blocks or in the quantizing launch for long rows)
/// equals the norm then `gather_qmm_swiglu`: bit for bit where the norm runs as its own op (the
/// CPU, 3-bit stacks, exact mode), within the int8 path's rounding otherwise.
#[test]
fn swiglu_normed_equals_norm_then_swiglu() {
    let mut devices = vec![rmlx::Device::cpu()];
    devices.extend(gpu());
    for (t, e, k, d, h, bits) in [
        (1usize, 16usize, 4usize, 2048usize, 96usize, 4usize),
        (2, 8, 2, 512, 64, 8),
        (1, 4, 2, 4096, 64, 4),
        (3, 6, 2, 256, 64, 3),
    ] {
        let dt = Dtype::BF16;
        let gate = Stack::new(e, h, d, 64, bits, dt, 40);
        let up = Stack::new(e, h, d, 64, bits, dt, 41);
        let x = ops::astype(&normal(&[1, t, d], 42, 3.0), dt);
        let nw = ops::astype(&(normal(&[d], 43, 0.2) + 1.0f32), dt);
        let ids: Vec<u32> = (0..t * k).map(|p| ((p * 3 + 1) % e) as u32).collect();
        let idx = Array::from_slice(&ids, &[1, t, k]).unwrap();
        for dev in &devices {
            for exact in [true, false] {
                let what = format!("t{t} e{e} k{k} d{d} b{bits} {dev:?} exact={exact}");
                let (got, want) = rmlx::ops::quantized::with_exact_decode(exact, || {
                    rmlx::with_device(*dev, || {
                        let n = fast::rms_norm(&x, Some(&nw), 1e-6).unwrap();
                        let want =
                            fast::gather_qmm_swiglu(&n, gate.view(), up.view(), &idx, 64, bits)
                                .unwrap();
                        let got = fast::gather_qmm_swiglu_normed(
                            &x,
                            &nw,
                            1e-6,
                            gate.view(),
                            up.view(),
                            &idx,
                            64,
                            bits,
                        )
                        .unwrap();
                        (f32s(&got), f32s(&want))
                    })
                });
                let int8 = dev.kind == rmlx::DeviceType::Gpu && !exact && bits != 3;
                if int8 {
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    close(&what, &got, &want, 2e-2);
                } else {
                    assert_eq!(got, want, "{what}");
                }
            }
        }
    }
}
