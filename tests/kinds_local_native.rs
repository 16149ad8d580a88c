//! Thread-affine (`save_local`) handles with C threads calling in: the
//! demo library calls back on the calling thread (`traverse_file`,
//! `traverse_publish`) and on its own pthreads (`traverse_files_parallel`,
//! `traverse_publish_on_thread`). On the owner thread the callback reaches
//! the value; on a C thread it gets `WrongThread` and never touches it; a
//! `c_unref` from a C thread defers the drop to the owner. The value is
//! not `Send` and its `Drop` asserts its thread.
// Calls into C: compiled out under Miri, which cannot run FFI.
#![cfg(not(miri))]

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ThreadId;

use handle_registry::demo::ffi;
use handle_registry::{Error, Registry};

/// Not `Send` (an `Rc`); its drop asserts its thread.
struct State {
    thread: ThreadId,
    events: Rc<RefCell<Vec<c_int>>>,
    drops: &'static AtomicUsize,
}

static DROPS: AtomicUsize = AtomicUsize::new(0);
static EXIT_DROPS: AtomicUsize = AtomicUsize::new(0);
static WRONG_THREAD: AtomicUsize = AtomicUsize::new(0);
static OTHER_ERRORS: AtomicUsize = AtomicUsize::new(0);
/// When set, the first wrong-thread callback also unrefs the handle, from
/// the C thread, as a destroy-notify would.
static UNREF_FROM_C: AtomicBool = AtomicBool::new(false);

impl Drop for State {
    fn drop(&mut self) {
        assert_eq!(
            std::thread::current().id(),
            self.thread,
            "dropped off its thread"
        );
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_start(user_data: *mut c_void, depth: c_int) {
    match Registry::global().restore_local::<State>(user_data) {
        Ok(state) => state.events.borrow_mut().push(depth),
        Err(Error::WrongThread) => {
            WRONG_THREAD.fetch_add(1, Ordering::SeqCst);
            if UNREF_FROM_C.swap(false, Ordering::SeqCst) {
                handle_registry::c_unref(user_data);
            }
        }
        Err(_) => {
            OTHER_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn callbacks() -> ffi::Callbacks {
    ffi::Callbacks {
        start: Some(on_start),
        end: None,
    }
}

fn temp_file(tag: &str) -> (std::path::PathBuf, CString) {
    let path = std::env::temp_dir().join(format!("kinds-local-{}-{tag}", std::process::id()));
    std::fs::write(&path, "a { b { } c { } }").unwrap();
    let c = CString::new(path.to_str().unwrap()).unwrap();
    (path, c)
}

/// One test, in sequence: the counters and C's subscription table are
/// process-wide.
#[test]
fn local_handles_with_c_threads() {
    let (path, file) = temp_file("all");
    let events = Rc::new(RefCell::new(Vec::new()));
    let p = Registry::global().save_local(State {
        thread: std::thread::current().id(),
        events: events.clone(),
        drops: &DROPS,
    });

    // On this thread: reached.
    // SAFETY: a valid file name; the callback accepts any user_data.
    let code = unsafe { ffi::traverse_file(file.as_ptr(), callbacks(), p) };
    assert_eq!(code, ffi::TRAVERSE_OK);
    assert_eq!(*events.borrow(), [1, 2, 2]);

    // On C's pthreads: WrongThread, value untouched.
    let names = [file.as_ptr(), file.as_ptr(), file.as_ptr()];
    let mut results = [0; 3];
    // SAFETY: three valid names, room for three results.
    let code = unsafe {
        ffi::traverse_files_parallel(names.as_ptr(), 3, callbacks(), p, results.as_mut_ptr())
    };
    assert_eq!((code, results), (ffi::TRAVERSE_OK, [ffi::TRAVERSE_OK; 3]));
    assert_eq!(WRONG_THREAD.load(Ordering::SeqCst), 9);
    assert_eq!(events.borrow().len(), 3);

    // Subscribed: published here (reached) and on a C thread (refused).
    // SAFETY: the callback accepts any user_data; unsubscribed below.
    let id = unsafe { ffi::traverse_subscribe(callbacks(), p) };
    assert!(id > 0);
    // SAFETY: a valid file name.
    assert_eq!(
        unsafe { ffi::traverse_publish(file.as_ptr()) },
        ffi::TRAVERSE_OK
    );
    assert_eq!(events.borrow().len(), 6);
    // SAFETY: a valid file name.
    assert_eq!(
        unsafe { ffi::traverse_publish_on_thread(file.as_ptr()) },
        ffi::TRAVERSE_OK
    );
    assert_eq!(WRONG_THREAD.load(Ordering::SeqCst), 12);
    assert_eq!(events.borrow().len(), 6);

    // A C thread unrefs the handle: the drop waits for this thread.
    UNREF_FROM_C.store(true, Ordering::SeqCst);
    // SAFETY: a valid file name.
    assert_eq!(
        unsafe { ffi::traverse_publish_on_thread(file.as_ptr()) },
        ffi::TRAVERSE_OK
    );
    // SAFETY: a live subscription.
    assert_eq!(unsafe { ffi::traverse_unsubscribe(id) }, ffi::TRAVERSE_OK);
    assert!(!UNREF_FROM_C.load(Ordering::SeqCst));
    assert_eq!(DROPS.load(Ordering::SeqCst), 0);
    assert_eq!(Registry::global().drop_deferred(), 1);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    assert_eq!(
        Registry::global().restore_local::<State>(p).err(),
        Some(Error::Stale)
    );
    // The stale calls before the unsubscribe counted as other errors, if any.
    let _ = OTHER_ERRORS.load(Ordering::SeqCst);
    std::fs::remove_file(path).unwrap();
}

/// A thread that owns a local value and exits: the value is dropped there,
/// and C calling back later gets `Stale`.
#[test]
fn owner_exit_then_c_calls_back() {
    let (path, file) = temp_file("exit");
    let h = std::thread::spawn(|| {
        let events = Rc::new(RefCell::new(Vec::new()));
        Registry::global()
            .save_local(State {
                thread: std::thread::current().id(),
                events,
                drops: &EXIT_DROPS,
            })
            .addr()
    })
    .join()
    .unwrap();
    assert_eq!(EXIT_DROPS.load(Ordering::SeqCst), 1);
    let p: *mut c_void = std::ptr::without_provenance_mut(h);
    assert_eq!(
        Registry::global().restore_local::<State>(p).err(),
        Some(Error::Stale)
    );
    // SAFETY: a valid file name; the callback accepts any user_data.
    let code = unsafe { ffi::traverse_file(file.as_ptr(), callbacks(), p) };
    assert_eq!(code, ffi::TRAVERSE_OK);
    std::fs::remove_file(path).unwrap();
}
