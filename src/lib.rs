//! Pass Rust values through C's `void* user_data` as checked handles.
//!
//! C libraries report events through callbacks that receive a `void*`
//! passed through from the call that started the work. The usual Rust
//! answer, `Box::into_raw`, hands C a real pointer, and C can call back
//! after the value was freed, on another thread, twice, or with garbage.
//! This crate hands C a small integer instead (the approach of Go's
//! `mattn/go-pointer` and `runtime/cgo.Handle`): a slot index plus a
//! generation and a registry id. Callbacks [`restore`] the handle and get a
//! typed guard, or a precise [`Error`]: [`Null`](Error::Null),
//! [`Invalid`](Error::Invalid), [`Stale`](Error::Stale),
//! [`WrongRegistry`](Error::WrongRegistry), [`WrongType`](Error::WrongType),
//! [`Busy`](Error::Busy), [`WrongThread`](Error::WrongThread),
//! [`Panicked`](Error::Panicked). No integer C hands back can cause
//! undefined behaviour. A lookup takes no lock: one compare-exchange on the
//! handle's own slot borrows the value and one releases it. For C calls
//! that call back only while they run, [`Registry::scope`] and
//! [`Registry::scope_fn`] lend state that borrows locals and need not be
//! `Send`, with no atomic read-modify-write per callback.
//!
//! ```
//! use handle_registry::{restore, save, take, unref, Error};
//!
//! let user_data = save(Vec::<i32>::new()); // *mut c_void, never NULL
//! // ... C calls back with `user_data` ...
//! restore::<Vec<i32>>(user_data).unwrap().push(100);
//! assert_eq!(take::<Vec<i32>>(user_data).unwrap(), [100]);
//! // A late call after the value is gone is an error, not a use after free.
//! assert_eq!(unref(user_data), Err(Error::Stale));
//! ```
//!
//! # Modules
//!
//! * [`handle`]: the bit layout of a handle and its limits.
//! * [`Registry`]: the slots, their lock-free protocol, and the operations.
//! * [`Guard`] / [`SharedGuard`]: exclusive and shared borrows.
//! * [`restore_with()`]: restore, run a closure, release; the cheapest form
//!   for a callback's body.
//! * [`Handle`]: an owning handle that unrefs on drop.
//! * [`lend`](mod@lend): cheap restores inside a synchronous C call.
//! * [`Registry::scope`] and its siblings: borrowed state for one C call.
//! * [`failures`]: refused lookups, counted and kept, so mistakes are seen.
//! * [`kinds`]: counted ([`retain`]), weak, thread-affine (not `Send`)
//!   handles, and [`Group`]s freed together.
//! * [`panic`](mod@panic): carrying a callback's panic back across C.
//! * [`static_trampoline`]: C function pointers without `user_data`.
//! * `completion` (feature `async`): futures and streams that C callbacks
//!   complete, cancel-safe.
//! * `demo` (only with the `demo` cargo feature, which needs a C
//!   compiler): the crate's own C library and its safe wrappers, the
//!   test bed and the demo. Everything above is pure Rust.
//!
//! # Threads, re-entrancy and panics
//!
//! * Lookups take no lock, and the registry's few locks (free slots,
//!   parking) are never held while user code runs: code holding a guard,
//!   or a value's `Drop`, may use the registry freely.
//! * The same handle restored on two threads: the second waits. On the same
//!   thread while borrowed: [`Error::Busy`], never a deadlock.
//! * `Sync` values can be read from many threads at once with
//!   [`restore_ref`].
//! * [`unref`] of a borrowed value makes the handle stale at once and drops
//!   the value when the last guard is released, on that guard's thread.
//! * A value whose `Drop` panics leaves the registry intact.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "async")]
pub mod completion;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
pub mod failures;
mod free;
mod guard;
pub mod handle;
pub mod kinds;
mod leak;
pub mod lend;
#[cfg(all(loom, test))]
mod loom_tests;
mod owned;
mod page_memory;
mod pages;
pub mod panic;
mod parked;
mod readers;
mod registry;
mod restore_with;
mod scope;
mod slot;
pub mod static_trampoline;
mod sync;
mod thread;

use std::any::Any;
use std::ffi::c_void;

pub use error::Error;
pub use failures::{Failure, Failures};
pub use guard::{Guard, SharedGuard};
pub use kinds::group::{Group, GroupReport};
pub use kinds::local::LocalGuard;
pub use leak::{LeakGroup, LeakReport, LiveEntry};
pub use owned::Handle;
pub use registry::Registry;

/// Saves `value` in the global registry and returns its handle, never NULL.
///
/// Go: `pointer.Save(v)`. The caller's location is recorded for
/// [`Registry::leak_report`].
///
/// ```
/// let p = handle_registry::save(String::from("hi"));
/// assert!(!p.is_null());
/// # handle_registry::unref(p).unwrap();
/// ```
#[track_caller]
pub fn save<T: Any + Send>(value: T) -> *mut c_void {
    Registry::global().save(value)
}

/// Borrows a value of the global registry exclusively.
///
/// Go: `pointer.Restore(p).(*T)`, but checked: see [`Registry::restore`].
///
/// ```
/// let p = handle_registry::save(1u8);
/// *handle_registry::restore::<u8>(p).unwrap() += 1;
/// assert_eq!(handle_registry::take::<u8>(p), Ok(2));
/// ```
#[inline]
pub fn restore<T: Any + Send>(ptr: *mut c_void) -> Result<Guard<'static, T>, Error> {
    Registry::global().restore(ptr)
}

/// Restores a value of the global registry, runs `f` on it, and releases
/// it: the cheapest form for a C callback's body. See
/// [`Registry::restore_with`].
///
/// ```
/// use std::ffi::c_void;
///
/// // A C callback: `user_data` is the handle of a `u64` counter.
/// extern "C" fn on_item(user_data: *mut c_void) {
///     let _ = handle_registry::restore_with(user_data, |n: &mut u64| *n += 1);
/// }
///
/// let p = handle_registry::save(0u64);
/// on_item(p);
/// on_item(p);
/// assert_eq!(handle_registry::take::<u64>(p), Ok(2));
/// ```
#[inline]
pub fn restore_with<T: Any + Send, O>(
    ptr: *mut c_void,
    f: impl FnOnce(&mut T) -> O,
) -> Result<O, Error> {
    Registry::global().restore_with(ptr, f)
}

/// Borrows a `Sync` value of the global registry shared, for callbacks that
/// run in parallel. See [`Registry::restore_ref`].
///
/// ```
/// let p = handle_registry::save(7u32);
/// let a = handle_registry::restore_ref::<u32>(p).unwrap();
/// let b = handle_registry::restore_ref::<u32>(p).unwrap();
/// assert_eq!(*a + *b, 14);
/// # drop((a, b)); handle_registry::unref(p).unwrap();
/// ```
pub fn restore_ref<T: Any + Send + Sync>(
    ptr: *mut c_void,
) -> Result<SharedGuard<'static, T>, Error> {
    Registry::global().restore_ref(ptr)
}

/// Removes a value from the global registry and returns it.
/// See [`Registry::take`].
///
/// ```
/// let p = handle_registry::save(vec![1, 2]);
/// assert_eq!(handle_registry::take::<Vec<i32>>(p).unwrap(), [1, 2]);
/// ```
pub fn take<T: Any + Send>(ptr: *mut c_void) -> Result<T, Error> {
    Registry::global().take(ptr)
}

/// Removes a value from the global registry and drops it.
///
/// Go: `pointer.Unref(p)`. See [`Registry::unref`].
///
/// ```
/// let p = handle_registry::save(0u8);
/// assert_eq!(handle_registry::unref(p), Ok(()));
/// assert_eq!(handle_registry::unref(p), Err(handle_registry::Error::Stale));
/// ```
pub fn unref(ptr: *mut c_void) -> Result<(), Error> {
    Registry::global().unref(ptr)
}

/// One more reference to the value `ptr` names in the global registry:
/// each [`unref`] (or [`c_unref`]) drops one, and the value is dropped at
/// the last. See [`Registry::retain`].
///
/// ```
/// let p = handle_registry::save(String::from("twice"));
/// handle_registry::retain(p).unwrap();
/// handle_registry::unref(p).unwrap();
/// assert_eq!(*handle_registry::restore::<String>(p).unwrap(), "twice");
/// handle_registry::unref(p).unwrap();
/// assert!(handle_registry::restore::<String>(p).is_err());
/// ```
pub fn retain(ptr: *mut c_void) -> Result<(), Error> {
    Registry::global().retain(ptr)
}

/// [`unref`] for C: fits a destroy-notify slot (`GDestroyNotify`,
/// sqlite's `xDestroy`, a `free_func`).
///
/// It accepts any value and never unwinds: a bad handle is ignored, and a
/// panic from the value's `Drop` is caught and discarded (there is no
/// Rust caller to resume it in). It never aborts either, save in the one
/// case every operation on a parked borrow shares: a kernel that starts
/// refusing `membarrier` after the process parked one (README,
/// "Semantics").
///
/// It is a safe function: any pointer is fine. It still fits the
/// `unsafe extern "C" fn(*mut c_void)` slots of bindings, since a safe
/// function coerces to an unsafe function pointer.
///
/// ```
/// let p = handle_registry::save(String::from("owned by C now"));
/// let destroy: unsafe extern "C" fn(*mut std::ffi::c_void) = handle_registry::c_unref;
/// // SAFETY: `c_unref` accepts any value.
/// unsafe { destroy(p) };
/// handle_registry::c_unref(p); // twice: ignored
/// handle_registry::c_unref(std::ptr::null_mut()); // NULL: ignored
/// assert!(handle_registry::restore::<String>(p).is_err());
/// ```
pub extern "C" fn c_unref(ptr: *mut c_void) {
    // A panic has nobody to resume it in; its payload's `Drop` may panic too.
    panic::catch_quietly(|| {
        let _ = unref(ptr);
    });
}

/// Runs `f` on the state that [`Registry::scope`] or
/// [`Registry::scope_send`] lent to the global registry. See
/// [`Registry::with`].
///
/// ```
/// let mut log: Vec<&str> = Vec::new();
/// handle_registry::Registry::global()
///     .scope(&mut log, |p| handle_registry::with(p, |log: &mut Vec<&str>| log.push("called")))
///     .unwrap()
///     .unwrap();
/// assert_eq!(log, ["called"]);
/// ```
#[inline]
pub fn with<S: Any, O>(ptr: *mut c_void, f: impl FnOnce(&mut S) -> O) -> Result<O, Error> {
    Registry::global().with(ptr, f)
}

/// Runs `f` on the state that [`Registry::scope_sync`] lent to the global
/// registry. See [`Registry::with_ref`].
///
/// ```
/// let n = 3;
/// let got = handle_registry::Registry::global()
///     .scope_sync(&n, |p| handle_registry::with_ref(p, |n: &i32| *n))
///     .unwrap();
/// assert_eq!(got, Ok(3));
/// ```
pub fn with_ref<S: Any + Sync, O>(ptr: *mut c_void, f: impl FnOnce(&S) -> O) -> Result<O, Error> {
    Registry::global().with_ref(ptr, f)
}

/// Calls the closure that [`Registry::scope_fn`] lent to the global
/// registry. See [`Registry::call`].
///
/// ```
/// let mut inc = |x: u8| x + 1;
/// let got = handle_registry::Registry::global()
///     .scope_fn(&mut inc, |p| handle_registry::call::<u8, u8>(p, 1))
///     .unwrap();
/// assert_eq!(got, Ok(2));
/// ```
pub fn call<A: 'static, O: 'static>(ptr: *mut c_void, args: A) -> Result<O, Error> {
    Registry::global().call(ptr, args)
}

/// The README's examples, compiled and run as doctests (with the `async`
/// feature, which one of them needs; this repository's own `cargo test`
/// turns it on).
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "async"))]
pub struct ReadmeDoctests;
