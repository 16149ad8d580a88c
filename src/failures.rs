//! Refused lookups, counted and remembered, so that a mistake is seen.
//!
//! A trampoline that gets an `Err` can only return a neutral value to C,
//! and a wrong type named in one (`restore::<F>` where `SortState<F>` was
//! saved) would otherwise fail silently on every call. So every registry
//! counts the lookups it refuses, by kind, and keeps the last
//! [`RECENT`] of them with the handle, the type asked for and the thread;
//! and it can print each one as it happens ([`Registry::set_report_failures`],
//! also switched on for every registry by the environment variable
//! `HANDLE_REGISTRY_REPORT_FAILURES=1` in debug builds).
//!
//! Only refusals pay for this: a successful lookup does not touch it.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::fmt;

use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::{AtomicU8, AtomicUsize};
use crate::sync::Mutex;
use crate::{handle, Error, Registry};

/// How many refusals a registry remembers: older ones are still counted
/// in [`Failures::total`], but only the last `RECENT` are kept in full.
///
/// ```
/// use handle_registry::{failures::RECENT, Registry};
///
/// let r = Registry::new();
/// for _ in 0..RECENT + 3 {
///     let _ = r.restore::<u8>(std::ptr::null_mut());
/// }
/// assert_eq!(r.failures().total(), RECENT + 3);
/// assert_eq!(r.failures().recent().len(), RECENT);
/// ```
pub const RECENT: usize = 8;

/// How many kinds of [`Error`] are counted (see `kind`).
const KINDS: usize = 11;

fn kind(error: &Error) -> usize {
    match error {
        Error::Null => 0,
        Error::Invalid => 1,
        Error::Stale => 2,
        Error::WrongRegistry => 3,
        Error::WrongType { .. } => 4,
        Error::Busy => 5,
        Error::Full => 6,
        Error::TooManyRegistries => 7,
        Error::WrongThread => 8,
        Error::Panicked => 9,
        Error::Retained => 10,
    }
}

/// A registry's record of refusals.
pub(crate) struct FailureLog {
    counts: [AtomicUsize; KINDS],
    recent: Mutex<VecDeque<Failure>>,
    /// 0: not decided yet (read the environment), 1: quiet, 2: report.
    report: AtomicU8,
}

impl FailureLog {
    pub const fn new() -> FailureLog {
        FailureLog {
            counts: [const { AtomicUsize::new(0) }; KINDS],
            recent: Mutex::new(VecDeque::new()),
            report: AtomicU8::new(0),
        }
    }

    #[cold]
    #[inline(never)]
    pub fn note(&self, ptr: *mut c_void, error: Error, expected: &'static str) {
        self.counts[kind(&error)].fetch_add(1, Ordering::Relaxed);
        let failure = Failure {
            handle: handle::from_ptr(ptr) as usize,
            error,
            expected,
            thread: crate::thread::id().unwrap_or(0),
        };
        if self.reporting() {
            report(&mut std::io::stderr(), &failure);
        }
        let mut recent = self.recent.lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(failure);
    }

    fn reporting(&self) -> bool {
        match self.report.load(Ordering::Relaxed) {
            0 => {
                let on = cfg!(debug_assertions)
                    && std::env::var_os("HANDLE_REGISTRY_REPORT_FAILURES")
                        .is_some_and(|v| v == "1");
                let _ = self.report.compare_exchange(
                    0,
                    if on { 2 } else { 1 },
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.report.load(Ordering::Relaxed) == 2
            }
            state => state == 2,
        }
    }
}

/// Writes one refusal to `out`. A write error (a closed pipe, a full disk
/// behind stderr) is ignored: `note` runs inside callbacks C makes, where
/// `eprintln!`'s panic on such an error would abort the process.
fn report(out: &mut impl std::io::Write, failure: &Failure) {
    let _ = writeln!(out, "handle_registry: refused: {failure}");
}

/// One refused lookup: the handle as C passed it, the error, the type
/// asked for and the thread that asked. Its `Display` form is the line
/// `HANDLE_REGISTRY_REPORT_FAILURES` writes to stderr.
///
/// ```
/// use handle_registry::{Error, Registry};
///
/// let r = Registry::new();
/// let p = r.save(1u8);
/// let _ = r.restore::<String>(p);
/// let failure = r.failures().recent()[0];
/// assert_eq!(failure.handle(), p);
/// assert!(matches!(failure.error(), Error::WrongType { .. }));
/// assert!(failure.to_string().contains("String"));
/// r.unref(p).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    handle: usize,
    error: Error,
    expected: &'static str,
    thread: usize,
}

impl Failure {
    /// The handle that was refused, as C passed it.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.restore::<u8>(std::ptr::null_mut());
    /// assert!(r.failures().recent()[0].handle().is_null());
    /// ```
    pub fn handle(&self) -> *mut c_void {
        handle::to_ptr(self.handle as u64)
    }

    /// Why.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.unref(std::ptr::null_mut());
    /// assert_eq!(r.failures().recent()[0].error(), handle_registry::Error::Null);
    /// ```
    pub fn error(&self) -> Error {
        self.error
    }

    /// The type the caller asked for (`"_"` for operations that name none,
    /// such as `unref`). For a scope's callbacks it is the crate's record
    /// type around theirs, since that is what a scope's handle holds:
    /// `…::Scoped<S>` for `with` and `call`, `…::SharedScoped<S>` for
    /// `with_ref`; a `Panicked` refusal names `S` itself.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.restore::<String>(std::ptr::null_mut());
    /// assert_eq!(r.failures().recent()[0].expected(), std::any::type_name::<String>());
    /// ```
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The crate's number for the thread that asked: distinct among live
    /// threads, reused after a thread exits (and possibly shared for a
    /// moment by a thread in its thread-local teardown and a new one: see
    /// README, "Semantics").
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.restore::<u8>(std::ptr::null_mut());
    /// let here = r.failures().recent()[0].thread();
    /// let _ = std::thread::spawn(move || {
    ///     let _ = r.restore::<u8>(std::ptr::null_mut());
    ///     assert_ne!(r.failures().recent()[1].thread(), here);
    /// }).join();
    /// ```
    pub fn thread(&self) -> usize {
        self.thread
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} as `{}` on thread #{}: {}",
            self.handle, self.expected, self.thread, self.error
        )
    }
}

/// What a registry refused so far: counts by kind and the last few.
///
/// ```
/// use handle_registry::{Error, Registry};
///
/// let r = Registry::new();
/// let p = r.save(1u8);
/// let _ = r.restore::<u16>(p); // a wrong type in a trampoline
/// let f = r.failures();
/// assert_eq!(f.total(), 1);
/// assert_eq!(f.count(&Error::WrongType { expected: "", found: "" }), 1);
/// assert!(f.to_string().contains("not a `u16`"));
/// # r.unref(p).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Failures {
    counts: [usize; KINDS],
    recent: Vec<Failure>,
}

impl Failures {
    /// How many refusals had the same kind as `error` (its fields, such as
    /// the type names of `WrongType`, are not compared).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.unref(std::ptr::null_mut());
    /// assert_eq!(r.failures().count(&handle_registry::Error::Null), 1);
    /// ```
    pub fn count(&self, error: &Error) -> usize {
        self.counts[kind(error)]
    }

    /// How many refusals in all.
    ///
    /// ```
    /// assert_eq!(handle_registry::Registry::new().failures().total(), 0);
    /// ```
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// The last refusals, oldest first (at most [`RECENT`]).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// for _ in 0..20 {
    ///     let _ = r.unref(std::ptr::null_mut());
    /// }
    /// assert_eq!(r.failures().recent().len(), handle_registry::failures::RECENT);
    /// ```
    pub fn recent(&self) -> &[Failure] {
        &self.recent
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} refused lookup(s)", self.total())?;
        for failure in &self.recent {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

impl Registry {
    /// What this registry refused so far: counts by kind, and the last
    /// [`RECENT`] refusals with handle, asked-for type and thread. See the
    /// [`failures`](crate::failures) module.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let _ = r.restore::<u8>(std::ptr::null_mut());
    /// assert_eq!(r.failures().total(), 1);
    /// ```
    pub fn failures(&self) -> Failures {
        let log = self.failure_log();
        // The ring first: a refusal is counted before it is pushed, so
        // counts read under the lock include every refusal the ring lists.
        let recent = log.recent.lock();
        Failures {
            counts: std::array::from_fn(|i| log.counts[i].load(Ordering::Relaxed)),
            recent: recent.iter().copied().collect(),
        }
    }

    /// Prints every refusal of this registry to standard error as it
    /// happens (`on`), or stops doing so. Off by default, except in a debug
    /// build run with `HANDLE_REGISTRY_REPORT_FAILURES=1` (read at a
    /// registry's first refusal).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// r.set_report_failures(true); // "handle_registry: refused: 0x0 as `u8` …"
    /// let _ = r.restore::<u8>(std::ptr::null_mut());
    /// r.set_report_failures(false);
    /// ```
    pub fn set_report_failures(&self, on: bool) {
        self.failure_log()
            .report
            .store(if on { 2 } else { 1 }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stderr_that_cannot_be_written_never_panics() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let failure = Failure {
            handle: 1,
            error: Error::Stale,
            expected: "u8",
            thread: 1,
        };
        report(&mut Full, &failure); // `eprintln!` panicked here
        let mut written = Vec::new();
        report(&mut written, &failure);
        assert!(String::from_utf8(written)
            .unwrap()
            .starts_with("handle_registry: refused: "));
    }
}
