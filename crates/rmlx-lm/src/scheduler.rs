//! Continuous batching on one model thread: requests wait in a bounded queue, join the
//! running batch between decode steps when their KV cache fits the memory budget, stream
//! their events to a [`Sink`], and leave when they finish or their receiver goes away
//! (a disconnected client), which frees their cache at once. Long prompts are prefilled in
//! chunks between decode steps (`BatchOptions::prefill_tokens`), and finished sequences leave
//! their caches to a prefix cache that later prompts with the same beginning reuse.
//!
//! Runtime-agnostic (std threads and channels): the HTTP server hands in a sink that forwards
//! to its async channel.

use crate::batch::{
    check_request, BatchGenerator, BatchOptions, FinishReason, SeqEvent, SeqRequest,
};
use crate::cache::STEP;
use crate::error::{LmError, Result};
use crate::load::LoadedModel;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Where a request's events go.
pub trait Sink: Send {
    /// Delivers one event; false when nobody listens any more (the request is cancelled).
    fn send(&mut self, ev: SeqEvent) -> bool;
    /// Whether the listener is gone (checked between steps, so a request waiting in the
    /// queue or prefilling is cancelled too).
    fn is_closed(&self) -> bool;
}

/// Limits of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Requests waiting for a place in the batch; more are refused ([`SubmitError::QueueFull`]).
    pub max_queue: usize,
    /// Sequences generating at once.
    pub max_batch: usize,
    /// Bytes of KV cache the running sequences (and the prefix cache) may hold. A request
    /// reserves its worst case (prompt + max_tokens) when admitted.
    pub kv_budget_bytes: usize,
    /// Bytes of the prefix cache (0 = off); counted in the KV budget and evicted first.
    pub prefix_cache_bytes: usize,
    pub batch: BatchOptions,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_queue: 64,
            max_batch: 16,
            kv_budget_bytes: 2 << 30,
            prefix_cache_bytes: 256 << 20,
            batch: BatchOptions::default(),
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// The wait queue is full: try again later.
    QueueFull(usize),
    /// The request can never fit the KV budget (bytes needed, budget).
    TooLarge { needed: usize, budget: usize },
    /// A bad prompt or bad sampling settings.
    Invalid(String),
    /// The model thread has stopped.
    Stopped,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::QueueFull(n) => write!(
                f,
                "the server is busy: {n} requests are already waiting; retry later"
            ),
            SubmitError::TooLarge { needed, budget } => write!(
                f,
                "this request needs up to {:.1} MB of KV cache (prompt + max_tokens) but the server's KV budget is {:.1} MB; lower max_tokens or shorten the prompt",
                *needed as f64 / 1e6,
                *budget as f64 / 1e6
            ),
            SubmitError::Invalid(m) => f.write_str(m),
            SubmitError::Stopped => f.write_str("the model thread has stopped"),
        }
    }
}

struct Job {
    req: SeqRequest,
    sink: Box<dyn Sink>,
    reserve: usize,
}

enum Msg {
    Submit(Box<Job>),
    Shutdown,
}

/// Counters the server reports (`/health`).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_reserved: AtomicUsize,
    pub completed: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub prefix_hits: AtomicUsize,
}

/// The handle the server keeps: submit requests, read counters, stop.
pub struct Scheduler {
    tx: mpsc::Sender<Msg>,
    stats: Arc<SchedulerStats>,
    cfg: SchedulerConfig,
    model: Arc<LoadedModel>,
    kv_per_token: usize,
    thread: Option<JoinHandle<()>>,
}

/// Worst-case KV bytes per token of `model`: every layer keeps keys and values of
/// `n_kv_heads × head_dim` values, counted at 4 bytes (the widest activation dtype).
pub fn kv_bytes_per_token(model: &LoadedModel) -> usize {
    let c = model.model.config();
    model.model.num_layers() * 2 * c.num_key_value_heads * c.head_dim * 4
}

impl Scheduler {
    /// Starts the model thread.
    pub fn start(model: Arc<LoadedModel>, cfg: SchedulerConfig) -> Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        let cfg = SchedulerConfig {
            max_batch: cfg.max_batch.max(1),
            ..cfg
        };
        let (m, c, s) = (model.clone(), cfg.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("rmlx-model".into())
            .spawn(move || run(&m, &c, &s, rx))
            .map_err(|e| LmError::Generate(format!("cannot start the model thread: {e}")))?;
        Ok(Scheduler {
            tx,
            stats,
            kv_per_token: kv_bytes_per_token(&model),
            cfg,
            model,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// KV bytes a request reserves: prompt + max_tokens positions, in whole cache steps.
    pub fn kv_reserve(&self, req: &SeqRequest) -> usize {
        let ctx = self
            .model
            .model
            .config()
            .max_position_embeddings
            .unwrap_or(usize::MAX);
        let tokens = (req.prompt.len() + req.opts.max_tokens).min(ctx);
        tokens.next_multiple_of(STEP) * self.kv_per_token
    }

    /// Checks and queues a request; its events go to `sink`.
    pub fn submit(&self, req: SeqRequest, sink: Box<dyn Sink>) -> Result<(), SubmitError> {
        check_request(self.model.model.as_ref(), &req)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let reserve = self.kv_reserve(&req);
        if reserve > self.cfg.kv_budget_bytes {
            return Err(SubmitError::TooLarge {
                needed: reserve,
                budget: self.cfg.kv_budget_bytes,
            });
        }
        let q = &self.stats.queued;
        if q.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_queue {
            q.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(self.cfg.max_queue));
        }
        self.tx
            .send(Msg::Submit(Box::new(Job { req, sink, reserve })))
            .map_err(|_| {
                q.fetch_sub(1, Ordering::SeqCst);
                SubmitError::Stopped
            })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Running {
    sink: Box<dyn Sink>,
    reserve: usize,
}

/// The model thread: admit, step, deliver, until shut down.
fn run(
    model: &LoadedModel,
    cfg: &SchedulerConfig,
    stats: &SchedulerStats,
    rx: mpsc::Receiver<Msg>,
) {
    let mut gen = BatchGenerator::new(model.model.as_ref(), &model.tokenizer, cfg.batch.clone());
    if cfg.prefix_cache_bytes > 0 {
        gen.enable_prefix_cache(cfg.prefix_cache_bytes);
    }
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut reserved = 0usize;
    loop {
        // New requests: wait for one when idle, else take what has arrived.
        let mut msgs = Vec::new();
        if gen.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(m) => msgs.push(m),
                Err(_) => return,
            }
        }
        msgs.extend(rx.try_iter());
        for m in msgs {
            match m {
                Msg::Submit(j) => waiting.push_back(*j),
                Msg::Shutdown => return,
            }
        }
        // Cancel what nobody listens to any more, queued or running.
        let before = waiting.len();
        waiting.retain(|j| !j.sink.is_closed());
        let dropped = before - waiting.len();
        stats.queued.fetch_sub(dropped, Ordering::SeqCst);
        stats.cancelled.fetch_add(dropped, Ordering::SeqCst);
        let gone: Vec<u64> = running
            .iter()
            .filter(|(_, r)| r.sink.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            gen.remove(id);
            reserved -= running.remove(&id).map_or(0, |r| r.reserve);
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        // Admit in arrival order while the batch has room and the cache fits.
        while let Some(j) = waiting.front() {
            if running.len() >= cfg.max_batch {
                break;
            }
            let room = cfg.kv_budget_bytes.saturating_sub(reserved + j.reserve);
            if let Some(p) = gen.prefix_cache() {
                if p.bytes() > room {
                    p.evict_to(room);
                }
            }
            let prefix = gen.prefix_cache().map_or(0, |p| p.bytes());
            if reserved + j.reserve + prefix > cfg.kv_budget_bytes {
                break;
            }
            let mut j = waiting.pop_front().expect("front exists");
            stats.queued.fetch_sub(1, Ordering::SeqCst);
            match gen.insert(j.req) {
                Ok(id) => {
                    reserved += j.reserve;
                    running.insert(
                        id,
                        Running {
                            sink: j.sink,
                            reserve: j.reserve,
                        },
                    );
                }
                Err(e) => {
                    j.sink.send(SeqEvent {
                        id: u64::MAX,
                        token: None,
                        text: String::new(),
                        logprob: None,
                        finish_reason: Some(FinishReason::Error(e.to_string())),
                        prompt_tokens: 0,
                        generation_tokens: 0,
                        cached_tokens: 0,
                    });
                }
            }
        }
        stats.running.store(running.len(), Ordering::SeqCst);
        stats.kv_reserved.store(reserved, Ordering::SeqCst);
        if gen.is_empty() {
            continue;
        }
        for ev in gen.step() {
            let (id, done) = (ev.id, ev.finish_reason.is_some());
            let Some(r) = running.get_mut(&id) else {
                continue;
            };
            let alive = r.sink.send(ev);
            if done || !alive {
                if !done {
                    gen.remove(id);
                    stats.cancelled.fetch_add(1, Ordering::SeqCst);
                } else {
                    stats.completed.fetch_add(1, Ordering::SeqCst);
                }
                reserved -= running.remove(&id).map_or(0, |r| r.reserve);
            }
        }
        if let Some(p) = gen.prefix_cache() {
            stats.prefix_hits.store(p.hits, Ordering::SeqCst);
        }
        stats.running.store(running.len(), Ordering::SeqCst);
        stats.kv_reserved.store(reserved, Ordering::SeqCst);
    }
}
