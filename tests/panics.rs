//! A panic in a visitor or closure never reaches C: it is caught in the
//! trampoline, the rest of the traversal's callbacks are skipped, and it
//! comes back on the calling thread, or as an error from C threads.
#![cfg(not(miri))]

mod traverse_support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use handle_registry::demo::traverse::{
    publish_on_c_thread, subscribe, trampoline_entries, traverse, traverse_file, traverse_file_mut,
    traverse_file_with, traverse_files_parallel, Callbacks, SyncVisitor, TraverseError, Visitor,
};
use handle_registry::panic::message;
use traverse_support::{nested_pairs, Recorder, TempFile};

/// Panics at its `panic_at`-th start; counts the calls it received.
#[derive(Debug, Default)]
struct Fuse {
    panic_at: usize,
    calls: Arc<AtomicUsize>,
}

impl Visitor for Fuse {
    fn start(&mut self, depth: i32) {
        if self.calls.fetch_add(1, Ordering::Relaxed) + 1 == self.panic_at {
            panic!("fuse blew at depth {depth}");
        }
    }

    fn end(&mut self, _open: i32, _close: i32) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Subscriptions are global in C: tests that publish hold this so that
/// they only reach their own.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The panics that tests here raise on C threads on purpose.
const EXPECTED_ON_C_THREADS: [&str; 2] = ["on a C thread", "late, on a C thread"];

/// Keeps the expected panics of C threads off the terminal.
///
/// libtest captures what the panic hook prints only on threads that Rust
/// started (and on their children), so the default hook would print these
/// panics from C's pthreads straight to the terminal, where they read like
/// failures. This hook drops exactly those messages and hands every other
/// panic, from any test, to the hook that was installed before.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !message(info.payload()).is_some_and(|text| EXPECTED_ON_C_THREADS.contains(&text)) {
                previous(info);
            }
        }));
    });
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    message(&*payload).unwrap().to_owned()
}

#[test]
fn a_visitor_panic_resumes_on_the_calling_thread_and_skips_the_rest() {
    let file = TempFile::new("{ {} }{}"); // start start end end start end
    let calls = Arc::new(AtomicUsize::new(0));
    let fuse = Fuse {
        panic_at: 2,
        calls: Arc::clone(&calls),
    };
    let entries = trampoline_entries();
    let payload = catch_unwind(|| traverse_file(file.path(), fuse)).unwrap_err();
    assert_eq!(panic_text(payload), "fuse blew at depth 2");
    // C went on calling the trampoline; the visitor saw nothing more.
    assert_eq!(trampoline_entries() - entries, 6);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn a_panic_in_the_seed_traverse_skips_end() {
    let calls = Arc::new(AtomicUsize::new(0));
    let fuse = Fuse {
        panic_at: 1,
        calls: Arc::clone(&calls),
    };
    let payload = catch_unwind(|| traverse(c"seed", fuse)).unwrap_err();
    assert_eq!(panic_text(payload), "fuse blew at depth 100");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn a_closure_panic_resumes_too() {
    let file = TempFile::new("{}{}{}");
    let ends = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ends);
    let callbacks = Callbacks::new().on_end(move |open, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        if open == 2 {
            panic!("closure at {open}");
        }
    });
    let payload = catch_unwind(AssertUnwindSafe(|| {
        traverse_file_with(file.path(), callbacks)
    }))
    .unwrap_err();
    assert_eq!(panic_text(payload), "closure at 2");
    assert_eq!(ends.load(Ordering::Relaxed), 2);
}

#[test]
fn a_kept_visitor_is_reset_when_a_callback_panics() {
    let file = TempFile::new("{}");
    let mut fuse = Fuse {
        panic_at: 1,
        calls: Arc::default(),
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        traverse_file_mut(file.path(), &mut fuse)
    }));
    assert!(result.is_err());
    assert_eq!(fuse.panic_at, 0, "the half-updated visitor was dropped");
    // And the crate still works afterwards.
    assert!(traverse_file(file.path(), Recorder::default()).is_ok());
}

#[derive(Default)]
struct SharedFuse {
    starts: AtomicUsize,
}

impl SyncVisitor for SharedFuse {
    fn start(&self, _depth: i32) {
        if self.starts.fetch_add(1, Ordering::Relaxed) == 10 {
            panic!("on a C thread");
        }
    }
}

#[test]
fn a_panic_on_c_threads_comes_back_as_an_error() {
    quiet_expected_panics();
    let files: Vec<_> = (0..4).map(|_| TempFile::new(nested_pairs(500))).collect();
    let paths: Vec<_> = files.iter().map(TempFile::path).collect();
    let outcome = traverse_files_parallel(&paths, SharedFuse::default());
    assert_eq!(
        outcome.err(),
        Some(TraverseError::Panicked {
            message: "on a C thread".into()
        })
    );
    // The process is alive and the C library usable.
    let calm = traverse_files_parallel(&paths, Arc::new(Totals::default())).unwrap();
    assert!(calm.results.iter().all(Result::is_ok));
}

#[derive(Default)]
struct Totals(AtomicUsize);

impl SyncVisitor for Totals {
    fn start(&self, _depth: i32) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_late_callback_panic_is_reported_by_its_subscription() {
    quiet_expected_panics();
    let _serial = serial();
    let file = TempFile::new("{}{}");
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let subscription = subscribe(Callbacks::new().on_start(move |_| {
        *counter.lock().unwrap() += 1;
        panic!("late, on a C thread");
    }))
    .unwrap();
    publish_on_c_thread(file.path()).unwrap();
    publish_on_c_thread(file.path()).unwrap();
    assert_eq!(*calls.lock().unwrap(), 1, "skipped after the panic");
    assert_eq!(
        subscription.check(),
        Err(TraverseError::Panicked {
            message: "late, on a C thread".into()
        })
    );
    assert_eq!(subscription.check(), Ok(()));
}

/// Its `Drop` panics: a trampoline that frees it (the last borrow of an
/// unreffed state) must not let that unwind into C.
struct LoudDrop;

impl Drop for LoudDrop {
    fn drop(&mut self) {
        panic!("dropping the state");
    }
}

#[test]
fn a_panicking_drop_inside_a_trampoline_does_not_reach_c() {
    let _serial = serial();
    let file = TempFile::new("{}{}");
    let loud = LoudDrop;
    let slot: Arc<Mutex<Option<handle_registry::demo::traverse::Subscription>>> = Arc::default();
    let own = Arc::clone(&slot);
    let subscription = subscribe(Callbacks::new().on_start(move |_| {
        let _keep = &loud;
        own.lock().unwrap().take(); // unrefs this very state
    }))
    .unwrap();
    *slot.lock().unwrap() = Some(subscription);
    handle_registry::demo::traverse::publish(file.path()).unwrap();
    assert!(slot.lock().unwrap().is_none());
}
