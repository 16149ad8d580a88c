//! The seed's example, made safe: a C library calling Rust back through the
//! registry.
//!
//! The C library in `native/traverse.h` ([`ffi`](crate::demo::ffi)) reads a file
//! and reports each `{ … }` block through callbacks plus `user_data`:
//! `start(depth)` when a block opens, `end(open, close)` (byte offsets)
//! when it closes. This module gives it the two shapes of the seed's Go
//! code, and never hands C a pointer: `user_data` is always a registry
//! handle, resolved and type-checked by a trampoline on every call.
//!
//! * A [`Visitor`] with default no-op methods: [`traverse_file`] gives the
//!   visitor back, [`traverse_file_mut`] lets the caller keep it.
//! * [`Callbacks`], a struct of optional closures: a missing one is NULL
//!   for C, which then never enters Rust for that event.
//! * [`traverse_files_parallel`]: several files on C threads at once, all
//!   calling one [`SyncVisitor`] through the registry's shared path.
//! * [`subscribe`]: callbacks that C keeps and calls later
//!   ([`publish`], [`publish_on_c_thread`]); the [`Subscription`]
//!   unregisters on drop, and a late call after that is ignored.
//!
//! # What C may do wrong, and what happens
//!
//! A trampoline that gets a `user_data` which does not resolve (NULL, a
//! forged integer, a stale handle from a late call, another type's handle)
//! does nothing but count it in [`ignored_callbacks`]. A panic in a visitor
//! or closure is caught in the trampoline (it must never reach C), the rest
//! of that traversal's callbacks are skipped, and the panic is resumed on
//! the calling thread once C returns; when the callbacks ran on C threads
//! it comes back as [`TraverseError::Panicked`] instead.
//!
//! ```
//! use handle_registry::demo::traverse::{traverse_file, Visitor};
//!
//! #[derive(Default)]
//! struct Deepest(i32);
//!
//! impl Visitor for Deepest {
//!     fn start(&mut self, depth: i32) {
//!         self.0 = self.0.max(depth);
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("traverse-doc-{}", std::process::id()));
//! std::fs::write(&path, "a { b { c } d { } }").unwrap();
//! let deepest = traverse_file(&path, Deepest::default());
//! std::fs::remove_file(&path).unwrap();
//! assert_eq!(deepest.unwrap().0, 2);
//! ```

mod closures;
mod error;
mod late;
mod parallel;
mod route;
mod visitor;

use std::ffi::CString;
use std::path::Path;

pub use closures::{traverse_file_with, Callbacks};
pub use error::TraverseError;
pub use late::{publish, publish_on_c_thread, subscribe, Subscription};
pub use parallel::{traverse_files_parallel, ParallelTraversal, SyncVisitor};
pub use route::{ignored_callbacks, trampoline_entries};
pub use visitor::{repeat_start, traverse, traverse_file, traverse_file_mut, Visitor};

/// The path as C wants it (see [`crate::demo::ffi::c_path`]).
fn c_path(path: &Path) -> Result<CString, TraverseError> {
    crate::demo::ffi::c_path(path).ok_or(TraverseError::InvalidPath)
}
