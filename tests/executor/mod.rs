//! A minimal executor for the pure-Rust `completion` tests
//! (`async_completion`, `adversarial_completion`): `block_on` with a
//! thread-park waker, and a handle that crosses threads as an integer.
//! Each includes this file with `mod executor;`. Not a test binary of its own.
#![allow(dead_code)] // each includer uses a part

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use futures_core::Stream;

/// A handle moved to another thread (the handle is an integer).
#[derive(Clone, Copy)]
pub struct Sendable(usize);

impl Sendable {
    pub fn new(p: *mut c_void) -> Self {
        Sendable(p.addr())
    }

    pub fn get(self) -> *mut c_void {
        std::ptr::without_provenance_mut(self.0)
    }
}

/// Wakes a thread parked in [`block_on`].
pub struct Unpark(pub thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread.
pub fn park_waker() -> Waker {
    Waker::from(Arc::new(Unpark(thread::current())))
}

/// Polls `future` on this thread, parking between polls. With a deadline:
/// a lost wake-up is a test failure with a message, not a hang.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = park_waker();
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("block_on: no wake-up within 20 s (lost wake-up?)");
        thread::park_timeout(left);
    }
}

/// The stream's next item, waited for with [`block_on`].
pub fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    block_on(std::future::poll_fn(|cx| {
        Pin::new(&mut *stream).poll_next(cx)
    }))
}
