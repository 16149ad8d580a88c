//! The locks the crate takes, in one place.
//!
//! The hot paths take no lock at all; these serve the cold ones (the free
//! list, thread ids, parking). They are the standard library's futex-based
//! locks rather than `parking_lot`'s because Miri checks the crate with
//! `-Zmiri-strict-provenance`, and `parking_lot`'s parking path turns
//! integers into pointers, which that mode rejects. No user code ever runs
//! while one is held, so poisoning means nothing here and is ignored.

use std::sync::PoisonError;

pub(crate) use std::sync::MutexGuard;

/// A mutex without poisoning.
#[derive(Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A condition variable for [`Mutex`].
pub(crate) struct Condvar(std::sync::Condvar);

impl Condvar {
    pub const fn new() -> Self {
        Condvar(std::sync::Condvar::new())
    }

    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}
