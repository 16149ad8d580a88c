//! Bindings of `native/async_demo.h`, and the seed's C library made
//! asynchronous with `handle_registry::completion`: a traversal on a C
//! thread as a future, a C thread's stream of items, and C's later
//! subscription calls as a `Stream`.
//!
//! Shared by `tests/async_native.rs` and `examples/async_traverse.rs` (which
//! includes it with `#[path]`): the only files of the `async` work that
//! depend on the C library.
#![allow(dead_code)] // each includer uses a part

use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_core::Stream;
use handle_registry::completion::{
    complete_from_c, oneshot, push_from_c, stream, CallbackStream, Canceled, SendError,
};
use handle_registry::{c_unref, demo::ffi};

pub type DoneFn = unsafe extern "C" fn(user_data: *mut c_void, result: c_int);
pub type RetryItemFn = unsafe extern "C" fn(user_data: *mut c_void, item: i64) -> c_int;
pub type DestroyFn = unsafe extern "C" fn(user_data: *mut c_void);

unsafe extern "C" {
    /// See `native/async_demo.h`.
    pub fn async_demo_count_blocks(
        filename: *const std::ffi::c_char,
        done: Option<DoneFn>,
        destroy: Option<DestroyFn>,
        user_data: *mut c_void,
    ) -> c_int;
    /// See `native/async_demo.h`.
    pub fn async_demo_abandon(destroy: Option<DestroyFn>, user_data: *mut c_void) -> c_int;
    /// See `native/async_demo.h`.
    pub fn async_demo_emit(
        n: i64,
        item: Option<RetryItemFn>,
        destroy: Option<DestroyFn>,
        user_data: *mut c_void,
    ) -> c_int;
}

/// Why a C job gave no count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobError {
    /// The C call that starts it failed (a `TRAVERSE_ERR_*` code).
    Start(c_int),
    /// The traversal on the C thread failed (a `TRAVERSE_ERR_*` code).
    Failed(c_int),
    /// C destroyed the request without completing it.
    Canceled,
}

impl From<Canceled> for JobError {
    fn from(_: Canceled) -> Self {
        JobError::Canceled
    }
}

/// The completion trampoline C calls on its thread. Never unwinds; a late
/// or second call is refused and ignored.
pub unsafe extern "C" fn on_done(user_data: *mut c_void, result: c_int) {
    let _ = complete_from_c(user_data, result);
}

/// Counts the blocks of `path` on a C thread; the task awaits the C
/// thread's completion.
pub async fn count_blocks(path: &Path) -> Result<usize, JobError> {
    let filename = CString::new(path.to_str().expect("UTF-8 path")).expect("no NUL");
    let (user_data, done) = oneshot::<c_int>();
    // SAFETY: `filename` is NUL-terminated and copied by C; `on_done` and
    // `c_unref` accept any pointer, on any thread, at any time.
    let started = unsafe {
        async_demo_count_blocks(filename.as_ptr(), Some(on_done), Some(c_unref), user_data)
    };
    if started != ffi::TRAVERSE_OK {
        return Err(JobError::Start(started)); // `done` dropped: handle released
    }
    match done.await? {
        n if n >= 0 => Ok(n as usize),
        code => Err(JobError::Failed(code)),
    }
}

/// A request the C library gives up on: only its destroy-notify runs.
pub async fn abandoned() -> Result<c_int, JobError> {
    let (user_data, done) = oneshot::<c_int>();
    // SAFETY: `c_unref` accepts any pointer.
    let started = unsafe { async_demo_abandon(Some(c_unref), user_data) };
    if started != ffi::TRAVERSE_OK {
        return Err(JobError::Start(started));
    }
    Ok(done.await?)
}

/// The item trampoline of `async_demo_emit`: a full buffer asks C to retry
/// (C's own back-pressure); anything else (accepted, or a stream that is
/// gone) moves on.
pub unsafe extern "C" fn on_item(user_data: *mut c_void, item: i64) -> c_int {
    match push_from_c(user_data, item) {
        Err(SendError::Full) => 1,
        _ => 0,
    }
}

/// A C thread emitting `0..n` into a stream of `capacity`; the stream ends
/// on C's destroy-notify.
pub fn emit(n: i64, capacity: usize) -> Result<CallbackStream<i64>, JobError> {
    let (user_data, items) = stream::<i64>(capacity);
    // SAFETY: `on_item` and `c_unref` accept any pointer, at any time.
    let started = unsafe { async_demo_emit(n, Some(on_item), Some(c_unref), user_data) };
    if started != ffi::TRAVERSE_OK {
        return Err(JobError::Start(started));
    }
    Ok(items)
}

/// One event of the C library (see `native/traverse.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A block opened, at this depth.
    Start(c_int),
    /// A block closed: the offsets of its `{` and `}`.
    End(c_int, c_int),
}

/// Events refused because the subscriber's buffer was full (the overflow
/// policy of this wrapper: drop the event, count it).
pub static OVERFLOWED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn on_start(user_data: *mut c_void, depth: c_int) {
    if push_from_c(user_data, Event::Start(depth)) == Err(SendError::Full) {
        OVERFLOWED.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn on_end(user_data: *mut c_void, open: c_int, close: c_int) {
    if push_from_c(user_data, Event::End(open, close)) == Err(SendError::Full) {
        OVERFLOWED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A subscription to the C library's later publications, as a `Stream`
/// of events: C keeps the callbacks and calls them from whatever thread
/// publishes, after `subscribe_events` returned.
pub struct Events {
    id: c_int,
    stream: Option<CallbackStream<Event>>,
}

/// Subscribes; the events of every later publication arrive on the stream.
pub fn subscribe_events(capacity: usize) -> Result<Events, JobError> {
    let (user_data, events) = stream::<Event>(capacity);
    let cbs = ffi::Callbacks {
        start: Some(on_start),
        end: Some(on_end),
    };
    // SAFETY: the trampolines accept any pointer, from any thread, for as
    // long as C keeps them: after the stream is gone they are refused.
    let id = unsafe { ffi::traverse_subscribe(cbs, user_data) };
    if id <= 0 {
        return Err(JobError::Start(id));
    }
    Ok(Events {
        id,
        stream: Some(events),
    })
}

impl Events {
    /// Unsubscribes and ends the stream: the events already received are
    /// still yielded, then `None`. (C's subscriptions have no destroy-notify:
    /// Rust plays it, with `c_unref`, after unsubscribing.)
    pub fn finish(mut self) -> CallbackStream<Event> {
        // SAFETY: an integer argument.
        unsafe { ffi::traverse_unsubscribe(self.id) };
        let events = self.stream.take().expect("present until finish or drop");
        c_unref(events.user_data());
        events
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let events = self.stream.as_mut().expect("present until finish or drop");
        Pin::new(events).poll_next(cx)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if self.stream.is_some() {
            // SAFETY: an integer argument. Publications already running may
            // still call: the stream's handle turns stale when it drops next.
            unsafe { ffi::traverse_unsubscribe(self.id) };
        }
    }
}

/// A file removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("async-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `poll_fn`-based `next`, so no `futures-util` is needed.
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}
