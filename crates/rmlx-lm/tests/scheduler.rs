//! The continuous-batching scheduler on the tiny chat fixture: a bounded queue, admission by
//! batch size and KV budget in arrival order, cancellation of queued and running requests, and
//! concurrent requests getting the tokens they would get alone. Sinks that sleep on each event
//! keep requests running for as long as a test needs.

use rmlx_lm::batch::{FinishReason, SeqEvent, SeqRequest};
use rmlx_lm::generate::{stream_generate, GenerateOptions};
use rmlx_lm::load::{load, LoadOptions, LoadedModel};
use rmlx_lm::sample::SamplerSettings;
use rmlx_lm::scheduler::{Scheduler, SchedulerConfig, Sink, SubmitError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn model() -> Arc<LoadedModel> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny_chat");
    Arc::new(load(&p, &LoadOptions::default()).unwrap())
}

struct TestSink {
    tx: mpsc::Sender<SeqEvent>,
    closed: Arc<AtomicBool>,
    delay: Duration,
}

impl Sink for TestSink {
    fn send(&mut self, ev: SeqEvent) -> bool {
        std::thread::sleep(self.delay);
        self.tx.send(ev).is_ok() && !self.closed.load(Ordering::SeqCst)
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

fn sink(delay_ms: u64) -> (Box<dyn Sink>, mpsc::Receiver<SeqEvent>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel();
    let closed = Arc::new(AtomicBool::new(false));
    let s = TestSink {
        tx,
        closed: closed.clone(),
        delay: Duration::from_millis(delay_ms),
    };
    (Box::new(s), rx, closed)
}

/// A request that runs its whole budget (EOS masked).
fn long(prompt: Vec<u32>, max_tokens: usize) -> SeqRequest {
    SeqRequest::new(
        prompt,
        GenerateOptions {
            max_tokens,
            sampler: SamplerSettings {
                logit_bias: vec![(2, -1e9)],
                ..SamplerSettings::default()
            },
            ..GenerateOptions::default()
        },
    )
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(rx: &mpsc::Receiver<SeqEvent>) -> (Vec<u32>, FinishReason) {
    let mut ids = Vec::new();
    loop {
        let ev = rx.recv_timeout(Duration::from_secs(30)).expect("an event");
        ids.extend(ev.token);
        if let Some(f) = ev.finish_reason {
            return (ids, f);
        }
    }
}

#[test]
fn queue_bounds_admission_order_and_cancellation() {
    let m = model();
    let cfg = SchedulerConfig {
        max_queue: 2,
        max_batch: 1,
        ..SchedulerConfig::default()
    };
    let s = Scheduler::start(m.clone(), cfg).unwrap();
    let st = s.stats();
    let (k1, r1, c1) = sink(20);
    s.submit(long(vec![5, 6, 7], 200), k1).unwrap();
    wait("the first to run", || {
        st.running.load(Ordering::SeqCst) == 1
    });
    let (k2, r2, c2) = sink(0);
    let (k3, r3, _c3) = sink(0);
    s.submit(long(vec![8], 4), k2).unwrap();
    s.submit(long(vec![9], 3), k3).unwrap();
    wait("two queued", || st.queued.load(Ordering::SeqCst) == 2);
    let (k4, _r4, _) = sink(0);
    assert_eq!(
        s.submit(long(vec![1], 3), k4).unwrap_err(),
        SubmitError::QueueFull(2)
    );
    // Cancel one that waits, then the running one: the third runs next.
    c2.store(true, Ordering::SeqCst);
    c1.store(true, Ordering::SeqCst);
    let (ids3, f3) = drain(&r3);
    assert_eq!((ids3.len(), f3), (3, FinishReason::Length));
    assert!(
        r2.try_recv().is_err(),
        "the cancelled queued request never ran"
    );
    assert!(r1.iter().count() < 200, "the running request stopped early");
    wait("cancellations counted", || {
        st.cancelled.load(Ordering::SeqCst) == 2
    });
    wait("nothing reserved", || {
        st.kv_reserved.load(Ordering::SeqCst) == 0
    });
}

#[test]
fn kv_budget_limits_what_runs_together() {
    let m = model();
    let per = rmlx_lm::scheduler::kv_bytes_per_token(&m) * rmlx_lm::cache::STEP;
    // Room for two requests of up to 256 positions, not three.
    let cfg = SchedulerConfig {
        kv_budget_bytes: 2 * per,
        prefix_cache_bytes: 0,
        ..SchedulerConfig::default()
    };
    let s = Scheduler::start(m.clone(), cfg).unwrap();
    let st = s.stats();
    let sinks: Vec<_> = (0..3).map(|_| sink(10)).collect();
    let mut rxs = Vec::new();
    for (i, (k, r, _)) in sinks.into_iter().enumerate() {
        s.submit(long(vec![5 + i as u32], 60), k).unwrap();
        rxs.push(r);
    }
    wait("two running", || st.running.load(Ordering::SeqCst) == 2);
    assert_eq!(
        st.queued.load(Ordering::SeqCst),
        1,
        "the third waits for memory"
    );
    for r in &rxs {
        assert_eq!(drain(r).0.len(), 60);
    }
}

#[test]
fn concurrent_requests_get_their_solo_tokens() {
    let m = model();
    let cfg = SchedulerConfig {
        prefix_cache_bytes: 0,
        ..SchedulerConfig::default()
    };
    let s = Scheduler::start(m.clone(), cfg).unwrap();
    let prompts: Vec<Vec<u32>> = (0..10)
        .map(|i| (0..3 + 5 * i).map(|j| 3 + (i * 7 + j) % 90).collect())
        .collect();
    let mut rxs = Vec::new();
    for p in &prompts {
        let (k, r, _) = sink(0);
        s.submit(long(p.clone(), 12), k).unwrap();
        rxs.push(r);
    }
    for (p, r) in prompts.iter().zip(&rxs) {
        let want: Vec<u32> =
            stream_generate(m.model.as_ref(), &m.tokenizer, p, &long(p.clone(), 12).opts)
                .unwrap()
                .map(|r| r.unwrap().token)
                .collect();
        assert_eq!(drain(r).0, want);
    }
    let bad = SeqRequest::new(vec![], GenerateOptions::default());
    let (k, _, _) = sink(0);
    assert!(matches!(s.submit(bad, k), Err(SubmitError::Invalid(m)) if m.contains("empty")));
}
