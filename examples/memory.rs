//! Bytes each live handle costs, the value included, measured with a
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
    /// Bytes per handle, the value included: slots, spare page capacity,
    /// and anything the value's type boxes.
    pub total: f64,
    /// What each further handle costs once pages exist: the slope between
    /// `n` and `2n` live handles.
    pub marginal: f64,
}

/// Saves `n`, then `2n` values of `T` in a fresh registry and divides the
/// bytes they took by their number.
pub fn measure<T: Send + 'static>(n: usize, make: impl Fn(usize) -> T) -> Footprint {
    let registry = Registry::new();
    let mut handles = Vec::with_capacity(2 * n);
    let before = NET_BYTES.load(Relaxed);
    for i in 0..n {
        handles.push(registry.save(make(i)));
    }
    let at_n = NET_BYTES.load(Relaxed);
    for i in n..2 * n {
        handles.push(registry.save(make(i)));
    }
    let at_2n = NET_BYTES.load(Relaxed);
    for p in handles {
        registry.unref(p).unwrap();
    }
    Footprint {
        total: (at_n - before) as f64 / n as f64,
        marginal: (at_2n - at_n) as f64 / n as f64,
    }
}

#[allow(dead_code)] // `tests/memory.rs` includes this file for `measure`.
fn main() {
    const N: usize = 1_000_000;
    println!("bytes per live handle, the value included ({N} handles; marginal: {N} more):");
    for (name, f) in [
        ("u64", measure(N, |i| i as u64)),
        ("[u8; 40]", measure(N, |i| [i as u8; 40])),
        ("String", measure(N, |_| String::new())),
        ("[u8; 64] (boxed)", measure(N, |i| [i as u8; 64])),
    ] {
        println!(
            "  {name:<18} {:6.1} B total, {:6.1} B marginal",
            f.total, f.marginal
        );
    }
}
