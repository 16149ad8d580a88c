//! Callbacks that C keeps and calls after the registering call returned.
//!
//! C's `traverse_unsubscribe` does not wait for a publication already
//! running on another thread, which works on its own copy of the
//! subscription table: such a publication can call the callbacks after
//! unsubscribing returned. With a pointer as `user_data` that is a use
//! after free; with a handle it resolves to [`Error::Stale`](crate::Error)
//! and is ignored (and counted in [`ignored_callbacks`](super::ignored_callbacks)).

use std::ffi::{c_int, c_void};
use std::path::Path;
use std::sync::Arc;

use super::route;
use super::visitor::{wants_of, Exclusive};
use super::{Callbacks, TraverseError};
use crate::demo::ffi;
use crate::panic::PanicCarrier;
use crate::Handle;

/// A registration of [`Callbacks`] with the C library; unregisters on drop.
///
/// The callbacks run during [`publish`] and [`publish_on_c_thread`] calls,
/// on whatever thread publishes, one event at a time. A panic in one of
/// them is caught, the subscription's later callbacks are skipped, and
/// [`check`](Subscription::check) reports it: no publisher can resume it,
/// as it may be a C thread or a caller that does not own the subscription.
///
/// ```
/// use std::sync::mpsc;
/// use handle_registry::demo::traverse::{publish, subscribe, Callbacks};
///
/// let (tx, rx) = mpsc::channel();
/// let subscription = subscribe(Callbacks::new().on_start(move |d| tx.send(d).unwrap())).unwrap();
///
/// let path = std::env::temp_dir().join(format!("subscription-doc-{}", std::process::id()));
/// std::fs::write(&path, "{{}}").unwrap();
/// publish(&path).unwrap(); // later: C calls the kept callbacks
/// drop(subscription); // unregisters and frees the closures
/// publish(&path).unwrap(); // no one listens now
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
/// ```
pub struct Subscription {
    id: c_int,
    c_callbacks: ffi::Callbacks,
    state: Handle<'static, Exclusive<Callbacks>>,
    carrier: Arc<PanicCarrier>,
}

/// Registers `callbacks` with the C library until the returned
/// [`Subscription`] is dropped.
///
/// # Errors
///
/// [`TraverseError::TooManySubscriptions`] when
/// [`ffi::TRAVERSE_MAX_SUBSCRIPTIONS`] are live.
///
/// ```
/// use handle_registry::demo::traverse::{subscribe, Callbacks};
///
/// let a = subscribe(Callbacks::new()).unwrap();
/// let b = subscribe(Callbacks::new()).unwrap();
/// assert_ne!(a.id(), b.id());
/// ```
pub fn subscribe(callbacks: Callbacks) -> Result<Subscription, TraverseError> {
    let wants = wants_of(&callbacks);
    let carrier = Arc::new(PanicCarrier::new());
    let state = Handle::new(Exclusive {
        visitor: callbacks,
        carrier: Arc::clone(&carrier),
    });
    let c_callbacks = route::c_callbacks::<Exclusive<Callbacks>>(wants);
    // SAFETY: the trampolines accept any `user_data`, from any thread, for
    // as long as C keeps them: a late call after the state is gone is
    // ignored.
    let id = unsafe { ffi::traverse_subscribe(c_callbacks, state.as_ptr()) };
    if id <= 0 {
        return Err(TraverseError::from_failure(id));
    }
    Ok(Subscription {
        id,
        c_callbacks,
        state,
        carrier,
    })
}

impl Subscription {
    /// The C library's id for this subscription.
    ///
    /// ```
    /// let s = handle_registry::demo::traverse::subscribe(Default::default()).unwrap();
    /// assert!(s.id() > 0);
    /// ```
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The `user_data` C was given: a registry handle, stale once the
    /// subscription is dropped.
    ///
    /// ```
    /// use handle_registry::demo::traverse::{subscribe, Callbacks};
    ///
    /// let s = subscribe(Callbacks::new()).unwrap();
    /// let user_data = s.user_data();
    /// assert!(handle_registry::Registry::global().leak_report().entries().iter().any(|e| e.handle() == user_data));
    /// drop(s);
    /// assert!(handle_registry::Registry::global().leak_report().entries().iter().all(|e| e.handle() != user_data));
    /// ```
    pub fn user_data(&self) -> *mut c_void {
        self.state.as_ptr()
    }

    /// The callbacks C was given: trampolines that accept any `user_data`,
    /// NULL for a missing closure. With [`user_data`](Subscription::user_data)
    /// this is exactly what a C library keeps, and what it would call late.
    ///
    /// ```
    /// use handle_registry::demo::traverse::{subscribe, Callbacks};
    ///
    /// let s = subscribe(Callbacks::new().on_end(|_, _| {})).unwrap();
    /// assert!(s.c_callbacks().start.is_none());
    /// assert!(s.c_callbacks().end.is_some());
    /// ```
    pub fn c_callbacks(&self) -> ffi::Callbacks {
        self.c_callbacks
    }

    /// `Err(TraverseError::Panicked)` once if a callback panicked (the
    /// panic is consumed); `Ok(())` otherwise. After a panic the
    /// subscription's callbacks are skipped for good.
    ///
    /// ```
    /// use handle_registry::demo::traverse::{publish, subscribe, Callbacks, TraverseError};
    ///
    /// let s = subscribe(Callbacks::new().on_start(|_| panic!("late boom"))).unwrap();
    /// let path = std::env::temp_dir().join(format!("check-doc-{}", std::process::id()));
    /// std::fs::write(&path, "{}").unwrap();
    /// publish(&path).unwrap();
    /// std::fs::remove_file(&path).unwrap();
    /// assert_eq!(s.check(), Err(TraverseError::Panicked { message: "late boom".into() }));
    /// assert_eq!(s.check(), Ok(()));
    /// ```
    pub fn check(&self) -> Result<(), TraverseError> {
        match self.carrier.take() {
            Some(payload) => Err(TraverseError::from_panic(payload)),
            None => Ok(()),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // SAFETY: a plain integer argument. Unsubscribing first stops new
        // publications; the `state` field is dropped next, which makes the
        // handle stale for those already running.
        let _ = unsafe { ffi::traverse_unsubscribe(self.id) };
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("user_data", &self.user_data())
            .finish()
    }
}

/// Traverses the file on this thread and reports each event to every live
/// subscription, in subscription order.
///
/// ```
/// use handle_registry::demo::traverse::{publish, TraverseError};
///
/// assert_eq!(publish("/no/such/file"), Err(TraverseError::Open));
/// ```
pub fn publish(path: impl AsRef<Path>) -> Result<(), TraverseError> {
    let filename = super::c_path(path.as_ref())?;
    // SAFETY: `filename` is NUL-terminated and outlives the call; every
    // subscription's callbacks are trampolines that accept any `user_data`.
    TraverseError::check(unsafe { ffi::traverse_publish(filename.as_ptr()) })
}

/// [`publish`] from a C thread: the callbacks run on a pthread that C
/// starts, and joins before this returns.
///
/// ```
/// use std::sync::mpsc;
/// use handle_registry::demo::traverse::{publish_on_c_thread, subscribe, Callbacks};
///
/// let (tx, rx) = mpsc::channel();
/// let _s = subscribe(Callbacks::new().on_start(move |_| tx.send(std::thread::current().id()).unwrap())).unwrap();
/// let path = std::env::temp_dir().join(format!("c-thread-doc-{}", std::process::id()));
/// std::fs::write(&path, "{}").unwrap();
/// publish_on_c_thread(&path).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_ne!(rx.recv().unwrap(), std::thread::current().id());
/// ```
pub fn publish_on_c_thread(path: impl AsRef<Path>) -> Result<(), TraverseError> {
    let filename = super::c_path(path.as_ref())?;
    // SAFETY: as in `publish`; C joins its thread before returning, so
    // `filename` outlives every use.
    TraverseError::check(unsafe { ffi::traverse_publish_on_thread(filename.as_ptr()) })
}
