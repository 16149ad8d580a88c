//! Per-thread facts the registry needs to tell "mine" from "another's".
//!
//! Waiting for a borrow held by another thread is correct; waiting for one
//! held by the *same* thread never ends. So an exclusive borrow records a
//! small **owner id** in the slot's state word (see [`slot`](crate::slot)),
//! and each thread remembers which handles it holds **shared** borrows of
//! (there may be many readers, so the slot cannot name them). That list
//! covers the shared borrows counted in the slot's word; most shared
//! borrows are held in the thread's reader record instead (see
//! [`readers`](crate::readers)), which answers the same question exactly.
//!
//! Both survive thread-local teardown, because a value's `Drop` or a
//! guard stored in a thread-local may use the registry while the thread's
//! other thread-locals are being destroyed, in an order the caller
//! controls:
//!
//! * The owner id lives in a `const` thread-local without a destructor,
//!   so it stays readable to the end. A second thread-local gives the id
//!   back to the pool when it is destroyed; the thread keeps using it for
//!   the rest of its teardown, so a new thread may briefly share it. Two
//!   threads sharing an id can only get [`Busy`](crate::Error::Busy) where
//!   one should have waited, never a wait for themselves. The lease's
//!   destructor first stops the thread's parked borrows (see
//!   [`parked`](crate::parked)): a shared id must never enter one. If the
//!   thread is still inside a parked borrow then, its id is kept for good
//!   instead of given back.
//! * An id is compared only with words read while the thread had it. A
//!   reader needs no id, so a thread may read a word before it has one;
//!   the id it is given afterwards may be the very id that word names,
//!   given back meanwhile by an owner that released and exited. Taking
//!   that borrow for its own would answer `Busy` where it should wait, so
//!   the slow path asks [`known_id`] once, before it looks at the word,
//!   and never assigns.
//! * The shared-borrow list keeps its first [`INLINE`] entries in a
//!   destructor-free thread-local and spills the rest to a vector. If the
//!   vector is destroyed while it still lists borrows, the thread can no
//!   longer prove a reader is not itself, and answers `Busy` instead of
//!   waiting (never a deadlock); a `restore_ref` that cannot record its
//!   borrow is refused with `Busy`.
//! * Entries are handle values, which are unique for the life of the
//!   process (generations never repeat in a slot, and a reused registry id
//!   starts past its predecessor's generations), so an entry left behind by
//!   a forgotten guard can only ever match that same, still-borrowed handle.

use std::cell::{Cell, RefCell};

use crate::sync::thread_locals;
use crate::sync::unmodelled::Mutex;
use slab::Slab;

use crate::slot::MAX_BORROW;

/// Owner ids in use: slab key + 1 (0 means "none yet").
static IDS: Mutex<Slab<()>> = Mutex::new(Slab::new());

/// Shared borrows recorded without touching the heap.
const INLINE: usize = 8;

/// Gives the owner id back when the thread's thread-locals are destroyed.
struct Lease;

impl Drop for Lease {
    fn drop(&mut self) {
        // `ID` has no destructor, so this never fails but under loom, whose
        // thread-locals all go at once (the id is then not given back).
        let id = ID.try_with(Cell::get).unwrap_or(0);
        // Parking stops first; an id whose thread is still inside a parked
        // borrow is never given back (see `parked`).
        let inside = crate::parked::disable();
        if id != 0 && id != EXHAUSTED && !inside {
            IDS.lock().remove(id - 1);
        }
    }
}

/// The spilled shared-borrow entries.
struct Spill(RefCell<Vec<usize>>);

impl Drop for Spill {
    fn drop(&mut self) {
        if !self.0.get_mut().is_empty() {
            SPILL_LOST.with(|lost| lost.set(true));
        }
    }
}

/// The id of a thread that found no id free (more live threads than the
/// borrow field counts; only conceivable on 32-bit targets).
const EXHAUSTED: usize = usize::MAX;

/// The owner id every reclaim (`Mode::Reclaim`) takes, on any thread.
/// Never handed to a thread. A reclaim needs no id to tell its own
/// borrows (it has none of that handle) and holds its borrow only until
/// it removed the value, running no caller's code meanwhile, so reclaims
/// may share it. It must not be this thread's id either: during
/// thread-local teardown a new thread may share that id, and would take
/// the reclaim's borrow for its own and answer `Busy` instead of waiting
/// (`tests/adversarial_scope.rs`, a worker calling back into a scope that
/// ends in a destructor). And a thread without an id (every id taken)
/// must still end its scopes.
pub(crate) const RECLAIMER: usize = MAX_BORROW;

thread_locals! {
    static ID: Cell<usize> = const { Cell::new(0) };
    static LEASE: Lease = const { Lease };
    static SHARED: [Cell<usize>; INLINE] = const { [const { Cell::new(0) }; INLINE] };
    static SPILL: Spill = const { Spill(RefCell::new(Vec::new())) };
    static SPILL_LOST: Cell<bool> = const { Cell::new(false) };
}

/// This thread's owner id, in `1..MAX_BORROW`, or `None` when every id is
/// taken by a live thread.
#[inline]
pub(crate) fn id() -> Option<usize> {
    match ID.with(Cell::get) {
        0 => assign_id(),
        EXHAUSTED => None,
        id => Some(id),
    }
}

/// Makes this thread one that found every id taken, as on a 32-bit target
/// with more live threads than ids.
#[cfg(test)]
pub(crate) fn exhaust_for_test() {
    assert_eq!(ID.with(Cell::get), 0, "the thread has an id already");
    ID.with(|cell| cell.set(EXHAUSTED));
}

/// Gives this thread the owner id `id` of another live thread, as a new
/// thread may share the id of one in thread-local teardown.
#[cfg(test)]
pub(crate) fn share_id_for_test(id: usize) {
    assert_eq!(ID.with(Cell::get), 0, "the thread has an id already");
    ID.with(|cell| cell.set(id));
}

/// This thread's owner id if it has one already: the fast path's check,
/// which never assigns.
#[inline]
pub(crate) fn known_id() -> Option<usize> {
    match ID.with(Cell::get) {
        0 | EXHAUSTED => None,
        id => Some(id),
    }
}

#[cold]
fn assign_id() -> Option<usize> {
    let id = {
        let mut ids = IDS.lock();
        let key = ids.insert(());
        if key + 1 >= RECLAIMER {
            ids.remove(key);
            EXHAUSTED
        } else {
            key + 1
        }
    };
    ID.with(|cell| cell.set(id));
    // Registers the lease's destructor. During teardown the lease may be
    // gone already: the id is then kept for good (one per such thread).
    if LEASE.try_with(|_| ()).is_ok() && id != EXHAUSTED {
        crate::parked::enable(id);
    }
    (id != EXHAUSTED).then_some(id)
}

/// Records a shared borrow of `handle`; false if it cannot be recorded
/// (the spill vector is gone), in which case the caller must not borrow.
pub(crate) fn push_shared(handle: usize) -> bool {
    let inline = SHARED.with(|cells| {
        cells
            .iter()
            .find(|c| c.get() == 0)
            .map(|c| c.set(handle))
            .is_some()
    });
    inline
        || SPILL
            .try_with(|s| s.0.try_borrow_mut().map(|mut v| v.push(handle)).is_ok())
            .unwrap_or(false)
}

/// Forgets one shared borrow of `handle`.
pub(crate) fn pop_shared(handle: usize) {
    let inline = SHARED.with(|cells| {
        cells
            .iter()
            .find(|c| c.get() == handle)
            .map(|c| c.set(0))
            .is_some()
    });
    if !inline {
        let _ = SPILL.try_with(|s| {
            if let Ok(mut v) = s.0.try_borrow_mut() {
                if let Some(i) = v.iter().rposition(|&h| h == handle) {
                    v.swap_remove(i);
                }
            }
        });
    }
}

/// Whether this thread may hold a shared borrow of `handle`: true when it
/// does, and when it can no longer tell.
pub(crate) fn may_hold_shared(handle: usize) -> bool {
    SHARED.with(|cells| cells.iter().any(|c| c.get() == handle))
        || SPILL
            .try_with(|s| s.0.try_borrow().map_or(true, |v| v.contains(&handle)))
            .unwrap_or_else(|_| SPILL_LOST.with(Cell::get))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_among_live_threads_and_stable() {
        let here = id().unwrap();
        assert_eq!(id(), Some(here));
        let barrier = std::sync::Barrier::new(2);
        let there = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let t = id();
                barrier.wait();
                t
            });
            barrier.wait();
            h.join().unwrap()
        });
        assert_ne!(there, Some(here));
        assert!(there.unwrap() < MAX_BORROW);
    }

    #[test]
    fn shared_list_tracks_borrows_past_the_inline_entries() {
        let handles: Vec<usize> = (1..=INLINE + 3).map(|h| h * 8 + 1).collect();
        for &h in &handles {
            assert!(push_shared(h));
            assert!(push_shared(h));
        }
        for &h in &handles {
            assert!(may_hold_shared(h));
            pop_shared(h);
            assert!(may_hold_shared(h));
            pop_shared(h);
            assert!(!may_hold_shared(h));
        }
    }
}
