//! Pure-Rust tests of the slot protocol: they call the trampolines from
//! Rust, so they also run under Miri
//! (`cargo +nightly miri test --lib static_trampoline`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};

use super::*;
use crate::panic::message;

crate::static_callbacks! {
    static ADD: [extern "C" fn(a: i32, b: i32) -> i32; 4] else -1;
    static SOLO: [extern "C" fn(x: u32) -> u32; 1] else 0;
    static PAIR: [extern "C" fn(); 2];
    static REENTER: [extern "C" fn(depth: u32) -> u32; 1] else 99;
    static SELF_RELEASE: [extern "C" fn(); 1];
    static SLOW: [extern "C" fn(); 1];
    static NO_ID: [extern "C" fn(); 1];
    static THREADS: [extern "C" fn(x: u64) -> u64; 4];
    static RAW: [unsafe extern "C" fn(p: *const u8) -> u8; 1] else 0xFF;
}

#[test]
fn bound_closure_is_called_and_unbound_slot_falls_back() {
    let guard = ADD.acquire(Box::new(|a, b| a + b)).unwrap();
    let add = guard.fn_ptr();
    assert_eq!(add(2, 3), 5);
    assert_eq!(ADD.dispatch(guard.slot(), (2, 3)), Some(5));
    drop(guard);
    assert_eq!(add(2, 3), -1);
}

#[test]
fn every_slot_has_its_own_function() {
    let fns: Vec<usize> = (0..THREADS.capacity())
        .map(|i| THREADS.fn_ptr(i).unwrap() as usize)
        .collect();
    for (i, a) in fns.iter().enumerate() {
        for b in &fns[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert!(THREADS.fn_ptr(THREADS.capacity()).is_none());
}

#[test]
fn exhausted_pool_is_an_error_until_a_slot_frees() {
    let a = PAIR.acquire(Box::new(|| {})).unwrap();
    let b = PAIR.acquire(Box::new(|| {})).unwrap();
    assert_ne!(a.slot(), b.slot());
    assert_eq!(PAIR.in_use(), 2);
    let err = PAIR.acquire(Box::new(|| {})).unwrap_err();
    assert_eq!((err.pool(), err.capacity()), ("PAIR", 2));
    let mut ran = false;
    assert_eq!(PAIR.scope(Box::new(|| {}), |_| ran = true), Err(err));
    assert!(!ran, "body must not run without a slot");
    drop(a);
    let c = PAIR.acquire(Box::new(|| {})).unwrap();
    drop((b, c));
    assert_eq!(PAIR.in_use(), 0);
}

#[test]
fn late_call_is_ignored_then_reaches_the_next_owner() {
    let first = SOLO.acquire(Box::new(|x| x + 1)).unwrap();
    let f = first.fn_ptr();
    assert_eq!(f(1), 2);
    drop(first);
    // Stale: the fallback, never the dropped closure.
    assert_eq!(f(1), 0);
    // The documented limit: the slot's next owner gets late calls.
    let second = SOLO.acquire(Box::new(|x| x * 10)).unwrap();
    assert_eq!(second.fn_ptr() as usize, f as usize);
    assert_eq!(f(1), 10);
}

#[test]
fn panic_is_caught_skips_later_calls_and_resumes_on_finish() {
    crate::static_callbacks! {
        static PANICKY: [extern "C" fn(x: i32) -> i32; 1] else -7;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let guard = PANICKY
        .acquire(Box::new(move |x| {
            seen.fetch_add(1, Ordering::Relaxed);
            assert!(x >= 0, "negative {x}");
            x
        }))
        .unwrap();
    let f = guard.fn_ptr();
    assert_eq!(f(4), 4);
    assert_eq!(f(-1), -7);
    assert_eq!(f(5), -7, "skipped after a panic");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    let payload = guard.try_finish().unwrap_err();
    assert_eq!(message(&*payload), Some("negative -1"));
    assert_eq!(PANICKY.in_use(), 0);
}

#[test]
fn finish_and_drop_resume_the_panic() {
    crate::static_callbacks! {
        static PANICKY: [extern "C" fn(x: i32) -> i32; 1] else -7;
    }
    for finish in [true, false] {
        let guard = PANICKY.acquire(Box::new(|_| panic!("in C"))).unwrap();
        assert_eq!((guard.fn_ptr())(1), -7);
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if finish {
                guard.finish();
            } else {
                drop(guard);
            }
        }))
        .unwrap_err();
        assert_eq!(message(&*resumed), Some("in C"));
    }
    assert_eq!(PANICKY.in_use(), 0);
}

#[test]
fn dropping_while_unwinding_keeps_the_first_panic() {
    crate::static_callbacks! {
        static PANICKY: [extern "C" fn(x: i32) -> i32; 1] else -7;
    }
    let outer = std::panic::catch_unwind(|| {
        let guard = PANICKY.acquire(Box::new(|_| panic!("callback"))).unwrap();
        (guard.fn_ptr())(0);
        panic!("body");
    })
    .unwrap_err();
    assert_eq!(message(&*outer), Some("body"));
    assert_eq!(PANICKY.in_use(), 0);
}

#[test]
fn reentrant_call_gets_the_fallback() {
    let guard = REENTER
        .acquire(Box::new(|depth| {
            if depth == 0 {
                // Through the pool, as C would call the same pointer again.
                REENTER.dispatch(0, (1,)).unwrap_or(99) + 1
            } else {
                depth
            }
        }))
        .unwrap();
    assert_eq!(guard.slot(), 0);
    assert_eq!((guard.fn_ptr())(0), 100);
}

#[test]
fn closure_may_release_its_own_guard() {
    let own: Arc<Mutex<Option<SlotGuard<extern "C" fn(), 1>>>> = Arc::new(Mutex::new(None));
    let inner = Arc::clone(&own);
    let guard = SELF_RELEASE
        .acquire(Box::new(move || drop(inner.lock().unwrap().take())))
        .unwrap();
    let f = guard.fn_ptr();
    *own.lock().unwrap() = Some(guard);
    f(); // drops the guard from inside its own call
    assert_eq!(SELF_RELEASE.in_use(), 0);
    f(); // stale now: ignored
         // The `Arc` cycle (closure -> own -> guard) is broken: the closure is
         // freed once the call returned.
    assert_eq!(Arc::strong_count(&own), 1);
}

#[test]
fn release_waits_for_a_call_in_flight_on_another_thread() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    let go_rx = Mutex::new(go_rx);
    let guard = SLOW
        .acquire(Box::new(move || {
            entered_tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            finished.store(true, Ordering::SeqCst);
        }))
        .unwrap();
    let f = guard.fn_ptr();
    std::thread::scope(|s| {
        s.spawn(move || f());
        entered_rx.recv().unwrap();
        s.spawn(move || go_tx.send(()).unwrap());
        drop(guard);
        assert!(done.load(Ordering::SeqCst), "release returned mid-call");
    });
}

#[test]
fn scope_lends_local_state_and_releases() {
    crate::static_callbacks! {
        static SCOPED: [extern "C" fn(x: u64) -> u64; 1];
    }
    let mut total = 0;
    let out = SCOPED
        .scope(
            Box::new(|x| {
                total += x;
                total
            }),
            |f| f(1) + f(2),
        )
        .unwrap();
    assert_eq!((out, total), (4, 3));
    assert_eq!(SCOPED.in_use(), 0);
}

#[test]
fn scope_resumes_a_callback_panic_and_releases_on_body_panic() {
    crate::static_callbacks! {
        static SCOPED: [extern "C" fn(x: u64) -> u64; 1];
    }
    let resumed = std::panic::catch_unwind(|| {
        SCOPED.scope(Box::new(|_| panic!("callback")), |f| assert_eq!(f(1), 0))
    })
    .unwrap_err();
    assert_eq!(message(&*resumed), Some("callback"));
    let mut state = 0u64;
    let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        SCOPED.scope(
            Box::new(|x| {
                state += x;
                x
            }),
            |f| {
                f(5);
                panic!("body")
            },
        )
    }))
    .unwrap_err();
    assert_eq!(message(&*body), Some("body"));
    assert_eq!(state, 5);
    assert_eq!(SCOPED.in_use(), 0);
}

#[test]
fn guards_on_four_threads_never_see_each_others_state() {
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let barrier = &barrier;
            s.spawn(move || {
                let mut sum = 0;
                THREADS
                    .scope(
                        Box::new(|x| {
                            sum += x;
                            t
                        }),
                        |f| {
                            // All four bound at once, so four distinct slots.
                            barrier.wait();
                            for i in 0..10 {
                                assert_eq!(f(i), t);
                            }
                            barrier.wait();
                        },
                    )
                    .unwrap();
                assert_eq!(sum, 45);
            });
        }
    });
    assert_eq!(THREADS.in_use(), 0);
}

#[test]
fn unsafe_pools_hand_out_unsafe_pointers() {
    // SAFETY: callers pass readable pointers (the pool's contract).
    let guard = RAW.acquire(Box::new(|p| unsafe { *p })).unwrap();
    let read: unsafe extern "C" fn(*const u8) -> u8 = guard.fn_ptr();
    let byte = 42u8;
    // SAFETY: `&byte` is readable.
    assert_eq!(unsafe { read(&byte) }, 42);
    drop(guard);
    // SAFETY: no closure is bound; the fallback does not read `p`.
    assert_eq!(unsafe { read(std::ptr::null()) }, 0xFF);
}

#[test]
fn debug_output_names_the_pool() {
    crate::static_callbacks! {
        static SCOPED: [extern "C" fn(x: u64) -> u64; 1];
    }
    let guard = SCOPED.acquire(Box::new(|x| x)).unwrap();
    assert!(format!("{guard:?}").contains("SCOPED"));
    assert!(format!("{:?}", SCOPED).contains("in_use"));
}

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("closure dropped");
    }
}

#[test]
fn closure_drop_panic_reaches_the_releasing_rust_code() {
    crate::static_callbacks! {
        static DROPPY: [extern "C" fn(); 1];
    }
    let bomb = PanicOnDrop;
    let guard = DROPPY
        .acquire(Box::new(move || {
            let _ = &bomb;
        }))
        .unwrap();
    (guard.fn_ptr())();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guard.finish()));
    assert_eq!(message(&*caught.unwrap_err()), Some("closure dropped"));
    assert_eq!(DROPPY.in_use(), 0);
}

#[test]
fn closure_drop_panic_while_unwinding_is_dropped_not_an_abort() {
    crate::static_callbacks! {
        static UNWINDING: [extern "C" fn(x: u8) -> u8; 1] else 0;
    }
    // A guard dropped by the body's panic, then a scope whose body
    // panics: each releases a closure whose `Drop` panics during that
    // unwind (a double panic, which would abort the test run).
    let bomb = PanicOnDrop;
    let caught = std::panic::catch_unwind(move || {
        let guard = UNWINDING
            .acquire(Box::new(move |x| {
                let _ = &bomb;
                x
            }))
            .unwrap();
        assert_eq!((guard.fn_ptr())(3), 3);
        panic!("body");
    });
    assert_eq!(message(&*caught.unwrap_err()), Some("body"));
    assert_eq!(UNWINDING.in_use(), 0);
    let bomb = PanicOnDrop;
    let caught = std::panic::catch_unwind(move || {
        let closure = Box::new(move |x| {
            let _ = &bomb;
            x
        });
        UNWINDING.scope(closure, |f| {
            assert_eq!(f(4), 4);
            panic!("scope body");
        })
    });
    assert_eq!(message(&*caught.unwrap_err()), Some("scope body"));
    assert_eq!(UNWINDING.in_use(), 0);
}

#[test]
fn try_finish_returns_the_closure_drop_panic_after_a_call_panic() {
    crate::static_callbacks! {
        static TRY_DROPPY: [extern "C" fn(ok: bool); 1];
    }
    let bomb = PanicOnDrop;
    let guard = TRY_DROPPY
        .acquire(Box::new(move |_| {
            let _ = &bomb;
        }))
        .unwrap();
    (guard.fn_ptr())(true);
    let payload = guard.try_finish().unwrap_err();
    assert_eq!(message(&*payload), Some("closure dropped"));
    // Both panicked: the call's panic is the one returned.
    let bomb = PanicOnDrop;
    let guard = TRY_DROPPY
        .acquire(Box::new(move |ok| {
            let _ = &bomb;
            assert!(ok, "not ok");
        }))
        .unwrap();
    (guard.fn_ptr())(false);
    let payload = guard.try_finish().unwrap_err();
    assert_eq!(message(&*payload), Some("not ok"));
    assert_eq!(TRY_DROPPY.in_use(), 0);
}

#[test]
fn closure_drop_panic_inside_its_own_call_does_not_unwind_into_c() {
    crate::static_callbacks! {
        static DROPPY: [extern "C" fn() -> u8; 1] else 9;
    }
    let own: Arc<Mutex<Option<SlotGuard<extern "C" fn() -> u8, 1>>>> = Arc::new(Mutex::new(None));
    let inner = Arc::clone(&own);
    let bomb = PanicOnDrop;
    let guard = DROPPY
        .acquire(Box::new(move || {
            let _ = &bomb;
            drop(inner.lock().unwrap().take());
            1
        }))
        .unwrap();
    let f = guard.fn_ptr();
    *own.lock().unwrap() = Some(guard);
    // The closure releases its own slot; its drop, at the end of this
    // call, panics inside the trampoline: caught there (an unwind into an
    // `extern "C"` frame would abort the test run).
    assert_eq!(f(), 1);
    assert_eq!(f(), 9);
    assert_eq!(Arc::strong_count(&own), 1);
}

#[test]
fn declaration_forms() {
    const SIZE: usize = 3;
    crate::static_callbacks! {
        /// Trailing comma, restricted visibility, a named constant size.
        #[allow(dead_code)]
        pub(crate) static TRAILING: [extern "C" fn(a: u8, b: u8,); SIZE];
        static DEFAULTED: [unsafe extern "C" fn() -> u32; _] else 5 + 2;
        static NONE: [extern "C" fn(); MAX_POOL_SIZE];
        static ARGS_IN_FALLBACK: [extern "C" fn(x: i64) -> i64; 1] else -x;
    }
    assert_eq!(TRAILING.capacity(), 3);
    assert_eq!(DEFAULTED.capacity(), DEFAULT_POOL_SIZE);
    assert_eq!(NONE.capacity(), MAX_POOL_SIZE);
    let last = NONE.fn_ptr(MAX_POOL_SIZE - 1).unwrap() as usize;
    assert_ne!(last, NONE.fn_ptr(0).unwrap() as usize);
    // SAFETY: the signature promises nothing about its (absent) arguments.
    assert_eq!(unsafe { (DEFAULTED.fn_ptr(1).unwrap())() }, 7);
    assert_eq!((ARGS_IN_FALLBACK.fn_ptr(0).unwrap())(4), -4);
    assert!(TRAILING.acquire(Box::new(|_, _| {})).is_ok());
}

#[test]
fn a_scope_on_a_thread_without_an_owner_id_waits_for_calls_in_flight() {
    // More live threads than the id field holds (4094 on 32-bit targets),
    // simulated. The release's reclaim used to fail there, and the scope
    // returned while a call still ran on its closure.
    let calls = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::thread::exhaust_for_test();
            let (entered, inside) = mpsc::channel();
            NO_ID
                .scope(
                    Box::new(|| {
                        let _ = entered.send(());
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        calls.fetch_add(1, Ordering::SeqCst);
                    }),
                    |f| {
                        s.spawn(move || f());
                        inside.recv().unwrap();
                    },
                )
                .unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "the scope ended first");
            assert_eq!(NO_ID.in_use(), 0);
        });
    });
}
