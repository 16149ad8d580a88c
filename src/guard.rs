//! Borrows of a saved value: what `restore` and `restore_ref` return.
//!
//! A guard is the only way to reach a saved value, and the borrow it holds
//! is what keeps the value alive and un-aliased: dropping the guard ends
//! the borrow (one compare-exchange; plain stores and loads for a parked
//! borrow or one served by a lend), and if the handle was unreffed
//! meanwhile, frees the value right there (a lend's, when the lend ends).

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::readers::Record;
use crate::slot::Slot;
use crate::{thread, Registry};

/// Exclusive access to a saved value; derefs to `&T` and `&mut T`.
///
/// Returned by [`restore`](crate::restore). While it lives, other threads
/// restoring the same handle wait, and this thread gets
/// [`Error::Busy`](crate::Error::Busy). It is not `Send`: the borrow
/// belongs to the thread that took it.
///
/// ```
/// let p = handle_registry::save(vec![1]);
/// {
///     let mut v = handle_registry::restore::<Vec<i32>>(p).unwrap();
///     v.push(2);
///     assert!(handle_registry::restore::<Vec<i32>>(p).is_err()); // Busy
/// }
/// assert_eq!(handle_registry::take::<Vec<i32>>(p).unwrap(), [1, 2]);
/// ```
pub struct Guard<'r, T: Any + Send> {
    registry: &'r Registry,
    slot: &'r Slot,
    /// The state word the borrow set, which the release expects.
    locked: usize,
    /// 1 when served by an active [`lend`](crate::lend) on this thread, else
    /// 0. A `usize`, not a `bool`, so that the guard has no padding: a
    /// trampoline whose body may unwind keeps the guard on the stack for
    /// its landing pad, and LLVM copied the seven padding bytes there as
    /// two overlapping 4-byte loads and stores, a failed store forwarding
    /// on every call (2 to 4 ns of a static trampoline's 12.5, BENCHMARKS.md).
    lent: usize,
    /// `&mut T`-like, and `!Send` (the owner token is this thread's).
    _marker: PhantomData<(&'r mut T, *mut ())>,
}

// SAFETY: `&Guard` only gives `&T`, which may be shared when `T: Sync`.
unsafe impl<T: Any + Send + Sync> Sync for Guard<'_, T> {}

impl<'r, T: Any + Send> Guard<'r, T> {
    /// # Safety
    /// The caller holds the exclusive borrow of `slot`, a slot of
    /// `registry` holding a `T`, that set the word `locked`; the guard
    /// takes over releasing it.
    #[inline]
    pub(crate) unsafe fn new(registry: &'r Registry, slot: &'r Slot, locked: usize) -> Self {
        Guard {
            registry,
            slot,
            locked,
            lent: 0,
            _marker: PhantomData,
        }
    }

    /// # Safety
    /// An active lend on this thread holds the exclusive borrow of `slot`
    /// (a slot of `registry` holding a `T`) that set `locked`, and has
    /// marked itself in use for us.
    #[inline]
    pub(crate) unsafe fn lent(registry: &'r Registry, slot: &'r Slot, locked: usize) -> Self {
        Guard {
            registry,
            slot,
            locked,
            lent: 1,
            _marker: PhantomData,
        }
    }

    pub(crate) fn slot(&self) -> &'r Slot {
        self.slot
    }

    pub(crate) fn locked(&self) -> usize {
        self.locked
    }
}

impl<T: Any + Send> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: we hold the exclusive borrow of a slot holding a `T`, so no
        // one else accesses the value; `&self` limits us to sharing.
        unsafe { &*self.slot.value_ptr::<T>() }
    }
}

impl<T: Any + Send> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.slot.value_ptr::<T>() }
    }
}

impl<T: Any + Send> Drop for Guard<'_, T> {
    // Always: LLVM otherwise keeps it out of line in a trampoline, which
    // then spills the guard to the stack and calls it for every callback.
    #[inline(always)]
    fn drop(&mut self) {
        let (registry, slot, locked) = (self.registry, self.slot, self.locked);
        // The common cases inline; each of the rest is one call.
        if self.lent != 0 {
            if crate::lend::give_back_innermost(slot) {
                return;
            }
        } else if locked & crate::slot::PARKED == 0 {
            // SAFETY: we hold this real exclusive borrow, released exactly
            // once here.
            return unsafe { registry.release_or_park(slot, locked) };
        } else if registry.leave_parked_alone(slot, locked) {
            return;
        }
        // SAFETY: we hold the exclusive borrow (our own, or inherited from
        // a lend that ended before us), released exactly once here.
        unsafe { registry.release_guard(slot, locked, self.lent != 0) }
    }
}

impl<T: Any + Send + fmt::Debug> fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Shared, read-only access to a saved `Sync` value; derefs to `&T`.
///
/// Returned by [`restore_ref`](crate::restore_ref). Any number of threads
/// may hold one at once; an exclusive [`restore`](crate::restore) waits
/// for all of them. Not `Send`, like [`Guard`].
///
/// ```
/// use std::sync::Mutex;
///
/// let p = handle_registry::save(Mutex::new(0));
/// let user_data = p as usize; // a `*mut c_void` is not `Send`; its value is
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(move || {
///             let p = std::ptr::without_provenance_mut(user_data);
///             let shared = handle_registry::restore_ref::<Mutex<i32>>(p).unwrap();
///             *shared.lock().unwrap() += 1;
///         });
///     }
/// });
/// assert_eq!(handle_registry::take::<Mutex<i32>>(p).unwrap().into_inner().unwrap(), 4);
/// ```
pub struct SharedGuard<'r, T: Any + Send + Sync> {
    registry: &'r Registry,
    slot: &'r Slot,
    /// The handle, as recorded in this thread's shared-borrow list or
    /// reader record.
    handle: usize,
    /// The entry of this thread's reader record that holds the borrow, or
    /// `None` for a borrow counted in the slot's word.
    record: Option<(&'static Record, usize)>,
    _marker: PhantomData<(&'r T, *mut ())>,
}

// SAFETY: `&SharedGuard` gives `&T`, and `T: Sync`.
unsafe impl<T: Any + Send + Sync> Sync for SharedGuard<'_, T> {}

impl<'r, T: Any + Send + Sync> SharedGuard<'r, T> {
    /// # Safety
    /// The caller holds a shared borrow of `slot`, a slot of `registry`
    /// holding a `T`: counted in the word and recorded for `handle` in this
    /// thread's list (`record` is `None`), or held by entry `record.1` of
    /// this thread's reader record `record.0`; the guard takes over
    /// releasing it.
    pub(crate) unsafe fn new(
        registry: &'r Registry,
        slot: &'r Slot,
        handle: usize,
        record: Option<(&'static Record, usize)>,
    ) -> Self {
        SharedGuard {
            registry,
            slot,
            handle,
            record,
            _marker: PhantomData,
        }
    }
}

impl<T: Any + Send + Sync> Deref for SharedGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a shared borrow of a slot holding a `T` excludes every
        // `&mut T`; other readers only hold `&T`, fine as `T: Sync`.
        unsafe { &*self.slot.value_ptr::<T>() }
    }
}

impl<T: Any + Send + Sync> Drop for SharedGuard<'_, T> {
    fn drop(&mut self) {
        if let Some((record, entry)) = self.record {
            // SAFETY: we hold this record borrow, released exactly once
            // here, on the thread that owns the record (the guard is not
            // `Send`).
            unsafe {
                self.registry
                    .release_record(self.slot, record, entry, self.handle)
            };
            return;
        }
        thread::pop_shared(self.handle);
        // SAFETY: we hold one shared borrow, released exactly once here.
        unsafe { self.registry.release_shared(self.slot) }
    }
}

impl<T: Any + Send + Sync + fmt::Debug> fmt::Debug for SharedGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
