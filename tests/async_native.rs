//! C threads completing futures that tokio tasks await, and C's later
//! subscription calls as a `Stream` (the C side: `native/async_demo.c` and
//! the seed's subscriptions in `native/traverse_late.c`).
#![cfg(not(miri))]

mod async_support;

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_support::{
    abandoned, async_demo_count_blocks, count_blocks, emit, next, subscribe_events, Event,
    JobError, TempFile,
};
use handle_registry::completion::{complete_from_c, oneshot, SendError};
use handle_registry::{c_unref, demo::ffi, Error};
use tokio::sync::Mutex;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// C's subscription table is global: one subscription test at a time.
static SUBSCRIPTIONS: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_thread_completes_the_awaited_future() {
    let file = TempFile::new("three", "{ {} {} }");
    let count = timeout(LIMIT, count_blocks(&file.0)).await.unwrap();
    assert_eq!(count, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_thread_reports_failure_through_the_future() {
    let missing = std::path::Path::new("/no/such/file");
    let result = timeout(LIMIT, count_blocks(missing)).await.unwrap();
    assert_eq!(result, Err(JobError::Failed(ffi::TRAVERSE_ERR_OPEN)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_without_completion_cancels_instead_of_hanging() {
    let result = timeout(LIMIT, abandoned()).await.unwrap();
    assert_eq!(result, Err(JobError::Canceled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_c_threads_complete_concurrently() {
    let file = TempFile::new("many", "{{}}{}");
    let path = std::sync::Arc::new(file.0.clone());
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { count_blocks(&path).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(timeout(LIMIT, task).await.unwrap().unwrap(), Ok(3));
    }
}

fn is_live(user_data: *mut c_void) -> bool {
    handle_registry::Registry::global()
        .leak_report()
        .entries()
        .iter()
        .any(|e| e.handle() == user_data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_thread_completes_before_the_first_poll() {
    let file = TempFile::new("early", "{}{}");
    let filename = std::ffi::CString::new(file.0.to_str().unwrap()).unwrap();
    let (user_data, done) = oneshot::<i32>();
    // SAFETY: the trampolines accept any pointer.
    let started = unsafe {
        async_demo_count_blocks(
            filename.as_ptr(),
            Some(async_support::on_done),
            Some(c_unref),
            user_data,
        )
    };
    assert_eq!(started, ffi::TRAVERSE_OK);
    // Wait, without polling, until C completed (the handle is gone).
    timeout(LIMIT, async {
        while is_live(user_data) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(done.await, Ok(2));
}

static LATE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn on_done_counting_late(user_data: *mut c_void, result: i32) {
    if complete_from_c(user_data, result) == Err(SendError::Handle(Error::Stale)) {
        LATE.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_c_completion_after_the_future_was_dropped_is_harmless() {
    let file = TempFile::new("late", "{}");
    let filename = std::ffi::CString::new(file.0.to_str().unwrap()).unwrap();
    let (user_data, done) = oneshot::<i32>();
    drop(done); // canceled before C even starts
                // SAFETY: the trampolines accept any pointer.
    let started = unsafe {
        async_demo_count_blocks(
            filename.as_ptr(),
            Some(on_done_counting_late),
            Some(c_unref),
            user_data,
        )
    };
    assert_eq!(started, ffi::TRAVERSE_OK);
    timeout(LIMIT, async {
        while LATE.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the C thread called back, and was refused with Stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_thread_streams_items_in_order_with_back_pressure() {
    let n = 20_000;
    let mut items = emit(n, 16).unwrap();
    let mut expected = 0;
    while let Some(item) = timeout(LIMIT, next(&mut items)).await.unwrap() {
        assert_eq!(item, expected);
        expected += 1;
    }
    assert_eq!(
        expected, n,
        "ended by C's destroy-notify after the last item"
    );
}

static EMITTER_DESTROYED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn destroy_and_count(user_data: *mut c_void) {
    c_unref(user_data);
    EMITTER_DESTROYED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_lets_the_c_thread_run_to_its_end() {
    let (user_data, mut items) = handle_registry::completion::stream::<i64>(4);
    // SAFETY: the trampolines accept any pointer, at any time.
    let started = unsafe {
        async_support::async_demo_emit(
            100_000,
            Some(async_support::on_item),
            Some(destroy_and_count),
            user_data,
        )
    };
    assert_eq!(started, ffi::TRAVERSE_OK);
    assert_eq!(next(&mut items).await, Some(0));
    drop(items); // later pushes are Stale: C's trampoline moves on
    assert!(!is_live(user_data));
    // C runs through its remaining items (each refused) to its destroy-notify.
    timeout(LIMIT, async {
        while EMITTER_DESTROYED.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_subscription_calls_arrive_as_a_stream() {
    let _serial = SUBSCRIPTIONS.lock().await;
    let file = TempFile::new("events", "{{}}");
    let events = subscribe_events(64).unwrap();
    let path = file.0.clone();
    // C publishes later, from its own thread.
    tokio::task::spawn_blocking(move || {
        handle_registry::demo::traverse::publish_on_c_thread(&path).unwrap();
        handle_registry::demo::traverse::publish_on_c_thread(&path).unwrap();
    })
    .await
    .unwrap();
    let mut events = events.finish();
    let mut seen = Vec::new();
    while let Some(event) = timeout(LIMIT, next(&mut events)).await.unwrap() {
        seen.push(event);
    }
    let once = [
        Event::Start(1),
        Event::Start(2),
        Event::End(1, 2),
        Event::End(0, 3),
    ];
    assert_eq!(seen, [once, once].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_are_received_while_c_publishes() {
    let _serial = SUBSCRIPTIONS.lock().await;
    let file = TempFile::new("live", "{}{}{}");
    let mut events = subscribe_events(4).unwrap();
    let path = file.0.clone();
    let publisher = tokio::task::spawn_blocking(move || {
        handle_registry::demo::traverse::publish_on_c_thread(&path).unwrap()
    });
    // Read while C is publishing: the first event arrives from the C thread.
    let first = timeout(LIMIT, next(&mut events)).await.unwrap();
    assert_eq!(first, Some(Event::Start(1)));
    publisher.await.unwrap();
    drop(events); // unsubscribes; the handle turns stale
}
