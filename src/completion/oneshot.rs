//! One-shot completion: a `user_data` handle that C completes once, and the
//! [`Completion`] future that resolves with the value.
//!
//! # Protocol
//!
//! The registry holds a private `Completer<T>` under the handle; it and the
//! future share a state (the waker protocol of the
//! [module docs](super)):
//!
//! ```text
//!            complete() takes the Completer, stores the value
//!   Pending ─────────────────────────────────────────────▶ Done(T) ──poll──▶ Taken
//!      │
//!      │  the Completer is dropped without a value: destroy-notify
//!      │  (c_unref / unref on the handle), or a refused completion
//!      ╰───────────────────────────────────────────────────▶ Closed ──poll──▶ Err(Canceled)
//! ```
//!
//! * **Exactly once.** [`complete`] *takes* the `Completer` out of the
//!   registry. The registry's take is atomic, so of two racing completions
//!   one gets it and the other gets [`Error::Stale`]; so does a completion
//!   after a destroy-notify, or after the future was dropped.
//! * **Cancel on drop.** Dropping the [`Completion`] first marks the state
//!   `receiver_gone` (and takes out a value already delivered, to drop it
//!   after unlocking), then unrefs the handle. A completion that took the
//!   `Completer` before the unref sees `receiver_gone` under the lock and
//!   hands its value back with `Stale`; one that comes after the unref gets
//!   `Stale` from the registry. A value is never stored where no one will
//!   take or drop it.
//! * **Destroy without completing.** The `Completer`'s `Drop` turns
//!   `Pending` into `Closed` and wakes the future, which resolves with
//!   `Err(Canceled)` instead of hanging. After a completion the handle is
//!   already stale, so the destroy-notify C sends next is ignored.
//! * **Wakers** follow the [module's protocol](super): the latest waker is the one
//!   woken, after the lock is released.
//!
//! ```
//! use handle_registry::completion::{complete, oneshot, Canceled, SendError};
//! use handle_registry::Error;
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//!
//! // Pending -> Done -> Taken
//! let (user_data, done) = oneshot::<&str>();
//! complete(user_data, "value").unwrap();
//! assert_eq!(block_on(done), Ok("value"));
//!
//! // Pending -> Closed: destroyed without a completion
//! let (user_data, done) = oneshot::<&str>();
//! handle_registry::c_unref(user_data);
//! assert_eq!(block_on(done), Err(Canceled));
//! assert_eq!(complete(user_data, "late"), Err((SendError::Handle(Error::Stale), "late")));
//! ```

use std::any::Any;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_core::future::FusedFuture;

use super::shared::Shared;
use super::{catch_for_c, Canceled, SendError};
use crate::Error;

enum Slot<T> {
    Pending,
    Done(T),
    Closed,
    Taken,
}

struct State<T> {
    slot: Slot<T>,
    receiver_gone: bool,
}

/// What the registry holds under the handle: the producer's end.
struct Completer<T> {
    shared: Arc<Shared<State<T>>>,
}

/// What [`Completer::send`] did, and the waker to wake once the caller has
/// released its borrow of the completer.
type Sent<T> = (Result<(), (SendError, T)>, Option<Waker>);

impl<T> Completer<T> {
    /// Delivers `value` if the request is still pending: the first send
    /// wins (a taken completer has no rival; a retained one is borrowed
    /// shared, and this lock orders the rivals).
    fn send(&self, value: T) -> Sent<T> {
        self.shared.update_deferred(|state| {
            if state.receiver_gone || !matches!(state.slot, Slot::Pending) {
                // The future was dropped and is unreffing the handle, or a
                // rival completed it: the same answer as after the unref.
                (Err((SendError::Handle(Error::Stale), value)), false)
            } else {
                state.slot = Slot::Done(value);
                (Ok(()), true)
            }
        })
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        self.shared.update(|state| {
            if let Slot::Pending = state.slot {
                state.slot = Slot::Closed;
                // A consumer that is gone took its waker already.
                ((), !state.receiver_gone)
            } else {
                ((), false)
            }
        });
    }
}

/// Creates a one-shot completion: a `user_data` handle to give C, and the
/// future that resolves with the value C completes it with.
///
/// Give C, beside `user_data`, a trampoline that calls [`complete`] (or
/// [`complete_from_c`]) with it once, and, if the C API has a
/// destroy-notify slot, [`c_unref`](crate::c_unref): a request C destroys
/// without completing then resolves the future with [`Canceled`].
///
/// Dropping the future cancels: the handle turns stale and a late
/// completion is refused harmlessly.
///
/// # Panics
///
/// If the global registry is full (see [`save`](crate::save)).
///
/// ```
/// use handle_registry::completion::{complete, oneshot};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::yield_now(); }
/// # }
///
/// let (user_data, done) = oneshot::<String>();
/// // Any thread, e.g. one C started, completes it through a trampoline:
/// let user_data = user_data as usize; // to move it to the thread
/// std::thread::spawn(move || complete(user_data as *mut _, String::from("ok")).unwrap());
/// assert_eq!(block_on(done), Ok(String::from("ok")));
/// ```
#[track_caller]
pub fn oneshot<T: Send + 'static>() -> (*mut c_void, Completion<T>) {
    let shared = Arc::new(Shared::new(State {
        slot: Slot::Pending,
        receiver_gone: false,
    }));
    let user_data = crate::save(Completer {
        shared: Arc::clone(&shared),
    });
    (
        user_data,
        Completion {
            shared,
            handle: user_data.addr(),
            finished: false,
        },
    )
}

/// Completes the request `user_data` names with `value`: its
/// [`Completion`] resolves with `Ok(value)`.
///
/// Call it from the trampoline C calls, on any thread. It never blocks
/// beyond a short lock.
///
/// # Errors
///
/// The value is handed back, never leaked:
///
/// * `SendError::Handle(Error::Stale)`: already completed, destroyed (by a
///   destroy-notify), or the future was dropped.
/// * `SendError::Handle(Error::WrongType { .. })`: the handle is a
///   completion of another type (`T` must match exactly: an unsuffixed
///   integer literal is an `i32`), or another value; `Null`/`Invalid`/...:
///   not a live handle.
///
/// A wrong type does not consume the request: it can still be completed
/// with the right type.
///
/// A request C holds in several places ([`retain`](crate::retain)ed, one
/// destroy-notify each) is completed in place: the future resolves, the
/// handle stays live until its last [`c_unref`](crate::c_unref) or until
/// the future is dropped (which removes every reference), and a second
/// completion is `Stale` as above.
///
/// ```
/// use handle_registry::completion::{complete, oneshot, SendError};
/// use handle_registry::Error;
///
/// let (user_data, done) = oneshot::<u32>();
/// assert_eq!(complete(user_data, 1u32), Ok(()));
/// // A second completion is refused, and gives its value back.
/// assert_eq!(complete(user_data, 2u32), Err((SendError::Handle(Error::Stale), 2)));
/// drop(done);
/// ```
pub fn complete<T: Send + 'static>(user_data: *mut c_void, value: T) -> Result<(), (SendError, T)> {
    // `take_unless_retained`: a retained request is not a refusal here.
    let global = crate::Registry::global();
    // A completer that refuses (completed already, or its future is gone)
    // is a refusal like any `Stale` handle: in the failure log.
    let send = |completer: &Completer<T>, value| {
        let sent = completer.send(value);
        if sent.0.is_err() {
            let expected = std::any::type_name::<Completer<T>>();
            global.refused(user_data, Error::Stale, expected);
        }
        sent
    };
    let (result, waker) = match global.take_unless_retained::<Completer<T>>(user_data) {
        Ok(completer) => send(&completer, value),
        Err(Error::Retained) => match global.restore_ref::<Completer<T>>(user_data) {
            Ok(completer) => send(&completer, value),
            Err(error) => (Err((SendError::Handle(error), value)), None),
        },
        Err(error) => (Err((SendError::Handle(error), value)), None),
    };
    // The completer (or the borrow of it) is released: wake.
    if let Some(waker) = waker {
        waker.wake();
    }
    result
}

/// [`complete`] for an `extern "C"` trampoline: never unwinds.
///
/// A refused value is dropped here. A panic (from the awaiting task's
/// waker, or from dropping a refused value) is caught and discarded, and
/// reported as [`SendError::Panicked`].
///
/// ```
/// use std::ffi::{c_int, c_void};
/// use handle_registry::completion::{complete_from_c, oneshot};
///
/// // What C is given: a trampoline that never unwinds into C.
/// unsafe extern "C" fn on_done(user_data: *mut c_void, result: c_int) {
///     let _ = complete_from_c(user_data, result); // late or double calls: ignored
/// }
///
/// let (user_data, done) = oneshot::<c_int>();
/// // SAFETY: `on_done` accepts any pointer.
/// unsafe { on_done(user_data, 42) };
/// unsafe { on_done(user_data, 43) }; // refused: 43 is dropped
/// # drop(done);
/// ```
pub fn complete_from_c<T: Send + 'static>(
    user_data: *mut c_void,
    value: T,
) -> Result<(), SendError> {
    catch_for_c(move || {
        complete(user_data, value).map_err(|(error, value)| {
            drop(value);
            error
        })
    })
}

/// The future of a [`oneshot()`] completion.
///
/// Resolves with `Ok(value)` once C completes it, or `Err(Canceled)` once
/// the handle is destroyed without a completion (a destroy-notify called
/// [`c_unref`](crate::c_unref) on it). Dropping it cancels the request: its
/// handle turns stale, and a value delivered but not yet awaited is dropped.
/// A panic from that value's `Drop`, or from the stored waker's, comes out
/// of the future's drop (caught and discarded when the thread is already
/// unwinding: never an abort). A future passed to `mem::forget` leaks what
/// it shares with the handle (and a value delivered to it); C's later calls
/// still get the answers above, and a destroy-notify still removes the
/// handle. So does a future completed with a value that owns it: a cycle,
/// which leaks as an `Arc` cycle does.
///
/// Polling it again after it returned `Ready` panics, as is usual for
/// futures; [`FusedFuture::is_terminated`] tells whether it did.
///
/// ```
/// use handle_registry::completion::{oneshot, Canceled};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::yield_now(); }
/// # }
///
/// let (user_data, done) = oneshot::<i32>();
/// // C destroys the request without completing it:
/// handle_registry::c_unref(user_data);
/// assert_eq!(block_on(done), Err(Canceled));
/// ```
#[must_use = "dropping a Completion cancels the request"]
pub struct Completion<T> {
    shared: Arc<Shared<State<T>>>,
    /// The handle's bits; the handle is an integer, not a pointer to memory.
    handle: usize,
    finished: bool,
}

impl<T> Completion<T> {
    /// The `user_data` handle C was (or is to be) given for this request.
    ///
    /// ```
    /// let (user_data, done) = handle_registry::completion::oneshot::<()>();
    /// assert_eq!(done.user_data(), user_data);
    /// ```
    pub fn user_data(&self) -> *mut c_void {
        std::ptr::without_provenance_mut(self.handle)
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.finished, "Completion polled after it returned Ready");
        let out = this.shared.poll_with(cx, |state| {
            match std::mem::replace(&mut state.slot, Slot::Taken) {
                Slot::Done(value) => Some(Ok(value)),
                Slot::Closed => Some(Err(Canceled)),
                pending @ Slot::Pending => {
                    state.slot = pending;
                    None
                }
                Slot::Taken => unreachable!("`finished` guards a second take"),
            }
        });
        if out.is_ready() {
            this.finished = true;
        }
        out
    }
}

impl<T> FusedFuture for Completion<T> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        super::end_consumer(&self.shared, self.user_data(), |state| {
            state.receiver_gone = true;
            match std::mem::replace(&mut state.slot, Slot::Taken) {
                Slot::Done(value) => Some(value),
                other => {
                    state.slot = other;
                    None
                }
            }
        });
    }
}

impl<T> std::fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("user_data", &self.user_data())
            .field("finished", &self.finished)
            .finish()
    }
}

// `Completer<T>` must be storable in the registry.
const _: fn() = || {
    fn storable<T: Any + Send>() {}
    storable::<Completer<Vec<u8>>>();
};

#[cfg(test)]
mod tests {
    use super::super::test_support::{block_on, counting_waker, logged_for, poll_once};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn dropping_the_future_wakes_no_one() {
        // Its own waker, woken from inside its drop, deadlocks an executor
        // that cancels a task under the lock its `wake` takes.
        let (user_data, mut done) = oneshot::<u8>();
        let (waker, count) = counting_waker();
        assert!(poll_once(&mut done, &waker).is_pending());
        drop(done);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(
            complete(user_data, 1u8).map_err(|e| e.0),
            Err(SendError::Handle(Error::Stale))
        );
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_retained_request_is_completed_in_place() {
        // C keeps `user_data` in two places, with a destroy-notify each.
        let (user_data, done) = oneshot::<u32>();
        crate::retain(user_data).unwrap();
        assert_eq!(complete(user_data, 5u32), Ok(()));
        assert_eq!(
            complete(user_data, 6u32),
            Err((SendError::Handle(Error::Stale), 6))
        );
        // The second completion is a refusal in the log, as on a plain
        // request; the first, and the retain, are not.
        let logged = |error: Error| logged_for(user_data, Some(error));
        assert_eq!((logged(Error::Stale), logged(Error::Retained)), (1, 0));
        assert_eq!(block_on(done), Ok(5)); // its drop removes every reference
        assert!(!crate::Registry::global().is_live(user_data));
        crate::c_unref(user_data);
        crate::c_unref(user_data); // the second destroy-notify: stale, ignored
        assert!(!crate::Registry::global().is_live(user_data));
        // A retained request destroyed without a completion still cancels.
        let (user_data, done) = oneshot::<u32>();
        crate::retain(user_data).unwrap();
        crate::c_unref(user_data);
        crate::c_unref(user_data);
        assert_eq!(block_on(done), Err(super::super::Canceled));
    }

    #[test]
    fn a_value_that_panics_when_dropped_leaves_nothing_behind() {
        use crate::panic::tests::NestedPanic;
        // Dropped with the future: the handle is unreffed first, then the
        // value's panic propagates.
        let (user_data, done) = oneshot::<NestedPanic>();
        complete(user_data, NestedPanic(1))
            .map_err(|e| e.0)
            .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(done)));
        assert!(caught.is_err());
        assert!(!crate::Registry::global().is_live(user_data));
        // Dropped while the thread unwinds: discarded, not an abort.
        let (user_data, done) = oneshot::<NestedPanic>();
        complete(user_data, NestedPanic(1))
            .map_err(|e| e.0)
            .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _done = done;
            panic!("the body");
        }));
        assert_eq!(
            crate::panic::message(&*caught.unwrap_err()),
            Some("the body")
        );
        assert!(!crate::Registry::global().is_live(user_data));
    }

    #[test]
    fn a_completed_futures_drop_is_no_refusal() {
        // Its handle is stale by then (the completion took it): the
        // future's own unref must not enter the failure log.
        let (user_data, done) = oneshot::<u8>();
        complete(user_data, 5u8).unwrap();
        assert_eq!(block_on(done), Ok(5));
        assert_eq!(logged_for(user_data, None), 0);
    }

    #[test]
    fn completed_before_first_poll() {
        let (user_data, done) = oneshot::<u8>();
        complete(user_data, 5u8).unwrap();
        assert_eq!(block_on(done), Ok(5));
    }

    #[test]
    fn completed_after_first_poll_wakes_latest_waker() {
        let (user_data, mut done) = oneshot::<u8>();
        let (first, first_count) = counting_waker();
        let (second, second_count) = counting_waker();
        assert!(poll_once(&mut done, &first).is_pending());
        assert!(poll_once(&mut done, &second).is_pending());
        complete(user_data, 9u8).unwrap();
        assert_eq!(first_count.load(Ordering::SeqCst), 0);
        assert_eq!(second_count.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut done, &second), Poll::Ready(Ok(9)));
        assert!(done.is_terminated());
    }

    #[test]
    fn wrong_type_gives_value_back_and_keeps_request() {
        let (user_data, done) = oneshot::<u8>();
        let err = complete(user_data, String::from("no")).unwrap_err();
        assert!(matches!(err.0, SendError::Handle(Error::WrongType { .. })));
        assert_eq!(err.1, "no");
        complete(user_data, 1u8).unwrap();
        assert_eq!(block_on(done), Ok(1));
    }

    #[test]
    fn undelivered_value_is_dropped_with_the_future() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        assert!(complete(user_data, Counted(drops.clone())).is_ok());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(done);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn null_and_garbage_are_refused() {
        assert_eq!(
            complete(std::ptr::null_mut(), 1u8),
            Err((SendError::Handle(Error::Null), 1))
        );
        assert_eq!(
            complete_from_c(std::ptr::null_mut(), 1u8),
            Err(SendError::Handle(Error::Null))
        );
    }
}
