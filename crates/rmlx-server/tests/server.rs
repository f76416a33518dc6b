//! The server end to end on the tiny chat fixture (a 4-bit Llama of 60 KB with a character
//! tokenizer): a real socket on a free port, raw HTTP/1.1 requests (so every header and SSE
//! line is what a client sees), answers checked against the library's own generation.

use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::generate::{generate, GenerateOptions};
use rmlx_lm::load::{load, LoadOptions, LoadedModel};
use rmlx_server::{start, ServerConfig, ServerHandle};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny_chat")
}

fn model() -> LoadedModel {
    load(&fixture(), &LoadOptions::default()).unwrap()
}

fn server(f: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut cfg = ServerConfig {
        port: 0,
        ..ServerConfig::default()
    };
    f(&mut cfg);
    start(model(), cfg).unwrap()
}

struct Resp {
    status: u16,
    headers: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    /// The `data:` payloads of an SSE body.
    fn events(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &str, key: Option<&str>) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Resp {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    request(addr, "POST", path, &body.to_string(), None)
}

/// What the library generates for one user message (greedy), as the chat endpoint should.
fn reference(m: &LoadedModel, msg: &str, max_tokens: usize) -> String {
    let s = m
        .tokenizer
        .apply_chat_template(&[ChatMessage::new("user", msg)], true)
        .unwrap();
    let ids = m.tokenizer.encode(&s, false).unwrap();
    let opts = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    generate(m.model.as_ref(), &m.tokenizer, &ids, &opts).unwrap()
}

fn chat_body(msg: &str, max_tokens: usize) -> Value {
    json!({"model": "tiny", "messages": [{"role": "user", "content": msg}], "max_tokens": max_tokens, "temperature": 0})
}

fn assert_error(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let e = &r.json()["error"];
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(e["type"].is_string());
}

#[test]
fn health_models_and_unknown_paths() {
    let h = server(|_| {});
    let r = request(h.addr, "GET", "/health", "", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = request(h.addr, "GET", "/v1/models", "", None);
    assert_eq!(r.json()["data"][0]["object"], "model");
    assert_error(
        &request(h.addr, "GET", "/v2/nothing", "", None),
        404,
        "no such endpoint",
    );
}

#[test]
fn chat_answers_what_the_library_generates() {
    let m = model();
    let h = server(|_| {});
    for (msg, n) in [("hello there", 12), ("What is 2+2?", 20)] {
        let r = post(h.addr, "/v1/chat/completions", &chat_body(msg, n));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        let c = &v["choices"][0];
        assert_eq!(c["message"]["role"], "assistant");
        assert_eq!(c["message"]["content"], reference(&m, msg, n));
        let u = &v["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
    }
}

#[test]
fn streaming_equals_the_whole_answer_and_ends_with_done() {
    let h = server(|_| {});
    // long enough that a repeat leaves more than DECODE_FAMILY_ROWS tokens to recompute
    let mut body = chat_body(
        "stream me an answer about the sea, the sky, the wind and the rain over the hills",
        16,
    );
    let whole = post(h.addr, "/v1/chat/completions", &body).json();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(h.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("text/event-stream"), "{}", r.headers);
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let fin: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null() && c["choices"][0].is_object())
        .collect();
    assert_eq!(fin.len(), 1);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][k], whole["usage"][k]);
    }
    // The same prompt again: all but its last DECODE_FAMILY_ROWS + 1 tokens came from the
    // prefix cache (more rows than the decode kernels may take are recomputed, so the answer
    // equals a fresh prefill's).
    let p = usage["usage"]["prompt_tokens"].as_u64().unwrap();
    let recomputed = rmlx_lm::batch::DECODE_FAMILY_ROWS as u64 + 1;
    assert!(
        p > recomputed,
        "prompt of {p} tokens: too short to reuse anything"
    );
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        p - recomputed
    );
}

#[test]
fn completions_with_logprobs_and_stop() {
    let h = server(|_| {});
    let body = json!({"prompt": "abc", "max_tokens": 8, "temperature": 0, "logprobs": 3});
    let v = post(h.addr, "/v1/completions", &body).json();
    assert_eq!(v["object"], "text_completion");
    let c = &v["choices"][0];
    let n = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert_eq!(c["logprobs"]["token_logprobs"].as_array().unwrap().len(), n);
    assert_eq!(
        c["logprobs"]["top_logprobs"][0].as_object().unwrap().len(),
        3
    );
    let text = c["text"].as_str().unwrap().to_string();
    // Stop at the third character of that answer: the text ends before it.
    if let Some(stop) = text.chars().nth(2).filter(|ch| !text[..1].contains(*ch)) {
        let body =
            json!({"prompt": "abc", "max_tokens": 8, "temperature": 0, "stop": [stop.to_string()]});
        let v = post(h.addr, "/v1/completions", &body).json();
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(text.starts_with(v["choices"][0]["text"].as_str().unwrap()));
        assert!(!v["choices"][0]["text"].as_str().unwrap().contains(stop));
    }
    // Chat logprobs: one entry per token, with top alternatives.
    let mut b = chat_body("hi", 5);
    b["logprobs"] = json!(true);
    b["top_logprobs"] = json!(2);
    let v = post(h.addr, "/v1/chat/completions", &b).json();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len(),
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize
    );
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_goes_on() {
    let h = server(|c| c.max_body_bytes = 4096);
    let a = h.addr;
    let p = "/v1/chat/completions";
    assert_error(
        &request(a, "POST", p, "{not json", None),
        400,
        "not valid JSON",
    );
    assert_error(&request(a, "POST", p, "[1, 2]", None), 400, "JSON object");
    let mut b = chat_body("x", 4);
    b["temperature"] = json!("hot");
    assert_error(&post(a, p, &b), 400, "invalid type");
    let mut b = chat_body("x", 4);
    b["frobnicate"] = json!(1);
    assert_error(&post(a, p, &b), 400, "unknown field `frobnicate`");
    assert_error(
        &post(
            a,
            p,
            &chat_body("x", 0)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("max_tokens".into(), json!(-5));
                    Value::Object(o)
                })
                .unwrap(),
        ),
        400,
        "max_tokens must be a non-negative integer",
    );
    let r = post(a, p, &chat_body(&"long ".repeat(70), 4));
    assert_error(&r, 400, "more than this server accepts");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    let mut b = chat_body("x", 4);
    b["n"] = json!(3);
    assert_error(&post(a, p, &b), 400, "n = 1");
    assert_error(
        &post(a, p, &json!({"messages": []})),
        400,
        "must not be empty",
    );
    assert_error(
        &post(a, p, &json!({"prompt": "x"})),
        400,
        "belongs to /v1/completions",
    );
    assert_error(
        &post(a, "/v1/completions", &json!({"prompt": 5})),
        400,
        "`prompt` must be",
    );
    let mut b = chat_body("x", 4);
    b["top_p"] = json!(1.5);
    assert_error(&post(a, p, &b), 400, "top_p must be in [0, 1]");
    let r = request(a, "POST", p, &"x".repeat(5000), None);
    assert_error(&r, 413, "limit is 4096 bytes");
    // Still serving.
    assert_eq!(post(a, p, &chat_body("ok?", 3)).status, 200);
}

#[test]
fn the_chat_page_is_one_self_contained_file() {
    let h = server(|_| {});
    let r = request(h.addr, "GET", "/", "", None);
    assert_eq!(r.status, 200);
    let head = r.headers.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    // The policy forbids loading anything from another origin.
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(r.body.contains("/v1/chat/completions") && r.body.contains("stream: true"));
    for external in ["http://", "https://", "src=", "<link"] {
        assert!(
            !r.body.contains(external),
            "the page refers to {external:?}"
        );
    }
    // Only GET (and HEAD) are served there.
    assert_eq!(request(h.addr, "POST", "/", "{}", None).status, 405);
}

#[test]
fn api_key_guards_everything_but_health_and_the_chat_page() {
    let h = server(|c| c.api_key = Some("s3cret".into()));
    let a = h.addr;
    assert_eq!(request(a, "GET", "/health", "", None).status, 200);
    assert_eq!(request(a, "GET", "/", "", None).status, 200);
    let r = request(a, "GET", "/v1/models", "", None);
    assert_error(&r, 401, "API key");
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(
        request(a, "GET", "/v1/models", "", Some("wrong")).status,
        401
    );
    assert_eq!(
        request(a, "GET", "/v1/models", "", Some("s3cret")).status,
        200
    );
    let body = chat_body("hi", 3).to_string();
    assert_eq!(
        request(a, "POST", "/v1/chat/completions", &body, Some("s3cret")).status,
        200
    );
    assert_eq!(
        request(a, "POST", "/v1/chat/completions", &body, None).status,
        401
    );
}

#[test]
fn concurrent_requests_batch_and_match_their_solo_answers() {
    let m = model();
    // No prefix cache: a reused prefix changes the prefill's chunking (and so the rounding).
    let h = server(|c| c.scheduler.prefix_cache_bytes = 0);
    let msgs: Vec<String> = (0..8)
        .map(|i| format!("question {i}: {}", "why ".repeat(i)))
        .collect();
    let addr = h.addr;
    let threads: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, msg)| {
            let mut body = chat_body(msg, 10 + i);
            body["stream"] = json!(i % 2 == 0);
            std::thread::spawn(move || post(addr, "/v1/chat/completions", &body))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let text = if i % 2 == 0 {
            r.events()
                .iter()
                .filter(|e| *e != "[DONE]")
                .filter_map(|e| {
                    serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect::<String>()
        } else {
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, reference(&m, &msgs[i], 10 + i), "request {i}");
    }
}

/// Polls /health until `pred` holds (or fails after 20 s).
fn wait_health(addr: SocketAddr, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = request(addr, "GET", "/health", "", None).json();
        if pred(&v) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "health never became ready: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_disconnect_cancels_and_frees_the_cache() {
    let h = server(|_| {});
    let a = h.addr;
    // A long streaming request (EOS masked); read its first bytes, then hang up.
    let body = json!({"prompt": "x", "max_tokens": 250, "temperature": 0.9, "stream": true, "logit_bias": {"2": -100}});
    let mut s = TcpStream::connect(a).unwrap();
    let b = body.to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    let v = wait_health(a, |v| v["cancelled"] == 1 && v["running"] == 0);
    assert_eq!(v["completed"], 0, "{v}");
    assert_eq!(v["kv_reserved_bytes"], 0);
    assert_eq!(
        post(
            a,
            "/v1/completions",
            &json!({"prompt": "y", "max_tokens": 2})
        )
        .status,
        200
    );
}

#[test]
fn a_full_queue_is_503() {
    // No waiting room at all: every request is refused with a retry hint. (The queue's
    // admission order and limits are tested on the scheduler itself, in rmlx-lm.)
    let h = server(|c| c.scheduler.max_queue = 0);
    let r = post(
        h.addr,
        "/v1/completions",
        &json!({"prompt": "y", "max_tokens": 2}),
    );
    assert_error(&r, 503, "busy");
    assert_eq!(r.json()["error"]["code"], "queue_full");
    assert!(r.headers.to_ascii_lowercase().contains("retry-after: 1"));
}

#[test]
fn kv_budget_and_prefix_cache() {
    let h = server(|c| c.scheduler.kv_budget_bytes = 1 << 20);
    let a = h.addr;
    // 2 layers × 2 × 2 heads × 16 dims × 4 bytes = 512 B per token: 256 tokens fit 1 MB.
    let ok = post(a, "/v1/chat/completions", &chat_body("hi", 50));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let h2 = server(|c| c.scheduler.kv_budget_bytes = 64 << 10);
    let r = post(h2.addr, "/v1/chat/completions", &chat_body("hi", 200));
    assert_error(&r, 400, "KV budget");
    assert_eq!(r.json()["error"]["code"], "kv_budget_exceeded");
    // The same long system prompt twice: the second reuses its keys and values.
    let sys = "You are a terse assistant who answers in one word. ".repeat(2);
    let body = |q: &str| json!({"messages": [{"role": "system", "content": sys}, {"role": "user", "content": q}], "max_tokens": 3});
    let first = post(a, "/v1/chat/completions", &body("one")).json();
    let first = first["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        first < 5,
        "only the template's first tokens are shared with earlier requests"
    );
    let second = post(a, "/v1/chat/completions", &body("two")).json();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached as usize >= sys.len(),
        "cached {cached} of the system prompt"
    );
}
