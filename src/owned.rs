//! [`Handle<T>`]: a handle that unrefs itself.
//!
//! Go code writes `p := pointer.Save(v); defer pointer.Unref(p)`. Forgetting
//! the `defer` leaks the value; running it twice is a bug. `Handle` is the
//! Rust shape of that pair: the value lives as long as the `Handle`, and C
//! gets [`Handle::as_ptr`] for the duration of the calls that use it.

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;

use crate::{Error, Guard, Registry, SharedGuard};

/// An owning handle: saves a value on creation and unrefs it on drop.
///
/// ```
/// use handle_registry::{restore, Handle};
///
/// let counter = Handle::new(0u32);
/// let user_data = counter.as_ptr(); // what C gets
/// *restore::<u32>(user_data).unwrap() += 1; // what a callback does
/// assert_eq!(counter.into_inner(), Ok(1));
/// ```
pub struct Handle<'r, T: Any + Send> {
    registry: &'r Registry,
    ptr: usize,
    /// Owns a `T` (for drop check and auto traits: the value is reached
    /// like through a `Mutex`, so `T: Send` makes the handle `Send + Sync`).
    _value: PhantomData<fn() -> T>,
}

impl<T: Any + Send> Handle<'static, T> {
    /// Saves `value` in the [global registry](Registry::global).
    ///
    /// ```
    /// let h = handle_registry::Handle::new(String::from("x"));
    /// assert_eq!(*h.restore().unwrap(), "x");
    /// ```
    #[track_caller]
    pub fn new(value: T) -> Self {
        Registry::global().handle(value)
    }

    /// Takes ownership of a handle of the global registry, after checking
    /// that it is live and holds a `T`.
    ///
    /// The `Handle` owns one reference: its drop (or
    /// [`into_inner`](Handle::into_inner)) unrefs once. Call it once per
    /// reference you own: once for a plain handle, once more per
    /// [`retain`](crate::Registry::retain). Two `Handle`s made from one
    /// reference share it: the first dropped unrefs the value, and the
    /// other then finds the handle [stale](Error::Stale) (its drop does
    /// nothing).
    ///
    /// ```
    /// use handle_registry::Handle;
    ///
    /// let p = Handle::new(7u8).into_ptr(); // C owns it for a while
    /// let h = Handle::<u8>::from_ptr(p).unwrap(); // and gives it back
    /// assert_eq!(h.into_inner(), Ok(7));
    /// assert!(Handle::<u8>::from_ptr(p).is_err()); // stale now
    /// ```
    pub fn from_ptr(ptr: *mut c_void) -> Result<Self, Error> {
        Handle::from_ptr_in(Registry::global(), ptr)
    }
}

impl<'r, T: Any + Send> Handle<'r, T> {
    /// `ptr` must be a handle of `registry` holding a `T` that nobody else
    /// will unref (not for memory safety: otherwise this handle's drop
    /// would unref someone else's value).
    pub(crate) fn from_parts(registry: &'r Registry, ptr: *mut c_void) -> Self {
        Handle {
            registry,
            ptr: ptr as usize,
            _value: PhantomData,
        }
    }

    /// Like [`from_ptr`](Handle::from_ptr), for a handle of `registry`.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(1u8);
    /// let h = handle_registry::Handle::<u8>::from_ptr_in(&r, p).unwrap();
    /// drop(h);
    /// assert!(r.is_empty());
    /// ```
    pub fn from_ptr_in(registry: &'r Registry, ptr: *mut c_void) -> Result<Self, Error> {
        registry.check::<T>(ptr)?;
        // Checked live and holding a `T`; the caller gives us ownership.
        Ok(Handle::from_parts(registry, ptr))
    }

    /// The handle to give C as `user_data`. Valid until this `Handle` is
    /// dropped or consumed.
    ///
    /// ```
    /// let h = handle_registry::Handle::new(());
    /// assert!(!h.as_ptr().is_null());
    /// ```
    pub fn as_ptr(&self) -> *mut c_void {
        crate::handle::to_ptr(self.ptr as u64)
    }

    /// Borrows the value exclusively, as [`Registry::restore`] does.
    ///
    /// ```
    /// let h = handle_registry::Handle::new(vec![1]);
    /// h.restore().unwrap().push(2);
    /// assert_eq!(*h.restore().unwrap(), [1, 2]);
    /// ```
    pub fn restore(&self) -> Result<Guard<'r, T>, Error> {
        self.registry.restore(self.as_ptr())
    }

    /// Borrows the value shared, as [`Registry::restore_ref`] does.
    ///
    /// ```
    /// let h = handle_registry::Handle::new(5i64);
    /// let (a, b) = (h.restore_ref().unwrap(), h.restore_ref().unwrap());
    /// assert_eq!(*a + *b, 10);
    /// ```
    pub fn restore_ref(&self) -> Result<SharedGuard<'r, T>, Error>
    where
        T: Sync,
    {
        self.registry.restore_ref(self.as_ptr())
    }

    /// Removes the value from the registry and returns it.
    ///
    /// Fails with [`Error::Stale`] if C already freed the handle (for
    /// example through [`c_unref`](crate::c_unref) as a destroy-notify), or
    /// [`Error::Busy`] if this thread still borrows it through a guard
    /// obtained from the raw pointer; in that case the handle is unreffed
    /// at once ([`Error::Stale`] from then on) and the value is dropped when
    /// that borrow ends, as on drop. (The registry tells this thread's
    /// borrows by an owner id, which a thread still running its
    /// thread-local destructors may share with a newer thread, see the
    /// README's "Threads and re-entrancy": a borrow that such a thread
    /// holds then reads as this thread's too, and the value is dropped when
    /// it ends instead of being returned.)
    ///
    /// Fails with [`Error::Retained`] if the handle was
    /// [`retain`](crate::Registry::retain)ed and other references are
    /// still out: the value is not moved out from under them; this
    /// handle's own reference is dropped (as on drop), and the value lives
    /// on until the others are unreffed.
    ///
    /// ```
    /// use handle_registry::{Error, Handle};
    ///
    /// let h = Handle::new(String::from("back"));
    /// assert_eq!(h.into_inner().unwrap(), "back");
    ///
    /// let h = Handle::new(String::from("kept"));
    /// let p = h.as_ptr();
    /// handle_registry::retain(p).unwrap(); // a C destroy-notify holds one
    /// assert_eq!(h.into_inner(), Err(Error::Retained));
    /// assert_eq!(*handle_registry::restore::<String>(p).unwrap(), "kept");
    /// handle_registry::unref(p).unwrap(); // C's reference, the last
    /// ```
    pub fn into_inner(self) -> Result<T, Error> {
        let this = std::mem::ManuallyDrop::new(self);
        let taken = this.registry.take(this.as_ptr());
        if let Err(Error::Busy | Error::Retained) = taken {
            // Keep the promise that the value does not outlive the handle
            // (for `Retained`: drop our reference, the others keep it).
            let _ = this.registry.unref(this.as_ptr());
        }
        taken
    }

    /// Gives up ownership: the value stays in the registry until someone
    /// calls [`unref`](crate::unref), [`take`](crate::take) or
    /// [`c_unref`](crate::c_unref) on the returned handle. This is how a
    /// value is handed to a C API that takes a destroy-notify.
    ///
    /// ```
    /// let p = handle_registry::Handle::new(3u8).into_ptr();
    /// assert_eq!(handle_registry::take::<u8>(p), Ok(3));
    /// ```
    pub fn into_ptr(self) -> *mut c_void {
        let this = std::mem::ManuallyDrop::new(self);
        this.as_ptr()
    }

    /// The registry the handle lives in.
    ///
    /// ```
    /// let h = handle_registry::Handle::new(0u8);
    /// assert!(std::ptr::eq(h.registry(), handle_registry::Registry::global()));
    /// ```
    pub fn registry(&self) -> &'r Registry {
        self.registry
    }
}

impl<T: Any + Send> Drop for Handle<'_, T> {
    fn drop(&mut self) {
        // Stale means C already freed it (destroy-notify): nothing to do.
        let _ = self.registry.unref(self.as_ptr());
    }
}

impl<T: Any + Send> fmt::Debug for Handle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("ptr", &self.as_ptr())
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}
