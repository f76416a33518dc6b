//! Generation: chunked prefill, then one token per step through the sampler, as a stream of
//! responses carrying the new text and mlx-lm's statistics. `generate` collects the text.

use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::graph_decode::ReplayDecoder;
use crate::models::LanguageModel;
use crate::sample::{Sampler, SamplerSettings};
use crate::stop::StopText;
use crate::tokenizer::{StreamingDetokenizer, Tokenizer};
use rmlx::ops::quantized::DECODE_FAMILY_ROWS;
use rmlx::{ops, Array, Dtype};
use std::time::Instant;

/// Generation settings (mlx-lm's names).
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampler: SamplerSettings,
    /// Generation stops when the text contains one of these; the stop string is not returned.
    pub stop: Vec<String>,
    /// Prompt tokens per forward pass during prefill.
    pub prefill_step_size: usize,
    /// Quantize the KV cache of full-attention layers to this many bits (4 or 8).
    pub kv_bits: Option<usize>,
    pub kv_group_size: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerSettings::default(),
            stop: Vec::new(),
            prefill_step_size: 512,
            kv_bits: None,
            kv_group_size: 64,
        }
    }
}

/// One step of a generation stream.
#[derive(Clone, Debug)]
pub struct GenerationResponse {
    /// Text completed by this step (may be empty mid-character).
    pub text: String,
    pub token: u32,
    /// Log-probabilities over the vocabulary for this step, `[vocab]`.
    pub logprobs: Option<Array>,
    pub prompt_tokens: usize,
    pub prompt_tps: f64,
    pub generation_tokens: usize,
    pub generation_tps: f64,
    /// Peak rmlx memory so far, in GB (1e9 bytes).
    pub peak_memory: f64,
    /// `Some("stop")` (EOS or stop string) or `Some("length")` on the last response.
    pub finish_reason: Option<String>,
}

/// The iterator `stream_generate` returns.
pub struct TokenStream<'a> {
    model: &'a dyn LanguageModel,
    opts: GenerateOptions,
    eos: Vec<u32>,
    caches: Vec<KvCache>,
    sampler: Sampler,
    detok: StreamingDetokenizer,
    /// Prompt plus generated tokens (the sampler's repetition history).
    history: Vec<u32>,
    prompt_len: usize,
    /// The sampled token not yet handed out, with its logprobs.
    next: Option<(u32, Array)>,
    /// Text produced but held back because it may be the start of a stop string.
    held: StopText,
    n: usize,
    start: Instant,
    prompt_tps: f64,
    gen_start: Option<Instant>,
    done: bool,
    /// GPU decode steps by graph replay (`graph_decode.rs`).
    replay: ReplayDecoder,
}

/// Streams generated tokens for `prompt` (token ids, already templated).
pub fn stream_generate<'a>(
    model: &'a dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<TokenStream<'a>> {
    check_prompt(model, prompt)?;
    let caches = make_caches(model, opts)?;
    let replay = ReplayDecoder::new(rmlx::current_device(), &caches);
    let mut eos: Vec<u32> = tokenizer.eos_token_ids().to_vec();
    eos.extend(model.config().eos_token_ids.iter().copied());
    Ok(TokenStream {
        model,
        opts: GenerateOptions {
            prefill_step_size: opts.prefill_step_size.max(1),
            ..opts.clone()
        },
        eos,
        caches,
        sampler: Sampler::new(opts.sampler.clone()),
        detok: StreamingDetokenizer::new(tokenizer),
        history: prompt.to_vec(),
        prompt_len: prompt.len(),
        next: None,
        held: StopText::new(&opts.stop),
        n: 0,
        start: Instant::now(),
        prompt_tps: 0.0,
        gen_start: None,
        done: opts.max_tokens == 0,
        replay,
    })
}

/// Rows of the next prefill chunk when `rest` prompt tokens are left: `step`, except that no
/// chunk is left with at most `DECODE_FAMILY_ROWS` rows (the last chunk takes them), and a
/// chunk has more rows than that whenever the prompt does. So every token of a longer prompt
/// goes through the prefill kernels whatever the chunking, and a prefix reused from the prefix
/// cache gives the tokens of a fresh prefill (up to the rounding of a different GEMM blocking)
/// rather than the int8 decode kernels' approximation.
pub(crate) fn prefill_chunk(rest: usize, step: usize) -> usize {
    let step = step.max(DECODE_FAMILY_ROWS + 1);
    if rest <= step + DECODE_FAMILY_ROWS {
        rest
    } else {
        step
    }
}

/// Checks a prompt: not empty, within the context, every id inside the vocabulary.
pub(crate) fn check_prompt(model: &dyn LanguageModel, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(LmError::Generate(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let cfg = model.config();
    if let Some(ctx) = cfg.max_position_embeddings {
        if prompt.len() > ctx {
            return Err(LmError::Generate(format!(
                "the prompt has {} tokens, more than the model's context of {ctx}; shorten it",
                prompt.len()
            )));
        }
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(LmError::Generate(format!(
            "prompt token {bad} is outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// The model's caches, quantized for full-attention layers when `opts.kv_bits` asks.
pub(crate) fn make_caches(
    model: &dyn LanguageModel,
    opts: &GenerateOptions,
) -> Result<Vec<KvCache>> {
    let mut caches = model.make_caches();
    if let Some(bits) = opts.kv_bits {
        KvCache::quantize_standard(&mut caches, bits, opts.kv_group_size)?;
    }
    Ok(caches)
}

/// Generates and returns the whole text.
pub fn generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<String> {
    let mut text = String::new();
    for r in stream_generate(model, tokenizer, prompt, opts)? {
        text.push_str(&r?.text);
    }
    Ok(text)
}

impl TokenStream<'_> {
    /// Greedy with no logit processors: the token is the argmax of the raw logits, which the
    /// GPU computes, so nothing but the id needs to reach the host.
    fn plain_greedy(&self) -> bool {
        let s = self.sampler.settings();
        s.is_greedy() && s.logit_bias.is_empty()
    }

    /// One decode step through graph replay, when it applies (`None`: take the ordinary path).
    fn graph_step(&mut self, token: u32) -> Result<Option<(u32, Array)>> {
        if !self.replay.step(self.model, &mut self.caches, token)? {
            return Ok(None);
        }
        if self.plain_greedy() {
            let id = self.replay.argmax()?;
            let logits = self.replay.logits()?;
            return self.finish_sample(logits, Some(id)).map(Some);
        }
        let logits = self.replay.logits_host()?;
        self.finish_sample(logits, None).map(Some)
    }

    /// Samples from f32 logits `[1, vocab]`; `argmax`, when given (plain greedy sampling,
    /// computed on the device), is the token and the log-probabilities stay lazy.
    fn finish_sample(&mut self, logits: Array, argmax: Option<u32>) -> Result<(u32, Array)> {
        if let Some(id) = argmax {
            let lse = ops::logsumexp(&logits, Some(&[-1]), true)?;
            let lp = ops::subtract(&logits, &lse)?;
            return Ok((id, ops::squeeze(&lp, &[0])?));
        }
        let (ids, logprobs) = self
            .sampler
            .sample(&logits, std::slice::from_ref(&self.history))?;
        let id = *ids
            .first()
            .ok_or_else(|| LmError::Generate("the sampler returned no token".into()))?;
        Ok((id, ops::squeeze(&logprobs, &[0])?))
    }

    /// Runs `tokens` through the model and samples the next token.
    fn step(&mut self, tokens: &[u32]) -> Result<(u32, Array)> {
        if let [token] = tokens {
            if let Some(r) = self.graph_step(*token)? {
                return Ok(r);
            }
        }
        let x = Array::from_slice(tokens, &[1, tokens.len()])?;
        let logits = self.model.forward_last(&x, &mut self.caches)?;
        self.finish_sample(ops::astype(&logits, Dtype::F32), None)
    }

    /// Prefill in chunks of `prefill_step_size`, then the first sampled token.
    fn prefill(&mut self) -> Result<(u32, Array)> {
        let prompt = self.history.clone();
        let step = self.opts.prefill_step_size;
        let mut rest = &prompt[..];
        loop {
            let n = prefill_chunk(rest.len(), step);
            if n == rest.len() {
                break;
            }
            let x = Array::from_slice(&rest[..n], &[1, n])?;
            // Evaluating the last logits runs every layer, so the caches hold the chunk after it.
            self.model.forward_last(&x, &mut self.caches)?.eval()?;
            rest = &rest[n..];
        }
        let out = self.step(rest)?;
        let t = self.start.elapsed().as_secs_f64();
        self.prompt_tps = self.prompt_len as f64 / t.max(1e-9);
        self.gen_start = Some(Instant::now());
        Ok(out)
    }

    fn response(
        &self,
        text: String,
        token: u32,
        logprobs: Array,
        finish: Option<&str>,
    ) -> GenerationResponse {
        let gen_t = self.gen_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        GenerationResponse {
            text,
            token,
            logprobs: Some(logprobs),
            prompt_tokens: self.prompt_len,
            prompt_tps: self.prompt_tps,
            generation_tokens: self.n,
            generation_tps: if gen_t > 0.0 {
                self.n as f64 / gen_t
            } else {
                0.0
            },
            peak_memory: rmlx::peak_memory() as f64 / 1e9,
            finish_reason: finish.map(str::to_string),
        }
    }

    fn advance(&mut self) -> Result<GenerationResponse> {
        let (token, logprobs) = match self.next.take() {
            Some(t) => t,
            None => self.prefill()?,
        };
        self.n += 1;
        if self.eos.contains(&token) {
            self.done = true;
            let mut text = self.held.take();
            text.push_str(&self.detok.finalize());
            return Ok(self.response(text, token, logprobs, Some("stop")));
        }
        self.history.push(token);
        let piece = self.detok.add_token(token);
        let (text, stopped) = self.held.push(&piece);
        if let Some(before) = stopped {
            self.done = true;
            return Ok(self.response(text + &before, token, logprobs, Some("stop")));
        }
        if self.n >= self.opts.max_tokens {
            self.done = true;
            let (mut text2, stopped) = self.held.push(&self.detok.finalize());
            if let Some(before) = stopped {
                return Ok(self.response(text + &before, token, logprobs, Some("stop")));
            }
            text2.push_str(&self.held.take());
            return Ok(self.response(text + &text2, token, logprobs, Some("length")));
        }
        // Compute the following token before handing this one out (mlx-lm's order).
        self.next = Some(self.step(&[token])?);
        Ok(self.response(text, token, logprobs, None))
    }
}

impl Iterator for TokenStream<'_> {
    type Item = Result<GenerationResponse>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.advance();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}
