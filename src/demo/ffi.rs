//! Raw bindings to the C library in `native/traverse.h`.
//!
//! The library stands for any C library that reports events through
//! callbacks plus `user_data`; `build.rs` compiles it into this crate. Its
//! header documents every function: which thread calls back, and which
//! error code means what. The safe wrapper is [`traverse`](crate::demo::traverse).
//!
//! Everything here is `unsafe` to call because C cannot check its
//! arguments: strings must be NUL-terminated and live for the call, and the
//! callbacks must accept the `user_data` they are given. The trampolines of
//! [`traverse`](crate::demo::traverse) accept *any* `user_data`, which is what
//! makes the safe wrapper safe.
//!
//! ```
//! use handle_registry::demo::ffi;
//!
//! // NULL callbacks are skipped, so nothing is called and anything goes
//! // as user_data.
//! let cbs = ffi::Callbacks::default();
//! // SAFETY: a valid C string; the callbacks are NULL.
//! let code = unsafe { ffi::traverse_file(c"/no/such/file".as_ptr(), cbs, std::ptr::null_mut()) };
//! assert_eq!(code, ffi::TRAVERSE_ERR_OPEN);
//! ```

use std::ffi::{c_char, c_int, c_void};

/// `typedef void (*StartCallbackFn)(void* user_data, int i);`, nullable.
///
/// ```
/// unsafe extern "C" fn on_start(user_data: *mut std::ffi::c_void, depth: std::ffi::c_int) {
///     let _ = (user_data, depth);
/// }
/// let start: handle_registry::demo::ffi::StartCallbackFn = Some(on_start);
/// assert!(start.is_some());
/// ```
pub type StartCallbackFn = Option<unsafe extern "C" fn(user_data: *mut c_void, i: c_int)>;

/// `typedef void (*EndCallbackFn)(void* user_data, int a, int b);`, nullable.
///
/// ```
/// let end: handle_registry::demo::ffi::EndCallbackFn = None; // C skips the event
/// assert!(end.is_none());
/// ```
pub type EndCallbackFn = Option<unsafe extern "C" fn(user_data: *mut c_void, a: c_int, b: c_int)>;

/// `typedef struct { StartCallbackFn start; EndCallbackFn end; } Callbacks;`
///
/// `Default` gives two NULL pointers: C then skips both events.
///
/// ```
/// use std::ffi::{c_int, c_void};
/// use handle_registry::demo::ffi;
///
/// unsafe extern "C" fn count(user_data: *mut c_void, _i: c_int) {
///     // SAFETY: this example passes a pointer to a live u32 below.
///     unsafe { *user_data.cast::<u32>() += 1 };
/// }
/// let mut starts = 0u32;
/// let cbs = ffi::Callbacks { start: Some(count), end: None };
/// // SAFETY: `count` receives `&mut starts`, which outlives the call.
/// unsafe { ffi::traverse(std::ptr::null_mut(), cbs, (&raw mut starts).cast()) };
/// assert_eq!(starts, 1);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Callbacks {
    /// Called when a block opens, with its depth (the seed: 100).
    pub start: StartCallbackFn,
    /// Called when a block closes, with the offsets of its `{` and `}`
    /// (the seed: 2 and 3).
    pub end: EndCallbackFn,
}

/// Success.
///
/// ```
/// assert_eq!(handle_registry::demo::ffi::TRAVERSE_OK, 0);
/// ```
pub const TRAVERSE_OK: c_int = 0;
/// An argument is invalid: a NULL filename or array, a negative count.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: NULL is what this checks; no callback can be reached.
/// let code = unsafe { ffi::traverse_file(std::ptr::null(), ffi::Callbacks::default(), std::ptr::null_mut()) };
/// assert_eq!(code, ffi::TRAVERSE_ERR_ARG);
/// ```
pub const TRAVERSE_ERR_ARG: c_int = -1;
/// The file does not exist or cannot be opened.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: a valid C string and NULL callbacks.
/// let code = unsafe { ffi::traverse_file(c"/no/such/file".as_ptr(), ffi::Callbacks::default(), std::ptr::null_mut()) };
/// assert_eq!(code, ffi::TRAVERSE_ERR_OPEN);
/// ```
pub const TRAVERSE_ERR_OPEN: c_int = -2;
/// Reading failed, for example because the path names a directory.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: a valid C string and NULL callbacks.
/// let code = unsafe { ffi::traverse_file(c"/".as_ptr(), ffi::Callbacks::default(), std::ptr::null_mut()) };
/// assert_eq!(code, ffi::TRAVERSE_ERR_READ);
/// ```
pub const TRAVERSE_ERR_READ: c_int = -3;
/// The file is larger than `INT_MAX` bytes: offsets would not fit an `int`.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: `traverse_strerror` returns a static C string.
/// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_TOO_LARGE)) };
/// assert_eq!(text, c"file larger than INT_MAX bytes");
/// ```
pub const TRAVERSE_ERR_TOO_LARGE: c_int = -4;
/// The file contains a NUL byte: binary data, not text.
///
/// ```
/// use handle_registry::demo::ffi;
/// let path = std::env::temp_dir().join(format!("ffi-not-text-{}", std::process::id()));
/// std::fs::write(&path, b"{\0}").unwrap();
/// let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
/// // SAFETY: a valid C string and NULL callbacks.
/// let code = unsafe { ffi::traverse_file(name.as_ptr(), ffi::Callbacks::default(), std::ptr::null_mut()) };
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(code, ffi::TRAVERSE_ERR_NOT_TEXT);
/// ```
pub const TRAVERSE_ERR_NOT_TEXT: c_int = -5;
/// Malformed: a `}` closes no open block.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: `traverse_strerror` returns a static C string.
/// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_UNMATCHED_CLOSE)) };
/// assert_eq!(text, c"'}' without a matching '{'");
/// ```
pub const TRAVERSE_ERR_UNMATCHED_CLOSE: c_int = -6;
/// Malformed: the file ends inside an open block.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: `traverse_strerror` returns a static C string.
/// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_UNCLOSED)) };
/// assert_eq!(text, c"file ends inside an open block");
/// ```
pub const TRAVERSE_ERR_UNCLOSED: c_int = -7;
/// Blocks are nested deeper than [`TRAVERSE_MAX_DEPTH`].
///
/// ```
/// use handle_registry::demo::ffi;
/// let path = std::env::temp_dir().join(format!("ffi-too-deep-{}", std::process::id()));
/// std::fs::write(&path, "{".repeat(ffi::TRAVERSE_MAX_DEPTH as usize + 1)).unwrap();
/// let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
/// // SAFETY: a valid C string and NULL callbacks.
/// let code = unsafe { ffi::traverse_file(name.as_ptr(), ffi::Callbacks::default(), std::ptr::null_mut()) };
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(code, ffi::TRAVERSE_ERR_TOO_DEEP);
/// ```
pub const TRAVERSE_ERR_TOO_DEEP: c_int = -8;
/// Out of memory.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: `traverse_strerror` returns a static C string.
/// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_NOMEM)) };
/// assert_eq!(text, c"out of memory");
/// ```
pub const TRAVERSE_ERR_NOMEM: c_int = -9;
/// A thread could not be created or joined, or a mutex locked.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: `traverse_strerror` returns a static C string.
/// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_THREAD)) };
/// assert_eq!(text, c"thread or mutex operation failed");
/// ```
pub const TRAVERSE_ERR_THREAD: c_int = -10;
/// [`traverse_files_parallel`] got more than [`TRAVERSE_MAX_FILES`] files.
///
/// ```
/// use handle_registry::demo::ffi;
/// let names = vec![c"x".as_ptr(); ffi::TRAVERSE_MAX_FILES as usize + 1];
/// // SAFETY: `names` holds `count` valid C strings; the count is refused
/// // before any is read.
/// let code = unsafe {
///     ffi::traverse_files_parallel(names.as_ptr(), names.len() as i32, ffi::Callbacks::default(), std::ptr::null_mut(), std::ptr::null_mut())
/// };
/// assert_eq!(code, ffi::TRAVERSE_ERR_TOO_MANY_FILES);
/// ```
pub const TRAVERSE_ERR_TOO_MANY_FILES: c_int = -11;
/// [`traverse_subscribe`]: every subscription slot, or every id, is taken.
///
/// ```
/// use handle_registry::demo::ffi;
/// let cbs = ffi::Callbacks::default();
/// // SAFETY: NULL callbacks; every id is unsubscribed below.
/// let ids: Vec<i32> = (0..=ffi::TRAVERSE_MAX_SUBSCRIPTIONS)
///     .map(|_| unsafe { ffi::traverse_subscribe(cbs, std::ptr::null_mut()) })
///     .collect();
/// assert_eq!(ids.last(), Some(&ffi::TRAVERSE_ERR_FULL));
/// for id in ids.into_iter().filter(|&id| id > 0) {
///     // SAFETY: plain integer argument.
///     assert_eq!(unsafe { ffi::traverse_unsubscribe(id) }, ffi::TRAVERSE_OK);
/// }
/// ```
pub const TRAVERSE_ERR_FULL: c_int = -12;
/// [`traverse_unsubscribe`]: no live subscription has this id.
///
/// ```
/// use handle_registry::demo::ffi;
/// // SAFETY: plain integer argument.
/// assert_eq!(unsafe { ffi::traverse_unsubscribe(12345) }, ffi::TRAVERSE_ERR_NO_SUBSCRIPTION);
/// ```
pub const TRAVERSE_ERR_NO_SUBSCRIPTION: c_int = -13;

/// Deepest nesting reported; one level deeper is [`TRAVERSE_ERR_TOO_DEEP`].
///
/// ```
/// assert_eq!(handle_registry::demo::ffi::TRAVERSE_MAX_DEPTH, 1024);
/// ```
pub const TRAVERSE_MAX_DEPTH: c_int = 1024;
/// Most files one [`traverse_files_parallel`] call accepts (one thread each).
///
/// ```
/// assert_eq!(handle_registry::demo::ffi::TRAVERSE_MAX_FILES, 64);
/// ```
pub const TRAVERSE_MAX_FILES: c_int = 64;
/// Most subscriptions live at once.
///
/// ```
/// assert_eq!(handle_registry::demo::ffi::TRAVERSE_MAX_SUBSCRIPTIONS, 16);
/// ```
pub const TRAVERSE_MAX_SUBSCRIPTIONS: c_int = 16;

extern "C" {
    /// The seed: `start(user_data, 100)` then `end(user_data, 2, 3)` on the
    /// calling thread, each skipped when NULL. `filename` is not used.
    ///
    /// # Safety
    ///
    /// Each non-NULL callback must accept `user_data`.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: NULL callbacks: nothing is called.
    /// unsafe { ffi::traverse(std::ptr::null_mut(), ffi::Callbacks::default(), std::ptr::null_mut()) };
    /// ```
    pub fn traverse(filename: *mut c_char, cbs: Callbacks, user_data: *mut c_void);

    /// Reads `filename` and reports each `{ … }` block on the calling
    /// thread: `start(depth)` at `{`, `end(open_offset, close_offset)` at
    /// `}`. Returns [`TRAVERSE_OK`] or a `TRAVERSE_ERR_*` code.
    ///
    /// # Safety
    ///
    /// `filename` is NULL or a NUL-terminated string; each non-NULL callback
    /// must accept `user_data`.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// let path = std::env::temp_dir().join(format!("ffi-file-{}", std::process::id()));
    /// std::fs::write(&path, "{ { } }").unwrap();
    /// let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    /// // SAFETY: a valid C string and NULL callbacks.
    /// let code = unsafe { ffi::traverse_file(name.as_ptr(), ffi::Callbacks::default(), std::ptr::null_mut()) };
    /// std::fs::remove_file(&path).unwrap();
    /// assert_eq!(code, ffi::TRAVERSE_OK);
    /// ```
    pub fn traverse_file(filename: *const c_char, cbs: Callbacks, user_data: *mut c_void) -> c_int;

    /// Traverses `count` files, each on its own new pthread, calling the
    /// callbacks from those threads concurrently with the same `user_data`;
    /// joins them all before returning. `results`, if not NULL, receives
    /// each file's code.
    ///
    /// # Safety
    ///
    /// `filenames` points to `count` strings as for [`traverse_file`];
    /// `results` is NULL or points to `count` writable ints; the callbacks
    /// must accept `user_data` from any thread, concurrently.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// let names = [c"/no/such/a".as_ptr(), c"/no/such/b".as_ptr()];
    /// let mut results = [0; 2];
    /// // SAFETY: two valid C strings, room for two results, NULL callbacks.
    /// let code = unsafe {
    ///     ffi::traverse_files_parallel(names.as_ptr(), 2, ffi::Callbacks::default(), std::ptr::null_mut(), results.as_mut_ptr())
    /// };
    /// assert_eq!(code, ffi::TRAVERSE_OK);
    /// assert_eq!(results, [ffi::TRAVERSE_ERR_OPEN; 2]);
    /// ```
    pub fn traverse_files_parallel(
        filenames: *const *const c_char,
        count: c_int,
        cbs: Callbacks,
        user_data: *mut c_void,
        results: *mut c_int,
    ) -> c_int;

    /// Keeps `cbs` and `user_data` for later [`traverse_publish`] calls.
    /// Returns the id (> 0) or a `TRAVERSE_ERR_*` code.
    ///
    /// # Safety
    ///
    /// The callbacks must accept `user_data`, from any thread, for as long
    /// as C may call them: until every publication that started before
    /// [`traverse_unsubscribe`] returned has finished.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: NULL callbacks.
    /// let id = unsafe { ffi::traverse_subscribe(ffi::Callbacks::default(), std::ptr::null_mut()) };
    /// assert!(id > 0);
    /// // SAFETY: plain integer argument.
    /// assert_eq!(unsafe { ffi::traverse_unsubscribe(id) }, ffi::TRAVERSE_OK);
    /// ```
    pub fn traverse_subscribe(cbs: Callbacks, user_data: *mut c_void) -> c_int;

    /// Forgets a subscription. A publication already running on another
    /// thread may still call it afterwards (see the header).
    ///
    /// # Safety
    ///
    /// Always safe; `unsafe` as every foreign function is.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: plain integer argument.
    /// assert_eq!(unsafe { ffi::traverse_unsubscribe(-1) }, ffi::TRAVERSE_ERR_NO_SUBSCRIPTION);
    /// ```
    pub fn traverse_unsubscribe(id: c_int) -> c_int;

    /// Traverses `filename` on the calling thread, reporting each event to
    /// every subscription live when the call started.
    ///
    /// # Safety
    ///
    /// As [`traverse_file`] for `filename`; every subscription's callbacks
    /// must accept their `user_data` (see [`traverse_subscribe`]).
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: a valid C string.
    /// assert_eq!(unsafe { ffi::traverse_publish(c"/no/such/file".as_ptr()) }, ffi::TRAVERSE_ERR_OPEN);
    /// ```
    pub fn traverse_publish(filename: *const c_char) -> c_int;

    /// [`traverse_publish`] on a new pthread, joined before returning.
    ///
    /// # Safety
    ///
    /// As [`traverse_publish`], with callbacks called from a C thread.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: a valid C string.
    /// assert_eq!(unsafe { ffi::traverse_publish_on_thread(c"/no/such/file".as_ptr()) }, ffi::TRAVERSE_ERR_OPEN);
    /// ```
    pub fn traverse_publish_on_thread(filename: *const c_char) -> c_int;

    /// Calls `start(user_data, i)` for `i` in `0..n` in a tight loop.
    ///
    /// # Safety
    ///
    /// `start`, when not NULL, must accept `user_data`.
    ///
    /// ```
    /// use std::ffi::{c_int, c_void};
    /// use handle_registry::demo::ffi;
    ///
    /// unsafe extern "C" fn add(user_data: *mut c_void, i: c_int) {
    ///     // SAFETY: the example passes a pointer to a live i64.
    ///     unsafe { *user_data.cast::<i64>() += i64::from(i) };
    /// }
    /// let mut sum = 0i64;
    /// let cbs = ffi::Callbacks { start: Some(add), end: None };
    /// // SAFETY: `add` receives `&mut sum`, which outlives the call.
    /// unsafe { ffi::traverse_bench_start(cbs, (&raw mut sum).cast(), 4) };
    /// assert_eq!(sum, 0 + 1 + 2 + 3);
    /// ```
    pub fn traverse_bench_start(cbs: Callbacks, user_data: *mut c_void, n: i64);

    /// A static description of an error code; never NULL.
    ///
    /// # Safety
    ///
    /// Always safe; the result is a static NUL-terminated string.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: the result is a static C string.
    /// let text = unsafe { std::ffi::CStr::from_ptr(ffi::traverse_strerror(ffi::TRAVERSE_ERR_OPEN)) };
    /// assert_eq!(text, c"cannot open file");
    /// ```
    pub fn traverse_strerror(code: c_int) -> *const c_char;

    /// `sizeof(Callbacks)` as the C compiler sees it.
    ///
    /// # Safety
    ///
    /// Always safe.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: no arguments, no state.
    /// let size = unsafe { ffi::traverse_abi_sizeof_callbacks() };
    /// assert_eq!(size, std::mem::size_of::<ffi::Callbacks>());
    /// ```
    pub fn traverse_abi_sizeof_callbacks() -> usize;

    /// The alignment of `Callbacks` as the C compiler sees it.
    ///
    /// # Safety
    ///
    /// Always safe.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: no arguments, no state.
    /// let align = unsafe { ffi::traverse_abi_alignof_callbacks() };
    /// assert_eq!(align, std::mem::align_of::<ffi::Callbacks>());
    /// ```
    pub fn traverse_abi_alignof_callbacks() -> usize;

    /// `offsetof(Callbacks, end)` as the C compiler sees it.
    ///
    /// # Safety
    ///
    /// Always safe.
    ///
    /// ```
    /// use handle_registry::demo::ffi;
    /// // SAFETY: no arguments, no state.
    /// let offset = unsafe { ffi::traverse_abi_offsetof_end() };
    /// assert_eq!(offset, std::mem::offset_of!(ffi::Callbacks, end));
    /// ```
    pub fn traverse_abi_offsetof_end() -> usize;
}

/// A path as a C string: its exact bytes on Unix, its UTF-8 elsewhere.
/// `None` when it contains a NUL byte (or, off Unix, is not UTF-8).
pub(crate) fn c_path(path: &std::path::Path) -> Option<std::ffi::CString> {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_str()?.as_bytes().to_vec();
    std::ffi::CString::new(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    #[cfg_attr(miri, ignore)]
    fn callbacks_layout_matches_the_c_compiler() {
        // SAFETY: the probes take no arguments and touch no state.
        let (size, align, end) = unsafe {
            (
                traverse_abi_sizeof_callbacks(),
                traverse_abi_alignof_callbacks(),
                traverse_abi_offsetof_end(),
            )
        };
        assert_eq!(size, size_of::<Callbacks>());
        assert_eq!(align, align_of::<Callbacks>());
        assert_eq!(offset_of!(Callbacks, start), 0);
        assert_eq!(end, offset_of!(Callbacks, end));
    }

    #[test]
    fn nullable_fn_pointers_are_pointer_sized() {
        assert_eq!(size_of::<StartCallbackFn>(), size_of::<*const ()>());
        assert_eq!(size_of::<EndCallbackFn>(), size_of::<*const ()>());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn every_code_is_known_to_the_c_library() {
        let codes = [
            TRAVERSE_ERR_ARG,
            TRAVERSE_ERR_OPEN,
            TRAVERSE_ERR_READ,
            TRAVERSE_ERR_TOO_LARGE,
            TRAVERSE_ERR_NOT_TEXT,
            TRAVERSE_ERR_UNMATCHED_CLOSE,
            TRAVERSE_ERR_UNCLOSED,
            TRAVERSE_ERR_TOO_DEEP,
            TRAVERSE_ERR_NOMEM,
            TRAVERSE_ERR_THREAD,
            TRAVERSE_ERR_TOO_MANY_FILES,
            TRAVERSE_ERR_FULL,
            TRAVERSE_ERR_NO_SUBSCRIPTION,
        ];
        let describe = |code| {
            // SAFETY: `traverse_strerror` returns a static C string.
            unsafe { CStr::from_ptr(traverse_strerror(code)) }
        };
        let unknown = describe(i32::MIN);
        assert_eq!(unknown, c"unknown error code");
        for code in codes {
            assert_ne!(describe(code), unknown, "code {code}");
        }
        // The codes are exactly the contiguous range the header defines.
        assert!(codes.iter().zip(1..).all(|(&code, n)| code == -n));
        assert_eq!(describe(codes[codes.len() - 1] - 1), unknown);
    }
}
