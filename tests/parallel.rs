//! C threads calling one shared visitor concurrently.
#![cfg(not(miri))]

mod traverse_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use handle_registry::demo::ffi::TRAVERSE_MAX_FILES;
use handle_registry::demo::traverse::{traverse_files_parallel, SyncVisitor, TraverseError};
use traverse_support::{nested_pairs, TempFile};

#[derive(Default)]
struct Totals {
    starts: AtomicUsize,
    ends: AtomicUsize,
    /// Sum of (close - open) over all blocks: catches swapped or lost
    /// arguments, not only lost calls.
    spans: AtomicI64,
    threads: Mutex<HashSet<ThreadId>>,
}

impl SyncVisitor for Totals {
    fn start(&self, _depth: i32) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
    }

    fn end(&self, open: i32, close: i32) {
        self.ends.fetch_add(1, Ordering::Relaxed);
        self.spans
            .fetch_add(i64::from(close - open), Ordering::Relaxed);
    }
}

#[test]
fn totals_are_exact_across_c_threads() {
    const FILES: usize = 8;
    const PAIRS: usize = 2_000;
    let files: Vec<_> = (0..FILES)
        .map(|_| TempFile::new(nested_pairs(PAIRS)))
        .collect();
    let paths: Vec<_> = files.iter().map(TempFile::path).collect();
    for _round in 0..3 {
        let done = traverse_files_parallel(&paths, Totals::default()).unwrap();
        assert!(done.results.iter().all(Result::is_ok));
        let totals = done.visitor;
        assert_eq!(totals.starts.into_inner(), FILES * PAIRS * 2);
        assert_eq!(totals.ends.into_inner(), FILES * PAIRS * 2);
        // "{ {} }": the inner block spans 1 byte, the outer 5.
        assert_eq!(totals.spans.into_inner(), (FILES * PAIRS * 6) as i64);
        let threads = totals.threads.into_inner().unwrap();
        assert_eq!(threads.len(), FILES, "one C thread per file");
        assert!(!threads.contains(&std::thread::current().id()));
    }
}

/// Holds every file's first callback until all files are inside one at
/// the same time: only possible if the shared path lets C threads in
/// concurrently (an exclusive borrow would serialise them and time out).
struct Rendezvous {
    expected: usize,
    inside: Mutex<usize>,
    all_in: Condvar,
    met: AtomicUsize,
}

impl SyncVisitor for Rendezvous {
    fn start(&self, depth: i32) {
        if depth != 1 {
            return;
        }
        let mut inside = self.inside.lock().unwrap();
        *inside += 1;
        self.all_in.notify_all();
        let (inside, timeout) = self
            .all_in
            .wait_timeout_while(inside, Duration::from_secs(30), |n| *n < self.expected)
            .unwrap();
        if !timeout.timed_out() && *inside >= self.expected {
            self.met.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn callbacks_from_different_c_threads_overlap() {
    const FILES: usize = 4;
    let files: Vec<_> = (0..FILES).map(|_| TempFile::new("{}")).collect();
    let paths: Vec<_> = files.iter().map(TempFile::path).collect();
    let rendezvous = Rendezvous {
        expected: FILES,
        inside: Mutex::new(0),
        all_in: Condvar::new(),
        met: AtomicUsize::new(0),
    };
    let done = traverse_files_parallel(&paths, rendezvous).unwrap();
    assert_eq!(done.visitor.met.into_inner(), FILES);
}

#[test]
fn each_file_has_its_own_result() {
    let good = TempFile::new("{}");
    let unclosed = TempFile::new("{");
    let binary = TempFile::new(b"\0\x01\x02");
    let missing = std::env::temp_dir().join("handle-registry-parallel-missing");
    let paths = [
        good.path(),
        unclosed.path(),
        missing.as_path(),
        binary.path(),
    ];
    let done = traverse_files_parallel(&paths, Totals::default()).unwrap();
    assert_eq!(
        done.results,
        [
            Ok(()),
            Err(TraverseError::Unclosed),
            Err(TraverseError::Open),
            Err(TraverseError::NotText)
        ]
    );
    assert_eq!(done.visitor.starts.into_inner(), 2);
    assert_eq!(done.visitor.ends.into_inner(), 1);
}

#[test]
fn limits_are_errors_before_any_thread_starts() {
    let file = TempFile::new("{}");
    let too_many = vec![file.path(); TRAVERSE_MAX_FILES as usize + 1];
    assert_eq!(
        traverse_files_parallel(&too_many, Totals::default()).err(),
        Some(TraverseError::TooManyFiles)
    );
    let at_limit = vec![file.path(); TRAVERSE_MAX_FILES as usize];
    let done = traverse_files_parallel(&at_limit, Totals::default()).unwrap();
    assert_eq!(
        done.visitor.starts.into_inner(),
        TRAVERSE_MAX_FILES as usize
    );

    let none: [&std::path::Path; 0] = [];
    let done = traverse_files_parallel(&none, Totals::default()).unwrap();
    assert!(done.results.is_empty());
    assert_eq!(
        traverse_files_parallel(&["nul\0in path"], Totals::default()).err(),
        Some(TraverseError::InvalidPath)
    );
}

#[test]
fn an_arc_visitor_stays_with_the_caller() {
    let file = TempFile::new("{}{}");
    let totals = Arc::new(Totals::default());
    let done = traverse_files_parallel(&[file.path(), file.path()], Arc::clone(&totals)).unwrap();
    drop(done);
    assert_eq!(totals.ends.load(Ordering::Relaxed), 4);
}
