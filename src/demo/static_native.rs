//! A safe wrapper over `native/traverse_static.h`, the crate's own C API
//! without `user_data`: the pattern for wrapping one.
//!
//! Each call binds its two closures to a slot of
//! [`NATIVE_START`] and [`NATIVE_END`] for the duration of the C
//! call, so traversals on different threads run at once, each with its own
//! state, and at most [`DEFAULT_POOL_SIZE`](crate::static_trampoline::DEFAULT_POOL_SIZE) of
//! them at a time.

use std::ffi::{c_int, CString};
use std::fmt;
use std::path::Path;

use crate::static_trampoline::PoolExhausted;

crate::static_callbacks! {
    /// `StaticStartFn` of `native/traverse_static.h`: `void (*)(int depth)`.
    ///
    /// ```
    /// use handle_registry::demo::static_native::NATIVE_START;
    ///
    /// let mut max_depth = 0;
    /// NATIVE_START
    ///     .scope(Box::new(|depth| max_depth = max_depth.max(depth)), |start| {
    ///         start(0);
    ///         start(2);
    ///     })
    ///     .unwrap();
    /// assert_eq!(max_depth, 2);
    /// ```
    pub static NATIVE_START: [extern "C" fn(depth: c_int); _];

    /// `StaticEndFn` of `native/traverse_static.h`:
    /// `void (*)(int open_offset, int close_offset)`.
    ///
    /// ```
    /// use handle_registry::demo::static_native::NATIVE_END;
    ///
    /// let mut blocks = Vec::new();
    /// NATIVE_END
    ///     .scope(Box::new(|open, close| blocks.push((open, close))), |end| end(3, 9))
    ///     .unwrap();
    /// assert_eq!(blocks, [(3, 9)]);
    /// ```
    pub static NATIVE_END: [extern "C" fn(open_offset: c_int, close_offset: c_int); _];
}

/// Raw bindings; layouts checked against the C compiler's in the tests.
mod ffi {
    use std::ffi::{c_char, c_int};

    pub type StaticStartFn = extern "C" fn(depth: c_int);
    pub type StaticEndFn = extern "C" fn(open_offset: c_int, close_offset: c_int);

    /// `StaticCallbacks`: NULL members are skipped by the C side.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct StaticCallbacks {
        pub start: Option<StaticStartFn>,
        pub end: Option<StaticEndFn>,
    }

    pub const OK: c_int = 0;
    pub const ERR_ARG: c_int = -1;
    pub const ERR_IO: c_int = -2;
    pub const ERR_UNBALANCED: c_int = -3;
    pub const ERR_TOO_DEEP: c_int = -4;
    pub const ERR_TOO_LARGE: c_int = -5;
    pub const ERR_NOMEM: c_int = -6;
    pub const MAX_DEPTH: c_int = 1024;

    extern "C" {
        pub fn traverse_file_static(filename: *const c_char, cbs: StaticCallbacks) -> c_int;
        #[cfg_attr(not(test), allow(dead_code))]
        pub fn traverse_static_callbacks_size() -> usize;
        #[cfg_attr(not(test), allow(dead_code))]
        pub fn traverse_static_callbacks_end_offset() -> usize;
    }
}

/// How deeply blocks may nest before [`TraverseError::TooDeep`].
///
/// ```
/// assert_eq!(handle_registry::demo::static_native::MAX_DEPTH, 1024);
/// ```
pub const MAX_DEPTH: usize = ffi::MAX_DEPTH as usize;

/// Why [`traverse_file`] failed.
///
/// ```
/// use handle_registry::demo::static_native::{traverse_file, TraverseError};
///
/// let err = traverse_file("/no/such/file", |_| {}, |_, _| {}).unwrap_err();
/// assert_eq!(err, TraverseError::Io);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraverseError {
    /// The path contains a NUL byte (or, off Unix, is not UTF-8).
    InvalidPath,
    /// The file cannot be opened or read.
    Io,
    /// A `}` closes no block, or blocks are still open at the end.
    Unbalanced,
    /// More than [`MAX_DEPTH`] blocks are open at once.
    TooDeep,
    /// The file is longer than `i32::MAX` bytes.
    TooLarge,
    /// The C side could not allocate.
    OutOfMemory,
    /// No trampoline slot was free.
    Exhausted(PoolExhausted),
}

impl fmt::Display for TraverseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraverseError::InvalidPath => f.write_str("path cannot be passed to C"),
            TraverseError::Io => f.write_str("file cannot be opened or read"),
            TraverseError::Unbalanced => f.write_str("braces are unbalanced"),
            TraverseError::TooDeep => write!(f, "blocks nest deeper than {MAX_DEPTH}"),
            TraverseError::TooLarge => f.write_str("file is larger than i32::MAX bytes"),
            TraverseError::OutOfMemory => f.write_str("out of memory"),
            TraverseError::Exhausted(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TraverseError {}

impl From<PoolExhausted> for TraverseError {
    fn from(e: PoolExhausted) -> Self {
        TraverseError::Exhausted(e)
    }
}

/// Reads `path` and reports every `{ … }` block: `on_start(depth)` at its
/// `{` (depth 0 at the top level), `on_end(open, close)` at its `}`, with
/// both byte offsets. Braces are plain bytes: nothing else is parsed.
///
/// The closures may borrow local state. Events stop at the first error, so
/// an unbalanced file may report its first blocks before failing. A panic
/// in a closure skips the remaining events and is resumed here.
///
/// ```
/// use handle_registry::demo::static_native::traverse_file;
///
/// let path = std::env::temp_dir().join(format!("hr-doc-static-{}.txt", std::process::id()));
/// std::fs::write(&path, "a { b { c } } { }").unwrap();
/// let (mut depths, mut blocks) = (Vec::new(), Vec::new());
/// traverse_file(&path, |d| depths.push(d), |o, c| blocks.push((o, c))).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(depths, [0, 1, 0]);
/// assert_eq!(blocks, [(6, 10), (2, 12), (14, 16)]);
/// ```
pub fn traverse_file(
    path: impl AsRef<Path>,
    on_start: impl FnMut(i32) + Send,
    on_end: impl FnMut(i32, i32) + Send,
) -> Result<(), TraverseError> {
    let path = c_path(path.as_ref())?;
    let rc = NATIVE_START.scope(Box::new(on_start), |start| {
        NATIVE_END.scope(Box::new(on_end), |end| {
            let cbs = ffi::StaticCallbacks {
                start: Some(start),
                end: Some(end),
            };
            // SAFETY: `path` is NUL-terminated and outlives the call; the
            // callbacks are plain functions that accept any arguments.
            unsafe { ffi::traverse_file_static(path.as_ptr(), cbs) }
        })
    })??;
    match rc {
        ffi::OK => Ok(()),
        ffi::ERR_IO => Err(TraverseError::Io),
        ffi::ERR_UNBALANCED => Err(TraverseError::Unbalanced),
        ffi::ERR_TOO_DEEP => Err(TraverseError::TooDeep),
        ffi::ERR_TOO_LARGE => Err(TraverseError::TooLarge),
        ffi::ERR_NOMEM => Err(TraverseError::OutOfMemory),
        ffi::ERR_ARG => unreachable!("a CString is never NULL"),
        other => unreachable!("traverse_file_static returned {other}"),
    }
}

/// The path as C wants it (see [`crate::demo::ffi::c_path`]).
fn c_path(path: &Path) -> Result<CString, TraverseError> {
    crate::demo::ffi::c_path(path).ok_or(TraverseError::InvalidPath)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "hr-static-native-unit-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn layout_matches_the_c_compiler() {
        // SAFETY: both functions take nothing and return a constant.
        let (size, end) = unsafe {
            (
                ffi::traverse_static_callbacks_size(),
                ffi::traverse_static_callbacks_end_offset(),
            )
        };
        assert_eq!(size, size_of::<ffi::StaticCallbacks>());
        assert_eq!(end, std::mem::offset_of!(ffi::StaticCallbacks, end));
        assert_eq!(
            size_of::<Option<ffi::StaticStartFn>>(),
            size_of::<*const ()>()
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn null_filename_and_null_callbacks_are_refused_or_skipped() {
        let none = ffi::StaticCallbacks {
            start: None,
            end: None,
        };
        // SAFETY: NULL is documented as refused.
        assert_eq!(
            unsafe { ffi::traverse_file_static(ptr::null(), none) },
            ffi::ERR_ARG
        );
        let path = temp_file("null-cbs", b"{{}}{");
        let c = c_path(&path).unwrap();
        // SAFETY: a valid path; NULL callbacks are skipped.
        let rc = unsafe { ffi::traverse_file_static(c.as_ptr(), none) };
        std::fs::remove_file(&path).unwrap();
        assert_eq!(rc, ffi::ERR_UNBALANCED);
    }

    #[test]
    fn nul_in_path_is_invalid() {
        assert_eq!(
            traverse_file("a\0b", |_| {}, |_, _| {}),
            Err(TraverseError::InvalidPath)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn errors_map_to_variants() {
        let cases: [(&str, &[u8], Result<(), TraverseError>); 4] = [
            ("ok", b"{}", Ok(())),
            ("close", b"}", Err(TraverseError::Unbalanced)),
            ("open", b"{", Err(TraverseError::Unbalanced)),
            ("deep", &[b'{'; MAX_DEPTH + 1], Err(TraverseError::TooDeep)),
        ];
        for (name, contents, expected) in cases {
            let path = temp_file(name, contents);
            let got = traverse_file(&path, |_| {}, |_, _| {});
            std::fs::remove_file(&path).unwrap();
            assert_eq!(got, expected, "{name}");
        }
    }
}
