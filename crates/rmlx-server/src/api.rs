//! The OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`), checked and turned
//! into a generation request, and the response objects built from its events.

use crate::error::ApiError;
use rmlx_lm::batch::{SeqRequest, TokenLogprob};
use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::generate::GenerateOptions;
use rmlx_lm::load::LoadedModel;
use rmlx_lm::sample::SamplerSettings;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Which endpoint a body came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// `stream_options`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One chat message; `content` is a string or a list of `{"type": "text", "text"}` parts.
#[derive(Deserialize, Debug, Clone)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// The fields of both endpoints (one struct so that unknown fields are refused; each endpoint
/// then refuses the other's fields).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct GenBody {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub prompt: Option<Value>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<i64>,
    pub n: Option<i64>,
    pub user: Option<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
}

/// Server-side defaults and bounds applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_prompt_tokens: usize,
    pub default_max_tokens: usize,
    pub default_temp: f32,
}

/// What the response needs besides the events.
#[derive(Clone, Debug)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: Option<usize>,
    pub prompt_tokens: usize,
}

/// Parses a body: malformed JSON, wrong types and unknown fields are 400s naming the problem.
pub fn parse_body(bytes: &[u8]) -> Result<GenBody, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

fn nonneg(param: &str, v: Option<i64>) -> Result<Option<usize>, ApiError> {
    match v {
        Some(x) if x < 0 => Err(ApiError::bad_param(
            param,
            format!("{param} must be a non-negative integer, got {x}"),
        )),
        Some(x) => Ok(Some(x as usize)),
        None => Ok(None),
    }
}

fn text_content(i: usize, c: &Value) -> Result<String, ApiError> {
    match c {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(ApiError::bad_param(
                            "messages",
                            format!("messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::bad_param(
            "messages",
            format!("messages[{i}].content must be a string or a list of text parts"),
        )),
    }
}

/// The prompt's token ids for `endpoint`.
fn prompt_ids(m: &LoadedModel, b: &GenBody, endpoint: Endpoint) -> Result<Vec<u32>, ApiError> {
    let tk = &m.tokenizer;
    let tok_err = |e: rmlx_lm::LmError| ApiError::bad_request(e.to_string());
    match endpoint {
        Endpoint::Chat => {
            if b.prompt.is_some() {
                return Err(ApiError::bad_param(
                    "prompt",
                    "`prompt` belongs to /v1/completions; chat requests send `messages`",
                ));
            }
            let msgs = b.messages.as_ref().ok_or_else(|| {
                ApiError::bad_param(
                    "messages",
                    "`messages` is required (a list of {role, content})",
                )
            })?;
            if msgs.is_empty() {
                return Err(ApiError::bad_param(
                    "messages",
                    "`messages` must not be empty",
                ));
            }
            let msgs = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Ok(ChatMessage::new(
                        m.role.clone(),
                        text_content(i, &m.content)?,
                    ))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let s = tk.apply_chat_template(&msgs, true).map_err(tok_err)?;
            tk.encode(&s, false).map_err(tok_err)
        }
        Endpoint::Completion => {
            if b.messages.is_some() {
                return Err(ApiError::bad_param(
                    "messages",
                    "`messages` belongs to /v1/chat/completions; completions send `prompt`",
                ));
            }
            let bad = || {
                ApiError::bad_param(
                    "prompt",
                    "`prompt` must be a string, a list of one string, or a list of token ids",
                )
            };
            match b
                .prompt
                .as_ref()
                .ok_or_else(|| ApiError::bad_param("prompt", "`prompt` is required"))?
            {
                Value::String(s) => tk.encode(s, true).map_err(tok_err),
                Value::Array(a) if a.len() == 1 && a[0].is_string() => tk
                    .encode(a[0].as_str().unwrap_or_default(), true)
                    .map_err(tok_err),
                Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => Ok(a
                    .iter()
                    .map(|v| v.as_u64().unwrap_or(u64::MAX).min(u32::MAX as u64) as u32)
                    .collect()),
                _ => Err(bad()),
            }
        }
    }
}

/// Checks the body and builds the generation request.
pub fn build_request(
    m: &LoadedModel,
    b: &GenBody,
    endpoint: Endpoint,
    limits: &Limits,
) -> Result<(SeqRequest, Meta), ApiError> {
    if let Some(n) = b.n.filter(|&n| n != 1) {
        return Err(ApiError::bad_param(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    for (name, v) in [
        ("presence_penalty", b.presence_penalty),
        ("frequency_penalty", b.frequency_penalty),
    ] {
        if v.is_some_and(|x| x != 0.0) {
            return Err(ApiError::bad_param(
                name,
                format!("{name} is not supported (use repetition_penalty)"),
            ));
        }
    }
    let prompt = prompt_ids(m, b, endpoint)?;
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let ctx = m
        .model
        .config()
        .max_position_embeddings
        .unwrap_or(usize::MAX);
    let limit = limits.max_prompt_tokens.min(ctx);
    if prompt.len() > limit {
        return Err(ApiError::bad_param(
            if endpoint == Endpoint::Chat { "messages" } else { "prompt" },
            format!(
                "the prompt has {} tokens, more than this server accepts ({limit}: the model's context or --max-prompt-tokens); shorten it",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let max_tokens = nonneg("max_tokens", b.max_tokens)?;
    let max_completion = nonneg("max_completion_tokens", b.max_completion_tokens)?;
    let max_tokens = max_completion
        .or(max_tokens)
        .unwrap_or(limits.default_max_tokens)
        .min(ctx.saturating_sub(prompt.len()));
    let top_k = nonneg("top_k", b.top_k)?.unwrap_or(0);
    let f = |name: &str, v: Option<f64>, lo: f64, hi: f64, def: f32| -> Result<f32, ApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::bad_param(
                name,
                format!("{name} must be in [{lo}, {hi}], got {x}"),
            )),
            Some(x) => Ok(x as f32),
            None => Ok(def),
        }
    };
    let temp = f(
        "temperature",
        b.temperature,
        0.0,
        100.0,
        limits.default_temp,
    )?;
    let top_p = f("top_p", b.top_p, 0.0, 1.0, 1.0)?;
    let min_p = f("min_p", b.min_p, 0.0, 1.0, 0.0)?;
    let stop = match &b.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 16 && a.iter().all(Value::is_string) => a
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_param(
                "stop",
                "`stop` must be a string or a list of at most 16 strings",
            ))
        }
    };
    let logprobs = match (endpoint, &b.logprobs) {
        (_, None | Some(Value::Null)) => None,
        (Endpoint::Chat, Some(Value::Bool(on))) => {
            let top = nonneg("top_logprobs", b.top_logprobs)?.unwrap_or(0);
            if top > 20 {
                return Err(ApiError::bad_param(
                    "top_logprobs",
                    "top_logprobs must be at most 20",
                ));
            }
            on.then_some(top)
        }
        (Endpoint::Completion, Some(Value::Number(n))) => match n.as_u64() {
            Some(k) if k <= 20 => Some(k as usize),
            _ => {
                return Err(ApiError::bad_param(
                    "logprobs",
                    "logprobs must be an integer in [0, 20]",
                ))
            }
        },
        (Endpoint::Chat, Some(_)) => {
            return Err(ApiError::bad_param(
                "logprobs",
                "logprobs must be true or false",
            ))
        }
        (Endpoint::Completion, Some(_)) => {
            return Err(ApiError::bad_param(
                "logprobs",
                "logprobs must be an integer in [0, 20]",
            ))
        }
    };
    let mut logit_bias = Vec::new();
    for (k, v) in b.logit_bias.iter().flatten() {
        let t: u32 = k.parse().map_err(|_| {
            ApiError::bad_param(
                "logit_bias",
                format!("logit_bias keys are token ids, got {k:?}"),
            )
        })?;
        logit_bias.push((t, *v as f32));
    }
    let opts = GenerateOptions {
        max_tokens,
        sampler: SamplerSettings {
            temp,
            top_p,
            top_k,
            min_p,
            seed: b.seed.map(|s| s as u64),
            repetition_penalty: b.repetition_penalty.map(|p| p as f32),
            logit_bias,
            ..SamplerSettings::default()
        },
        stop,
        ..GenerateOptions::default()
    };
    let stream = b.stream.unwrap_or(false);
    let meta = Meta {
        endpoint,
        stream,
        include_usage: stream && b.stream_options.as_ref().is_some_and(|o| o.include_usage),
        logprobs,
        prompt_tokens: prompt.len(),
    };
    Ok((
        SeqRequest {
            prompt,
            opts,
            logprobs,
        },
        meta,
    ))
}

/// `usage` with the prompt tokens served from the prefix cache.
pub fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// Chat's per-token logprobs entry (`{token, logprob, bytes, top_logprobs}`).
pub fn chat_logprob(m: &LoadedModel, token: u32, lp: &TokenLogprob) -> Value {
    let piece = |t: u32| m.tokenizer.decode(&[t]).unwrap_or_default();
    let entry = |t: u32, l: f32| {
        let s = piece(t);
        json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
    };
    let mut e = entry(token, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
    e
}

/// Appends one token to a completions `logprobs` object.
pub fn completion_logprob(
    m: &LoadedModel,
    acc: &mut Value,
    token: u32,
    lp: &TokenLogprob,
    offset: usize,
) {
    let piece = |t: u32| m.tokenizer.decode(&[t]).unwrap_or_default();
    let push = |acc: &mut Value, key: &str, v: Value| {
        if let Some(a) = acc[key].as_array_mut() {
            a.push(v);
        }
    };
    push(acc, "tokens", json!(piece(token)));
    push(acc, "token_logprobs", json!(lp.logprob));
    let top: serde_json::Map<String, Value> =
        lp.top.iter().map(|&(t, l)| (piece(t), json!(l))).collect();
    push(acc, "top_logprobs", Value::Object(top));
    push(acc, "text_offset", json!(offset));
}

/// An empty completions `logprobs` object.
pub fn completion_logprobs_empty() -> Value {
    json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []})
}
