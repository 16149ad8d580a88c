//! Ready-made pools, declared with the public
//! [`static_callbacks!`](crate::static_callbacks) like any other.
//!
//! Each has [`DEFAULT_POOL_SIZE`](super::DEFAULT_POOL_SIZE) slots. A
//! library that binds many of them at once (one per worker thread, or
//! callbacks registered for the whole program's life) should declare its
//! own pools, sized for itself, rather than compete for these.

use std::ffi::{c_char, c_int, c_void};

/// `struct FTW` of `<ftw.h>`, as glibc and musl lay it out: what `nftw`
/// passes its callback besides the path.
///
/// ```
/// use handle_registry::static_trampoline::pools::Ftw;
///
/// let ftw = Ftw { base: 4, level: 1 };
/// assert_eq!(&"dir/file"[ftw.base as usize..], "file");
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ftw {
    /// Offset of the file name within the path.
    pub base: c_int,
    /// Depth of the file below the walk's root (0 for the root).
    pub level: c_int,
}

crate::static_callbacks! {
    /// Comparators for `qsort` (and `bsearch`, `lfind`, `tsearch`, …):
    /// `int (*)(const void *, const void *)`.
    ///
    /// Calls that find no closure (see [`static_callbacks!`](crate::static_callbacks))
    /// return 0, "equal", which every sort tolerates.
    ///
    /// ```
    /// use std::ffi::{c_int, c_void};
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// unsafe extern "C" {
    ///     fn qsort(
    ///         base: *mut c_void,
    ///         n: usize,
    ///         size: usize,
    ///         compare: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int,
    ///     );
    /// }
    ///
    /// let mut words = ["pear", "fig", "banana"];
    /// QSORT_COMPARE
    ///     .scope(
    ///         Box::new(|a, b| {
    ///             // SAFETY: qsort passes pointers to elements of `words`.
    ///             let (a, b) = unsafe { (*a.cast::<&str>(), *b.cast::<&str>()) };
    ///             a.len().cmp(&b.len()) as c_int
    ///         }),
    ///         // SAFETY: the comparator reads `&str` elements, which `words` holds.
    ///         |compare| unsafe {
    ///             qsort(words.as_mut_ptr().cast(), words.len(), size_of::<&str>(), compare)
    ///         },
    ///     )
    ///     .unwrap();
    /// assert_eq!(words, ["fig", "pear", "banana"]);
    /// ```
    pub static QSORT_COMPARE: [unsafe extern "C" fn(a: *const c_void, b: *const c_void) -> c_int; _] else 0;

    /// Callbacks for POSIX `nftw`: `int (*)(const char *path, const struct
    /// stat *sb, int typeflag, struct FTW *ftw)`, with `struct stat` left
    /// opaque.
    ///
    /// Calls that find no closure return 1, which makes `nftw` stop the
    /// walk and return 1: a walk whose closure panicked does not go on.
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use std::ffi::{c_char, c_int, c_void, CStr};
    /// use handle_registry::static_trampoline::pools::{Ftw, NFTW_VISIT};
    ///
    /// type Visit = unsafe extern "C" fn(*const c_char, *const c_void, c_int, *mut Ftw) -> c_int;
    /// unsafe extern "C" {
    ///     fn nftw(dir: *const c_char, visit: Visit, fds: c_int, flags: c_int) -> c_int;
    /// }
    ///
    /// let mut root = None;
    /// let rc = NFTW_VISIT
    ///     .scope(
    ///         Box::new(|path, _stat, _typeflag, _ftw| {
    ///             // SAFETY: nftw passes a NUL-terminated path.
    ///             root = Some(unsafe { CStr::from_ptr(path) }.to_owned());
    ///             1 // stop the walk here
    ///         }),
    ///         // SAFETY: a NUL-terminated directory and a callback of nftw's type.
    ///         |visit| unsafe { nftw(c"/".as_ptr(), visit, 4, 0) },
    ///     )
    ///     .unwrap();
    /// assert_eq!(rc, 1);
    /// assert_eq!(root.unwrap().to_str(), Ok("/"));
    /// # }
    /// ```
    pub static NFTW_VISIT: [unsafe extern "C" fn(
        path: *const c_char,
        stat: *const c_void,
        typeflag: c_int,
        ftw: *mut Ftw
    ) -> c_int; _] else 1;
}
