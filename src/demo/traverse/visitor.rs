//! The first Go shape: a visitor interface, one exclusive borrow per call.

use std::any::Any;
use std::ffi::{c_int, c_void, CStr};
use std::path::Path;
use std::sync::Arc;

use super::route::{self, Event, Route, Wants};
use super::{Callbacks, TraverseError};
use crate::demo::ffi;
use crate::panic::PanicCarrier;
use crate::Handle;

/// Receives the events of a traversal; every method defaults to a no-op.
///
/// C calls back on the thread that started the traversal, one event at a
/// time, so the visitor gets `&mut self`. It must still be `Send + 'static`
/// because it lives in the registry for the duration of the call, and the
/// registry can hand its values to any thread.
///
/// ```
/// use handle_registry::demo::traverse::{traverse_file, Visitor};
///
/// #[derive(Default)]
/// struct Blocks(Vec<(i32, i32)>);
///
/// impl Visitor for Blocks {
///     fn end(&mut self, open: i32, close: i32) {
///         self.0.push((open, close));
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("visitor-doc-{}", std::process::id()));
/// std::fs::write(&path, "{}{ {} }").unwrap();
/// let blocks = traverse_file(&path, Blocks::default()).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(blocks.0, [(0, 1), (4, 5), (2, 7)]);
/// ```
pub trait Visitor: Send + 'static {
    /// A block opened at nesting `depth`, 1 for the outermost (the seed's
    /// [`traverse`] reports 100).
    ///
    /// ```
    /// use handle_registry::demo::traverse::{traverse, Visitor};
    ///
    /// struct Depth(i32);
    /// impl Visitor for Depth {
    ///     fn start(&mut self, depth: i32) { self.0 = depth; }
    /// }
    /// assert_eq!(traverse(c"seed", Depth(0)).unwrap().0, 100);
    /// ```
    fn start(&mut self, depth: i32) {
        let _ = depth;
    }

    /// A block closed; `open` and `close` are the byte offsets of its `{`
    /// and `}` (the seed's [`traverse`] reports 2 and 3).
    ///
    /// ```
    /// use handle_registry::demo::traverse::{traverse, Visitor};
    ///
    /// struct Span(i32, i32);
    /// impl Visitor for Span {
    ///     fn end(&mut self, open: i32, close: i32) { *self = Span(open, close); }
    /// }
    /// let span = traverse(c"seed", Span(0, 0)).unwrap();
    /// assert_eq!((span.0, span.1), (2, 3));
    /// ```
    fn end(&mut self, open: i32, close: i32) {
        let _ = (open, close);
    }
}

/// What `user_data` names during an exclusive traversal.
pub(crate) struct Exclusive<V> {
    pub visitor: V,
    /// Shared with a [`Subscription`](super::Subscription), which reads it
    /// without borrowing the state.
    pub carrier: Arc<PanicCarrier>,
}

impl<V: Visitor> Route for Exclusive<V> {
    // Inlined into the trampoline: the demo's cost table measured 6 ns per
    // callback instead of 20 when it was a separate call.
    #[inline]
    fn deliver(user_data: *mut c_void, event: Event) -> Result<(), crate::Error> {
        let mut state = crate::restore::<Self>(user_data)?;
        let Exclusive { visitor, carrier } = &mut *state;
        carrier.catch(|| match event {
            Event::Start { depth } => visitor.start(depth),
            Event::End { open, close } => visitor.end(open, close),
        });
        Ok(())
    }
}

/// Which callbacks C gets for `visitor`: all of them, except for
/// [`Callbacks`], whose missing closures become NULL so that C never
/// enters Rust for those events.
pub(crate) fn wants_of<V: Visitor>(visitor: &V) -> Wants {
    match (visitor as &dyn Any).downcast_ref::<Callbacks>() {
        Some(callbacks) => Wants {
            start: callbacks.start.is_some(),
            end: callbacks.end.is_some(),
        },
        None => Wants::BOTH,
    }
}

/// Saves `visitor`, lets `call` run C with the callbacks and handle, then
/// takes the visitor back and resumes a panic a callback raised. `call`
/// must be a C call that calls back only on this thread, before returning.
pub(crate) fn with_exclusive<V: Visitor, R>(
    visitor: V,
    call: impl FnOnce(ffi::Callbacks, *mut c_void) -> R,
) -> Result<(V, R), TraverseError> {
    let wants = wants_of(&visitor);
    let state = Handle::new(Exclusive {
        visitor,
        carrier: Arc::default(),
    });
    let (cbs, user_data) = (route::c_callbacks::<Exclusive<V>>(wants), state.as_ptr());
    // C calls back on this thread before returning: lending the borrow for
    // the whole call spares each callback a borrow of its own.
    let returned = state
        .registry()
        .lend::<Exclusive<V>, _>(user_data, || call(cbs, user_data))
        .map_err(TraverseError::StateLost)?;
    let Exclusive { visitor, carrier } = state.into_inner().map_err(TraverseError::StateLost)?;
    if let Some(payload) = carrier.take() {
        // The half-updated visitor goes with the panic.
        crate::panic::resume_dropping(payload, visitor);
    }
    Ok((visitor, returned))
}

/// The seed's `traverse`: C reports `start(100)` then `end(2, 3)` and
/// ignores `filename`. Gives the visitor back.
///
/// # Panics
///
/// Resumes a panic raised by the visitor, after C returned.
///
/// ```
/// use handle_registry::demo::traverse::{traverse, Visitor};
///
/// #[derive(Default)]
/// struct Log(Vec<String>);
/// impl Visitor for Log {
///     fn start(&mut self, i: i32) { self.0.push(format!("start {i}")); }
///     fn end(&mut self, a: i32, b: i32) { self.0.push(format!("end {a} {b}")); }
/// }
/// let log = traverse(c"any.txt", Log::default()).unwrap();
/// assert_eq!(log.0, ["start 100", "end 2 3"]);
/// ```
pub fn traverse<V: Visitor>(filename: &CStr, visitor: V) -> Result<V, TraverseError> {
    let (visitor, ()) = with_exclusive(visitor, |cbs, user_data| {
        // SAFETY: the header promises that `traverse` neither reads nor
        // writes `filename`, so handing out a `*mut` to a `&CStr` is fine;
        // the trampolines accept any `user_data`.
        unsafe { ffi::traverse(filename.as_ptr().cast_mut(), cbs, user_data) }
    })?;
    Ok(visitor)
}

/// Reads the file at `path` and reports each `{ … }` block to `visitor`,
/// on this thread; gives the visitor back.
///
/// Events are reported while reading: on a malformed file the visitor has
/// seen the events before the fault, and is dropped with the error. Use
/// [`traverse_file_mut`] to keep it in every case.
///
/// # Panics
///
/// Resumes a panic raised by the visitor, after C returned; the events
/// after the panic are not delivered.
///
/// ```
/// use handle_registry::demo::traverse::{traverse_file, TraverseError, Visitor};
///
/// #[derive(Default)]
/// struct Count(usize);
/// impl Visitor for Count {
///     fn start(&mut self, _depth: i32) { self.0 += 1; }
/// }
///
/// let path = std::env::temp_dir().join(format!("traverse-file-doc-{}", std::process::id()));
/// std::fs::write(&path, "{ { } { } }").unwrap();
/// assert_eq!(traverse_file(&path, Count::default()).unwrap().0, 3);
/// std::fs::write(&path, "{ }}").unwrap();
/// assert_eq!(traverse_file(&path, Count::default()).err(), Some(TraverseError::UnmatchedClose));
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn traverse_file<V: Visitor>(path: impl AsRef<Path>, visitor: V) -> Result<V, TraverseError> {
    let (visitor, code) = file_with_code(path.as_ref(), visitor)?;
    TraverseError::check(code)?;
    Ok(visitor)
}

/// [`traverse_file`] for a visitor the caller keeps, even when the file
/// turns out to be malformed.
///
/// The visitor is moved into the registry for the duration of the call and
/// `V::default()` stands in its place; it is moved back before returning.
/// If a callback panics, the half-updated visitor is dropped, `*visitor`
/// stays the default, and the panic is resumed.
///
/// ```
/// use handle_registry::demo::traverse::{traverse_file_mut, TraverseError, Visitor};
///
/// #[derive(Default)]
/// struct Opened(Vec<i32>);
/// impl Visitor for Opened {
///     fn start(&mut self, depth: i32) { self.0.push(depth); }
/// }
///
/// let path = std::env::temp_dir().join(format!("traverse-mut-doc-{}", std::process::id()));
/// std::fs::write(&path, "{ { ").unwrap();
/// let mut opened = Opened::default();
/// assert_eq!(traverse_file_mut(&path, &mut opened), Err(TraverseError::Unclosed));
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(opened.0, [1, 2]); // what was seen before the fault
/// ```
pub fn traverse_file_mut<V: Visitor + Default>(
    path: impl AsRef<Path>,
    visitor: &mut V,
) -> Result<(), TraverseError> {
    let (back, code) = file_with_code(path.as_ref(), std::mem::take(visitor))?;
    *visitor = back;
    TraverseError::check(code)
}

/// Runs C's `traverse_file`; the code is the caller's to check.
fn file_with_code<V: Visitor>(path: &Path, visitor: V) -> Result<(V, c_int), TraverseError> {
    let filename = super::c_path(path)?;
    with_exclusive(visitor, |cbs, user_data| {
        // SAFETY: `filename` is NUL-terminated and outlives the call; the
        // trampolines accept any `user_data` and C calls them on this
        // thread only.
        unsafe { ffi::traverse_file(filename.as_ptr(), cbs, user_data) }
    })
}

/// Has C call `visitor.start(i)` for `i` in `0..n` through the same
/// trampoline as a traversal: the per-callback cost of this module.
///
/// # Panics
///
/// Resumes a panic raised by the visitor; the remaining calls still enter
/// the trampoline but are skipped.
///
/// ```
/// use handle_registry::demo::traverse::{repeat_start, Visitor};
///
/// struct Sum(i64);
/// impl Visitor for Sum {
///     fn start(&mut self, i: i32) { self.0 += i64::from(i); }
/// }
/// assert_eq!(repeat_start(Sum(0), 5).unwrap().0, 10);
/// ```
pub fn repeat_start<V: Visitor>(visitor: V, n: i64) -> Result<V, TraverseError> {
    let (visitor, ()) = with_exclusive(visitor, |cbs, user_data| {
        // SAFETY: the trampoline accepts any `user_data`; C calls it on
        // this thread only.
        unsafe { ffi::traverse_bench_start(cbs, user_data, n) }
    })?;
    Ok(visitor)
}
