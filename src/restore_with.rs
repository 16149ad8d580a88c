//! `restore_with`: a restore that runs the caller's code in its fast paths.
//!
//! # Why
//!
//! [`restore`](Registry::restore) returns a guard, so the code that uses
//! it comes after every path that can make one: the lend's, the hot
//! handle's, the general fast path and the slow path. What the slow paths
//! keep across their calls (the handle, the callback's arguments, the slot
//! and the word) must survive in callee-saved registers, and a trampoline
//! pushes and pops six of them on every callback, however the callback was
//! served.
//!
//! [`restore_with`](Registry::restore_with) takes that code as a closure,
//! so each common path runs it on its own straight line:
//!
//! * inside the innermost lend of the handle on this thread (see
//!   [`lend`](crate::lend)), and
//! * on this thread's hot handle (see [`parked`](crate::parked), "The hot
//!   handle"), when the thread is inside no other parked borrow.
//!
//! Everything else is one out-of-line call, made last, so nothing is live
//! across a call and the trampoline saves no register. This is the shape
//! [`with`](Registry::with) has for a scope's state.
//!
//! # Same answers as `restore`
//!
//! `restore_with(ptr, f)` is `restore(ptr).map(|mut guard| f(&mut guard))`.
//! The fast paths build the very [`Guard`] that `restore` would have
//! returned from the same borrow, and drop it the same way, when `f`
//! returns or unwinds. The out-of-line path *is* `restore`. So every
//! error, the `Busy` of a nested borrow, waiting across threads, an
//! `unref` from inside `f`, and a panic in `f`, behave as they do for a
//! guard dropped at the end of `f`.

use std::any::Any;
use std::ffi::c_void;

#[cfg(not(all(loom, test)))]
use crate::slot::Slot;
use crate::{Error, Guard, Registry};

/// What [`Registry::enter_hot`] found.
#[cfg(not(all(loom, test)))]
enum Hot<'s> {
    /// `ptr` is not the hot handle, or the thread is inside another parked
    /// borrow: nothing changed.
    No,
    /// Entered: the slot and its parked word.
    Entered(&'s Slot, usize),
    /// Listed in the record, but the word or the type differ: to undo.
    Refused(&'s Slot, usize),
}

impl Registry {
    /// Restores `ptr`, runs `f` on the value, and releases it: one call
    /// for a C callback's whole body.
    ///
    /// The same answers as `restore(ptr).map(|mut g| f(&mut g))`: every
    /// error, `Busy` for a nested borrow, waiting for another thread's
    /// borrow, and a panic in `f` (the borrow is released as the guard's
    /// would be) behave as for a guard dropped when `f` returns. But it is
    /// cheaper in a trampoline. A guard is used after every path that can
    /// make one, so what the slow paths keep across their calls stays in
    /// saved registers on every callback. Here, inside a
    /// [`lend`](Registry::lend) and on the handle this thread keeps
    /// restoring, `f` runs on the fast path's own straight line, and the
    /// rest is one call made last. BENCHMARKS.md has the figures.
    ///
    /// # Panics
    ///
    /// When `f` panics, and, as for a guard, when the handle was unreffed
    /// during `f`: the release then drops the value, and a panic from its
    /// `Drop` comes out of this call (discarded if `f` is panicking
    /// already; inside a [`lend`](Registry::lend), out of `lend` when it
    /// ends). In an `extern "C"` function, make the whole call inside
    /// `catch_unwind` if the value's `Drop` may panic.
    ///
    /// ```
    /// use handle_registry::Registry;
    ///
    /// let r = Registry::new();
    /// let p = r.save(vec![1, 2]);
    /// assert_eq!(r.restore_with(p, |v: &mut Vec<i32>| { v.push(3); v.len() }), Ok(3));
    /// assert!(r.restore_with(p, |_: &mut String| ()).is_err()); // WrongType
    /// r.unref(p).unwrap();
    /// ```
    #[inline(always)]
    pub fn restore_with<T: Any + Send, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut T) -> O,
    ) -> Result<O, Error> {
        if let Some(Ok(claim)) = crate::lend::claim_innermost::<T>(self, ptr) {
            // SAFETY: the lend holds the borrow and marked itself in use
            // for us; the claim checked that the slot holds a `T`.
            let mut guard = unsafe { Guard::lent(self, claim.slot, claim.locked) };
            return Ok(f(&mut guard));
        }
        #[cfg(not(all(loom, test)))]
        match self.enter_hot::<T>(ptr) {
            Hot::Entered(slot, word) => {
                // SAFETY: this thread is inside its parked exclusive borrow
                // `word` of `slot`, which holds a `T`; the guard leaves it.
                let mut guard = unsafe { Guard::new(self, slot, word) };
                return Ok(f(&mut guard));
            }
            Hot::Refused(slot, word) => return self.restore_with_refused(ptr, slot, word, f),
            Hot::No => {}
        }
        self.restore_with_cold(ptr, f)
    }

    /// Step 2 of [`parked`](crate::parked) on this thread's hot handle, if
    /// `ptr` is that handle and the thread is inside no parked borrow:
    /// without a call, so that it inlines into a trampoline and keeps no
    /// value alive across one.
    #[cfg(not(all(loom, test)))]
    #[inline(always)]
    fn enter_hot<T: Any + Send>(&self, ptr: *mut c_void) -> Hot<'_> {
        // Each registry reads its own entry: the test folds away in the
        // free functions, whose registry is the global one.
        let hot = if self.is_global() {
            self.hot(ptr)
        } else {
            self.hot_private(ptr)
        };
        let Some((slot, word)) = hot else {
            return Hot::No;
        };
        // Never taken: a hot handle's word is always a parked word (see
        // `Registry::set_hot`). Said here so that the compiler knows it, and
        // the guard's drop, inlined below, loses its test of `PARKED` and
        // the jump it cost on every callback (BENCHMARKS.md, Q13).
        if word & crate::slot::PARKED == 0 {
            return Hot::No;
        }
        if !crate::parked::enter_alone(crate::slot::borrow(word), slot) {
            return Hot::No;
        }
        if crate::registry::still_parked::<T>(slot, word) {
            Hot::Entered(slot, word)
        } else {
            Hot::Refused(slot, word)
        }
    }

    /// The hot handle's enter found another word or type: leaves again
    /// (steps 3 and 4), forgets the hot handle, as `restore` does, and
    /// goes on as [`restore_with_cold`](Registry::restore_with_cold).
    #[cfg(not(all(loom, test)))]
    #[cold]
    #[inline(never)]
    fn restore_with_refused<T: Any + Send, O>(
        &self,
        ptr: *mut c_void,
        slot: &Slot,
        word: usize,
        f: impl FnOnce(&mut T) -> O,
    ) -> Result<O, Error> {
        self.leave_parked(slot, word);
        crate::parked::clear_hot();
        self.restore_with_cold(ptr, f)
    }

    /// Every case but the two inline ones: `restore`, then `f`.
    #[cold]
    #[inline(never)]
    fn restore_with_cold<T: Any + Send, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut T) -> O,
    ) -> Result<O, Error> {
        let mut guard = self.restore::<T>(ptr)?;
        Ok(f(&mut guard))
    }
}

#[cfg(test)]
#[path = "restore_with_tests.rs"]
mod tests;
