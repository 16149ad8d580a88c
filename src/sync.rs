//! The synchronisation the crate takes, in one place: atomics, the value
//! cell of a slot, locks and thread-locals.
//!
//! # Two builds
//!
//! In every normal build this module is a thin re-export of the standard
//! library (the wrappers below are `#[inline]` and compile to the same code).
//! Under `cfg(all(loom, test))`, the lib's own test build with
//! `RUSTFLAGS="--cfg loom"`, the primitives of the slot protocol come from
//! [`loom`](https://docs.rs/loom) instead, and the model tests in
//! `src/loom_tests.rs` run every interleaving of small cases (two or three
//! threads, a few operations each, up to a preemption bound) under loom's
//! C11 memory model. (`test` as well as `loom`: loom is a dev-dependency,
//! and a dependent that runs its own loom tests with `--cfg loom` builds this
//! crate with std's primitives.) Run them with
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=4 RUSTFLAGS="--cfg loom --cfg handle_registry_core_only" \
//!     cargo test --release --lib loom_tests
//! ```
//!
//! # What is modelled
//!
//! * [`atomic`]: the slot's state word, its type and site pointers, and the
//!   `Acquire` fence of the seqlock reads (`check`, the leak report). Every
//!   transition of [`slot`](crate::slot) is a loom operation, so loom
//!   explores every order (and every value a `Relaxed` load may return) of
//!   borrows, releases, removals, retains and waiter flags.
//! * [`UnsafeCell`]: the slot's value storage. `fill`, `move_out` and the
//!   drop are write accesses, a guard's dereference a read access: loom
//!   fails a model when one is not ordered after the previous writes (and,
//!   for a write, the previous reads) by the protocol's release/acquire
//!   pairs. That checks transition 3's `AcqRel` (the last borrower of an
//!   orphan drops after every reader's release) and transition 7 (a saver
//!   fills an index only after its previous value was dropped).
//! * [`Mutex`] and [`Condvar`]: the registry's free list (an index's reuse
//!   is ordered through it), wait lock and wake-up, count table, failure
//!   log. Loom reports a lost wake-up as a deadlock.
//! * [`thread_locals!`]: the per-thread owner id and shared-borrow list of
//!   [`thread`](crate::thread) (and the lend stack, the free-index cache,
//!   thread-affine owners). Loom runs a model's threads as coroutines on one
//!   OS thread, so std's thread-locals would be shared between them: two
//!   model threads would get the same owner id and answer `Busy` where one
//!   must wait.
//!
//! Loom's types have no `const` constructors, but the registry's are
//! `const fn` (the global registry is a `static`). So under loom a
//! [`Mutex`] or [`Condvar`] creates its loom object at its first use, in the
//! model execution that uses it (loom objects of locks carry no causality of
//! their own, so this changes nothing a model can observe); the slot's
//! atomics and cell, created at run time with their page, are loom's
//! directly (which is why `Slot::vacant` is not
//! `const`).
//!
//! # What is not modelled, and why that is sound
//!
//! [`unmodelled`] holds std's primitives in every build, for state that
//! outlives a model execution (a loom object must be created and used
//! inside one `loom::model` run) or that no model reaches:
//!
//! * The global registry (`static`): models use `Registry::new()`
//!   registries created inside the model, never the free functions.
//! * The registry-id pool and live-id bits, and the owner-id pool of
//!   [`thread`](crate::thread) (`static`s): touched when a registry is made
//!   or dropped (on the model's main thread, before and after its threads
//!   run) and when a thread first borrows, under a lock that holds no loom
//!   operation (so it never blocks the one OS thread).
//! * The page directory of [`pages`](crate::pages): a model's first save
//!   allocates the first page (and the free list hands out 32 of its
//!   indices) before the model's threads are spawned, so no interleaving
//!   reaches a page allocation; the directory's publication is not checked.
//! * The failure log's counters, panic carriers, scope flags and static
//!   trampoline pools: diagnostics, or outside the slot protocol. (The
//!   `completion` module keeps std's poisoning `Mutex`, taken directly:
//!   it is outside the slot protocol too. So do the `demo` wrappers, which
//!   use the registry as any user does, and the unit tests' own helpers.)
//!
//! Parked borrows (see [`parked`](crate::parked)) are off under loom:
//! their barrier pair is `membarrier` on one side, which loom cannot run.
//! Their handshake is checked instead on a model slot, with a `SeqCst`
//! fence on each side, in `loom_tests/parked.rs`; Miri runs the real code
//! with those fences.
//!
//! Also not checked: interleavings past the preemption bound, more threads
//! or operations than the models have, the global registry's per-thread
//! free-index cache, scopes and lends (their borrows are the same slot
//! transitions, taken by one thread), thread-local teardown (under loom a
//! thread's owner id is not returned to the pool), spurious wake-ups (loom's
//! condition variable has none; a woken waiter redoes its lookup anyway),
//! and the weak-memory behaviours loom does not produce (a load only reads
//! stores already executed in its schedule, so load buffering of `Relaxed`
//! accesses is never tried; and `SeqCst` accesses are modelled as
//! `AcqRel` only, weaker than C11's, so the one place the protocol relies
//! on them, the reader records' store-then-load pairs, gets a `SeqCst`
//! fence under loom: see [`atomic::seqcst_pair`]). Miri's sampled
//! schedules and the threaded stress tests cover the rest.
//!
//! # The locks
//!
//! The hot paths take no lock at all; the locks serve the cold ones (the
//! free list, thread ids, parking). They are the standard library's
//! futex-based locks rather than `parking_lot`'s because Miri checks the
//! crate with `-Zmiri-strict-provenance`, and `parking_lot`'s parking path
//! turns integers into pointers, which that mode rejects. No user code ever
//! runs while one is held, so poisoning means nothing here and is ignored.

/// The atomics of the lock-free protocol: loom's under the model.
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::Ordering;

    #[cfg(all(loom, test))]
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};
    #[cfg(not(all(loom, test)))]
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};

    /// Marks the middle of a `SeqCst` store-then-load pair of the reader
    /// records' Dekker handshakes (see [`readers`](crate::readers): a
    /// reader publishes, then loads the word; a writer claims the word, then
    /// scans the records; a releasing reader clears, then loads the count
    /// of waiting writers). Nothing in a normal build: there the `SeqCst`
    /// accesses themselves give the guarantee (in the single total order of
    /// `SeqCst` operations, of two threads that each store, then load the
    /// other's location, at least one sees the other's store). Loom treats
    /// `SeqCst` accesses as `AcqRel` only (its README, "Unsupported
    /// features"), so it would report executions C11 forbids; it does model
    /// `fence(SeqCst)`, and a `SeqCst` fence between each store and load
    /// gives exactly the same guarantee in C11. So under loom this is that
    /// fence, and the models check the protocol's interleavings with the
    /// guarantee the real code has.
    #[inline(always)]
    pub(crate) fn seqcst_pair() {
        #[cfg(all(loom, test))]
        fence(Ordering::SeqCst);
    }
}

/// Process-wide atomics that take part in a modelled protocol (the reader
/// records' list and waiting-writer count, see [`readers`](crate::readers)):
/// plain `static`s, except under loom, where a `static` cannot hold a loom
/// object (it would outlive the model execution that created it), so they
/// are `loom::lazy_static!`s, made afresh in each execution.
macro_rules! model_statics {
    ($($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;)+) => {
        $(#[cfg(not(all(loom, test)))] $(#[$attr])* static $name: $t = $init;)+
        #[cfg(all(loom, test))]
        loom::lazy_static! {
            $($(#[$attr])* static ref $name: $t = $init;)+
        }
    };
}

pub(crate) use model_statics;

#[cfg(not(all(loom, test)))]
pub(crate) use unmodelled::{Condvar, Mutex};

#[cfg(all(loom, test))]
pub(crate) use model::{Condvar, Mutex};

/// The standard library's primitives in every build, for state the loom
/// models do not reach or that outlives a model execution (see above).
pub(crate) mod unmodelled {
    use std::sync::PoisonError;

    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize};
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
    #[cfg_attr(all(loom, test), allow(dead_code))]
    pub(crate) struct Condvar(std::sync::Condvar);

    #[cfg_attr(all(loom, test), allow(dead_code))]
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
}

/// Locks whose loom object is made at first use (see above), so that they
/// keep `const` constructors.
#[cfg(all(loom, test))]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::sync::OnceLock;

    use super::unmodelled;

    /// A mutex modelled by a loom mutex; the data sits in a std mutex that
    /// is only ever locked under the loom one, so it never blocks.
    #[derive(Default)]
    pub(crate) struct Mutex<T> {
        model: OnceLock<loom::sync::Mutex<()>>,
        data: unmodelled::Mutex<T>,
    }

    impl<T> Mutex<T> {
        pub const fn new(value: T) -> Self {
            Mutex {
                model: OnceLock::new(),
                data: unmodelled::Mutex::new(value),
            }
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            let model = self.model().lock().unwrap();
            MutexGuard {
                data: self.data.lock(),
                model,
                mutex: self,
            }
        }

        fn model(&self) -> &loom::sync::Mutex<()> {
            self.model.get_or_init(|| loom::sync::Mutex::new(()))
        }
    }

    /// Fields drop in order: the std lock is released before the loom one,
    /// whose release may switch to another model thread.
    pub(crate) struct MutexGuard<'a, T> {
        data: unmodelled::MutexGuard<'a, T>,
        model: loom::sync::MutexGuard<'a, ()>,
        mutex: &'a Mutex<T>,
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.data
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.data
        }
    }

    #[derive(Default)]
    pub(crate) struct Condvar(OnceLock<loom::sync::Condvar>);

    impl Condvar {
        pub const fn new() -> Self {
            Condvar(OnceLock::new())
        }

        fn model(&self) -> &loom::sync::Condvar {
            self.0.get_or_init(loom::sync::Condvar::new)
        }

        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            let MutexGuard { data, model, mutex } = guard;
            drop(data);
            let model = self.model().wait(model).unwrap();
            MutexGuard {
                data: mutex.data.lock(),
                model,
                mutex,
            }
        }

        pub fn notify_all(&self) {
            self.model().notify_all();
        }
    }
}

/// A cell whose accesses loom checks under the model. `read_ptr` and
/// `write_ptr` record a read or a write access at the moment they are
/// called; in a normal build both are `UnsafeCell::get`.
#[cfg(not(all(loom, test)))]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(loom, test)))]
impl<T> UnsafeCell<T> {
    /// Used by `Slot::vacant` only: pages are otherwise zeroed (see
    /// `page_memory`).
    #[cfg(test)]
    pub const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub fn read_ptr(&self) -> *mut T {
        self.0.get()
    }

    #[inline(always)]
    pub fn write_ptr(&self) -> *mut T {
        self.0.get()
    }
}

#[cfg(all(loom, test))]
pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(all(loom, test))]
impl<T> UnsafeCell<T> {
    pub fn new(value: T) -> Self {
        UnsafeCell(loom::cell::UnsafeCell::new(value))
    }

    pub fn read_ptr(&self) -> *mut T {
        self.0.with(|p| p.cast_mut())
    }

    pub fn write_ptr(&self) -> *mut T {
        self.0.with_mut(|p| p)
    }
}

/// `std::thread_local!` with `const` initialisers; loom's (per model
/// thread) under the model, which has no `const` form.
macro_rules! thread_locals {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr });+ $(;)?) => {
        #[cfg(not(all(loom, test)))]
        std::thread_local! {
            $($(#[$attr])* $vis static $name: $t = const { $init };)+
        }
        #[cfg(all(loom, test))]
        loom::thread_local! {
            $($(#[$attr])* $vis static $name: $t = $init;)+
        }
    };
}

pub(crate) use thread_locals;
