//! The seed's C library, asynchronously: C threads complete futures that
//! tokio tasks await, and the callbacks C keeps and calls later arrive as a
//! `Stream`.
//!
//! Run: `cargo run --example async_traverse --features async`

#[path = "../tests/async_support/mod.rs"]
mod async_support;

use std::time::{Duration, Instant};

use async_support::{
    abandoned, count_blocks, emit, next, subscribe_events, JobError, TempFile, OVERFLOWED,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let files = [
        TempFile::new("one.conf", "{}"),
        TempFile::new("nested.conf", "{ { {} } {} }"),
        TempFile::new("broken.conf", "{ { }"),
    ];

    // 1. Traversals on C threads, awaited by tasks.
    let tasks: Vec<_> = files
        .iter()
        .map(|file| {
            let path = file.0.clone();
            tokio::spawn(async move { (path.clone(), count_blocks(&path).await) })
        })
        .collect();
    for task in tasks {
        let (path, result) = task.await.unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        match result {
            Ok(blocks) => println!("{name}: {blocks} blocks (counted on a C thread)"),
            Err(JobError::Failed(code)) => println!("{name}: C reported error {code}"),
            Err(other) => println!("{name}: {other:?}"),
        }
    }

    // 2. Cancellation: a task that stops waiting. The C thread completes
    //    later, against a stale handle: refused, nothing freed twice.
    //    (Whether a job beats a zero timeout depends on the scheduler.)
    let (mut finished, mut canceled) = (0, 0);
    for _ in 0..100 {
        match tokio::time::timeout(Duration::ZERO, count_blocks(&files[1].0)).await {
            Ok(_) => finished += 1,
            Err(_) => canceled += 1,
        }
    }
    println!(
        "100 jobs under a zero timeout: {finished} finished first, {canceled} canceled \
         (their C threads' late completions are refused as stale)"
    );

    // 3. A request C destroys without completing: Canceled, not a hang.
    println!("abandoned by C: {:?}", abandoned().await);

    // 4. A C thread streaming items, with back-pressure on a full buffer.
    let started = Instant::now();
    let mut items = emit(100_000, 256).unwrap();
    let (mut count, mut sum) = (0u64, 0i64);
    while let Some(item) = next(&mut items).await {
        count += 1;
        sum += item;
    }
    println!(
        "streamed {count} items from a C thread (sum {sum}) in {:?}",
        started.elapsed()
    );

    // 5. C's later subscription calls, published from a C thread, as a Stream.
    let events = subscribe_events(64).unwrap();
    let path = files[1].0.clone();
    tokio::task::spawn_blocking(move || {
        handle_registry::demo::traverse::publish_on_c_thread(&path).unwrap();
    })
    .await
    .unwrap();
    let mut events = events.finish();
    while let Some(event) = next(&mut events).await {
        println!("subscription event: {event:?}");
    }
    println!(
        "events refused by a full buffer: {}",
        OVERFLOWED.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Leave time for the canceled job's C thread to call back (and be refused).
    tokio::time::sleep(Duration::from_millis(50)).await;
}
