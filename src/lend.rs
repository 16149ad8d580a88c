//! Lending one exclusive borrow to the callbacks of a synchronous C call.
//!
//! Most C APIs with `user_data` call back synchronously, on the caller's
//! thread, before the registering call returns (`qsort_r`, `sqlite3_exec`,
//! expat's `XML_Parse`, a `traverse(filename, callbacks, user_data)`). Each
//! callback's [`restore`](crate::Registry::restore) then pays for a table
//! lock and two atomic read-modify-writes on the borrow word, which costs
//! several times what the callback itself does.
//!
//! [`Registry::lend`] takes the exclusive borrow *once*, around the whole C
//! call, and records it in a thread-local stack. A `restore` of that handle
//! on that thread is then served from the record: a thread-local read, a
//! few comparisons and one relaxed atomic load, no lock and no
//! read-modify-write. Everything else is unchanged:
//!
//! * Only one guard at a time comes out of a lend (`in_use`); a second
//!   `restore` while it lives is [`Error::Busy`], as for any borrow.
//! * Other threads see an ordinary exclusive borrow held for the whole
//!   call, and wait. So do not lend around a C call that calls back from
//!   its own threads: use [`restore_ref`](crate::Registry::restore_ref) there.
//! * `unref` inside the call marks the cell orphaned; the lend notices it
//!   (the one atomic load) and answers `Stale`, and the value is dropped
//!   when the lend ends.
//! * Lending a handle that is already lent on this thread re-lends the
//!   same borrow to the inner call.
//! * A guard that escapes the lend (stored somewhere that outlives it)
//!   inherits the real borrow: the lend does not release it, the guard
//!   does when dropped.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ptr;

use crate::slot::{Slot, LIVE};
use crate::sync::atomic::Ordering;
use crate::sync::thread_locals;
use crate::{Error, Guard, Registry};

/// One active lend, living in `Registry::lend`'s stack frame.
struct Lent {
    /// The next lend out; set when pushed.
    prev: Cell<*const Lent>,
    registry: *const Registry,
    handle: usize,
    slot: *const Slot,
    locked: usize,
    type_id: TypeId,
    in_use: Cell<bool>,
}

thread_locals! {
    /// The innermost active lend on this thread (a linked stack).
    static TOP: Cell<*const Lent> = const { Cell::new(ptr::null()) };
}

/// Walks this thread's lends from the innermost out.
#[inline]
fn find(mut matches: impl FnMut(&Lent) -> bool) -> Option<&'static Lent> {
    let mut at = TOP.try_with(Cell::get).unwrap_or(ptr::null());
    while !at.is_null() {
        // SAFETY: every pointer on the stack is a `Lent` in a live frame of
        // `Registry::lend` on this thread: entries are popped before their
        // frame ends (by `Pop::drop`, also on unwind), and the stack is
        // thread-local. The `'static` is a lie kept inside this module: the
        // reference never outlives the call that walks the stack.
        let lent = unsafe { &*at };
        if matches(lent) {
            return Some(lent);
        }
        at = lent.prev.get();
    }
    None
}

/// A guard for `ptr` served from an active lend on this thread, if any.
#[inline]
pub(crate) fn claim<T: Any + Send>(
    registry: &Registry,
    ptr: *mut c_void,
) -> Option<Result<(&Slot, usize), Error>> {
    if TOP.try_with(Cell::get).map_or(true, |top| top.is_null()) {
        return None;
    }
    claim_slow::<T>(registry, ptr)
}

#[inline]
fn claim_slow<T: Any + Send>(
    registry: &Registry,
    ptr: *mut c_void,
) -> Option<Result<(&Slot, usize), Error>> {
    let lent = find(|l| ptr::eq(l.registry, registry) && l.handle == ptr as usize)?;
    // SAFETY: slots live as long as their registry, `registry` here.
    let slot = unsafe { &*lent.slot };
    Some(if slot.state.load(Ordering::Relaxed) & LIVE == 0 {
        // Unreffed during the lend: orphaned, dropped when the lend ends.
        Err(Error::Stale)
    } else if lent.type_id != TypeId::of::<T>() {
        Err(Error::WrongType {
            expected: std::any::type_name::<T>(),
            found: slot.type_name(),
        })
    } else if lent.in_use.replace(true) {
        Err(Error::Busy)
    } else {
        Ok((slot, lent.locked))
    })
}

/// Gives a lent guard's borrow back to its lend. Returns `false` when the
/// lend has ended: the guard then owns the real borrow and must release it.
#[inline]
pub(crate) fn give_back(slot: &Slot) -> bool {
    match find(|l| ptr::eq(l.slot, slot)) {
        Some(lent) => {
            lent.in_use.set(false);
            true
        }
        None => false,
    }
}

impl Registry {
    /// Runs `f` with `ptr` exclusively borrowed on this thread, so that the
    /// callbacks `f` triggers restore it without locking.
    ///
    /// Wrap a synchronous C call in it: `restore::<T>(ptr)` inside the call,
    /// on this thread, then costs about a nanosecond instead of a table
    /// lock and two atomic read-modify-writes (see the [module notes](crate::lend)
    /// for what stays the same). Fails like [`restore`](Registry::restore)
    /// when the handle cannot be borrowed, without running `f`.
    ///
    /// ```
    /// use handle_registry::Registry;
    ///
    /// let r = Registry::new();
    /// let p = r.save(0u32);
    /// // Stands for a C function that calls back synchronously.
    /// let c_call = |user_data| {
    ///     for _ in 0..3 {
    ///         *r.restore::<u32>(user_data).unwrap() += 1;
    ///     }
    /// };
    /// r.lend::<u32, _>(p, || c_call(p)).unwrap();
    /// assert_eq!(r.take::<u32>(p), Ok(3));
    /// ```
    pub fn lend<T: Any + Send, R>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce() -> R,
    ) -> Result<R, Error> {
        let guard = self.restore::<T>(ptr)?;
        let frame = Frame::new(self, ptr, guard.slot(), guard.locked(), TypeId::of::<T>());
        /// Ends the lend however `f` ends: pops the frame, then releases
        /// the borrow unless a lent guard escaped `f` and now owns it.
        struct End<'f, 'r, T: Any + Send> {
            frame: &'f Frame,
            guard: ManuallyDrop<Guard<'r, T>>,
        }
        impl<T: Any + Send> Drop for End<'_, '_, T> {
            fn drop(&mut self) {
                self.frame.pop();
                if !self.frame.in_use() {
                    // SAFETY: dropped once, here; no lent guard is alive.
                    unsafe { ManuallyDrop::drop(&mut self.guard) }
                }
            }
        }
        let _end = End {
            frame: &frame,
            guard: ManuallyDrop::new(guard),
        };
        frame.push();
        Ok(f())
    }
}

/// One lend's record, on the stack frame of the call that lends.
///
/// Pushed on this thread's stack of lends with [`push`](Frame::push) once
/// it sits where it will stay, and popped with [`pop`](Frame::pop) before
/// that frame ends (by a drop guard, so also on unwind): this is the
/// stack discipline that `lend` and `scope` rely on. A stackful coroutine
/// that suspends inside one and resumes on another thread, or that
/// interleaves two of them on one thread, breaks it.
pub(crate) struct Frame(Lent);

impl Frame {
    pub fn new(
        registry: &Registry,
        ptr: *mut c_void,
        slot: &Slot,
        locked: usize,
        type_id: TypeId,
    ) -> Frame {
        Frame(Lent {
            prev: Cell::new(ptr::null()),
            registry,
            handle: ptr as usize,
            slot,
            locked,
            type_id,
            in_use: Cell::new(false),
        })
    }

    /// Makes this the innermost lend on this thread.
    pub fn push(&self) {
        self.0.prev.set(TOP.with(|top| top.replace(&self.0)));
    }

    /// Removes this lend, the innermost one, from this thread's stack.
    pub fn pop(&self) {
        TOP.with(|top| {
            debug_assert!(ptr::eq(top.get(), &self.0), "lends end in stack order");
            top.set(self.0.prev.get())
        });
    }

    /// The lent handle, its slot and the word its borrow set.
    pub fn borrow(&self) -> (*mut c_void, &Slot, usize) {
        // SAFETY: the slot belongs to the registry, which outlives the frame.
        let slot = unsafe { &*self.0.slot };
        (
            ptr::without_provenance_mut(self.0.handle),
            slot,
            self.0.locked,
        )
    }

    /// Whether a guard served by this lend is alive.
    pub fn in_use(&self) -> bool {
        self.0.in_use.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn lent_restores_share_one_borrow_one_at_a_time() {
        let r = Registry::new();
        let p = r.save(String::new());
        r.lend::<String, _>(p, || {
            let mut g = r.restore::<String>(p).unwrap();
            g.push('a');
            assert_eq!(r.restore::<String>(p).err(), Some(Error::Busy));
            drop(g);
            r.restore::<String>(p).unwrap().push('b');
            assert_eq!(r.restore_ref::<String>(p).err(), Some(Error::Busy));
            assert!(matches!(r.restore::<u8>(p), Err(Error::WrongType { .. })));
        })
        .unwrap();
        assert_eq!(r.take::<String>(p).unwrap(), "ab");
    }

    #[test]
    fn nested_lends_of_different_handles() {
        let r = Registry::new();
        let (a, b) = (r.save(1u8), r.save(2u8));
        r.lend::<u8, _>(a, || {
            // Lending `a` again re-lends the same borrow.
            r.lend::<u8, _>(a, || *r.restore::<u8>(a).unwrap() += 1)
                .unwrap();
            r.lend::<u8, _>(b, || {
                *r.restore::<u8>(a).unwrap() += 10;
                *r.restore::<u8>(b).unwrap() += 20;
            })
            .unwrap();
            *r.restore::<u8>(a).unwrap() += 100;
        })
        .unwrap();
        assert_eq!((r.take::<u8>(a), r.take::<u8>(b)), (Ok(112), Ok(22)));
    }

    #[test]
    fn unref_during_a_lend_is_stale_at_once_and_dropped_at_the_end() {
        let r = Registry::new();
        let p = r.save(vec![1]);
        r.lend::<Vec<i32>, _>(p, || {
            r.unref(p).unwrap();
            assert_eq!(r.restore::<Vec<i32>>(p).err(), Some(Error::Stale));
            assert_eq!(r.len(), 0);
        })
        .unwrap();
        assert_eq!(r.restore::<Vec<i32>>(p).err(), Some(Error::Stale));
    }

    #[test]
    fn an_escaped_guard_keeps_the_borrow_until_it_drops() {
        let r = Registry::new();
        let p = r.save(5u32);
        let mut kept = None;
        r.lend::<u32, _>(p, || kept = Some(r.restore::<u32>(p).unwrap()))
            .unwrap();
        assert_eq!(r.restore::<u32>(p).err(), Some(Error::Busy));
        *kept.as_mut().unwrap().deref_mut() += 1;
        drop(kept);
        assert_eq!(r.take::<u32>(p), Ok(6));
    }

    #[test]
    fn a_panic_inside_pops_the_lend_and_releases() {
        let r = Registry::new();
        let p = r.save(0u8);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.lend::<u8, _>(p, || {
                let _g = r.restore::<u8>(p).unwrap();
                panic!("in the callback");
            })
        }));
        assert!(caught.is_err());
        assert!(find(|_| true).is_none());
        assert_eq!(r.take::<u8>(p), Ok(0));
    }

    #[test]
    fn other_threads_wait_for_the_whole_lend() {
        let r = Registry::new();
        let p = r.save(0u32) as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let r = &r;
            r.lend::<u32, _>(std::ptr::without_provenance_mut(p), || {
                let waiter = s.spawn(move || {
                    tx.send(()).unwrap();
                    *r.restore::<u32>(std::ptr::without_provenance_mut(p))
                        .unwrap()
                });
                rx.recv().unwrap();
                *r.restore::<u32>(std::ptr::without_provenance_mut(p))
                    .unwrap() = 9;
                waiter
            })
            .map(|waiter| assert_eq!(waiter.join().unwrap(), 9))
            .unwrap();
        });
    }

    use std::ops::DerefMut;
}
