//! Static trampolines: Rust closures behind plain C function pointers, for
//! C APIs whose callbacks get no `user_data`.
//!
//! `qsort`, `nftw`, `atexit` and many legacy APIs call back with
//! the event's arguments only, so the callback cannot be told whose state
//! it should use. C programs use a global variable; libffi writes a fresh
//! function into executable memory at run time. This module keeps a fixed,
//! compile-time pool of distinct functions per C signature instead, each
//! bound to a slot that holds a registry handle, and hands out one function
//! per caller.
//!
//! ```
//! use std::ffi::{c_int, c_void};
//! use handle_registry::static_trampoline::pools::QSORT_COMPARE;
//!
//! unsafe extern "C" {
//!     fn qsort(
//!         base: *mut c_void,
//!         n: usize,
//!         size: usize,
//!         compare: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int,
//!     );
//! }
//!
//! let mut v = vec![5i64, -1, 3, 0];
//! let mut comparisons = 0;
//! QSORT_COMPARE
//!     .scope(
//!         Box::new(|a, b| {
//!             comparisons += 1;
//!             // SAFETY: qsort passes pointers to two elements of `v`.
//!             let (a, b) = unsafe { (&*a.cast::<i64>(), &*b.cast::<i64>()) };
//!             a.cmp(b) as c_int
//!         }),
//!         // SAFETY: `v` holds `v.len()` i64s, and the comparator reads i64s.
//!         |compare| unsafe { qsort(v.as_mut_ptr().cast(), v.len(), 8, compare) },
//!     )
//!     .expect("a free comparator slot");
//! assert_eq!(v, [-1, 0, 3, 5]);
//! assert!(comparisons > 0);
//! ```
//!
//! Declare pools for other signatures with
//! [`static_callbacks!`](crate::static_callbacks); the ready-made ones are
//! in [`pools`]. With the `demo` feature, `demo::static_native` wraps the
//! crate's own C traversal without `user_data` in the same way.
//!
//! # Implementation notes
//!
//! Read this before the code; the guarantees below follow from it.
//!
//! 1. **A pool is N slots and N distinct functions.** `static_callbacks!`
//!    declares a generic `extern "C" fn trampoline<const I: usize>(…)` and
//!    instantiates it for `I` in `0..N`: N functions with N addresses, each
//!    reading only slot `I` of its own static [`Pool`]. A slot is one
//!    `AtomicUsize`: `FREE` (0), `RESERVED` (1, never a handle: registry id
//!    0 is never issued), or the handle of an *entry* (the boxed closure
//!    and a [`PanicCarrier`](crate::panic::PanicCarrier)) saved in a
//!    registry private to this module.
//! 2. **Acquiring** claims a slot by compare-exchange `FREE → RESERVED`,
//!    searching round-robin from a per-pool cursor; saves the entry; then
//!    publishes its handle into the slot (release ordering). All slots
//!    taken: [`PoolExhausted`], and nothing is saved.
//! 3. **A call** loads its slot (acquire ordering). `FREE`/`RESERVED`:
//!    the fallback. Otherwise it borrows the entry exclusively through the
//!    registry, which checks the handle's generation: an entry that was
//!    removed never resolves again, even after its registry index is
//!    reused. The closure runs inside the carrier's `catch`, so a panic is
//!    stored, never unwound into C, and later calls of that entry are
//!    skipped (fallback).
//! 4. **Releasing** (dropping the [`SlotGuard`]) first *takes* the entry
//!    out of the registry, which makes its handle stale at once and waits
//!    for calls in flight on other threads; then stores `FREE`. Only then
//!    can the slot be claimed again. If the releasing thread is itself
//!    inside a call of that closure (the closure dropped its own guard),
//!    the entry is unreffed instead: it is freed when that call returns.
//!    Each call records itself on a thread-local stack for that question,
//!    which the registry's owner ids cannot answer: a thread in
//!    thread-local teardown may share its id with another thread, and the
//!    releaser must still wait for that thread's call.
//! 5. **Only this module removes entries.** The registry is private, so no
//!    code elsewhere can `unref` an entry under a running call. That is
//!    what lets [`Pool::scope`] accept closures that borrow local state:
//!    when `scope` returns (or unwinds), the entry is gone and no call of
//!    it is running.
//!
//! # What is guaranteed
//!
//! * **No undefined behaviour from any call**, whenever C makes it: before
//!   any acquire, after release, concurrently from many threads,
//!   re-entrantly. A trampoline only ever reaches an entry through a
//!   checked handle of its own pool, typed by the pool's signature.
//! * **No cross-talk between live guards.** Each guard's function pointer
//!   reads only its own slot, and the slot holds only that guard's handle
//!   until the guard is released: two traversals running at once, on one
//!   thread or several, each reach their own closure.
//! * **Calls are serialised per closure**: C calling one function pointer
//!   from several threads at once gets one call at a time (the others
//!   wait), so closures are `FnMut`. A call that re-enters the same closure
//!   on the same thread gets the fallback.
//! * **After release, the closure never runs again**, and the calls that
//!   were running have returned (except in the self-release case of step
//!   4, where the current call finishes first). Releasing therefore
//!   blocks while another thread is inside the closure: do not release a
//!   guard while holding a lock that the closure may be waiting for.
//! * **Panics** are caught in the trampoline; the rest of that guard's
//!   calls return the fallback; the panic is resumed by
//!   [`SlotGuard::finish`] or the guard's drop, or returned by
//!   [`SlotGuard::try_finish`], whichever thread the call ran on. So is a
//!   panic from the closure's `Drop` when it is unbound; a guard dropped
//!   while its thread unwinds drops either panic instead. The exception is
//!   a closure that released its own guard (step 4): nothing is left to
//!   hand a panic to, so a panic later in that call (the call returns the
//!   fallback) or from the closure's `Drop` when that call ends is caught
//!   and dropped.
//! * **`mem::forget` of a [`SlotGuard`]** leaks it: the closure is never
//!   dropped and stays bound, its function pointer keeps calling it, and
//!   the pool has one slot fewer for the rest of the process.
//!
//! **The limit.** A call carries nothing that says which owner it is
//! meant for: a late call through a released guard's function pointer
//! returns the fallback while the slot is free, but once another guard
//! claims the slot, that call runs the *new* closure, with arguments meant
//! for the old one. That is safe for Rust (the new closure gets values of
//! the right types), but a closure that dereferences a pointer argument
//! relies on C's promise that it only calls back during the operation that
//! registered it. Declare such pools `unsafe extern "C" fn` (making that
//! promise explicit) and keep each guard alive for as long as C may call.
//! Round-robin claiming makes immediate reuse of a just-freed slot less
//! likely, but does not rule it out.
//!
//! # Choosing the pool size
//!
//! A pool's size is the number of closures of that signature that can be
//! bound *at once*, process-wide; acquiring one more fails with
//! [`PoolExhausted`] (never a wrong call). Each slot costs one small
//! function in the binary (a few dozen bytes of code), a pointer in the
//! trampoline table and an `AtomicUsize`; the search for a free slot is
//! linear. The limit is [`MAX_POOL_SIZE`] (64); `_` means
//! [`DEFAULT_POOL_SIZE`] (8).
//!
//! * For synchronous APIs (`qsort`, `nftw`, the demo's `static_native` traversal),
//!   count the threads that may run one at the same time, times the
//!   nesting depth (a callback that starts another traversal of the same
//!   signature holds a second slot).
//! * For registrations that last (`atexit`, a library's global hooks),
//!   count the registrations: they hold their slots for as long as they
//!   live.
//! * Give each library its own pool rather than sharing one: a library
//!   cannot then starve another.
//!
//! # Not for real signal handlers
//!
//! A trampoline takes registry locks and may park the thread, which is not
//! async-signal-safe: installed with `sigaction`/`signal`, a signal that
//! arrives while its thread holds one of those locks deadlocks that thread.
//! "Signal-style" here means callbacks that C makes from ordinary code with
//! no `user_data`, such as a library's event hook that passes only a number.
//!
//! # Cost per call
//!
//! A call is a slot load, a [`restore_with`](crate::Registry::restore_with)
//! of the entry in the pool's registry (no lock; no locked instruction
//! either when the calling thread keeps calling the same closure: README's
//! "Parked borrows"), a record on this thread's stack of calls,
//! and the closure called through a `dyn FnMut` inside `catch_unwind`.
//! That is what a `user_data` trampoline using
//! [`restore`](crate::restore) and a
//! [`PanicCarrier`](crate::panic::PanicCarrier) pays, plus the slot load
//! and the record. `benches/static_trampoline.rs` measures the three ways
//! of reaching state from a callback, each called through a function
//! pointer (criterion medians of four runs, 2026-11-28, on a shared
//! 2-core x86-64 VM, hence the ranges; `benches/instructions.sh` counts
//! the instructions):
//!
//! | callback | ns per call | instructions |
//! | --- | --- | --- |
//! | direct `extern "C" fn` using a global | 2.1–2.2 | |
//! | static trampoline | 7.3–9.3 | 122 |
//! | `user_data` trampoline (`restore` + `PanicCarrier`) | 4.4–5.2 | 83 |
//!
//! So a static trampoline costs about 1.6–2.0× a `user_data` one: the
//! pool's bookkeeping, not the registry's lookup.
//! Calls of one closure from several threads at once are serialised, and
//! a waiting call parks.
//!
//! Acquiring and releasing a slot cost a save and a take in the pool's
//! registry (each takes its free-list lock: a registry other than the
//! global one has no per-thread cache, `src/free.rs`) and two
//! allocations (the boxed closure and its entry): bind once per C
//! operation, not once per call.

mod macros;
mod pool;
pub mod pools;
mod signature;

pub use pool::{Pool, PoolExhausted, SlotGuard, DEFAULT_POOL_SIZE, MAX_POOL_SIZE};
pub use signature::{SafeSignature, Signature};

#[cfg(test)]
mod tests;
