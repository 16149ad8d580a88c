//! Counted handles against a real C API: one `user_data` under several
//! names, each registration with its own destroy-notify.
//!
//! `native/kinds.h` is a tiny function table in the shape of
//! `sqlite3_create_function_v2(db, name, .., user_data, .., xDestroy)`: C
//! calls `destroy(user_data)` once per registration, when the name is
//! replaced or dropped, or the table closed. [`Table::create_function`]
//! saves the closure once and [`retain`](crate::retain)s its handle once
//! per extra name, passing [`c_unref`](crate::c_unref) as every
//! destroy-notify: the closure is dropped when the last name goes, exactly
//! once, whatever the order.
//!
//! ```
//! use handle_registry::demo::kinds::Table;
//!
//! let mut t = Table::new();
//! t.create_function(&["double", "twice"], |x| x * 2).unwrap();
//! assert_eq!(t.call("double", 4), Ok(8));
//! t.drop_function("double").unwrap(); // one destroy-notify: still alive
//! assert_eq!(t.call("twice", 5), Ok(10));
//! drop(t); // the last destroy-notify drops the closure
//! ```

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::NonNull;

use crate::Error;

mod raw {
    use std::ffi::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct KindsTable {
        _private: [u8; 0],
    }

    pub type CallFn = unsafe extern "C" fn(user_data: *mut c_void, arg: c_int) -> c_int;
    pub type DestroyFn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

    pub const KINDS_OK: c_int = 0;
    pub const KINDS_ERR_FULL: c_int = -2;
    pub const KINDS_ERR_NO_FUNCTION: c_int = -3;

    extern "C" {
        pub fn kinds_open() -> *mut KindsTable;
        pub fn kinds_create_function(
            table: *mut KindsTable,
            name: *const c_char,
            f: CallFn,
            user_data: *mut c_void,
            destroy: DestroyFn,
        ) -> c_int;
        pub fn kinds_call(
            table: *mut KindsTable,
            name: *const c_char,
            arg: c_int,
            out: *mut c_int,
        ) -> c_int;
        pub fn kinds_drop_function(table: *mut KindsTable, name: *const c_char) -> c_int;
        pub fn kinds_count(table: *const KindsTable) -> c_int;
        pub fn kinds_close(table: *mut KindsTable);
    }
}

/// What a registered function holds: the closure, behind one handle.
type Function = Box<dyn FnMut(i32) -> i32 + Send>;

/// Why a [`Table`] operation failed.
///
/// ```
/// use handle_registry::demo::kinds::{KindsError, Table};
///
/// let mut t = Table::new();
/// assert_eq!(t.call("none", 1), Err(KindsError::NoFunction));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindsError {
    /// No function of that name is registered.
    NoFunction,
    /// The table holds its maximum of 16 functions.
    Full,
    /// A name is longer than 31 bytes or contains a NUL.
    BadName,
    /// The callback could not reach its closure (the handle was refused),
    /// or the closure panicked (the panic was caught before C).
    Callback(Error),
}

thread_local! {
    /// The trampoline's failure, for [`Table::call`] to report.
    static FAILED: Cell<Option<Error>> = const { Cell::new(None) };
}

unsafe extern "C" fn call_trampoline(user_data: *mut c_void, arg: c_int) -> c_int {
    // Nothing may unwind into C. The release is inside the catch too: when
    // the handle was unreffed during the call, it drops the closure here,
    // and what the closure captured may panic in its `Drop`.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::restore_with(user_data, |f: &mut Function| f(arg))
    }))
    .unwrap_or_else(|payload| {
        // Dropping a payload can panic too; `c_unref` does the same for
        // values' panics.
        crate::panic::drop_payload(payload);
        Err(Error::Panicked)
    });
    match out {
        Ok(v) => v,
        Err(e) => {
            let _ = FAILED.try_with(|f| f.set(Some(e)));
            0
        }
    }
}

/// A C function table (`native/kinds.h`). Not `Send`: C's table is not
/// thread-safe.
///
/// ```
/// let t = handle_registry::demo::kinds::Table::new();
/// assert_eq!(t.len(), 0);
/// ```
pub struct Table {
    raw: NonNull<raw::KindsTable>,
}

impl Table {
    /// An empty table.
    ///
    /// # Panics
    ///
    /// When C is out of memory.
    ///
    /// ```
    /// let t = handle_registry::demo::kinds::Table::new();
    /// assert!(t.is_empty());
    /// ```
    #[allow(clippy::new_without_default)]
    pub fn new() -> Table {
        // SAFETY: no arguments; NULL is checked.
        let raw = unsafe { raw::kinds_open() };
        Table {
            raw: NonNull::new(raw).expect("kinds_open: out of memory"),
        }
    }

    /// Registers `f` under every name of `names`, with one handle: saved
    /// once, [`retain`](crate::retain)ed once per extra name, each
    /// registration's destroy-notify [`c_unref`](crate::c_unref). A name
    /// already registered is replaced (C calls its destroy-notify).
    ///
    /// On an error, the names registered before it stay registered (each
    /// with its reference) and the failed one's reference is dropped.
    ///
    /// ```
    /// use handle_registry::demo::kinds::Table;
    ///
    /// let mut t = Table::new();
    /// t.create_function(&["a", "b", "c"], |x| x + 1).unwrap();
    /// assert_eq!(t.len(), 3);
    /// assert_eq!(t.call("c", 1), Ok(2));
    /// ```
    pub fn create_function(
        &mut self,
        names: &[&str],
        f: impl FnMut(i32) -> i32 + Send + 'static,
    ) -> Result<(), KindsError> {
        let names: Vec<CString> = names
            .iter()
            .map(|n| CString::new(*n).map_err(|_| KindsError::BadName))
            .collect::<Result<_, _>>()?;
        if names.iter().any(|n| n.as_bytes().len() > 31) {
            return Err(KindsError::BadName);
        }
        let ptr = crate::save::<Function>(Box::new(f));
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                // One reference per registration; the first is the save's.
                crate::retain(ptr).expect("our own live handle");
            }
            // SAFETY: a live table; a NUL-terminated name that lives for
            // the call; the trampoline accepts any `user_data`, and
            // `c_unref` any value.
            let code = unsafe {
                raw::kinds_create_function(
                    self.raw.as_ptr(),
                    name.as_ptr(),
                    call_trampoline,
                    ptr,
                    Some(crate::c_unref),
                )
            };
            if code != raw::KINDS_OK {
                // C did not keep this reference: drop it.
                let _ = crate::unref(ptr);
                return Err(if code == raw::KINDS_ERR_FULL {
                    KindsError::Full
                } else {
                    KindsError::BadName
                });
            }
        }
        Ok(())
    }

    /// Calls the function registered as `name`.
    ///
    /// ```
    /// use handle_registry::demo::kinds::Table;
    ///
    /// let mut t = Table::new();
    /// t.create_function(&["neg"], |x| -x).unwrap();
    /// assert_eq!(t.call("neg", 3), Ok(-3));
    /// ```
    pub fn call(&mut self, name: &str, arg: i32) -> Result<i32, KindsError> {
        let name = CString::new(name).map_err(|_| KindsError::BadName)?;
        let mut out: c_int = 0;
        FAILED.with(|f| f.set(None));
        // SAFETY: a live table, a valid name, `out` lives for the call.
        let code = unsafe { raw::kinds_call(self.raw.as_ptr(), name.as_ptr(), arg, &mut out) };
        match code {
            raw::KINDS_OK => match FAILED.with(|f| f.take()) {
                None => Ok(out),
                Some(e) => Err(KindsError::Callback(e)),
            },
            raw::KINDS_ERR_NO_FUNCTION => Err(KindsError::NoFunction),
            _ => Err(KindsError::BadName),
        }
    }

    /// Removes `name`: C calls its destroy-notify, which drops one
    /// reference (the closure goes with the last).
    ///
    /// ```
    /// use handle_registry::demo::kinds::{KindsError, Table};
    ///
    /// let mut t = Table::new();
    /// t.create_function(&["f"], |x| x).unwrap();
    /// t.drop_function("f").unwrap();
    /// assert_eq!(t.drop_function("f"), Err(KindsError::NoFunction));
    /// ```
    pub fn drop_function(&mut self, name: &str) -> Result<(), KindsError> {
        let name = CString::new(name).map_err(|_| KindsError::BadName)?;
        // SAFETY: a live table and a valid name.
        match unsafe { raw::kinds_drop_function(self.raw.as_ptr(), name.as_ptr()) } {
            raw::KINDS_OK => Ok(()),
            raw::KINDS_ERR_NO_FUNCTION => Err(KindsError::NoFunction),
            _ => Err(KindsError::BadName),
        }
    }

    /// How many names are registered.
    ///
    /// ```
    /// let mut t = handle_registry::demo::kinds::Table::new();
    /// t.create_function(&["x", "y"], |x| x).unwrap();
    /// assert_eq!(t.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        // SAFETY: a live table.
        unsafe { raw::kinds_count(self.raw.as_ptr()) as usize }
    }

    /// Whether no name is registered.
    ///
    /// ```
    /// assert!(handle_registry::demo::kinds::Table::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw table and the C entry points, for tests that drive C
    /// directly (registering a handle by hand, calling `kinds_call`).
    ///
    /// # Safety
    ///
    /// `user_data` is passed to C as is; `destroy` is called with it once
    /// per registration.
    ///
    /// ```
    /// use handle_registry::demo::kinds::Table;
    ///
    /// let mut t = Table::new();
    /// let p = handle_registry::save::<Box<dyn FnMut(i32) -> i32 + Send>>(Box::new(|x| x));
    /// // SAFETY: `c_unref` accepts any value.
    /// unsafe { t.register_raw("id", p, Some(handle_registry::c_unref)) }.unwrap();
    /// assert_eq!(t.call("id", 9), Ok(9));
    /// ```
    pub unsafe fn register_raw(
        &mut self,
        name: &str,
        user_data: *mut c_void,
        destroy: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> Result<(), KindsError> {
        let name = CString::new(name).map_err(|_| KindsError::BadName)?;
        let name: *const c_char = name.as_ptr();
        // SAFETY: a live table and a valid name; the rest per the caller.
        match unsafe {
            raw::kinds_create_function(self.raw.as_ptr(), name, call_trampoline, user_data, destroy)
        } {
            raw::KINDS_OK => Ok(()),
            raw::KINDS_ERR_FULL => Err(KindsError::Full),
            _ => Err(KindsError::BadName),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: a live table, closed once. Every destroy-notify is
        // `c_unref`, which never unwinds.
        unsafe { raw::kinds_close(self.raw.as_ptr()) }
    }
}
