//! Several files on C threads at once, one shared visitor.
//!
//! C calls back from one pthread per file, concurrently, with the same
//! `user_data`. An exclusive borrow per callback would serialise them
//! (correct, but the threads would queue on the registry), so the state is
//! borrowed through [`restore_ref`](crate::restore_ref): readers never wait
//! for each other. That needs `&self` methods and a `Sync` visitor, hence
//! [`SyncVisitor`] rather than [`Visitor`](super::Visitor) + `Sync`: with
//! `&mut self` methods nothing could be mutated through a shared borrow.

use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::sync::Arc;

use super::route::{self, Event, Route, Wants};
use super::TraverseError;
use crate::demo::ffi;
use crate::panic::PanicCarrier;
use crate::Handle;

/// Receives events from several C threads at once; every method defaults
/// to a no-op. Mutate through atomics or locks.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use handle_registry::demo::traverse::SyncVisitor;
///
/// #[derive(Default)]
/// struct Blocks(AtomicUsize);
///
/// impl SyncVisitor for Blocks {
///     fn end(&self, _open: i32, _close: i32) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait SyncVisitor: Send + Sync + 'static {
    /// A block opened at nesting `depth` (1 for the outermost), in one of
    /// the files, on that file's C thread.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicI32, Ordering};
    /// use handle_registry::demo::traverse::SyncVisitor;
    ///
    /// struct Deepest(AtomicI32);
    /// impl SyncVisitor for Deepest {
    ///     fn start(&self, depth: i32) { self.0.fetch_max(depth, Ordering::Relaxed); }
    /// }
    /// ```
    fn start(&self, depth: i32) {
        let _ = depth;
    }

    /// A block closed; `open` and `close` are byte offsets in its file.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicI64, Ordering};
    /// use handle_registry::demo::traverse::SyncVisitor;
    ///
    /// struct Bytes(AtomicI64);
    /// impl SyncVisitor for Bytes {
    ///     fn end(&self, open: i32, close: i32) {
    ///         self.0.fetch_add(i64::from(close - open + 1), Ordering::Relaxed);
    ///     }
    /// }
    /// ```
    fn end(&self, open: i32, close: i32) {
        let _ = (open, close);
    }
}

/// Sharing the visitor through an `Arc` lets the caller keep a clone and
/// read it after the traversal (or while it runs).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use handle_registry::demo::traverse::{traverse_files_parallel, SyncVisitor};
///
/// #[derive(Default)]
/// struct Opened(AtomicUsize);
/// impl SyncVisitor for Opened {
///     fn start(&self, _depth: i32) { self.0.fetch_add(1, Ordering::Relaxed); }
/// }
///
/// let path = std::env::temp_dir().join(format!("arc-doc-{}", std::process::id()));
/// std::fs::write(&path, "{}").unwrap();
/// let opened = Arc::new(Opened::default());
/// traverse_files_parallel(&[&path, &path], Arc::clone(&opened)).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(opened.0.load(Ordering::Relaxed), 2);
/// ```
impl<V: SyncVisitor> SyncVisitor for Arc<V> {
    fn start(&self, depth: i32) {
        V::start(self, depth);
    }

    fn end(&self, open: i32, close: i32) {
        V::end(self, open, close);
    }
}

/// What [`traverse_files_parallel`] gives back.
///
/// ```
/// use handle_registry::demo::traverse::{traverse_files_parallel, SyncVisitor, TraverseError};
///
/// struct Nothing;
/// impl SyncVisitor for Nothing {}
///
/// let done = traverse_files_parallel(&["/no/such/file"], Nothing).unwrap();
/// assert_eq!(done.results, [Err(TraverseError::Open)]);
/// ```
#[derive(Debug)]
pub struct ParallelTraversal<V> {
    /// The visitor, after every thread finished.
    pub visitor: V,
    /// Each file's outcome, in the order of the paths given.
    pub results: Vec<Result<(), TraverseError>>,
}

struct Shared<V> {
    visitor: V,
    carrier: PanicCarrier,
}

impl<V: SyncVisitor> Route for Shared<V> {
    // Inlined into the trampoline: the demo's cost table measured 6 ns per
    // callback instead of 20 when it was a separate call.
    #[inline]
    fn deliver(user_data: *mut c_void, event: Event) -> Result<(), crate::Error> {
        let state = crate::restore_ref::<Self>(user_data)?;
        state.carrier.catch(|| match event {
            Event::Start { depth } => state.visitor.start(depth),
            Event::End { open, close } => state.visitor.end(open, close),
        });
        Ok(())
    }
}

/// Traverses every file at once, each on its own C thread, all reporting
/// to `visitor` concurrently; returns when every thread has finished.
///
/// At most [`ffi::TRAVERSE_MAX_FILES`] paths. Each file's own failure
/// (missing, malformed, …) is in [`ParallelTraversal::results`]; a file
/// for which C could not start a thread says [`TraverseError::Thread`].
///
/// # Errors
///
/// [`TraverseError::Panicked`] when the visitor panicked on a C thread: it
/// was caught there, the remaining callbacks of every thread were skipped,
/// and the visitor, maybe half-updated, is dropped.
/// [`TraverseError::TooManyFiles`] and [`TraverseError::InvalidPath`] before
/// any thread starts.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use handle_registry::demo::traverse::{traverse_files_parallel, SyncVisitor};
///
/// #[derive(Default)]
/// struct Blocks(AtomicUsize);
/// impl SyncVisitor for Blocks {
///     fn end(&self, _open: i32, _close: i32) { self.0.fetch_add(1, Ordering::Relaxed); }
/// }
///
/// let dir = std::env::temp_dir();
/// let paths: Vec<_> = (0..3).map(|i| dir.join(format!("parallel-doc-{}-{i}", std::process::id()))).collect();
/// for path in &paths {
///     std::fs::write(path, "{ {} {} }").unwrap();
/// }
/// let done = traverse_files_parallel(&paths, Blocks::default()).unwrap();
/// for path in &paths {
///     std::fs::remove_file(path).unwrap();
/// }
/// assert!(done.results.iter().all(Result::is_ok));
/// assert_eq!(done.visitor.0.load(Ordering::Relaxed), 9);
/// ```
pub fn traverse_files_parallel<V: SyncVisitor, P: AsRef<Path>>(
    paths: &[P],
    visitor: V,
) -> Result<ParallelTraversal<V>, TraverseError> {
    let count = c_int::try_from(paths.len())
        .ok()
        .filter(|&n| n <= ffi::TRAVERSE_MAX_FILES)
        .ok_or(TraverseError::TooManyFiles)?;
    let filenames = paths
        .iter()
        .map(|p| super::c_path(p.as_ref()))
        .collect::<Result<Vec<CString>, _>>()?;
    let pointers: Vec<_> = filenames.iter().map(|name| name.as_ptr()).collect();
    let mut codes: Vec<c_int> = vec![ffi::TRAVERSE_ERR_THREAD; paths.len()];

    let state = Handle::new(Shared {
        visitor,
        carrier: PanicCarrier::new(),
    });
    let cbs = route::c_callbacks::<Shared<V>>(Wants::BOTH);
    // SAFETY: `pointers` holds `count` NUL-terminated strings and `codes`
    // room for `count` results, all alive until C returns (it joins its
    // threads first); the trampolines accept any `user_data` from any
    // thread, concurrently.
    let status = unsafe {
        ffi::traverse_files_parallel(
            pointers.as_ptr(),
            count,
            cbs,
            state.as_ptr(),
            codes.as_mut_ptr(),
        )
    };
    let Shared { visitor, carrier } = state.into_inner().map_err(TraverseError::StateLost)?;
    if let Some(payload) = carrier.take() {
        return Err(TraverseError::from_panic(payload));
    }
    match status {
        // THREAD: the files that got a thread were still traversed.
        ffi::TRAVERSE_OK | ffi::TRAVERSE_ERR_THREAD => Ok(ParallelTraversal {
            visitor,
            results: codes.into_iter().map(TraverseError::check).collect(),
        }),
        other => Err(TraverseError::from_failure(other)),
    }
}
