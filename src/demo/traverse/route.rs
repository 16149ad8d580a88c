//! The trampolines: the only Rust functions C calls.
//!
//! Each one resolves `user_data` through the registry, delivers the event
//! to the state it names, and returns. Whatever C passes, nothing unwinds
//! into C and nothing is dereferenced unchecked: a handle that does not
//! resolve is counted and ignored, a panic is caught.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::demo::ffi;

static IGNORED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Per thread, so that a caller measuring its own synchronous traversal
    // is not disturbed by traversals on other threads.
    static ENTRIES: Cell<u64> = const { Cell::new(0) };
}

/// How many callbacks reached a trampoline of this module with a
/// `user_data` that did not resolve (NULL, forged, stale, of another type,
/// or already borrowed by this thread) and were ignored, process-wide.
///
/// ```
/// use handle_registry::demo::traverse::{ignored_callbacks, subscribe, Callbacks};
///
/// let before = ignored_callbacks();
/// let subscription = subscribe(Callbacks::new().on_start(|_| {})).unwrap();
/// let (cbs, forged) = (subscription.c_callbacks(), 0x1234 as *mut std::ffi::c_void);
/// // SAFETY: the trampolines accept any user_data.
/// unsafe { handle_registry::demo::ffi::traverse(std::ptr::null_mut(), cbs, forged) };
/// assert_eq!(ignored_callbacks(), before + 1); // start was called, end is NULL
/// ```
pub fn ignored_callbacks() -> u64 {
    IGNORED.load(Ordering::Relaxed)
}

/// How many times C entered a trampoline of this module on the current
/// thread, resolved or not. It shows which events reach Rust at all.
///
/// ```
/// use handle_registry::demo::traverse::{trampoline_entries, traverse, Callbacks};
///
/// let before = trampoline_entries();
/// // The seed reports one start and one end; only `end` has a closure, so
/// // C gets NULL for `start` and calls Rust once.
/// traverse(c"unused", Callbacks::new().on_end(|_, _| {})).unwrap();
/// assert_eq!(trampoline_entries(), before + 1);
/// ```
pub fn trampoline_entries() -> u64 {
    ENTRIES.with(Cell::get)
}

/// One callback from C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Start { depth: i32 },
    End { open: i32, close: i32 },
}

/// A state saved in the registry that C's callbacks are routed to.
pub(crate) trait Route: 'static {
    /// Resolves `user_data` to this state and delivers `event`, or says
    /// why the handle did not resolve.
    fn deliver(user_data: *mut c_void, event: Event) -> Result<(), crate::Error>;
}

/// Which events C should call Rust for; the others get NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    pub start: bool,
    pub end: bool,
}

impl Wants {
    pub const BOTH: Wants = Wants {
        start: true,
        end: true,
    };
}

/// The callbacks to give C for a state of type `R`.
pub(crate) fn c_callbacks<R: Route>(wants: Wants) -> ffi::Callbacks {
    ffi::Callbacks {
        start: wants.start.then_some(on_start::<R> as _),
        end: wants.end.then_some(on_end::<R> as _),
    }
}

pub(crate) extern "C" fn on_start<R: Route>(user_data: *mut c_void, depth: c_int) {
    dispatch::<R>(user_data, Event::Start { depth });
}

pub(crate) extern "C" fn on_end<R: Route>(user_data: *mut c_void, open: c_int, close: c_int) {
    dispatch::<R>(user_data, Event::End { open, close });
}

fn dispatch<R: Route>(user_data: *mut c_void, event: Event) {
    // `with` cannot fail here: a const-initialised `Cell<u64>` has no
    // destructor, so it stays accessible even while a thread exits. It
    // compiles to one increment; `try_with` measured three times slower.
    ENTRIES.with(|n| n.set(n.get().wrapping_add(1)));
    // Routes catch the visitor's panics in their carrier; what is left to
    // catch here is a panic from dropping an orphaned state when the guard
    // is released, which has no carrier left to go to.
    match catch_unwind(AssertUnwindSafe(|| R::deliver(user_data, event))) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            IGNORED.fetch_add(1, Ordering::Relaxed);
        }
        Err(payload) => crate::panic::drop_payload(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts deliveries; stands in for a visitor state.
    struct Counter;
    static DELIVERED: AtomicUsize = AtomicUsize::new(0);

    impl Route for Counter {
        fn deliver(user_data: *mut c_void, _event: Event) -> Result<(), crate::Error> {
            let _guard = crate::restore::<u32>(user_data)?;
            DELIVERED.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn unresolvable_handles_are_counted_and_ignored() {
        let stale = crate::save(1u32);
        crate::unref(stale).unwrap();
        let other_type = crate::save(String::new());
        let garbage = [
            std::ptr::null_mut(),
            std::ptr::without_provenance_mut(usize::MAX),
            std::ptr::without_provenance_mut(0x3),
            std::ptr::without_provenance_mut(0xdead_beef),
            stale,
            other_type,
        ];
        let ignored = ignored_callbacks();
        let entries = trampoline_entries();
        for user_data in garbage {
            on_start::<Counter>(user_data, 1);
            on_end::<Counter>(user_data, 2, 3);
        }
        // Other tests may ignore callbacks concurrently: at least ours.
        assert!(ignored_callbacks() >= ignored + 2 * garbage.len() as u64);
        assert_eq!(trampoline_entries(), entries + 2 * garbage.len() as u64);
        crate::unref(other_type).unwrap();
    }

    #[test]
    fn live_handles_are_delivered() {
        let live = crate::save(0u32);
        let before = DELIVERED.load(Ordering::Relaxed);
        on_start::<Counter>(live, 1);
        on_end::<Counter>(live, 0, 1);
        assert!(DELIVERED.load(Ordering::Relaxed) >= before + 2);
        crate::unref(live).unwrap();
    }

    #[test]
    fn wants_decide_which_pointers_are_null() {
        let none = c_callbacks::<Counter>(Wants {
            start: false,
            end: false,
        });
        assert!(none.start.is_none() && none.end.is_none());
        let end_only = c_callbacks::<Counter>(Wants {
            start: false,
            end: true,
        });
        assert!(end_only.start.is_none() && end_only.end.is_some());
        assert!(c_callbacks::<Counter>(Wants::BOTH).start.is_some());
    }
}
