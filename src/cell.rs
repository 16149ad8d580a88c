//! The heap cell that holds one saved value, and its borrow protocol.
//!
//! # Why a cell of our own
//!
//! The slab only stores a thin pointer to each cell. The cell's address
//! never moves, so a [`Guard`](crate::Guard) can keep using it after the
//! registry's lock is released and while the slab grows. That is what lets
//! the registry hold its lock only for the lookup, never while user code
//! runs.
//!
//! # The borrow word
//!
//! `state` is one `AtomicUsize`:
//!
//! ```text
//! EXCLUSIVE set:    [ owner thread token (8-aligned address) | ORPHANED | WAITING | 1 ]
//! EXCLUSIVE clear:  [ reader count << 3                      | ORPHANED | WAITING | 0 ]
//! ```
//!
//! * Acquiring is one compare-exchange, done while the registry's read lock
//!   is held, so the cell cannot be freed under it.
//! * Releasing is one `swap` (exclusive) or `fetch_sub` (shared), done
//!   without any lock.
//! * `WAITING`: a thread may be parked on the registry's condition variable
//!   for this cell's current borrowers. Whoever releases the cell to free
//!   (the exclusive owner, or the last reader) wakes all waiters; the
//!   flag may then linger on the free cell, and the next borrower to take
//!   a free cell clears it, since those waiters were already woken. Waiters never hold a reference
//!   to the cell while parked: they redo the whole lookup when woken, so a
//!   cell freed meanwhile just makes their retry answer `Stale`.
//! * `ORPHANED`: the handle was removed (`unref`) while borrowed. The
//!   remover has already taken the cell out of the slab and handed it over:
//!   the last borrower to release frees it, on its own thread, right after
//!   releasing.
//!
//! The owner token lets a thread recognise its own exclusive borrow and get
//! [`Error::Busy`](crate::Error::Busy) instead of waiting for itself forever.

use std::any::{type_name, Any, TypeId};
use std::cell::UnsafeCell;
use std::panic::Location;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const EXCLUSIVE: usize = 0b001;
pub(crate) const WAITING: usize = 0b010;
pub(crate) const ORPHANED: usize = 0b100;
pub(crate) const READER: usize = 0b1000;
const FLAGS: usize = EXCLUSIVE | WAITING | ORPHANED;
/// Readers beyond this many are refused, so the count can never wrap.
const MAX_READERS: usize = (usize::MAX / 2) & !FLAGS;

/// What the registry needs to know about a cell's value without knowing `T`.
pub(crate) struct VTable {
    pub type_id: fn() -> TypeId,
    pub type_name: fn() -> &'static str,
    /// Frees a cell (and drops its value). The caller must own the cell.
    pub free: unsafe fn(NonNull<Header>),
}

/// The type-erased front of every cell. `#[repr(C)]` and first in
/// [`Cell`], so a `NonNull<Cell<T>>` can be viewed as a `NonNull<Header>`.
#[repr(C)]
pub(crate) struct Header {
    pub state: AtomicUsize,
    pub site: &'static Location<'static>,
    pub vtable: &'static VTable,
}

/// A header followed by the value. Only ever accessed through raw pointers,
/// so that a `&mut T` handed to a guard never overlaps a reference to the
/// header that other threads read.
#[repr(C)]
pub(crate) struct Cell<T> {
    header: Header,
    value: UnsafeCell<T>,
}

impl<T: Any + Send> Cell<T> {
    const VTABLE: VTable = VTable {
        type_id: TypeId::of::<T>,
        type_name: type_name::<T>,
        free: Self::free,
    };

    /// Boxes `value` and leaks the box; the registry owns the result.
    pub fn allocate(value: T, site: &'static Location<'static>) -> NonNull<Header> {
        let cell = Box::new(Cell {
            header: Header {
                state: AtomicUsize::new(0),
                site,
                vtable: &Self::VTABLE,
            },
            value: UnsafeCell::new(value),
        });
        NonNull::from(Box::leak(cell)).cast()
    }

    /// # Safety
    /// `header` came from `Cell::<T>::allocate` and the caller owns it.
    unsafe fn free(header: NonNull<Header>) {
        // SAFETY: the caller guarantees this is a leaked `Box<Cell<T>>`
        // that nobody else references any more.
        drop(unsafe { Box::from_raw(header.cast::<Cell<T>>().as_ptr()) });
    }

    /// Frees the cell and returns its value.
    ///
    /// # Safety
    /// `header` came from `Cell::<T>::allocate` and the caller owns it.
    pub unsafe fn into_value(header: NonNull<Header>) -> T {
        // SAFETY: as for `free`; moving the value out is fine because the
        // box is consumed.
        let cell = unsafe { Box::from_raw(header.cast::<Cell<T>>().as_ptr()) };
        cell.value.into_inner()
    }

    /// A pointer to the value, without creating any reference.
    ///
    /// # Safety
    /// `header` came from `Cell::<T>::allocate` and is still allocated.
    pub unsafe fn value_ptr(header: NonNull<Header>) -> NonNull<T> {
        let cell = header.cast::<Cell<T>>().as_ptr();
        // SAFETY: `cell` points to a live `Cell<T>`; `addr_of_mut!` projects
        // to the field without asserting anything about other fields, and
        // `raw_get` goes through the `UnsafeCell` without a reference.
        unsafe { NonNull::new_unchecked(UnsafeCell::raw_get(ptr::addr_of_mut!((*cell).value))) }
    }
}

/// The header of a live cell, read-only parts.
///
/// # Safety
/// `header` must point to an allocated cell for the returned lifetime.
pub(crate) unsafe fn header<'a>(header: NonNull<Header>) -> &'a Header {
    // SAFETY: `Header` contains only an atomic and immutable fields, which
    // are never mutated through a unique reference after allocation, so a
    // shared reference may coexist with a guard's `&mut T` to the value
    // (a disjoint field).
    unsafe { header.as_ref() }
}

impl Header {
    /// Whether the saved value is a `T`.
    #[inline]
    pub fn holds<T: Any>(&self) -> bool {
        (self.vtable.type_id)() == TypeId::of::<T>()
    }

    /// Frees the cell through its vtable.
    ///
    /// # Safety
    /// The caller owns the cell: it is out of the slab and not borrowed.
    pub unsafe fn free(this: NonNull<Header>) {
        // SAFETY: reading the vtable pointer out before handing `this` over.
        let free = unsafe { this.as_ref() }.vtable.free;
        // SAFETY: ownership is the caller's guarantee.
        unsafe { free(this) }
    }
}

/// What stopped a borrow attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// This thread already holds a conflicting borrow.
    ByThisThread,
    /// Another thread does; the caller may wait. Carries the state seen.
    ByOther(usize),
}

impl Header {
    /// One attempt at an exclusive borrow.
    #[inline]
    pub fn try_exclusive(&self, token: usize) -> Result<(), Blocked> {
        let mut s = self.state.load(Ordering::Relaxed);
        // Retry only while the cell is free: a failed exchange on a free
        // cell is a race with another borrower, not a reason to park.
        while s & !WAITING == 0 {
            match self.state.compare_exchange_weak(
                s,
                token | EXCLUSIVE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => s = now,
            }
        }
        Err(Self::blocker(s, token, self, true))
    }

    /// One attempt at a shared borrow.
    #[inline]
    pub fn try_shared(&self, token: usize) -> Result<(), Blocked> {
        let mut s = self.state.load(Ordering::Relaxed);
        while s & EXCLUSIVE == 0 {
            if s >= MAX_READERS {
                // Only reachable by forgetting guards by the hundred million
                // on a 32-bit target; refuse rather than wrap to "free".
                return Err(Blocked::ByThisThread);
            }
            // A free cell's `WAITING` is stale (see `release_*`): drop it.
            let new = if s & !FLAGS == 0 { READER } else { s + READER };
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => s = now,
            }
        }
        Err(Self::blocker(s, token, self, false))
    }

    /// Classifies a failed attempt from the state `s` that blocked it.
    ///
    /// It must be that very state, not a fresh load: the caller may park
    /// after setting `WAITING` on it, which is only safe if `s` was a
    /// blocking state (a fresh load could see the cell already free, and
    /// nobody would ever wake the parked thread).
    #[cold]
    fn blocker(s: usize, token: usize, this: &Header, exclusive: bool) -> Blocked {
        let mine = if s & EXCLUSIVE != 0 {
            s & !FLAGS == token
        } else {
            exclusive && crate::thread::holds_shared(this as *const Header as usize)
        };
        if mine {
            Blocked::ByThisThread
        } else {
            Blocked::ByOther(s)
        }
    }

    /// Marks the cell as waited on, if it is still in the state `seen`.
    /// Returns false when the state moved on (the caller retries at once).
    pub fn set_waiting(&self, seen: usize) -> bool {
        seen & WAITING != 0
            || self
                .state
                .compare_exchange(seen, seen | WAITING, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The borrow word alone, as a reference to the atomic and nothing else.
///
/// The last operation a thread performs on a cell (a release, or the
/// remover's hand-over) may let another thread free it at once. A
/// `&Header` argument would stay live across that free and cover the
/// header's plain fields, which the aliasing model forbids; a reference to
/// the atomic alone is what `Arc` uses for the same reason.
///
/// # Safety
/// `cell` is allocated when this is called; the caller performs one atomic
/// operation with the result and does not keep it.
unsafe fn state<'a>(cell: NonNull<Header>) -> &'a AtomicUsize {
    // SAFETY: allocated per the caller; `addr_of!` projects to the field
    // without creating a reference to the header.
    unsafe { &*ptr::addr_of!((*cell.as_ptr()).state) }
}

/// Ends an exclusive borrow. Returns the state before, so the caller can
/// wake waiters and free an orphan; it must not touch the cell otherwise.
///
/// # Safety
/// The caller holds the exclusive borrow of `cell`.
#[inline]
pub(crate) unsafe fn release_exclusive(cell: NonNull<Header>) -> usize {
    // SAFETY: a borrowed cell is allocated until its borrow ends, here.
    unsafe { state(cell) }.swap(0, Ordering::Release)
}

/// Ends a shared borrow. Returns the state before, as for
/// [`release_exclusive`].
///
/// # Safety
/// The caller holds a shared borrow of `cell`.
#[inline]
pub(crate) unsafe fn release_shared(cell: NonNull<Header>) -> usize {
    // SAFETY: as for `release_exclusive`.
    unsafe { state(cell) }.fetch_sub(READER, Ordering::Release)
}

/// Called by the remover after taking the cell out of the slab: either
/// nobody borrows it (the remover now owns it, returns `true`), or it is
/// marked `ORPHANED` so that the last borrower frees it (returns `false`,
/// and the caller must not touch the cell again).
///
/// # Safety
/// `cell` was just removed from its slab by the caller.
pub(crate) unsafe fn orphan_or_own(cell: NonNull<Header>) -> bool {
    // SAFETY: until the exchange below succeeds, nobody else may free it.
    let state = unsafe { state(cell) };
    let mut s = state.load(Ordering::Acquire);
    loop {
        if s & !(WAITING | ORPHANED) == 0 {
            // Pairs with the borrowers' `Release` on unlock: their last
            // writes to the value happen before our drop.
            std::sync::atomic::fence(Ordering::Acquire);
            return true;
        }
        match state.compare_exchange_weak(s, s | ORPHANED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return false,
            Err(now) => s = now,
        }
    }
}

/// Whether a released borrow was the last one on an orphaned cell, i.e. the
/// releaser must free it.
#[inline]
pub(crate) fn last_out_of_orphan(before: usize, exclusive: bool) -> bool {
    before & ORPHANED != 0 && (exclusive || before & !FLAGS == READER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cell<T: Any + Send>(v: T, f: impl FnOnce(NonNull<Header>)) {
        let c = Cell::allocate(v, Location::caller());
        f(c);
        // SAFETY: test owns the cell and every borrow was released.
        unsafe { Header::free(c) };
    }

    #[test]
    fn exclusive_excludes_everyone_and_knows_its_owner() {
        with_cell(1u32, |c| {
            // SAFETY: cell allocated above.
            let h = unsafe { header(c) };
            h.try_exclusive(8).unwrap();
            assert_eq!(h.try_exclusive(8), Err(Blocked::ByThisThread));
            assert_eq!(h.try_shared(8), Err(Blocked::ByThisThread));
            assert!(matches!(h.try_exclusive(16), Err(Blocked::ByOther(_))));
            assert!(matches!(h.try_shared(16), Err(Blocked::ByOther(_))));
            // SAFETY: borrowed above.
            assert_eq!(unsafe { release_exclusive(c) }, 8 | EXCLUSIVE);
            // A lingering WAITING on a free cell is dropped by the next borrower.
            assert!(h.set_waiting(0));
            h.try_shared(8).unwrap();
            assert_eq!(h.state.load(Ordering::Relaxed), READER);
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            unsafe { release_shared(c) };
            h.try_shared(8).unwrap();
            h.try_shared(16).unwrap();
            assert!(matches!(h.try_exclusive(16), Err(Blocked::ByOther(_))));
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            unsafe { release_shared(c) };
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            unsafe { release_shared(c) };
            h.try_exclusive(16).unwrap();
            // SAFETY: borrowed just above.
            unsafe { release_exclusive(c) };
            // The reader count refuses to wrap.
            h.state.store(MAX_READERS, Ordering::Relaxed);
            assert_eq!(h.try_shared(8), Err(Blocked::ByThisThread));
            h.state.store(0, Ordering::Relaxed);
        });
    }

    #[test]
    fn orphaning_hands_the_cell_to_the_last_reader() {
        with_cell(String::from("x"), |c| {
            // SAFETY: cell allocated above.
            let h = unsafe { header(c) };
            h.try_shared(8).unwrap();
            h.try_shared(16).unwrap();
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            assert!(!unsafe { orphan_or_own(c) });
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            assert!(!last_out_of_orphan(unsafe { release_shared(c) }, false));
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            let before = unsafe { release_shared(c) };
            assert!(last_out_of_orphan(before, false));
            h.state.store(0, Ordering::Relaxed);
            // SAFETY: the test holds the borrow it releases, or removed the cell.
            assert!(unsafe { orphan_or_own(c) });
        });
    }

    #[test]
    fn vtable_knows_the_type() {
        with_cell(vec![1u8], |c| {
            // SAFETY: cell allocated above.
            let h = unsafe { header(c) };
            assert!(h.holds::<Vec<u8>>());
            assert!(!h.holds::<Vec<u16>>());
            assert_eq!((h.vtable.type_name)(), "alloc::vec::Vec<u8>");
        });
    }
}
