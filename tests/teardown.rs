//! The "never deadlocks, never aborts" promises in the corners where they
//! broke before: thread-local teardown in an order the caller controls,
//! `mem::forget` of guards, unwinding, and panics inside `Drop`.
//!
//! Pure Rust: these run under Miri too (with many seeds in CI).

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use handle_registry::{Error, Registry};

mod common;
use common::{ptr, NestedPanic, OnDrop};

thread_local! {
    /// Guards kept alive until this thread-local is destroyed.
    static HOLDER: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    /// Runs its closure when destroyed, which is *before* `HOLDER` when it
    /// is touched after it (destructors run in reverse order of
    /// registration).
    static LATE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// Runs `setup` on a new thread, then lets the thread exit: `late` runs in
/// a thread-local destructor while the guards `setup` put in `HOLDER` are
/// still alive. Returns what `late` sent, failing the test instead of
/// hanging if the thread never finishes.
fn at_teardown<R: Send + 'static>(
    setup: impl FnOnce() + Send + 'static,
    late: impl FnOnce() -> R + 'static + Send,
) -> R {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        HOLDER.with(|_| ()); // registered first: destroyed last
        LATE.with(|l| {
            l.borrow_mut().0 = Some(Box::new(move || {
                let _ = tx.send(late());
            }))
        });
        setup();
    });
    let got = rx
        .recv_timeout(Duration::from_secs(if cfg!(miri) { 600 } else { 20 }))
        .expect("a thread-local destructor deadlocked (or never ran)");
    thread.join().unwrap();
    got
}

fn hold(guard: impl Any) {
    HOLDER.with(|h| h.borrow_mut().push(Box::new(guard)));
}

#[test]
fn exclusive_requests_behind_our_own_shared_borrow_are_busy_at_teardown() {
    let p = handle_registry::save(5u32) as usize;
    let got = at_teardown(
        move || hold(handle_registry::restore_ref::<u32>(ptr(p)).unwrap()),
        move || {
            let r = Registry::global();
            (
                r.restore::<u32>(ptr(p)).err(),
                r.take::<u32>(ptr(p)).err(),
                r.lend::<u32, _>(ptr(p), || ()).err(),
                // Shared with our own shared borrow is fine.
                r.restore_ref::<u32>(ptr(p)).map(|g| *g).ok(),
            )
        },
    );
    assert_eq!(
        got,
        (
            Some(Error::Busy),
            Some(Error::Busy),
            Some(Error::Busy),
            Some(5)
        )
    );
    assert_eq!(
        handle_registry::take::<u32>(ptr(p)),
        Ok(5),
        "no borrow leaked"
    );
}

#[test]
fn many_shared_borrows_spilled_and_lost_at_teardown_answer_busy() {
    let handles: Vec<usize> = (0..12u32)
        .map(|i| handle_registry::save(i) as usize)
        .collect();
    let last = *handles.last().unwrap();
    let held = handles.clone();
    let got = at_teardown(
        move || {
            for &p in &held {
                hold(handle_registry::restore_ref::<u32>(ptr(p)).unwrap());
            }
        },
        move || handle_registry::restore::<u32>(ptr(last)).err(),
    );
    assert_eq!(got, Some(Error::Busy));
    for p in handles {
        handle_registry::unref(ptr(p)).unwrap();
    }
}

#[test]
fn requests_behind_our_own_exclusive_borrow_are_busy_at_teardown() {
    let p = handle_registry::save(String::from("held")) as usize;
    let got = at_teardown(
        move || hold(handle_registry::restore::<String>(ptr(p)).unwrap()),
        move || {
            let r = Registry::global();
            (
                r.restore::<String>(ptr(p)).err(),
                r.restore_ref::<String>(ptr(p)).err(),
                r.take::<String>(ptr(p)).err(),
                r.lend::<String, _>(ptr(p), || ()).err(),
            )
        },
    );
    assert_eq!(
        got,
        (
            Some(Error::Busy),
            Some(Error::Busy),
            Some(Error::Busy),
            Some(Error::Busy)
        )
    );
    assert_eq!(handle_registry::take::<String>(ptr(p)).unwrap(), "held");
}

/// Counts drops.
struct Tally(Arc<AtomicUsize>);

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_operation_works_from_a_late_destructor() {
    let drops = Arc::new(AtomicUsize::new(0));
    let p = handle_registry::save(Tally(drops.clone())) as usize;
    let got = at_teardown(
        move || hold(handle_registry::restore_ref::<Tally>(ptr(p)).unwrap()),
        move || {
            let r = Registry::global();
            // The per-thread free-slot cache may be gone: saves still work.
            let q = r.save(1u8);
            let saved = r.take::<u8>(q);
            // A scope in a destructor.
            let mut n = 0;
            let scoped = r.scope(&mut n, |h| r.with(h, |n: &mut i32| *n += 1));
            // Unref of the value we still read: dropped when the reader
            // (in `HOLDER`, destroyed after us) lets go.
            let unreffed = r.unref(ptr(p));
            (saved, scoped.is_ok() && n == 1, unreffed)
        },
    );
    assert_eq!(got, (Ok(1), true, Ok(())));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
}

#[test]
fn a_forgotten_shared_guard_never_changes_another_values_answer() {
    // A shared guard forgotten on this thread, its registry then dropped.
    let first = Registry::new();
    let p = first.save(1u32);
    std::mem::forget(first.restore_ref::<u32>(p).unwrap());
    drop(first);
    // A new value, quite possibly in the same memory, read by another
    // thread for a while: an exclusive request here must wait, not be
    // refused as if this thread were the reader.
    let second = Registry::new();
    let q = second.save(2u32) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let second = &second;
        s.spawn(move || {
            let g = second.restore_ref::<u32>(ptr(q)).unwrap();
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(g);
        });
        held_rx.recv().unwrap();
        let releaser = s.spawn(move || {
            for _ in 0..20 {
                std::thread::yield_now();
            }
            release_tx.send(()).unwrap();
        });
        assert_eq!(second.restore::<u32>(ptr(q)).map(|g| *g), Ok(2));
        releaser.join().unwrap();
    });
}

#[test]
fn a_registry_dropped_while_unwinding_does_not_abort() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("value's drop");
        }
    }
    let caught = std::panic::catch_unwind(|| {
        let r = Registry::new();
        r.save(PanicsOnDrop);
        panic!("first");
    });
    let payload = caught.unwrap_err();
    assert_eq!(handle_registry::panic::message(&*payload), Some("first"));
}

#[test]
fn c_unref_never_unwinds_even_when_payloads_panic_when_dropped() {
    for depth in [1, 2, 5] {
        let p = handle_registry::save(NestedPanic(depth));
        handle_registry::c_unref(p);
        assert_eq!(handle_registry::unref(p), Err(Error::Stale));
    }
}
