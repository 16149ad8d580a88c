//! Carrying a panic from a callback back across C.
//!
//! Since Rust 1.81 a panic that reaches an `extern "C"` boundary aborts the
//! process. Every trampoline that C calls must therefore catch panics, and
//! the panic should still reach the Rust code that started the C call, as
//! if C were not there. git2-rs and curl-rust do this with a thread-local
//! slot; that cannot work when C calls back on *its own* threads, so here
//! the slot travels with the callback's state instead: put a
//! [`PanicCarrier`] in the value you [`save`](crate::save), catch in the
//! trampoline, resume (or turn into an error) after C returns.
//!
//! After the first panic the carrier refuses to run more callbacks, so the
//! rest of the C operation's callbacks are skipped: the code that panicked
//! may have left its state half-updated, and nothing should observe it.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicBool;
use crate::sync::Mutex;

/// Holds the first panic caught in a group of callbacks.
///
/// ```
/// use handle_registry::panic::PanicCarrier;
///
/// let carrier = PanicCarrier::new();
/// // In the trampoline:
/// assert_eq!(carrier.catch(|| 1 + 1), Some(2));
/// assert_eq!(carrier.catch(|| -> i32 { panic!("boom") }), None);
/// assert_eq!(carrier.catch(|| 3), None); // skipped after a panic
/// // After C returns:
/// let payload = carrier.take().unwrap();
/// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
/// ```
#[derive(Default)]
pub struct PanicCarrier {
    panicked: AtomicBool,
    payload: Mutex<Option<Box<dyn Any + Send>>>,
}

impl PanicCarrier {
    /// An empty carrier.
    ///
    /// ```
    /// let c = handle_registry::panic::PanicCarrier::new();
    /// assert!(!c.has_panicked());
    /// ```
    pub const fn new() -> Self {
        PanicCarrier {
            panicked: AtomicBool::new(false),
            payload: Mutex::new(None),
        }
    }

    /// Runs `f` unless a panic was already caught; catches a panic from it.
    ///
    /// Returns `None` when `f` panicked (the payload is kept, the first one
    /// wins) or was skipped. Safe to call from several threads at once.
    ///
    /// `f` is treated as unwind-safe: after a panic the carrier runs
    /// nothing more, so no broken invariant is observed through it; the
    /// panic is resumed in the caller, which is where `UnwindSafe` would
    /// have been judged.
    ///
    /// ```
    /// let c = handle_registry::panic::PanicCarrier::new();
    /// assert_eq!(c.catch(|| "ran"), Some("ran"));
    /// ```
    #[inline]
    pub fn catch<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        if self.has_panicked() {
            // Skipped: drop `f` (and what it captured) where a panic in
            // that drop cannot escape either.
            catch_quietly(|| drop(f));
            return None;
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.keep(payload);
                None
            }
        }
    }

    /// Records a panic caught by the caller (the first one wins; a later
    /// payload is dropped without letting its `Drop` unwind).
    ///
    /// The flag, not the slot, decides which is first: a callback already
    /// running when the first panic was caught may panic after that
    /// payload was taken, and must not leave a second one behind.
    #[cold]
    pub(crate) fn keep(&self, payload: Box<dyn Any + Send>) {
        if self.panicked.swap(true, Ordering::AcqRel) {
            drop_payload(payload);
        } else {
            *self.payload.lock() = Some(payload);
        }
    }

    /// Whether a panic was caught.
    ///
    /// ```
    /// let c = handle_registry::panic::PanicCarrier::new();
    /// c.catch(|| panic!("x"));
    /// assert!(c.has_panicked());
    /// ```
    #[inline]
    pub fn has_panicked(&self) -> bool {
        self.panicked.load(Ordering::Acquire)
    }

    /// Removes the caught panic's payload, if any. The carrier keeps
    /// skipping callbacks.
    ///
    /// ```
    /// let c = handle_registry::panic::PanicCarrier::new();
    /// assert!(c.take().is_none());
    /// ```
    pub fn take(&self) -> Option<Box<dyn Any + Send>> {
        self.payload.lock().take()
    }

    /// Resumes the caught panic on this thread, if there is one.
    ///
    /// Call it on the Rust side after the C function returned; not while
    /// this thread is already panicking (from a `Drop` during an unwind),
    /// where a second panic aborts: use [`take`](Self::take) there.
    ///
    /// ```should_panic
    /// let c = handle_registry::panic::PanicCarrier::new();
    /// c.catch(|| panic!("from the callback"));
    /// c.resume(); // panics with "from the callback"
    /// ```
    pub fn resume(&self) {
        if let Some(payload) = self.take() {
            resume_unwind(payload);
        }
    }
}

/// A payload nobody took is dropped without unwinding: its `Drop` may
/// panic, and a carrier is often dropped while a panic unwinds (a scope's
/// body panicked after a callback did), where a second panic aborts.
impl Drop for PanicCarrier {
    fn drop(&mut self) {
        if let Some(payload) = self.take() {
            drop_payload(payload);
        }
    }
}

impl fmt::Debug for PanicCarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicCarrier")
            .field("panicked", &self.has_panicked())
            .finish()
    }
}

/// The message of a panic payload, when it is a string (as `panic!` makes).
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("at {}", 3)).unwrap_err();
/// assert_eq!(handle_registry::panic::message(&*payload), Some("at 3"));
/// ```
pub fn message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// Runs `f` and drops a panic from it without unwinding: for work whose
/// panic has nowhere to go (a thread-local destructor, a C caller).
pub(crate) fn catch_quietly(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        drop_payload(payload);
    }
}

/// Resumes `payload` after dropping `value`, which goes with it (a body's
/// result, a half-updated visitor), and discarding a panic of `value`'s
/// own `Drop`: left as a local, `value` would be dropped by the resumed
/// unwind, where that second panic would abort the process.
pub(crate) fn resume_dropping<T>(payload: Box<dyn Any + Send>, value: T) -> ! {
    catch_quietly(|| drop(value));
    resume_unwind(payload)
}

/// Keeps the first of several panics to resume later, and drops every
/// later payload without unwinding: a payload's `Drop` may panic, and
/// that panic would otherwise unwind past `first`, whose own drop during
/// that unwind would abort.
pub(crate) fn keep_first(first: &mut Option<Box<dyn Any + Send>>, payload: Box<dyn Any + Send>) {
    if first.is_none() {
        *first = Some(payload);
    } else {
        drop_payload(payload);
    }
}

/// Resumes a panic caught while dropping values, unless this thread is
/// already unwinding: a second panic then would abort the process, so the
/// one already under way wins and this payload is dropped quietly (as with
/// two panics in one thread).
pub(crate) fn resume_unless_unwinding(payload: Box<dyn Any + Send>) {
    if std::thread::panicking() {
        drop_payload(payload);
    } else {
        std::panic::resume_unwind(payload);
    }
}

/// Drops a panic payload that has nowhere to go, without ever unwinding.
///
/// A payload's own `Drop` may panic, and the payload of *that* panic may
/// panic when dropped too: each level is caught in turn. After a few levels
/// the rest is leaked, since a chain that keeps panicking may never end.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..8 {
        match catch_unwind(AssertUnwindSafe(|| drop(payload))) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn first_panic_wins_across_threads() {
        let c = PanicCarrier::new();
        std::thread::scope(|s| {
            for i in 0..4 {
                let c = &c;
                s.spawn(move || c.catch(|| panic!("thread {i}")));
            }
        });
        let payload = c.take().unwrap();
        assert!(message(&*payload).unwrap().starts_with("thread "));
        assert!(c.take().is_none());
        assert!(c.has_panicked());
    }

    /// Panics when dropped, with a payload that panics when dropped, for
    /// `depth` levels. (Also a value for other modules' tests: 2 is a
    /// value whose panic's payload panics when dropped.)
    pub(crate) struct NestedPanic(pub u32);
    impl Drop for NestedPanic {
        fn drop(&mut self) {
            if self.0 > 0 {
                std::panic::panic_any(NestedPanic(self.0 - 1));
            }
        }
    }

    #[test]
    fn payloads_that_panic_when_dropped_never_unwind() {
        drop_payload(Box::new(NestedPanic(3)));
        drop_payload(Box::new(NestedPanic(7))); // the deepest chain dropped, not leaked
        let c = PanicCarrier::new();
        // A second panic (the first is caught inside it) whose payload
        // panics when dropped, two levels deep.
        catch_unwind(AssertUnwindSafe(|| {
            c.catch(|| {
                c.catch(|| panic!("first"));
                std::panic::panic_any(NestedPanic(2))
            })
        }))
        .expect("catch must not unwind");
        assert_eq!(message(&*c.take().unwrap()), Some("first"));
    }

    #[test]
    fn a_carrier_dropped_while_unwinding_drops_its_payload_quietly() {
        // Without the carrier's own `Drop`, the payload's panic would
        // start while the body's unwinds: an abort.
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let c = PanicCarrier::new();
            c.catch(|| std::panic::panic_any(NestedPanic(2)));
            panic!("the body");
        }));
        assert_eq!(message(&*caught.unwrap_err()), Some("the body"));
        let c = PanicCarrier::new();
        c.catch(|| std::panic::panic_any(NestedPanic(2)));
        drop(c); // and outside unwinding, it does not panic either
    }
}
