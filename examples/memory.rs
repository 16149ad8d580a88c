//! Bytes each live handle costs beyond the value itself, measured with a
//! counting global allocator.
//!
//! `cargo run --release --example memory`. `tests/memory.rs` runs the same
//! measurement and holds it to a loose bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use handle_registry::Registry;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static NET_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter is a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        NET_BYTES.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NET_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        NET_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: forwarded with the caller's valid arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one measurement found, per live handle.
pub struct Footprint {
    /// Bytes per handle, the value's own `size_of` not included.
    pub overhead: f64,
    /// Of which the registry's tables (slab entry, generation), amortised
    /// over their spare capacity.
    pub tables: f64,
}

/// Saves `n` values of `T` in a fresh registry and divides the bytes it
/// took by `n`.
pub fn measure<T: Send + 'static>(n: usize, make: impl Fn(usize) -> T) -> Footprint {
    let registry = Registry::new();
    let mut handles = Vec::with_capacity(n);
    let before = NET_BYTES.load(Relaxed);
    for i in 0..n {
        handles.push(registry.save(make(i)));
    }
    let total = (NET_BYTES.load(Relaxed) - before) as f64 / n as f64;
    // One more value, removed again: what its cell alone takes.
    let cell = {
        let one = registry.save(make(0));
        let with_cell = NET_BYTES.load(Relaxed);
        registry.unref(one).unwrap();
        (with_cell - NET_BYTES.load(Relaxed)) as f64
    };
    for p in handles {
        registry.unref(p).unwrap();
    }
    Footprint {
        overhead: total - std::mem::size_of::<T>() as f64,
        tables: total - cell,
    }
}

#[allow(dead_code)] // `tests/memory.rs` includes this file for `measure`.
fn main() {
    const N: usize = 1_000_000;
    println!("bytes per live handle, beyond the value's own size ({N} handles):");
    for (name, f) in [
        ("u64", measure(N, |i| i as u64)),
        ("[u8; 64]", measure(N, |i| [i as u8; 64])),
        ("String", measure(N, |_| String::new())),
    ] {
        println!(
            "  {name:<24} {:5.1} B  = cell header {:4.1} B + slab entry and generation {:4.1} B",
            f.overhead,
            f.overhead - f.tables,
            f.tables
        );
    }
}
