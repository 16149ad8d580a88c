//! A thread in thread-local teardown may share its owner id with another
//! thread: its lease gave the id back before its last destructors ran,
//! and a new thread can be handed that id. Releasing a static trampoline
//! must still wait for that thread's call in flight, and hand over its
//! panic, rather than take the shared id for "this thread is inside the
//! call" (which once aborted a `scope` and lost an `acquire`'s panic).
//!
//! One test in this binary, and each scenario on fresh threads: ids are
//! reused last in, first out, so a test running beside it could take the
//! freed id first (the test would then pass without reaching the case).
//! Pure Rust: runs under Miri too.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use handle_registry::static_callbacks;

mod common;
use common::OnDrop;

static_callbacks! {
    /// Called from a thread-local destructor of another thread.
    static HOOK: [extern "C" fn(n: i32) -> i32; 2] else -1;
}

type Hook = extern "C" fn(i32) -> i32;

thread_local! {
    /// Runs its closure when destroyed.
    static LATE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// Tells the releasing thread that the late call has started.
static STARTED: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);
/// Set by the late call just before it returns.
static RETURNED: AtomicBool = AtomicBool::new(false);

/// The closure the late call runs: it signals, then outlasts the
/// releasing thread's arrival in `release` (if it is slower, the test
/// passes without reaching the case, never fails spuriously).
fn slow_call(n: i32, panics: bool) -> i32 {
    if let Some(started) = STARTED.lock().unwrap().take() {
        let _ = started.send(());
    }
    std::thread::sleep(Duration::from_millis(200));
    RETURNED.store(true, Ordering::SeqCst);
    if panics {
        panic!("the late call's panic");
    }
    n + 1
}

/// Spawns a thread that takes an owner id, then, from a thread-local
/// destructor that runs after its lease gave the id back, calls the
/// function pointer it is sent.
fn late_caller() -> (mpsc::Sender<Hook>, std::thread::JoinHandle<i32>) {
    let (tx, rx) = mpsc::channel::<Hook>();
    let (ret_tx, ret_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        // Registered before the lease, so destroyed after it.
        LATE.with(|late| {
            late.borrow_mut().0 = Some(Box::new(move || {
                let f = rx.recv().unwrap();
                let _ = ret_tx.send(f(7));
            }))
        });
        // Takes an owner id (and registers the lease that gives it back).
        let p = handle_registry::save(0u8);
        drop(handle_registry::restore::<u8>(p).unwrap());
        handle_registry::unref(p).unwrap();
    });
    let joined = std::thread::spawn(move || {
        thread.join().unwrap();
        ret_rx.recv().unwrap()
    });
    (tx, joined)
}

#[test]
fn releases_wait_for_a_late_call_of_a_thread_sharing_the_owner_id() {
    // `scope`: used to abort, taking the shared id for its own call.
    RETURNED.store(false, Ordering::SeqCst);
    let (started_tx, started) = mpsc::channel();
    *STARTED.lock().unwrap() = Some(started_tx);
    let (send_fn, late) = late_caller();
    let waited = std::thread::spawn(move || {
        HOOK.scope(Box::new(|n| slow_call(n, false)), |f| {
            send_fn.send(f).unwrap();
            started.recv().unwrap();
        })
        .unwrap();
        RETURNED.load(Ordering::SeqCst)
    })
    .join()
    .unwrap();
    assert!(waited, "scope returned while the late call was running");
    assert_eq!(late.join().unwrap(), 8);

    // `acquire`: `try_finish` used to return at once and the call's
    // panic was dropped with the entry.
    RETURNED.store(false, Ordering::SeqCst);
    let (started_tx, started) = mpsc::channel();
    *STARTED.lock().unwrap() = Some(started_tx);
    let (send_fn, late) = late_caller();
    let (waited, payload) = std::thread::spawn(move || {
        let guard = HOOK.acquire(Box::new(|n| slow_call(n, true))).unwrap();
        send_fn.send(guard.fn_ptr()).unwrap();
        started.recv().unwrap();
        let finished = guard.try_finish();
        (RETURNED.load(Ordering::SeqCst), finished.err())
    })
    .join()
    .unwrap();
    assert!(
        waited,
        "try_finish returned while the late call was running"
    );
    let payload = payload.expect("the late call's panic was not handed over");
    assert_eq!(
        handle_registry::panic::message(&*payload),
        Some("the late call's panic")
    );
    assert_eq!(
        late.join().unwrap(),
        -1,
        "a panicked call returns the fallback"
    );
}
