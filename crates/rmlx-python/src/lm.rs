//! `rmlx.core._lm`: the native half of `rmlx.lm` (models, tokenizers, the generation stream).
//! The Python package `rmlx.lm` gives these mlx_lm's signatures.

use crate::array::PyArray;
use crate::convert::to_array;
use crate::dtype::opt_dtype;
use crate::errors::guard;
use pyo3::exceptions::{PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rmlx::{ops, Dtype};
use rmlx_lm::batch::{
    BatchGenerator, BatchOptions, FinishReason, PromptCache, SeqRequest, DECODE_ROWS,
};
use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::generate::{GenerateOptions, TokenStream};
use rmlx_lm::load::LoadOptions;
use rmlx_lm::models::Model;
use rmlx_lm::sample::SamplerSettings;
use rmlx_lm::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A loaded causal language model. `model(tokens)` returns logits `[B, L, vocab]` for
/// `tokens: [B, L]` (no cache).
#[pyclass(name = "Model", module = "rmlx.lm")]
pub struct PyModel {
    model: Arc<Model>,
    config: String,
}

#[pymethods]
impl PyModel {
    /// Logits for integer tokens `[B, L]` (or `[L]`, treated as one batch row).
    fn __call__(&self, py: Python<'_>, inputs: &Bound<'_, PyAny>) -> PyResult<PyArray> {
        let t = to_array(inputs, None)?;
        let model = self.model.clone();
        let out = py.detach(move || {
            guard(|| {
                let t = if t.ndim() == 1 {
                    ops::expand_dims(&t, &[0])?
                } else {
                    t
                };
                let t = ops::astype(&t, Dtype::U32);
                let logits = model.forward(&t, &mut [])?;
                Ok::<_, rmlx_lm::LmError>(logits)
            })
        })?;
        Ok(out.into())
    }

    /// The model's `config.json` as a JSON string (`rmlx.lm` parses it into a dict).
    #[getter]
    fn config_json(&self) -> &str {
        &self.config
    }

    /// Number of transformer layers.
    #[getter]
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }

    /// The `model_type` this model was built as.
    #[getter]
    fn model_type(&self) -> String {
        self.model.config().model_type.clone()
    }
}

/// A model's tokenizer with its special tokens and chat template.
#[pyclass(name = "Tokenizer", module = "rmlx.lm")]
#[derive(Clone)]
pub struct PyTokenizer {
    pub tok: Tokenizer,
}

#[pymethods]
impl PyTokenizer {
    /// Token ids of `text`; `add_special_tokens` adds BOS (and EOS) as the model's config says.
    #[pyo3(signature = (text, add_special_tokens = true))]
    fn encode(&self, text: &str, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        guard(|| self.tok.encode(text, add_special_tokens))
    }

    /// The text of `ids`; `skip_special_tokens` drops BOS/EOS and other special tokens.
    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode(&self, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        guard(|| {
            if skip_special_tokens {
                self.tok.decode_skip_special(&ids)
            } else {
                self.tok.decode(&ids)
            }
        })
    }

    /// Renders the chat template over `messages` (dicts with `role` and `content`); returns
    /// the text, or its token ids when `tokenize` (the default, as transformers).
    #[pyo3(signature = (messages, add_generation_prompt = true, tokenize = true))]
    fn apply_chat_template(
        &self,
        py: Python<'_>,
        messages: Vec<Bound<'_, PyDict>>,
        add_generation_prompt: bool,
        tokenize: bool,
    ) -> PyResult<Py<PyAny>> {
        let msgs = messages
            .iter()
            .map(|m| {
                let get = |k: &str| -> PyResult<String> {
                    m.get_item(k)?
                        .ok_or_else(|| {
                            PyTypeError::new_err(format!("[chat_template] a message has no '{k}'"))
                        })?
                        .extract()
                };
                Ok(ChatMessage::new(get("role")?, get("content")?))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let text = guard(|| self.tok.apply_chat_template(&msgs, add_generation_prompt))?;
        if tokenize {
            let ids = guard(|| self.tok.encode(&text, false))?;
            Ok(ids.into_pyobject(py)?.into_any().unbind())
        } else {
            Ok(text.into_pyobject(py)?.into_any().unbind())
        }
    }

    /// The end-of-sequence ids.
    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.tok.eos_token_ids().to_vec()
    }

    /// The first end-of-sequence id (mlx_lm's `eos_token_id`).
    #[getter]
    fn eos_token_id(&self) -> Option<u32> {
        self.tok.eos_token_ids().first().copied()
    }

    /// The beginning-of-sequence id, if the model has one.
    #[getter]
    fn bos_token_id(&self) -> Option<u32> {
        self.tok.bos_token_id()
    }

    /// The BOS token's text, if any.
    #[getter]
    fn bos_token(&self) -> Option<String> {
        self.tok
            .bos_token_id()
            .and_then(|i| self.tok.id_to_token(i))
    }

    /// Number of tokens in the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.tok.vocab_size()
    }

    /// The Jinja chat template, if the model ships one.
    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.tok.chat_template().map(str::to_string)
    }
}

/// Loads a model directory (Hugging Face / mlx-community) or a GGUF file; `dtype` casts the
/// float weights.
#[pyfunction]
#[pyo3(signature = (path, dtype = None))]
fn load(
    py: Python<'_>,
    path: PathBuf,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<(PyModel, PyTokenizer)> {
    let opts = LoadOptions {
        dtype: opt_dtype(dtype)?,
    };
    let loaded = py.detach(|| guard(|| rmlx_lm::load::load(&path, &opts)))?;
    Ok((
        PyModel {
            model: Arc::new(loaded.model),
            config: loaded.config.to_string(),
        },
        PyTokenizer {
            tok: loaded.tokenizer,
        },
    ))
}

/// One step of generation, with mlx_lm's `GenerationResponse` fields.
#[pyclass(name = "GenerationResponse", module = "rmlx.lm", get_all)]
pub struct PyResponse {
    /// The text this step completed (may be empty mid-character).
    text: String,
    /// The token sampled at this step.
    token: u32,
    /// Log-probabilities over the vocabulary at this step, `[vocab]`.
    logprobs: Option<Py<PyArray>>,
    /// Always False (no speculative decoding).
    from_draft: bool,
    prompt_tokens: usize,
    prompt_tps: f64,
    generation_tokens: usize,
    generation_tps: f64,
    /// Peak memory so far, in GB.
    peak_memory: f64,
    /// "stop", "length", or None before the last step.
    finish_reason: Option<String>,
}

#[pymethods]
impl PyResponse {
    fn __repr__(&self) -> String {
        format!(
            "GenerationResponse(text={:?}, token={}, prompt_tokens={}, generation_tokens={}, finish_reason={:?})",
            self.text, self.token, self.prompt_tokens, self.generation_tokens, self.finish_reason
        )
    }
}

/// The iterator `stream_generate` returns. It holds the model alive while it runs.
#[pyclass(name = "TokenStream", module = "rmlx.lm")]
pub struct PyTokenStream {
    // Field order matters: the stream borrows the model and must drop first.
    stream: Mutex<Option<TokenStream<'static>>>,
    _model: Arc<Model>,
}

#[pymethods]
impl PyTokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyResponse> {
        let next = py.detach(|| {
            let mut g = self.stream.lock().unwrap_or_else(|e| e.into_inner());
            guard(|| Ok::<_, PyErr>(g.as_mut().and_then(|s| s.next())))
        })?;
        let r = match next {
            None => return Err(PyStopIteration::new_err(())),
            Some(r) => r.map_err(crate::errors::lm_to_py)?,
        };
        Ok(PyResponse {
            text: r.text,
            token: r.token,
            logprobs: r
                .logprobs
                .map(|l| Py::new(py, PyArray::from(l)))
                .transpose()?,
            from_draft: false,
            prompt_tokens: r.prompt_tokens,
            prompt_tps: r.prompt_tps,
            generation_tokens: r.generation_tokens,
            generation_tps: r.generation_tps,
            peak_memory: r.peak_memory,
            finish_reason: r.finish_reason,
        })
    }
}

/// Generation settings from the keyword arguments `stream_generate` and the batch
/// generator's `insert` share (mlx_lm's names).
#[allow(clippy::too_many_arguments)]
fn options(
    max_tokens: usize,
    temp: f32,
    top_p: f32,
    top_k: usize,
    min_p: f32,
    min_tokens_to_keep: usize,
    repetition_penalty: Option<f32>,
    repetition_context_size: usize,
    logit_bias: Option<Vec<(u32, f32)>>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    prefill_step_size: usize,
    kv_bits: Option<usize>,
    kv_group_size: usize,
) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerSettings {
            temp,
            top_p,
            top_k,
            min_p,
            min_tokens_to_keep,
            repetition_penalty,
            repetition_context_size,
            logit_bias: logit_bias.unwrap_or_default(),
            seed,
        },
        stop: stop.unwrap_or_default(),
        prefill_step_size,
        kv_bits,
        kv_group_size,
    }
}

/// Starts generating from `prompt` (token ids). Sampling settings use mlx_lm's names.
#[pyfunction]
#[pyo3(signature = (model, tokenizer, prompt, *, max_tokens = 256, temp = 0.0, top_p = 1.0, top_k = 0, min_p = 0.0, min_tokens_to_keep = 1, repetition_penalty = None, repetition_context_size = 20, logit_bias = None, seed = None, stop = None, prefill_step_size = 512, kv_bits = None, kv_group_size = 64))]
#[allow(clippy::too_many_arguments)]
fn stream_generate(
    model: &PyModel,
    tokenizer: &PyTokenizer,
    prompt: Vec<u32>,
    max_tokens: usize,
    temp: f32,
    top_p: f32,
    top_k: usize,
    min_p: f32,
    min_tokens_to_keep: usize,
    repetition_penalty: Option<f32>,
    repetition_context_size: usize,
    logit_bias: Option<Vec<(u32, f32)>>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    prefill_step_size: usize,
    kv_bits: Option<usize>,
    kv_group_size: usize,
) -> PyResult<PyTokenStream> {
    let opts = options(
        max_tokens,
        temp,
        top_p,
        top_k,
        min_p,
        min_tokens_to_keep,
        repetition_penalty,
        repetition_context_size,
        logit_bias,
        seed,
        stop,
        prefill_step_size,
        kv_bits,
        kv_group_size,
    );
    let m = model.model.clone();
    let s = guard(|| {
        rmlx_lm::generate::stream_generate(m.as_ref().as_ref(), &tokenizer.tok, &prompt, &opts)
    })?;
    // SAFETY: the stream borrows the model behind `m`'s Arc, which this object owns and drops
    // after the stream (field order), so the borrow outlives every use.
    let s: TokenStream<'static> =
        unsafe { std::mem::transmute::<TokenStream<'_>, TokenStream<'static>>(s) };
    Ok(PyTokenStream {
        stream: Mutex::new(Some(s)),
        _model: m,
    })
}

/// The KV caches one finished sequence of `batch_generate(..., return_prompt_caches=True)`
/// left: pass it back in `prompt_caches` to continue that sequence with a new prompt.
/// Holds the prompt and the generated tokens but the last.
#[pyclass(name = "PromptCache", module = "rmlx.lm", frozen)]
pub struct PyPromptCache {
    cache: PromptCache,
}

#[pymethods]
impl PyPromptCache {
    /// Number of tokens held (the same in every layer).
    #[getter]
    fn offset(&self) -> usize {
        self.cache.tokens.len()
    }

    /// The token ids held.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.cache.tokens.clone()
    }

    /// Bytes of keys and values held.
    #[getter]
    fn nbytes(&self) -> usize {
        self.cache.nbytes()
    }

    /// Number of layers.
    fn __len__(&self) -> usize {
        self.cache.caches.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "PromptCache(layers={}, offset={}, nbytes={})",
            self.cache.caches.len(),
            self.cache.tokens.len(),
            self.cache.nbytes()
        )
    }
}

/// Sequences generating together (the native half of `rmlx.lm.batch_generate`): `insert`
/// prompts, call `step` until empty. Each sequence has its own sampler and stop rules, and
/// its tokens do not depend on its batch mates (decode passes of at most 8 rows).
#[pyclass(name = "BatchGenerator", module = "rmlx.lm")]
pub struct PyBatchGenerator {
    // Field order matters: the generator borrows the model and must drop first.
    gen: Mutex<BatchGenerator<'static>>,
    steps: Mutex<usize>,
    _model: Arc<Model>,
}

#[pymethods]
impl PyBatchGenerator {
    /// `max_rows`: sequences per decode forward pass (more than 8 is faster on a GPU but
    /// no longer batch-invariant); `prefill_tokens`: prompt tokens prefilled per step;
    /// `keep_caches`: keep finished sequences' caches for `take_cache`.
    #[new]
    #[pyo3(signature = (model, tokenizer, *, max_rows = DECODE_ROWS, prefill_tokens = 512, keep_caches = false))]
    fn new(
        model: &PyModel,
        tokenizer: &PyTokenizer,
        max_rows: usize,
        prefill_tokens: usize,
        keep_caches: bool,
    ) -> PyResult<Self> {
        if max_rows == 0 || prefill_tokens == 0 {
            return Err(PyValueError::new_err(
                "[BatchGenerator] max_rows and prefill_tokens must be positive",
            ));
        }
        let m = model.model.clone();
        let opts = BatchOptions {
            max_rows,
            prefill_tokens,
        };
        let mut g = BatchGenerator::new(m.as_ref().as_ref(), &tokenizer.tok, opts);
        if keep_caches {
            g.keep_caches();
        }
        // SAFETY: the generator borrows the model behind `m`'s Arc, which this object owns and
        // drops after the generator (field order), so the borrow outlives every use.
        let g: BatchGenerator<'static> =
            unsafe { std::mem::transmute::<BatchGenerator<'_>, BatchGenerator<'static>>(g) };
        Ok(PyBatchGenerator {
            gen: Mutex::new(g),
            steps: Mutex::new(0),
            _model: m,
        })
    }

    /// Adds a sequence and returns its id (0, 1, ... in insertion order). Settings as
    /// `stream_generate`'s; `logprobs` reports each token's log-probability; `cache`
    /// continues a `PromptCache`.
    #[pyo3(signature = (prompt, *, max_tokens = 256, temp = 0.0, top_p = 1.0, top_k = 0, min_p = 0.0, min_tokens_to_keep = 1, repetition_penalty = None, repetition_context_size = 20, logit_bias = None, seed = None, stop = None, prefill_step_size = 512, kv_bits = None, kv_group_size = 64, logprobs = false, cache = None))]
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        prompt: Vec<u32>,
        max_tokens: usize,
        temp: f32,
        top_p: f32,
        top_k: usize,
        min_p: f32,
        min_tokens_to_keep: usize,
        repetition_penalty: Option<f32>,
        repetition_context_size: usize,
        logit_bias: Option<Vec<(u32, f32)>>,
        seed: Option<u64>,
        stop: Option<Vec<String>>,
        prefill_step_size: usize,
        kv_bits: Option<usize>,
        kv_group_size: usize,
        logprobs: bool,
        cache: Option<PyRef<'_, PyPromptCache>>,
    ) -> PyResult<u64> {
        let opts = options(
            max_tokens,
            temp,
            top_p,
            top_k,
            min_p,
            min_tokens_to_keep,
            repetition_penalty,
            repetition_context_size,
            logit_bias,
            seed,
            stop,
            prefill_step_size,
            kv_bits,
            kv_group_size,
        );
        let req = SeqRequest {
            prompt,
            opts,
            logprobs: logprobs.then_some(0),
        };
        let cache = cache.map(|c| c.cache.clone());
        let mut g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
        guard(|| g.insert_with_cache(req, cache))
    }

    /// Runs one step (prefill chunks, then one token for every decoding sequence), releasing
    /// the GIL. Returns `(id, token, text, logprob, finish_reason, error)` per sequence that
    /// produced something: `token` is None for a sequence that ends without one, `logprob`
    /// None unless asked, `finish_reason` "stop", "length", "error" or None, `error` the
    /// message of a failed sequence.
    #[allow(clippy::type_complexity)]
    fn step(
        &self,
        py: Python<'_>,
    ) -> PyResult<
        Vec<(
            u64,
            Option<u32>,
            String,
            Option<f32>,
            Option<&'static str>,
            Option<String>,
        )>,
    > {
        let events = py.detach(|| {
            let mut g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
            let before = g.stats().decode_rows;
            let ev = guard(|| Ok::<_, PyErr>(g.step()))?;
            if g.stats().decode_rows > before {
                *self.steps.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
            Ok::<_, PyErr>(ev)
        })?;
        Ok(events
            .into_iter()
            .map(|e| {
                let err = match &e.finish_reason {
                    Some(FinishReason::Error(m)) => Some(m.clone()),
                    _ => None,
                };
                (
                    e.id,
                    e.token,
                    e.text,
                    e.logprob.map(|l| l.logprob),
                    e.finish_reason.as_ref().map(FinishReason::as_str),
                    err,
                )
            })
            .collect())
    }

    /// The caches a finished sequence left (when made with `keep_caches=True`), once.
    fn take_cache(&self, id: u64) -> Option<PyPromptCache> {
        let mut g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
        g.take_cache(id).map(|cache| PyPromptCache { cache })
    }

    /// Counters so far: `prompt_tokens`, `prompt_time`, `generation_tokens`,
    /// `generation_steps`, `decode_time` (seconds), `decode_passes`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
        let s = g.stats();
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", s.prompt_tokens)?;
        d.set_item("prompt_time", s.prefill_secs)?;
        d.set_item("generation_tokens", s.generation_tokens)?;
        d.set_item(
            "generation_steps",
            *self.steps.lock().unwrap_or_else(|e| e.into_inner()),
        )?;
        d.set_item("decode_time", s.decode_secs)?;
        d.set_item("decode_passes", s.decode_passes)?;
        Ok(d)
    }

    /// Sequences not finished yet.
    fn __len__(&self) -> usize {
        self.gen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub fn register(py: Python<'_>, parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let m = PyModule::new(py, "_lm")?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyTokenizer>()?;
    m.add_class::<PyResponse>()?;
    m.add_class::<PyTokenStream>()?;
    m.add_class::<PyPromptCache>()?;
    m.add_class::<PyBatchGenerator>()?;
    m.add_function(wrap_pyfunction!(load, &m)?)?;
    m.add_function(wrap_pyfunction!(stream_generate, &m)?)?;
    crate::add_submodule(parent, &m, "rmlx.core._lm")
}
