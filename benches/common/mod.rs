//! The callbacks that the per-callback measurements compare, shared by
//! `benches/callbacks.rs` (times) and `examples/callback_instructions.rs`
//! (instruction counts), so both measure the very same code.

use std::ffi::{c_int, c_void};

use handle_registry::demo::traverse::Visitor;

/// The baseline: what a wrapper handing C a `&mut` does.
pub unsafe extern "C" fn direct_start(user_data: *mut c_void, i: c_int) {
    // SAFETY: callers pass a pointer to a live, unaliased i64.
    unsafe { *user_data.cast::<i64>() += i64::from(i) }
}

/// The registry's way: resolve, type-check and borrow on every call.
pub unsafe extern "C" fn registry_start(user_data: *mut c_void, i: c_int) {
    if let Ok(mut sum) = handle_registry::restore::<i64>(user_data) {
        *sum += i64::from(i);
    }
}

/// `restore_with`: the same borrow as `registry_start`, with the body run
/// inside the call.
pub unsafe extern "C" fn registry_with_start(user_data: *mut c_void, i: c_int) {
    let _ = handle_registry::restore_with(user_data, |sum: &mut i64| *sum += i64::from(i));
}

/// The scope's way: the state lent for the call, reached with `with`.
pub unsafe extern "C" fn scoped_start(user_data: *mut c_void, i: c_int) {
    let _ = handle_registry::with(user_data, |sum: &mut i64| *sum += i64::from(i));
}

/// The `traverse::Visitor` shape, summing what `start` reports.
pub struct Sum(pub i64);

impl Visitor for Sum {
    fn start(&mut self, i: i32) {
        self.0 += i64::from(i);
    }
}
