//! Bytes each live handle costs, the value included: the memory reserved
//! for it (*reserved*: address space of the process's heap and anonymous
//! mappings, `VmData` of `/proc/self/status` on Linux; elsewhere the bytes
//! a counting global allocator handed out) and what became resident in RAM
//! (*resident*, the growth of the process's anonymous resident memory,
//! `RssAnon`; Linux only).
//!
//! The two differ by the part of the last page that no handle uses yet: it
//! comes zeroed and is never written, so it costs address space only.
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
    // Forwarded, not left to the default (`alloc`, then writing zeros):
    // `System` asks the OS for fresh zero pages instead, which stay
    // untouched, and untouched memory is what the resident figure measures.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        NET_BYTES.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc_zeroed(layout) }
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
    /// Bytes per handle reserved, the value included: slots, spare page
    /// capacity, and anything the value's type boxes.
    pub total: f64,
    /// Bytes per handle that became resident (`None` where the process's
    /// resident memory cannot be read: not Linux, or Miri).
    pub resident: Option<f64>,
    /// What each further handle costs once pages exist (reserved): the
    /// slope between `n` and `2n` live handles.
    pub marginal: f64,
}

/// A size line of `/proc/self/status` in bytes, where the OS tells.
fn status_bytes(field: &str) -> Option<usize> {
    if !cfg!(target_os = "linux") || cfg!(miri) {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<usize>()
        .ok()?;
    Some(kb * 1024)
}

/// The process's anonymous resident memory in bytes (heap and mappings,
/// not the binary's own file pages), where the OS tells.
pub fn resident_bytes() -> Option<usize> {
    status_bytes("RssAnon")
}

/// The bytes reserved for the process's data: on Linux its heap and
/// private mappings (`VmData`), which is where the registry's pages come
/// from there; elsewhere what the counting allocator handed out.
fn reserved_bytes() -> isize {
    status_bytes("VmData").map_or_else(|| NET_BYTES.load(Relaxed), |b| b as isize)
}

/// Saves `n`, then `2n` values of `T` in a fresh registry and divides the
/// bytes they took by their number.
///
/// The resident figure is only meaningful in a process that has not freed
/// much memory yet: an allocator may hand freed, still resident memory out
/// again, which raises nothing. `main` runs each measurement in a process
/// of its own for that reason.
pub fn measure<T: Send + 'static>(n: usize, make: impl Fn(usize) -> T) -> Footprint {
    let registry = Registry::new();
    let mut handles = Vec::with_capacity(2 * n);
    // Written once now, so that the vector's own memory is resident before
    // the first reading and not counted as the registry's. Not with zeros:
    // the compiler turns an allocation followed by zeroing into a zeroed
    // allocation, which touches nothing.
    handles.resize(2 * n, std::ptr::dangling_mut());
    std::hint::black_box(&mut handles);
    handles.clear();
    let resident_before = resident_bytes();
    let before = reserved_bytes();
    for i in 0..n {
        handles.push(registry.save(make(i)));
    }
    let at_n = reserved_bytes();
    let resident_at_n = resident_bytes();
    for i in n..2 * n {
        handles.push(registry.save(make(i)));
    }
    let at_2n = reserved_bytes();
    for p in handles {
        registry.unref(p).unwrap();
    }
    Footprint {
        total: (at_n - before) as f64 / n as f64,
        resident: resident_before
            .zip(resident_at_n)
            .map(|(before, after)| (after as f64 - before as f64) / n as f64),
        marginal: (at_2n - at_n) as f64 / n as f64,
    }
}

/// Handles per measurement.
#[allow(dead_code)]
const N: usize = 1_000_000;

/// One measurement, in a process of its own.
type Run = fn() -> Footprint;

/// The value types measured, by name.
#[allow(dead_code)]
const KINDS: [(&str, Run); 4] = [
    ("u64", || measure(N, |i| i as u64)),
    ("[u8; 40]", || measure(N, |i| [i as u8; 40])),
    ("String", || measure(N, |_| String::new())),
    ("[u8; 64] (boxed)", || measure(N, |i| [i as u8; 64])),
];

#[allow(dead_code)]
fn line(name: &str, f: &Footprint) -> String {
    let resident = f
        .resident
        .map_or_else(|| "   n/a".to_string(), |r| format!("{r:6.2} B"));
    format!(
        "  {name:<18} {:6.2} B reserved, {resident} resident, {:6.2} B marginal",
        f.total, f.marginal
    )
}

#[allow(dead_code)] // `tests/memory.rs` includes this file for `measure`.
fn main() {
    // `memory NAME`: one measurement, one line (how the parent runs each).
    if let Some(name) = std::env::args().nth(1) {
        let (name, run) = KINDS
            .iter()
            .find(|(kind, _)| *kind == name)
            .expect("a type name of KINDS");
        println!("{}", line(name, &run()));
        return;
    }
    println!(
        "bytes per live handle, the value included ({N} handles; marginal: {N} more, reserved):"
    );
    for (name, run) in KINDS {
        // A fresh process per type: see `measure`.
        let child = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg(name)
                .stderr(std::process::Stdio::inherit())
                .output()
        });
        match child {
            Ok(out) if out.status.success() => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
            _ => println!("{} (in this process)", line(name, &run())),
        }
    }
}
