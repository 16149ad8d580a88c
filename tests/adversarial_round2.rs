//! Adversarial review, round 2: reader records (`restore_ref`), the lean
//! lend/scope fast path and the per-thread free-slot cache, attacked
//! through the public API only.
//!
//! Pure Rust: these run under Miri too (counts scaled down there). Each
//! test that could hang runs under a watchdog that aborts the process with
//! a message instead of hanging CI (off under Miri, which reports
//! deadlocks itself).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use handle_registry::{Error, Registry, SharedGuard};

mod common;
use common::{in_child, ptr, rounds, watchdog, OnDrop, INDEX_MASK};

/// Asserts it is dropped exactly once (the count is checked by the test).
struct Once(Arc<AtomicUsize>, u64);

impl Drop for Once {
    fn drop(&mut self) {
        let before = self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "dropped twice");
    }
}

/// Six handles (more than a record's 4 entries), each borrowed shared
/// five times on one thread: every exclusive request on this thread is
/// `Busy`; another thread's `restore` waits and gets through once all are
/// released.
#[test]
fn nested_shared_borrows_past_record_capacity() {
    let _w = watchdog("nested_shared_borrows_past_record_capacity");
    let r = Registry::new();
    let hs: Vec<usize> = (0..6u64).map(|i| r.save(i) as usize).collect();
    let mut guards: Vec<SharedGuard<'_, u64>> = Vec::new();
    for _ in 0..5 {
        for (i, &h) in hs.iter().enumerate() {
            let g = r.restore_ref::<u64>(ptr(h)).unwrap();
            assert_eq!(*g, i as u64);
            guards.push(g);
        }
    }
    for &h in &hs {
        assert_eq!(r.restore::<u64>(ptr(h)).err(), Some(Error::Busy));
        assert_eq!(r.take::<u64>(ptr(h)).err(), Some(Error::Busy));
        assert_eq!(r.lend::<u64, _>(ptr(h), || ()).err(), Some(Error::Busy));
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = hs
            .iter()
            .map(|&h| {
                let r = &r;
                let done = &done;
                s.spawn(move || {
                    let mut g = r.restore::<u64>(ptr(h)).unwrap();
                    assert!(done.load(Ordering::SeqCst), "a writer got in under readers");
                    *g += 100;
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 50 }));
        // Release in an order that leaves the record entries and the
        // in-word counts interleaved.
        done.store(true, Ordering::SeqCst);
        while let Some(g) = guards.pop() {
            drop(g);
        }
        for w in workers {
            w.join().unwrap();
        }
    });
    for (i, &h) in hs.iter().enumerate() {
        assert_eq!(r.take::<u64>(ptr(h)), Ok(i as u64 + 100));
    }
    assert!(r.is_empty());
}

/// A forgotten shared guard, then `unref`, then the registry dropped: the
/// value is dropped exactly once, and a new registry (which may reuse the
/// id) is not blocked by the forgotten record entry.
#[test]
fn forgotten_shared_guard_unref_then_registry_drop() {
    let _w = watchdog("forgotten_shared_guard_unref_then_registry_drop");
    for _ in 0..rounds(20, 2) {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Registry::new();
        let p = r.save(Once(drops.clone(), 0));
        std::mem::forget(r.restore_ref::<Once>(p).unwrap());
        assert_eq!(r.unref(p), Ok(()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(r.restore_ref::<Once>(p).err(), Some(Error::Stale));
        drop(r);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // A fresh registry, possibly with the same id: its handles never
        // collide with the forgotten entry.
        let r2 = Registry::new();
        let q = r2.save(5u32) as usize;
        let g = r2.restore_ref::<u32>(ptr(q)).unwrap();
        drop(g);
        std::thread::scope(|s| {
            s.spawn(|| *r2.restore::<u32>(ptr(q)).unwrap() += 1);
        });
        assert_eq!(r2.take::<u32>(ptr(q)), Ok(6));
    }
}

/// A value whose `Drop` re-enters the registry (restore_ref of itself and
/// of another handle, an exclusive request under its own shared borrow,
/// saves and takes) when it is dropped by the last record reader's
/// settle, on the reader's thread.
#[test]
fn drop_by_settle_reenters_the_registry() {
    let _w = watchdog("drop_by_settle_reenters_the_registry");
    static R: once_cell::sync::Lazy<Registry> = once_cell::sync::Lazy::new(Registry::new);
    type Log = (Option<Error>, u64, Option<Error>, std::thread::ThreadId);
    struct Reenter {
        me: Arc<AtomicUsize>,
        other: usize,
        log: mpsc::Sender<Log>,
    }
    impl Drop for Reenter {
        fn drop(&mut self) {
            let me = self.me.load(Ordering::SeqCst);
            let mine = R.restore_ref::<Reenter>(ptr(me)).err();
            let other = *R.restore_ref::<u64>(ptr(self.other)).unwrap();
            let g = R.restore_ref::<u64>(ptr(self.other)).unwrap();
            let busy = R.restore::<u64>(ptr(self.other)).err();
            drop(g);
            let fresh: Vec<_> = (0..40u64).map(|i| R.save(i)).collect();
            for (i, f) in fresh.into_iter().enumerate() {
                assert_eq!(R.take::<u64>(f), Ok(i as u64));
            }
            let _ = self
                .log
                .send((mine, other, busy, std::thread::current().id()));
        }
    }
    let other = R.save(7u64) as usize;
    for _ in 0..rounds(50, 3) {
        let (tx, rx) = mpsc::channel();
        let cell = Arc::new(AtomicUsize::new(0));
        let me = R.save(Reenter {
            me: cell.clone(),
            other,
            log: tx,
        }) as usize;
        cell.store(me, Ordering::SeqCst);
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let g = R.restore_ref::<Reenter>(ptr(me)).unwrap();
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            drop(g);
            std::thread::current().id()
        });
        ready_rx.recv().unwrap();
        assert_eq!(R.unref(ptr(me)), Ok(()));
        assert!(rx.try_recv().is_err(), "dropped under a reader");
        go_tx.send(()).unwrap();
        let reader_id = reader.join().unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, (Some(Error::Stale), 7, Some(Error::Busy), reader_id));
        assert!(rx.try_recv().is_err(), "dropped twice");
    }
    assert_eq!(R.take::<u64>(ptr(other)), Ok(7));
}

static TL: once_cell::sync::Lazy<Registry> = once_cell::sync::Lazy::new(Registry::new);

thread_local! {
    static EARLY: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
    static HELD: RefCell<Vec<SharedGuard<'static, u64>>> = const { RefCell::new(Vec::new()) };
    static LATE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// Thread-local destructors in every order relative to the crate's own
/// (record lease, free cache flush, owner id): a guard kept in a
/// thread-local, and restore/restore_ref/take/unref/save from destructors
/// registered before and after the crate's, never wait for themselves,
/// and another thread gets through afterwards.
#[test]
fn registry_calls_from_thread_local_destructors_in_every_order() {
    let _w = watchdog("registry_calls_from_thread_local_destructors_in_every_order");
    let r = &*TL;
    for order in 0..rounds(6, 6) {
        let p = r.save(10u64) as usize;
        let q = r.save(20u64) as usize;
        let (tx, rx) = mpsc::channel::<Vec<Result<u64, Error>>>();
        let tx2 = tx.clone();
        let body = move || {
            let mut out = Vec::new();
            out.push(TL.restore_ref::<u64>(ptr(p)).map(|g| *g));
            out.push(TL.restore::<u64>(ptr(p)).map(|g| *g));
            out.push(TL.take::<u64>(ptr(p)));
            // Churn the free cache and records from the destructor.
            for i in 0..20u64 {
                let h = TL.save(i);
                let g = TL.restore_ref::<u64>(h).map(|g| *g);
                out.push(g);
                out.push(TL.unref(h).map(|()| 0));
            }
            out.push(TL.restore_ref::<u64>(ptr(q)).map(|g| *g));
            let _ = tx.send(out);
        };
        std::thread::spawn(move || {
            // Order of first use decides the order of destruction
            // (reverse on Linux, but every permutation is tried).
            let early = order % 2 == 0;
            let held_first = order / 2 == 0;
            let held_last = order / 2 == 2;
            let f: Box<dyn FnOnce()> = Box::new(body);
            if held_first {
                HELD.with(|h| h.borrow_mut().push(TL.restore_ref::<u64>(ptr(q)).unwrap()));
            }
            if early {
                EARLY.with(|e| e.borrow_mut().0 = Some(f));
            } else {
                let _ = TL.save(1u8); // touch the crate's thread-locals first
                let _ = TL.restore_ref::<u64>(ptr(q)).unwrap();
                LATE.with(|e| e.borrow_mut().0 = Some(f));
            }
            if !held_first && !held_last {
                HELD.with(|h| h.borrow_mut().push(TL.restore_ref::<u64>(ptr(q)).unwrap()));
            }
            assert_eq!(*TL.restore_ref::<u64>(ptr(p)).unwrap(), 10);
            if held_last {
                HELD.with(|h| h.borrow_mut().push(TL.restore_ref::<u64>(ptr(q)).unwrap()));
            }
            drop(tx2);
        })
        .join()
        .unwrap();
        let out = rx.recv_timeout(Duration::from_secs(15)).unwrap();
        assert_eq!(out[0], Ok(10), "order {order}: {out:?}");
        assert_eq!(out[1], Ok(10), "order {order}: {out:?}");
        assert_eq!(out[2], Ok(10), "order {order}: {out:?}");
        for pair in out[3..out.len() - 1].chunks(2) {
            assert!(
                pair[0].is_ok() && pair[1] == Ok(0),
                "order {order}: {out:?}"
            );
        }
        assert_eq!(*out.last().unwrap(), Ok(20), "order {order}: {out:?}");
        // The thread is gone: its guard of q (if its thread-local was
        // destroyed) is released and a writer here gets through.
        *r.restore::<u64>(ptr(q)).unwrap() += 1;
        assert_eq!(r.take::<u64>(ptr(q)), Ok(21));
    }
}

/// A thread exits holding a forgotten record borrow; then many new
/// threads use records (the dead one is never reused) and writers on
/// other handles are never blocked by it; the held handle's writers are
/// (documented), and it is `Busy`-free for readers.
#[test]
fn forgotten_record_at_thread_exit_then_many_threads() {
    let _w = watchdog("forgotten_record_at_thread_exit_then_many_threads");
    let r = Registry::new();
    let stuck = r.save(1u64) as usize;
    let hs: Vec<usize> = (0..4u64).map(|i| r.save(i) as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for &h in &hs {
                drop(r.restore_ref::<u64>(ptr(h)).unwrap());
            }
            std::mem::forget(r.restore_ref::<u64>(ptr(stuck)).unwrap());
            std::mem::forget(r.restore_ref::<u64>(ptr(stuck)).unwrap());
        });
    });
    for round in 0..rounds(40, 3) {
        let barrier = Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let gs: Vec<_> = hs
                        .iter()
                        .map(|&h| r.restore_ref::<u64>(ptr(h)).unwrap())
                        .collect();
                    assert_eq!(*r.restore_ref::<u64>(ptr(stuck)).unwrap(), 1);
                    barrier.wait();
                    drop(gs);
                });
            }
            barrier.wait();
            // Writers wait for both threads' records, then get through.
            for &h in &hs {
                *r.restore::<u64>(ptr(h)).unwrap() += 1;
            }
        });
        for (i, &h) in hs.iter().enumerate() {
            assert_eq!(
                *r.restore_ref::<u64>(ptr(h)).unwrap(),
                i as u64 + round as u64 + 1
            );
        }
    }
    assert_eq!(r.unref(ptr(stuck)), Ok(()));
}

/// restore_ref, restore, take, unref and retain racing on one handle from
/// four threads: the value is dropped exactly once, a take returns it at
/// most once, and reads see it whole.
#[test]
fn racing_readers_writers_take_unref_retain_drop_once() {
    let _w = watchdog("racing_readers_writers_take_unref_retain_drop_once");
    let r = Registry::new();
    for round in 0..rounds(300, 4) {
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save(Once(drops.clone(), round as u64)) as usize;
        let taken = AtomicUsize::new(0);
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (r, barrier, taken) = (&r, &barrier, &taken);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..8 {
                        match (t + i + round) % 5 {
                            0 | 1 => {
                                if let Ok(g) = r.restore_ref::<Once>(ptr(p)) {
                                    assert_eq!(g.1, round as u64);
                                    let g2 = r.restore_ref::<Once>(ptr(p));
                                    assert!(matches!(g2, Ok(_) | Err(Error::Stale)));
                                }
                            }
                            2 => {
                                if let Ok(g) = r.restore::<Once>(ptr(p)) {
                                    assert_eq!(g.1, round as u64);
                                }
                            }
                            3 => {
                                if r.retain(ptr(p)).is_ok() {
                                    let _ = r.unref(ptr(p));
                                }
                            }
                            _ => match r.take::<Once>(ptr(p)) {
                                Ok(v) => {
                                    taken.fetch_add(1, Ordering::SeqCst);
                                    drop(v);
                                }
                                Err(Error::Stale | Error::Retained) => {}
                                Err(e) => panic!("take: {e:?}"),
                            },
                        }
                    }
                });
            }
        });
        let _ = r.unref(ptr(p));
        while r.unref(ptr(p)).is_ok() {}
        assert_eq!(drops.load(Ordering::SeqCst), 1, "round {round}");
        assert!(taken.load(Ordering::SeqCst) <= 1);
    }
    assert!(r.is_empty());
}

/// lend and scope nested, with panics in callbacks, foreign handles with
/// equal integers, and a scope's handle used after its scope while
/// another lend is active on the thread.
#[test]
fn lend_and_scope_nesting_panics_and_foreign_handles() {
    let _w = watchdog("lend_and_scope_nesting_panics_and_foreign_handles");
    let a = Registry::new();
    let b = Registry::new();
    let pa = a.save(1u32);
    let pb = b.save(2u32);
    let mut late = None;
    let mut state = vec![1];
    let out = a.lend::<u32, _>(pa, || {
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.scope(&mut state, |s| {
                late = Some(s as usize);
                // Panic in a callback: caught, poisons the scope.
                let first = a.with(s, |_: &mut Vec<i32>| -> () { panic!("boom") });
                assert_eq!(first.err(), Some(Error::Panicked));
                assert_eq!(
                    a.with(s, |v: &mut Vec<i32>| v.len()).err(),
                    Some(Error::Panicked)
                );
                // The outer lend is still claimable from inside the scope.
                *a.restore::<u32>(pa).unwrap() += 1;
                // The same integer on another registry is not the scope.
                assert!(b.with(s, |_: &mut Vec<i32>| ()).is_err());
                assert!(b.restore::<u32>(s).is_err());
                // Nested lend of b's handle, and a nested scope.
                b.lend::<u32, _>(pb, || {
                    let mut inner = 5u8;
                    a.scope(&mut inner, |t| {
                        assert_eq!(a.with(t, |x: &mut u8| *x), Ok(5));
                        assert_eq!(
                            a.with(s, |_: &mut Vec<i32>| ()).err(),
                            Some(Error::Panicked)
                        );
                        *b.restore::<u32>(pb).unwrap() += 1;
                        let g = b.restore::<u32>(pb).unwrap();
                        assert_eq!(b.restore::<u32>(pb).err(), Some(Error::Busy));
                        drop(g);
                    })
                    .unwrap();
                })
                .unwrap();
            })
        }));
        // The scope resumes the callback's panic after its body.
        let payload = resumed.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        // The lend survived the unwind through the scope inside it.
        *a.restore::<u32>(pa).unwrap() += 0;
        7
    });
    assert_eq!(out, Ok(7));
    // After its scope, the scope's handle is stale, with another lend
    // active on this thread.
    let s = late.unwrap();
    a.lend::<u32, _>(pa, || {
        assert_eq!(
            a.with(ptr(s), |_: &mut Vec<i32>| ()).err(),
            Some(Error::Stale)
        );
        assert_eq!(a.with(ptr(s), |_: &mut u32| ()).err(), Some(Error::Stale));
        assert!(a.restore::<u32>(ptr(s)).is_err());
        assert_eq!(*a.restore::<u32>(pa).unwrap(), 2);
    })
    .unwrap();
    assert_eq!(a.take::<u32>(pa), Ok(2));
    assert_eq!(b.take::<u32>(pb), Ok(3));
}

/// restore_ref under a lend and a lend under restore_ref on the same
/// thread: `Busy`, never a wait for oneself; from another thread, a wait.
#[test]
fn restore_ref_and_lend_on_one_thread() {
    let _w = watchdog("restore_ref_and_lend_on_one_thread");
    let r = Registry::new();
    let p = r.save(3u64);
    r.lend::<u64, _>(p, || {
        assert_eq!(r.restore_ref::<u64>(p).err(), Some(Error::Busy));
        let g = r.restore::<u64>(p).unwrap();
        assert_eq!(r.restore_ref::<u64>(p).err(), Some(Error::Busy));
        drop(g);
    })
    .unwrap();
    let g = r.restore_ref::<u64>(p).unwrap();
    assert_eq!(r.lend::<u64, _>(p, || ()).err(), Some(Error::Busy));
    let p_addr = p as usize;
    std::thread::scope(|s| {
        let t = s.spawn(|| r.lend::<u64, _>(ptr(p_addr), || 1).unwrap());
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
        drop(g);
        assert_eq!(t.join().unwrap(), 1);
    });
    assert_eq!(r.take::<u64>(p), Ok(3));
}

/// Save/unref storms from many short-lived threads (each thread's free
/// cache gives its indices back at exit): no two live handles ever share
/// a slot, checked by restoring every live handle and comparing values.
#[test]
fn save_unref_storm_never_hands_an_index_out_twice() {
    let _w = watchdog("save_unref_storm_never_hands_an_index_out_twice");
    let r = Registry::new();
    let next = AtomicUsize::new(0);
    let live = std::sync::Mutex::new(Vec::<(usize, u64)>::new());
    for _ in 0..rounds(20, 2) {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for i in 0..rounds(200, 10) {
                        let v = next.fetch_add(1, Ordering::Relaxed) as u64;
                        mine.push((r.save(v) as usize, v));
                        if i % 3 == 0 {
                            let (h, v) = mine.swap_remove(i % mine.len());
                            assert_eq!(r.take::<u64>(ptr(h)), Ok(v));
                        }
                        if i % 7 == 0 && !mine.is_empty() {
                            let (h, _) = mine.pop().unwrap();
                            assert_eq!(r.unref(ptr(h)), Ok(()));
                        }
                    }
                    // Keep some alive past the thread's exit.
                    live.lock().unwrap().extend(mine.drain(..mine.len() / 2));
                    for (h, v) in mine {
                        assert_eq!(r.take::<u64>(ptr(h)), Ok(v));
                    }
                });
            }
        });
        let live = live.lock().unwrap();
        let mut idx = HashSet::new();
        for &(h, v) in live.iter() {
            assert_eq!(*r.restore_ref::<u64>(ptr(h)).unwrap(), v);
            assert!(idx.insert(h & INDEX_MASK), "two live handles share a slot");
        }
        assert_eq!(r.len(), live.len());
    }
    for (h, v) in live.into_inner().unwrap() {
        assert_eq!(r.take::<u64>(ptr(h)), Ok(v));
    }
    assert!(r.is_empty());
}

/// A `Drop` that saves (refilling this thread's free cache) while the
/// value is being dropped by an `unref` in the middle of a save storm,
/// and values whose drops unref other values recursively.
#[test]
fn saves_from_drops_during_a_storm() {
    let _w = watchdog("saves_from_drops_during_a_storm");
    // The global registry: the one with per-thread free caches.
    #[allow(non_snake_case)]
    fn S() -> &'static Registry {
        Registry::global()
    }
    struct Chain(Option<usize>, usize);
    impl Drop for Chain {
        fn drop(&mut self) {
            let fresh: Vec<_> = (0..70u64)
                .map(|i| (S().save(i + self.1 as u64) as usize, i + self.1 as u64))
                .collect();
            if let Some(next) = self.0 {
                assert_eq!(S().unref(ptr(next)), Ok(()));
            }
            let mut seen = HashSet::new();
            for (h, i) in fresh {
                assert!(seen.insert(h));
                assert_eq!(S().take::<u64>(ptr(h)), Ok(i));
            }
        }
    }
    for _ in 0..rounds(10, 1) {
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let mut prev = None;
                    for i in 0..rounds(30, 4) {
                        prev = Some(S().save(Chain(prev, i)) as usize);
                    }
                    let storm: Vec<_> = (0..100u64).map(|i| (S().save(i) as usize, i)).collect();
                    assert_eq!(S().unref(ptr(prev.unwrap())), Ok(()));
                    for (h, i) in storm {
                        assert_eq!(*S().restore_ref::<u64>(ptr(h)).unwrap(), i);
                        assert_eq!(S().take::<u64>(ptr(h)), Ok(i));
                    }
                });
            }
        });
    }
}

/// An exclusive borrow (a lend, or a plain guard) of a shared-mode slot
/// unrefs the value while other threads keep trying `restore_ref` (their
/// record borrows retract on `EXCL`): the orphan is dropped exactly once,
/// when the exclusive borrow ends or by a retracting reader, never under
/// a reader.
#[test]
fn unref_under_an_exclusive_borrow_of_a_shared_mode_slot() {
    let _w = watchdog("unref_under_an_exclusive_borrow_of_a_shared_mode_slot");
    let r = Registry::new();
    for round in 0..rounds(200, 3) {
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save(Once(drops.clone(), 9)) as usize;
        // Shared mode first.
        drop(r.restore_ref::<Once>(ptr(p)).unwrap());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        match r.restore_ref::<Once>(ptr(p)) {
                            Ok(g) => assert_eq!(g.1, 9),
                            Err(Error::Stale) => break,
                            Err(e) => panic!("restore_ref: {e:?}"),
                        }
                    }
                });
            }
            if round % 2 == 0 {
                r.lend::<Once, _>(ptr(p), || {
                    assert_eq!(r.restore::<Once>(ptr(p)).unwrap().1, 9);
                    assert_eq!(r.unref(ptr(p)), Ok(()));
                    assert_eq!(r.restore::<Once>(ptr(p)).err(), Some(Error::Stale));
                    assert_eq!(drops.load(Ordering::SeqCst), 0);
                })
                .unwrap();
            } else {
                let g = r.restore::<Once>(ptr(p)).unwrap();
                assert_eq!(r.unref(ptr(p)), Ok(()));
                assert_eq!(r.restore_ref::<Once>(ptr(p)).err(), Some(Error::Stale));
                assert_eq!(drops.load(Ordering::SeqCst), 0);
                drop(g);
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert!(r.is_empty());
}

/// `scope_sync` with readers on other threads before, during and after
/// the scope's end: the scope waits for every record reader, and no
/// callback runs after it returned.
#[test]
fn scope_sync_end_waits_for_record_readers() {
    let _w = watchdog("scope_sync_end_waits_for_record_readers");
    let r = Registry::new();
    for _ in 0..rounds(50, 2) {
        let ended = AtomicBool::new(false);
        let state = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let p = rx.lock().unwrap().recv().unwrap();
                    loop {
                        let got = r.with_ref(ptr(p), |st: &AtomicUsize| {
                            assert!(!ended.load(Ordering::SeqCst), "a callback after the scope");
                            // Nested, and past a record's capacity.
                            let inner = r.with_ref(ptr(p), |st2: &AtomicUsize| {
                                st2.fetch_add(1, Ordering::SeqCst)
                            });
                            assert!(inner.is_ok());
                            st.load(Ordering::SeqCst)
                        });
                        match got {
                            Ok(_) => {}
                            Err(Error::Stale) => break,
                            Err(e) => panic!("with_ref: {e:?}"),
                        }
                    }
                });
            }
            r.scope_sync(&state, |p| {
                for _ in 0..3 {
                    tx.send(p as usize).unwrap();
                }
                while state.load(Ordering::SeqCst) < rounds(30, 2) {
                    std::thread::yield_now();
                }
            })
            .unwrap();
            ended.store(true, Ordering::SeqCst);
        });
    }
}

thread_local! {
    static CHURN_EARLY: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
    static CHURN_LATE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// The global registry's per-thread free cache: storms of save/unref/take
/// from many short-lived threads, some of whose saves and unrefs run in
/// thread-local destructors before and after the cache's `Flush`, and
/// some of whose handles outlive their thread. No index is ever handed
/// out twice: every live handle restores to its own value, and no two
/// live handles share a slot index.
#[test]
fn global_free_cache_storm_with_teardown_saves() {
    let _w = watchdog("global_free_cache_storm_with_teardown_saves");
    static NEXT: AtomicUsize = AtomicUsize::new(1 << 20);
    let live = Arc::new(std::sync::Mutex::new(Vec::<(usize, u64)>::new()));
    let fresh = || NEXT.fetch_add(1, Ordering::Relaxed) as u64;
    for wave in 0..rounds(15, 2) {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let live = live.clone();
                std::thread::spawn(move || {
                    let churn =
                        move |keep: bool, live: Arc<std::sync::Mutex<Vec<(usize, u64)>>>| {
                            let mut mine = Vec::new();
                            for i in 0..rounds(150, 8) {
                                let v = fresh();
                                mine.push((handle_registry::save(v) as usize, v));
                                if i % 2 == 1 {
                                    let (h, v) = mine.swap_remove((i * 7) % mine.len());
                                    if i % 4 == 1 {
                                        assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
                                    } else {
                                        assert_eq!(handle_registry::unref(ptr(h)), Ok(()));
                                    }
                                }
                            }
                            if keep {
                                live.lock().unwrap().extend(mine.drain(..mine.len() / 2));
                            }
                            for (h, v) in mine {
                                assert_eq!(
                                    *handle_registry::restore_ref::<u64>(ptr(h)).unwrap(),
                                    v
                                );
                                assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
                            }
                        };
                    let (l1, l2, l3) = (live.clone(), live.clone(), live.clone());
                    // Registered before the crate's thread-locals: destroyed
                    // after them (the cache closed).
                    if (t + wave) % 2 == 0 {
                        CHURN_LATE
                            .with(|c| c.borrow_mut().0 = Some(Box::new(move || churn(true, l1))));
                    }
                    churn(true, l2);
                    // Registered after: destroyed before `Flush`.
                    CHURN_EARLY
                        .with(|c| c.borrow_mut().0 = Some(Box::new(move || churn(true, l3))));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let live = live.lock().unwrap();
        let mut idx = HashSet::new();
        for &(h, v) in live.iter() {
            assert_eq!(*handle_registry::restore_ref::<u64>(ptr(h)).unwrap(), v);
            assert!(
                idx.insert(h & INDEX_MASK),
                "two live handles share a slot index"
            );
        }
    }
    let all = std::mem::take(&mut *live.lock().unwrap());
    for (h, v) in all {
        assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
    }
}

struct Panicky;

impl Drop for Panicky {
    fn drop(&mut self) {
        panic!("value drop");
    }
}

/// A shared guard dropped while its thread unwinds (a callback's panic)
/// is the last borrower of an unreffed value whose `Drop` panics: the
/// guard's release drops the value during the unwind. Aborted the process
/// (a panic out of a destructor during unwinding) until `dispose` caught
/// a value's panic while the thread unwinds.
#[test]
fn shared_guard_settling_a_panicking_drop_while_unwinding() {
    if !in_child("shared_guard_settling_a_panicking_drop_while_unwinding") {
        return;
    }
    let r = Registry::new();
    let p = r.save(Panicky) as usize;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = r.restore_ref::<Panicky>(ptr(p)).unwrap();
        assert_eq!(r.unref(ptr(p)), Ok(()));
        panic!("callback");
    }));
    assert!(out.is_err());
    assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
}

/// The same with an exclusive guard (the in-word path, unchanged today).
#[test]
fn exclusive_guard_releasing_a_panicking_orphan_while_unwinding() {
    if !in_child("exclusive_guard_releasing_a_panicking_orphan_while_unwinding") {
        return;
    }
    let r = Registry::new();
    let p = r.save(Panicky) as usize;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = r.restore::<Panicky>(ptr(p)).unwrap();
        assert_eq!(r.unref(ptr(p)), Ok(()));
        panic!("callback");
    }));
    assert!(out.is_err());
    assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
}

/// A value retained once per thread; every thread reads it through its
/// record, then drops its reference, racing the others' record releases:
/// the last `unref` and the last release settle it exactly once.
#[test]
fn retained_value_last_unref_races_record_releases() {
    let _w = watchdog("retained_value_last_unref_races_record_releases");
    let r = Registry::new();
    for round in 0..rounds(300, 3) {
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save(Once(drops.clone(), 3)) as usize;
        for _ in 0..3 {
            r.retain(ptr(p)).unwrap();
        }
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (r, barrier) = (&r, &barrier);
                s.spawn(move || {
                    let g = r.restore_ref::<Once>(ptr(p)).unwrap();
                    barrier.wait();
                    if (t + round) % 2 == 0 {
                        assert_eq!(r.unref(ptr(p)), Ok(()));
                        assert_eq!(g.1, 3);
                        drop(g);
                    } else {
                        assert_eq!(g.1, 3);
                        drop(g);
                        assert_eq!(r.unref(ptr(p)), Ok(()));
                    }
                    assert!(matches!(
                        r.restore_ref::<Once>(ptr(p)).map(|g| g.1),
                        Ok(3) | Err(Error::Stale)
                    ));
                });
            }
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1, "round {round}");
        assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
    }
    assert!(r.is_empty());
}

/// Odd calls inside a lend on its own thread: take/retain/unref of the
/// lent handle, a lent guard that escapes the lend after the value was
/// unreffed (it then owns the orphan), nested re-lends.
#[test]
fn odd_calls_inside_a_lend_and_an_escaping_guard() {
    let _w = watchdog("odd_calls_inside_a_lend_and_an_escaping_guard");
    let r = Registry::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let p = r.save(Once(drops.clone(), 1));
    let mut escaped = None;
    r.lend::<Once, _>(p, || {
        assert_eq!(r.take::<Once>(p).err(), Some(Error::Busy));
        r.lend::<Once, _>(p, || {
            let g = r.restore::<Once>(p).unwrap();
            assert_eq!(r.restore::<Once>(p).err(), Some(Error::Busy));
            assert_eq!(r.restore_ref::<Once>(p).err(), Some(Error::Busy));
            escaped = Some(g);
        })
        .unwrap();
        // The inner lend's guard escaped: the outer lend is still claimed.
        assert_eq!(r.restore::<Once>(p).err(), Some(Error::Busy));
        assert_eq!(r.unref(p), Ok(()));
        assert_eq!(r.restore::<Once>(p).err(), Some(Error::Stale));
        assert_eq!(escaped.as_ref().unwrap().1, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
    })
    .unwrap();
    // The escaped guard owns the orphan: dropped when it goes.
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(escaped.as_ref().unwrap().1, 1);
    drop(escaped);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.unref(p), Err(Error::Stale));
    assert!(r.is_empty());

    // Retain inside a lend: the fast path's word changes, claims still work.
    let q = r.save(5u32);
    r.lend::<u32, _>(q, || {
        r.retain(q).unwrap();
        *r.restore::<u32>(q).unwrap() += 1;
        assert_eq!(r.unref(q), Ok(()));
        *r.restore::<u32>(q).unwrap() += 1;
    })
    .unwrap();
    assert_eq!(r.take::<u32>(q), Ok(7));
}
