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
    let f40 = memory::measure(100_000, |i| [i as u8; 40]);
    // The figures describe the registry only with the system's allocator:
    // under valgrind (which preloads its own, whose heap and shadow memory
    // count as the process's data and are resident too: CI measured 231 B
    // resident, 188 B reserved) they say nothing about it. The measurement
    // still runs there, for valgrind's checks.
    let preload = std::env::var("LD_PRELOAD").unwrap_or_default();
    if preload.contains("vgpreload") {
        eprintln!("under valgrind ({preload}): the figures are not checked");
        return;
    }
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
    // handle costs its slot and nothing else where pages are mapped from
    // the OS in 4 KiB OS pages (x86_64 Linux: 64.00 B, plus a fixed OS page
    // or so), and one OS page of the allocator's header per 1 MiB page
    // (0.25 B) where they come from the allocator (or a few larger OS pages
    // in all, on an aarch64 kernel with 16 or 64 KiB pages). `None` where
    // the OS does not tell.
    let bound = if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        64.05
    } else {
        64.5
    };
    if let Some(resident) = f.resident {
        assert!(resident <= bound, "{resident} B resident per handle");
        assert!(
            resident >= 32.0,
            "{resident} B resident per handle: measured nothing?"
        );
    }
    // 40 bytes still fit in the slot.
    assert!(
        f40.marginal <= 64.5,
        "{} B per further 40-byte value",
        f40.marginal
    );
}
