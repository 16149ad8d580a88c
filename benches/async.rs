//! What a registry-handle completion costs, against a standard channel.
//!
//! Each group holds its standard-channel baseline, so each ratio comes from
//! one run. The producer is a long-lived std thread (a stand-in for a C
//! library's worker thread), fed jobs through a `std::sync::mpsc` channel;
//! the consumer is a task on a current-thread tokio runtime. Both sides of
//! each pair pay the same job hand-off and the same thread wake-ups.
//!
//! `cargo bench --features async --bench async`; add `-- --quick` for a
//! fast, rougher pass.

use std::ffi::c_void;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_core::Stream;
use handle_registry::completion::{complete, oneshot, push, stream, SendError};

/// Items per stream run.
const ITEMS: u64 = 10_000;
/// Buffer of both streams; a full buffer is retried after a yield.
const CAPACITY: usize = 1024;

enum Job {
    Complete(usize),
    TokioComplete(tokio::sync::oneshot::Sender<u64>),
    Stream(usize),
    TokioStream(tokio::sync::mpsc::Sender<u64>),
}

fn ptr(bits: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(bits)
}

fn worker() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    thread::spawn(move || {
        for job in rx {
            match job {
                Job::Complete(h) => complete(ptr(h), 1u64).unwrap(),
                Job::TokioComplete(s) => s.send(1).unwrap(),
                Job::Stream(h) => {
                    for mut item in 0..ITEMS {
                        loop {
                            match push(ptr(h), item) {
                                Ok(()) => break,
                                Err((SendError::Full, back)) => {
                                    item = back;
                                    thread::yield_now();
                                }
                                Err((e, _)) => panic!("{e}"),
                            }
                        }
                    }
                    // End of stream, as C's destroy-notify would.
                    handle_registry::c_unref(ptr(h));
                }
                Job::TokioStream(s) => {
                    for mut item in 0..ITEMS {
                        loop {
                            match s.try_send(item) {
                                Ok(()) => break,
                                Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                                    item = back;
                                    thread::yield_now();
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                }
            }
        }
    });
    tx
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// One value from another thread's completion to the awaiting task.
fn latency(c: &mut Criterion) {
    let rt = runtime();
    let jobs = worker();
    let mut g = c.benchmark_group("completion_latency");

    g.bench_function("cross-thread/registry oneshot", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (user_data, done) = oneshot::<u64>();
                    jobs.send(Job::Complete(user_data.addr())).unwrap();
                    black_box(done.await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("cross-thread/tokio::sync::oneshot", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
                    jobs.send(Job::TokioComplete(tx)).unwrap();
                    black_box(rx.await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    // The intrinsic cost, without a thread hop: create, complete, await.
    g.bench_function("same-thread/registry oneshot", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (user_data, done) = oneshot::<u64>();
                complete(user_data, black_box(1u64)).unwrap();
                black_box(done.await.unwrap())
            })
        })
    });
    g.bench_function("same-thread/tokio::sync::oneshot", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
                tx.send(black_box(1u64)).unwrap();
                black_box(rx.await.unwrap())
            })
        })
    });
    g.finish();
}

/// `ITEMS` items pushed by another thread, read by a task until the end.
fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let jobs = worker();
    let mut g = c.benchmark_group("stream_throughput");
    g.throughput(Throughput::Elements(ITEMS));

    // A buffer smaller than the run (the producer retries after a yield
    // when it is full: schedule-sensitive), and one that holds the whole
    // run (no retry: the per-item cost alone).
    for (label, capacity) in [
        ("buffer 1024", CAPACITY),
        ("buffer holds all", ITEMS as usize),
    ] {
        g.bench_function(format!("{label}/registry stream"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (user_data, mut items) = stream::<u64>(capacity);
                    jobs.send(Job::Stream(user_data.addr())).unwrap();
                    let mut sum = 0;
                    while let Some(item) = next(&mut items).await {
                        sum += item;
                    }
                    assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
                })
            })
        });
        g.bench_function(format!("{label}/tokio::sync::mpsc"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(capacity);
                    jobs.send(Job::TokioStream(tx)).unwrap();
                    let mut sum = 0;
                    while let Some(item) = rx.recv().await {
                        sum += item;
                    }
                    assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, latency, throughput);
criterion_main!(benches);
