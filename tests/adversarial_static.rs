//! Adversarial review of `static_trampoline` (the sixth review): its call path
//! through `Registry::restore_with` on the pools' private registry, which
//! reads that registry's hot-handle entry inline. Public API only.
//!
//! Each test names the promise it attacks. `HOT` calls of one slot in a
//! row on one thread make its entry parked and that thread's hot handle
//! (`STREAK` is 1024 outside the crate's own unit tests, 4 under Miri).
//! Every pool is private to its test: the harness runs tests in parallel.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use handle_registry::panic::message;
use handle_registry::static_callbacks;
use handle_registry::static_trampoline::{Pool, SlotGuard};

mod common;
use common::{watchdog, Counted, OnDrop};

/// Calls of one slot in a row that make it this thread's hot handle.
const HOT: usize = if cfg!(miri) { 12 } else { 1100 };

type Cb = extern "C" fn(i32) -> i32;

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Makes `f` this thread's hot handle (when `f` is bound), checking each
/// answer.
fn warm(f: Cb, expect: i32) {
    for _ in 0..HOT {
        assert_eq!(f(1), expect);
    }
}

fn quiet_panics() {
    // The panics below are expected; keep the output readable.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
            if !msg.starts_with("adv:") {
                prev(info);
            }
        }));
    });
}

/// A slot's guard, kept where its own closure can take it and so release
/// itself inside one of its calls.
type Own<const N: usize> = Arc<Mutex<Option<SlotGuard<Cb, N>>>>;

/// Binds `call` to a slot of `pool`, handing it the cell its own guard is
/// put into once bound; returns the trampoline and that cell.
fn bind_self_releasing<const N: usize>(
    pool: &'static Pool<Cb, N>,
    mut call: impl FnMut(i32, &Own<N>) -> i32 + Send + 'static,
) -> (Cb, Own<N>) {
    let own: Own<N> = Arc::new(Mutex::new(None));
    let inside = Arc::clone(&own);
    let g = pool.acquire(Box::new(move |n| call(n, &inside))).unwrap();
    let f = g.fn_ptr();
    *own.lock().unwrap() = Some(g);
    (f, own)
}

// ---------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------

static_callbacks! {
    static PANICKY: [extern "C" fn(n: i32) -> i32; 2] else -1;
    static PANICKY2: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

/// Promise: a panic in a call (here on the hot path) never unwinds into C;
/// every later call of that entry, on any thread, hot or not, takes the
/// fallback; `try_finish` hands over the payload; the closure is dropped
/// exactly once.
#[test]
fn panic_on_the_hot_path_is_caught_then_fallback_then_handed_over() {
    quiet_panics();
    let drops = counter();
    let c = Counted(drops.clone());
    let g = PANICKY
        .acquire(Box::new(move |n| {
            let _ = &c;
            if n == 7 {
                panic!("adv: seven");
            }
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    warm(f, 2);
    assert_eq!(f(7), -1);
    warm(f, -1);
    thread::spawn(move || {
        for _ in 0..HOT {
            assert_eq!(f(1), -1)
        }
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(SeqCst), 0);
    let payload = g.try_finish().unwrap_err();
    assert_eq!(message(&*payload), Some("adv: seven"));
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(f(1), -1);
}

/// Promise: a panic on another thread that had made the entry its hot
/// handle is resumed by the guard's drop on the releasing thread.
#[test]
fn panic_on_another_threads_hot_path_is_resumed_by_drop() {
    quiet_panics();
    let drops = counter();
    let c = Counted(drops.clone());
    let g = PANICKY2
        .acquire(Box::new(move |n| {
            let _ = &c;
            if n == 9 {
                panic!("adv: nine");
            }
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    thread::spawn(move || {
        warm(f, 2);
        assert_eq!(f(9), -1);
        warm(f, -1);
    })
    .join()
    .unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| drop(g))).unwrap_err();
    assert_eq!(message(&*err), Some("adv: nine"));
    assert_eq!(drops.load(SeqCst), 1);
}

// ---------------------------------------------------------------------
// Self-release
// ---------------------------------------------------------------------

static_callbacks! {
    static SELF_REL: [extern "C" fn(n: i32) -> i32; 4] else -1;
    static SELF_REL2: [extern "C" fn(n: i32) -> i32; 4] else -1;
    static SELF_REL3: [extern "C" fn(n: i32) -> i32; 4] else -1;
}

/// Promise: a closure that drops its own guard inside a call (on the hot
/// path) finishes that call; the slot is freed at once; the closure is
/// dropped once, when the call returns; later calls take the fallback.
#[test]
fn self_release_inside_a_hot_call() {
    for hot in [false, true] {
        let drops = counter();
        let c = Counted(drops.clone());
        let d2 = drops.clone();
        let (f, me) = bind_self_releasing(&SELF_REL, move |n, me| {
            let _ = &c;
            if n == 0 {
                let own = me.lock().unwrap().take().expect("own guard");
                let f = own.fn_ptr();
                drop(own);
                // Still inside: the closure is alive, its slot free.
                assert_eq!(d2.load(SeqCst), 0);
                assert_eq!(f(1), -1, "own trampoline after self-release");
                return 100;
            }
            n + 1
        });
        if hot {
            warm(f, 2);
        } else {
            assert_eq!(f(1), 2);
        }
        assert_eq!(f(0), 100);
        assert_eq!(drops.load(SeqCst), 1, "hot={hot}");
        assert_eq!(f(1), -1);
        warm(f, -1);
        assert!(me.lock().unwrap().is_none());
    }
}

/// Promise (module docs, "Panics", the self-release exception): a panic
/// of a call that released its own guard first has nobody to reach, so it
/// is caught and dropped; the call returns the fallback, nothing aborts
/// or leaks.
#[test]
fn self_release_then_panic_in_the_same_call() {
    quiet_panics();
    let drops = counter();
    let c = Counted(drops.clone());
    let (f, _me) = bind_self_releasing(&SELF_REL2, move |n, me| {
        let _ = &c;
        if n == 0 {
            let own = me.lock().unwrap().take();
            drop(own); // returns normally: nothing to resume yet
            panic!("adv: after self-release");
        }
        n + 1
    });
    warm(f, 2);
    assert_eq!(f(0), -1);
    assert_eq!(drops.load(SeqCst), 1);
}

/// Promise: another thread waiting to call the same closure while it
/// releases itself must not hang, and must not run the closure after the
/// release (it gets the fallback).
#[test]
fn self_release_while_another_thread_waits_for_the_closure() {
    let _w = watchdog("self_release_while_another_thread_waits_for_the_closure");
    for round in 0..common::rounds(4, 1) {
        let drops = counter();
        let c = Counted(drops.clone());
        let released = Arc::new(AtomicBool::new(false));
        let r2 = released.clone();
        let ran_after = Arc::new(AtomicUsize::new(0));
        let ra = ran_after.clone();
        let (inside_tx, inside_rx) = mpsc::channel::<()>();
        let inside_tx = Mutex::new(inside_tx);
        let (f, _me) = bind_self_releasing(&SELF_REL3, move |n, me| {
            let _ = &c;
            if r2.load(SeqCst) {
                ra.fetch_add(1, SeqCst);
            }
            if n == 0 {
                inside_tx.lock().unwrap().send(()).unwrap();
                thread::sleep(Duration::from_millis(100));
                let own = me.lock().unwrap().take();
                drop(own);
                r2.store(true, SeqCst);
                thread::sleep(Duration::from_millis(30));
                return 100;
            }
            n + 1
        });
        let x = thread::spawn(move || {
            warm(f, 2);
            f(0)
        });
        inside_rx.recv().unwrap();
        let y = thread::spawn(move || f(1));
        assert_eq!(x.join().unwrap(), 100);
        let got = y.join().unwrap();
        assert_eq!(got, -1, "round {round}: waiter ran the released closure");
        assert_eq!(ran_after.load(SeqCst), 0);
        assert_eq!(drops.load(SeqCst), 1);
    }
}

static_callbacks! {
    static OUTER: [extern "C" fn(n: i32) -> i32; 2] else -1;
    static INNER: [extern "C" fn(n: i32) -> i32; 2] else -2;
}

/// Promise: a closure of another pool, called from inside a call of A,
/// may release A's guard: A's call finishes, then A is dropped once.
#[test]
fn another_pools_closure_releases_the_caller_inside_its_call() {
    for hot in [false, true] {
        let drops = counter();
        let c = Counted(drops.clone());
        let a_guard: Arc<Mutex<Option<SlotGuard<Cb, 2>>>> = Arc::new(Mutex::new(None));
        let ag = a_guard.clone();
        let d2 = drops.clone();
        let b = INNER
            .acquire(Box::new(move |n| {
                if n == 0 {
                    drop(ag.lock().unwrap().take());
                    assert_eq!(d2.load(SeqCst), 0, "A dropped under its own call");
                    return 50;
                }
                n
            }))
            .unwrap();
        let bf = b.fn_ptr();
        let a = OUTER
            .acquire(Box::new(move |n| {
                let _ = &c;
                if n == 0 {
                    return bf(0) + 1;
                }
                n + 1
            }))
            .unwrap();
        let af = a.fn_ptr();
        *a_guard.lock().unwrap() = Some(a);
        if hot {
            warm(af, 2);
        }
        assert_eq!(af(0), 51);
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(af(1), -1);
        b.finish();
    }
}

// ---------------------------------------------------------------------
// Re-entrancy
// ---------------------------------------------------------------------

static_callbacks! {
    static REENTER: [extern "C" fn(n: i32) -> i32; 3] else -1;
    static OTHER: [extern "C" fn(n: i32) -> i32; 1] else -7;
}

/// Promise: re-entering one's own trampoline gets the fallback (hot or
/// not, many times: the hot handle's enter must refuse a nested enter);
/// another pool's trampoline and another slot of the same pool, acquired
/// inside the call, run; the outer closure keeps working afterwards.
#[test]
fn nested_calls_own_other_pool_and_a_slot_acquired_inside() {
    let other = OTHER.acquire(Box::new(|n| n * 10)).unwrap();
    let of = other.fn_ptr();
    let own: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
    let own2 = own.clone();
    let inner_drops = counter();
    let id2 = inner_drops.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let g = REENTER
        .acquire(Box::new(move |n| {
            c2.fetch_add(1, SeqCst);
            if n == 0 {
                let me: Cb = REENTER.fn_ptr(own2.load(SeqCst)).unwrap();
                for _ in 0..HOT {
                    assert_eq!(me(1), -1, "re-entered own closure");
                }
                assert_eq!(of(3), 30);
                let k = Counted(id2.clone());
                let inner = REENTER
                    .acquire(Box::new(move |m| {
                        let _ = &k;
                        m + 1000
                    }))
                    .unwrap();
                let f = inner.fn_ptr();
                for _ in 0..HOT {
                    assert_eq!(f(1), 1001);
                }
                inner.finish();
                assert_eq!(f(1), -1);
                return 5;
            }
            n + 1
        }))
        .unwrap();
    own.store(g.slot(), SeqCst);
    let f = g.fn_ptr();
    for _ in 0..3 {
        warm(f, 2);
        assert_eq!(f(0), 5);
        warm(f, 2);
    }
    assert_eq!(inner_drops.load(SeqCst), 3);
    assert_eq!(count.load(SeqCst), 3 * (2 * HOT + 1));
    g.finish();
    other.finish();
}

// ---------------------------------------------------------------------
// Release while another thread is inside
// ---------------------------------------------------------------------

static_callbacks! {
    static WAITS: [extern "C" fn(n: i32) -> i32; 2] else -1;
    static TURNS: [extern "C" fn(n: i32) -> i32; 1] else -1;
}

/// Promise: dropping the guard while another thread is inside a call
/// (entered through its hot handle) waits for the call to return; the
/// caller then gets the fallback; the closure is dropped once, after the
/// call.
#[test]
fn release_waits_for_a_hot_call_on_another_thread() {
    let _w = watchdog("release_waits_for_a_hot_call_on_another_thread");
    for _ in 0..common::rounds(4, 1) {
        let drops = counter();
        let c = Counted(drops.clone());
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        let g = WAITS
            .acquire(Box::new(move |n| {
                let _ = &c;
                if n == 0 {
                    tx.lock().unwrap().send(()).unwrap();
                    thread::sleep(Duration::from_millis(100));
                    d2.store(true, SeqCst);
                }
                n + 1
            }))
            .unwrap();
        let f = g.fn_ptr();
        let (rel_tx, rel_rx) = mpsc::channel::<()>();
        let t = thread::spawn(move || {
            warm(f, 2);
            assert_eq!(f(0), 1);
            // Calls made before the release wins still run (serialised):
            // only those after it returned must take the fallback.
            rel_rx.recv().unwrap();
            warm(f, -1);
        });
        rx.recv().unwrap();
        drop(g);
        assert!(done.load(SeqCst), "release returned during the call");
        assert_eq!(drops.load(SeqCst), 1);
        rel_tx.send(()).unwrap();
        t.join().unwrap();
    }
}

/// Promise: two threads taking turns making a slot their hot handle
/// (each burst steals the park from the other) lose no call and never
/// deadlock; a release in the middle waits and stops both.
#[test]
fn threads_alternating_on_one_hot_slot() {
    let _w = watchdog("threads_alternating_on_one_hot_slot");
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let g = TURNS
        .acquire(Box::new(move |n| {
            c2.fetch_add(1, SeqCst);
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    let turn = Arc::new(AtomicUsize::new(0));
    let rounds = common::rounds(6, 2);
    let mut ts = Vec::new();
    for me in 0..2 {
        let turn = turn.clone();
        ts.push(thread::spawn(move || {
            let mut ok = 0;
            for r in 0..rounds {
                while turn.load(SeqCst) != 2 * r + me {
                    thread::yield_now();
                }
                for _ in 0..HOT {
                    if f(1) == 2 {
                        ok += 1;
                    }
                }
                turn.fetch_add(1, SeqCst);
            }
            ok
        }));
    }
    let ok: usize = ts.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 2 * rounds * HOT);
    assert_eq!(calls.load(SeqCst), ok);
    g.finish();
}

// ---------------------------------------------------------------------
// Thread-local teardown
// ---------------------------------------------------------------------

static_callbacks! {
    static LATE_POOL: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

thread_local! {
    static LATE_CALL: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// Promise: a release waits for a call made from a thread-local
/// destructor, whether it runs before or after the thread's lease, on a
/// thread that had made the entry its hot handle.
#[test]
fn release_waits_for_a_call_from_a_thread_local_destructor() {
    let _w = watchdog("release_waits_for_a_call_from_a_thread_local_destructor");
    for before_lease in [true, false] {
        let drops = counter();
        let c = Counted(drops.clone());
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        let g = LATE_POOL
            .acquire(Box::new(move |n| {
                let _ = &c;
                if n == 0 {
                    tx.lock().unwrap().send(()).unwrap();
                    thread::sleep(Duration::from_millis(150));
                    d2.store(true, SeqCst);
                }
                n + 1
            }))
            .unwrap();
        let f = g.fn_ptr();
        let (ret_tx, ret_rx) = mpsc::channel::<i32>();
        let t = thread::spawn(move || {
            let late = move || {
                warm(f, 2);
                let _ = ret_tx.send(f(0));
            };
            if before_lease {
                // Registered first: destroyed after the lease.
                LATE_CALL.with(|l| l.borrow_mut().0 = Some(Box::new(late)));
                warm(f, 2);
            } else {
                warm(f, 2);
                LATE_CALL.with(|l| l.borrow_mut().0 = Some(Box::new(late)));
            }
        });
        rx.recv().unwrap();
        drop(g);
        assert!(
            done.load(SeqCst),
            "before_lease={before_lease}: release returned during the late call"
        );
        assert_eq!(drops.load(SeqCst), 1);
        t.join().unwrap();
        assert_eq!(ret_rx.recv().unwrap(), 1);
    }
}

// ---------------------------------------------------------------------
// mem::forget
// ---------------------------------------------------------------------

static_callbacks! {
    static FORGOTTEN: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

/// Promise (module docs, "`mem::forget` of a `SlotGuard`"): the slot
/// stays bound for good and the closure keeps running; the closure is
/// leaked, never dropped.
#[test]
fn forgotten_guard_keeps_its_slot_bound() {
    let drops = counter();
    let c = Counted(drops.clone());
    let g = FORGOTTEN
        .acquire(Box::new(move |n| {
            let _ = &c;
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    std::mem::forget(g);
    warm(f, 2);
    assert_eq!(FORGOTTEN.in_use(), 1);
    let other = FORGOTTEN.acquire(Box::new(|n| n)).unwrap();
    assert!(FORGOTTEN.acquire(Box::new(|n| n)).is_err());
    other.finish();
    assert_eq!(f(1), 2);
    assert_eq!(drops.load(SeqCst), 0);
}

// ---------------------------------------------------------------------
// Exhaustion and reuse
// ---------------------------------------------------------------------

static_callbacks! {
    static SMALL: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

/// Promise: acquiring from a full pool fails and drops the callback once
/// (and `scope` does not run its body); a released slot gives the
/// fallback until reacquired, then the new closure (never the old one).
#[test]
fn exhaustion_and_reuse_never_run_an_old_closure() {
    let drops = counter();
    let mk = |k: i32| -> Box<dyn FnMut(i32) -> i32 + Send> {
        let c = Counted(drops.clone());
        Box::new(move |n| {
            let _ = &c;
            k * 100 + n
        })
    };
    let a = SMALL.acquire(mk(1)).unwrap();
    let b = SMALL.acquire(mk(2)).unwrap();
    assert!(SMALL.acquire(mk(3)).is_err());
    assert_eq!(drops.load(SeqCst), 1);
    let mut ran = false;
    assert!(SMALL.scope(mk(4), |_| ran = true).is_err());
    assert!(!ran);
    assert_eq!(drops.load(SeqCst), 2);
    let fa = a.fn_ptr();
    warm(fa, 101);
    a.finish();
    assert_eq!(drops.load(SeqCst), 3);
    warm(fa, -1);
    let c = SMALL.acquire(mk(5)).unwrap();
    let fc = c.fn_ptr();
    assert_eq!(fc(1), 501);
    if fc as usize == fa as usize {
        assert_eq!(fa(1), 501); // the documented limit
    }
    b.finish();
    c.finish();
    assert_eq!(drops.load(SeqCst), 5);
}

static_callbacks! {
    static CHURN: [extern "C" fn(n: i32) -> i32; 1] else -1;
}

/// Promise: after a guard's release returns, its closure never runs
/// again, even for a thread that kept calling the slot and made each
/// entry its hot handle while the slot was released and reacquired (the
/// same registry index, new generations); every closure dropped once.
#[test]
fn hot_caller_across_release_and_reacquire_never_runs_an_old_closure() {
    let _w = watchdog("hot_caller_across_release_and_reacquire_never_runs_an_old_closure");
    let f = CHURN.fn_ptr(0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let drops = counter();
    let mut callers = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        callers.push(thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(SeqCst) {
                let _ = f(1);
                n += 1;
            }
            n
        }));
    }
    let generations = common::rounds(60, 3);
    for k in 0..generations {
        let released = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (r2, c2, v2) = (released.clone(), calls.clone(), violations.clone());
        let cd = Counted(drops.clone());
        // The previous release freed the slot; a caller never holds it.
        let g = CHURN
            .acquire(Box::new(move |n| {
                let _ = &cd;
                if r2.load(SeqCst) {
                    v2.fetch_add(1, SeqCst);
                }
                c2.fetch_add(1, SeqCst);
                n + 1
            }))
            .expect("CHURN exhausted with no guard alive");
        // Let the callers park it (a few thousand calls), sometimes not.
        let want = if k % 3 == 0 { 1 } else { 3 * HOT };
        let mut spins = 0;
        while calls.load(SeqCst) < want && spins < 2_000_000 {
            spins += 1;
            std::hint::spin_loop();
        }
        drop(g);
        released.store(true, SeqCst);
    }
    // Give late callers a moment to hit released entries.
    thread::sleep(Duration::from_millis(20));
    stop.store(true, SeqCst);
    for c in callers {
        c.join().unwrap();
    }
    assert_eq!(violations.load(SeqCst), 0, "a released closure ran");
    assert_eq!(drops.load(SeqCst), generations);
}

// ---------------------------------------------------------------------
// Global registry and re-entering drops
// ---------------------------------------------------------------------

static_callbacks! {
    static GLOBAL_USER: [extern "C" fn(n: i32) -> i32; 4] else -1;
}

/// Runs its closure when dropped; `Send` (for the global registry).
struct SendOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Promise: a closure may take and unref values of the global registry
/// inside its call, including a handle this thread has made its global
/// hot handle, and one whose `Drop` releases the closure's own guard and
/// re-enters the pool (own trampoline: fallback; a new slot: runs).
#[test]
fn closure_uses_the_global_registry_and_drops_reenter_the_pool() {
    let drops = counter();
    let c = Counted(drops.clone());
    // A global handle this thread keeps restoring: parked, hot.
    let hot_global = handle_registry::save(5u64);
    for _ in 0..HOT {
        *handle_registry::restore::<u64>(hot_global).unwrap() += 1;
    }
    let hg = hot_global as usize;
    let inner_ran = Arc::new(AtomicI32::new(0));
    let ir = inner_ran.clone();
    let (f, _me) = bind_self_releasing(&GLOBAL_USER, move |n, me| {
        let _ = &c;
        if n == 0 {
            let v: u64 = handle_registry::take(std::ptr::without_provenance_mut(hg)).unwrap();
            assert_eq!(v, 5 + HOT as u64);
            // A value whose Drop releases our own guard and re-enters.
            let (me3, ir2) = (me.clone(), ir.clone());
            let p = handle_registry::save(SendOnDrop(Some(Box::new(move || {
                let own = me3.lock().unwrap().take().expect("own guard");
                let f = own.fn_ptr();
                drop(own);
                assert_eq!(f(1), -1);
                let k = GLOBAL_USER.acquire(Box::new(|m| m + 7)).unwrap();
                ir2.store(k.fn_ptr()(1), SeqCst);
                k.finish();
            }))));
            handle_registry::unref(p).unwrap();
            return 42;
        }
        n + 1
    });
    warm(f, 2);
    assert_eq!(f(0), 42);
    assert_eq!(inner_ran.load(SeqCst), 8);
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(f(1), -1);
    assert_eq!(
        handle_registry::restore::<u64>(hot_global).err(),
        Some(handle_registry::Error::Stale)
    );
}

static_callbacks! {
    static DROPS_IN: [extern "C" fn(n: i32) -> i32; 3] else -1;
    static DROPS_IN2: [extern "C" fn(n: i32) -> i32; 3] else -1;
}

/// Promise: a closure's captured value whose `Drop` re-enters the pool
/// (acquires, calls and releases slots, calls the released pointer) works
/// both on an ordinary release and on a self-release on the hot path,
/// where that `Drop` runs inside the trampoline's call. A panic from the
/// captured value's `Drop` reaches `try_finish` on an ordinary release.
#[test]
fn captured_drop_reenters_the_pool() {
    quiet_panics();
    let log = Arc::new(Mutex::new(Vec::<i32>::new()));
    let mk_reentering = |log: Arc<Mutex<Vec<i32>>>, own_slot: Arc<AtomicUsize>| {
        SendOnDrop(Some(Box::new(move || {
            let old = DROPS_IN.fn_ptr(own_slot.load(SeqCst)).unwrap();
            let g = DROPS_IN.acquire(Box::new(|m| m + 1000)).unwrap();
            let nf = g.fn_ptr();
            for _ in 0..HOT {
                assert_eq!(nf(1), 1001);
            }
            let via_old = old(1);
            g.finish();
            log.lock().unwrap().push(via_old);
        })))
    };
    // Ordinary release.
    let slot = Arc::new(AtomicUsize::new(0));
    let d = mk_reentering(log.clone(), slot.clone());
    let g = DROPS_IN
        .acquire(Box::new(move |n| {
            let _ = &d;
            n + 1
        }))
        .unwrap();
    slot.store(g.slot(), SeqCst);
    warm(g.fn_ptr(), 2);
    g.finish();
    // Self-release inside a hot call.
    let slot = Arc::new(AtomicUsize::new(0));
    let d = mk_reentering(log.clone(), slot.clone());
    let (f, me) = bind_self_releasing(&DROPS_IN, move |n, me| {
        let _ = &d;
        if n == 0 {
            drop(me.lock().unwrap().take());
            return 9;
        }
        n + 1
    });
    slot.store(me.lock().unwrap().as_ref().unwrap().slot(), SeqCst);
    warm(f, 2);
    assert_eq!(f(0), 9);
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(DROPS_IN.in_use(), 0);
    // A panicking captured Drop on an ordinary release.
    let p = SendOnDrop(Some(Box::new(|| panic!("adv: captured drop"))));
    let g = DROPS_IN
        .acquire(Box::new(move |n| {
            let _ = &p;
            n
        }))
        .unwrap();
    warm(g.fn_ptr(), 1);
    let e = g.try_finish().unwrap_err();
    assert_eq!(message(&*e), Some("adv: captured drop"));
}

/// Promise (module docs, "Panics", the self-release exception): on a
/// self-release the closure's `Drop` runs inside the trampoline when the
/// call ends; its panic neither unwinds into C nor aborts, and is caught
/// and dropped there.
#[test]
fn self_release_with_a_panicking_closure_drop() {
    quiet_panics();
    let p = SendOnDrop(Some(Box::new(|| panic!("adv: drop after self-release"))));
    let seen: Arc<Mutex<Option<Box<dyn Any + Send>>>> = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let (f, _me) = bind_self_releasing(&DROPS_IN2, move |n, me| {
        let _ = &p;
        if n == 0 {
            let own = me.lock().unwrap().take().unwrap();
            if let Err(e) = own.try_finish() {
                *s2.lock().unwrap() = Some(e);
            }
            return 3;
        }
        n + 1
    });
    warm(f, 2);
    assert_eq!(f(0), 3);
    // The panic was not handed to `try_finish` (it ran before the drop).
    assert!(seen.lock().unwrap().is_none());
}

// ---------------------------------------------------------------------
// scope
// ---------------------------------------------------------------------

static_callbacks! {
    static SCOPED: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

/// Promise: when `scope`'s body unwinds while another thread is inside a
/// hot call of the closure (which borrows a local), the unwind waits for
/// that call; the local is intact afterwards; the body's panic wins.
#[test]
fn scope_unwinding_waits_for_a_hot_call_on_another_thread() {
    quiet_panics();
    let _w = watchdog("scope_unwinding_waits_for_a_hot_call_on_another_thread");
    let mut local = [0u32; 4];
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<()>();
    let tx = Mutex::new(tx);
    // The caller is joined after the unwind (a forgotten handle would leak).
    let caller = Mutex::new(None);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _ = SCOPED.scope(
            Box::new(|n| {
                local[0] += 1;
                if n == 0 {
                    tx.lock().unwrap().send(()).unwrap();
                    thread::sleep(Duration::from_millis(100));
                    local[1] = 7;
                    done.store(true, SeqCst);
                }
                n + 1
            }),
            |f| {
                let t = thread::spawn(move || {
                    warm(f, 2);
                    f(0)
                });
                rx.recv().unwrap();
                *caller.lock().unwrap() = Some(t); // not joined: the body unwinds now
                panic!("adv: body");
            },
        );
    }));
    assert_eq!(message(&*r.unwrap_err()), Some("adv: body"));
    assert!(done.load(SeqCst), "scope ended during a call");
    let caller = caller
        .lock()
        .unwrap()
        .take()
        .expect("the caller was spawned");
    assert_eq!(caller.join().unwrap(), 1);
    assert_eq!(local[1], 7);
    assert_eq!(local[0] as usize, HOT + 1);
}

// ---------------------------------------------------------------------
// Other registries' parked borrows beside the pool's
// ---------------------------------------------------------------------

static_callbacks! {
    static BESIDE: [extern "C" fn(n: i32) -> i32; 2] else -1;
    static BESIDE2: [extern "C" fn(n: i32) -> i32; 2] else -1;
    static NASTY: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

/// Promise: the pool's entries share this thread's private hot-handle
/// entry with every other registry. A user registry's handle restored
/// inside each call (so the two alternate as the hot handle), and a
/// parked guard of it held across calls (so the pool's enter is nested,
/// not "alone"), change no answer; a self-release made while that guard
/// is held drops the closure exactly once.
#[test]
fn user_registry_parked_borrows_beside_the_pools() {
    // A static, not a leaked box: Miri reports no leak for it.
    static USER: std::sync::OnceLock<handle_registry::Registry> = std::sync::OnceLock::new();
    let r: &'static handle_registry::Registry = USER.get_or_init(handle_registry::Registry::new);
    let h = r.save(0u64) as usize;
    let hp = || std::ptr::without_provenance_mut(h);
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let g = BESIDE
        .acquire(Box::new(move |n| {
            c2.fetch_add(1, SeqCst);
            // Busy when the caller holds it; else restores it (parks it).
            if let Ok(mut v) = r.restore::<u64>(std::ptr::without_provenance_mut(h)) {
                *v += 1;
            }
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    for _ in 0..3 {
        warm(f, 2);
    }
    assert_eq!(*r.restore::<u64>(hp()).unwrap(), 3 * HOT as u64);
    for _ in 0..HOT {
        drop(r.restore::<u64>(hp()).unwrap());
    }
    {
        let held = r.restore::<u64>(hp()).unwrap();
        warm(f, 2);
        warm(f, 2);
        assert_eq!(*held, 3 * HOT as u64);
    }
    assert_eq!(count.load(SeqCst), 5 * HOT);
    g.finish();

    // Self-release while a parked guard of another registry is held.
    let drops = counter();
    let c = Counted(drops.clone());
    let (f, _me) = bind_self_releasing(&BESIDE2, move |n, me| {
        let _ = &c;
        if n == 0 {
            drop(me.lock().unwrap().take());
            return 0;
        }
        n + 1
    });
    {
        let _held = r.restore::<u64>(hp()).unwrap();
        warm(f, 2);
        warm(f, 2);
        assert_eq!(f(0), 0);
        assert_eq!(drops.load(SeqCst), 1);
        warm(f, -1);
    }
    r.unref(hp()).unwrap();
}

static_callbacks! {
    static SHARED_ID: [extern "C" fn(n: i32) -> i32; 1] else -1;
}

thread_local! {
    static LATE_LOOP: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// Promise: calls of one closure are serialised, even between a thread in
/// thread-local teardown (its lease gone, its park still in the slot) and
/// a new thread that may have been handed the same owner id and inherits
/// that park; no call is lost or doubled; a release afterwards waits.
#[test]
fn calls_stay_serialised_between_a_dying_thread_and_its_ids_heir() {
    let _w = watchdog("calls_stay_serialised_between_a_dying_thread_and_its_ids_heir");
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (i2, o2, c2) = (inside.clone(), overlaps.clone(), calls.clone());
    let g = SHARED_ID
        .acquire(Box::new(move |n| {
            if i2.swap(true, SeqCst) {
                o2.fetch_add(1, SeqCst);
            }
            c2.fetch_add(1, SeqCst);
            std::hint::spin_loop();
            i2.store(false, SeqCst);
            n + 1
        }))
        .unwrap();
    let f = g.fn_ptr();
    let per = common::rounds(20_000, 20);
    let mut ok_total = 0;
    for _ in 0..common::rounds(3, 1) {
        let (late_tx, late_rx) = mpsc::channel::<()>();
        let (ok_tx, ok_rx) = mpsc::channel::<usize>();
        let a = thread::spawn(move || {
            // Registered first: runs after the lease gave the id back.
            LATE_LOOP.with(|l| {
                l.borrow_mut().0 = Some(Box::new(move || {
                    let _ = late_tx.send(());
                    let ok = (0..per).filter(|_| f(1) == 2).count();
                    let _ = ok_tx.send(ok);
                }))
            });
            warm(f, 2); // parks the entry with this thread's id
        });
        late_rx.recv().unwrap();
        // Likely handed A's id (last in, first out): inherits its park.
        let b = thread::spawn(move || (0..per).filter(|_| f(1) == 2).count());
        ok_total += b.join().unwrap();
        a.join().unwrap();
        ok_total += ok_rx.recv().unwrap() + HOT;
    }
    g.finish();
    assert_eq!(
        overlaps.load(SeqCst),
        0,
        "two calls of one closure overlapped"
    );
    assert_eq!(calls.load(SeqCst), ok_total);
}

/// Promise: no abort, whatever the payloads: a closure releases itself,
/// then panics with a payload whose `Drop` panics too (dropped inside the
/// trampoline, with the entry).
#[test]
fn self_release_then_a_panic_whose_payload_panics_when_dropped() {
    quiet_panics();
    struct Nasty;
    impl Drop for Nasty {
        fn drop(&mut self) {
            panic!("adv: payload drop");
        }
    }
    let (f, _me) = bind_self_releasing(&NASTY, |n, me| {
        if n == 0 {
            drop(me.lock().unwrap().take());
            std::panic::panic_any(Nasty);
        }
        n + 1
    });
    warm(f, 2);
    assert_eq!(f(0), -1);
}
