//! Adversarial review of the lock-free core: attacks through the public API
//! only (safe Rust, plus "C" callers passing arbitrary integers as `void*`).
//!
//! Three tests demonstrated broken guarantees when written (a scope ending
//! during thread-local teardown aborted, twice; a refused `with`/`call`
//! could unwind into C) and failed until the core was fixed; the others
//! are attacks that held. All are kept as regression tests. Pure Rust, so everything here runs under Miri
//! (`MIRIFLAGS=-Zmiri-strict-provenance cargo +nightly miri test --test
//! adversarial`). Tests whose failure mode is a process abort run their
//! body in a child process (natively), so that the harness reports a
//! failure instead of dying.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use handle_registry::{Error, Handle, Registry};

mod common;
use common::{in_child, ptr, Counted, OnDrop};

/// How long a waiting test may take before it counts as a deadlock.
fn patience() -> Duration {
    Duration::from_secs(if cfg!(miri) { 900 } else { 30 })
}

thread_local! {
    /// Touched first on a thread, so destroyed last: its closure runs after
    /// every crate thread-local that was first touched after it.
    static LAST: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

// ---------------------------------------------------------------------------
// Findings (fail on the current code)
// ---------------------------------------------------------------------------

/// `scope_sync` ends with `take`; at thread-local teardown, after the
/// shared-borrow spill vector was destroyed while it listed borrows, every
/// `take` of a handle that another thread reads answers `Busy`, and
/// `run_shared`'s `Finish` turns any error but `Stale` into
/// `escaped()` = `process::abort()`.
#[test]
fn scope_sync_at_teardown_after_spill_lost_does_not_abort() {
    if !in_child("scope_sync_at_teardown_after_spill_lost_does_not_abort") {
        return;
    }
    let p = handle_registry::save(7u8) as usize;
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        LAST.with(|l| {
            l.borrow_mut().0 = Some(Box::new(move || {
                // The spill vector is gone, and listed our forgotten borrows.
                let state = 5u32;
                let got = Registry::global().scope_sync(&state, |q| {
                    let q = q as usize;
                    let (inside, entered) = mpsc::channel();
                    // A C worker thread still reading when the call returns.
                    std::thread::spawn(move || {
                        let _ = Registry::global().with_ref(ptr(q), |s: &u32| {
                            inside.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(200));
                            *s
                        });
                    });
                    entered.recv().unwrap();
                });
                let _ = tx.send(got.is_ok());
            }))
        });
        // More shared borrows than the inline list holds: the spill vector
        // is registered (after `LAST`, so destroyed before it) and keeps
        // entries because the guards are forgotten.
        for _ in 0..9 {
            std::mem::forget(handle_registry::restore_ref::<u8>(ptr(p)).unwrap());
        }
    });
    assert_eq!(rx.recv_timeout(patience()), Ok(true));
    t.join().unwrap();
}

/// A thread's owner id is given back when its `LEASE` thread-local is
/// destroyed, and the thread keeps using it for the rest of its teardown,
/// so a new thread may get the same id. The doc says that can only turn a
/// wait into `Busy`; but `scope_send`'s end is a `take` whose `Busy` is
/// turned into `process::abort()`.
#[test]
fn scope_send_at_teardown_with_reused_owner_id_does_not_abort() {
    if !in_child("scope_send_at_teardown_with_reused_owner_id_does_not_abort") {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        LAST.with(|l| {
            l.borrow_mut().0 = Some(Box::new(move || {
                // Our id went back to the pool with `LEASE`.
                let mut state = 0u32;
                let got = Registry::global().scope_send(&mut state, |q| {
                    let q = q as usize;
                    let (inside, entered) = mpsc::channel();
                    // A new thread: it takes the first free id, ours.
                    std::thread::spawn(move || {
                        let _ = Registry::global().with(ptr(q), |s: &mut u32| {
                            inside.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(200));
                            *s += 1;
                        });
                    });
                    entered.recv().unwrap();
                });
                let _ = tx.send(got.is_ok());
            }))
        });
        // Take an owner id now: `LEASE` is registered after `LAST`.
        let h = handle_registry::save(1u8);
        drop(handle_registry::restore::<u8>(h).unwrap());
        handle_registry::unref(h).unwrap();
    });
    assert_eq!(rx.recv_timeout(patience()), Ok(true));
    t.join().unwrap();
}

/// A panic may unwind out of `call`/`with` (into C): the closure or the
/// arguments are dropped outside the catch when the callback is refused
/// (stale handle, or skipped after an earlier panic).
#[test]
fn nothing_unwinds_out_of_with_or_call_on_refusal() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("dropped an argument");
            }
        }
    }
    let r = Registry::global();
    // 1. A stale handle: `call` drops its arguments outside any catch.
    let stale = r.scope_fn(&mut |_: Bomb| (), |p| p).unwrap();
    let out = catch_unwind(AssertUnwindSafe(|| r.call::<Bomb, ()>(stale, Bomb)));
    let stale_ok = matches!(out, Ok(Err(Error::Stale)));
    // 2. After a panic in the same scope: the next closure is skipped and
    // dropped by `PanicCarrier::catch` outside `catch_unwind`.
    let mut state = 0u8;
    let skipped_ok = std::cell::Cell::new(false);
    let resumed = catch_unwind(AssertUnwindSafe(|| {
        r.scope(&mut state, |p| {
            let _ = r.with(p, |_: &mut u8| panic!("first"));
            let bomb = Bomb;
            let inner = catch_unwind(AssertUnwindSafe(|| r.with(p, move |_: &mut u8| drop(bomb))));
            skipped_ok.set(matches!(inner, Ok(Err(Error::Panicked))));
        })
    }));
    // The scope resumes "first".
    assert!(resumed.is_err());
    let skipped_ok = skipped_ok.get();
    assert!(stale_ok, "call on a stale handle unwound");
    assert!(skipped_ok, "with after a panic unwound");
}

// ---------------------------------------------------------------------------
// Attacks that held (regression tests)
// ---------------------------------------------------------------------------

/// Every integer a C caller can pass: no UB (checked by Miri), always an
/// error for handles never issued or already gone. Aimed at a private
/// registry (and at the global one only with integers that cannot name a
/// global handle), so that other tests' handles are never touched.
#[test]
fn arbitrary_integers_are_refused_without_ub() {
    const WIDE: bool = usize::BITS == 64;
    let (index_bits, registry_bits) = if WIDE { (24, 8) } else { (16, 4) };
    let gen_shift = index_bits + registry_bits;
    let r = Registry::new();
    let other = Registry::new();
    let live = r.save(5u32) as usize;
    let id = (live >> index_bits) & ((1 << registry_bits) - 1);
    let gone = r.save(6u32) as usize;
    r.unref(ptr(gone)).unwrap();
    let foreign = other.save(1u8) as usize;
    let mut ints: Vec<usize> = vec![
        0,
        1,
        usize::MAX,
        usize::MAX - 1,
        1 << (usize::BITS - 1),
        id << index_bits,
        (id << index_bits) | ((1 << index_bits) - 1),
        usize::MAX & !((1 << registry_bits) - 1) << index_bits | id << index_bits,
        gone,
        gone ^ 1,
        live ^ 1,
        live ^ (1 << 2),
        live.wrapping_add(1 << (usize::BITS - 1)),
        live.wrapping_sub(1 << gen_shift),
        live.wrapping_add(1 << gen_shift),
        foreign,
        foreign ^ 1,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..if cfg!(miri) { 64 } else { 4096 } {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ints.push(x as usize);
        // Our registry, a random small index and generation.
        let low = (x as usize & 0x3ff) + 1;
        let gen = (x >> 40) as usize & 0x3;
        ints.push(low | id << index_bits | gen << gen_shift);
    }
    for &i in &ints {
        if i == live {
            continue;
        }
        let p = ptr(i);
        assert!(r.restore::<u32>(p).is_err(), "{i:#x}");
        assert!(r.restore_ref::<u32>(p).is_err(), "{i:#x}");
        assert!(r.check::<u32>(p).is_err(), "{i:#x}");
        assert!(r.take::<u32>(p).is_err(), "{i:#x}");
        assert!(r.with(p, |_: &mut u32| ()).is_err(), "{i:#x}");
        assert!(r.with_ref(p, |_: &u32| ()).is_err(), "{i:#x}");
        assert!(r.call::<u8, u8>(p, 1).is_err(), "{i:#x}");
        assert!(r.lend::<u32, _>(p, || ()).is_err(), "{i:#x}");
        assert!(Handle::<u32>::from_ptr_in(&r, p).is_err(), "{i:#x}");
        if i == foreign {
            assert_eq!(r.unref(p), Err(Error::WrongRegistry));
            continue;
        }
        assert!(r.unref(p).is_err(), "{i:#x}");
        let names_global = ((i >> index_bits) & ((1 << registry_bits) - 1)) == 1;
        if !names_global {
            handle_registry::c_unref(p);
        }
    }
    assert_eq!(r.take::<u32>(ptr(live)), Ok(5));
    assert_eq!(other.take::<u8>(ptr(foreign)), Ok(1));
}

/// `unref` of a value borrowed on another thread: never waits, the handle is
/// stale at once, and the value is dropped exactly once, by the guard.
#[test]
fn unref_while_borrowed_elsewhere_drops_exactly_once() {
    for shared in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let p = handle_registry::save(Counted(drops.clone())) as usize;
        let (held, holding) = mpsc::channel();
        let (go, release) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let g: Box<dyn Any> = if shared {
                // Counted is Sync (Arc<AtomicUsize>).
                Box::new(handle_registry::restore_ref::<Counted>(ptr(p)).unwrap())
            } else {
                Box::new(handle_registry::restore::<Counted>(ptr(p)).unwrap())
            };
            held.send(()).unwrap();
            release.recv().unwrap();
            drop(g);
        });
        holding.recv().unwrap();
        assert_eq!(handle_registry::unref(ptr(p)), Ok(()));
        assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
        assert_eq!(
            handle_registry::take::<Counted>(ptr(p)).err(),
            Some(Error::Stale)
        );
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        go.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

/// Races between unref, take, restore, restore_ref and waiters on the same
/// handles: every value dropped exactly once, nobody hangs.
#[test]
fn racing_removals_and_borrows_drop_each_value_once() {
    let rounds = if cfg!(miri) { 6 } else { 300 };
    let drops = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let d = drops.clone();
    let worker = std::thread::spawn(move || {
        for round in 0..rounds {
            let p = handle_registry::save(Counted(d.clone())) as usize;
            std::thread::scope(|s| {
                for who in 0..3usize {
                    s.spawn(move || {
                        let p = ptr(p);
                        match (who + round) % 3 {
                            0 => {
                                if let Ok(g) = handle_registry::restore::<Counted>(p) {
                                    std::thread::yield_now();
                                    let _ = handle_registry::unref(p); // from inside
                                    drop(g);
                                }
                            }
                            1 => {
                                if let Ok(g) = handle_registry::restore_ref::<Counted>(p) {
                                    std::thread::yield_now();
                                    drop(g);
                                }
                                let _ = handle_registry::take::<Counted>(p);
                            }
                            _ => {
                                let _ = handle_registry::unref(p);
                                let _ = handle_registry::restore::<Counted>(p);
                            }
                        }
                    });
                }
            });
            // Whatever happened, the handle is gone now or still live.
            let _ = handle_registry::unref(ptr(p));
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(patience())
        .expect("deadlock or lost wake-up");
    worker.join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), rounds);
}

/// Many threads queue behind one exclusive borrow; all get through.
#[test]
fn a_crowd_of_waiters_is_woken() {
    let p = handle_registry::save(0usize) as usize;
    let n: usize = if cfg!(miri) { 3 } else { 8 };
    let per = if cfg!(miri) { 3 } else { 200 };
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        std::thread::scope(|s| {
            for i in 0..n {
                s.spawn(move || {
                    for _ in 0..per {
                        if i % 2 == 0 {
                            *handle_registry::restore::<usize>(ptr(p)).unwrap() += 1;
                        } else {
                            let g = handle_registry::restore_ref::<usize>(ptr(p)).unwrap();
                            std::thread::yield_now();
                            drop(g);
                        }
                    }
                });
            }
        });
        tx.send(()).unwrap();
    });
    rx.recv_timeout(patience()).expect("lost wake-up");
    runner.join().unwrap();
    assert_eq!(
        handle_registry::take::<usize>(ptr(p)),
        Ok(per * n.div_ceil(2))
    );
}

/// Threads that exit with a warm free-slot cache, and saves right after on
/// other threads: handles are never duplicated and each names its own value.
#[test]
fn free_slot_caches_across_thread_exit_never_hand_out_a_slot_twice() {
    let rounds = if cfg!(miri) { 2 } else { 20 };
    let per = if cfg!(miri) { 40 } else { 200 };
    for _ in 0..rounds {
        let handles: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    s.spawn(move || {
                        // Warm the cache: save and free, keep some.
                        let tmp: Vec<_> = (0..per).map(|i| handle_registry::save(i)).collect();
                        for p in tmp {
                            handle_registry::unref(p).unwrap();
                        }
                        (0..per / 4)
                            .map(|i: usize| handle_registry::save((t as usize, i)) as usize)
                            .collect::<Vec<usize>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = handles.iter().flatten().copied().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a handle was issued twice");
        for (t, hs) in handles.iter().enumerate() {
            for (i, &p) in hs.iter().enumerate() {
                assert_eq!(handle_registry::take::<(usize, usize)>(ptr(p)), Ok((t, i)));
            }
        }
    }
}

/// A forgotten guard leaves an orphan after `unref`; dropping the registry
/// drops it, once.
#[test]
fn forgotten_guards_and_registry_drop_drop_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    {
        let r = Registry::new();
        let a = r.save(Counted(drops.clone()));
        let b = r.save(Counted(drops.clone()));
        let c = r.save(Counted(drops.clone()));
        std::mem::forget(r.restore::<Counted>(a).unwrap());
        std::mem::forget(r.restore_ref::<Counted>(b).unwrap());
        std::mem::forget(r.restore_ref::<Counted>(b).unwrap());
        r.unref(a).unwrap();
        r.unref(b).unwrap();
        assert_eq!(r.restore::<Counted>(c).map(|_| ()), Ok(()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Our own forgotten shared borrow: Busy, never a wait.
        assert_eq!(r.take::<Counted>(b).err(), Some(Error::Stale));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

/// Registry ids are reused after a drop; handles of the old registry are
/// never resolved by the new one.
#[test]
fn reused_registry_ids_never_resolve_old_handles() {
    let mut old = Vec::new();
    for round in 0..if cfg!(miri) { 3 } else { 20 } {
        let r = Registry::new();
        for &p in &old {
            assert!(r.restore::<u32>(ptr(p)).is_err());
            assert!(r.unref(ptr(p)).is_err());
        }
        for i in 0..4u32 {
            let p = r.save(round * 10 + i) as usize;
            if i % 2 == 0 {
                r.unref(ptr(p)).unwrap();
            }
            old.push(p);
        }
    }
}

/// Scopes: the state is unreachable after the scope and from other threads
/// (pinned forms), also when C unrefs the handle during the scope.
#[test]
fn scoped_state_is_never_reached_after_or_elsewhere() {
    let r = Registry::global();
    let mut log: Vec<u8> = Vec::new();
    let mut push = |x: u8| log.push(x);
    let p = r
        .scope_fn(&mut push, |p| {
            assert_eq!(r.call::<u8, ()>(p, 1), Ok(()));
            // Wrong argument or result type.
            assert!(matches!(
                r.call::<u16, ()>(p, 1),
                Err(Error::WrongType { .. })
            ));
            assert!(matches!(
                r.call::<u8, u8>(p, 1),
                Err(Error::WrongType { .. })
            ));
            let q = p as usize;
            let elsewhere = std::thread::spawn(move || {
                (
                    Registry::global().call::<u8, ()>(ptr(q), 2).err(),
                    Registry::global().unref(ptr(q)),
                    Registry::global().call::<u8, ()>(ptr(q), 3).err(),
                )
            })
            .join()
            .unwrap();
            assert_eq!(
                elsewhere,
                (Some(Error::WrongThread), Ok(()), Some(Error::Stale))
            );
            assert_eq!(r.call::<u8, ()>(p, 4), Err(Error::Stale));
            p as usize
        })
        .unwrap();
    assert_eq!(r.call::<u8, ()>(ptr(p), 5), Err(Error::Stale));
    let _ = push; // the closure's borrow of `log` ends here
    assert_eq!(log, [1]);

    // Re-entry and nesting of the same state's scope.
    let mut n = 0u32;
    r.scope(&mut n, |p| {
        r.with(p, |n: &mut u32| {
            *n += 1;
            assert_eq!(r.with(p, |_: &mut u32| ()), Err(Error::Busy));
            assert_eq!(r.with_ref(p, |_: &u32| ()).err(), Some(Error::Busy));
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(n, 1);
}

/// `scope_send` / `scope_sync` wait for callbacks still running on other
/// threads before returning the borrow, also after a C-side unref.
#[test]
fn shared_scopes_wait_for_late_callbacks() {
    let r = Registry::global();
    for unref_first in [false, true] {
        let mut v: Vec<u32> = Vec::new();
        let (inside_tx, inside_rx) = mpsc::channel();
        let worker = r
            .scope_send(&mut v, |p| {
                let q = p as usize;
                let h = std::thread::spawn(move || {
                    Registry::global()
                        .with(ptr(q), |v: &mut Vec<u32>| {
                            inside_tx.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(if cfg!(miri) {
                                1
                            } else {
                                50
                            }));
                            if unref_first {
                                // C's destroy-notify, from inside the callback.
                                handle_registry::c_unref(ptr(q));
                            }
                            v.push(1);
                        })
                        .unwrap();
                });
                inside_rx.recv().unwrap();
                h
            })
            .unwrap();
        // The scope returned: the callback must have finished.
        assert_eq!(v, [1]);
        worker.join().unwrap();
    }
}

/// Lends: guards escaping nested lends keep exactly one borrow, released
/// exactly once.
#[test]
fn escaped_guards_of_nested_lends_release_once() {
    let r = Registry::new();
    let p = r.save(0u32);
    let mut kept = None;
    r.lend::<u32, _>(p, || {
        r.lend::<u32, _>(p, || kept = Some(r.restore::<u32>(p).unwrap()))
            .unwrap();
        assert_eq!(r.restore::<u32>(p).err(), Some(Error::Busy));
        r.unref(p).unwrap();
        assert_eq!(r.restore::<u32>(p).err(), Some(Error::Stale));
    })
    .unwrap();
    **kept.as_mut().unwrap() += 1;
    assert_eq!(r.len(), 0);
    drop(kept);
    let q = r.save(9u32);
    assert_eq!(r.take::<u32>(q), Ok(9));
    assert!(r.is_empty());
}

/// On 32-bit targets a slot's generation runs out after 4 095 reuses: the
/// slot retires; old handles stay stale; also when retired while borrowed.
#[test]
#[cfg(target_pointer_width = "32")]
fn generation_exhaustion_retires_the_slot_on_32_bit() {
    let drops = Arc::new(AtomicUsize::new(0));
    let r = Registry::new();
    // The generations may start past 0 when the registry id is a reused one.
    let first = r.save(Counted(drops.clone())) as usize;
    let index = first & 0xFFFF;
    r.unref(ptr(first)).unwrap();
    let mut saves = 1;
    let mut old = vec![first];
    let mut last_on_index = first;
    let mut moved_on = false;
    for i in 0..5000usize {
        let p = r.save(Counted(drops.clone())) as usize;
        saves += 1;
        if p & 0xFFFF != index {
            moved_on = true;
            r.unref(ptr(p)).unwrap();
            break;
        }
        last_on_index = p;
        if p >> 20 == 0xFFF {
            // The last generation: retire it while borrowed.
            let g = r.restore::<Counted>(ptr(p)).unwrap();
            r.unref(ptr(p)).unwrap();
            assert_eq!(r.restore::<Counted>(ptr(p)).err(), Some(Error::Stale));
            drop(g);
        } else {
            r.unref(ptr(p)).unwrap();
        }
        if i % 512 == 0 {
            old.push(p);
        }
    }
    assert!(moved_on, "the slot was never retired");
    assert_eq!(
        last_on_index >> 20,
        0xFFF,
        "retired only after its last generation"
    );
    old.push(last_on_index);
    for p in old {
        assert_eq!(r.restore::<Counted>(ptr(p)).err(), Some(Error::Stale));
    }
    assert_eq!(drops.load(Ordering::SeqCst), saves);
}

/// `c_unref` called while the thread unwinds (a C destructor run from a
/// Rust `Drop` during a panic), on a value whose `Drop` panics: caught,
/// never a double-panic abort.
#[test]
fn c_unref_while_unwinding_with_a_panicking_drop_does_not_abort() {
    if !in_child("c_unref_while_unwinding_with_a_panicking_drop_does_not_abort") {
        return;
    }
    struct Panicky;
    impl Drop for Panicky {
        fn drop(&mut self) {
            panic!("value drop");
        }
    }
    struct CallsCUnref(usize);
    impl Drop for CallsCUnref {
        fn drop(&mut self) {
            handle_registry::c_unref(ptr(self.0));
        }
    }
    let p = handle_registry::save(Panicky) as usize;
    let out = catch_unwind(|| {
        let _d = CallsCUnref(p);
        panic!("outer");
    });
    assert!(out.is_err());
    assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
}

/// `c_unref` of one handle from many threads at once, while it is borrowed:
/// exactly one drop, by the last guard.
#[test]
fn concurrent_c_unref_drops_once() {
    let rounds = if cfg!(miri) { 3 } else { 200 };
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..rounds {
        let p = handle_registry::save(Counted(drops.clone())) as usize;
        std::thread::scope(|s| {
            for i in 0..3 {
                s.spawn(move || {
                    if i == 0 {
                        if let Ok(g) = handle_registry::restore_ref::<Counted>(ptr(p)) {
                            std::thread::yield_now();
                            drop(g);
                        }
                    } else {
                        handle_registry::c_unref(ptr(p));
                    }
                });
            }
        });
    }
    assert_eq!(drops.load(Ordering::SeqCst), rounds);
}

/// On 32-bit targets the in-word reader count has 12 bits: forgotten
/// shared guards can fill it. The next reader is refused (`Busy`), the
/// count never spills into the generation. (Shared borrows go to the
/// thread's reader record first; holding more handles than a record has
/// entries sends the rest to the in-word count.)
#[test]
#[cfg(target_pointer_width = "32")]
fn reader_count_saturates_without_overflow_on_32_bit() {
    let r = Registry::new();
    let others: Vec<_> = (0..8u8).map(|i| r.save(i)).collect();
    let _fill: Vec<_> = others
        .iter()
        .map(|&o| r.restore_ref::<u8>(o).unwrap())
        .collect();
    let p = r.save(3u8);
    let q = r.save(4u8);
    for _ in 0..(1 << 12) - 1 {
        std::mem::forget(r.restore_ref::<u8>(p).unwrap());
    }
    assert_eq!(r.restore_ref::<u8>(p).err(), Some(Error::Busy));
    assert_eq!(r.restore::<u8>(p).err(), Some(Error::Busy));
    assert_eq!(r.check::<u8>(p), Ok(()));
    assert_eq!(r.take::<u8>(q), Ok(4), "the neighbour is untouched");
    assert_eq!(r.unref(p), Ok(()));
    assert_eq!(r.restore_ref::<u8>(p).err(), Some(Error::Stale));
}

/// `check` on a handle whose slot is being emptied and refilled with a
/// value of another type on another thread (same index, next generation):
/// `Ok` or `Stale`, never the next value's type.
#[test]
fn check_never_reports_the_next_values_type() {
    let rounds = if cfg!(miri) { 10 } else { 300 };
    for _ in 0..rounds {
        let p = handle_registry::save(1u32) as usize;
        let refill = std::thread::spawn(move || {
            handle_registry::unref(ptr(p)).unwrap();
            // The same thread's cache hands the same index back.
            handle_registry::save(String::from("next")) as usize
        });
        loop {
            match Registry::global().check::<u32>(ptr(p)) {
                Ok(()) => std::thread::yield_now(),
                Err(Error::Stale) => break,
                Err(e) => panic!("check of an old handle said {e:?}"),
            }
        }
        let q = refill.join().unwrap();
        assert_eq!(
            handle_registry::take::<String>(ptr(q)).as_deref(),
            Ok("next")
        );
    }
}
