//! The cost of one call through a static trampoline, beside a direct
//! `extern "C"` function and a `user_data` trampoline.
//!
//! All three are called from Rust through a function pointer hidden behind
//! `black_box`, as C would call them, so the figures are the dispatch: the
//! callbacks themselves only add to a number.
//!
//! `cargo bench --bench static_trampoline -- --warm-up-time 1 --measurement-time 3`

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use handle_registry::panic::PanicCarrier;

static GLOBAL_SUM: AtomicU64 = AtomicU64::new(0);

/// What a C program does: state in a global.
extern "C" fn direct(x: u64) -> u64 {
    GLOBAL_SUM.fetch_add(x, Ordering::Relaxed) + x
}

#[path = "common/static_calls.rs"]
mod static_calls;
use static_calls::{adder, with_user_data, UserData, ADD};

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");

    let f: extern "C" fn(u64) -> u64 = black_box(direct);
    group.bench_function("direct_global", |b| b.iter(|| f(black_box(1))));

    let guard = ADD.acquire(adder()).unwrap();
    let f = black_box(guard.fn_ptr());
    group.bench_function("static_trampoline", |b| b.iter(|| f(black_box(1))));
    guard.finish();

    let state = handle_registry::Handle::new(UserData {
        sum: 0,
        carrier: PanicCarrier::new(),
    });
    let f: extern "C" fn(*mut c_void, u64) -> u64 = black_box(with_user_data);
    let user_data = state.as_ptr();
    group.bench_function("user_data_trampoline", |b| {
        b.iter(|| f(black_box(user_data), black_box(1)))
    });

    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
