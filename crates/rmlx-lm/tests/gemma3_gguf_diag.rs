//! Diagnostic (ignored; run with `--ignored --nocapture`): Gemma 3 270M Q4_K_M GGUF from
//! `~/.cache/rmlx/models/`. Checks quantized_matmul against dequantize + matmul for layer 0's
//! tensor types (Q5_0, Q8_0, Q4_K, Q6_K), dumps layer 0 dequantized to
//! `$TMPDIR/rmlx_gemma_blk0.safetensors` (compare with gguf-py's `dequantize`), prints the
//! prompt's top-5 logits (compare with llama.cpp `logits_all`), the greedy continuation with the
//! exact and the default product, and cached decode vs full pass. `GEMMA_DIAG_CHAT=1` uses the
//! chat-templated prompt instead of the raw one.
//!
//! Findings (2026-11-26): rmlx's top-5 equal llama.cpp's at every position of both prompts
//! (logits within ~0.45); the raw prompt's 16 greedy tokens equal llama.cpp's ("\n\nThe capital
//! of France is Paris.\n\n..."). This GGUF is the *base* model ("Gemma 3 270m", no -it): with
//! the chat template it echoes the question and then faces a flat distribution (all logits ≈ −5
//! to −6 in both llama.cpp and rmlx), hence the "garbage" token; not an import bug.
use rmlx::io::gguf::{GgufFile, Tensor};
use rmlx::ops::quantized::with_exact_decode;
use rmlx::{ops, Array, Dtype};

#[test]
#[ignore]
fn gemma3_gguf_dump() {
    let home = std::env::var("HOME").unwrap();
    let path = std::path::PathBuf::from(home).join(".cache/rmlx/models/gemma-3-270m-q4_k_m.gguf");
    if !path.is_file() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let g = GgufFile::open(&path).unwrap();
    let mut out: Vec<(String, Array)> = vec![];
    for t in g.tensors() {
        if !(t.name.starts_with("blk.0.") || t.name == "token_embd.weight") {
            continue;
        }
        let a = match g.load(&t.name).unwrap() {
            Tensor::Dense(a) => ops::astype(&a, Dtype::F32),
            Tensor::Quantized {
                wq,
                scales,
                biases,
                group_size,
                bits,
            } => {
                let d = ops::astype(
                    &ops::dequantize(&wq, &scales, &biases, group_size, bits).unwrap(),
                    Dtype::F32,
                );
                if t.name != "token_embd.weight" {
                    let k = d.shape()[1];
                    for m in [1usize, 12] {
                        for exact in [true, false] {
                            with_exact_decode(exact, || {
                                let x =
                                    rmlx::random::normal(&[1, m, k], Dtype::F32, 0.0, 1.0, None)
                                        .unwrap();
                                let got = ops::quantized_matmul(
                                    &x, &wq, &scales, &biases, true, group_size, bits,
                                )
                                .unwrap();
                                let want =
                                    ops::matmul(&x, &ops::transpose(&d, None).unwrap()).unwrap();
                                let got = ops::astype(&got, Dtype::F32).to_vec::<f32>().unwrap();
                                let want = want.to_vec::<f32>().unwrap();
                                let worst = got
                                    .iter()
                                    .zip(&want)
                                    .map(|(a, b)| (a - b).abs())
                                    .fold(0.0f32, f32::max);
                                let sc = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
                                eprintln!("{} bits {bits} gs {group_size} M={m} exact={exact}: max |Δ| {worst} (scale {sc})", t.name);
                            });
                        }
                    }
                }
                d
            }
        };
        let a = if t.name == "token_embd.weight" {
            ops::contiguous(&ops::slice(&a, &[0, 0], &[512, 640], &[1, 1]).unwrap())
        } else {
            ops::contiguous(&a)
        };
        a.eval().unwrap();
        out.push((t.name.clone(), a));
    }
    let refs: Vec<(String, &Array)> = out.iter().map(|(k, a)| (k.clone(), a)).collect();
    rmlx::io::save_safetensors(
        std::env::temp_dir().join("rmlx_gemma_blk0.safetensors"),
        &refs,
        &Default::default(),
    )
    .unwrap();

    let lm = rmlx_lm::load::load(&path, &Default::default()).unwrap();
    let toks: Vec<u32> = match std::env::var("GEMMA_DIAG_CHAT") {
        Ok(_) => vec![
            2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 106, 107, 105, 4368, 107,
            3689, 563, 506, 5279, 529, 7001, 236881,
        ],
        Err(_) => vec![2, 3689, 563, 506, 5279, 529, 7001, 236881],
    };
    eprintln!(
        "rmlx tokens {:?}",
        lm.tokenizer
            .encode("What is the capital of France?", true)
            .unwrap()
    );
    let x = Array::from_slice(&toks, &[1, toks.len()]).unwrap();
    let logits = lm.model.forward(&x, &mut []).unwrap();
    let v = logits.shape()[2];
    let l = ops::astype(&logits, Dtype::F32).to_vec::<f32>().unwrap();
    for p in 0..toks.len() {
        let row = &l[p * v..(p + 1) * v];
        let mut idx: Vec<usize> = (0..v).collect();
        idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        eprintln!(
            "{p} {:?}",
            idx[..5].iter().map(|&i| (i, row[i])).collect::<Vec<_>>()
        );
    }

    for exact in [true, false] {
        with_exact_decode(exact, || {
            let opts = rmlx_lm::generate::GenerateOptions {
                max_tokens: 16,
                ..Default::default()
            };
            let got: Vec<u32> =
                rmlx_lm::generate::stream_generate(lm.model.as_ref(), &lm.tokenizer, &toks, &opts)
                    .unwrap()
                    .map(|r| r.unwrap().token)
                    .collect();
            eprintln!(
                "greedy exact={exact}: {got:?} {:?}",
                lm.tokenizer.decode(&got)
            );
            // Cached decode vs full pass.
            let mut caches = lm.model.make_caches();
            let mut seq = toks.clone();
            let _ = lm.model.forward(&x, &mut caches).unwrap();
            for &t in &got[..6] {
                seq.push(t);
                let step = ops::astype(
                    &lm.model
                        .forward(&Array::from_slice(&[t], &[1, 1]).unwrap(), &mut caches)
                        .unwrap(),
                    Dtype::F32,
                )
                .to_vec::<f32>()
                .unwrap();
                let full = ops::astype(
                    &lm.model
                        .forward_last(&Array::from_slice(&seq, &[1, seq.len()]).unwrap(), &mut [])
                        .unwrap(),
                    Dtype::F32,
                )
                .to_vec::<f32>()
                .unwrap();
                let worst = step
                    .iter()
                    .zip(&full)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                eprintln!("  step len {}: cached vs full max |Δ| {worst}", seq.len());
            }
        });
    }
}
