//! `native/traverse_static.c`, the crate's C traversal whose callbacks get
//! no `user_data`, driven through static trampolines.
#![cfg(not(miri))]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

use handle_registry::demo::static_native::{traverse_file, TraverseError, MAX_DEPTH};
use handle_registry::panic::message;
use proptest::prelude::*;

/// A file under the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hr-static-native-{}-{}.txt",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Start(i32),
    End(i32, i32),
}

/// What the C traversal should report for `bytes`: the events up to the
/// first error, and the result.
fn model(bytes: &[u8]) -> (Vec<Event>, Result<(), TraverseError>) {
    let (mut events, mut open) = (Vec::new(), Vec::new());
    for (at, &b) in bytes.iter().enumerate() {
        let at = at as i32;
        match b {
            b'{' if open.len() == MAX_DEPTH => return (events, Err(TraverseError::TooDeep)),
            b'{' => {
                events.push(Event::Start(open.len() as i32));
                open.push(at);
            }
            b'}' => match open.pop() {
                Some(o) => events.push(Event::End(o, at)),
                None => return (events, Err(TraverseError::Unbalanced)),
            },
            _ => {}
        }
    }
    let result = if open.is_empty() {
        Ok(())
    } else {
        Err(TraverseError::Unbalanced)
    };
    (events, result)
}

/// Runs the C traversal over `bytes`, recording its events in order.
fn run(bytes: &[u8]) -> (Vec<Event>, Result<(), TraverseError>) {
    let file = TempFile::new(bytes);
    let events = std::sync::Mutex::new(Vec::new());
    let result = traverse_file(
        &file.0,
        |depth| events.lock().unwrap().push(Event::Start(depth)),
        |open, close| events.lock().unwrap().push(Event::End(open, close)),
    );
    (events.into_inner().unwrap(), result)
}

#[test]
fn reports_every_block_in_file_order() {
    let text = b"fn main() { if x { y } else { z } }\n{}";
    let (events, result) = run(text);
    assert_eq!(result, Ok(()));
    assert_eq!(
        events,
        [
            Event::Start(0),
            Event::Start(1),
            Event::End(17, 21),
            Event::Start(1),
            Event::End(28, 32),
            Event::End(10, 34),
            Event::Start(0),
            Event::End(36, 37),
        ]
    );
    assert_eq!((events, result), model(text));
}

#[test]
fn errors_are_reported_after_the_events_before_them() {
    for text in [&b"{ } }"[..], b"{ { }", b"", b"no braces"] {
        assert_eq!(
            run(text),
            model(text),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    let mut deep = vec![b'{'; MAX_DEPTH];
    deep.extend(vec![b'}'; MAX_DEPTH]);
    assert_eq!(run(&deep).1, Ok(()));
    deep.insert(0, b'{');
    assert_eq!(run(&deep), model(&deep));
    assert_eq!(run(&deep).1, Err(TraverseError::TooDeep));
}

#[test]
fn missing_file_and_directory_are_io_errors() {
    let missing = std::env::temp_dir().join("hr-static-native-does-not-exist");
    assert_eq!(
        traverse_file(&missing, |_| {}, |_, _| {}),
        Err(TraverseError::Io)
    );
    // fopen succeeds on a directory on Linux; reading it fails.
    #[cfg(target_os = "linux")]
    assert_eq!(
        traverse_file(std::env::temp_dir(), |_| {}, |_, _| {}),
        Err(TraverseError::Io)
    );
}

#[test]
fn files_larger_than_a_chunk_keep_their_offsets() {
    // 4096-byte chunks on the C side: blocks straddle their edges.
    let mut text = Vec::new();
    for i in 0..3000 {
        text.extend_from_slice(if i % 3 == 0 { b"{ab" } else { b"}{x}" });
    }
    text.resize(text.len() + 1000, b'}');
    assert_eq!(run(&text), model(&text));
}

#[test]
fn four_traversals_at_once_on_four_threads_keep_their_state() {
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let barrier = &barrier;
            s.spawn(move || {
                // A different shape per thread: t + 1 nested blocks, t + 2 times.
                let block = format!("{}{}", "{".repeat(t + 1), "}".repeat(t + 1));
                let text = block.repeat(t + 2);
                let file = TempFile::new(text.as_bytes());
                let (mut starts, mut ends, mut first) = (Vec::new(), Vec::new(), true);
                traverse_file(
                    &file.0,
                    |depth| {
                        if std::mem::take(&mut first) {
                            // All four are inside the C call before any goes on.
                            barrier.wait();
                        }
                        starts.push(depth);
                    },
                    |open, close| ends.push((open, close)),
                )
                .unwrap();
                let (events, result) = model(text.as_bytes());
                assert_eq!(result, Ok(()));
                let want_starts: Vec<i32> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Start(d) => Some(*d),
                        Event::End(..) => None,
                    })
                    .collect();
                assert_eq!(starts, want_starts, "thread {t}");
                assert_eq!(ends.len(), (t + 1) * (t + 2), "thread {t}");
            });
        }
    });
}

#[test]
fn panic_in_a_callback_skips_the_rest_and_is_resumed() {
    let file = TempFile::new(b"{}{}{}{}");
    let mut ends = 0;
    let mut starts = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        traverse_file(
            &file.0,
            |_| starts += 1,
            |_, _| {
                ends += 1;
                if ends == 2 {
                    panic!("second block");
                }
            },
        )
    }))
    .unwrap_err();
    assert_eq!(message(&*caught), Some("second block"));
    // The C side read the whole file; only the panicking closure's calls
    // were skipped.
    assert_eq!((starts, ends), (4, 2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_match_the_model(bytes in proptest::collection::vec(
        prop_oneof![Just(b'{'), Just(b'}'), Just(b'x'), Just(b'\n'), any::<u8>()],
        0..300,
    )) {
        prop_assert_eq!(run(&bytes), model(&bytes));
    }
}

/// Needs a sparse file of 2 GiB and a full read of it: run by hand with
/// `cargo test --test static_native -- --ignored`.
#[test]
#[ignore = "reads a 2 GiB sparse file"]
fn file_past_int_max_is_too_large() {
    let file = TempFile::new(b"{}");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .unwrap();
    f.set_len(i32::MAX as u64 + 1).unwrap();
    let mut blocks = 0;
    let result = traverse_file(&file.0, |_| {}, |_, _| blocks += 1);
    assert_eq!((blocks, result), (1, Err(TraverseError::TooLarge)));
}
