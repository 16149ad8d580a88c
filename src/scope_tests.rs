//! Unit tests of scopes, one promise each. Pure Rust: they run under Miri.

use super::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

/// A handle moved across threads as an integer, back to a `void*`.
fn ptr(p: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(p)
}

#[test]
fn same_thread_callbacks_reach_state_that_is_neither_send_nor_static_borrowed() {
    let r = Registry::new();
    let log = RefCell::new(Vec::new());
    let mut state = Rc::new(7);
    let late = r
        .scope(&mut state, |p| {
            for i in 0..3 {
                r.with(p, |s: &mut Rc<i32>| log.borrow_mut().push(**s + i))
                    .unwrap();
            }
            p
        })
        .unwrap();
    assert_eq!(*log.borrow(), [7, 8, 9]);
    assert_eq!(r.with(late, |_: &mut Rc<i32>| ()), Err(Error::Stale));
    assert!(r.is_empty());
}

#[test]
fn another_thread_gets_wrong_thread_and_never_waits() {
    let r = Registry::new();
    let mut state = Rc::new(RefCell::new(0));
    r.scope(&mut state, |p| {
        let p = p as usize;
        let from_there = std::thread::scope(|s| {
            s.spawn(|| {
                (
                    r.with(ptr(p), |_: &mut Rc<RefCell<i32>>| ()),
                    r.restore::<u8>(ptr(p)).err(),
                    r.unref(ptr(p)).is_ok(),
                )
            })
            .join()
            .unwrap()
        });
        // The unref from there orphaned the record: stale here now.
        assert_eq!(
            from_there,
            (Err(Error::WrongThread), Some(Error::WrongThread), true)
        );
        assert_eq!(
            r.with(ptr(p), |_: &mut Rc<RefCell<i32>>| ()),
            Err(Error::Stale)
        );
    })
    .unwrap();
    assert!(r.is_empty());
}

#[test]
fn scope_fn_runs_a_closure_that_borrows_locals() {
    let r = Registry::new();
    let mut pushed = Vec::new();
    let mut push = |x: u32| {
        pushed.push(x);
        pushed.len()
    };
    let (a, b, wrong) = r
        .scope_fn(&mut push, |p| {
            (
                r.call::<u32, usize>(p, 10),
                r.call::<u32, usize>(p, 20),
                r.call::<u64, usize>(p, 30),
            )
        })
        .unwrap();
    assert_eq!((a, b), (Ok(1), Ok(2)));
    assert!(matches!(wrong, Err(Error::WrongType { .. })));
    assert_eq!(pushed, [10, 20]);
}

#[test]
fn a_callback_inside_itself_is_busy() {
    let r = Registry::new();
    let mut n = 0u8;
    let inner = r
        .scope(&mut n, |p| {
            r.with(p, |_: &mut u8| r.with(p, |_: &mut u8| ()))
        })
        .unwrap();
    assert_eq!(inner, Ok(Err(Error::Busy)));
}

#[test]
fn a_panic_is_carried_and_resumed_when_the_scope_returns() {
    let r = Registry::new();
    let mut n = 0;
    let ran_after = std::cell::Cell::new(false);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.scope(&mut n, |p| {
            let first = r.with(p, |_: &mut i32| -> () { panic!("in a callback") });
            assert_eq!(first, Err(Error::Panicked));
            // Later callbacks are skipped.
            assert_eq!(
                r.with(p, |_: &mut i32| ran_after.set(true)),
                Err(Error::Panicked)
            );
            "body finished"
        })
    }));
    let payload = caught.expect_err("the panic is resumed");
    assert_eq!(crate::panic::message(&*payload), Some("in a callback"));
    assert!(!ran_after.get());
    assert!(r.is_empty());
}

#[test]
fn a_payload_that_panics_when_dropped_never_aborts_a_panicking_body() {
    // The callback's payload is left in the scope's carrier when the body
    // panics too; dropping it there used to start a second panic during
    // the body's unwind: an abort.
    use crate::panic::tests::NestedPanic;
    let r = Registry::new();
    let body = |p| {
        let e = r.with(p, |_: &mut u32| std::panic::panic_any(NestedPanic(1)));
        assert_eq!(e, Err(Error::Panicked));
        panic!("the body");
    };
    let (mut pinned, mut sent) = (0u32, 0u32);
    for run in [&mut || r.scope(&mut pinned, body), &mut || {
        r.scope_send(&mut sent, body)
    }] as [&mut dyn FnMut() -> Result<(), Error>; 2]
    {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        assert_eq!(
            crate::panic::message(&*caught.unwrap_err()),
            Some("the body")
        );
    }
    assert!(r.is_empty());
}

#[test]
fn a_panicking_body_still_ends_the_scope() {
    let r = Registry::new();
    let mut n = 0;
    let mut handle = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.scope(&mut n, |p| {
            handle = p as usize;
            panic!("in the body")
        })
    }));
    assert!(caught.is_err());
    assert_eq!(r.with(ptr(handle), |_: &mut i32| ()), Err(Error::Stale));
    assert!(r.is_empty());
}

#[test]
fn c_may_destroy_the_handle_during_the_scope() {
    let r = Registry::new();
    let mut n = 1;
    r.scope(&mut n, |p| {
        r.with(p, |n: &mut i32| *n += 1).unwrap();
        r.unref(p).unwrap(); // a destroy-notify
        assert_eq!(r.with(p, |_: &mut i32| ()), Err(Error::Stale));
    })
    .unwrap();
    assert_eq!(n, 2);
    assert!(r.is_empty());
}

#[test]
fn forms_do_not_mix() {
    let r = Registry::new();
    let mut n = 0u32;
    r.scope(&mut n, |p| {
        // The scope's own thread holds the record exclusively.
        assert_eq!(r.with_ref(p, |_: &u32| ()), Err(Error::Busy));
        assert!(matches!(r.restore::<u32>(p), Err(Error::WrongType { .. })));
    })
    .unwrap();
    r.scope_sync(&n, |p| {
        assert!(matches!(
            r.with(p, |_: &mut u32| ()),
            Err(Error::WrongType { .. })
        ));
        assert_eq!(r.with_ref(p, |n: &u32| *n), Ok(0));
    })
    .unwrap();
}

#[test]
fn scope_send_waits_for_a_callback_still_running_elsewhere() {
    let r = Registry::new();
    let mut total = 0u64;
    let (entered_tx, entered_rx) = mpsc::channel();
    std::thread::scope(|s| {
        r.scope_send(&mut total, |p| {
            let p = p as usize;
            let r = &r;
            s.spawn(move || {
                r.with(ptr(p), |t: &mut u64| {
                    entered_tx.send(()).unwrap();
                    for _ in 0..50 {
                        std::thread::yield_now();
                    }
                    *t += 5;
                })
                .unwrap();
                // After the scope, a late call is refused.
                while r.with(ptr(p), |_: &mut u64| ()).is_ok() {
                    std::thread::yield_now();
                }
                assert_eq!(r.with(ptr(p), |_: &mut u64| ()), Err(Error::Stale));
            });
            entered_rx.recv().unwrap();
            // Returning now: the scope must wait for the callback.
        })
        .unwrap();
        assert_eq!(total, 5, "the scope returned before the callback ended");
    });
}

#[test]
fn scope_sync_readers_run_together() {
    let r = Registry::new();
    let hits = AtomicUsize::new(0);
    let threads = if cfg!(miri) { 2 } else { 4 };
    r.scope_sync(&hits, |p| {
        let p = p as usize;
        let r = &r;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let barrier = &barrier;
                s.spawn(move || {
                    r.with_ref(ptr(p), |h: &AtomicUsize| {
                        // Every reader is inside at once.
                        barrier.wait();
                        h.fetch_add(1, Ordering::Relaxed)
                    })
                    .unwrap();
                });
            }
        });
    })
    .unwrap();
    assert_eq!(hits.into_inner(), threads);
}

#[test]
fn scopes_nest_and_lend_each_its_own_state() {
    let r = Registry::new();
    let (mut a, mut b) = (1, 10);
    r.scope(&mut a, |pa| {
        r.scope(&mut b, |pb| {
            r.with(pa, |a: &mut i32| *a += 1).unwrap();
            r.with(pb, |b: &mut i32| *b += 1).unwrap();
        })
        .unwrap();
        r.with(pa, |a: &mut i32| *a += 1).unwrap();
    })
    .unwrap();
    assert_eq!((a, b), (3, 11));
}

#[test]
fn a_panic_under_a_nested_scope_poisons_the_outer_one_too() {
    // The outer scope's callbacks are served past the innermost lend (the
    // slow claim) while the inner scope runs, and from the innermost one
    // (the fast claim) after: a panic on either path skips every later
    // callback of the outer scope.
    let r = Registry::new();
    let (mut a, mut b) = (0, 0);
    let ran_after = std::cell::Cell::new(0);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.scope(&mut a, |pa| {
            r.scope(&mut b, |pb| {
                let first = r.with(pa, |_: &mut i32| -> () { panic!("outer, nested") });
                assert_eq!(first, Err(Error::Panicked));
                let skipped = r.with(pa, |_: &mut i32| ran_after.set(1));
                assert_eq!(skipped, Err(Error::Panicked));
                // The inner scope is not poisoned.
                r.with(pb, |b: &mut i32| *b += 1).unwrap();
            })
            .unwrap();
            let skipped = r.with(pa, |_: &mut i32| ran_after.set(2));
            assert_eq!(skipped, Err(Error::Panicked));
            // The type is still checked first.
            assert!(matches!(
                r.call::<(), ()>(pa, ()),
                Err(Error::WrongType { .. })
            ));
        })
    }));
    let payload = caught.expect_err("the panic is resumed");
    assert_eq!(crate::panic::message(&*payload), Some("outer, nested"));
    assert_eq!((ran_after.get(), b), (0, 1));
    assert!(r.is_empty());
}

#[test]
fn fast_and_slow_claims_agree_on_busy_stale_and_wrong_type() {
    let r = Registry::new();
    let (mut a, mut b) = (1u32, 2u32);
    r.scope(&mut a, |pa| {
        // Fast claim (innermost), then the same checks past another lend.
        for nested in [false, true] {
            let check = || {
                let inner = r.with(pa, |_: &mut u32| r.with(pa, |_: &mut u32| ()));
                assert_eq!(inner, Ok(Err(Error::Busy)));
                assert!(matches!(
                    r.with(pa, |_: &mut u8| ()),
                    Err(Error::WrongType { .. })
                ));
                r.with(pa, |a: &mut u32| *a += 1).unwrap();
            };
            if nested {
                r.scope(&mut b, |_| check()).unwrap();
            } else {
                check();
            }
        }
        // `retain` sets `COUNTED`: the word is no longer the lend's exact
        // word, so the claim takes the slow path, and is still served.
        r.retain(pa).unwrap();
        r.with(pa, |a: &mut u32| *a += 10).unwrap();
        r.unref(pa).unwrap();
        r.with(pa, |a: &mut u32| *a += 100).unwrap();
        // The last reference: orphaned, stale on both paths.
        r.unref(pa).unwrap();
        assert_eq!(r.with(pa, |_: &mut u32| ()), Err(Error::Stale));
        r.scope(&mut b, |_| {
            assert_eq!(r.with(pa, |_: &mut u32| ()), Err(Error::Stale))
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(a, 113);
    assert!(r.is_empty());
}
