//! Handles for the lifetimes C really has, beyond one owner and one
//! destroy-notify.
//!
//! A plain handle ([`save`](crate::save) … [`unref`](crate::unref)) has
//! exactly one reference, held by whoever calls `unref` or `take`. Real C
//! APIs need more shapes; each is served here on its own path, so that the
//! plain [`restore`](crate::Registry::restore) costs what it did:
//!
//! * **Counted** ([`Registry::retain`](crate::Registry::retain)): one
//!   `user_data` kept in several places, each with its own destroy-notify
//!   (`sqlite3_create_function_v2` for several functions, one closure for
//!   several GLib signals). Each `unref` drops one reference; the value is
//!   dropped at the last. The count lives in a side table touched only by
//!   retained handles; the slot word carries a `COUNTED` flag so that a
//!   plain handle never looks at the table (see `src/slot.rs`,
//!   transitions 8 and 9). `take` while other references are out is
//!   [`Error::Retained`](crate::Error::Retained), not a surprise.
//! * **Weak** ([`Registry::save_weak`](crate::Registry::save_weak)): Rust
//!   owns an `Arc<T>`; C's handle must not keep it alive. See [`weak`].
//! * **Thread-affine** ([`Registry::save_local`](crate::Registry::save_local)):
//!   values that are not `Send`, reached only on their thread
//!   (`WrongThread` elsewhere), dropped only there. See [`local`].
//! * **Groups** ([`Registry::group`](crate::Registry::group)): every
//!   handle of one connection or plugin freed in one call, with a capacity
//!   limit whose error names what fills it. See [`group`].
//!
//! Counted handles are implemented in the registry itself (the removal
//! paths must see the flag); weak, local handles and groups are layered on the
//! registry, like [`scope`](crate::Registry::scope)'s records.

pub mod counted;
pub mod group;
pub mod local;
pub mod weak;
