//! The LLM runtime on the GPU: the tiny MLX checkpoints give MLX's logits there too, and greedy
//! decoding picks the same tokens as on the CPU (SmolLM2 too, when its file is present), except
//! after a step whose top-two margin is smaller than the devices' logit difference (reported).
//! Skips, saying so, where no CUDA device is present.

use rmlx::ops::quantized::with_exact_decode;
use rmlx::{Array, Device, Dtype};
use rmlx_lm::cache::KvCache;
use rmlx_lm::load::{load_model, LoadOptions};
use rmlx_lm::models::Model;
use std::path::{Path, PathBuf};
use support::{assert_logits_close_rel, max_abs_diff, mlx_reference};

#[path = "support/peaked_llama.rs"]
mod peaked_llama;
mod support;
use peaked_llama::peaked_llama;

const MODELS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "gemma3",
    "llama_q4",
    "qwen2_q4",
    "qwen3_q4",
    "gemma3_q4",
    "qwen3_moe",
    "mixtral",
    "qwen3_moe_q4",
    "mixtral_q4",
];

/// GPU 0, and a guard that runs this file's tests one at a time: four of them record and
/// replay CUDA graphs, and run side by side they slowed to a standstill on the lent H100
/// (not understood yet; one at a time the file takes ~30 s).
fn gpu() -> Option<(Device, std::sync::MutexGuard<'static, ()>)> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    rmlx::init();
    if rmlx::is_available(Device::gpu(0)) {
        let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Some((Device::gpu(0), g))
    } else {
        eprintln!("skipped: no CUDA device");
        None
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn logits_of(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let ids = Array::from_slice(tokens, &[1, tokens.len()]).unwrap();
    let l = model.forward(&ids, &mut model.make_caches()).unwrap();
    rmlx::ops::astype(&l, Dtype::F32).to_vec::<f32>().unwrap()
}

#[test]
fn tiny_models_match_mlx_on_gpu() {
    let Some((dev, _serial)) = gpu() else { return };
    for name in MODELS {
        let dir = fixture(name);
        // loaded with the GPU as the default device: q/k/v and gate/up are fused
        let (model, _) =
            rmlx::with_device(dev, || load_model(&dir, &LoadOptions::default()).unwrap());
        let (tokens, want, _) = mlx_reference(&dir);
        let got = rmlx::with_device(dev, || logits_of(&model, &tokens));
        assert_logits_close_rel(&format!("{name}: GPU vs MLX"), &got, &want, 1e-3);
    }
}

/// Greedy tokens, and per step the top-two margin, with a KV cache (prefill, then decode).
fn greedy(model: &Model, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<f32>, Vec<Vec<f32>>) {
    let mut caches = model.make_caches();
    let mut ids = Array::from_slice(prompt, &[1, prompt.len()]).unwrap();
    let (mut toks, mut margins, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..steps {
        let l = model.forward_last(&ids, &mut caches).unwrap();
        let row = rmlx::ops::astype(&l, Dtype::F32).to_vec::<f32>().unwrap();
        let mut best = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (i, &v) in row.iter().enumerate() {
            if v > best.1 {
                best = (i, v, best.1);
            } else if v > best.2 {
                best.2 = v;
            }
        }
        toks.push(best.0 as u32);
        margins.push(best.1 - best.2);
        rows.push(row);
        ids = Array::from_slice(&[best.0 as u32], &[1, 1]).unwrap();
    }
    (toks, margins, rows)
}

fn compare_greedy(name: &str, model: &Model, prompt: &[u32], steps: usize, dev: Device) {
    let (ct, _, crow) = greedy(model, prompt, steps);
    let (gt, gm, grow) = rmlx::with_device(dev, || greedy(model, prompt, steps));
    for i in 0..steps {
        let diff = crow[i]
            .iter()
            .zip(&grow[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if ct[i] != gt[i] {
            // allowed only where the two best logits are closer than the devices differ
            assert!(
                gm[i] <= 2.0 * diff,
                "{name}: step {i}: CPU token {} vs GPU token {} with margin {} > logit difference {diff}",
                ct[i],
                gt[i],
                gm[i]
            );
            eprintln!("{name}: tokens diverge at step {i} (margin {:.3e} ≤ 2 × logit difference {diff:.3e}); later steps not compared", gm[i]);
            return;
        }
    }
    eprintln!("{name}: {steps} greedy tokens identical on CPU and GPU");
}

#[test]
fn greedy_tokens_match_cpu() {
    let Some((dev, _serial)) = gpu() else { return };
    // the CPU's float product, as the GPU computes it
    with_exact_decode(true, || {
        for name in MODELS {
            for dtype in [None, Some(Dtype::BF16), Some(Dtype::F16)] {
                let (model, _) = load_model(&fixture(name), &LoadOptions { dtype }).unwrap();
                compare_greedy(
                    &format!("{name} {dtype:?}"),
                    &model,
                    &[1, 5, 9, 3, 7, 2],
                    12,
                    dev,
                );
            }
        }
        let smol = std::env::var_os("RMLX_SMOLLM2")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| {
                    PathBuf::from(h).join(".cache/rmlx/models/SmolLM2-135M-Instruct.Q4_1.gguf")
                })
            });
        match smol.filter(|p| p.exists()) {
            Some(p) => {
                let (model, _) = load_model(&p, &LoadOptions::default()).unwrap();
                // "What is 2+2?" in SmolLM2's chat template, as token ids
                let prompt = [
                    1, 9690, 198, 2683, 339, 253, 5356, 5646, 11173, 3365, 3511, 308,
                ];
                compare_greedy("SmolLM2-135M Q4_1", &model, &prompt, 32, dev);
            }
            None => eprintln!("skipped SmolLM2: model file not present (set RMLX_SMOLLM2)"),
        }
    });
}

/// Decodes 20 greedy steps of `model` on `caches()` by CUDA graph replay beside ordinary steps
/// after a 250-token prompt (the caches hold 256, so decoding crosses a growth point: the graph
/// is dropped, one ordinary step grows the caches, and the step is recorded again): the same
/// tokens, logits within 1e-2 of the largest, most steps replayed.
fn check_replay(name: &str, model: &Model, caches: &dyn Fn() -> Vec<KvCache>, dev: Device) {
    use rmlx_lm::graph_decode::ReplayDecoder;
    let row = |l: &Array| rmlx::ops::astype(l, Dtype::F32).to_vec::<f32>().unwrap();
    let argmax = |r: &[f32]| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }) as u32;
    let prompt: Vec<u32> = (0..250).map(|i| (i * 7 % 96) as u32).collect();
    let x = Array::from_slice(&prompt, &[1, prompt.len()]).unwrap();
    let (mut plain, mut replayed) = (caches(), caches());
    let first = row(&model.forward_last(&x, &mut plain).unwrap());
    model
        .forward_last(&x, &mut replayed)
        .unwrap()
        .eval()
        .unwrap();
    let mut replay = ReplayDecoder::new(dev, &replayed);
    let mut tok = argmax(&first);
    let (mut n_replayed, mut worst) = (0, 0.0f32);
    for step in 0..20 {
        let ids = Array::from_slice(&[tok], &[1, 1]).unwrap();
        let want = row(&model.forward_last(&ids, &mut plain).unwrap());
        let got = if replay.step(model.as_ref(), &mut replayed, tok).unwrap() {
            n_replayed += replay.active() as usize;
            assert_eq!(
                replay.argmax().unwrap(),
                argmax(&want),
                "{name} step {step}"
            );
            row(&replay.logits_host().unwrap())
        } else {
            row(&model.forward_last(&ids, &mut replayed).unwrap())
        };
        assert_eq!(
            plain[0].offset(),
            replayed[0].offset(),
            "{name} step {step}"
        );
        let (d, scale) = max_abs_diff(&got, &want);
        worst = worst.max(d / scale);
        assert!(
            d <= 1e-2 * scale,
            "{name} step {step}: replay differs by {d}"
        );
        tok = argmax(&want);
    }
    eprintln!("{name}: {n_replayed} of 20 steps replayed ({} kernels), worst relative logit difference {worst:.1e}", replay.kernels());
    assert!(n_replayed >= 12, "{name}: only {n_replayed} steps replayed");
}

/// Decoding by CUDA graph replay gives the ordinary path's logits and tokens step after step
/// (`check_replay`), for dense and quantized models in f32 and bf16.
#[test]
fn graph_replay_matches_ordinary_decode() {
    let Some((dev, _serial)) = gpu() else { return };
    for name in ["llama", "qwen3_q4"] {
        for dtype in [None, Some(Dtype::BF16)] {
            rmlx::with_device(dev, || {
                let (model, _) = load_model(&fixture(name), &LoadOptions { dtype }).unwrap();
                let caches = || model.make_caches();
                check_replay(&format!("{name} {dtype:?}"), &model, &caches, dev);
            });
        }
    }
}

/// The same on a quantized KV cache (8- and 4-bit, group 64: the packed rows written at the
/// device-held position, attention over the whole buffers under the position mask), on a
/// checkpoint with heads of 64 features, f32 and bf16.
#[test]
fn graph_replay_on_a_quantized_cache_matches_ordinary_decode() {
    let Some((dev, _serial)) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("rmlx_gpu_qreplay_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    peaked_llama(&dir);
    for dtype in [None, Some(Dtype::BF16)] {
        for bits in [8, 4] {
            rmlx::with_device(dev, || {
                let (model, _) = load_model(&dir, &LoadOptions { dtype }).unwrap();
                let caches = || {
                    let mut c = model.make_caches();
                    KvCache::quantize_standard(&mut c, bits, 64).unwrap();
                    c
                };
                check_replay(&format!("{bits}-bit cache {dtype:?}"), &model, &caches, dev);
            });
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The batch engine's recorded steps (`graph_rows`) against ordinary `forward_rows` passes:
/// three sequences of different lengths (one crosses a cache growth point), one of which
/// leaves half way (a new group: ordinary, warm-up, recorded again). Logits agree, offsets
/// advance alike, and most steps are replays.
#[test]
fn batched_graph_replay_matches_ordinary_rows() {
    use rmlx_lm::graph_rows::RowsReplay;
    let Some((dev, _serial)) = gpu() else { return };
    let argmax = |r: &[f32]| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }) as u32;
    for name in ["llama", "qwen3_q4"] {
        rmlx::with_device(dev, || {
            let (model, _) = load_model(&fixture(name), &LoadOptions::default()).unwrap();
            let vocab = model.config().vocab_size;
            let lens = [250usize, 40, 7];
            let mut plain: Vec<Vec<KvCache>> = Vec::new();
            let mut replayed: Vec<Vec<KvCache>> = Vec::new();
            let mut toks: Vec<u32> = Vec::new();
            for (s, &n) in lens.iter().enumerate() {
                let p: Vec<u32> = (0..n).map(|i| ((i * 7 + s * 13) % 96) as u32).collect();
                let x = Array::from_slice(&p, &[1, n]).unwrap();
                let (mut a, mut b) = (model.make_caches(), model.make_caches());
                let l = model.forward_last(&x, &mut a).unwrap();
                model.forward_last(&x, &mut b).unwrap().eval().unwrap();
                let l = rmlx::ops::astype(&l, Dtype::F32).to_vec::<f32>().unwrap();
                toks.push(argmax(&l));
                plain.push(a);
                replayed.push(b);
            }
            let mut ids: Vec<u64> = vec![0, 1, 2];
            let mut replay = RowsReplay::new(dev);
            let (mut n_replayed, mut worst) = (0, 0.0f32);
            for step in 0..24 {
                if step == 12 {
                    // sequence 1 leaves
                    ids.remove(1);
                    toks.remove(1);
                    plain.remove(1);
                    replayed.remove(1);
                }
                let t = Array::from_slice(&toks, &[toks.len(), 1]).unwrap();
                let mut pc: Vec<&mut [KvCache]> = plain.iter_mut().map(|c| &mut c[..]).collect();
                let want = model.forward_rows(&t, &mut pc).unwrap();
                let want = rmlx::ops::astype(&want, Dtype::F32)
                    .to_vec::<f32>()
                    .unwrap();
                let mut rc: Vec<&mut [KvCache]> = replayed.iter_mut().map(|c| &mut c[..]).collect();
                let got = match replay.step(model.as_ref(), &ids, &toks, &mut rc).unwrap() {
                    Some(l) => {
                        n_replayed += replay.active() as usize;
                        l
                    }
                    None => {
                        rmlx::ops::astype(&model.forward_rows(&t, &mut rc).unwrap(), Dtype::F32)
                    }
                };
                let got = got.to_vec::<f32>().unwrap();
                for (b, (p, r)) in plain.iter().zip(&replayed).enumerate() {
                    assert_eq!(p[0].offset(), r[0].offset(), "{name} step {step} row {b}");
                }
                let (d, scale) = max_abs_diff(&got, &want);
                worst = worst.max(d / scale);
                assert!(
                    d <= 1e-2 * scale,
                    "{name} step {step}: replay differs by {d}"
                );
                toks = want.chunks(vocab).map(argmax).collect();
            }
            eprintln!("{name}: {n_replayed} of 24 batched steps replayed, worst relative logit difference {worst:.1e}");
            assert!(n_replayed >= 16, "{name}: only {n_replayed} steps replayed");
        });
    }
}

/// The batch engine on the GPU (recorded steps of the group, one attention op for all rows,
/// greedy tokens from one device argmax): 8 greedy sequences of different lengths give the
/// tokens each gives alone (`stream_generate`, single-sequence replay). Attention splits its
/// keys differently in the two paths, so a near-tie may flip a token: at most one sequence
/// may differ, and it is reported; a broken batched path would derail them all.
#[test]
fn batch_engine_on_gpu_equals_alone() {
    use rmlx_lm::batch::{batch_generate, BatchOptions, SeqRequest};
    use rmlx_lm::generate::{stream_generate, GenerateOptions};
    use rmlx_lm::sample::SamplerSettings;
    use rmlx_lm::tokenizer::Tokenizer;
    let Some((dev, _serial)) = gpu() else { return };
    let tok = Tokenizer::ids_only(96).unwrap();
    for name in ["llama", "qwen3_q4"] {
        rmlx::with_device(dev, || {
            let (model, _) = load_model(&fixture(name), &LoadOptions::default()).unwrap();
            let opts = GenerateOptions {
                max_tokens: 16,
                sampler: SamplerSettings {
                    temp: 0.0,
                    ..SamplerSettings::default()
                },
                ..GenerateOptions::default()
            };
            let prompts: Vec<Vec<u32>> = (0..8)
                .map(|i| {
                    (0..3 + 9 * i)
                        .map(|j| ((i * 31 + j * 7) % 93 + 3) as u32)
                        .collect()
                })
                .collect();
            let reqs = prompts
                .iter()
                .map(|p| SeqRequest::new(p.clone(), opts.clone()))
                .collect();
            let (out, stats) =
                batch_generate(model.as_ref(), &tok, reqs, &BatchOptions::default()).unwrap();
            assert!(
                stats.decode_rows > stats.decode_passes,
                "{name}: rows decoded together"
            );
            let mut differ = Vec::new();
            for (i, p) in prompts.iter().enumerate() {
                let alone: Vec<u32> = stream_generate(model.as_ref(), &tok, p, &opts)
                    .unwrap()
                    .map(|r| r.unwrap().token)
                    .collect();
                if out[i].tokens != alone {
                    differ.push((i, out[i].tokens.clone(), alone));
                }
            }
            eprintln!(
                "{name}: {} of 8 batched sequences differ from alone: {differ:?}",
                differ.len()
            );
            assert!(
                differ.len() <= 1,
                "{name}: batched tokens differ from alone: {differ:?}"
            );
        });
    }
}

/// The default GPU decode path of the quantized tiny models (fused projections, int8
/// activations, each pre-norm inside its product's int8 quantization, the gate/up product and
/// SwiGLU in one kernel) against MLX's logits, prefill of 3 tokens and then token by token. The
/// tolerance is models_mlx.rs's for the int8 product (15 % of max(1, max|logit|) per row: the
/// CPU's int8 path measured up to 5.6 %); a wrong norm or gate/up split gives errors of the
/// order of the logits. Not the MoE fixtures: routing near-ties flip under int8 noise (see
/// models_mlx.rs); their fused ops are checked in rmlx's moe_fused.rs.
#[test]
fn tiny_quantized_models_decode_like_mlx_on_gpu() {
    let Some((dev, _serial)) = gpu() else { return };
    for name in ["llama_q4", "qwen2_q4", "qwen3_q4", "gemma3_q4"] {
        with_exact_decode(false, || {
            rmlx::with_device(dev, || {
                let dir = fixture(name);
                let (model, _) = load_model(&dir, &LoadOptions::default()).unwrap();
                let (tokens, want, v) = mlx_reference(&dir);
                let ids = |s: &[u32]| Array::from_slice(s, &[1, s.len()]).unwrap();
                let f32s = |a: &Array| rmlx::ops::astype(a, Dtype::F32).to_vec::<f32>().unwrap();
                let mut caches = model.make_caches();
                let mut worst = 0.0f32;
                let mut check = |what: String, got: &[f32], want: &[f32]| {
                    for (g, w) in got.chunks(v).zip(want.chunks(v)) {
                        let (d, scale) = max_abs_diff(g, w);
                        worst = worst.max(d / scale);
                        assert!(d <= 0.15 * scale, "{name} {what}: |Δ| {d} of scale {scale}");
                    }
                };
                let first = f32s(&model.forward(&ids(&tokens[..3]), &mut caches).unwrap());
                check("prefill 0..3".into(), &first, &want[..3 * v]);
                for i in 3..tokens.len() {
                    let step = f32s(&model.forward(&ids(&tokens[i..i + 1]), &mut caches).unwrap());
                    check(format!("step {i}"), &step, &want[i * v..(i + 1) * v]);
                }
                eprintln!(
                    "{name}: GPU int8 decode vs MLX worst |Δ| {:.1} % of the row scale",
                    100.0 * worst
                );
            })
        });
    }
}

/// On a GPU a decode step on a quantized cache attends over its packed rows in place (one
/// kernel, `fast::quantized_sdpa_decode`): the model's logits stay within the cache's
/// quantization error of the same model on a standard cache (prefill and decode steps, 8- and
/// 4-bit; on the CPU, `quantized_attention.rs` measured the 8-bit cache at 5.7e-3 of the
/// largest logit), and greedy tokens agree with the CPU's on the same quantized cache.
#[test]
fn quantized_cache_decode_on_gpu_stays_near_a_standard_cache() {
    let Some((dev, _serial)) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("rmlx_gpu_qdecode_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    peaked_llama(&dir);
    let tokens: Vec<u32> = vec![5, 17, 42, 7, 99, 3, 250, 11, 64, 128, 9, 33];
    let ids = |t: &[u32]| Array::from_slice(t, &[1, t.len()]).unwrap();
    let row = |l: &Array| rmlx::ops::astype(l, Dtype::F32).to_vec::<f32>().unwrap();
    for (bits, tol) in [(8, 2e-2f32), (4, 1.5e-1)] {
        let quantized = |model: &Model| {
            let mut c = model.make_caches();
            KvCache::quantize_standard(&mut c, bits, 64).unwrap();
            c
        };
        // the CPU's logits on the quantized cache, every step
        let (cpu_model, _) = load_model(&dir, &LoadOptions::default()).unwrap();
        let mut cq = quantized(&cpu_model);
        let mut cpu = vec![row(&cpu_model
            .forward_last(&ids(&tokens[..6]), &mut cq)
            .unwrap())];
        for i in 6..tokens.len() {
            cpu.push(row(&cpu_model
                .forward_last(&ids(&tokens[i..i + 1]), &mut cq)
                .unwrap()));
        }
        rmlx::with_device(dev, || {
            let (model, _) = load_model(&dir, &LoadOptions::default()).unwrap();
            let (mut standard, mut q) = (model.make_caches(), quantized(&model));
            let mut worst = 0.0f32;
            for (step, span) in std::iter::once(&tokens[..6])
                .chain((6..tokens.len()).map(|i| &tokens[i..i + 1]))
                .enumerate()
            {
                let a = row(&model.forward_last(&ids(span), &mut standard).unwrap());
                let b = row(&model.forward_last(&ids(span), &mut q).unwrap());
                let (d, scale) = max_abs_diff(&b, &a);
                worst = worst.max(d / scale);
                assert_logits_close_rel(
                    &format!("{bits}-bit cache on GPU, step {step}, against the CPU"),
                    &b,
                    &cpu[step],
                    1e-3,
                );
            }
            eprintln!("{bits}-bit cache on GPU: worst relative logit difference to a standard cache {worst:.1e}");
            assert!(
                worst > 0.0,
                "the quantized cache changed nothing: was it used?"
            );
            assert!(
                worst < tol,
                "{bits}-bit cache: logits off by {worst:e} of the largest"
            );
        });
    }
    std::fs::remove_dir_all(&dir).ok();
}
