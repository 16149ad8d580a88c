//! The registry's memory cost per live handle stays within a loose bound.
//!
//! The measurement lives in `examples/memory.rs` (which prints it); this
//! binary holds only this test, so no other test's allocations interfere.
#![cfg(not(miri))] // a million handles is too slow under Miri

#[path = "../examples/memory.rs"]
mod memory;

#[test]
fn bytes_per_live_handle_stay_small() {
    let f = memory::measure(100_000, |i| i as u64);
    // 24 B cell header + 16 B slab entry + 4 B generation, plus spare
    // capacity of the tables. Loose: this guards against regressions such
    // as an extra allocation per handle, not against a few bytes.
    assert!(f.overhead <= 64.0, "{} B per handle", f.overhead);
    assert!(
        f.overhead >= 24.0,
        "{} B per handle: measured nothing?",
        f.overhead
    );
}
