//! Parked borrows driven by a real C loop (`native/traverse.c`): the loop's
//! callbacks restore one handle often enough to park it, then other threads
//! take it over, unref it, or run loops of their own on it at the same time.
//! (Under Miri these are compiled out; `src/parked_tests.rs` runs there.)
#![cfg(not(miri))]

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use handle_registry::demo::ffi;
use handle_registry::{restore, save, take, unref};

/// More than the 1024 restores in a row after which a thread parks.
const CALLS: i64 = 3000;

unsafe extern "C" fn add(user_data: *mut c_void, i: c_int) {
    if let Ok(mut sum) = restore::<i64>(user_data) {
        *sum += i64::from(i);
    }
}

/// Runs the C loop: `CALLS` callbacks, each restoring `user_data`.
fn c_loop(user_data: *mut c_void) {
    let cbs = ffi::Callbacks {
        start: Some(add),
        end: None,
    };
    // SAFETY: `add` accepts any `user_data`.
    unsafe { ffi::traverse_bench_start(cbs, user_data, CALLS) };
}

const LOOP_SUM: i64 = CALLS * (CALLS - 1) / 2;

#[test]
fn a_handle_parked_by_a_c_loop_is_taken_on_another_thread() {
    let p = save(0i64);
    c_loop(p);
    c_loop(p);
    let h = p.addr();
    let taken = std::thread::spawn(move || take::<i64>(std::ptr::without_provenance_mut(h)))
        .join()
        .unwrap();
    assert_eq!(taken, Ok(2 * LOOP_SUM));
}

#[test]
fn a_handle_parked_by_a_c_loop_is_dropped_by_another_threads_unref() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    unsafe extern "C" fn touch(user_data: *mut c_void, _i: c_int) {
        let _ = restore::<Counted>(user_data);
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let p = save(Counted(drops.clone()));
    let cbs = ffi::Callbacks {
        start: Some(touch),
        end: None,
    };
    // SAFETY: `touch` accepts any `user_data`.
    unsafe { ffi::traverse_bench_start(cbs, p, CALLS) };
    let h = p.addr();
    std::thread::spawn(move || unref(std::ptr::without_provenance_mut(h)))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Two threads run C loops on one handle at once, round after round: each
/// parks it in turn and the other steals it (waiting while the owner is
/// inside a callback). Every callback's addition lands exactly once.
#[test]
fn two_threads_c_loops_on_one_handle() {
    const ROUNDS: i64 = 20;
    let p = save(0i64);
    let h = p.addr();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    c_loop(std::ptr::without_provenance_mut(h));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(take::<i64>(p), Ok(2 * ROUNDS * LOOP_SUM));
}
