//! `rmlx bench`: mlx_lm.benchmark's measurement and exactly its output lines. Random prompt
//! tokens, a warm-up trial, then per trial a chunked prefill and greedy decoding of a fixed
//! number of tokens (EOS does not stop a benchmark).

use crate::{load_model, CliResult, ModelArgs};
use clap::Args;
use rmlx::{ops, Array};
use rmlx_lm::models::LanguageModel;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "prompt-tokens", short = 'p', default_value_t = 512)]
    prompt_tokens: usize,
    #[arg(long = "generation-tokens", short = 'g', default_value_t = 1024)]
    generation_tokens: usize,
    #[arg(long = "num-trials", short = 'n', default_value_t = 5)]
    num_trials: usize,
    /// Sequences per batch; a list (`-b 1,4,16`) or `--ragged` runs the batch engine (ragged
    /// per-sequence caches) once per size and prints total generation tok/s.
    #[arg(
        long = "batch-size",
        short = 'b',
        default_value = "1",
        value_delimiter = ','
    )]
    batch_sizes: Vec<usize>,
    /// Benchmark the batch engine (continuous batching's) instead of one rectangular batch.
    #[arg(long)]
    ragged: bool,
    /// Prompt tokens per forward pass during prefill.
    #[arg(long = "prefill-step-size", default_value_t = 512)]
    prefill_step_size: usize,
}

/// One trial's figures (tokens per second per sequence, as mlx_lm reports them; GB; seconds).
struct Trial {
    prompt_tps: f64,
    generation_tps: f64,
    peak_memory: f64,
    total_time: f64,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Greedy next tokens from logits `[B, V]`.
fn argmax_tokens(logits: &Array) -> CliResult<Array> {
    let t = ops::argmax(logits, Some(-1), false).map_err(err)?; // [B]
    let b = t.shape()[0] as i64;
    let t = ops::reshape(&t, &[b, 1]).map_err(err)?;
    t.eval().map_err(err)?;
    Ok(t)
}

fn trial(model: &dyn LanguageModel, prompt: &[u32], a: &BenchArgs) -> CliResult<Trial> {
    rmlx::reset_peak_memory();
    let (b, l) = (a.batch_sizes[0], a.prompt_tokens);
    let step = a.prefill_step_size.max(1);
    let mut caches = model.make_caches();
    let t0 = Instant::now();
    let mut start = 0;
    let mut logits = None;
    while start < l {
        let end = (start + step).min(l);
        let chunk: Vec<u32> = (0..b)
            .flat_map(|i| prompt[i * l + start..i * l + end].iter().copied())
            .collect();
        let x = Array::from_slice(&chunk, &[b, end - start]).map_err(err)?;
        let out = model.forward_last(&x, &mut caches).map_err(err)?;
        out.eval().map_err(err)?;
        logits = Some(out);
        start = end;
    }
    let mut tok = argmax_tokens(logits.as_ref().ok_or("empty prompt")?)?;
    let prompt_time = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 1..a.generation_tokens {
        let out = model.forward_last(&tok, &mut caches).map_err(err)?;
        tok = argmax_tokens(&out)?;
    }
    let gen_time = t1.elapsed().as_secs_f64();
    let gen_n = a.generation_tokens.saturating_sub(1);
    Ok(Trial {
        prompt_tps: l as f64 / prompt_time,
        generation_tps: if gen_n == 0 {
            0.0
        } else {
            gen_n as f64 / gen_time
        },
        peak_memory: rmlx::peak_memory() as f64 / 1e9,
        total_time: t0.elapsed().as_secs_f64(),
    })
}

pub fn run(a: BenchArgs) -> CliResult<()> {
    if a.prompt_tokens == 0
        || a.generation_tokens == 0
        || a.num_trials == 0
        || a.batch_sizes.is_empty()
        || a.batch_sizes.contains(&0)
    {
        return Err(
            "--prompt-tokens, --generation-tokens, --num-trials and --batch-size must be >= 1"
                .into(),
        );
    }
    let (m, load_s) = load_model(&a.model)?;
    let model = m.model.as_ref();
    let cfg = model.config();
    if let Some(ctx) = cfg.max_position_embeddings {
        if a.prompt_tokens + a.generation_tokens > ctx {
            return Err(format!(
                "--prompt-tokens + --generation-tokens = {} exceeds the model's context of {ctx}",
                a.prompt_tokens + a.generation_tokens
            ));
        }
    }
    if a.ragged || a.batch_sizes.len() > 1 {
        eprintln!("Loaded the model in {load_s:.3} s");
        return crate::bench_batch::run(
            &m,
            &a.batch_sizes,
            a.prompt_tokens,
            a.generation_tokens,
            a.num_trials,
        );
    }
    let vocab = cfg.vocab_size as u32;
    let mut rng = fastrand::Rng::with_seed(0);
    let prompt: Vec<u32> = (0..a.batch_sizes[0] * a.prompt_tokens)
        .map(|_| rng.u32(0..vocab))
        .collect();
    eprintln!("Loaded the model in {load_s:.3} s; running a warm-up trial");
    trial(model, &prompt, &a)?;
    let mut trials = Vec::with_capacity(a.num_trials);
    for i in 0..a.num_trials {
        let t = trial(model, &prompt, &a)?;
        println!(
            "Trial {}: prompt_tps={:.3}, generation_tps={:.3}, peak_memory={:.3}, total_time={:.3}",
            i + 1,
            t.prompt_tps,
            t.generation_tps,
            t.peak_memory,
            t.total_time
        );
        trials.push(t);
    }
    let n = trials.len() as f64;
    let mean = |f: fn(&Trial) -> f64| trials.iter().map(f).sum::<f64>() / n;
    println!(
        "Averages: prompt_tps={:.3}, generation_tps={:.3}, peak_memory={:.3}",
        mean(|t| t.prompt_tps),
        mean(|t| t.generation_tps),
        mean(|t| t.peak_memory)
    );
    Ok(())
}
