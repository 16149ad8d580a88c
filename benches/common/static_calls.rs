//! The static trampoline and the `user_data` trampoline that
//! `benches/static_trampoline.rs` times and
//! `examples/callback_instructions.rs` counts (kinds `static_call` and
//! `user_data_call`), shared so that both measure the very same code.

use std::ffi::c_void;

use handle_registry::panic::PanicCarrier;
use handle_registry::static_callbacks;

static_callbacks! {
    /// One slot, held for the whole run.
    pub static ADD: [extern "C" fn(x: u64) -> u64; 1];
}

/// A closure for [`ADD`]: adds to its own sum and returns it.
pub fn adder() -> Box<dyn FnMut(u64) -> u64 + Send> {
    let mut sum = 0u64;
    Box::new(move |x| {
        sum += x;
        sum
    })
}

/// The state a `user_data` trampoline reaches through the registry, with
/// the same panic catching as a static trampoline does.
pub struct UserData {
    pub sum: u64,
    pub carrier: PanicCarrier,
}

/// Adds to the state's sum and returns it.
pub extern "C" fn with_user_data(user_data: *mut c_void, x: u64) -> u64 {
    let Ok(mut state) = handle_registry::restore::<UserData>(user_data) else {
        return 0;
    };
    let UserData { sum, carrier } = &mut *state;
    carrier
        .catch(|| {
            *sum += x;
            *sum
        })
        .unwrap_or(0)
}
