//! Splitting a kernel into tasks so that the calling thread works too.
//!
//! `eval` runs kernels on the caller's thread, outside rayon's pool. A `par_iter` from there
//! hands the whole job to the pool and puts the caller to sleep on a lock until it is done, so
//! every parallel kernel costs a futex sleep and wake-up of the caller besides the workers'. A
//! decode step is hundreds of products of tens of microseconds each, and on a 2-core virtual
//! machine those sleeps cost about as much as the work. [`for_each_task`] keeps the caller
//! busy instead: it claims tasks from a shared counter itself and lets pool workers claim the
//! rest as they arrive; a worker that wakes up after the last task was claimed does nothing.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The counters one call shares with its helpers (owned by an `Arc`: a late helper may still
/// read `next` after the call returned).
struct Claims {
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

/// The task body, lifetime erased; only dereferenced for a claimed task, and the call does not
/// return before every claimed task is done.
#[derive(Clone, Copy)]
struct TaskFn(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is `Sync` and outlives every use (see `for_each_task`).
unsafe impl Send for TaskFn {}

/// Runs `f(0)`, ..., `f(tasks - 1)`, each exactly once, on the calling thread and on up to
/// `rayon::current_num_threads() - 1` pool workers; returns when all are done. A panic in a
/// task is raised again on the caller. On a pool worker (a kernel inside a `par_iter`), it is
/// an ordinary `par_iter`.
pub fn for_each_task(tasks: usize, f: impl Fn(usize) + Sync) {
    let helpers = rayon::current_num_threads().min(tasks).saturating_sub(1);
    if helpers == 0 {
        return (0..tasks).for_each(f);
    }
    if rayon::current_thread_index().is_some() {
        use rayon::prelude::*;
        return (0..tasks).into_par_iter().for_each(&f);
    }
    let claims = Arc::new(Claims {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    });
    let body: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: erases the borrow's lifetime. Helpers call `body` only for a task they claimed
    // (t < tasks), and this function waits below until `done == tasks`, i.e. until every
    // claimed task has returned, so `f` outlives every call through the pointer.
    let body = TaskFn(unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
            body,
        )
    });
    for _ in 0..helpers {
        let claims = claims.clone();
        rayon::spawn(move || {
            let body = body;
            // SAFETY: see above; `body.0` is only dereferenced after a successful claim.
            work(&claims, tasks, |t| unsafe { (*body.0)(t) });
        });
    }
    work(&claims, tasks, &f);
    // The caller ran out of tasks: at most one per helper is still running.
    let mut spins = 0u32;
    while claims.done.load(Ordering::Acquire) < tasks {
        spins += 1;
        if spins < 1 << 14 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if claims.panicked.load(Ordering::Relaxed) {
        resume_unwind(Box::new("a parallel CPU kernel task panicked"));
    }
}

/// `[f(0), ..., f(tasks - 1)]`, computed as [`for_each_task`] runs them.
pub fn map_tasks<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    // One uncontended lock per slot: each is written once, by the task that owns it.
    let slots: Vec<std::sync::Mutex<Option<T>>> = (0..tasks).map(|_| Default::default()).collect();
    for_each_task(tasks, |t| {
        *slots[t].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(t));
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every task ran")
        })
        .collect()
}

/// Claims and runs tasks until none is left; counts each as done even if it panicked.
fn work(claims: &Claims, tasks: usize, f: impl Fn(usize)) {
    loop {
        let t = claims.next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            return;
        }
        if catch_unwind(AssertUnwindSafe(|| f(t))).is_err() {
            claims.panicked.store(true, Ordering::Relaxed);
        }
        claims.done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for tasks in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for_each_task(tasks, |t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{tasks}"
            );
        }
    }

    #[test]
    fn map_keeps_task_order() {
        assert_eq!(
            map_tasks(100, |t| t * t),
            (0..100).map(|t| t * t).collect::<Vec<_>>()
        );
    }

    #[test]
    fn nested_inside_the_pool_still_runs_every_task() {
        use rayon::prelude::*;
        let total = AtomicUsize::new(0);
        (0..4).into_par_iter().for_each(|_| {
            for_each_task(10, |t| {
                total.fetch_add(t, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 45);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_others_finish() {
        let ran = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            for_each_task(64, |t| {
                ran.fetch_add(1, Ordering::Relaxed);
                if t == 5 {
                    panic!("task 5");
                }
            })
        }));
        assert!(r.is_err());
        assert_eq!(ran.load(Ordering::Relaxed), 64);
    }
}
