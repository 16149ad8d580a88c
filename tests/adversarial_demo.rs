//! Adversarial review of the demo C library's safe wrappers
//! (`src/demo/traverse/`), through real C (`native/`). Public API only.
//! Each test names the promise it attacks and says whether it held.
//!
//! Attacked: garbage and special input files against the model of the
//! header; a visitor that unrefs or retains its own state from inside a
//! callback; a panic in a traversal started from inside another one's
//! callback; a subscription callback that publishes again; panics whose
//! payload panics when dropped, on C threads and in a dropped
//! subscription; a visitor whose `Drop` panics after a callback panicked;
//! panics from several Rust threads at once; a parallel traversal started
//! from a C thread.
//!
//! Three tests found process aborts from safe code, since fixed (each
//! failed before its fix): a `demo::kinds` closure dropped at its
//! trampoline's release, outside the catch, whose capture panicked; and,
//! twice, a half-updated visitor dropped by the resumed unwind of its
//! callback's panic.
#![cfg(not(miri))]

mod common;
mod traverse_support;

use common::{in_child, payload_text, watchdog, NestedPanic};
use handle_registry::demo::traverse::{
    ignored_callbacks, publish, repeat_start, subscribe, traverse_file, traverse_file_mut,
    traverse_files_parallel, Callbacks, SyncVisitor, TraverseError, Visitor,
};
use handle_registry::{Error, Registry};
use std::ffi::c_void;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use traverse_support::{expected, Recorder, TempFile};

/// Subscriptions are global in C: tests that publish hold this.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle of the one live traversal state whose type name contains
/// `marker` (each test uses a visitor type of its own).
fn own_handle(marker: &str) -> *mut c_void {
    let report = Registry::global().leak_report();
    let mine: Vec<_> = report
        .entries()
        .iter()
        .filter(|e| e.type_name().contains(marker))
        .collect();
    assert_eq!(mine.len(), 1, "{report}");
    mine[0].handle()
}

fn live_states(marker: &str) -> usize {
    Registry::global()
        .leak_report()
        .entries()
        .iter()
        .filter(|e| e.type_name().contains(marker))
        .count()
}

/// Promise (`native/traverse.h`: "No input, however malformed, makes
/// these functions crash"; `traverse_file_mut`: the visitor keeps "what
/// was seen before the fault"): pathological inputs give exactly the
/// model's events and result: nesting at and past the 1024 cap, a NUL at
/// the first byte and after events, bytes ≥ 0x80, only `}`, 200 000 flat
/// blocks, a CRLF file, `/dev/null`, `/dev/zero` (endless NULs), a
/// directory, a path with an interior NUL, a missing file. Held.
#[test]
fn garbage_inputs_agree_with_the_model() {
    let _w = watchdog("garbage_inputs_agree_with_the_model");
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        "{".repeat(1024).into_bytes(),
        format!("{}{}", "{".repeat(1024), "}".repeat(1024)).into_bytes(),
        format!("{}{}", "{".repeat(1025), "}".repeat(1025)).into_bytes(),
        b"\0{}".to_vec(),
        b"{ { } \0 }".to_vec(),
        vec![0xff, b'{', 0x80, b'}', 0xfe],
        b"}}}}".to_vec(),
        b"{}\r\n{\r\n}\r\n".to_vec(),
        "{}".repeat(200_000).into_bytes(),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let mut bytes = Vec::new();
        for _ in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(match seed % 7 {
                0..=2 => b'{',
                3..=5 => b'}',
                _ => (seed >> 8) as u8,
            });
        }
        inputs.push(bytes);
    }
    for bytes in &inputs {
        let file = TempFile::new(bytes);
        let mut seen = Recorder::default();
        let result = traverse_file_mut(file.path(), &mut seen);
        let (events, want) = expected(bytes);
        assert_eq!(
            result,
            want,
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
        assert_eq!(seen.0, events);
    }
    let special: [(&str, Result<(), TraverseError>); 4] = [
        ("/dev/null", Ok(())),
        ("/dev/zero", Err(TraverseError::NotText)),
        ("/", Err(TraverseError::Read)),
        ("/no/such/dir/file", Err(TraverseError::Open)),
    ];
    for (path, want) in special {
        let mut seen = Recorder::default();
        assert_eq!(traverse_file_mut(path, &mut seen), want, "{path}");
        assert!(seen.0.is_empty());
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let nul = std::ffi::OsStr::from_bytes(b"a\0b");
        assert_eq!(
            traverse_file(nul, Recorder::default()).err(),
            Some(TraverseError::InvalidPath)
        );
    }
}

/// Counts its drops; unrefs its own state (found through the leak report)
/// at the first block, then maybe panics.
struct SelfUnref {
    calls: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    then_panic: bool,
}
impl Visitor for SelfUnref {
    fn start(&mut self, _depth: i32) {
        self.calls.fetch_add(1, SeqCst);
        handle_registry::c_unref(own_handle("SelfUnref"));
        if self.then_panic {
            panic!("after the unref");
        }
    }
}
impl Drop for SelfUnref {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
    }
}

/// Promise (`TraverseError::StateLost`: "The traversal's state was
/// removed from the registry while C was running, by code that unreffed a
/// handle it did not own"; route module: a handle that does not resolve
/// "is counted and ignored"): a visitor that `c_unref`s its own state at
/// the first of three blocks gets `StateLost(Stale)`, is dropped exactly
/// once (at the end of the call, not under its own feet), and the later
/// callbacks are ignored. If it panics right after the unref, the panic is
/// *not* resumed: it went down with the state (see the doc findings).
/// Held as described.
#[test]
fn a_visitor_that_unrefs_its_own_state() {
    let file = TempFile::new("{}{}{}");
    for then_panic in [false, true] {
        let (calls, drops) = (Arc::default(), Arc::<AtomicUsize>::default());
        let ignored = ignored_callbacks();
        let visitor = SelfUnref {
            calls: Arc::clone(&calls),
            drops: Arc::clone(&drops),
            then_panic,
        };
        let result = catch_unwind(AssertUnwindSafe(|| traverse_file(file.path(), visitor)));
        let result = result.expect("no panic comes out: it was dropped with the state");
        assert_eq!(result.err(), Some(TraverseError::StateLost(Error::Stale)));
        assert_eq!(calls.load(SeqCst), 1);
        assert_eq!(drops.load(SeqCst), 1);
        if !then_panic {
            // Five later events, each refused (others may add theirs).
            assert!(ignored_callbacks() >= ignored + 5);
        }
        assert_eq!(live_states("SelfUnref"), 0);
    }
}

struct SelfRetain;
impl Visitor for SelfRetain {
    fn start(&mut self, _depth: i32) {
        handle_registry::retain(own_handle("SelfRetain")).unwrap();
    }
}

/// Promise (`traverse_file`: "gives the visitor back"; `StateLost`): a
/// visitor that `retain`s its own state gets `StateLost(Retained)`; the
/// wrapper drops its own reference, and the state stays live with the one
/// reference the visitor took, until that is unreffed. No leak beyond the
/// reference the visitor took, no double drop. Held (the wording of
/// `StateLost`, "removed ... unreffed", does not describe this case).
#[test]
fn a_visitor_that_retains_its_own_state() {
    let file = TempFile::new("{}");
    let result = traverse_file(file.path(), SelfRetain);
    assert_eq!(
        result.err(),
        Some(TraverseError::StateLost(Error::Retained))
    );
    let p = own_handle("SelfRetain");
    assert_eq!(Registry::global().ref_count(p), Ok(1));
    handle_registry::unref(p).unwrap();
    assert_eq!(live_states("SelfRetain"), 0);
}

/// Panics at its first block.
struct InnerBomb;
impl Visitor for InnerBomb {
    fn start(&mut self, _depth: i32) {
        panic!("inner traversal");
    }
}

/// Starts a traversal of `inner` from its first callback.
#[derive(Debug)]
struct OuterStarter {
    inner: std::path::PathBuf,
    calls: Arc<AtomicUsize>,
}
impl Visitor for OuterStarter {
    fn start(&mut self, _depth: i32) {
        self.calls.fetch_add(1, SeqCst);
        let _ = traverse_file(&self.inner, InnerBomb);
        unreachable!("the inner traversal resumes its panic");
    }
}

/// Promise (`traverse` module: a panic "is caught in the trampoline ...,
/// the rest of that traversal's callbacks are skipped, and the panic is
/// resumed on the calling thread once C returns"), nested: the inner
/// traversal's panic is resumed inside the outer visitor's callback,
/// caught by the outer trampoline, the outer traversal's later callbacks
/// are skipped, and the panic comes out of the outer call with its
/// message; both states are gone. Held.
#[test]
fn a_panic_in_a_nested_traversal_comes_out_of_the_outer_one() {
    let (outer, inner) = (TempFile::new("{}{}{}"), TempFile::new("{}"));
    let calls = Arc::new(AtomicUsize::new(0));
    let visitor = OuterStarter {
        inner: inner.path().to_owned(),
        calls: Arc::clone(&calls),
    };
    let caught = catch_unwind(AssertUnwindSafe(|| traverse_file(outer.path(), visitor)));
    assert_eq!(payload_text(&*caught.unwrap_err()), "inner traversal");
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(live_states("OuterStarter") + live_states("InnerBomb"), 0);
}

/// Promise (route module: a `user_data` "already borrowed by this thread"
/// is ignored, never a deadlock; `native/traverse.h`: callbacks may call
/// back into the library): a subscription's callback that publishes
/// again from inside its own callback: the nested publication reaches the
/// other subscription, its own nested calls are ignored (`Busy`), nothing
/// hangs. Held.
#[test]
fn a_subscription_callback_that_publishes_again() {
    let _serial = serial();
    let _w = watchdog("a_subscription_callback_that_publishes_again");
    let file = TempFile::new("{}");
    let path = file.path().to_owned();
    let (mine, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (m, o) = (Arc::clone(&mine), Arc::clone(&other));
    let depth = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&depth);
    let _a = subscribe(Callbacks::new().on_start(move |_| {
        m.fetch_add(1, SeqCst);
        if d.fetch_add(1, SeqCst) == 0 {
            publish(&path).unwrap();
        }
    }))
    .unwrap();
    let _b = subscribe(Callbacks::new().on_start(move |_| {
        o.fetch_add(1, SeqCst);
    }))
    .unwrap();
    let ignored = ignored_callbacks();
    publish(file.path()).unwrap();
    assert_eq!(mine.load(SeqCst), 1);
    assert_eq!(other.load(SeqCst), 2); // the nested publication and the outer one
    assert!(ignored_callbacks() > ignored);
    assert_eq!(_a.check(), Ok(()));
}

/// Panics on a C thread with a payload whose `Drop` panics five levels deep.
#[derive(Debug)]
struct DeepBomb;
impl SyncVisitor for DeepBomb {
    fn start(&self, _depth: i32) {
        panic_any(NestedPanic(5));
    }
}

/// Promise (`traverse_files_parallel`: "`TraverseError::Panicked` when
/// the visitor panicked on a C thread"; `from_panic` "drops the payload
/// without letting its own `Drop` unwind"): a payload five levels deep,
/// raised on every C thread at once, gives `Panicked` with the
/// `Box<dyn Any>` message and never aborts (the route module's `discard`
/// unrolls two levels and leaks the rest). Also a subscription dropped
/// with such a payload still stored, never checked. Run in a child: the
/// failure mode is an abort. Held.
#[test]
fn panics_whose_payload_panics_when_dropped_never_abort() {
    if !in_child("panics_whose_payload_panics_when_dropped_never_abort") {
        return;
    }
    let file = TempFile::new("{}{}");
    let paths = vec![file.path(); 8];
    let err = traverse_files_parallel(&paths, DeepBomb).unwrap_err();
    assert_eq!(
        err,
        TraverseError::Panicked {
            message: "Box<dyn Any>".into()
        }
    );
    let _serial = serial();
    let s = subscribe(Callbacks::new().on_start(|_| panic_any(NestedPanic(5)))).unwrap();
    publish(file.path()).unwrap();
    drop(s); // the payload is still in the carrier
    let s = subscribe(Callbacks::new().on_start(|_| panic_any(NestedPanic(5)))).unwrap();
    publish(file.path()).unwrap();
    assert!(matches!(s.check(), Err(TraverseError::Panicked { .. })));
}

/// Panics at the first block once armed; its `Drop` panics when armed.
#[derive(Default)]
struct DropBomb {
    armed: bool,
}
impl Visitor for DropBomb {
    fn start(&mut self, _depth: i32) {
        self.armed = true;
        panic!("the callback");
    }
}
impl Drop for DropBomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("the visitor's drop");
        }
        if self.armed {
            // What a `Drop` that panics unconditionally does during an
            // unwind: the process aborts. Flag it instead of aborting
            // so the child's output says what happened.
            DROPPED_WHILE_UNWINDING.store(true, SeqCst);
        }
    }
}
static DROPPED_WHILE_UNWINDING: AtomicBool = AtomicBool::new(false);

/// Promise (`traverse_file_mut`: "If a callback panics, the half-updated
/// visitor is dropped, `*visitor` stays the default, and the panic is
/// resumed"; README "Panics": the crate takes care that a payload's
/// panicking `Drop` is "never a double-panic abort"): the wrapper resumed
/// the callback's panic *before* the half-updated visitor was dropped, so
/// the visitor was dropped during that unwind, where a panicking `Drop`
/// aborts the process. The visitor here only records that it was dropped
/// while unwinding (a plain `panic!` in its `Drop` would abort the
/// harness). Found by this review, fixed: the visitor is dropped first,
/// its own panic discarded, then the callback's is resumed.
#[test]
fn the_visitor_is_not_dropped_during_the_resumed_unwind() {
    let file = TempFile::new("{}");
    let mut visitor = DropBomb::default();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        traverse_file_mut(file.path(), &mut visitor)
    }));
    assert_eq!(payload_text(&*caught.unwrap_err()), "the callback");
    assert!(!visitor.armed);
    assert!(
        !DROPPED_WHILE_UNWINDING.load(SeqCst),
        "the half-updated visitor was dropped during the resumed unwind: \
         a Drop that panics there aborts"
    );
}

/// Panics at its first block; its `Drop` always panics once armed.
#[derive(Default)]
struct LoudBomb {
    armed: bool,
}
impl Visitor for LoudBomb {
    fn start(&mut self, _depth: i32) {
        self.armed = true;
        panic!("the callback");
    }
}
impl Drop for LoudBomb {
    fn drop(&mut self) {
        if self.armed {
            panic!("the visitor's drop");
        }
    }
}

/// The same as [`the_visitor_is_not_dropped_during_the_resumed_unwind`],
/// with a `Drop` that panics unconditionally: the child process aborted
/// ("panic in a destructor during cleanup"), from `traverse_file`, a safe
/// function. Fixed with it.
#[test]
fn a_visitor_whose_drop_panics_after_a_callback_panic_does_not_abort() {
    if !in_child("a_visitor_whose_drop_panics_after_a_callback_panic_does_not_abort") {
        return;
    }
    let file = TempFile::new("{}");
    let caught = catch_unwind(AssertUnwindSafe(|| {
        traverse_file(file.path(), LoudBomb::default()).map(|_| ())
    }));
    assert!(caught.is_err());
}

/// Panics with its thread's number and round.
struct Tagged(usize, usize);
impl Visitor for Tagged {
    fn start(&mut self, _depth: i32) {
        if self.1 % 2 == 1 {
            panic_any((self.0, self.1));
        }
    }
}

/// Promise (`panic` module: "the slot travels with the callback's
/// state"): four Rust threads traverse at once, every other round with a
/// panic; each gets back exactly its own payload, and the rounds without
/// a panic succeed. Held.
#[test]
fn concurrent_traversals_get_their_own_panics_back() {
    let file = TempFile::new("{{}}");
    std::thread::scope(|s| {
        for t in 0..4 {
            let path = file.path();
            s.spawn(move || {
                for round in 0..40 {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        traverse_file(path, Tagged(t, round)).map(|_| ())
                    }));
                    match r {
                        Ok(ok) => {
                            assert_eq!(round % 2, 0);
                            ok.unwrap();
                        }
                        Err(payload) => {
                            assert_eq!(payload.downcast_ref::<(usize, usize)>(), Some(&(t, round)));
                        }
                    }
                }
            });
        }
    });
}

/// Counts its calls; panics at the first.
struct FirstOnly(Arc<AtomicUsize>);
impl Visitor for FirstOnly {
    fn start(&mut self, _i: i32) {
        self.0.fetch_add(1, SeqCst);
        panic!("first of many");
    }
}

/// Promise (`repeat_start`: "the remaining calls still enter the
/// trampoline but are skipped"): after a panic at the first of 200 000
/// calls, the visitor runs no more and the panic comes back once. Held.
#[test]
fn after_a_panic_the_rest_of_a_long_run_is_skipped() {
    let calls = Arc::new(AtomicUsize::new(0));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        repeat_start(FirstOnly(Arc::clone(&calls)), 200_000).map(|_| ())
    }));
    assert_eq!(payload_text(&*caught.unwrap_err()), "first of many");
    assert_eq!(calls.load(SeqCst), 1);
}

/// Starts a parallel traversal from a C thread, once.
struct Spawner {
    path: std::path::PathBuf,
    once: AtomicBool,
    inner_blocks: Arc<AtomicUsize>,
}
struct CountBlocks(Arc<AtomicUsize>);
impl SyncVisitor for CountBlocks {
    fn start(&self, _depth: i32) {
        self.0.fetch_add(1, SeqCst);
    }
}
impl SyncVisitor for Spawner {
    fn start(&self, _depth: i32) {
        if !self.once.swap(true, SeqCst) {
            let paths = vec![self.path.as_path(); 4];
            let done = traverse_files_parallel(&paths, CountBlocks(Arc::clone(&self.inner_blocks)))
                .unwrap();
            assert!(done.results.iter().all(Result::is_ok));
        }
    }
}

/// Promise (`traverse_files_parallel`: callbacks on C threads through the
/// shared path): a parallel traversal started from inside a C thread's
/// callback of another one runs to the end, with exact counts, and
/// nothing deadlocks. Held.
#[test]
fn a_parallel_traversal_from_a_c_thread() {
    let _w = watchdog("a_parallel_traversal_from_a_c_thread");
    let file = TempFile::new("{}{}{}");
    let inner_blocks = Arc::new(AtomicUsize::new(0));
    let spawner = Spawner {
        path: file.path().to_owned(),
        once: AtomicBool::new(false),
        inner_blocks: Arc::clone(&inner_blocks),
    };
    let paths = vec![file.path(); 4];
    let done = traverse_files_parallel(&paths, spawner).unwrap();
    assert!(done.results.iter().all(Result::is_ok));
    assert_eq!(inner_blocks.load(SeqCst), 12);
}

/// Panics when dropped (once armed by being moved into a closure).
struct KindsBomb;
impl Drop for KindsBomb {
    fn drop(&mut self) {
        panic!("the closure's capture");
    }
}

/// Promise (`demo::kinds`'s trampoline: "Nothing may unwind into C:
/// restore never panics, and the closure's panic is caught"; the route
/// module of `traverse` catches exactly this case: "a panic from dropping
/// an orphaned state when the guard is released"): a function of a
/// `demo::kinds::Table` that unrefs its own handle (found through the
/// leak report; `unref` is safe and names no type) leaves the value
/// orphaned, so the trampoline's guard drops the closure when it is
/// released, and it was released *outside* the trampoline's
/// `catch_unwind`: a capture whose `Drop` panics unwound into C and the
/// process aborted. Run in a child. Found by this review, fixed: the
/// restore, the call and the release are all inside the catch, and the
/// call reports the caught panic.
#[test]
fn a_kinds_function_that_unrefs_itself_does_not_abort() {
    if !in_child("a_kinds_function_that_unrefs_itself_does_not_abort") {
        return;
    }
    let mut table = handle_registry::demo::kinds::Table::new();
    let bomb = KindsBomb;
    table
        .create_function(&["self_unref"], move |x| {
            let _keep = &bomb;
            let report = Registry::global().leak_report();
            let mine: Vec<_> = report
                .entries()
                .iter()
                .filter(|e| e.type_name().contains("FnMut(i32) -> i32"))
                .collect();
            assert_eq!(mine.len(), 1, "{report}");
            handle_registry::unref(mine[0].handle()).unwrap();
            x + 1
        })
        .unwrap();
    let out = table.call("self_unref", 1);
    assert_eq!(
        out,
        Err(handle_registry::demo::kinds::KindsError::Callback(
            handle_registry::Error::Panicked
        ))
    );
    drop(table); // C's destroy-notify meets a stale handle: ignored
}
