//! A real C library end to end: the demo library's `traverse_file` scans a
//! file of 200 000 small blocks and makes two short callbacks per block
//! (`start` at `{`, `end` at `}`), the shape of an expat parse with start-
//! and end-element handlers. Every figure includes C's own work (reading
//! and scanning the file), as a user's would.
//!
//! `cargo bench --bench end_to_end`. One group: the raw-pointer baseline
//! beside each way of reaching the state, so each ratio comes from one run.

use std::ffi::{c_int, c_void, CString};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use handle_registry::demo::ffi;
use handle_registry::Registry;

#[path = "common/variants.rs"]
mod variants;
use variants::{bench_variants, Handlers};

const BLOCKS: usize = 200_000;

/// What the handlers keep: the shape of a small parse state.
#[derive(Default)]
struct Counts {
    depth: i32,
    max_depth: i32,
    blocks: u64,
    bytes: i64,
}

impl Counts {
    fn start(&mut self, depth: c_int) {
        self.depth = depth;
        self.max_depth = self.max_depth.max(depth);
    }
    fn end(&mut self, open: c_int, close: c_int) {
        self.blocks += 1;
        self.bytes += i64::from(close - open);
    }
}

unsafe extern "C" fn direct_start(user_data: *mut c_void, depth: c_int) {
    // SAFETY: the baseline passes a pointer to a live, unaliased `Counts`.
    unsafe { &mut *user_data.cast::<Counts>() }.start(depth)
}
unsafe extern "C" fn direct_end(user_data: *mut c_void, open: c_int, close: c_int) {
    // SAFETY: as above.
    unsafe { &mut *user_data.cast::<Counts>() }.end(open, close)
}
unsafe extern "C" fn restore_start(user_data: *mut c_void, depth: c_int) {
    if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
        c.start(depth)
    }
}
unsafe extern "C" fn restore_end(user_data: *mut c_void, open: c_int, close: c_int) {
    if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
        c.end(open, close)
    }
}
unsafe extern "C" fn with_start(user_data: *mut c_void, depth: c_int) {
    let _ = handle_registry::with(user_data, |c: &mut Counts| c.start(depth));
}
unsafe extern "C" fn with_end(user_data: *mut c_void, open: c_int, close: c_int) {
    let _ = handle_registry::with(user_data, |c: &mut Counts| c.end(open, close));
}

fn cbs(
    start: unsafe extern "C" fn(*mut c_void, c_int),
    end: unsafe extern "C" fn(*mut c_void, c_int, c_int),
) -> ffi::Callbacks {
    ffi::Callbacks {
        start: Some(start),
        end: Some(end),
    }
}

fn end_to_end(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("handle-registry-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("blocks.txt");
    std::fs::write(&path, "{x}\n".repeat(BLOCKS)).unwrap();
    let name = CString::new(path.to_str().unwrap()).unwrap();
    let parse = |cbs: ffi::Callbacks, user_data: *mut c_void| {
        // SAFETY: a valid C string; every callback accepts this user_data.
        let code = unsafe { ffi::traverse_file(name.as_ptr(), cbs, user_data) };
        assert_eq!(code, ffi::TRAVERSE_OK);
    };
    let registry = Registry::global();

    let mut g = c.benchmark_group("end-to-end");
    g.throughput(Throughput::Elements(BLOCKS as u64));
    let handlers = Handlers {
        direct: cbs(direct_start, direct_end),
        restore: cbs(restore_start, restore_end),
        with: cbs(with_start, with_end),
    };
    bench_variants(&mut g, registry, handlers, parse, |c: &Counts| c.blocks);
    g.finish();
    // Each variant must have seen every block.
    let mut counts = Counts::default();
    registry
        .scope(&mut counts, |p| parse(cbs(with_start, with_end), p))
        .unwrap();
    assert_eq!((counts.blocks, counts.max_depth), (BLOCKS as u64, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
