//! rmlx's OpenAI-compatible HTTP server: `POST /v1/chat/completions`, `POST /v1/completions`
//! (JSON or server-sent events), `GET /v1/models`, `GET /health`, and a chat page at `GET /`
//! (one self-contained file, `chat.html`). HTTP only: requests are
//! checked and turned into generation requests here, and the continuous-batching scheduler
//! of `rmlx_lm::scheduler` runs them on one model thread.

pub mod api;
pub mod error;
mod routes;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use rmlx_lm::load::LoadedModel;
use rmlx_lm::scheduler::{Scheduler, SchedulerConfig};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Everything `rmlx serve` can set.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    /// 0 = any free port (tests).
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every endpoint but `/health`.
    pub api_key: Option<String>,
    /// The name `/v1/models` lists and responses carry.
    pub model_id: String,
    pub max_body_bytes: usize,
    pub limits: api::Limits,
    pub scheduler: SchedulerConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            model_id: "rmlx".into(),
            max_body_bytes: 1 << 20,
            limits: api::Limits {
                max_prompt_tokens: 32768,
                default_max_tokens: 512,
                default_temp: 0.0,
            },
            scheduler: SchedulerConfig::default(),
        }
    }
}

/// Shared by every request.
pub struct App {
    model: Arc<LoadedModel>,
    sched: Scheduler,
    model_id: String,
    created: u64,
    api_key: Option<String>,
    max_body_bytes: usize,
    limits: api::Limits,
    next_id: AtomicU64,
}

/// A running server: its address; dropping it (or `shutdown`) stops it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops accepting, finishes the open responses, joins the threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Bearer-token check (constant-time compare) for everything but `/health` and the chat page
/// (a browser loads `/` without a key; the page then sends its key with each API call).
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        if !matches!(req.uri().path(), "/health" | "/") {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let same = given.len() == key.len()
                && given
                    .bytes()
                    .zip(key.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0;
            if !same {
                return ApiError::status(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "missing or wrong API key: send `Authorization: Bearer <key>` (the server's --api-key / RMLX_API_KEY)",
                )
                .with_code("invalid_api_key")
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// The router (exposed for tests that drive it without a socket).
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/", get(routes::chat_page))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app)
}

/// Binds `host:port`, starts the model thread and the HTTP threads, and returns at once.
pub fn start(model: LoadedModel, cfg: ServerConfig) -> Result<ServerHandle, String> {
    let listener = std::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the socket: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let model = Arc::new(model);
    let sched =
        Scheduler::start(model.clone(), cfg.scheduler.clone()).map_err(|e| e.to_string())?;
    let app = Arc::new(App {
        model,
        sched,
        model_id: cfg.model_id.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        api_key: cfg.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: cfg.max_body_bytes,
        limits: cfg.limits.clone(),
        next_id: AtomicU64::new(1),
    });
    // Two I/O threads: the work is on the model thread; these only parse and stream.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rmlx-http")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("rmlx-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("rmlx serve: cannot use the socket: {e}");
                        return;
                    }
                };
                let serve = axum::serve(listener, router(app)).with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                });
                if let Err(e) = serve.await {
                    eprintln!("rmlx serve: {e}");
                }
            });
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
