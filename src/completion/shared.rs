//! The one waker protocol both [`oneshot()`](super::oneshot()) and
//! [`stream()`](super::stream()) use: a state behind a mutex, plus the waker of
//! the single consumer.
//!
//! # Protocol
//!
//! * The consumer (a `Future` or `Stream`) checks the state and, if it is
//!   not ready, stores its waker, **under the same lock** a producer takes to
//!   change the state. So a producer either runs before the check (and the
//!   consumer sees the new state) or after the waker is stored (and takes
//!   it): no lost wake-up, also when the completion races the first poll.
//! * The stored waker is always the latest one: a poll with a waker that
//!   would not wake the same task replaces it (and an equivalent one is kept,
//!   saving a clone).
//! * A producer changes the state and **takes** the waker out under the
//!   lock, unlocks, and only then wakes. The consumer's poll re-registers if
//!   it is still not ready.
//! * No waker code (clone, wake, drop) and no drop of a user value ever runs
//!   under the lock: the only code under the lock is this crate's moves of
//!   values in and out. A waker that re-enters (polls at once, on the
//!   waking thread) or a value whose `Drop` completes another request cannot
//!   deadlock, and a C thread never blocks on a lock held while foreign code
//!   runs. The lock is held for a few instructions, never across a wait.
//! * The mutex's ordering is the only ordering: everything a producer wrote
//!   before unlocking is visible to the consumer that locks next.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A state `S` and the consumer's waker, behind one mutex.
pub(super) struct Shared<S> {
    locked: Mutex<Locked<S>>,
}

struct Locked<S> {
    state: S,
    waker: Option<Waker>,
}

impl<S> Shared<S> {
    pub(super) fn new(state: S) -> Self {
        Shared {
            locked: Mutex::new(Locked { state, waker: None }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Locked<S>> {
        // No user code runs under the lock, so poisoning can only come from
        // a panic inside this module's own short critical sections (none
        // is known); the state is still consistent then.
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Consumer side: `Ready` with what `ready` extracts from the state, or
    /// `Pending` with `cx`'s waker stored as the one to wake.
    ///
    /// `ready` runs under the lock: it may only move values, not drop them.
    pub(super) fn poll_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut ready: impl FnMut(&mut S) -> Option<R>,
    ) -> Poll<R> {
        let mut locked = self.lock();
        if let Some(out) = ready(&mut locked.state) {
            return Poll::Ready(out);
        }
        if locked
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        drop(locked);
        // Cloning runs the executor's code: outside the lock. A producer
        // may run meanwhile, so check again before storing the clone.
        let new = cx.waker().clone();
        let mut locked = self.lock();
        if let Some(out) = ready(&mut locked.state) {
            drop(locked);
            drop(new);
            return Poll::Ready(out);
        }
        let old = locked.waker.replace(new);
        drop(locked);
        drop(old);
        Poll::Pending
    }

    /// Producer (or consumer teardown) side: runs `change` under the lock;
    /// if it returns `wake == true`, takes the stored waker, unlocks, then
    /// wakes it.
    ///
    /// `change` runs under the lock: it may only move values, not drop them
    /// (return them instead, they are dropped by the caller after unlock).
    pub(super) fn update<R>(&self, change: impl FnOnce(&mut S) -> (R, bool)) -> R {
        let (out, waker) = self.update_deferred(change);
        if let Some(waker) = waker {
            waker.wake();
        }
        out
    }

    /// [`update`](Shared::update), but the waker to wake is returned, for a
    /// caller that has more to release (a registry borrow) before waking.
    pub(super) fn update_deferred<R>(
        &self,
        change: impl FnOnce(&mut S) -> (R, bool),
    ) -> (R, Option<Waker>) {
        let mut locked = self.lock();
        let (out, wake) = change(&mut locked.state);
        let waker = if wake { locked.waker.take() } else { None };
        drop(locked);
        (out, waker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn latest_waker_is_woken_once() {
        let shared = Shared::new(0u32);
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let w1 = Waker::from(first.clone());
        let w2 = Waker::from(second.clone());
        let ready = |s: &mut u32| (*s > 0).then_some(*s);
        assert!(shared
            .poll_with(&mut Context::from_waker(&w1), ready)
            .is_pending());
        assert!(shared
            .poll_with(&mut Context::from_waker(&w2), ready)
            .is_pending());
        shared.update(|s| {
            *s = 7;
            ((), true)
        });
        // The waker was taken: a second update wakes no one.
        shared.update(|s| {
            *s = 8;
            ((), true)
        });
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            shared.poll_with(&mut Context::from_waker(&w1), ready),
            Poll::Ready(8)
        );
    }

    #[test]
    fn a_waker_that_reenters_does_not_deadlock() {
        // The waker locks the same state when woken: it must not be called
        // under the lock.
        struct Reenter(Arc<Shared<u32>>, AtomicUsize);
        impl Wake for Reenter {
            fn wake(self: Arc<Self>) {
                self.0.update(|s| (*s, false));
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let shared = Arc::new(Shared::new(0u32));
        let reenter = Arc::new(Reenter(shared.clone(), AtomicUsize::new(0)));
        let waker = Waker::from(reenter.clone());
        assert!(shared
            .poll_with(&mut Context::from_waker(&waker), |s| (*s > 0).then_some(()))
            .is_pending());
        shared.update(|s| {
            *s = 1;
            ((), true)
        });
        assert_eq!(reenter.1.load(Ordering::SeqCst), 1);
    }
}
