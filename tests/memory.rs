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
    // A 64-byte slot per handle (the value inline), plus at most one
    // partly used page. Loose: this guards against regressions such as an
    // extra allocation per handle, not against a few bytes.
    assert!(f.marginal <= 64.5, "{} B per further handle", f.marginal);
    assert!(f.total <= 80.0, "{} B per handle", f.total);
    assert!(
        f.total >= 32.0,
        "{} B per handle: measured nothing?",
        f.total
    );
    // 40 bytes still fit in the slot.
    let f = memory::measure(100_000, |i| [i as u8; 40]);
    assert!(
        f.marginal <= 64.5,
        "{} B per further 40-byte value",
        f.marginal
    );
}
