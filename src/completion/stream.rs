//! Streams of callbacks: a `user_data` handle whose callbacks [`push`]
//! items into a bounded buffer, read as a [`futures_core::Stream`].
//!
//! # Protocol
//!
//! The registry holds a private `Feeder<T>` under the handle; it and the
//! [`CallbackStream`] share a state (the waker protocol of the
//! [module docs](super)): a buffer of
//! at most `capacity` items, `open` (the feeder is alive) and
//! `receiver_gone`.
//!
//! * **Push.** [`push`] borrows the `Feeder` *shared*
//!   ([`restore_ref`](crate::restore_ref)), so callbacks on many threads
//!   push at once, and appends under the lock. The lock orders all pushes;
//!   pushes made by one thread are appended in the order that thread made
//!   them. Items of different threads interleave. The waker is woken after
//!   both the lock and the registry borrow are released.
//! * **Overflow: refuse.** A push into a full buffer fails at once with
//!   [`SendError::Full`] and hands the item back: the C thread is never
//!   blocked by a slow consumer and nothing is dropped silently. The
//!   trampoline chooses: drop it, count it, or retry later. (Blocking would
//!   let an async consumer stall C's event loop; dropping the oldest would
//!   lose data without telling anyone.)
//! * **End of stream, from C.** A destroy-notify ([`c_unref`](crate::c_unref)
//!   on the handle) drops the `Feeder`, whose `Drop` clears `open` and wakes
//!   the stream: the items already buffered are still delivered, then the
//!   stream ends (`None`). A push after that is [`Error::Stale`]. If a push
//!   is still running on another thread, the registry drops the `Feeder`
//!   when that push ends, so the end never overtakes an accepted item.
//! * **End of stream, from Rust.** Dropping the [`CallbackStream`] sets
//!   `receiver_gone` (a racing push that already borrowed the `Feeder` sees
//!   it and gets `Stale`, with its item back) and takes its waker out,
//!   unrefs the handle (later pushes are `Stale`; the feeder's drop wakes
//!   no one), and then drops the buffered items, outside the lock.
//! * **Wakers** follow the [module's protocol](super): a push that makes an item
//!   available takes the waker and wakes it after unlocking.
//!
//! ```
//! use handle_registry::completion::{push, stream, SendError};
//! use handle_registry::Error;
//!
//! let (user_data, items) = stream::<u16>(2);
//! push(user_data, 1u16).unwrap();
//! push(user_data, 2u16).unwrap();
//! assert_eq!(push(user_data, 3u16), Err((SendError::Full, 3))); // refused, not dropped
//! drop(items); // the Rust side ends it
//! assert_eq!(push(user_data, 4u16), Err((SendError::Handle(Error::Stale), 4)));
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::stream::{FusedStream, Stream};

use super::shared::Shared;
use super::{catch_for_c, SendError};
use crate::Error;

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    open: bool,
    receiver_gone: bool,
}

/// What the registry holds under the handle: the producers' end.
struct Feeder<T> {
    shared: Arc<Shared<State<T>>>,
}

impl<T> Drop for Feeder<T> {
    fn drop(&mut self) {
        self.shared.update(|state| {
            state.open = false;
            // A consumer that is gone took its waker already.
            ((), !state.receiver_gone)
        });
    }
}

/// Creates a stream fed by callbacks: a `user_data` handle to give C, and
/// the [`CallbackStream`] that yields what its callbacks [`push`], holding
/// at most `capacity` items not yet read.
///
/// Give C a trampoline that calls [`push`] (or [`push_from_c`]) with
/// `user_data`, and, for its destroy-notify slot,
/// [`c_unref`](crate::c_unref), which ends the stream.
///
/// `capacity` bounds the buffer; it is not allocated up front (the buffer
/// grows as items wait), so `usize::MAX` is a stream without a bound.
///
/// # Panics
///
/// If `capacity` is 0, or the global registry is full.
///
/// ```
/// use handle_registry::completion::{push, stream};
/// use futures_core::Stream;
/// # fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = std::pin::Pin::new(&mut *s).poll_next(&mut cx) { return v; } std::thread::yield_now(); }
/// # }
///
/// let (user_data, mut items) = stream::<u32>(16);
/// let user_data_bits = user_data as usize; // to move it to the thread
/// std::thread::spawn(move || {
///     let user_data = user_data_bits as *mut std::ffi::c_void;
///     for i in 0..3u32 {
///         push(user_data, i).unwrap();
///     }
///     // C's destroy-notify ends the stream:
///     handle_registry::c_unref(user_data);
/// });
/// assert_eq!(next(&mut items), Some(0));
/// assert_eq!(next(&mut items), Some(1));
/// assert_eq!(next(&mut items), Some(2));
/// assert_eq!(next(&mut items), None);
/// ```
#[track_caller]
pub fn stream<T: Send + 'static>(capacity: usize) -> (*mut c_void, CallbackStream<T>) {
    assert!(
        capacity > 0,
        "a callback stream needs a capacity of at least 1"
    );
    let shared = Arc::new(Shared::new(State {
        // A bound, not a size: allocating it up front made a large bound
        // an allocation failure (an abort), or a capacity overflow.
        items: VecDeque::new(),
        capacity,
        open: true,
        receiver_gone: false,
    }));
    let user_data = crate::save(Feeder {
        shared: Arc::clone(&shared),
    });
    (
        user_data,
        CallbackStream {
            shared,
            handle: user_data.addr(),
            finished: false,
        },
    )
}

/// Appends `item` to the stream `user_data` names. Call it from the
/// trampoline C calls, on any thread, from many threads at once.
///
/// # Errors
///
/// The item is handed back, never leaked:
///
/// * [`SendError::Full`]: `capacity` items are waiting to be read. Nothing
///   was changed; the stream stays open.
/// * `SendError::Handle(Error::Stale)`: the stream ended (destroy-notify)
///   or was dropped.
/// * `SendError::Handle(..)` otherwise: not a live stream of `T`. `T` must
///   be exactly the stream's item type: an unsuffixed integer literal is an
///   `i32`, so pushing `1` into a stream of `u8` is a
///   [`WrongType`](Error::WrongType) (refused, never undefined behaviour).
///
/// ```
/// use handle_registry::completion::{push, stream, SendError};
/// use handle_registry::Error;
///
/// let (user_data, items) = stream::<char>(1);
/// assert_eq!(push(user_data, 'a'), Ok(()));
/// assert_eq!(push(user_data, 'b'), Err((SendError::Full, 'b')));
/// drop(items);
/// assert_eq!(push(user_data, 'c'), Err((SendError::Handle(Error::Stale), 'c')));
/// ```
pub fn push<T: Send + 'static>(user_data: *mut c_void, item: T) -> Result<(), (SendError, T)> {
    let feeder = match crate::restore_ref::<Feeder<T>>(user_data) {
        Ok(feeder) => feeder,
        Err(error) => return Err((SendError::Handle(error), item)),
    };
    let (out, waker) = feeder.shared.update_deferred(|state| {
        if state.receiver_gone {
            (Err((SendError::Handle(Error::Stale), item)), false)
        } else if state.items.len() >= state.capacity {
            (Err((SendError::Full, item)), false)
        } else {
            state.items.push_back(item);
            (Ok(()), true)
        }
    });
    // Release the registry borrow before running the executor's code.
    drop(feeder);
    if let Some(waker) = waker {
        waker.wake();
    }
    out
}

/// [`push`] for an `extern "C"` trampoline: never unwinds.
///
/// A refused item is dropped here. A panic (from the consuming task's
/// waker, or from dropping a refused item) is caught and discarded, and
/// reported as [`SendError::Panicked`].
///
/// ```
/// use std::ffi::{c_int, c_void};
/// use handle_registry::completion::{push_from_c, stream, SendError};
///
/// unsafe extern "C" fn on_event(user_data: *mut c_void, value: c_int) {
///     if push_from_c(user_data, value) == Err(SendError::Full) {
///         // Overflow policy of this wrapper: drop the event (count it, log it...).
///     }
/// }
///
/// let (user_data, events) = stream::<c_int>(8);
/// // SAFETY: `on_event` accepts any pointer.
/// unsafe { on_event(user_data, 1) };
/// drop(events);
/// unsafe { on_event(user_data, 2) }; // stale: ignored
/// ```
pub fn push_from_c<T: Send + 'static>(user_data: *mut c_void, item: T) -> Result<(), SendError> {
    catch_for_c(move || {
        push(user_data, item).map_err(|(error, item)| {
            drop(item);
            error
        })
    })
}

/// A [`Stream`] of the items pushed through a [`stream()`] handle.
///
/// Yields the items in the order they were accepted (per pushing thread:
/// the order of its pushes), then ends (`None`) once the handle was
/// destroyed (a destroy-notify called [`c_unref`](crate::c_unref)) and
/// every buffered item was read. Dropping it ends the stream for C: later
/// pushes are refused with `Stale`, and unread items are dropped. A panic
/// from an item's `Drop` (the first), or from the stored waker's, comes out
/// of the stream's drop once everything is dropped (caught and discarded
/// when the thread is already unwinding: never an abort). A stream passed
/// to `mem::forget` leaks its buffer (and the items in it); C's later
/// pushes still get the answers above, and a destroy-notify still removes
/// the handle.
///
/// ```
/// use handle_registry::completion::{push, stream};
/// use futures_core::Stream;
///
/// let (user_data, items) = stream::<u8>(4);
/// push(user_data, 1u8).unwrap();
/// assert_eq!(items.size_hint(), (1, None));
/// assert_eq!(items.user_data(), user_data);
/// ```
#[must_use = "dropping a CallbackStream ends it"]
pub struct CallbackStream<T> {
    shared: Arc<Shared<State<T>>>,
    /// The handle's bits; the handle is an integer, not a pointer to memory.
    handle: usize,
    finished: bool,
}

impl<T> CallbackStream<T> {
    /// The `user_data` handle C was (or is to be) given for this stream.
    ///
    /// ```
    /// let (user_data, items) = handle_registry::completion::stream::<()>(1);
    /// assert_eq!(items.user_data(), user_data);
    /// ```
    pub fn user_data(&self) -> *mut c_void {
        std::ptr::without_provenance_mut(self.handle)
    }
}

impl<T> Stream for CallbackStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let out = this
            .shared
            .poll_with(cx, |state| match state.items.pop_front() {
                Some(item) => Some(Some(item)),
                None if !state.open => Some(None),
                None => None,
            });
        if let Poll::Ready(None) = out {
            this.finished = true;
        }
        out
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.finished {
            return (0, Some(0));
        }
        let buffered = self.shared.update(|state| (state.items.len(), false));
        (buffered, None)
    }
}

impl<T> FusedStream for CallbackStream<T> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<T> Drop for CallbackStream<T> {
    fn drop(&mut self) {
        super::end_consumer(&self.shared, self.user_data(), |state| {
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        });
    }
}

impl<T> std::fmt::Debug for CallbackStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackStream")
            .field("user_data", &self.user_data())
            .field("finished", &self.finished)
            .finish()
    }
}

// `Feeder<T>` must be storable in the registry and shareable by pushers.
const _: fn() = || {
    fn storable<T: Any + Send + Sync>() {}
    storable::<Feeder<Vec<u8>>>();
};

#[cfg(test)]
mod tests {
    use super::super::test_support::{counting_waker, logged_for, next, poll_next_once};
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn dropping_the_stream_wakes_no_one() {
        let (user_data, mut items) = stream::<u8>(4);
        let (waker, count) = counting_waker();
        assert!(poll_next_once(&mut items, &waker).is_pending());
        drop(items);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(
            push(user_data, 1u8),
            Err((SendError::Handle(Error::Stale), 1))
        );
    }

    #[test]
    fn a_stream_dropped_after_its_end_is_no_refusal() {
        let (user_data, mut items) = stream::<u8>(4);
        crate::c_unref(user_data); // C ends it
        assert_eq!(next(&mut items), None);
        drop(items); // its own unref finds the handle stale: not logged
        assert_eq!(logged_for(user_data, None), 0);
    }

    #[test]
    fn the_capacity_is_a_bound_not_an_allocation() {
        // Allocated up front, this was an abort (an allocation failure) or a
        // capacity overflow.
        let (user_data, mut items) = stream::<[u8; 64]>(usize::MAX);
        push(user_data, [1u8; 64]).unwrap();
        assert_eq!(next(&mut items), Some([1u8; 64]));
        let (_user_data, items) = stream::<[u8; 64]>(usize::MAX / 2);
        drop(items);
    }

    #[test]
    fn unread_items_that_panic_when_dropped_leave_nothing_behind() {
        use crate::panic::tests::NestedPanic;
        let (user_data, items) = stream::<NestedPanic>(4);
        for _ in 0..3 {
            push(user_data, NestedPanic(1)).map_err(|e| e.0).unwrap();
        }
        // Every item is dropped, the first panic propagates, and the
        // handle is gone.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(items)));
        assert!(caught.is_err());
        assert!(!crate::Registry::global().is_live(user_data));
    }

    #[test]
    fn items_then_end_on_destroy_notify() {
        let (user_data, mut items) = stream::<u8>(4);
        push(user_data, 1u8).unwrap();
        push(user_data, 2u8).unwrap();
        crate::c_unref(user_data);
        assert_eq!(
            push(user_data, 3u8),
            Err((SendError::Handle(Error::Stale), 3u8))
        );
        assert_eq!(next(&mut items), Some(1));
        assert_eq!(next(&mut items), Some(2));
        assert_eq!(next(&mut items), None);
        assert!(items.is_terminated());
        assert_eq!(next(&mut items), None);
    }

    #[test]
    fn overflow_refuses_and_recovers() {
        let (user_data, mut items) = stream::<u8>(2);
        push(user_data, 1u8).unwrap();
        push(user_data, 2u8).unwrap();
        assert_eq!(push(user_data, 3u8), Err((SendError::Full, 3u8)));
        assert_eq!(next(&mut items), Some(1));
        push(user_data, 3u8).unwrap();
        assert_eq!(next(&mut items), Some(2));
        assert_eq!(next(&mut items), Some(3));
    }

    #[test]
    fn push_wakes_the_latest_waker() {
        let (user_data, mut items) = stream::<u8>(2);
        let (first, first_count) = counting_waker();
        let (second, second_count) = counting_waker();
        assert!(poll_next_once(&mut items, &first).is_pending());
        assert!(poll_next_once(&mut items, &second).is_pending());
        push(user_data, 1u8).unwrap();
        push(user_data, 2u8).unwrap(); // waker already taken: no second wake
        assert_eq!(first_count.load(Ordering::SeqCst), 0);
        assert_eq!(second_count.load(Ordering::SeqCst), 1);
        assert_eq!(poll_next_once(&mut items, &second), Poll::Ready(Some(1)));
    }

    #[test]
    fn wrong_type_is_refused() {
        let (user_data, _items) = stream::<u8>(2);
        let (error, item) = push(user_data, 1u16).unwrap_err();
        assert!(matches!(error, SendError::Handle(Error::WrongType { .. })));
        assert_eq!(item, 1);
    }

    #[test]
    #[should_panic(expected = "capacity of at least 1")]
    fn zero_capacity_panics() {
        let _ = stream::<u8>(0);
    }
}
