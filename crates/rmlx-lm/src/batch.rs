//! Batched generation over ragged sequences: every sequence keeps its own KV caches (nothing
//! is left-padded to the longest), its own sampler (settings and seed) and its own stop
//! conditions. Each decode step runs the model once over the decoding sequences
//! (`LanguageModel::forward_rows`: one matmul per weight for all rows; attention per sequence
//! on the CPU, one `fast::sdpa_rows` op over every row's own cache on a GPU). On a GPU a group
//! that stays the same is recorded once and replayed (`graph_rows`), and greedy rows take
//! their tokens from one device argmax. Sequences join and leave between steps — the server's
//! continuous batching — and `batch_generate` is the one-shot form.
//!
//! Batch invariance: a sequence's tokens do not depend on its batch mates. Prompts are
//! prefilled per sequence in the same chunks `stream_generate` uses, and decode steps go through
//! the model in groups of at most `max_rows` sequences (default [`DECODE_ROWS`] = 8, the
//! quantized decode kernels' row limit: up to it every output row is computed the same way
//! whatever the row count; above it the prefill-shaped product rounds differently).

use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::generate::{check_prompt, make_caches, prefill_chunk, GenerateOptions};
use crate::graph_rows::RowsReplay;
use crate::models::LanguageModel;
use crate::prefix_cache::PrefixCache;
use crate::sample::Sampler;
use crate::stop::StopText;
use crate::tokenizer::{StreamingDetokenizer, Tokenizer};
use rmlx::{ops, Array, Device, Dtype};
use std::time::Instant;

/// Rows per forward pass up to which results are batch-invariant (the decode kernels' limit).
pub const DECODE_ROWS: usize = rmlx::ops::quantized::DECODE_MAX_ROWS;
/// Prompt rows up to which a prefill may take the decode kernels (see
/// [`rmlx::ops::quantized::DECODE_FAMILY_ROWS`]): the prefix cache leaves more than this many
/// prompt tokens to compute.
pub const DECODE_FAMILY_ROWS: usize = rmlx::ops::quantized::DECODE_FAMILY_ROWS;

/// How the batch is run.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Most sequences per decode forward pass; more decoding sequences take several passes.
    /// Above [`DECODE_ROWS`] results depend on the batch (faster on a GPU, not invariant).
    pub max_rows: usize,
    /// Prompt tokens prefilled per step across sequences (at least one chunk runs), so a long
    /// prompt does not stall the decoding sequences for more than about one chunk.
    pub prefill_tokens: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_rows: DECODE_ROWS,
            prefill_tokens: 512,
        }
    }
}

/// One sequence to generate.
#[derive(Clone, Debug)]
pub struct SeqRequest {
    /// Prompt token ids (already templated).
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// Report the chosen token's log-probability and this many top alternatives.
    pub logprobs: Option<usize>,
}

impl SeqRequest {
    pub fn new(prompt: Vec<u32>, opts: GenerateOptions) -> SeqRequest {
        SeqRequest {
            prompt,
            opts,
            logprobs: None,
        }
    }
}

/// A sequence's KV caches with the tokens they hold: what a finished sequence leaves when
/// the generator keeps caches ([`BatchGenerator::keep_caches`]), and a starting point for a
/// new request that continues it ([`BatchGenerator::insert_with_cache`]). The caches hold the
/// prompt and the generated tokens except the last (which was never fed back).
#[derive(Clone, Debug)]
pub struct PromptCache {
    pub caches: Vec<KvCache>,
    pub tokens: Vec<u32>,
}

impl PromptCache {
    /// Bytes held by the caches.
    pub fn nbytes(&self) -> usize {
        self.caches.iter().map(KvCache::nbytes).sum()
    }
}

/// Why a sequence ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The sequence failed (the others go on).
    Error(String),
}

impl FinishReason {
    /// OpenAI's / mlx-lm's name (`stop`, `length`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Error(_) => "error",
        }
    }
}

/// The log-probability of a sampled token and the top alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What one step produced for one sequence.
#[derive(Clone, Debug)]
pub struct SeqEvent {
    pub id: u64,
    /// The sampled token (None for a sequence that ends without one: `max_tokens` 0, errors).
    pub token: Option<u32>,
    /// Newly completed text (may be empty).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
    /// Set on the sequence's last event.
    pub finish_reason: Option<FinishReason>,
    pub prompt_tokens: usize,
    /// Tokens generated so far, this one included.
    pub generation_tokens: usize,
    /// Prompt tokens whose keys/values came from the prefix cache.
    pub cached_tokens: usize,
}

/// Time spent and tokens made, over the generator's life.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub generation_tokens: usize,
    pub decode_secs: f64,
    /// Decode forward passes and the rows they carried (mean batch = rows / passes).
    pub decode_passes: usize,
    pub decode_rows: usize,
}

struct Seq {
    id: u64,
    opts: GenerateOptions,
    logprobs: Option<usize>,
    caches: Vec<KvCache>,
    sampler: Sampler,
    /// Prompt plus generated tokens (the repetition history; the cache holds a prefix of it).
    history: Vec<u32>,
    prompt_len: usize,
    /// Prompt positions already in the cache.
    fed: usize,
    cached: usize,
    /// Leading tokens whose keys/values came from prefill chunks of more than
    /// `DECODE_FAMILY_ROWS` rows (what the prefix cache may hand out again; see `prefill_chunk`).
    prefilled: usize,
    /// The last token handed out, to be fed at the next decode step.
    next: Option<u32>,
    detok: StreamingDetokenizer,
    stop: StopText,
    n: usize,
    finished: bool,
}

/// A logit bias as (token, f32 bits) pairs: comparable, to find a cached bias vector.
type BiasKey = Vec<(u32, u32)>;

/// Sequences generating together; call [`BatchGenerator::step`] until it is empty.
pub struct BatchGenerator<'m> {
    model: &'m dyn LanguageModel,
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    opts: BatchOptions,
    seqs: Vec<Seq>,
    next_id: u64,
    prefix: Option<PrefixCache>,
    /// Finished sequences' caches by id, when kept.
    kept: Option<std::collections::HashMap<u64, PromptCache>>,
    stats: BatchStats,
    /// Where decode passes run, and graph replay for each group of a step (`graph_rows`).
    device: Device,
    replays: Vec<RowsReplay>,
    /// Device bias vectors `[V]` of the logit biases greedy rows used (a few distinct ones).
    bias_vectors: Vec<(BiasKey, Array)>,
}

impl<'m> BatchGenerator<'m> {
    pub fn new(
        model: &'m dyn LanguageModel,
        tokenizer: &Tokenizer,
        opts: BatchOptions,
    ) -> BatchGenerator<'m> {
        let mut eos: Vec<u32> = tokenizer.eos_token_ids().to_vec();
        eos.extend(model.config().eos_token_ids.iter().copied());
        BatchGenerator {
            model,
            tokenizer: tokenizer.clone(),
            eos,
            opts: BatchOptions {
                max_rows: opts.max_rows.max(1),
                prefill_tokens: opts.prefill_tokens.max(1),
            },
            seqs: Vec::new(),
            next_id: 0,
            prefix: None,
            kept: None,
            stats: BatchStats::default(),
            device: rmlx::current_device(),
            replays: Vec::new(),
            bias_vectors: Vec::new(),
        }
    }

    /// Reuse the keys/values of earlier prompts that share a prefix with a new one (finished
    /// sequences leave their caches in an LRU of at most `max_bytes`). Only keys/values that a
    /// prefill computed are reused, and at least `DECODE_FAMILY_ROWS + 1` prompt tokens are left to
    /// compute, so the prompt goes through the same kernels as a fresh prefill: results may
    /// differ only in the last bits (a different chunking), not by the int8 decode kernels'
    /// approximation.
    pub fn enable_prefix_cache(&mut self, max_bytes: usize) {
        self.prefix = Some(PrefixCache::new(max_bytes));
    }

    /// The prefix cache, when enabled.
    pub fn prefix_cache(&mut self) -> Option<&mut PrefixCache> {
        self.prefix.as_mut()
    }

    /// Keep each finished sequence's caches for [`BatchGenerator::take_cache`] (instead of
    /// handing them to the prefix cache).
    pub fn keep_caches(&mut self) {
        self.kept.get_or_insert_with(Default::default);
    }

    /// The caches a finished sequence left, once (with [`BatchGenerator::keep_caches`]).
    pub fn take_cache(&mut self, id: u64) -> Option<PromptCache> {
        self.kept.as_mut().and_then(|k| k.remove(&id))
    }

    /// Checks and adds a sequence; it starts prefilling at the next step. Returns its id.
    pub fn insert(&mut self, req: SeqRequest) -> Result<u64> {
        self.insert_with_cache(req, None)
    }

    /// [`BatchGenerator::insert`], continuing from `cache` when given: the prompt is read
    /// after the cached tokens (which also count for the repetition penalty). The cache is
    /// not changed (its arrays are shared, and written copies are made on the first step).
    pub fn insert_with_cache(
        &mut self,
        req: SeqRequest,
        cache: Option<PromptCache>,
    ) -> Result<u64> {
        check_request(self.model, &req)?;
        let sampler = Sampler::new(req.opts.sampler.clone());
        let cache_given = cache.is_some();
        let (caches, history, fed) = match cache {
            Some(c) => {
                check_cache(self.model, &c, req.prompt.len())?;
                let fed = c.tokens.len();
                let mut history = c.tokens;
                history.extend(&req.prompt);
                (c.caches, history, fed)
            }
            None => {
                let reused = match (&mut self.prefix, req.opts.kv_bits) {
                    (Some(p), None) => p.lookup(&req.prompt),
                    _ => None,
                };
                let (caches, fed) = match reused {
                    Some((c, n)) => (c, n),
                    None => (make_caches(self.model, &req.opts)?, 0),
                };
                (caches, req.prompt, fed)
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        // A continued cache's tokens may come from decode steps; a prompt of at most
        // DECODE_FAMILY_ROWS tokens may be prefilled by the decode kernels.
        let prefilled = if cache_given || history.len() - fed <= DECODE_FAMILY_ROWS {
            0
        } else {
            history.len()
        };
        self.seqs.push(Seq {
            id,
            prefilled,
            logprobs: req.logprobs,
            caches,
            sampler,
            prompt_len: history.len(),
            history,
            fed,
            cached: fed,
            next: None,
            detok: StreamingDetokenizer::new(&self.tokenizer),
            stop: StopText::new(&req.opts.stop),
            n: 0,
            finished: false,
            opts: GenerateOptions {
                prefill_step_size: req.opts.prefill_step_size.max(1),
                ..req.opts
            },
        });
        Ok(id)
    }

    /// Drops a sequence (a cancelled request) and its caches; false if it was not there.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.seqs.len();
        self.seqs.retain(|s| s.id != id);
        self.seqs.len() != before
    }

    /// Sequences not finished yet.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Ids of the sequences still generating, in arrival order.
    pub fn ids(&self) -> Vec<u64> {
        self.seqs.iter().map(|s| s.id).collect()
    }

    /// Bytes held by the live sequences' KV caches.
    pub fn kv_bytes(&self) -> usize {
        self.seqs
            .iter()
            .flat_map(|s| &s.caches)
            .map(KvCache::nbytes)
            .sum()
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// One scheduling step: prefill chunks (up to `prefill_tokens` prompt tokens), then one
    /// decode step for every sequence that has a token to feed. Returns what each sequence
    /// produced; finished sequences are gone afterwards. A failing forward pass ends the
    /// sequences it carried (with `FinishReason::Error`), not the generator.
    pub fn step(&mut self) -> Vec<SeqEvent> {
        let mut events = Vec::new();
        for i in 0..self.seqs.len() {
            if self.seqs[i].opts.max_tokens == 0 && !self.seqs[i].finished {
                let s = &mut self.seqs[i];
                s.finished = true;
                events.push(event(
                    s,
                    None,
                    String::new(),
                    None,
                    Some(FinishReason::Length),
                ));
            }
        }
        self.prefill(&mut events);
        self.decode(&mut events);
        self.retire();
        events
    }

    /// Prefill chunks of the sequences still reading their prompts, oldest first.
    fn prefill(&mut self, events: &mut Vec<SeqEvent>) {
        let t0 = Instant::now();
        let mut budget = self.opts.prefill_tokens;
        let mut ran = false;
        for i in 0..self.seqs.len() {
            while !self.seqs[i].finished
                && self.seqs[i].fed < self.seqs[i].prompt_len
                && (budget > 0 || !ran)
            {
                let s = &mut self.seqs[i];
                let rest = s.prompt_len - s.fed;
                let n = prefill_chunk(rest, s.opts.prefill_step_size);
                let chunk = &s.history[s.fed..s.fed + n];
                ran = true;
                budget = budget.saturating_sub(n);
                self.stats.prompt_tokens += n;
                let out = Array::from_slice(chunk, &[1, n])
                    .map_err(LmError::from)
                    .and_then(|x| self.model.forward_last(&x, &mut s.caches));
                s.fed += n;
                let out = match out {
                    // Evaluating the last logits runs every layer, so the caches hold the chunk.
                    Ok(l) if n < rest => l.eval().map_err(LmError::from).map(|_| None),
                    Ok(l) => Ok(Some(ops::astype(&l, Dtype::F32))),
                    Err(e) => Err(e),
                };
                match out {
                    Ok(None) => {}
                    Ok(Some(logits)) => {
                        let ev = self.sample_and_emit(i, &logits);
                        events.push(ev);
                    }
                    Err(e) => {
                        let s = &mut self.seqs[i];
                        s.finished = true;
                        events.push(fail(s, &e));
                    }
                }
            }
        }
        self.stats.prefill_secs += t0.elapsed().as_secs_f64();
    }

    /// One token for every sequence with one to feed, `max_rows` sequences per forward pass.
    fn decode(&mut self, events: &mut Vec<SeqEvent>) {
        let ready: Vec<usize> = (0..self.seqs.len())
            .filter(|&i| !self.seqs[i].finished && self.seqs[i].next.is_some())
            .collect();
        if ready.is_empty() {
            return;
        }
        let t0 = Instant::now();
        for (gi, group) in ready.chunks(self.opts.max_rows).enumerate() {
            let tokens: Vec<u32> = group
                .iter()
                .map(|&i| self.seqs[i].next.expect("ready"))
                .collect();
            let ids: Vec<u64> = group.iter().map(|&i| self.seqs[i].id).collect();
            if self.replays.len() <= gi {
                self.replays.push(RowsReplay::new(self.device));
            }
            let replay = &mut self.replays[gi];
            let logits = {
                let mut caches: Vec<&mut [KvCache]> = Vec::with_capacity(group.len());
                // Disjoint &mut borrows of the group's caches, in group order.
                let mut rest: &mut [Seq] = &mut self.seqs;
                let mut base = 0;
                for &i in group {
                    let (_, tail) = rest.split_at_mut(i - base);
                    let (s, tail) = tail.split_first_mut().expect("index in range");
                    caches.push(&mut s.caches);
                    rest = tail;
                    base = i + 1;
                }
                match replay.step(self.model, &ids, &tokens, &mut caches) {
                    Ok(Some(l)) => Ok(l),
                    Ok(None) => Array::from_slice(&tokens, &[tokens.len(), 1])
                        .map_err(LmError::from)
                        .and_then(|t| self.model.forward_rows(&t, &mut caches))
                        .map(|l| ops::astype(&l, Dtype::F32))
                        .and_then(|l| l.eval().map(|_| l).map_err(LmError::from)),
                    Err(e) => Err(e),
                }
            };
            self.stats.decode_passes += 1;
            self.stats.decode_rows += group.len();
            match logits {
                Ok(logits) => {
                    let greedy = match self.greedy_tokens(group, &logits) {
                        Ok(g) => g,
                        Err(e) => {
                            self.fail_group(group, &e, events);
                            continue;
                        }
                    };
                    for (r, &i) in group.iter().enumerate() {
                        if let Some(t) = greedy[r] {
                            events.push(self.emit(i, t, None));
                            continue;
                        }
                        let row =
                            ops::slice(&logits, &[r as i64, 0], &[r as i64 + 1, i64::MAX], &[1, 1]);
                        let ev = match row {
                            Ok(row) => self.sample_and_emit(i, &row),
                            Err(e) => {
                                self.seqs[i].finished = true;
                                fail(&self.seqs[i], &e.into())
                            }
                        };
                        events.push(ev);
                    }
                }
                Err(e) => self.fail_group(group, &e, events),
            }
        }
        self.stats.decode_secs += t0.elapsed().as_secs_f64();
    }

    /// Ends every sequence of `group` with `e` (a forward pass that carried them failed).
    fn fail_group(&mut self, group: &[usize], e: &LmError, events: &mut Vec<SeqEvent>) {
        for &i in group {
            self.seqs[i].finished = true;
            events.push(fail(&self.seqs[i], e));
        }
    }

    /// The tokens of the rows of `group` that sample greedily without wanting log-probabilities
    /// or a repetition penalty (`None` for the others): argmax of `logits: [B, V]` plus each
    /// row's logit bias, computed on the device for all rows at once (one kernel per distinct
    /// bias, one read), where the sampler would copy every row to the host. GPU only, as
    /// `stream_generate` takes the device's argmax for greedy decoding only there (a logit
    /// bias is added on the device here, on the host there: the same f32 sums, but the host
    /// takes the argmax after a log-softmax, so a near-tie may resolve differently).
    fn greedy_tokens(&mut self, group: &[usize], logits: &Array) -> Result<Vec<Option<u32>>> {
        let mut out = vec![None; group.len()];
        if self.device.kind != rmlx::DeviceType::Gpu {
            return Ok(out);
        }
        let mut by_bias: Vec<(BiasKey, Vec<usize>)> = Vec::new();
        for (r, &i) in group.iter().enumerate() {
            let s = &self.seqs[i];
            let st = s.sampler.settings();
            if !st.is_greedy() || s.logprobs.is_some() {
                continue;
            }
            let key: BiasKey = st
                .logit_bias
                .iter()
                .map(|&(t, b)| (t, b.to_bits()))
                .collect();
            match by_bias.iter_mut().find(|(k, _)| *k == key) {
                Some((_, rows)) => rows.push(r),
                None => by_bias.push((key, vec![r])),
            }
        }
        let vocab = logits.shape()[logits.ndim() - 1];
        for (key, rows) in by_bias {
            let biased = if key.is_empty() {
                logits.clone()
            } else {
                let bias = match self.bias_vectors.iter().find(|(k, _)| *k == key) {
                    Some((_, b)) => b.clone(),
                    None => {
                        let mut v = vec![0.0f32; vocab];
                        for &(t, b) in &key {
                            if let Some(x) = v.get_mut(t as usize) {
                                *x += f32::from_bits(b);
                            }
                        }
                        let b = Array::from_slice(&v, &[vocab])?;
                        self.bias_vectors.push((key.clone(), b.clone()));
                        b
                    }
                };
                ops::add(logits, &bias)?
            };
            let ids = ops::argmax(&biased, Some(-1), false)?;
            let ids = ops::astype(&ids, Dtype::U32).to_vec::<u32>()?;
            for r in rows {
                out[r] = ids.get(r).copied();
            }
        }
        Ok(out)
    }

    /// Samples sequence `i`'s next token from `logits: [1, V]` and hands it out (the
    /// bookkeeping of `TokenStream::advance`).
    fn sample_and_emit(&mut self, i: usize, logits: &Array) -> SeqEvent {
        let s = &mut self.seqs[i];
        let sampled = s.sampler.sample(logits, std::slice::from_ref(&s.history));
        let (token, lp) = match sampled {
            Ok((ids, lp)) if !ids.is_empty() => (ids[0], lp),
            Ok(_) => {
                s.finished = true;
                return fail(
                    s,
                    &LmError::Generate("the sampler returned no token".into()),
                );
            }
            Err(e) => {
                s.finished = true;
                return fail(s, &e);
            }
        };
        let logprob = match s.logprobs {
            Some(top) => match lp.to_vec::<f32>() {
                Ok(v) => Some(token_logprob(&v, token, top)),
                Err(e) => {
                    s.finished = true;
                    return fail(s, &e.into());
                }
            },
            None => None,
        };
        self.emit(i, token, logprob)
    }

    /// Hands out sequence `i`'s sampled `token` (the bookkeeping of `TokenStream::advance`):
    /// EOS, stop strings, `max_tokens`, the detokenized text.
    fn emit(&mut self, i: usize, token: u32, logprob: Option<TokenLogprob>) -> SeqEvent {
        let eos = &self.eos;
        let s = &mut self.seqs[i];
        s.n += 1;
        self.stats.generation_tokens += 1;
        s.next = None;
        if eos.contains(&token) {
            s.finished = true;
            let mut text = s.stop.take();
            text.push_str(&s.detok.finalize());
            return event(s, Some(token), text, logprob, Some(FinishReason::Stop));
        }
        s.history.push(token);
        let piece = s.detok.add_token(token);
        let (text, stopped) = s.stop.push(&piece);
        if let Some(before) = stopped {
            s.finished = true;
            return event(
                s,
                Some(token),
                text + &before,
                logprob,
                Some(FinishReason::Stop),
            );
        }
        if s.n >= s.opts.max_tokens {
            s.finished = true;
            let tail = s.detok.finalize();
            let (mut text2, stopped) = s.stop.push(&tail);
            if let Some(before) = stopped {
                return event(
                    s,
                    Some(token),
                    text + &before,
                    logprob,
                    Some(FinishReason::Stop),
                );
            }
            text2.push_str(&s.stop.take());
            return event(
                s,
                Some(token),
                text + &text2,
                logprob,
                Some(FinishReason::Length),
            );
        }
        s.next = Some(token);
        event(s, Some(token), text, logprob, None)
    }

    /// Removes finished sequences, leaving their caches to the prefix cache.
    fn retire(&mut self) {
        let (done, live): (Vec<Seq>, Vec<Seq>) = std::mem::take(&mut self.seqs)
            .into_iter()
            .partition(|s| s.finished);
        self.seqs = live;
        if let Some(kept) = &mut self.kept {
            for s in done {
                let n = s
                    .caches
                    .first()
                    .map_or(0, KvCache::offset)
                    .min(s.history.len());
                let tokens = s.history[..n].to_vec();
                kept.insert(
                    s.id,
                    PromptCache {
                        caches: s.caches,
                        tokens,
                    },
                );
            }
            return;
        }
        if let Some(p) = &mut self.prefix {
            for s in done {
                let n = s.caches.first().map_or(0, KvCache::offset);
                if s.opts.kv_bits.is_none() && n > 0 && n <= s.history.len() {
                    p.insert(s.history[..n].to_vec(), s.caches, s.prefilled.min(n));
                }
            }
        }
    }
}

/// Checks a request before it is queued: the prompt (not empty, within the context and the
/// vocabulary) and the sampler settings.
pub fn check_request(model: &dyn LanguageModel, req: &SeqRequest) -> Result<()> {
    check_prompt(model, &req.prompt)?;
    Sampler::new(req.opts.sampler.clone()).validate(model.config().vocab_size)
}

/// Checks that `c` fits `model` (one cache per layer, of the layer's kind, all holding the
/// cache's tokens) and that the continued sequence stays within the context.
fn check_cache(model: &dyn LanguageModel, c: &PromptCache, prompt_len: usize) -> Result<()> {
    let want = model.make_caches();
    let bad = |msg: String| Err(LmError::Generate(format!("[prompt_cache] {msg}")));
    if c.caches.len() != want.len() {
        return bad(format!(
            "the cache has {} layers but the model has {}",
            c.caches.len(),
            want.len()
        ));
    }
    for (i, (have, w)) in c.caches.iter().zip(&want).enumerate() {
        // A quantized cache stands in for a standard one (kv_bits); rotating must stay rotating.
        let rotating = |k: &KvCache| matches!(k, KvCache::Rotating(_));
        if rotating(have) != rotating(w) {
            return bad(format!(
                "layer {i}'s cache is not of the kind the model uses"
            ));
        }
        if have.offset() != c.tokens.len() {
            return bad(format!(
                "layer {i} holds {} positions but the cache lists {} tokens",
                have.offset(),
                c.tokens.len()
            ));
        }
    }
    if let Some(ctx) = model.config().max_position_embeddings {
        if c.tokens.len() + prompt_len > ctx {
            return bad(format!(
                "{} cached and {prompt_len} new tokens exceed the model's context of {ctx}",
                c.tokens.len()
            ));
        }
    }
    Ok(())
}

fn event(
    s: &Seq,
    token: Option<u32>,
    text: String,
    logprob: Option<TokenLogprob>,
    finish_reason: Option<FinishReason>,
) -> SeqEvent {
    SeqEvent {
        id: s.id,
        token,
        text,
        logprob,
        finish_reason,
        prompt_tokens: s.prompt_len,
        generation_tokens: s.n,
        cached_tokens: s.cached,
    }
}

fn fail(s: &Seq, e: &LmError) -> SeqEvent {
    event(
        s,
        None,
        String::new(),
        None,
        Some(FinishReason::Error(e.to_string())),
    )
}

/// The chosen token's log-probability and the `top` most likely tokens of a logprobs row.
fn token_logprob(lp: &[f32], token: u32, top: usize) -> TokenLogprob {
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    let by = |a: &u32, b: &u32| lp[*b as usize].total_cmp(&lp[*a as usize]).then(a.cmp(b));
    let top = top.min(idx.len());
    if top > 0 && top < idx.len() {
        idx.select_nth_unstable_by(top - 1, by);
    }
    idx.truncate(top);
    idx.sort_unstable_by(by);
    TokenLogprob {
        logprob: lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
        top: idx.into_iter().map(|i| (i, lp[i as usize])).collect(),
    }
}

/// One finished sequence of [`batch_generate`].
#[derive(Clone, Debug)]
pub struct BatchResult {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
}

/// Generates every request together (ragged, each with its own settings and stop rules) and
/// returns the results in request order, with the run's statistics.
pub fn batch_generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    requests: Vec<SeqRequest>,
    opts: &BatchOptions,
) -> Result<(Vec<BatchResult>, BatchStats)> {
    let mut g = BatchGenerator::new(model, tokenizer, opts.clone());
    let mut results: Vec<BatchResult> = Vec::with_capacity(requests.len());
    for (i, r) in requests.into_iter().enumerate() {
        results.push(BatchResult {
            text: String::new(),
            tokens: Vec::new(),
            finish_reason: FinishReason::Length,
            prompt_tokens: r.prompt.len(),
        });
        let id = g
            .insert(r)
            .map_err(|e| LmError::Generate(format!("prompt {i}: {e}")))?;
        debug_assert_eq!(id as usize, i);
    }
    while !g.is_empty() {
        for ev in g.step() {
            let r = &mut results[ev.id as usize];
            r.text.push_str(&ev.text);
            r.tokens.extend(ev.token);
            if let Some(f) = ev.finish_reason {
                r.finish_reason = f;
            }
        }
    }
    Ok((results, g.stats().clone()))
}
