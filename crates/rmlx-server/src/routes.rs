//! The endpoints: completions (SSE or one JSON answer), models, health, the chat page, and the
//! errors for everything else.

use crate::api::{self, build_request, parse_body, Endpoint, Meta};
use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use rmlx_lm::batch::{FinishReason, SeqEvent};
use rmlx_lm::scheduler::{Sink, SubmitError};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Forwards the model thread's events to the request's async task.
struct ChannelSink(mpsc::UnboundedSender<SeqEvent>);

impl Sink for ChannelSink {
    fn send(&mut self, ev: SeqEvent) -> bool {
        self.0.send(ev).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

pub async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let s = app.sched.stats();
    Json(json!({
        "status": "ok",
        "queued": s.queued.load(Ordering::Relaxed),
        "running": s.running.load(Ordering::Relaxed),
        "kv_reserved_bytes": s.kv_reserved.load(Ordering::Relaxed),
        "kv_budget_bytes": app.sched.config().kv_budget_bytes,
        "completed": s.completed.load(Ordering::Relaxed),
        "cancelled": s.cancelled.load(Ordering::Relaxed),
        "prefix_cache_hits": s.prefix_hits.load(Ordering::Relaxed),
    }))
}

pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": app.model_id, "object": "model", "created": app.created, "owned_by": "rmlx",
    }]}))
}

/// The chat page: HTML, CSS and script in one file, nothing fetched from elsewhere (the
/// content security policy makes sure of it); it talks to `/v1/chat/completions`.
pub async fn chat_page() -> impl IntoResponse {
    const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
        connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    (
        [
            ("content-security-policy", CSP),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
        ],
        Html(include_str!("chat.html")),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such endpoint (try GET / for the chat page, POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health)",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "wrong method for this endpoint (completions take POST; /v1/models and /health take GET)",
    )
}

pub async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(app, body, Endpoint::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(app, body, Endpoint::Completion)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn complete(
    app: Arc<App>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::status(
            e.status(),
            "invalid_request_error",
            format!(
                "cannot read the request body: {} (the limit is {} bytes)",
                e.body_text(),
                app.max_body_bytes
            ),
        )
    })?;
    let b = parse_body(&body)?;
    // Tokenizing and templating a long prompt takes a while: off the async threads.
    let app2 = app.clone();
    let (req, meta) =
        tokio::task::spawn_blocking(move || build_request(&app2.model, &b, endpoint, &app2.limits))
            .await
            .map_err(|e| {
                ApiError::status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    e.to_string(),
                )
            })??;
    let (tx, rx) = mpsc::unbounded_channel();
    app.sched
        .submit(req, Box::new(ChannelSink(tx)))
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_overloaded",
                e.to_string(),
            )
            .with_code("queue_full"),
            SubmitError::TooLarge { .. } => {
                ApiError::bad_request(e.to_string()).with_code("kv_budget_exceeded")
            }
            SubmitError::Invalid(m) => ApiError::bad_request(m),
            SubmitError::Stopped => ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            ),
        })?;
    let id = format!(
        "{}-{:x}",
        if endpoint == Endpoint::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        app.next_id.fetch_add(1, Ordering::Relaxed)
    );
    if meta.stream {
        return Ok(sse(app, rx, meta, id).into_response());
    }
    collect(app, rx, meta, id)
        .await
        .map(IntoResponse::into_response)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn gen_failed(msg: &str) -> ApiError {
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        format!("generation failed: {msg}"),
    )
}

/// Waits for the whole answer and returns it as one object.
async fn collect(
    app: Arc<App>,
    mut rx: mpsc::UnboundedReceiver<SeqEvent>,
    meta: Meta,
    id: String,
) -> Result<Json<Value>, ApiError> {
    let mut text = String::new();
    let mut chat_lp = Vec::new();
    let mut comp_lp = api::completion_logprobs_empty();
    let (n, cached, finish) = loop {
        let Some(ev) = rx.recv().await else {
            return Err(gen_failed("the model thread stopped"));
        };
        if let (Some(t), Some(lp)) = (ev.token, &ev.logprob) {
            match meta.endpoint {
                Endpoint::Chat => chat_lp.push(api::chat_logprob(&app.model, t, lp)),
                Endpoint::Completion => {
                    api::completion_logprob(&app.model, &mut comp_lp, t, lp, text.len())
                }
            }
        }
        text.push_str(&ev.text);
        if let Some(f) = ev.finish_reason {
            break (ev.generation_tokens, ev.cached_tokens, f);
        }
    };
    if let FinishReason::Error(m) = &finish {
        return Err(gen_failed(m));
    }
    let choice = match meta.endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": meta.logprobs.map(|_| json!({"content": chat_lp})),
            "finish_reason": finish.as_str(),
        }),
        Endpoint::Completion => json!({
            "index": 0,
            "text": text,
            "logprobs": meta.logprobs.map(|_| comp_lp),
            "finish_reason": finish.as_str(),
        }),
    };
    Ok(Json(json!({
        "id": id,
        "object": if meta.endpoint == Endpoint::Chat { "chat.completion" } else { "text_completion" },
        "created": now(),
        "model": app.model_id,
        "choices": [choice],
        "usage": api::usage(meta.prompt_tokens, n, cached),
    })))
}

/// The chunk object of a streamed answer around one `choice`.
fn chunk(app: &App, meta: &Meta, id: &str, choices: Value) -> Value {
    json!({
        "id": id,
        "object": if meta.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" },
        "created": now(),
        "model": app.model_id,
        "choices": choices,
    })
}

fn data(v: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

/// Streams the answer as server-sent events, ending with `data: [DONE]`. When the client goes
/// away the stream (and with it the receiver) is dropped: the scheduler cancels the request.
fn sse(
    app: Arc<App>,
    rx: mpsc::UnboundedReceiver<SeqEvent>,
    meta: Meta,
    id: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct St {
        app: Arc<App>,
        rx: mpsc::UnboundedReceiver<SeqEvent>,
        meta: Meta,
        id: String,
        started: bool,
        offset: usize,
        done: bool,
    }
    let st = St {
        app,
        rx,
        meta,
        id,
        started: false,
        offset: 0,
        done: false,
    };
    let s = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out: Vec<Result<Event, Infallible>> = Vec::new();
        if !st.started && st.meta.endpoint == Endpoint::Chat {
            st.started = true;
            let c = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
            out.push(data(&chunk(&st.app, &st.meta, &st.id, c)));
            return Some((stream::iter(out), st));
        }
        let Some(ev) = st.rx.recv().await else {
            st.done = true;
            let e = gen_failed("the model thread stopped");
            out.push(data(&e.body()));
            out.push(Ok(Event::default().data("[DONE]")));
            return Some((stream::iter(out), st));
        };
        if let Some(FinishReason::Error(m)) = &ev.finish_reason {
            st.done = true;
            out.push(data(&gen_failed(m).body()));
            out.push(Ok(Event::default().data("[DONE]")));
            return Some((stream::iter(out), st));
        }
        let finish = ev.finish_reason.as_ref().map(FinishReason::as_str);
        let app = &st.app;
        let lp = match (ev.token, &ev.logprob) {
            (Some(t), Some(lp)) => match st.meta.endpoint {
                Endpoint::Chat => json!({"content": [api::chat_logprob(&app.model, t, lp)]}),
                Endpoint::Completion => {
                    let mut acc = api::completion_logprobs_empty();
                    api::completion_logprob(&app.model, &mut acc, t, lp, st.offset);
                    acc
                }
            },
            _ => Value::Null,
        };
        st.offset += ev.text.len();
        if !ev.text.is_empty() || finish.is_some() || !lp.is_null() {
            let c = match st.meta.endpoint {
                Endpoint::Chat => {
                    let delta = if ev.text.is_empty() {
                        json!({})
                    } else {
                        json!({"content": ev.text})
                    };
                    json!([{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}])
                }
                Endpoint::Completion => {
                    json!([{"index": 0, "text": ev.text, "logprobs": lp, "finish_reason": finish}])
                }
            };
            out.push(data(&chunk(app, &st.meta, &st.id, c)));
        }
        if finish.is_some() {
            st.done = true;
            if st.meta.include_usage {
                let mut u = chunk(app, &st.meta, &st.id, json!([]));
                u["usage"] = api::usage(
                    st.meta.prompt_tokens,
                    ev.generation_tokens,
                    ev.cached_tokens,
                );
                out.push(data(&u));
            }
            out.push(Ok(Event::default().data("[DONE]")));
        }
        Some((stream::iter(out), st))
    });
    // Comments every 2 s while waiting: a client that left is noticed even before a token.
    Sse::new(futures_util::StreamExt::flatten(s))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
}
