//! The C traverse library driven through the safe wrapper, on this thread.
#![cfg(not(miri))]

mod traverse_support;

use std::ffi::c_int;
use std::sync::{Arc, Mutex};

use handle_registry::demo::ffi::{TRAVERSE_MAX_DEPTH, TRAVERSE_OK};
use handle_registry::demo::traverse::{
    trampoline_entries, traverse, traverse_file, traverse_file_mut, traverse_file_with, Callbacks,
    TraverseError, Visitor,
};
use proptest::prelude::*;
use traverse_support::{expected, sample, Event, Recorder, TempFile};

#[test]
fn seed_reports_start_100_then_end_2_3() {
    let log = traverse(c"ignored.txt", Recorder::default()).unwrap();
    assert_eq!(log.0, [Event::Start(100), Event::End(2, 3)]);
}

#[test]
fn seed_with_closures() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (on_start, on_end) = (Arc::clone(&seen), Arc::clone(&seen));
    let callbacks = Callbacks::new()
        .on_start(move |i| on_start.lock().unwrap().push(Event::Start(i)))
        .on_end(move |a, b| on_end.lock().unwrap().push(Event::End(a, b)));
    traverse(c"ignored.txt", callbacks).unwrap();
    assert_eq!(*seen.lock().unwrap(), [Event::Start(100), Event::End(2, 3)]);
}

#[test]
fn blocks_are_reported_with_depth_and_offsets() {
    //                 0123456789012
    let file = TempFile::new("a{b{}c{d}}e{}");
    let log = traverse_file(file.path(), Recorder::default()).unwrap();
    use Event::*;
    assert_eq!(
        log.0,
        [
            Start(1),
            Start(2),
            End(3, 4),
            Start(2),
            End(6, 8),
            End(1, 9),
            Start(1),
            End(11, 12)
        ]
    );
}

#[test]
fn bundled_samples_match_the_model() {
    for name in ["server.conf", "module.c.txt", "truncated.conf"] {
        let bytes = std::fs::read(sample(name)).unwrap();
        let (events, result) = expected(&bytes);
        let mut log = Recorder::default();
        assert_eq!(traverse_file_mut(sample(name), &mut log), result, "{name}");
        assert_eq!(log.0, events, "{name}");
        assert!(!events.is_empty(), "{name} should show some blocks");
    }
}

#[test]
fn an_empty_file_has_no_events() {
    let file = TempFile::new("");
    assert!(traverse_file(file.path(), Recorder::default())
        .unwrap()
        .0
        .is_empty());
}

#[test]
fn missing_files_and_directories_are_errors() {
    let missing = std::env::temp_dir().join("handle-registry-no-such-file");
    assert_eq!(
        traverse_file(&missing, Recorder::default()).err(),
        Some(TraverseError::Open)
    );
    assert_eq!(
        traverse_file(std::env::temp_dir(), Recorder::default()).err(),
        Some(TraverseError::Read)
    );
    assert_eq!(
        traverse_file("bad\0path", Recorder::default()).err(),
        Some(TraverseError::InvalidPath)
    );
}

#[test]
fn malformed_files_report_the_events_before_the_fault() {
    let cases: [(&[u8], TraverseError, usize); 4] = [
        (b"{}}", TraverseError::UnmatchedClose, 2),
        (b"{{}", TraverseError::Unclosed, 3),
        (b"{\0}", TraverseError::NotText, 1),
        (b"\x7fELF\0\x01{}", TraverseError::NotText, 0),
    ];
    for (bytes, error, events_before) in cases {
        let file = TempFile::new(bytes);
        let mut log = Recorder::default();
        assert_eq!(traverse_file_mut(file.path(), &mut log), Err(error.clone()));
        assert_eq!(log.0.len(), events_before, "{error}");
        assert!(error.is_malformed());
    }
}

#[test]
fn nesting_is_capped_with_an_error_not_recursion() {
    let max = TRAVERSE_MAX_DEPTH as usize;
    let deepest = TempFile::new("{".repeat(max) + &"}".repeat(max));
    let log = traverse_file(deepest.path(), Recorder::default()).unwrap();
    assert_eq!(log.0.len(), 2 * max);
    assert_eq!(log.0[max - 1], Event::Start(TRAVERSE_MAX_DEPTH));

    let too_deep = TempFile::new("{".repeat(max + 1) + &"}".repeat(max + 1));
    let mut log = Recorder::default();
    assert_eq!(
        traverse_file_mut(too_deep.path(), &mut log),
        Err(TraverseError::TooDeep)
    );
    assert_eq!(log.0.len(), max);
}

#[test]
fn files_past_int_max_are_refused_before_reading() {
    let huge = TempFile::sparse(i32::MAX as u64 + 1);
    assert_eq!(
        traverse_file(huge.path(), Recorder::default()).err(),
        Some(TraverseError::TooLarge)
    );
    // Exactly INT_MAX bytes is allowed: its first (NUL) byte is the fault.
    let largest = TempFile::sparse(i32::MAX as u64);
    assert_eq!(
        traverse_file(largest.path(), Recorder::default()).err(),
        Some(TraverseError::NotText)
    );
}

#[test]
fn missing_closures_are_null_for_c_and_never_enter_rust() {
    let file = TempFile::new("{{}}{}"); // 3 starts, 3 ends
    let counting = |callbacks: Callbacks| {
        let before = trampoline_entries();
        traverse_file_with(file.path(), callbacks).unwrap();
        trampoline_entries() - before
    };
    let both = Callbacks::new().on_start(|_| {}).on_end(|_, _| {});
    assert_eq!(counting(both), 6);
    assert_eq!(counting(Callbacks::new().on_end(|_, _| {})), 3);
    assert_eq!(counting(Callbacks::new().on_start(|_| {})), 3);
    assert_eq!(counting(Callbacks::new()), 0);
}

#[test]
fn closures_get_their_state_back_to_the_caller() {
    let file = TempFile::new("{ { } }");
    let opened = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&opened);
    let back = traverse_file_with(
        file.path(),
        Callbacks::new().on_start(move |d| sink.lock().unwrap().push(d)),
    )
    .unwrap();
    assert!(back.start.is_some() && back.end.is_none());
    assert_eq!(*opened.lock().unwrap(), [1, 2]);
}

/// A visitor that starts another traversal from inside a callback: the
/// registry's lock is not held while callbacks run.
#[derive(Default)]
struct Nesting {
    inner_events: usize,
    path: std::path::PathBuf,
}

impl Visitor for Nesting {
    fn start(&mut self, _depth: i32) {
        let inner = traverse_file(&self.path, Recorder::default()).unwrap();
        self.inner_events += inner.0.len();
    }
}

#[test]
fn a_callback_may_start_another_traversal() {
    let file = TempFile::new("{}{}");
    let nesting = Nesting {
        inner_events: 0,
        path: file.path().to_owned(),
    };
    let done = traverse_file(file.path(), nesting).unwrap();
    assert_eq!(done.inner_events, 2 * 4);
}

#[test]
fn raw_c_agrees_with_the_wrapper() {
    let file = TempFile::new("{}");
    let name = std::ffi::CString::new(file.path().to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and NULL callbacks.
    let code: c_int = unsafe {
        handle_registry::demo::ffi::traverse_file(
            name.as_ptr(),
            handle_registry::demo::ffi::Callbacks::default(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(code, TRAVERSE_OK);
}

fn brace_heavy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'{'),
        4 => Just(b'}'),
        3 => Just(b' '),
        1 => Just(0u8),
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_input_gives_the_model_s_events_and_result(bytes in brace_heavy_bytes()) {
        let file = TempFile::new(&bytes);
        let (events, result) = expected(&bytes);
        let mut log = Recorder::default();
        prop_assert_eq!(traverse_file_mut(file.path(), &mut log), result);
        prop_assert_eq!(log.0, events);
    }
}

#[test]
fn offsets_run_on_across_read_chunks() {
    let text = traverse_support::nested_pairs(30_000); // about 210 KB
    let file = TempFile::new(&text);
    let (events, result) = expected(text.as_bytes());
    let mut log = Recorder::default();
    assert_eq!(traverse_file_mut(file.path(), &mut log), result);
    assert_eq!(log.0.len(), 4 * 30_000);
    assert_eq!(log.0, events);
}
