//! The crate's demo and test bed: a small C library and its safe wrappers.
//! Only with the `demo` cargo feature, which needs a C compiler (and
//! pthreads).
//!
//! Nothing in the registry depends on this module. It plays the part of a
//! real C library that reports events through callbacks, so that the
//! registry's promises can be shown and tested across a real C boundary,
//! with C threads, late calls and callbacks without `user_data`:
//!
//! * [`ffi`]: raw bindings to `native/traverse.h`, compiled by `build.rs`
//!   with `cc` when the feature is on.
//! * [`traverse`]: the safe wrapper, the pattern for wrapping a C API with
//!   `user_data` (a visitor, optional closures, C threads, late calls).
//! * [`kinds`]: a function table in the shape of
//!   `sqlite3_create_function_v2` (one `user_data` under several names,
//!   a destroy-notify each), wrapped with counted handles.
//! * [`static_native`]: the same C traversal without `user_data`, wrapped
//!   with [static trampolines](crate::static_trampoline).
//!
//! `cargo test` and `cargo run --example demo` in this repository turn the
//! feature on by themselves (through a dev-dependency of the crate on
//! itself); a crate that depends on `handle-registry` gets the pure-Rust
//! core only, unless it asks for `features = ["demo"]`.
//!
//! ```
//! use handle_registry::demo::traverse::{traverse_file, Visitor};
//!
//! #[derive(Default)]
//! struct Blocks(usize);
//!
//! impl Visitor for Blocks {
//!     fn end(&mut self, _open: i32, _close: i32) {
//!         self.0 += 1;
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("demo-doc-{}", std::process::id()));
//! std::fs::write(&path, "a { b { } }").unwrap();
//! let blocks = traverse_file(&path, Blocks::default());
//! std::fs::remove_file(&path).unwrap();
//! assert_eq!(blocks.unwrap().0, 2);
//! ```

pub mod ffi;
pub mod kinds;
pub mod static_native;
pub mod traverse;
