//! What the registry's indirection costs, against passing a raw pointer.
//!
//! Every group holds its direct-pointer baseline, so each figure in the
//! README is a ratio measured in one run. `cargo bench --bench registry`;
//! add `-- --quick` for a fast, rougher pass.

use std::ffi::c_void;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use handle_registry::Registry;

/// Group 1: the operations one at a time.
fn operations(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    let r = Registry::global();

    g.bench_function("save+unref/registry", |b| {
        b.iter(|| {
            let p = r.save(black_box(1u64));
            r.unref(black_box(p)).unwrap();
        })
    });
    g.bench_function("save+unref/direct Box::into_raw+from_raw", |b| {
        b.iter(|| {
            let p = Box::into_raw(Box::new(black_box(1u64)));
            // SAFETY: from `Box::into_raw` just above.
            drop(unsafe { Box::from_raw(black_box(p)) });
        })
    });
    g.bench_function("save+take/registry", |b| {
        b.iter(|| {
            let p = r.save(black_box(1u64));
            black_box(r.take::<u64>(black_box(p)).unwrap());
        })
    });

    let p = r.save(0u64);
    let raw = Box::into_raw(Box::new(0u64));
    g.bench_function("restore/registry exclusive", |b| {
        b.iter(|| *r.restore::<u64>(black_box(p)).unwrap() += 1)
    });
    g.bench_function("restore/registry shared", |b| {
        b.iter(|| black_box(*r.restore_ref::<u64>(black_box(p)).unwrap()))
    });
    g.bench_function("restore/registry lent", |b| {
        r.lend::<u64, _>(p, || {
            b.iter(|| *r.restore::<u64>(black_box(p)).unwrap() += 1)
        })
        .unwrap()
    });
    g.bench_function("restore/direct deref", |b| {
        // SAFETY: `raw` is a live, unaliased box for the whole benchmark.
        b.iter(|| unsafe { *black_box(raw) += 1 })
    });
    g.finish();
    r.unref(p).unwrap();
    // SAFETY: from `Box::into_raw` above, no longer used.
    drop(unsafe { Box::from_raw(raw) });
}

/// Group 3: `restore` must not slow down as the registry fills.
fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("live-handles");
    for live in [1usize, 1_000, 1_000_000] {
        let r = Registry::new();
        let handles: Vec<*mut c_void> = (0..live).map(|i| r.save(i as u64)).collect();
        let p = handles[live / 2];
        g.bench_with_input(BenchmarkId::new("restore", live), &p, |b, &p| {
            b.iter(|| *r.restore::<u64>(black_box(p)).unwrap() += 1)
        });
        // The baseline: a pointer chase through an equally large heap.
        let boxes: Vec<*mut u64> = (0..live)
            .map(|i| Box::into_raw(Box::new(i as u64)))
            .collect();
        let raw = boxes[live / 2];
        g.bench_with_input(BenchmarkId::new("direct deref", live), &raw, |b, &raw| {
            // SAFETY: live, unaliased box until freed below.
            b.iter(|| unsafe { *black_box(raw) += 1 })
        });
        for raw in boxes {
            // SAFETY: each from `Box::into_raw` above, freed once.
            drop(unsafe { Box::from_raw(raw) });
        }
        drop(r);
    }
    g.finish();
}

/// Runs `work(thread, iters)` on `threads` threads at once; returns the
/// wall time of the slowest, the figure aggregate throughput is judged by.
fn on_threads(threads: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (start, work) = (&start, &work);
            s.spawn(move || {
                start.wait();
                work(t, iters);
            });
        }
        start.wait();
        let began = Instant::now();
        // Scope end joins every thread.
        began
    })
    .elapsed()
}

/// Group 4: aggregate throughput across threads (elements = restores).
fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    let r = Registry::global();
    let handles: Vec<usize> = (0..4).map(|_| r.save(0u64) as usize).collect();
    let shared = r.save(7u64) as usize;
    let boxes: Vec<usize> = (0..4)
        .map(|_| Box::into_raw(Box::new(0u64)) as usize)
        .collect();
    for n in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("restore distinct/registry", n), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    let p = std::ptr::without_provenance_mut(handles[t]);
                    for _ in 0..iters {
                        *r.restore::<u64>(black_box(p)).unwrap() += 1;
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("restore_ref same/registry", n), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |_, iters| {
                    let p = std::ptr::without_provenance_mut(shared);
                    for _ in 0..iters {
                        black_box(*r.restore_ref::<u64>(black_box(p)).unwrap());
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("deref distinct/direct", n), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    let raw = boxes[t] as *mut u64;
                    for _ in 0..iters {
                        // SAFETY: each thread has its own live box.
                        unsafe { *black_box(raw) += 1 }
                    }
                })
            })
        });
    }
    g.finish();
    for p in handles.into_iter().chain([shared]) {
        r.unref(std::ptr::without_provenance_mut(p)).unwrap();
    }
    for raw in boxes {
        // SAFETY: each from `Box::into_raw` above, freed once.
        drop(unsafe { Box::from_raw(raw as *mut u64) });
    }
}

criterion_group!(benches, operations, scaling, threads);
criterion_main!(benches);
