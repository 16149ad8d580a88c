//! Futures and streams completed by C callbacks (cargo feature `async`).
//!
//! # Why
//!
//! Many C libraries are asynchronous: they start an operation and call
//! back later, often on a thread of their own, with the `user_data` they
//! were given. The usual bridge to a Rust `Future` is a
//! `Box::into_raw(Box::new(sender))` as `user_data`, and then a second
//! completion, a completion after the future was dropped, or a request C
//! destroys without completing is a use after free, a leak, or a future
//! that hangs forever. Here `user_data` is a registry handle instead: the
//! registry already makes late and double calls detectable
//! ([`Error::Stale`]), and this module builds on that:
//!
//! * [`oneshot()`] gives a handle and a [`Completion`] future. C's callback
//!   calls [`complete`] once; a second or late call is refused with `Stale`
//!   and hands its value back. Dropping the future cancels (the handle
//!   turns stale). A destroy-notify of [`c_unref`](crate::c_unref) without
//!   a completion resolves the future with [`Canceled`].
//! * [`stream()`] gives a handle and a [`CallbackStream`], a
//!   [`futures_core::Stream`]: callbacks on any threads [`push`] items into
//!   a bounded buffer, whose overflow is refused ([`SendError::Full`], the
//!   item handed back); a destroy-notify ends the stream.
//! * [`complete_from_c`] and [`push_from_c`] are the variants for
//!   `extern "C"` trampolines: they never unwind.
//!
//! No executor is needed or assumed: the futures work with any runtime.
//!
//! # Protocol
//!
//! Each request is a registry value (the producer's end, private) and a
//! consumer (the future or stream) sharing one small state behind a mutex.
//!
//! * **Who owns what.** The registry owns the producer's end; C holds only
//!   its handle. The consumer owns the handle's lifetime from the Rust side:
//!   dropping it unrefs the handle. C ends it with a destroy-notify
//!   (`c_unref`), which drops the producer's end, whose `Drop` marks the
//!   state closed and wakes the consumer.
//! * **Exactly once.** A one-shot completion *takes* the producer's end out
//!   of the registry (atomic: one winner); a stream push *borrows* it shared,
//!   so pushes from many threads run at once, ordered by the state's lock.
//!   A one-shot handle C holds in several places
//!   ([`retain`](crate::retain)ed) cannot be taken while the other
//!   references are out: it is completed through a shared borrow instead,
//!   and the state's lock picks the one winner.
//! * **Wakers**: the consumer checks the state and stores its
//!   waker under the lock producers change the state under, so a completion
//!   racing the first poll is never lost; the latest waker replaces older
//!   ones; a producer takes the waker out, unlocks, and only then wakes it.
//!   No waker code and no user `Drop` ever runs under the lock.
//! * **Who wakes whom.** Only the consumer is ever woken, and only by a
//!   producer-side event: a completion, a push that adds an item, or the
//!   producer's end being dropped (destroy-notify). Its wake-up happens on
//!   the thread of that event (often a C thread), after the lock is
//!   released. Dropping the consumer wakes no one: it takes its waker out
//!   with the state change that marks it gone, so the producer's end,
//!   dropped by the consumer's own unref, finds none to wake (a waker woken
//!   from inside the drop of its own future deadlocks an executor that
//!   cancels a task under the lock its `wake` takes).
//! * **Orderings.** The state's mutex orders everything: whatever a
//!   producer wrote before unlocking is visible to the consumer that locks
//!   next. The registry's own take/unref is atomic per handle, which is
//!   what makes "first completion wins" and "destroy vs. complete" races
//!   decide exactly one outcome.
//! * **Nothing leaks.** Every refused value is handed back to the caller
//!   (or dropped by the `_from_c` variants); a value delivered to a future
//!   that is dropped before reading it is dropped with it.
//!
//! The states and transitions of each are at the top of [`mod@oneshot`] and
//! [`mod@stream`].
//!
//! # A C async API as an `async fn`
//!
//! C: `int start_job(int input, void (*done)(void*, int), void (*destroy)(void*), void* user_data);`
//! calls `done` once from its worker thread, then `destroy`; or only
//! `destroy` when the job is canceled.
//!
//! ```
//! use std::ffi::{c_int, c_void};
//! use handle_registry::completion::{complete_from_c, oneshot, Canceled};
//! # mod c {
//! #     use std::ffi::{c_int, c_void};
//! #     // A stand-in for the C library: a worker thread that completes.
//! #     pub unsafe extern "C" fn start_job(
//! #         input: c_int,
//! #         done: unsafe extern "C" fn(*mut c_void, c_int),
//! #         destroy: unsafe extern "C" fn(*mut c_void),
//! #         user_data: *mut c_void,
//! #     ) -> c_int {
//! #         let user_data = user_data as usize;
//! #         std::thread::spawn(move || unsafe {
//! #             done(user_data as *mut c_void, input * 2);
//! #             destroy(user_data as *mut c_void);
//! #         });
//! #         0
//! #     }
//! # }
//! # use c::start_job;
//!
//! unsafe extern "C" fn on_done(user_data: *mut c_void, result: c_int) {
//!     let _ = complete_from_c(user_data, result); // never unwinds; late calls are ignored
//! }
//!
//! async fn job(input: i32) -> Result<i32, Canceled> {
//!     let (user_data, done) = oneshot::<c_int>();
//!     // SAFETY: `on_done` and `c_unref` accept any pointer, on any thread, at any time.
//!     if unsafe { start_job(input, on_done, handle_registry::c_unref, user_data) } != 0 {
//!         return Err(Canceled); // `done` is dropped: the handle is released
//!     }
//!     done.await
//! }
//! # use std::future::Future;
//! # let mut f = std::pin::pin!(job(21));
//! # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! # let out = loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { break v; } std::thread::yield_now(); };
//! # assert_eq!(out, Ok(42));
//! ```

pub mod oneshot;
mod shared;
pub mod stream;

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use oneshot::{complete, complete_from_c, oneshot, Completion};
pub use stream::{push, push_from_c, stream, CallbackStream};

use crate::Error;

/// Why [`complete`] or [`push`] refused a value (which they hand back).
///
/// `#[non_exhaustive]`: keep a catch-all arm.
///
/// ```
/// use handle_registry::completion::{complete, oneshot, SendError};
/// use handle_registry::Error;
///
/// let (user_data, done) = oneshot::<u8>();
/// drop(done); // canceled
/// let (error, value) = complete(user_data, 7).unwrap_err();
/// assert_eq!(error, SendError::Handle(Error::Stale));
/// assert_eq!(value, 7);
/// assert_eq!(error.to_string(), "handle is stale: its value was already removed");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendError {
    /// The registry refused the handle. [`Error::Stale`]: the request was
    /// already completed, destroyed by a destroy-notify, or its future or
    /// stream was dropped. [`Error::WrongType`]: the handle is a request for
    /// another type (or not a request at all). [`Error::Busy`], rarely: the
    /// thread could not prove it is not waiting for itself (it found no
    /// owner id free, conceivable only with a 32-bit target's many live
    /// threads, or it is late in its thread-local teardown); the request
    /// is still live. Others: not a live handle.
    Handle(Error),
    /// A stream's buffer holds `capacity` unread items: the item was
    /// refused, the stream stays open. See [`stream()`].
    Full,
    /// Only from the `_from_c` variants: a panic was caught and discarded,
    /// so that it could not unwind into C. It says nothing of delivery: a
    /// panic of the consumer's waker comes *after* the value was delivered
    /// (the future or stream gets it), one from dropping a refused value
    /// after it was refused.
    Panicked,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Handle(error) => error.fmt(f),
            SendError::Full => f.write_str("stream buffer is full"),
            SendError::Panicked => f.write_str("a panic was caught and discarded"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Handle(error) => Some(error),
            _ => None,
        }
    }
}

/// A [`Completion`]'s request was destroyed without a completion: C called
/// the destroy-notify ([`c_unref`](crate::c_unref)) first, or someone
/// [`unref`](crate::unref)ed the handle.
///
/// ```
/// use handle_registry::completion::Canceled;
///
/// assert_eq!(Canceled.to_string(), "the request was destroyed without a completion");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Canceled;

impl fmt::Display for Canceled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request was destroyed without a completion")
    }
}

impl std::error::Error for Canceled {}

/// A consumer's drop, the same for futures and streams: under the lock,
/// `leave` marks the consumer gone and takes what it leaves behind (a
/// delivered value, unread items), and the waker is taken out with it, so
/// that the producer's end, dropped by the unref that follows, finds none
/// to wake. Then the handle is removed, and only then, outside the lock,
/// the waker and the leftovers are dropped: nothing stays in the registry
/// whatever their `Drop`s do.
fn end_consumer<S, L: IntoIterator>(
    shared: &shared::Shared<S>,
    user_data: *mut c_void,
    leave: impl FnOnce(&mut S) -> L,
) {
    let (leftovers, waker) = shared.update_deferred(|state| (leave(state), true));
    // Every reference (a retained request is canceled too), and quietly:
    // the handle is stale already after a completion or a destroy-notify,
    // which is no refusal.
    let _ = crate::Registry::global().unref_with(user_data, true);
    // The waker is the executor's, and its drop may panic too: caught like
    // the leftovers', since the consumer may be dropped by an unwind.
    let panic = catch_unwind(AssertUnwindSafe(move || drop(waker))).err();
    drop_leftovers(panic, leftovers);
}

/// Drops leftovers each in turn, after `panic`, one already caught. The
/// first panic propagates once all are dropped, as from dropping any
/// collection, unless this thread is already unwinding, where it is
/// discarded rather than abort the process.
fn drop_leftovers<V>(
    mut panic: Option<Box<dyn std::any::Any + Send>>,
    leftovers: impl IntoIterator<Item = V>,
) {
    for value in leftovers {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            crate::panic::keep_first(&mut panic, payload);
        }
    }
    if let Some(payload) = panic {
        crate::panic::resume_unless_unwinding(payload);
    }
}

/// Runs `f`, turning a panic into [`SendError::Panicked`]; never unwinds.
fn catch_for_c(f: impl FnOnce() -> Result<(), SendError>) -> Result<(), SendError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            // Dropping the payload may panic too: catch that, and leak the
            // second payload rather than unwind into C.
            crate::panic::drop_payload(payload);
            Err(SendError::Panicked)
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A minimal executor for tests: a thread-park waker and `block_on`
    //! (Miri runs these; no runtime needed).

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::Thread;

    use futures_core::Stream;

    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    pub fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    pub fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut *stream).poll_next(cx)
        }))
    }

    pub struct CountingWaker(Arc<AtomicUsize>);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    pub fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(CountingWaker(count.clone()))), count)
    }

    pub fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    /// The global registry's recent refusals of `user_data`, of `error` or,
    /// with `None`, of any kind.
    pub fn logged_for(user_data: *mut std::ffi::c_void, error: Option<crate::Error>) -> usize {
        let failures = crate::Registry::global().failures();
        let this =
            |f: &&crate::Failure| f.handle() == user_data && error.is_none_or(|e| f.error() == e);
        failures.recent().iter().filter(this).count()
    }

    pub fn poll_next_once<S: Stream + Unpin>(
        stream: &mut S,
        waker: &Waker,
    ) -> Poll<Option<S::Item>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(waker))
    }
}
