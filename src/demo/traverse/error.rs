//! Why a traversal failed: the C library's codes, plus what Rust adds.

use std::any::Any;
use std::ffi::c_int;
use std::fmt;

use crate::demo::ffi;

/// Why a traversal failed.
///
/// Most variants map one `TRAVERSE_ERR_*` code of the C library
/// ([`code`](TraverseError::code) gives it back); the others are Rust's:
/// a path C cannot take, a panic that happened on a C thread, a state that
/// someone removed from the registry behind the traversal's back.
///
/// ```
/// use handle_registry::demo::traverse::{traverse_file, TraverseError, Visitor};
///
/// struct Nothing;
/// impl Visitor for Nothing {}
///
/// let err = traverse_file("/no/such/file", Nothing).err().unwrap();
/// assert_eq!(err, TraverseError::Open);
/// assert_eq!(err.to_string(), "cannot open the file");
/// assert_eq!(err.code(), Some(handle_registry::demo::ffi::TRAVERSE_ERR_OPEN));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraverseError {
    /// The path contains a NUL byte (or, off Unix, is not UTF-8).
    InvalidPath,
    /// C refused an argument (`TRAVERSE_ERR_ARG`).
    InvalidArgument,
    /// The file does not exist or cannot be opened (`TRAVERSE_ERR_OPEN`).
    Open,
    /// Reading failed, e.g. the path is a directory (`TRAVERSE_ERR_READ`).
    Read,
    /// The file is larger than `INT_MAX` bytes (`TRAVERSE_ERR_TOO_LARGE`).
    TooLarge,
    /// The file contains a NUL byte (`TRAVERSE_ERR_NOT_TEXT`).
    NotText,
    /// A `}` closes no block (`TRAVERSE_ERR_UNMATCHED_CLOSE`).
    UnmatchedClose,
    /// The file ends inside a block (`TRAVERSE_ERR_UNCLOSED`).
    Unclosed,
    /// Blocks nest deeper than [`ffi::TRAVERSE_MAX_DEPTH`]
    /// (`TRAVERSE_ERR_TOO_DEEP`).
    TooDeep,
    /// C ran out of memory (`TRAVERSE_ERR_NOMEM`).
    OutOfMemory,
    /// C could not start or join a thread (`TRAVERSE_ERR_THREAD`).
    Thread,
    /// More than [`ffi::TRAVERSE_MAX_FILES`] files at once
    /// (`TRAVERSE_ERR_TOO_MANY_FILES`).
    TooManyFiles,
    /// Every subscription slot is taken (`TRAVERSE_ERR_FULL`).
    TooManySubscriptions,
    /// No such subscription (`TRAVERSE_ERR_NO_SUBSCRIPTION`).
    NoSubscription,
    /// A code this crate does not know.
    Unknown(i32),
    /// A visitor or closure panicked on a C thread, where the panic cannot
    /// be resumed: it was caught and the rest of the callbacks skipped.
    Panicked {
        /// The panic's message, or `Box<dyn Any>` when it was not a string.
        message: String,
    },
    /// The traversal's state was removed from the registry while C was
    /// running, by code that unreffed a handle it did not own (`Stale`), or
    /// retained behind the traversal's back (`Retained`: the state stays
    /// live with that reference). The visitor, and a panic it raised in
    /// that traversal, go with the state.
    StateLost(crate::Error),
}

impl TraverseError {
    /// `Ok(())` for [`ffi::TRAVERSE_OK`], the matching error otherwise.
    ///
    /// ```
    /// use handle_registry::demo::{ffi, traverse::TraverseError};
    ///
    /// assert_eq!(TraverseError::check(ffi::TRAVERSE_OK), Ok(()));
    /// assert_eq!(TraverseError::check(ffi::TRAVERSE_ERR_UNCLOSED), Err(TraverseError::Unclosed));
    /// assert_eq!(TraverseError::check(7), Err(TraverseError::Unknown(7)));
    /// ```
    pub fn check(code: c_int) -> Result<(), TraverseError> {
        Err(match code {
            ffi::TRAVERSE_OK => return Ok(()),
            ffi::TRAVERSE_ERR_ARG => TraverseError::InvalidArgument,
            ffi::TRAVERSE_ERR_OPEN => TraverseError::Open,
            ffi::TRAVERSE_ERR_READ => TraverseError::Read,
            ffi::TRAVERSE_ERR_TOO_LARGE => TraverseError::TooLarge,
            ffi::TRAVERSE_ERR_NOT_TEXT => TraverseError::NotText,
            ffi::TRAVERSE_ERR_UNMATCHED_CLOSE => TraverseError::UnmatchedClose,
            ffi::TRAVERSE_ERR_UNCLOSED => TraverseError::Unclosed,
            ffi::TRAVERSE_ERR_TOO_DEEP => TraverseError::TooDeep,
            ffi::TRAVERSE_ERR_NOMEM => TraverseError::OutOfMemory,
            ffi::TRAVERSE_ERR_THREAD => TraverseError::Thread,
            ffi::TRAVERSE_ERR_TOO_MANY_FILES => TraverseError::TooManyFiles,
            ffi::TRAVERSE_ERR_FULL => TraverseError::TooManySubscriptions,
            ffi::TRAVERSE_ERR_NO_SUBSCRIPTION => TraverseError::NoSubscription,
            other => TraverseError::Unknown(other),
        })
    }

    /// The C library's code for this error, `None` for Rust-side errors.
    ///
    /// ```
    /// use handle_registry::demo::{ffi, traverse::TraverseError};
    ///
    /// assert_eq!(TraverseError::TooDeep.code(), Some(ffi::TRAVERSE_ERR_TOO_DEEP));
    /// assert_eq!(TraverseError::InvalidPath.code(), None);
    /// ```
    pub fn code(&self) -> Option<c_int> {
        Some(match self {
            TraverseError::InvalidArgument => ffi::TRAVERSE_ERR_ARG,
            TraverseError::Open => ffi::TRAVERSE_ERR_OPEN,
            TraverseError::Read => ffi::TRAVERSE_ERR_READ,
            TraverseError::TooLarge => ffi::TRAVERSE_ERR_TOO_LARGE,
            TraverseError::NotText => ffi::TRAVERSE_ERR_NOT_TEXT,
            TraverseError::UnmatchedClose => ffi::TRAVERSE_ERR_UNMATCHED_CLOSE,
            TraverseError::Unclosed => ffi::TRAVERSE_ERR_UNCLOSED,
            TraverseError::TooDeep => ffi::TRAVERSE_ERR_TOO_DEEP,
            TraverseError::OutOfMemory => ffi::TRAVERSE_ERR_NOMEM,
            TraverseError::Thread => ffi::TRAVERSE_ERR_THREAD,
            TraverseError::TooManyFiles => ffi::TRAVERSE_ERR_TOO_MANY_FILES,
            TraverseError::TooManySubscriptions => ffi::TRAVERSE_ERR_FULL,
            TraverseError::NoSubscription => ffi::TRAVERSE_ERR_NO_SUBSCRIPTION,
            TraverseError::Unknown(code) => *code,
            TraverseError::InvalidPath
            | TraverseError::Panicked { .. }
            | TraverseError::StateLost(_) => return None,
        })
    }

    /// Whether the file itself is at fault: not text, unbalanced, or too
    /// deep.
    ///
    /// ```
    /// use handle_registry::demo::traverse::TraverseError;
    ///
    /// assert!(TraverseError::UnmatchedClose.is_malformed());
    /// assert!(!TraverseError::Open.is_malformed());
    /// ```
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            TraverseError::NotText
                | TraverseError::UnmatchedClose
                | TraverseError::Unclosed
                | TraverseError::TooDeep
        )
    }

    /// The error for a code that C returned as a failure.
    pub(crate) fn from_failure(code: c_int) -> TraverseError {
        TraverseError::check(code)
            .err()
            .unwrap_or(TraverseError::Unknown(code))
    }

    /// The error for a panic caught on a C thread; drops the payload
    /// without letting its own `Drop` unwind.
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> TraverseError {
        let message = crate::panic::message(&*payload)
            .unwrap_or("Box<dyn Any>")
            .to_owned();
        crate::panic::drop_payload(payload);
        TraverseError::Panicked { message }
    }
}

impl fmt::Display for TraverseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraverseError::InvalidPath => f.write_str("the path cannot be passed to C"),
            TraverseError::InvalidArgument => f.write_str("the C library refused an argument"),
            TraverseError::Open => f.write_str("cannot open the file"),
            TraverseError::Read => f.write_str("cannot read the file"),
            TraverseError::TooLarge => f.write_str("the file is larger than INT_MAX bytes"),
            TraverseError::NotText => f.write_str("the file contains a NUL byte"),
            TraverseError::UnmatchedClose => f.write_str("a '}' closes no block"),
            TraverseError::Unclosed => f.write_str("the file ends inside a block"),
            TraverseError::TooDeep => write!(
                f,
                "blocks nest deeper than {} levels",
                ffi::TRAVERSE_MAX_DEPTH
            ),
            TraverseError::OutOfMemory => f.write_str("the C library ran out of memory"),
            TraverseError::Thread => f.write_str("the C library could not start a thread"),
            TraverseError::TooManyFiles => {
                write!(f, "more than {} files at once", ffi::TRAVERSE_MAX_FILES)
            }
            TraverseError::TooManySubscriptions => write!(
                f,
                "more than {} subscriptions",
                ffi::TRAVERSE_MAX_SUBSCRIPTIONS
            ),
            TraverseError::NoSubscription => f.write_str("no such subscription"),
            TraverseError::Unknown(code) => write!(f, "unknown C error code {code}"),
            TraverseError::Panicked { message } => {
                write!(f, "a callback panicked on a C thread: {message}")
            }
            TraverseError::StateLost(e) => write!(f, "the traversal's state was removed: {e}"),
        }
    }
}

impl std::error::Error for TraverseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraverseError::StateLost(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in (-20..=0).chain([i32::MIN, i32::MAX, 1]) {
            match TraverseError::check(code) {
                Ok(()) => assert_eq!(code, ffi::TRAVERSE_OK),
                Err(e) => assert_eq!(e.code(), Some(code), "{e}"),
            }
        }
    }

    #[test]
    fn panic_message_survives() {
        let payload = std::panic::catch_unwind(|| panic!("lost {}", 1)).unwrap_err();
        assert_eq!(
            TraverseError::from_panic(payload),
            TraverseError::Panicked {
                message: "lost 1".into()
            }
        );
        let opaque = std::panic::catch_unwind(|| std::panic::panic_any(3u8)).unwrap_err();
        assert_eq!(
            TraverseError::from_panic(opaque).to_string(),
            "a callback panicked on a C thread: Box<dyn Any>"
        );
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<TraverseError>();
    }
}
