//! `rmlx bench -b 1,4,16` (or `--ragged`): total generation throughput of the batch engine
//! (`rmlx_lm::batch`, ragged per-sequence caches, one forward pass over up to 8 sequences per
//! decode step). Each size runs `num_trials` times after a warm-up; prompts are random tokens
//! of different lengths (½ to 1½ × `prompt_tokens`, from a seeded generator, so every run sees the
//! same ones), EOS is masked out (logit bias) so every sequence generates exactly
//! `generation_tokens`. A random-weight model has no tokenizer: it runs with `Tokenizer::ids_only`,
//! whose detokenizing is cheaper than a real vocabulary's.

use crate::CliResult;
use rmlx_lm::batch::{batch_generate, BatchOptions, SeqRequest};
use rmlx_lm::generate::GenerateOptions;
use rmlx_lm::models::LanguageModel;
use rmlx_lm::sample::SamplerSettings;
use rmlx_lm::tokenizer::Tokenizer;

pub fn run(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    sizes: &[usize],
    prompt_tokens: usize,
    generation_tokens: usize,
    trials: usize,
) -> CliResult<()> {
    let vocab = model.config().vocab_size as u32;
    let mut eos: Vec<u32> = tokenizer.eos_token_ids().to_vec();
    eos.extend(model.config().eos_token_ids.iter().copied());
    let opts = GenerateOptions {
        max_tokens: generation_tokens,
        sampler: SamplerSettings {
            logit_bias: eos.iter().map(|&t| (t, -1e9)).collect(),
            ..SamplerSettings::default()
        },
        ..GenerateOptions::default()
    };
    let mut rng = fastrand::Rng::with_seed(0);
    for &b in sizes {
        let reqs: Vec<SeqRequest> = (0..b)
            .map(|i| {
                let len = (prompt_tokens / 2 + prompt_tokens * i / b.max(1)).max(1);
                let p = (0..len).map(|_| rng.u32(0..vocab)).collect();
                SeqRequest::new(p, opts.clone())
            })
            .collect();
        let go = || batch_generate(model, tokenizer, reqs.clone(), &BatchOptions::default());
        go().map_err(|e| e.to_string())?; // warm-up
        let (mut gen_tps, mut prompt_tps) = (0.0, 0.0);
        for _ in 0..trials {
            rmlx::reset_peak_memory();
            let (_, st) = go().map_err(|e| e.to_string())?;
            // Tokens after each sequence's first (which comes out of its prefill) over decode time.
            gen_tps += (st.generation_tokens - b) as f64 / st.decode_secs.max(1e-9);
            prompt_tps += st.prompt_tokens as f64 / st.prefill_secs.max(1e-9);
        }
        let n = trials as f64;
        println!(
            "batch_size={b}, generation_tps={:.3}, per_sequence_tps={:.3}, prompt_tps={:.3}, peak_memory={:.3}",
            gen_tps / n,
            gen_tps / n / b as f64,
            prompt_tps / n,
            rmlx::peak_memory() as f64 / 1e9
        );
    }
    Ok(())
}
