//! Callbacks that C keeps and calls after the registering call returned.
//!
//! The subscription table is global in C, and `ignored_callbacks` is
//! process-wide: every test here holds `SERIAL`, so that each one sees only
//! its own subscriptions and can count ignored calls exactly.
#![cfg(not(miri))]

mod traverse_support;

use std::sync::{Arc, Mutex, MutexGuard};

use handle_registry::demo::ffi::{self, TRAVERSE_MAX_SUBSCRIPTIONS};
use handle_registry::demo::traverse::{
    ignored_callbacks, publish, publish_on_c_thread, subscribe, trampoline_entries, Callbacks,
    Subscription, TraverseError,
};
use traverse_support::{Event, TempFile};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Log = Arc<Mutex<Vec<Event>>>;

fn recording(log: &Log) -> Callbacks {
    let (starts, ends) = (Arc::clone(log), Arc::clone(log));
    Callbacks::new()
        .on_start(move |d| starts.lock().unwrap().push(Event::Start(d)))
        .on_end(move |a, b| ends.lock().unwrap().push(Event::End(a, b)))
}

#[test]
fn kept_callbacks_run_on_later_calls_until_dropped() {
    let _serial = serial();
    let file = TempFile::new("{}");
    let log = Log::default();
    let subscription = subscribe(recording(&log)).unwrap();
    publish(file.path()).unwrap();
    publish(file.path()).unwrap();
    assert_eq!(log.lock().unwrap().len(), 4);

    drop(subscription);
    let entries = trampoline_entries();
    publish(file.path()).unwrap();
    assert_eq!(trampoline_entries(), entries, "C forgot the subscription");
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[test]
fn callbacks_can_run_on_a_c_thread() {
    let _serial = serial();
    let file = TempFile::new("{{}}");
    let threads = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&threads);
    let _subscription = subscribe(
        Callbacks::new().on_start(move |_| sink.lock().unwrap().push(std::thread::current().id())),
    )
    .unwrap();
    publish_on_c_thread(file.path()).unwrap();
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 2);
    assert!(threads.iter().all(|&t| t == threads[0]));
    assert_ne!(threads[0], std::thread::current().id());
}

/// C's unsubscribe does not wait for a publication already running: it
/// delivers to its copy of the table. Subscriber A drops subscriber B
/// during a publication; B's remaining events reach a stale handle.
#[test]
fn a_late_call_in_flight_after_unsubscribing_is_ignored() {
    let _serial = serial();
    for on_c_thread in [false, true] {
        let b_log = Log::default();
        let b_slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
        let dropper = Arc::clone(&b_slot);
        let _a = subscribe(Callbacks::new().on_start(move |_| {
            dropper.lock().unwrap().take();
        }))
        .unwrap();
        *b_slot.lock().unwrap() = Some(subscribe(recording(&b_log)).unwrap());

        let file = TempFile::new("{}{}"); // 4 events for B, all after A's first
        let ignored = ignored_callbacks();
        if on_c_thread {
            publish_on_c_thread(file.path()).unwrap();
        } else {
            publish(file.path()).unwrap();
        }
        assert!(b_slot.lock().unwrap().is_none());
        assert!(b_log.lock().unwrap().is_empty(), "B never ran after drop");
        assert_eq!(ignored_callbacks() - ignored, 4);
    }
}

#[test]
fn a_late_call_from_a_kept_copy_is_ignored() {
    let _serial = serial();
    let log = Log::default();
    let subscription = subscribe(recording(&log)).unwrap();
    // What a careless C library would keep past unsubscribing.
    let (cbs, user_data) = (subscription.c_callbacks(), subscription.user_data());
    drop(subscription);

    let ignored = ignored_callbacks();
    // SAFETY: the trampolines accept any `user_data`, stale included.
    unsafe { ffi::traverse(std::ptr::null_mut(), cbs, user_data) };
    assert_eq!(ignored_callbacks() - ignored, 2);
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn forged_and_null_user_data_through_c_are_ignored() {
    let _serial = serial();
    let log = Log::default();
    let subscription = subscribe(recording(&log)).unwrap();
    let cbs = subscription.c_callbacks();
    let real = subscription.user_data() as usize;
    let forged = [
        0,
        1,
        0xdead_beef,
        usize::MAX,
        real + 1,                    // the next slot, never issued
        real ^ (1 << 40),            // a generation not issued yet
        &log as *const Log as usize, // a real pointer, not a handle
    ];
    let ignored = ignored_callbacks();
    for user_data in forged {
        // SAFETY: the trampolines accept any `user_data`.
        unsafe {
            ffi::traverse(
                std::ptr::null_mut(),
                cbs,
                std::ptr::without_provenance_mut(user_data),
            )
        };
    }
    assert_eq!(ignored_callbacks() - ignored, 2 * forged.len() as u64);
    assert!(log.lock().unwrap().is_empty());
    // The genuine handle still works.
    // SAFETY: as above.
    unsafe { ffi::traverse(std::ptr::null_mut(), cbs, subscription.user_data()) };
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[test]
fn a_subscription_may_drop_itself_from_its_own_callback() {
    let _serial = serial();
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0));
    let (own, counter) = (Arc::clone(&slot), Arc::clone(&calls));
    let subscription = subscribe(Callbacks::new().on_start(move |_| {
        *counter.lock().unwrap() += 1;
        own.lock().unwrap().take();
    }))
    .unwrap();
    *slot.lock().unwrap() = Some(subscription);

    let file = TempFile::new("{}{}{}");
    let ignored = ignored_callbacks();
    publish(file.path()).unwrap();
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(ignored_callbacks() - ignored, 2, "the two later starts");
    // The state (and the closure holding `slot`) was freed when the
    // callback's borrow ended.
    assert_eq!(Arc::strong_count(&slot), 1);
}

#[test]
fn the_subscription_table_is_bounded() {
    let _serial = serial();
    let max = TRAVERSE_MAX_SUBSCRIPTIONS as usize;
    let all: Vec<_> = (0..max)
        .map(|_| subscribe(Callbacks::new()).unwrap())
        .collect();
    assert_eq!(
        subscribe(Callbacks::new()).err(),
        Some(TraverseError::TooManySubscriptions)
    );
    drop(all);
    assert!(subscribe(Callbacks::new()).is_ok());
}

#[test]
fn publishing_reports_file_errors() {
    let _serial = serial();
    let log = Log::default();
    let _subscription = subscribe(recording(&log)).unwrap();
    let file = TempFile::new("{}}");
    assert_eq!(publish(file.path()), Err(TraverseError::UnmatchedClose));
    assert_eq!(
        publish_on_c_thread(file.path()),
        Err(TraverseError::UnmatchedClose)
    );
    assert_eq!(log.lock().unwrap().len(), 4);
}
