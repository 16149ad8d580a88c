//! Per-callback cost through C: the native tight loop calls `start(user_data, i)`
//! N times, with `user_data` a raw pointer (the baseline) or a registry handle.
//!
//! `cargo bench --bench callbacks`. Throughput is in callbacks per second,
//! so criterion's per-element time is the cost of one callback.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use handle_registry::demo::traverse::repeat_start;
use handle_registry::{demo::ffi, Registry};

#[path = "common/mod.rs"]
mod common;
use common::{direct_start, registry_start, registry_with_start, scoped_start, Sum};

fn per_callback(c: &mut Criterion) {
    let mut g = c.benchmark_group("per-callback");
    let registry = Registry::global();
    for n in [1i64, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("direct pointer", n), |b| {
            let mut sum = 0i64;
            let cbs = ffi::Callbacks {
                start: Some(direct_start),
                end: None,
            };
            // SAFETY: `sum` outlives each call and nothing else touches it.
            b.iter(|| unsafe {
                ffi::traverse_bench_start(cbs, (&raw mut sum).cast(), black_box(n))
            });
            black_box(sum);
        });
        let trampolines: [(&str, unsafe extern "C" fn(_, _)); 2] = [
            ("registry restore", registry_start),
            ("registry restore_with", registry_with_start),
        ];
        for (name, start) in trampolines {
            let cbs = ffi::Callbacks {
                start: Some(start),
                end: None,
            };
            g.bench_function(BenchmarkId::new(name, n), |b| {
                let p = registry.save(0i64);
                // SAFETY: the trampoline accepts any `user_data`.
                b.iter(|| unsafe { ffi::traverse_bench_start(cbs, p, black_box(n)) });
                registry.unref(p).unwrap();
            });
            g.bench_function(BenchmarkId::new(format!("{name}, lent"), n), |b| {
                let p = registry.save(0i64);
                b.iter(|| {
                    registry
                        // SAFETY: the trampoline accepts any `user_data`.
                        .lend::<i64, _>(p, || unsafe {
                            ffi::traverse_bench_start(cbs, p, black_box(n))
                        })
                        .unwrap()
                });
                registry.unref(p).unwrap();
            });
        }
        g.bench_function(BenchmarkId::new("registry scope + with", n), |b| {
            let cbs = ffi::Callbacks {
                start: Some(scoped_start),
                end: None,
            };
            b.iter(|| {
                let mut sum = 0i64;
                registry
                    // SAFETY: the trampoline accepts any `user_data`.
                    .scope(&mut sum, |p| unsafe {
                        ffi::traverse_bench_start(cbs, p, black_box(n))
                    })
                    .unwrap();
                black_box(sum)
            });
        });
        g.bench_function(
            BenchmarkId::new("traverse::Visitor (save+take per call)", n),
            |b| b.iter(|| repeat_start(Sum(0), black_box(n)).unwrap().0),
        );
    }
    g.finish();
}

criterion_group!(benches, per_callback);
criterion_main!(benches);
