//! Lending one exclusive borrow to the callbacks of a synchronous C call.
//!
//! Most C APIs with `user_data` call back synchronously, on the caller's
//! thread, before the registering call returns (`qsort_r`, `sqlite3_exec`,
//! expat's `XML_Parse`, a `traverse(filename, callbacks, user_data)`). Each
//! callback's [`restore`](crate::Registry::restore) then borrows the value
//! anew: two compare-exchanges on the slot's word, or, on Linux once the
//! thread has restored that handle 1024 times in a row, the enter and leave
//! of a *parked* borrow, which take no locked instruction but still list
//! the slot in the thread's record and check the slot's word each way.
//!
//! [`Registry::lend`] takes the exclusive borrow *once*, around the whole C
//! call, and records it in a thread-local stack. A `restore` of that handle
//! on that thread is then served from the record, with no read-modify-write
//! from the first callback on, on any platform, and in fewer instructions
//! than even a parked borrow's (61 instructions per callback against 78;
//! with [`restore_with`](crate::Registry::restore_with), 41 against 57:
//! BENCHMARKS.md). Everything else is unchanged:
//!
//! * Only one guard at a time comes out of a lend (`expect`); a second
//!   `restore` while it lives is [`Error::Busy`], as for any borrow.
//! * Other threads see an ordinary exclusive borrow held for the whole
//!   call, and wait. So do not lend around a C call that calls back from
//!   its own threads: use [`restore_ref`](crate::Registry::restore_ref) there.
//! * `unref` inside the call marks the slot orphaned; the lend notices it
//!   (the one atomic load) and answers `Stale`, and the value is dropped
//!   when the lend ends.
//! * Lending a handle that is already lent on this thread re-lends the
//!   same borrow to the inner call.
//! * A guard that escapes the lend (stored somewhere that outlives it)
//!   inherits the real borrow: the lend does not release it, the guard
//!   does when dropped.
//!
//! # The record and its fast path
//!
//! A lend's record (`Frame`) lives in the lending call's stack frame and
//! is linked into this thread's stack of lends (`TOP`) while the call
//! runs; it is popped before that frame ends, also on unwind. Its fields
//! are fixed when it is pushed, except `prev` (set by the push) and
//! `expect`, a thread-local word with three states:
//!
//! | `expect` | state | a claim |
//! |---|---|---|
//! | `locked`, the word the lend's borrow set | free: no guard or callback of this lend runs | makes it `IN_USE` and is served |
//! | `IN_USE` | a lent guard (or a scope callback) is alive | `Busy` |
//! | `POISONED` | a scope callback panicked; no later one may run | `Panicked` |
//!
//! `IN_USE → locked` when the guard drops or the callback returns;
//! `IN_USE → POISONED` when a scope's callback panicked (only
//! [`scope`](crate::Registry::scope) and `scope_fn` do that; a lend is
//! never poisoned). Only this thread reads or writes `expect`, so a plain
//! `Cell` suffices. `IN_USE` and `POISONED` are words no slot ever holds
//! (`COUNTED` without `LIVE`, and `LIVE` with `RETIRED`), so comparing
//! the slot's word with `expect` checks "free" and "unchanged" at once.
//!
//! A claim first looks at the innermost record only (`TOP`, one
//! thread-local read): if it lends this very handle of this registry, for
//! this type, and the slot's state word is *exactly* `expect` (so the
//! record is free and the word is the one the lend's borrow set), the
//! claim is served at once. That exact
//! comparison (a `Relaxed` load: the lend's own `Acquire` borrow already
//! ordered the value's earlier writes before us, and no other thread
//! writes the value while our borrow holds) proves the value is still
//! live and still ours: an `unref` (orphaning: `LIVE` cleared), a waiter
//! (`WAITING`) or a `retain` (`COUNTED`) all change the word, and send the
//! claim to the slow path, which walks the whole stack and says exactly
//! what is wrong. The type check is one comparison of the record's
//! `TypeId`, taken once when the lend began, against the caller's.
//!
//! A lent guard gives its claim back the same way: if the innermost record
//! lends its slot, it sets that record's `expect` back to `locked` (free);
//! otherwise it walks the stack, and if no lend of its slot is left, it
//! owns the real borrow.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ptr;

use crate::slot::{Slot, COUNTED, LIVE, RETIRED};
use crate::sync::atomic::Ordering;
use crate::sync::thread_locals;
use crate::{Error, Guard, Registry};

/// `Lent::expect` while a guard or a scope callback holds the claim: a
/// word no slot holds (`COUNTED` rides only on `LIVE` words).
const IN_USE: usize = !LIVE;
/// `Lent::expect` once a scope callback panicked: a word no slot holds
/// (a `RETIRED` word is never `LIVE`). Later claims are `Panicked`.
const POISONED: usize = usize::MAX;
const _: () = assert!(IN_USE & COUNTED != 0 && POISONED & (LIVE | RETIRED) == LIVE | RETIRED);

/// One active lend, living in `Registry::lend`'s stack frame.
struct Lent {
    /// The next lend out; set when pushed.
    prev: Cell<*const Lent>,
    registry: *const Registry,
    handle: usize,
    slot: *const Slot,
    locked: usize,
    type_id: TypeId,
    /// `locked` (free), `IN_USE` or `POISONED` (see the module notes).
    expect: Cell<usize>,
}

thread_locals! {
    /// The innermost active lend on this thread (a linked stack).
    static TOP: Cell<*const Lent> = const { Cell::new(ptr::null()) };
}

/// The innermost lend on this thread, or null. `TOP` has no destructor,
/// so it is readable at any point of the thread's life.
///
/// `try_with`, which never fails here, rather than `with`: in one build
/// of `benches/interleaved.rs` the `with` form left the thread-local's
/// accessor as a call in the `with` trampolines (rustc had placed it in
/// another codegen unit), one more call per callback; this form inlined.
#[inline(always)]
fn top() -> *const Lent {
    TOP.try_with(Cell::get).unwrap_or(ptr::null())
}

/// Walks this thread's lends from the innermost out.
#[inline]
fn find(mut matches: impl FnMut(&Lent) -> bool) -> Option<&'static Lent> {
    let mut at = top();
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

/// A claim on an active lend: its slot and borrow word, and the record to
/// give the claim back to.
pub(crate) struct Claim<'r> {
    pub slot: &'r Slot,
    pub locked: usize,
    lent: *const Lent,
}

impl Claim<'_> {
    /// Gives the claim back: the record is free again.
    ///
    /// # Safety
    /// The lend is still active: the caller claimed it on this thread and
    /// has not returned since (a lend outlives every call made inside it).
    #[inline(always)]
    pub unsafe fn give_back(&self) {
        // SAFETY: per the caller, the record is in a live frame on this
        // thread; `expect` is a `Cell` only this thread touches.
        unsafe { (*self.lent).expect.set(self.locked) }
    }

    /// Gives the claim back for good: a scope callback panicked, and no
    /// later callback of the lend may run.
    ///
    /// # Safety
    /// As for [`give_back`](Claim::give_back).
    #[cold]
    pub unsafe fn poison(&self) {
        // SAFETY: as in `give_back`.
        unsafe { (*self.lent).expect.set(POISONED) }
    }
}

/// Returns `Some(Ok(claim))` from the enclosing function when the
/// innermost lend on this thread lends `$ptr` of `$registry` as a `$T` and
/// is free; `None` when this thread has no lend; else falls through.
///
/// A macro, not a function, because the fast paths it serves are laid out
/// by LLVM: the same checks called through an inlined helper compiled to
/// two more jumps per lent `restore` (49 → 51 instructions per callback,
/// `benches/instructions.sh`).
macro_rules! return_innermost_claim {
    ($T:ty, $registry:expr, $ptr:expr) => {
        let top = top();
        if top.is_null() {
            return None;
        }
        // SAFETY: a non-null `TOP` is a record in a live frame on this
        // thread (see `find`).
        let lent = unsafe { &*top };
        if lent.handle == $ptr as usize
            && ptr::eq(lent.registry, $registry)
            && lent.type_id == TypeId::of::<$T>()
        {
            // SAFETY: slots live as long as their registry, `$registry`.
            let slot = unsafe { &*lent.slot };
            if slot.state.load(Ordering::Relaxed) == lent.expect.get() {
                lent.expect.set(IN_USE);
                return Some(Ok(Claim {
                    slot,
                    locked: lent.locked,
                    lent,
                }));
            }
        }
    };
}

/// A claim for `ptr` on an active lend on this thread, if any lends it.
///
/// The fast path looks at the innermost lend only, see the module notes;
/// anything else is [`claim_slow`]'s.
#[inline(always)]
pub(crate) fn claim<T: Any + Send>(
    registry: &Registry,
    ptr: *mut c_void,
) -> Option<Result<Claim<'_>, Error>> {
    return_innermost_claim!(T, registry, ptr);
    claim_slow::<T>(registry, ptr)
}

/// [`claim`]'s fast path alone: `Some(Ok(_))` when the innermost lend on
/// this thread lends `ptr` as a `T` and is free, `None` for anything else
/// (which [`claim_slow`] sorts out). For callers that send every other case
/// out of line in one call.
#[inline(always)]
pub(crate) fn claim_innermost<T: Any + Send>(
    registry: &Registry,
    ptr: *mut c_void,
) -> Option<Result<Claim<'_>, Error>> {
    return_innermost_claim!(T, registry, ptr);
    None
}

/// [`claim`] past the innermost lend, or when something is wrong.
#[cold]
#[inline(never)]
pub(crate) fn claim_slow<T: Any + Send>(
    registry: &Registry,
    ptr: *mut c_void,
) -> Option<Result<Claim<'_>, Error>> {
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
    } else {
        match lent.expect.get() {
            IN_USE => Err(Error::Busy),
            POISONED => Err(Error::Panicked),
            _ => {
                lent.expect.set(IN_USE);
                Ok(Claim {
                    slot,
                    locked: lent.locked,
                    lent,
                })
            }
        }
    })
}

/// Gives a lent guard's borrow back to the innermost lend, if that lend
/// lends `slot`: the common case. `false`, having changed nothing,
/// otherwise; [`give_back_slow`] then searches the outer lends.
#[inline(always)]
pub(crate) fn give_back_innermost(slot: &Slot) -> bool {
    let top = top();
    if !top.is_null() {
        // SAFETY: as in `claim`.
        let lent = unsafe { &*top };
        if ptr::eq(lent.slot, slot) {
            lent.expect.set(lent.locked);
            return true;
        }
    }
    false
}

/// Gives a lent guard's borrow back to whichever of this thread's lends
/// lends `slot`. Returns `false` when none does, because the lend has
/// ended: the guard then owns the real borrow and must release it.
#[cold]
#[inline(never)]
pub(crate) fn give_back_slow(slot: &Slot) -> bool {
    match find(|l| ptr::eq(l.slot, slot)) {
        Some(lent) => {
            lent.expect.set(lent.locked);
            true
        }
        None => false,
    }
}

impl Registry {
    /// Runs `f` with `ptr` exclusively borrowed on this thread, so that the
    /// callbacks `f` triggers restore it without borrowing it again.
    ///
    /// Wrap a synchronous C call in it: `restore::<T>(ptr)` inside the call,
    /// on this thread, is then served from the lend, with no atomic
    /// read-modify-write and fewer instructions than a restore outside it,
    /// parked or not (see the [module notes](crate::lend), also for what
    /// stays the same). Fails like [`restore`](Registry::restore)
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
            expect: Cell::new(locked),
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

    /// Whether a guard served by this lend is alive (a poisoned lend has
    /// none).
    pub fn in_use(&self) -> bool {
        self.0.expect.get() == IN_USE
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

    #[test]
    fn a_guard_given_back_past_an_inner_lend_frees_its_own_lend() {
        let r = Registry::new();
        let (a, b) = (r.save(1u8), r.save(2u8));
        r.lend::<u8, _>(a, || {
            let g = r.restore::<u8>(a).unwrap();
            // Dropped while another lend is innermost: the slow give-back.
            r.lend::<u8, _>(b, || drop(g)).unwrap();
            // `a`'s lend is free again, through the fast claim.
            *r.restore::<u8>(a).unwrap() += 1;
            let mut g = r.restore::<u8>(a).unwrap();
            assert_eq!(r.restore::<u8>(a).err(), Some(Error::Busy));
            *g += 1;
        })
        .unwrap();
        assert_eq!((r.take::<u8>(a), r.take::<u8>(b)), (Ok(3), Ok(2)));
    }

    #[test]
    fn a_changed_word_sends_the_claim_to_the_slow_path() {
        let r = Registry::new();
        let p = r.save(0u32);
        r.lend::<u32, _>(p, || {
            // `retain` adds `COUNTED` to the lend's word.
            r.retain(p).unwrap();
            *r.restore::<u32>(p).unwrap() += 1;
            assert!(matches!(r.restore::<u8>(p), Err(Error::WrongType { .. })));
            r.unref(p).unwrap();
            *r.restore::<u32>(p).unwrap() += 1;
        })
        .unwrap();
        assert_eq!(r.take::<u32>(p), Ok(2));
    }

    use std::ops::DerefMut;
}
