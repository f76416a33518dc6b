//! `rmlx bench`: mlx_lm.benchmark's measurement and exactly its output lines. Random prompt
//! tokens, a warm-up trial, then per trial a chunked prefill and greedy decoding of a fixed
//! number of tokens (EOS does not stop a benchmark).

use crate::{load_or_random, CliResult, KvArgs, ModelArgs, RandomWeightsArgs};
use clap::Args;
use rmlx::{ops, Array};
use rmlx_lm::cache::KvCache;
use rmlx_lm::graph_decode::ReplayDecoder;
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
    /// The KV cache quantized as `rmlx generate --kv-bits` does; single runs only (one batch
    /// size, not `--ragged`).
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    random: RandomWeightsArgs,
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

/// Peak memory of the device the benchmark runs on (GPU memory on a GPU, as mlx_lm reports).
fn peak() -> usize {
    let d = rmlx::default_device();
    match d.kind {
        rmlx::DeviceType::Gpu => rmlx::cuda::peak_memory(d.index),
        rmlx::DeviceType::Cpu => rmlx::peak_memory(),
    }
}

fn reset_peak() {
    let d = rmlx::default_device();
    match d.kind {
        rmlx::DeviceType::Gpu => rmlx::cuda::reset_peak_memory(d.index),
        rmlx::DeviceType::Cpu => rmlx::reset_peak_memory(),
    }
}

/// Waits until the default device has finished everything queued: `eval` on a GPU only
/// queues the work, and a timer stopped before it finishes measures the host, not the GPU.
fn sync() -> CliResult<()> {
    let dev = rmlx::default_device();
    rmlx::backend_for(dev)
        .map_err(err)?
        .synchronize(dev.index)
        .map_err(err)
}

/// Greedy next tokens from logits `[B, V]`.
fn argmax_tokens(logits: &Array) -> CliResult<Array> {
    let t = ops::argmax(logits, Some(-1), false).map_err(err)?; // [B]
    let b = t.shape()[0] as i64;
    let t = ops::reshape(&t, &[b, 1]).map_err(err)?;
    t.eval().map_err(err)?;
    Ok(t)
}

fn trial(
    model: &dyn LanguageModel,
    prompt: &[u32],
    a: &BenchArgs,
    kernels: &mut usize,
) -> CliResult<Trial> {
    reset_peak();
    let (b, l) = (a.batch_sizes[0], a.prompt_tokens);
    let step = a.prefill_step_size.max(1);
    let mut caches = model.make_caches();
    if let Some(bits) = a.kv.kv_bits {
        KvCache::quantize_standard(&mut caches, bits, a.kv.kv_group_size).map_err(err)?;
    }
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
    sync()?;
    let prompt_time = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // Batch 1 on a GPU decodes by replaying a recorded step (rmlx_lm::graph_decode).
    let mut replay = ReplayDecoder::new(rmlx::default_device(), &caches);
    for _ in 1..a.generation_tokens {
        if b == 1 {
            let id = tok.item::<u32>().map_err(err)?;
            if replay.step(model, &mut caches, id).map_err(err)? {
                let next = replay.argmax().map_err(err)?;
                tok = Array::from_slice(&[next], &[1, 1]).map_err(err)?;
                continue;
            }
        }
        let out = model.forward_last(&tok, &mut caches).map_err(err)?;
        tok = argmax_tokens(&out)?;
    }
    *kernels = replay.kernels();
    sync()?;
    let gen_time = t1.elapsed().as_secs_f64();
    let gen_n = a.generation_tokens.saturating_sub(1);
    Ok(Trial {
        prompt_tps: l as f64 / prompt_time,
        generation_tps: if gen_n == 0 {
            0.0
        } else {
            gen_n as f64 / gen_time
        },
        peak_memory: peak() as f64 / 1e9,
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
    a.kv.check()?;
    if a.kv.kv_bits.is_some() && (a.ragged || a.batch_sizes.len() > 1) {
        return Err("--kv-bits applies to a single run (one --batch-size, not --ragged)".into());
    }
    let (m, load_s, made) = load_or_random(&a.model, &a.random)?;
    let (model, tokenizer) = (m.model, m.tokenizer);
    if a.ragged || a.batch_sizes.len() > 1 {
        eprintln!("Loaded the model in {load_s:.3} s");
        return crate::bench_batch::run(
            model.as_ref(),
            &tokenizer,
            &a.batch_sizes,
            a.prompt_tokens,
            a.generation_tokens,
            a.num_trials,
        );
    }
    let model = model.as_ref();
    let cfg = model.config();
    if let Some(ctx) = cfg.max_position_embeddings {
        if a.prompt_tokens + a.generation_tokens > ctx {
            return Err(format!(
                "--prompt-tokens + --generation-tokens = {} exceeds the model's context of {ctx}",
                a.prompt_tokens + a.generation_tokens
            ));
        }
    }
    let vocab = cfg.vocab_size as u32;
    let mut rng = fastrand::Rng::with_seed(0);
    let prompt: Vec<u32> = (0..a.batch_sizes[0] * a.prompt_tokens)
        .map(|_| rng.u32(0..vocab))
        .collect();
    eprintln!("Loaded the model in {load_s:.3} s; running a warm-up trial");
    let mut kernels = 0;
    trial(model, &prompt, &a, &mut kernels)?;
    let mut trials = Vec::with_capacity(a.num_trials);
    for i in 0..a.num_trials {
        let t = trial(model, &prompt, &a, &mut kernels)?;
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
    if kernels > 0 {
        println!("Decode step replayed as a CUDA graph of {kernels} kernels and copies");
    }
    if let Some(table) = rmlx::cuda::profile::report() {
        eprint!("{table}");
    }
    if !made.is_empty() {
        roofline(model, &made, &a, mean(|t| t.generation_tps))?;
    }
    Ok(())
}

/// The decode roofline of a random-weight model: bytes one generated token must read (every
/// weight once, a mixture's experts only top-k of them, the embedding table only one row when
/// the head is untied; plus the KV cache at the mean context), over the copy bandwidth measured here, now.
fn roofline(
    model: &dyn LanguageModel,
    made: &[(String, usize)],
    a: &BenchArgs,
    gen_tps: f64,
) -> CliResult<()> {
    let c = model.config();
    let embed: usize = made
        .iter()
        .filter(|(n, _)| n.contains("embed_tokens"))
        .map(|(_, b)| b)
        .sum();
    // a mixture reads only its active experts: top-k of each expert stack
    let share = |n: &str| {
        if n.contains("switch_mlp") && c.num_experts > 0 {
            c.num_experts_per_tok as f64 / c.num_experts as f64
        } else {
            1.0
        }
    };
    let all = made.iter().map(|(n, b)| *b as f64 * share(n)).sum::<f64>() as usize;
    let tied = !made.iter().any(|(n, _)| n.starts_with("lm_head"));
    let weights = if tied { all } else { all - embed };
    let ctx = a.prompt_tokens + a.generation_tokens / 2;
    let act = made
        .iter()
        .find(|(n, _)| n.ends_with("input_layernorm.weight"))
        .map_or(2, |(_, b)| b / c.hidden_size.max(1));
    // a quantized cache: `bits` per element plus a scale and a bias per group, in the dtype the
    // standard cache would hold
    let kv_elems = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * ctx;
    let kv = match a.kv.kv_bits {
        Some(bits) => kv_elems * bits / 8 + kv_elems / a.kv.kv_group_size.max(1) * 2 * act,
        None => kv_elems * act,
    };
    let b = a.batch_sizes[0].max(1);
    let per_step = weights + kv * b;
    let bw = copy_bandwidth()?;
    let roof = bw / per_step as f64 * b as f64;
    println!(
        "Roofline: {:.1} MB per decode step ({:.1} MB weights, {:.1} MB KV per sequence at context {ctx}), copy bandwidth {:.0} GB/s -> {:.1} tok/s; generation at {:.1}% of it",
        per_step as f64 / 1e6,
        weights as f64 / 1e6,
        kv as f64 / 1e6,
        bw / 1e9,
        roof,
        100.0 * gen_tps * b as f64 / roof
    );
    Ok(())
}

/// Bytes read plus written per second by an elementwise pass (a contiguous negation, the
/// kernel closest to a plain copy) over 1 GiB on the default device (median of 9).
fn copy_bandwidth() -> CliResult<f64> {
    let n = 1usize << 28; // f32: 1 GiB
    let x = ops::astype(
        &rmlx::random::bits(&[n], None).map_err(err)?,
        rmlx::Dtype::F32,
    );
    x.eval().map_err(err)?;
    let mut times = Vec::new();
    for _ in 0..10 {
        sync()?;
        let t = Instant::now();
        let y = ops::neg(&x);
        y.eval().map_err(err)?;
        sync()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n * 4) as f64 / times[times.len() / 2])
}
