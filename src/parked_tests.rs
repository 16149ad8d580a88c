//! Parked borrows through the public operations, one promise each. Pure
//! Rust: Miri runs them with `SeqCst` fences for the barrier pair.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::STREAK;
use crate::slot::{self, PARKED};
use crate::{thread, Error, Registry};

/// A handle moved across threads as an integer, back to a `void*`.
fn ptr(p: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(p)
}

/// Counts its drops (also used by `restore_with`'s tests).
pub(crate) struct Counted(pub u64, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn counted(r: &Registry) -> (*mut c_void, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (r.save(Counted(0, drops.clone())), drops)
}

/// Restores `p` on this thread until it parks; panics if it does not.
fn park(r: &Registry, p: *mut c_void) {
    for _ in 0..STREAK {
        r.restore::<Counted>(p).unwrap().0 += 1;
    }
    assert!(is_parked(r, p), "{:#x}", r.word(p));
}

fn is_parked(r: &Registry, p: *mut c_void) -> bool {
    r.word(p) & PARKED != 0
}

/// Whether this thread and target park at all (not where `membarrier` is
/// missing); the tests that need parking return early otherwise.
pub(crate) fn parks() -> bool {
    thread::id().is_some() && super::parking_id().is_some()
}

/// A registry holding a `Counted` that this thread parked, with its drop
/// count; `None` where nothing parks.
fn parked_value() -> Option<(Arc<Registry>, *mut c_void, Arc<AtomicUsize>)> {
    let r = Arc::new(Registry::new());
    let (p, drops) = counted(&r);
    if !parks() {
        return None;
    }
    park(&r, p);
    Some((r, p, drops))
}

/// Runs `f` on a new thread with the registry and the handle, and joins it.
fn elsewhere<R: Send + 'static>(
    r: &Arc<Registry>,
    p: *mut c_void,
    f: impl FnOnce(&Registry, *mut c_void) -> R + Send + 'static,
) -> R {
    let (r, h) = (r.clone(), p.addr());
    std::thread::spawn(move || f(&r, ptr(h))).join().unwrap()
}

#[test]
fn a_handle_restored_in_a_row_parks_and_stays_parked() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    let word = r.word(p);
    for _ in 0..10 {
        r.restore::<Counted>(p).unwrap().0 += 1;
    }
    // Entered and left without touching the word.
    assert_eq!(r.word(p), word);
    assert_eq!(r.restore::<Counted>(p).unwrap().0, u64::from(STREAK) + 10);
    // A wrong type is still refused, and leaves the park alone.
    assert!(matches!(r.restore::<u8>(p), Err(Error::WrongType { .. })));
    assert_eq!(r.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 10);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.len(), 0);
}

#[test]
fn a_handle_alternating_with_another_does_not_park() {
    let r = Registry::new();
    let (p, _) = counted(&r);
    let (q, _) = counted(&r);
    for _ in 0..2 * STREAK {
        r.restore::<Counted>(p).unwrap();
        r.restore::<Counted>(q).unwrap();
    }
    assert!(!is_parked(&r, p) && !is_parked(&r, q));
}

#[test]
fn a_nested_restore_or_take_of_a_parked_handle_is_busy() {
    let Some((r, p, _)) = parked_value() else {
        return;
    };
    let guard = r.restore::<Counted>(p).unwrap();
    assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
    assert_eq!(r.take::<Counted>(p).err(), Some(Error::Busy));
    drop(guard);
    assert!(r.take::<Counted>(p).is_ok());
}

#[test]
fn another_thread_steals_a_parked_handle() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    elsewhere(&r, p, |r, p| r.restore::<Counted>(p).unwrap().0 += 100);
    assert!(!is_parked(&r, p));
    assert_eq!(r.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 100);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn after_a_steal_the_owner_parks_again_only_after_a_new_streak() {
    let Some((r, p, _)) = parked_value() else {
        return;
    };
    elsewhere(&r, p, |r, p| drop(r.restore::<Counted>(p).unwrap()));
    for _ in 1..STREAK {
        r.restore::<Counted>(p).unwrap();
        assert!(!is_parked(&r, p), "parked again before a new streak");
    }
    r.restore::<Counted>(p).unwrap();
    assert!(is_parked(&r, p));
}

#[test]
fn a_stealer_waits_while_the_owner_is_inside() {
    let Some((r, p, _)) = parked_value() else {
        return;
    };
    let mut guard = r.restore::<Counted>(p).unwrap();
    let (started, waiting) = mpsc::channel();
    let h = p.addr();
    let r2 = r.clone();
    let stealer = std::thread::spawn(move || {
        started.send(()).unwrap();
        let mut g = r2.restore::<Counted>(ptr(h)).unwrap();
        g.0 *= 2;
        g.0
    });
    waiting.recv().unwrap();
    std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
    guard.0 = 7; // the stealer must see this, so must not be in yet
    drop(guard);
    assert_eq!(stealer.join().unwrap(), 14);
}

#[test]
fn restore_ref_and_retain_of_a_parked_handle() {
    let r = Arc::new(Registry::new());
    let p = r.save(AtomicUsize::new(0));
    if !parks() {
        return;
    }
    for _ in 0..STREAK {
        r.restore::<AtomicUsize>(p).unwrap();
    }
    assert!(is_parked(&r, p));
    // The owner's own shared borrow unparks it (no barrier needed).
    r.restore_ref::<AtomicUsize>(p)
        .unwrap()
        .fetch_add(1, Ordering::SeqCst);
    assert!(!is_parked(&r, p));
    for _ in 0..STREAK {
        r.restore::<AtomicUsize>(p).unwrap();
    }
    assert!(is_parked(&r, p));
    // `retain` adds `COUNTED` to the parked word; the owner's next restore
    // then takes the ordinary path, and no longer parks it.
    r.retain(p).unwrap();
    for _ in 0..2 * STREAK {
        r.restore::<AtomicUsize>(p)
            .unwrap()
            .fetch_add(1, Ordering::SeqCst);
    }
    assert!(!is_parked(&r, p));
    r.unref(p).unwrap();
    // Another thread's shared borrow.
    elsewhere(&r, p, |r, p| {
        r.restore_ref::<AtomicUsize>(p)
            .unwrap()
            .fetch_add(1, Ordering::SeqCst)
    });
    let n = r.take::<AtomicUsize>(p).unwrap().into_inner();
    assert_eq!(n, 2 + 2 * STREAK as usize);
}

#[test]
fn an_unref_from_another_thread_drops_a_parked_value() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    elsewhere(&r, p, |r, p| r.unref(p).unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
    assert_eq!(r.len(), 0);
    // The index serves again.
    let (q, _) = counted(&r);
    assert_eq!(slot::generation(r.word(q)), slot::generation(r.word(p)));
}

#[test]
fn an_unref_while_the_owner_is_inside_leaves_the_drop_to_its_leave() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    let guard = r.restore::<Counted>(p).unwrap();
    elsewhere(&r, p, |r, p| r.unref(p).unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 0, "still borrowed");
    assert_eq!(guard.0, u64::from(STREAK));
    drop(guard);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.len(), 0);
}

/// An unref racing the owner's next `restore`: the owner has listed the
/// slot (step 2's first half) when the unref reads its record, so the
/// unref returns at once and leaves the drop to the owner. The owner then
/// finds the orphan, leaves, and drops the value on its own thread, in a
/// `restore` that answers `Stale` (README: "`unref` of a borrowed value").
#[test]
fn an_unref_racing_the_owners_restore_leaves_the_drop_to_that_restore() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    let (word, slot) = (r.word(p), r.slot_of(p));
    assert!(super::enter(slot::borrow(word), slot));
    elsewhere(&r, p, |r, p| r.unref(p).unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the unref returned first");
    assert!(!crate::registry::still_parked::<Counted>(slot, word));
    r.leave_parked(slot, word);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped by the owner");
    assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
    assert_eq!(r.len(), 0);
}

#[test]
fn the_owner_unrefs_its_parked_handle_outside_or_inside() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let (q, drops) = counted(&r);
    park(&r, q);
    let guard = r.restore::<Counted>(q).unwrap();
    r.unref(q).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(guard);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(r.len(), 0);
}

#[test]
fn a_handle_parked_by_a_thread_that_ended_is_stolen() {
    let r = Arc::new(Registry::new());
    let (p, drops) = counted(&r);
    let parked = elsewhere(&r, p, |r, p| {
        if !parks() {
            return false;
        }
        park(r, p);
        true
    });
    if !parked {
        return;
    }
    assert!(is_parked(&r, p));
    r.restore::<Counted>(p).unwrap().0 += 1;
    assert!(!is_parked(&r, p));
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_forgotten_parked_guard_is_busy_on_its_thread_and_never_reparked() {
    let Some((r, p, drops)) = parked_value() else {
        return;
    };
    std::mem::forget(r.restore::<Counted>(p).unwrap());
    assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
    // The unref orphans it; the value stays with the forgotten guard, as
    // for any forgotten exclusive guard (dropped with the registry).
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Threads that each restore their own handle in runs long enough to park,
/// then the other's (stealing it), with unrefs at the end: every value
/// dropped once, every write counted.
#[test]
fn steals_and_parks_under_load() {
    let rounds = if cfg!(miri) { 2 } else { 200 };
    let r = Arc::new(Registry::new());
    let (a, drops_a) = counted(&r);
    let (b, drops_b) = counted(&r);
    let handles = [a.addr(), b.addr()];
    let threads: Vec<_> = (0..2)
        .map(|me| {
            let r = r.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    for h in [handles[me], handles[1 - me]] {
                        for _ in 0..STREAK + 1 {
                            r.restore::<Counted>(ptr(h)).unwrap().0 += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let expected = 2 * rounds * u64::from(STREAK + 1);
    assert_eq!(r.take::<Counted>(a).unwrap().0, expected);
    assert_eq!(r.take::<Counted>(b).unwrap().0, expected);
    assert_eq!(drops_a.load(Ordering::SeqCst), 1);
    assert_eq!(drops_b.load(Ordering::SeqCst), 1);
}

/// On Linux (and under Miri) parking is on: a silent registration failure
/// would leave every test above trivially passing.
#[test]
#[cfg(any(target_os = "linux", miri))]
fn parking_is_available_here() {
    assert!(parks());
}

// The hot handle: the global registry's shortcut to a parked handle (see
// the module notes). Each test thread has its own.

/// A `Counted` in the global registry that this thread parked and then
/// entered parked, which makes it the thread's hot handle; `None` (nothing
/// saved) where nothing parks.
fn hot_value() -> Option<(*mut c_void, Arc<AtomicUsize>)> {
    if !parks() {
        return None;
    }
    let (p, drops) = counted(Registry::global());
    park(Registry::global(), p);
    crate::restore::<Counted>(p).unwrap().0 += 1;
    assert!(super::hot(p.addr()).is_some(), "not hot");
    Some((p, drops))
}

#[test]
fn the_hot_handle_is_entered_without_touching_the_word_and_keeps_every_check() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    let word = Registry::global().word(p);
    for _ in 0..10 {
        crate::restore::<Counted>(p).unwrap().0 += 1;
    }
    assert_eq!(Registry::global().word(p), word);
    assert!(super::hot(p.addr()).is_some());
    let guard = crate::restore::<Counted>(p).unwrap();
    assert_eq!(crate::restore::<Counted>(p).err(), Some(Error::Busy));
    drop(guard);
    assert!(matches!(
        crate::restore::<u8>(p),
        Err(Error::WrongType { .. })
    ));
    assert_eq!(crate::take::<Counted>(p).unwrap().0, u64::from(STREAK) + 11);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(crate::restore::<Counted>(p).err(), Some(Error::Stale));
}

#[test]
fn a_hot_handle_unreffed_is_stale_and_its_index_serves_the_next_save() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    crate::unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(crate::restore::<Counted>(p).err(), Some(Error::Stale));
    assert!(super::hot(p.addr()).is_none());
    let q = crate::save(Counted(7, drops.clone()));
    assert_eq!(crate::restore::<Counted>(p).err(), Some(Error::Stale));
    assert_eq!(crate::restore::<Counted>(q).unwrap().0, 7);
    crate::unref(q).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn a_stolen_hot_handle_is_restored_by_the_slow_path_and_forgotten() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    let h = p.addr();
    std::thread::spawn(move || crate::restore::<Counted>(ptr(h)).unwrap().0 += 100)
        .join()
        .unwrap();
    assert_eq!(
        crate::restore::<Counted>(p).unwrap().0,
        u64::from(STREAK) + 101
    );
    assert!(super::hot(h).is_none());
    crate::unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn the_hot_handle_nests_inside_another_parked_borrow() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    let (q, _) = counted(Registry::global());
    park(Registry::global(), q);
    let in_q = crate::restore::<Counted>(q).unwrap();
    let in_p = crate::restore::<Counted>(p).unwrap();
    assert_eq!(crate::restore::<Counted>(p).err(), Some(Error::Busy));
    assert_eq!(crate::restore::<Counted>(q).err(), Some(Error::Busy));
    drop((in_p, in_q));
    let r = Registry::global();
    assert!(is_parked(r, p) && is_parked(r, q));
    crate::unref(q).unwrap();
    assert_eq!(crate::take::<Counted>(p).unwrap().0, u64::from(STREAK) + 1);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_lend_of_the_hot_handle_serves_its_restores() {
    let Some((p, _)) = hot_value() else {
        return;
    };
    Registry::global()
        .lend::<Counted, _>(p, || {
            for _ in 0..3 {
                crate::restore::<Counted>(p).unwrap().0 += 1;
            }
        })
        .unwrap();
    crate::restore::<Counted>(p).unwrap().0 += 1;
    assert_eq!(crate::take::<Counted>(p).unwrap().0, u64::from(STREAK) + 5);
}

#[test]
fn null_and_forged_handles_never_take_the_hot_path() {
    std::thread::spawn(|| {
        // A thread without a hot handle: 0 must not match its empty entry.
        assert!(super::hot(0).is_none());
        assert_eq!(
            crate::restore::<Counted>(std::ptr::null_mut()).err(),
            Some(Error::Null)
        );
    })
    .join()
    .unwrap();
    let Some((p, _)) = hot_value() else {
        return;
    };
    assert!(crate::restore::<Counted>(std::ptr::null_mut()).is_err());
    for forged in [p.addr() + 1, p.addr() ^ 1 << (usize::BITS - 1)] {
        assert!(super::hot(forged).is_none());
        assert!(crate::restore::<Counted>(ptr(forged)).is_err());
    }
    crate::unref(p).unwrap();
}

#[test]
fn a_thread_that_stops_parking_forgets_its_hot_handle() {
    std::thread::spawn(|| {
        let Some((p, _)) = hot_value() else {
            return;
        };
        let id = super::parking_id().unwrap();
        assert!(!super::disable(), "inside no parked borrow");
        assert!(super::hot(p.addr()).is_none());
        super::enable(id);
        assert!(super::hot(p.addr()).is_none());
        crate::restore::<Counted>(p).unwrap().0 += 1;
        crate::unref(p).unwrap();
    })
    .join()
    .unwrap();
}

// The hot handle of a registry other than the global one: a second entry,
// tied to the registry's serial (see `Registry::hot_private`).
// Loom builds have no hot handle.
#[cfg(not(all(loom, test)))]
mod private_hot {
    use super::*;

    /// `p`, saved in `r` and restored until parked, then once more, which
    /// makes it the thread's hot handle of `r`.
    fn make_private_hot(r: &Registry, p: *mut c_void) {
        park(r, p);
        r.restore::<Counted>(p).unwrap().0 += 1;
        assert!(r.hot_private(p).is_some(), "not hot");
    }

    #[test]
    fn a_private_registrys_hot_handle_keeps_every_check() {
        if !parks() {
            return;
        }
        let r = Registry::new();
        let (p, drops) = counted(&r);
        make_private_hot(&r, p);
        let word = r.word(p);
        for _ in 0..10 {
            r.restore::<Counted>(p).unwrap().0 += 1;
        }
        assert_eq!(r.word(p), word, "entered without touching the word");
        assert!(r.hot_private(p).is_some());
        // The global registry's entry is apart, and this one is not its.
        assert!(crate::parked::hot(p.addr()).is_none());
        assert!(Registry::global().hot(p).is_none());
        assert_eq!(
            crate::restore::<Counted>(p).err(),
            Some(Error::WrongRegistry)
        );
        let guard = r.restore::<Counted>(p).unwrap();
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
        drop(guard);
        assert!(matches!(r.restore::<u8>(p), Err(Error::WrongType { .. })));
        assert!(r.hot_private(p).is_none(), "a refused enter forgets it");
        assert_eq!(r.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 11);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
    }

    /// `restore_with` reads a private registry's entry on its inline path
    /// too (it once went out of line for every registry but the global
    /// one), with `restore`'s answers.
    #[test]
    fn restore_with_keeps_every_check_through_a_private_hot_handle() {
        if !parks() {
            return;
        }
        let r = Registry::new();
        let (p, drops) = counted(&r);
        make_private_hot(&r, p);
        let word = r.word(p);
        for _ in 0..10 {
            r.restore_with(p, |c: &mut Counted| c.0 += 1).unwrap();
        }
        assert_eq!(r.word(p), word, "entered without touching the word");
        assert!(r.hot_private(p).is_some());
        assert_eq!(
            crate::restore_with(p, |_: &mut Counted| ()),
            Err(Error::WrongRegistry)
        );
        let nested = r.restore_with(p, |_: &mut Counted| {
            r.restore_with(p, |_: &mut Counted| ()).err()
        });
        assert_eq!(nested, Ok(Some(Error::Busy)));
        // The nested enter failed and forgot the entry; the next restore
        // finds the parked word from the index and sets it again.
        r.restore_with(p, |c: &mut Counted| c.0 += 1).unwrap();
        assert!(r.hot_private(p).is_some());
        assert!(matches!(
            r.restore_with(p, |_: &mut u8| ()),
            Err(Error::WrongType { .. })
        ));
        assert!(r.hot_private(p).is_none(), "a refused enter forgets it");
        assert_eq!(r.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 12);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(r.restore_with(p, |_: &mut Counted| ()), Err(Error::Stale));
    }

    #[test]
    fn a_private_and_the_global_hot_handle_are_kept_side_by_side() {
        let Some((g, _)) = hot_value() else {
            return;
        };
        let r = Registry::new();
        let (p, _) = counted(&r);
        make_private_hot(&r, p);
        assert!(
            crate::parked::hot(g.addr()).is_some(),
            "the global entry stays"
        );
        for _ in 0..3 {
            crate::restore::<Counted>(g).unwrap().0 += 1;
            r.restore::<Counted>(p).unwrap().0 += 1;
        }
        assert!(Registry::global().hot(g).is_some() && r.hot_private(p).is_some());
        assert_eq!(crate::take::<Counted>(g).unwrap().0, u64::from(STREAK) + 4);
        assert_eq!(r.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 4);
    }

    #[test]
    fn a_stolen_private_hot_handle_is_restored_by_the_slow_path_and_forgotten() {
        if !parks() {
            return;
        }
        let r = Arc::new(Registry::new());
        let (p, drops) = counted(&r);
        make_private_hot(&r, p);
        let (r2, h) = (r.clone(), p.addr());
        std::thread::spawn(move || r2.restore::<Counted>(ptr(h)).unwrap().0 += 100)
            .join()
            .unwrap();
        assert_eq!(r.restore::<Counted>(p).unwrap().0, u64::from(STREAK) + 101);
        assert!(r.hot_private(p).is_none());
        r.unref(p).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_hot_handle_of_another_registry_is_never_this_ones() {
        if !parks() {
            return;
        }
        let a = Registry::new();
        let b = Registry::new();
        let (p, _) = counted(&a);
        make_private_hot(&a, p);
        assert!(b.hot_private(p).is_none());
        assert_eq!(b.restore::<Counted>(p).err(), Some(Error::WrongRegistry));
        assert!(a.hot_private(p).is_some(), "b's refusal leaves a's entry");
        assert_eq!(a.take::<Counted>(p).unwrap().0, u64::from(STREAK) + 1);
    }

    /// The case the serial exists for: a registry dropped while its handle is
    /// this thread's hot handle, then a registry with its id (and, boxed in
    /// the same size, likely its address) given the old handle. Its pages are
    /// freed: a match would read freed memory, which Miri reports.
    #[test]
    fn a_dropped_registrys_hot_handle_matches_no_later_registry() {
        if !parks() {
            return;
        }
        for _ in 0..3 {
            let old = Box::new(Registry::new());
            let (p, drops) = counted(&old);
            make_private_hot(&old, p);
            drop(old);
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            let new = Box::new(Registry::new());
            assert!(new.hot_private(p).is_none());
            // `Stale` when `new` reuses the id (other tests create registries
            // meanwhile, so it may not), `WrongRegistry` or `Invalid` if not.
            assert!(new.restore::<Counted>(p).is_err());
            assert!(new.restore_with(p, |_: &mut Counted| ()).is_err());
            let (q, _) = counted(&new);
            make_private_hot(&new, q);
            assert_eq!(new.take::<Counted>(q).unwrap().0, u64::from(STREAK) + 1);
        }
    }

    #[test]
    fn a_thread_that_stops_parking_forgets_its_private_hot_handle() {
        std::thread::spawn(|| {
            if !parks() {
                return;
            }
            let r = Registry::new();
            let (p, _) = counted(&r);
            make_private_hot(&r, p);
            let id = crate::parked::parking_id().unwrap();
            assert!(!crate::parked::disable(), "inside no parked borrow");
            assert!(r.hot_private(p).is_none());
            crate::parked::enable(id);
            assert!(r.hot_private(p).is_none());
            r.restore::<Counted>(p).unwrap().0 += 1;
            r.unref(p).unwrap();
        })
        .join()
        .unwrap();
    }
}
