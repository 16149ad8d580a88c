//! The registry's memory cost per live handle stays within a loose bound.
//!
//! The measurement lives in `examples/memory.rs` (which prints it); this
//! binary holds only this test, so no other test's allocations interfere.
#![cfg(not(miri))] // a million handles is too slow under Miri (and no /proc)

#[path = "../examples/memory.rs"]
mod memory;

#[test]
fn bytes_per_live_handle_stay_small() {
    // First in this process, so that the resident figure is meaningful
    // (see `measure`); at 10^6 handles, the size the target names.
    let f = memory::measure(1_000_000, |i| i as u64);
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
    // The unused tail of the last page is never touched: resident, a
    // handle costs its slot, plus one OS page of the allocator's per
    // 1 MiB page (0.25 B). `None` where the OS does not tell. Only with
    // the system's allocator: under valgrind (which preloads its own, and
    // whose shadow memory is resident too: CI measured 231 B) or another
    // preloaded allocator the figure says nothing about the registry.
    let preloaded = std::env::var_os("LD_PRELOAD").is_some_and(|v| !v.is_empty());
    if let Some(resident) = f.resident.filter(|_| !preloaded) {
        assert!(resident <= 64.5, "{resident} B resident per handle");
        assert!(
            resident >= 32.0,
            "{resident} B resident per handle: measured nothing?"
        );
    }
    // 40 bytes still fit in the slot.
    let f = memory::measure(100_000, |i| [i as u8; 40]);
    assert!(
        f.marginal <= 64.5,
        "{} B per further 40-byte value",
        f.marginal
    );
}
