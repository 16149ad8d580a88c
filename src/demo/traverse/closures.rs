//! The second Go shape: a struct of optional closures.

use std::fmt;
use std::path::Path;

use super::{TraverseError, Visitor};

type StartFn = Box<dyn FnMut(i32) + Send>;
type EndFn = Box<dyn FnMut(i32, i32) + Send>;

/// Optional closures, one per event, like the seed's Go `Callbacks` struct.
///
/// A `None` closure becomes a NULL pointer for C, which then skips that
/// event without entering Rust at all (see
/// [`trampoline_entries`](super::trampoline_entries)). The closures are
/// `Send + 'static` because they live in the registry; share results with
/// the caller through an `Arc`, a channel, or moved-in state.
///
/// `Callbacks` is a [`Visitor`], so it works with every function of this
/// module, [`subscribe`](super::subscribe) included.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use handle_registry::demo::traverse::{traverse_file_with, Callbacks};
///
/// let closed = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&closed);
/// // Go: Callbacks{End: func(a, b int) { ... }}
/// let callbacks = Callbacks {
///     start: None,
///     end: Some(Box::new(move |open, close| sink.lock().unwrap().push((open, close)))),
/// };
///
/// let path = std::env::temp_dir().join(format!("callbacks-doc-{}", std::process::id()));
/// std::fs::write(&path, "x{y}").unwrap();
/// traverse_file_with(&path, callbacks).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(*closed.lock().unwrap(), [(1, 3)]);
/// ```
#[derive(Default)]
pub struct Callbacks {
    /// Called with the depth of each block that opens.
    pub start: Option<StartFn>,
    /// Called with the offsets of `{` and `}` of each block that closes.
    pub end: Option<EndFn>,
}

impl Callbacks {
    /// No closures: C is given two NULL pointers.
    ///
    /// ```
    /// let none = handle_registry::demo::traverse::Callbacks::new();
    /// assert!(none.start.is_none() && none.end.is_none());
    /// ```
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// Sets the closure for block openings.
    ///
    /// ```
    /// use handle_registry::demo::traverse::{traverse, Callbacks};
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// traverse(c"seed", Callbacks::new().on_start(move |depth| tx.send(depth).unwrap())).unwrap();
    /// assert_eq!(rx.recv(), Ok(100));
    /// ```
    pub fn on_start(mut self, f: impl FnMut(i32) + Send + 'static) -> Callbacks {
        self.start = Some(Box::new(f));
        self
    }

    /// Sets the closure for block closings.
    ///
    /// ```
    /// use handle_registry::demo::traverse::{traverse, Callbacks};
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// traverse(c"seed", Callbacks::new().on_end(move |a, b| tx.send((a, b)).unwrap())).unwrap();
    /// assert_eq!(rx.recv(), Ok((2, 3)));
    /// ```
    pub fn on_end(mut self, f: impl FnMut(i32, i32) + Send + 'static) -> Callbacks {
        self.end = Some(Box::new(f));
        self
    }
}

impl Visitor for Callbacks {
    fn start(&mut self, depth: i32) {
        if let Some(f) = &mut self.start {
            f(depth);
        }
    }

    fn end(&mut self, open: i32, close: i32) {
        if let Some(f) = &mut self.end {
            f(open, close);
        }
    }
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("start", &self.start.as_ref().map(|_| "FnMut(i32)"))
            .field("end", &self.end.as_ref().map(|_| "FnMut(i32, i32)"))
            .finish()
    }
}

/// Reads the file at `path` and calls the closures for its blocks, on this
/// thread; gives the closures back.
///
/// The same as [`traverse_file`](super::traverse_file) with `Callbacks` as
/// the visitor, named for the Go shape it mirrors.
///
/// # Panics
///
/// Resumes a panic raised by a closure, after C returned; the events after
/// the panic are not delivered.
///
/// ```
/// use std::sync::atomic::{AtomicI32, Ordering};
/// use std::sync::Arc;
/// use handle_registry::demo::traverse::{traverse_file_with, Callbacks};
///
/// let deepest = Arc::new(AtomicI32::new(0));
/// let seen = Arc::clone(&deepest);
/// let path = std::env::temp_dir().join(format!("with-doc-{}", std::process::id()));
/// std::fs::write(&path, "{{{}}}").unwrap();
/// traverse_file_with(&path, Callbacks::new().on_start(move |d| {
///     seen.fetch_max(d, Ordering::Relaxed);
/// }))
/// .unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(deepest.load(Ordering::Relaxed), 3);
/// ```
pub fn traverse_file_with(
    path: impl AsRef<Path>,
    callbacks: Callbacks,
) -> Result<Callbacks, TraverseError> {
    super::traverse_file(path, callbacks)
}
