//! End to end: a C library (native/traverse.c) calling Rust back through
//! the registry, in every shape the crate supports.
//!
//! ```text
//! cargo run --release --example demo [FILE...]
//! ```
//!
//! With no arguments it reads the bundled samples in `examples/data/`.

use std::collections::HashSet;
use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use handle_registry::demo::traverse::{
    ignored_callbacks, publish, publish_on_c_thread, repeat_start, subscribe, trampoline_entries,
    traverse, traverse_file, traverse_file_mut, traverse_file_with, traverse_files_parallel,
    Callbacks, Subscription, SyncVisitor, Visitor,
};
use handle_registry::{demo::ffi, Registry};

fn main() {
    let files = input_files();
    section("1. The seed: traverse(filename, cbs, user_data)");
    seed();
    for file in &files {
        section(&format!("2. Reading {}", shown(file)));
        blocks_with_a_visitor(file);
        blocks_with_closures(file);
    }
    section("3. All files at once, one C thread each, one shared visitor");
    parallel(&files);
    section("4. Later: callbacks kept by C, then unregistered");
    late(first_good(&files));
    section("5. Cost of one callback from C (release build, best of 5)");
    cost_table();
    let live = Registry::global().len();
    println!("\nlive handles left in the registry: {live}");
}

fn input_files() -> Vec<PathBuf> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if !args.is_empty() {
        return args;
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    ["server.conf", "module.c.txt", "truncated.conf"]
        .iter()
        .map(|name| data.join(name))
        .collect()
}

/// The first file that traverses cleanly: the late calls need events.
fn first_good(files: &[PathBuf]) -> &Path {
    struct Nothing;
    impl Visitor for Nothing {}
    files
        .iter()
        .find(|file| traverse_file(file, Nothing).is_ok())
        .unwrap_or(&files[0])
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// The path relative to the crate when it is inside it: shorter, and the
/// same on every machine.
fn shown(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Prints each event as C reports it.
struct Printer;

impl Visitor for Printer {
    fn start(&mut self, i: i32) {
        println!("  start(user_data, {i})");
    }

    fn end(&mut self, a: i32, b: i32) {
        println!("  end(user_data, {a}, {b})");
    }
}

fn seed() {
    traverse(c"unused.txt", Printer).expect("the seed cannot fail");
}

/// Rebuilds the block tree from the events: depth from `start`, offsets
/// from `end`.
#[derive(Default)]
struct Outline {
    open_depths: Vec<i32>,
    blocks: Vec<(i32, i32, i32)>,
}

impl Visitor for Outline {
    fn start(&mut self, depth: i32) {
        self.open_depths.push(depth);
    }

    fn end(&mut self, open: i32, close: i32) {
        let depth = self.open_depths.pop().unwrap_or(0);
        self.blocks.push((depth, open, close));
    }
}

fn blocks_with_a_visitor(file: &Path) {
    println!("Visitor (traverse_file_mut: the caller keeps it, even on error):");
    let text = std::fs::read(file).unwrap_or_default();
    let mut outline = Outline::default();
    let result = traverse_file_mut(file, &mut outline);
    outline.blocks.sort_by_key(|&(_, open, _)| open);
    let has_blocks = !outline.blocks.is_empty();
    for (depth, open, close) in outline.blocks {
        let indent = "  ".repeat(depth.max(1) as usize - 1);
        let label = format!("{indent}{} {{ }}", label_before(&text, open));
        println!("  {label:<36} bytes {open}..={close}");
    }
    match result {
        Ok(()) => {}
        Err(e) if has_blocks => println!("  error: {e} (the blocks above closed before it)"),
        Err(e) => println!("  error: {e}"),
    }
}

/// The text before the `{` at `open`, on its line: "server", "location /".
fn label_before(text: &[u8], open: i32) -> String {
    let before = &text[..open as usize];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let label = String::from_utf8_lossy(&before[line_start..]);
    let label = label.trim();
    let label = label.rsplit(['{', '}', ';']).next().unwrap_or("").trim();
    if label.is_empty() {
        "(block)".to_owned()
    } else {
        label.to_owned()
    }
}

fn blocks_with_closures(file: &Path) {
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&closed);
    let callbacks = Callbacks {
        start: None, // NULL for C: it never calls Rust for block openings
        end: Some(Box::new(move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
        })),
    };
    let entries = trampoline_entries();
    let result = traverse_file_with(file, callbacks);
    let entered = trampoline_entries() - entries;
    let blocks = closed.load(Ordering::Relaxed);
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    println!("Callbacks {{ start: None, end: Some(..) }}: {outcome}");
    println!("  blocks closed: {blocks}, calls into Rust: {entered} (C skipped every NULL start)");
}

/// Shared by every C thread at once: atomics and a lock, no `&mut`.
#[derive(Default)]
struct Census {
    opened: AtomicUsize,
    closed: AtomicUsize,
    threads: Mutex<HashSet<ThreadId>>,
}

impl SyncVisitor for Census {
    fn start(&self, _depth: i32) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.insert(std::thread::current().id());
    }

    fn end(&self, _open: i32, _close: i32) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn parallel(files: &[PathBuf]) {
    match traverse_files_parallel(files, Census::default()) {
        Ok(done) => {
            for (file, result) in files.iter().zip(&done.results) {
                match result {
                    Ok(()) => println!("  {:<32} ok", shown(file)),
                    Err(e) => println!("  {:<32} error: {e}", shown(file)),
                }
            }
            let census = done.visitor;
            let threads = census
                .threads
                .into_inner()
                .unwrap_or_else(|p| p.into_inner());
            let main_too = threads.contains(&std::thread::current().id());
            println!(
                "  total: {} blocks opened, {} closed, reported from {} C thread(s){}",
                census.opened.into_inner(),
                census.closed.into_inner(),
                threads.len(),
                if main_too {
                    ", main among them"
                } else {
                    ", none of them main"
                },
            );
        }
        Err(e) => println!("  error: {e}"),
    }
}

fn late(file: &Path) {
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let listener = subscribe(Callbacks::new().on_start(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }))
    .expect("a subscription slot");
    println!(
        "subscribed as id {}; subscribe() has returned",
        listener.id()
    );
    if let Err(e) = publish(file).and_then(|()| publish_on_c_thread(file)) {
        println!("  publishing {}: {e}", shown(file));
    }
    let seen = opened.load(Ordering::Relaxed);
    println!("  publish() on main, then on a C thread: the kept closure saw {seen} block openings");

    // C's unsubscribe does not wait for a publication already running on
    // its copy of the table. Here `first` drops `second` during one.
    let second_calls = Arc::new(AtomicUsize::new(0));
    let second_slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let dropper = Arc::clone(&second_slot);
    let first = subscribe(Callbacks::new().on_start(move |_| {
        dropper.lock().unwrap_or_else(|p| p.into_inner()).take();
    }))
    .expect("a subscription slot");
    let calls = Arc::clone(&second_calls);
    let second = subscribe(Callbacks::new().on_start(move |_| {
        calls.fetch_add(1, Ordering::Relaxed);
    }))
    .expect("a subscription slot");
    let kept = (second.c_callbacks(), second.user_data());
    *second_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(second);

    let ignored = ignored_callbacks();
    let _ = publish_on_c_thread(file);
    println!(
        "  a subscriber dropped another at the first event: C still called the dropped one {} times late;",
        ignored_callbacks() - ignored
    );
    println!(
        "  each resolved to a stale handle and was ignored (its closure ran {} times)",
        second_calls.load(Ordering::Relaxed)
    );

    // Gone for good, even if the file had no event to trigger the drop.
    drop(second_slot.lock().unwrap_or_else(|p| p.into_inner()).take());
    let ignored = ignored_callbacks();
    // SAFETY: the trampolines accept any user_data, stale included: this is
    // the call a C library that kept a copy would make.
    unsafe { ffi::traverse(std::ptr::null_mut(), kept.0, kept.1) };
    println!(
        "  a kept copy of (cbs, user_data) called after unregistering: {} call ignored",
        ignored_callbacks() - ignored
    );
    drop((first, listener));
}

const CALLS: i64 = 1_000_000;

extern "C" fn direct_start(user_data: *mut c_void, i: c_int) {
    // SAFETY: `cost_table` passes a pointer to a live u64 that nothing else
    // touches while C runs: the unchecked pattern this crate replaces.
    let total = unsafe { &mut *user_data.cast::<u64>() };
    *total = total.wrapping_add(i as u64);
}

extern "C" fn exclusive_start(user_data: *mut c_void, i: c_int) {
    if let Ok(mut total) = handle_registry::restore::<u64>(user_data) {
        *total = total.wrapping_add(i as u64);
    }
}

extern "C" fn shared_start(user_data: *mut c_void, i: c_int) {
    if let Ok(total) = handle_registry::restore_ref::<AtomicU64>(user_data) {
        total.fetch_add(i as u64, Ordering::Relaxed);
    }
}

struct Sum(u64);

impl Visitor for Sum {
    fn start(&mut self, i: i32) {
        self.0 = self.0.wrapping_add(i as u64);
    }
}

/// Best of five runs of `CALLS` callbacks, in nanoseconds per call.
fn per_call(mut run: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO)
        .as_nanos() as f64
        / CALLS as f64
}

fn bench(start: extern "C" fn(*mut c_void, c_int), user_data: *mut c_void) {
    let cbs = ffi::Callbacks {
        start: Some(start),
        end: None,
    };
    // SAFETY: each `start` passed here accepts the `user_data` passed with
    // it (see `cost_table`), on this thread.
    unsafe { ffi::traverse_bench_start(cbs, user_data, CALLS) };
}

fn cost_table() {
    let mut raw_total = 0u64;
    let direct = per_call(|| bench(direct_start, (&raw mut raw_total).cast()));

    let exclusive_handle = handle_registry::Handle::new(0u64);
    let exclusive = per_call(|| bench(exclusive_start, exclusive_handle.as_ptr()));

    let lent_handle = handle_registry::Handle::new(0u64);
    let lent = per_call(|| {
        let user_data = lent_handle.as_ptr();
        let lend =
            Registry::global().lend::<u64, _>(user_data, || bench(exclusive_start, user_data));
        lend.expect("nobody else borrows it");
    });

    let shared_handle = handle_registry::Handle::new(AtomicU64::new(0));
    let shared = per_call(|| bench(shared_start, shared_handle.as_ptr()));

    let mut sum = Some(Sum(0));
    let visitor = per_call(|| {
        let visitor = sum.take().unwrap_or(Sum(0));
        sum = repeat_start(visitor, CALLS).ok();
    });

    let expected = (CALLS * (CALLS - 1) / 2) as u64 * 5;
    let exclusive_total = exclusive_handle.into_inner().unwrap_or(0);
    let lent_total = lent_handle.into_inner().unwrap_or(0);
    let shared_total = shared_handle.into_inner().map_or(0, AtomicU64::into_inner);
    let visitor_total = sum.map_or(0, |s| s.0);
    assert_eq!(
        [
            raw_total,
            exclusive_total,
            lent_total,
            shared_total,
            visitor_total
        ],
        [expected; 5],
        "every callback must have arrived"
    );

    println!("  {:<58} {:>7}", "path", "ns/call");
    let rows = [
        ("direct pointer (raw *mut u64, unchecked)", direct),
        ("registry restore (exclusive guard)", exclusive),
        (
            "registry restore inside Registry::lend (synchronous call)",
            lent,
        ),
        ("registry restore_ref (shared guard)", shared),
        (
            "traverse::Visitor trampoline (+ panic catch, entry count)",
            visitor,
        ),
    ];
    for (path, ns) in rows {
        println!("  {path:<58} {ns:>7.1}");
    }
}
