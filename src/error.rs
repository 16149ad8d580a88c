//! Why a handle was refused.
//!
//! Every way a `void*` from C can be wrong has its own variant, so that a
//! callback can log precisely what happened (in the spirit of Mozilla's
//! `ffi-support` `HandleError`). None of them is ever undefined behaviour:
//! the registry decodes the integer, checks it, and answers.

use std::fmt;

/// The reason an operation on a handle failed.
///
/// The enum is `#[non_exhaustive]`: match the variants you care about and
/// keep a catch-all arm.
///
/// ```
/// use handle_registry::{restore, save, unref, Error};
///
/// let p = save(5_u8);
/// assert!(matches!(restore::<String>(p), Err(Error::WrongType { .. })));
/// unref(p).unwrap();
/// assert_eq!(unref(p), Err(Error::Stale));
/// assert_eq!(unref(std::ptr::null_mut()), Err(Error::Null));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The pointer was NULL. The registry never issues NULL, so this is
    /// always a caller bug (often an unset `user_data`).
    Null,
    /// The value could never have been issued by this registry: its index
    /// is zero or past every slot ever used, its registry bits are zero or
    /// name no live registry, or its generation is newer than the slot's.
    /// Typically a forged pointer, a real pointer passed where a handle was
    /// expected, or memory garbage.
    Invalid,
    /// The handle names a slot whose value has since been removed by
    /// [`take`](crate::take) or [`unref`](crate::unref): a use after free
    /// that the generation counter caught. A removed handle never resolves
    /// again, not even to a later value stored in the same slot.
    Stale,
    /// The handle's registry bits name a different, live
    /// [`Registry`](crate::Registry) than the one asked.
    WrongRegistry,
    /// The handle is live but holds a value of another type.
    WrongType {
        /// The type the caller asked for (for a scope's `with` and `call`,
        /// the scope's record type around it, `…::Scoped<S>`; for
        /// `with_ref`, `…::SharedScoped<S>`).
        expected: &'static str,
        /// The type that was saved.
        found: &'static str,
    },
    /// The value is already borrowed by *this* thread in a way that
    /// conflicts with the request (for example a second exclusive
    /// [`restore`](crate::restore) while a [`Guard`](crate::Guard) is alive).
    /// Waiting would deadlock, so the registry refuses at once. Another
    /// thread's borrow makes the caller wait instead.
    ///
    /// Also returned, rather than risking a deadlock or an overflow, by a
    /// `restore_ref` made from a thread-local destructor once this thread's
    /// own bookkeeping is gone, and by one that would push the reader count
    /// past what the state word counts (only reachable by forgetting shared
    /// guards).
    /// And by every exclusive borrow (`restore`, `take`, a `scope`'s start)
    /// on a thread that got no owner id: more threads alive at once than
    /// the state word can name, 4094 on 32-bit targets (some 16.7 million on
    /// 64-bit ones). Ending scopes and releasing static trampolines still
    /// work there.
    Busy,
    /// The registry has no free index left (see the handle layout in
    /// [`handle`](crate::handle)): every index the layout can express is
    /// live or retired. Also returned by a [`Group`](crate::Group) with a
    /// limit when that many of its handles are live
    /// ([`Group::full_report`](crate::Group::full_report) names the types
    /// holding them), and by [`retain`](crate::Registry::retain) when the
    /// value's reference count is already `usize::MAX`.
    Full,
    /// Every registry id is in use by a live [`Registry`](crate::Registry).
    TooManyRegistries,
    /// The value may only be reached from the thread that lent it: a
    /// callback came from another thread during a
    /// [`Registry::scope`](crate::Registry::scope) whose state is not
    /// `Send` (use [`scope_send`](crate::Registry::scope_send) or
    /// [`scope_sync`](crate::Registry::scope_sync) when C calls back from
    /// its own threads), or a [`restore_local`](crate::Registry::restore_local)
    /// from a thread other than the one that saved the value.
    WrongThread,
    /// The value was [`retain`](crate::Registry::retain)ed and more than
    /// one reference to it is still out, so [`take`](crate::take) (or
    /// [`Handle::into_inner`](crate::Handle::into_inner)) cannot move it
    /// out without pulling it from under the other holders. Nothing was
    /// changed; drop the extra references with [`unref`](crate::unref)
    /// first, or use `unref` to drop just this one.
    Retained,
    /// The callback panicked. The panic was caught before it could unwind
    /// into C and is resumed when the scope that lent the state returns.
    Panicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Null => f.write_str("handle is NULL"),
            Error::Invalid => f.write_str("handle was never issued by this registry"),
            Error::Stale => f.write_str("handle is stale: its value was already removed"),
            Error::WrongRegistry => f.write_str("handle belongs to another registry"),
            Error::WrongType { expected, found } => {
                write!(f, "handle holds a `{found}`, not a `{expected}`")
            }
            Error::Busy => f.write_str("value is already borrowed on this thread"),
            Error::Full => f.write_str("no room: the registry or the group is full"),
            Error::TooManyRegistries => f.write_str("too many live registries"),
            Error::WrongThread => {
                f.write_str("value bound to another thread (a scope or `save_local`)")
            }
            Error::Retained => {
                f.write_str("value is retained: other references to it are still out")
            }
            Error::Panicked => f.write_str("callback panicked; resumed when the scope returns"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<Error>();
    }

    #[test]
    fn retained_is_its_own_kind() {
        assert_ne!(Error::Retained, Error::Busy);
        assert_eq!(
            Error::Retained.to_string(),
            "value is retained: other references to it are still out"
        );
    }

    #[test]
    fn display_names_both_types() {
        let e = Error::WrongType {
            expected: "u8",
            found: "alloc::string::String",
        };
        assert_eq!(
            e.to_string(),
            "handle holds a `alloc::string::String`, not a `u8`"
        );
    }
}
