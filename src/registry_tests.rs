//! Unit tests of the registry's semantics, one promise each. They are pure
//! Rust and run under Miri too.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};

/// A handle moved across threads as an integer, back to a `void*`.
fn ptr(p: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(p)
}

/// Counts drops and remembers which thread did the last one.
struct Tally {
    drops: Arc<AtomicUsize>,
    dropped_on: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
}

impl Tally {
    fn new() -> (Tally, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        let tally = Tally {
            drops: drops.clone(),
            dropped_on: Arc::default(),
        };
        (tally, drops)
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        *self.dropped_on.lock().unwrap() = Some(std::thread::current().id());
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn round_trip_and_len() {
    let r = Registry::new();
    let a = r.save(String::from("a"));
    let b = r.save(2u32);
    assert_ne!(a, b);
    assert_eq!(r.len(), 2);
    r.restore::<String>(a).unwrap().push('!');
    assert_eq!(*r.restore::<String>(a).unwrap(), "a!");
    assert_eq!(r.take::<u32>(b), Ok(2));
    r.unref(a).unwrap();
    assert!(r.is_empty());
}

#[test]
fn every_bad_handle_has_its_error() {
    let r = Registry::new();
    let other = Registry::new();
    let p = r.save(1u8);
    let d = LAYOUT.decode(handle::from_ptr(p)).unwrap();
    let forge = |index: usize, generation: u32| {
        handle::to_ptr(LAYOUT.encode(index, d.registry, generation))
    };
    assert_eq!(r.check::<u8>(std::ptr::null_mut()), Err(Error::Null));
    // An index never used.
    assert_eq!(
        r.check::<u8>(forge(d.index + 5, d.generation)),
        Err(Error::Invalid)
    );
    assert_eq!(
        r.check::<u8>(forge(LAYOUT.max_index(), 0)),
        Err(Error::Invalid)
    );
    // A generation the slot has not reached yet.
    assert_eq!(
        r.check::<u8>(forge(d.index, d.generation + 1)),
        Err(Error::Invalid)
    );
    // A real heap address passed as if it were a handle.
    let boxed = Box::into_raw(Box::new(0u64));
    assert!(r.check::<u8>(boxed.cast()).is_err());
    // SAFETY: from `Box::into_raw` above, not freed.
    drop(unsafe { Box::from_raw(boxed) });
    assert_eq!(other.check::<u8>(p), Err(Error::WrongRegistry));
    assert_eq!(
        r.check::<i8>(p),
        Err(Error::WrongType {
            expected: "i8",
            found: "u8"
        })
    );
    r.unref(p).unwrap();
    assert_eq!(r.check::<u8>(p), Err(Error::Stale));
    // The generation of the value that would come next was never issued.
    assert_eq!(
        r.check::<u8>(forge(d.index, d.generation + 1)),
        Err(Error::Invalid)
    );
}

#[test]
fn a_stale_handle_never_reaches_the_slots_next_value() {
    let r = Registry::new();
    let old = r.save(1u32);
    let o = LAYOUT.decode(handle::from_ptr(old)).unwrap();
    r.unref(old).unwrap();
    // The most recently freed index is the next one handed out.
    let fresh: Vec<_> = (0..4u32).map(|i| r.save(i)).collect();
    let reused = fresh
        .iter()
        .map(|&p| (p, LAYOUT.decode(handle::from_ptr(p)).unwrap()))
        .find(|(_, n)| n.index == o.index)
        .expect("the freed slot is reused");
    assert_eq!(reused.1.generation, o.generation + 1);
    assert_eq!(r.restore::<u32>(old).err(), Some(Error::Stale));
    assert!(r.take::<u32>(reused.0).is_ok());
    for p in fresh.into_iter().filter(|&p| p != reused.0) {
        r.unref(p).unwrap();
    }
}

#[test]
fn handles_saved_back_to_back_never_share_a_line_pair() {
    for r in [&Registry::new(), Registry::global()] {
        let handles: Vec<_> = (0..8).map(|i| r.save(i)).collect();
        let slots: Vec<usize> = handles
            .iter()
            .map(|&p| {
                let (slot, _) = r.lookup(p).unwrap();
                slot as *const Slot as usize
            })
            .collect();
        for pair in slots.windows(2) {
            assert!(pair[0].abs_diff(pair[1]) >= 128, "{slots:x?}");
        }
        for p in handles {
            r.unref(p).unwrap();
        }
    }
}

#[test]
fn an_exhausted_generation_retires_the_slot() {
    let r = Registry::new();
    let p = r.save(1u8);
    let last = r.set_generation(p, LAYOUT.max_generation());
    assert_eq!(r.check::<u8>(last), Ok(()));
    r.unref(last).unwrap();
    assert_eq!(r.len(), 0, "a retired slot is not live");
    assert_eq!(r.check::<u8>(last), Err(Error::Stale));
    let next = r.save(2u8);
    let (l, n) = (
        LAYOUT.decode(handle::from_ptr(last)).unwrap(),
        LAYOUT.decode(handle::from_ptr(next)).unwrap(),
    );
    assert_ne!(l.index, n.index, "a retired slot is never handed out again");
    assert!(r.leak_report().entries().iter().all(|e| e.handle() != last));
    r.unref(next).unwrap();
}

#[test]
fn same_thread_conflicts_are_busy_not_deadlocks() {
    let r = Registry::new();
    let p = r.save(5u32);
    {
        let _g = r.restore::<u32>(p).unwrap();
        assert_eq!(r.restore::<u32>(p).err(), Some(Error::Busy));
        assert_eq!(r.restore_ref::<u32>(p).err(), Some(Error::Busy));
        assert_eq!(r.take::<u32>(p), Err(Error::Busy));
    }
    {
        let a = r.restore_ref::<u32>(p).unwrap();
        let b = r.restore_ref::<u32>(p).unwrap();
        assert_eq!(*a + *b, 10);
        assert_eq!(r.restore::<u32>(p).err(), Some(Error::Busy));
        assert_eq!(r.take::<u32>(p), Err(Error::Busy));
    }
    assert_eq!(r.take::<u32>(p), Ok(5), "a refused take changes nothing");
}

#[test]
fn another_threads_borrow_makes_us_wait() {
    let r = Registry::new();
    let p = r.save(0u32) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let r = &r;
        s.spawn(move || {
            let mut g = r.restore::<u32>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            // Whatever the scheduling, the waiter must see this write.
            for _ in 0..100 {
                std::thread::yield_now();
            }
            *g = 42;
        });
        held_rx.recv().unwrap();
        let g = r.restore::<u32>(ptr(p)).unwrap();
        assert_eq!(*g, 42);
    });
    r.unref(ptr(p)).unwrap();
}

#[test]
fn take_waits_for_another_threads_borrow_and_gets_its_writes() {
    let r = Registry::new();
    let p = r.save(vec![1]) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let r = &r;
        s.spawn(move || {
            let mut g = r.restore::<Vec<i32>>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            std::thread::yield_now();
            g.push(2);
        });
        held_rx.recv().unwrap();
        assert_eq!(r.take::<Vec<i32>>(ptr(p)), Ok(vec![1, 2]));
    });
    assert!(r.is_empty());
}

#[test]
fn unref_while_borrowed_defers_the_drop_to_the_guard() {
    let r = Registry::new();
    let (tally, drops) = Tally::new();
    let dropped_on = tally.dropped_on.clone();
    let p = r.save(tally) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (unreffed_tx, unreffed_rx) = mpsc::channel();
    let guard_thread = std::thread::scope(|s| {
        let r = &r;
        let h = s.spawn(move || {
            let g = r.restore::<Tally>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            unreffed_rx.recv().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 0, "still borrowed");
            drop(g);
            assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped on release");
            std::thread::current().id()
        });
        held_rx.recv().unwrap();
        r.unref(ptr(p)).unwrap();
        // New lookups fail at once, without waiting for the borrow.
        assert_eq!(r.check::<Tally>(ptr(p)), Err(Error::Stale));
        assert_eq!(r.restore::<Tally>(ptr(p)).err(), Some(Error::Stale));
        assert_eq!(r.len(), 0);
        unreffed_tx.send(()).unwrap();
        h.join().unwrap()
    });
    assert_eq!(*dropped_on.lock().unwrap(), Some(guard_thread));
}

#[test]
fn unref_inside_its_own_borrow_drops_at_release() {
    let r = Registry::new();
    let (tally, drops) = Tally::new();
    let p = r.save(tally);
    let g = r.restore::<Tally>(p).unwrap();
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(g);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn orphaned_shared_value_is_dropped_by_the_last_reader() {
    let r = Registry::new();
    let (tally, drops) = Tally::new();
    let p = r.save(tally);
    let a = r.restore_ref::<Tally>(p).unwrap();
    let b = r.restore_ref::<Tally>(p).unwrap();
    r.unref(p).unwrap();
    drop(a);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(b);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_waiter_wakes_with_stale_when_the_value_goes_away() {
    let r = Registry::new();
    let p = r.save(1u8) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let r = &r;
        s.spawn(move || {
            let g = r.restore::<u8>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            r.unref(ptr(p)).unwrap();
            drop(g);
        });
        held_rx.recv().unwrap();
        let waiter = s.spawn(move || r.restore::<u8>(ptr(p)).map(|g| *g));
        // Let the waiter park (or not: either way it must end with Stale
        // or, had it won the race, never; the borrower only unrefs later).
        std::thread::yield_now();
        go_tx.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), Err(Error::Stale));
    });
}

#[test]
fn readers_run_together_across_threads() {
    let r = Registry::new();
    let p = r.save(AtomicUsize::new(0)) as usize;
    let all_in = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (r, all_in) = (&r, &all_in);
            s.spawn(move || {
                let g = r.restore_ref::<AtomicUsize>(ptr(p)).unwrap();
                // All three hold a shared guard at once, or this never returns.
                all_in.wait();
                g.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let total = r.take::<AtomicUsize>(ptr(p)).unwrap();
    assert_eq!(total.into_inner(), 3);
}

#[test]
fn user_code_runs_without_the_lock() {
    struct Reentrant<'r> {
        registry: &'r Registry,
        other: *mut c_void,
    }
    // SAFETY (test only): the raw handle is an integer, not a pointer.
    unsafe impl Send for Reentrant<'_> {}
    impl Drop for Reentrant<'_> {
        fn drop(&mut self) {
            // A value's Drop using the registry it lives in.
            let extra = self.registry.save(9u8);
            self.registry.unref(extra).unwrap();
            self.registry.unref(self.other).unwrap();
        }
    }
    // `Reentrant` borrows its registry, so it must be `'static`: the global one.
    let r = Registry::global();
    let other = r.save(String::from("other"));
    let p = r.save(Reentrant { registry: r, other });
    {
        // Code holding a guard saves, restores and unrefs other handles.
        let _g = r.restore::<Reentrant<'static>>(p).unwrap();
        let q = r.save(1u64);
        *r.restore::<u64>(q).unwrap() += 1;
        assert_eq!(r.take::<u64>(q), Ok(2));
        assert_eq!(*r.restore::<String>(other).unwrap(), "other");
    }
    r.unref(p).unwrap();
    assert_eq!(r.check::<String>(other), Err(Error::Stale));
}

struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop panicked");
    }
}

#[test]
fn a_panicking_drop_leaves_the_registry_usable() {
    let r = Registry::new();
    let keep = r.save(7u8);
    let p = r.save(PanicsOnDrop);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.unref(p)));
    assert!(caught.is_err());
    assert_eq!(r.check::<PanicsOnDrop>(p), Err(Error::Stale));
    assert_eq!(r.len(), 1);
    let q = r.save(8u8);
    assert_eq!(r.take::<u8>(q), Ok(8));
    assert_eq!(r.take::<u8>(keep), Ok(7));
}

#[test]
fn dropping_a_registry_drops_every_value_even_after_a_panic() {
    let r = Registry::new();
    let (t1, d1) = Tally::new();
    let (t2, d2) = Tally::new();
    r.save(t1);
    r.save(PanicsOnDrop);
    r.save(t2);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(r)));
    assert!(caught.is_err());
    assert_eq!(d1.load(Ordering::SeqCst), 1);
    assert_eq!(d2.load(Ordering::SeqCst), 1);
}

#[test]
fn payloads_that_panic_when_dropped_never_abort_a_registry_drop() {
    use crate::panic::tests::NestedPanic;
    let r = Registry::new();
    let (t, dropped) = Tally::new();
    r.save(NestedPanic(2));
    r.save(NestedPanic(2));
    r.save(t);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(r)));
    assert!(caught.is_err());
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    // The resumed payload panics when dropped, outside any unwind.
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(caught))).is_err());
}

#[test]
fn c_unref_swallows_everything() {
    let p = crate::save(PanicsOnDrop);
    crate::c_unref(p);
    crate::c_unref(p);
    crate::c_unref(std::ptr::null_mut());
    crate::c_unref(handle::to_ptr(u64::MAX));
    assert_eq!(crate::unref(p), Err(Error::Stale));
}

#[test]
fn a_dropped_registrys_handles_never_resolve_in_its_successor() {
    let old = Registry::new();
    let handles: Vec<_> = (0..4u32).map(|i| old.save(i)).collect();
    drop(old);
    let new = Registry::new();
    let fresh: Vec<_> = (0..4u32).map(|i| new.save(i + 10)).collect();
    for p in &handles {
        assert!(new.check::<u32>(*p).is_err());
    }
    for p in fresh {
        new.unref(p).unwrap();
    }
}

#[test]
fn leak_report_names_type_and_site() {
    let r = Registry::new();
    let line = line!() + 1;
    let p = r.save(vec![1u8]);
    let report = r.leak_report();
    let [entry] = report.entries() else {
        panic!("one entry expected: {report}")
    };
    assert_eq!(entry.handle(), p);
    assert_eq!(entry.type_name(), "alloc::vec::Vec<u8>");
    assert_eq!(entry.site().line(), line);
    assert!(entry.site().file().ends_with("registry_tests.rs"));
    r.unref(p).unwrap();
}

#[test]
fn owning_handle_unrefs_once() {
    let r = Registry::new();
    let (tally, drops) = Tally::new();
    let h = r.handle(tally);
    let p = h.as_ptr();
    drop(h);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.check::<Tally>(p), Err(Error::Stale));

    // C freed it through a destroy-notify first: drop must not double-free.
    let h = Handle::new(5u8);
    crate::c_unref(h.as_ptr());
    assert_eq!(h.into_inner(), Err(Error::Stale));

    // Busy through a raw-pointer guard: the value still does not outlive it.
    let (tally, drops) = Tally::new();
    let h = r.handle(tally);
    let g = r.restore::<Tally>(h.as_ptr()).unwrap();
    assert_eq!(h.into_inner().err(), Some(Error::Busy));
    drop(g);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(r.is_empty());
}

#[test]
fn handle_from_ptr_checks_type() {
    let p = crate::save(1u16);
    assert!(matches!(
        Handle::<u8>::from_ptr(p),
        Err(Error::WrongType { .. })
    ));
    assert_eq!(Handle::<u16>::from_ptr(p).unwrap().into_inner(), Ok(1));
}

#[test]
#[cfg_attr(miri, ignore)] // thread-local destruction order is the point
fn restore_ref_from_a_thread_local_destructor_never_leaks_a_borrow() {
    struct LateReader(usize);
    impl Drop for LateReader {
        fn drop(&mut self) {
            // Whatever the destruction order, this must not panic, and any
            // borrow it takes must be released.
            let _ = Registry::global().restore_ref::<u8>(ptr(self.0));
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<LateReader>> = const { std::cell::RefCell::new(None) };
    }
    let p = crate::save(3u8);
    let raw = p as usize;
    std::thread::spawn(move || {
        // Registered first, so destroyed after the registry's own list.
        LATE.with(|l| *l.borrow_mut() = Some(LateReader(raw)));
        drop(Registry::global().restore_ref::<u8>(ptr(raw)).unwrap());
    })
    .join()
    .unwrap();
    assert_eq!(crate::take::<u8>(p), Ok(3), "no borrow leaked");
}

#[test]
fn a_stack_or_heap_address_is_invalid_not_another_registry() {
    let local = 0u64;
    let boxed = Box::new(0u64);
    for p in [
        &local as *const u64 as *mut c_void,
        &*boxed as *const u64 as *mut c_void,
    ] {
        let p = handle::to_ptr(handle::from_ptr(p));
        with_no_registry_created(|| match LAYOUT.decode(handle::from_ptr(p)) {
            Ok(d) if is_live(d.registry) => {} // another test's registry: any error
            _ => assert_eq!(crate::restore::<u64>(p).err(), Some(Error::Invalid)),
        });
        assert!(crate::unref(p).is_err());
    }
    let nobody = handle::to_ptr(LAYOUT.encode(0, LAYOUT.max_registry(), 0));
    assert_eq!(crate::unref(nobody), Err(Error::Invalid));
    let r = Registry::new();
    let p = r.save(1u8);
    assert_eq!(crate::unref(p), Err(Error::WrongRegistry));
    r.unref(p).unwrap();
    let id = r.id();
    drop(r);
    // Its registry is gone: the handle names no live registry, unless a
    // test running beside this one has taken the id since.
    with_no_registry_created(|| {
        if !is_live(id) {
            assert_eq!(crate::unref(p), Err(Error::Invalid));
        }
    });
}

/// Runs `f` while no registry can be created, so that an id `f` sees dead
/// stays dead until it returns: other tests run at the same time and take
/// ids, and one taken between a test's look at `is_live` and its lookup
/// turned the expected `Invalid` into `WrongRegistry` (9 runs of the lib
/// tests in 200).
fn with_no_registry_created(f: impl FnOnce()) {
    let _pool = IDS.lock();
    f();
}

#[test]
fn try_save_returns_full_with_the_value() {
    assert_eq!(
        Error::Full.to_string(),
        "no room: the registry or the group is full"
    );
    let r = Registry::new();
    let p = r.try_save(String::from("x")).unwrap();
    assert_eq!(r.take::<String>(p).unwrap(), "x");
}

#[test]
fn refused_lookups_are_counted_and_the_last_ones_kept() {
    let r = Registry::new();
    let p = r.save(String::from("state"));
    // A trampoline naming the wrong type: silent to C, visible here.
    assert!(r.restore::<u32>(p).is_err());
    assert!(r.restore_ref::<u32>(p).is_err());
    assert_eq!(r.unref(std::ptr::null_mut()), Err(Error::Null));
    let f = r.failures();
    assert_eq!(f.total(), 3);
    let wrong = Error::WrongType {
        expected: "",
        found: "",
    };
    assert_eq!(f.count(&wrong), 2);
    assert_eq!(f.count(&Error::Null), 1);
    let first = f.recent()[0];
    assert_eq!((first.handle(), first.expected()), (p, "u32"));
    assert!(first
        .to_string()
        .contains("holds a `alloc::string::String`, not a `u32`"));
    // Lent restores count too.
    r.lend::<String, _>(p, || assert!(r.restore::<u8>(p).is_err()))
        .unwrap();
    assert_eq!(r.failures().count(&wrong), 3);
    // Successes are not counted, and other registries keep their own.
    r.restore::<String>(p).unwrap();
    assert_eq!(r.failures().total(), 4);
    assert_eq!(Registry::new().failures().total(), 0);
    r.unref(p).unwrap();
}

#[test]
fn unref_fast_path_drops_and_frees_the_index_for_this_threads_next_save() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let r = Registry::global();
    let drops = Arc::new(AtomicUsize::new(0));
    let p = r.save(Counted(drops.clone()));
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert_eq!(r.unref(p), Err(Error::Stale));
    // The index went to this thread's cache, and comes back first.
    let q = r.save(7u64);
    assert_eq!(index_of(q), index_of(p));
    assert_eq!(r.restore::<u64>(p).err(), Some(Error::Stale));
    // A value without drop glue: freed without the drop guard.
    r.unref(q).unwrap();
    let again = r.save(8u64);
    assert_eq!(index_of(again), index_of(p));
    assert_eq!(r.take::<u64>(again), Ok(8));
    assert_eq!(drops.load(Ordering::Relaxed), 1);
}

#[test]
fn a_reused_id_refuses_old_handles_in_the_untouched_tail_of_a_page() {
    let a = Registry::new();
    let id = a.id();
    // Two batches of indices: the second reaches past the first 32.
    let old: Vec<_> = (0..40u32).map(|i| a.save(i)).collect();
    let tail = old
        .iter()
        .copied()
        .filter(|&p| index_of(p) >= 32)
        .collect::<Vec<_>>();
    assert!(!tail.is_empty());
    let early = old[0];
    drop(a);
    let b = Registry::new();
    if b.id() != id {
        return; // another test took the id meanwhile
    }
    let p = b.save(7u32);
    // `b` handed out one batch: the old tail indices are in its page 0 but
    // past its high-water mark, so their slots are still all zero.
    let handed = b.free.high_water();
    for &q in &tail {
        assert!(index_of(q) >= handed);
        if !cfg!(loom) {
            assert_eq!(
                b.pages
                    .get(index_of(q))
                    .unwrap()
                    .state
                    .load(Ordering::Relaxed),
                0
            );
        }
        assert_eq!(b.restore::<u32>(q).err(), Some(Error::Stale));
        assert_eq!(b.restore_ref::<u32>(q).err(), Some(Error::Stale));
        assert_eq!(b.check::<u32>(q), Err(Error::Stale));
        assert_eq!(b.unref(q), Err(Error::Stale));
        assert_eq!(b.take::<u32>(q), Err(Error::Stale));
    }
    // An old handle whose index `b` handed out is stale too.
    assert!(index_of(early) < handed);
    assert_eq!(b.restore::<u32>(early).err(), Some(Error::Stale));
    // A new save into the tail is at `b`'s base generation, past the old
    // handles'; they stay stale next to it.
    let fresh: Vec<_> = (0..40u32).map(|i| b.save(i)).collect();
    for &q in &tail {
        assert_eq!(b.unref(q), Err(Error::Stale));
    }
    assert!(b.leak_report().entries().len() == 41);
    assert_eq!(b.take::<u32>(p), Ok(7));
    for q in fresh {
        b.unref(q).unwrap();
    }
    assert!(b.is_empty());
}

#[test]
fn a_thread_without_an_owner_id_still_ends_its_scopes() {
    // More live threads than the id field holds (4094 on 32-bit targets),
    // simulated. A scope's end used to abort there: its reclaim had no id.
    let r = Registry::new();
    let (entered, inside) = std::sync::mpsc::channel();
    let returned = &std::sync::atomic::AtomicBool::new(false);
    let r = &r;
    std::thread::scope(|s| {
        s.spawn(move || {
            crate::thread::exhaust_for_test();
            let p = r.save(1u8);
            assert_eq!(r.restore::<u8>(p).err(), Some(Error::Busy));
            assert_eq!(r.scope_sync(&2u8, |_| 6), Ok(6));
            let mut state = 0u32;
            let out = r.scope_send(&mut state, |p| {
                let h = p as usize;
                // Another thread, with an id, is inside a callback when
                // the body returns: the scope's end waits for it.
                s.spawn(move || {
                    r.with(ptr(h), |n: &mut u32| {
                        entered.send(()).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        *n += 1;
                        returned.store(true, Ordering::SeqCst);
                    })
                    .unwrap();
                });
                inside.recv().unwrap();
                7
            });
            assert_eq!(out, Ok(7));
            assert!(returned.load(Ordering::SeqCst), "the scope ended first");
            assert_eq!(state, 1);
        });
    });
    assert_eq!(r.len(), 1);
}

#[cfg(not(loom))]
#[test]
fn the_global_registrys_static_first_page_is_its_directorys_page_0() {
    // `slot` answers from the static page for the global registry's first
    // indices and from the directory for every other index and registry:
    // both must name the same slot, or a save and a restore would disagree.
    let g = Registry::global();
    let p = g.save(5u8);
    for index in 0..FIRST + 2 {
        let (fast, directory) = (g.slot(index), g.pages.get(index));
        assert_eq!(
            fast.map(|s| s as *const Slot),
            directory.map(|s| s as *const Slot)
        );
        if let Some(slot) = fast {
            assert_eq!(g.pages.index_of(slot), Some(index));
        }
    }
    assert!(g.slot(0).is_some(), "the global's page 0 is always there");
    assert_eq!(g.take::<u8>(p), Ok(5));
    // Another registry's page 0 is its own, allocated on its first save.
    let r = Registry::new();
    assert!(r.slot(0).is_none());
    let q = r.save(6u8);
    assert!(!std::ptr::eq(r.slot(0).unwrap(), g.slot(0).unwrap()));
    assert_eq!(r.take::<u8>(q), Ok(6));
}

/// A reference count at its maximum refuses one more `retain` rather than
/// wrap or saturate (either would drop the value while references are
/// out), and every reference still counts.
#[cfg(not(loom))]
#[test]
fn retain_at_the_maximum_count_is_full() {
    let r = Registry::new();
    let p = r.save(5u8);
    r.retain(p).unwrap();
    // Stands for usize::MAX - 2 more retains.
    *r.counts.lock().get_mut(&handle::from_ptr(p)).unwrap() = usize::MAX;
    assert_eq!(r.retain(p), Err(Error::Full));
    assert_eq!(r.ref_count(p), Ok(usize::MAX));
    r.unref(p).unwrap();
    assert_eq!(r.ref_count(p), Ok(usize::MAX - 1));
    assert_eq!(*r.restore::<u8>(p).unwrap(), 5);
    // Back to two references, then out.
    *r.counts.lock().get_mut(&handle::from_ptr(p)).unwrap() = 2;
    r.unref(p).unwrap();
    r.unref(p).unwrap();
    assert_eq!(r.check::<u8>(p), Err(Error::Stale));
}

/// A reader that had no owner id when it read the word does not take an
/// exclusive borrow named there for its own once it has an id: the owner
/// may have released, exited and given the id back since, to this very
/// reader. It waits and borrows, never `Busy` (`tests/readers.rs`'s
/// `mixed_readers_writers_and_unref` once answered `Busy` so).
#[test]
fn an_id_taken_after_the_word_was_read_never_owns_its_borrow() {
    let r = Registry::new();
    let p = r.save(7u32);
    let (slot, generation) = r.lookup(p).unwrap();
    let free = slot.state.load(Ordering::SeqCst);
    let h = p as usize;
    for _ in 0..3 {
        // The owner's thread takes an id and exits; the id pool hands the
        // id it gave back to the next thread that asks (unless another
        // test's thread asks first, when this round proves nothing).
        let owner = std::thread::spawn(|| thread::id().unwrap()).join().unwrap();
        let stale = slot::exclusive(generation, owner);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(thread::known_id(), None);
                let borrowed = r.borrow_slow(ptr(h), slot, generation, Mode::Shared, 0, stale);
                assert_eq!(borrowed, Ok(free + slot::READER));
                // SAFETY: the shared borrow just taken.
                unsafe { r.release_shared(slot) };
            });
        });
    }
    assert_eq!(r.take::<u32>(p), Ok(7));
}

/// A scope's end waits for every other thread's call, even one of a
/// thread that shares this thread's owner id (as a new thread may while
/// this one is in thread-local teardown): the reclaim's borrow names no
/// thread's id, so that call waits and then finds the handle `Stale`,
/// never `Busy`.
#[test]
fn a_thread_sharing_the_owner_id_waits_for_a_scopes_end() {
    let r = Registry::new();
    let (handle_tx, handle_rx) = mpsc::channel::<(usize, usize)>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r = &r;
    std::thread::scope(|s| {
        // The scope's thread: its end reclaims the record while a reader
        // still holds it, and waits there for the reader.
        s.spawn(move || {
            let id = crate::thread::id().unwrap();
            r.scope_sync(&0u32, |p| {
                let h = p as usize;
                s.spawn(move || {
                    r.with_ref(ptr(h), |_: &u32| {
                        entered_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                    })
                    .unwrap();
                });
                entered_rx.recv().unwrap();
                handle_tx.send((h, id)).unwrap();
            })
            .unwrap();
        });
        let (h, id) = handle_rx.recv().unwrap();
        let (slot, _) = r.lookup(ptr(h)).unwrap();
        while slot.state.load(Ordering::SeqCst) & EXCLUSIVE == 0 {
            std::thread::yield_now();
        }
        // The reclaim holds its borrow and waits for the reader.
        let sharer = s.spawn(move || {
            crate::thread::share_id_for_test(id);
            r.with_ref(ptr(h), |_: &u32| ())
        });
        while slot.state.load(Ordering::SeqCst) & WAITING == 0 && !sharer.is_finished() {
            std::thread::yield_now();
        }
        go_tx.send(()).unwrap();
        assert_eq!(sharer.join().unwrap(), Err(Error::Stale));
    });
    assert!(r.is_empty());
}
