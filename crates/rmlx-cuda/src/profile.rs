//! `RMLX_CUDA_PROFILE=1`: GPU time per kernel, measured by a pair of events around each launch
//! (outside graph capture), summed by kernel name. `report()` waits for the device and returns
//! the table, largest total first; `rmlx bench` prints it to standard error. The events
//! serialise launches (no programmatic overlap), so totals are a little above a plain run's.

use cudarc::driver::{sys, CudaEvent, CudaStream};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// `RMLX_CUDA_SKIP=name1,name2`: launches of kernels whose name contains one of the listed
/// parts are dropped. A measuring aid only, results are wrong: the speed gained with a family
/// skipped is what it costs inside a replayed step (stalls on its dependencies included), which
/// the events of `RMLX_CUDA_PROFILE` cannot see. Kernels whose outputs index memory (MoE
/// routing, gathers) must not be skipped.
pub(crate) fn skipped(name: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    let parts = SKIP.get_or_init(|| {
        std::env::var("RMLX_CUDA_SKIP")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    });
    !parts.is_empty() && parts.iter().any(|p| name.contains(p.as_str()))
}

/// Whether launches are being timed.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::env::flag(&ON, "RMLX_CUDA_PROFILE", false)
}

struct Pending {
    name: String,
    start: CudaEvent,
    end: CudaEvent,
}

#[derive(Default)]
struct Book {
    pending: Vec<Pending>,
    /// name → (launches, milliseconds)
    totals: HashMap<String, (usize, f64)>,
}

fn book() -> &'static Mutex<Book> {
    static B: OnceLock<Mutex<Book>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(Book::default()))
}

/// Events folded into the totals at a time (each pair holds two driver events until then).
const FOLD_AT: usize = 4096;

fn timing_event(stream: &CudaStream) -> Option<CudaEvent> {
    stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .ok()
}

/// The start event of a launch (None when profiling is off or the event failed).
pub(crate) fn begin(stream: &CudaStream) -> Option<CudaEvent> {
    if enabled() {
        timing_event(stream)
    } else {
        None
    }
}

/// Records the end of the launch that `start` began.
pub(crate) fn end(stream: &CudaStream, name: &str, start: Option<CudaEvent>) {
    let (Some(start), Some(end)) = (start, timing_event(stream)) else {
        return;
    };
    let mut b = book().lock().unwrap_or_else(|e| e.into_inner());
    b.pending.push(Pending {
        name: name.to_string(),
        start,
        end,
    });
    if b.pending.len() >= FOLD_AT {
        fold(&mut b);
    }
}

fn fold(b: &mut Book) {
    for p in std::mem::take(&mut b.pending) {
        let ms = p.start.elapsed_ms(&p.end).unwrap_or(0.0) as f64;
        let t = b.totals.entry(p.name).or_default();
        t.0 += 1;
        t.1 += ms;
    }
}

/// The table of GPU time per kernel so far (None when profiling is off), and resets it.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut b = book().lock().unwrap_or_else(|e| e.into_inner());
    fold(&mut b);
    let mut rows: Vec<(String, (usize, f64))> = b.totals.drain().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    let mut s = format!("GPU time per kernel (RMLX_CUDA_PROFILE), total {total:.3} ms:\n");
    s.push_str("      ms      %   launches    us/launch  kernel\n");
    for (name, (n, ms)) in rows {
        s.push_str(&format!(
            "{ms:8.3} {:6.2} {n:10} {:12.2}  {name}\n",
            100.0 * ms / total.max(1e-12),
            1000.0 * ms / n.max(1) as f64
        ));
    }
    Some(s)
}
