//! Helpers shared by the pure-Rust integration tests (`adversarial`,
//! `adversarial_round2`, `readers`, `teardown` and others), each of which includes
//! this file with `mod common;`. Not a test binary of its own.
//!
//! Each test binary uses only some of these, hence the `dead_code` allow.
#![allow(dead_code)]

use std::any::Any;
use std::ffi::c_void;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A handle's integer as the `void*` a C caller would pass.
pub fn ptr(p: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(p)
}

/// How many low bits of a handle hold its slot index + 1 (README, "Handle
/// layout"): 24 on 64-bit targets, 16 on 32-bit ones.
pub const INDEX_BITS: u32 = if usize::BITS == 32 { 16 } else { 24 };
/// A handle's slot-index bits: two live handles never share them.
pub const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// `native` rounds in a native run, `miri` under Miri.
pub fn rounds(native: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// Runs a closure when dropped: the body of a thread-local destructor.
pub struct OnDrop(pub Option<Box<dyn FnOnce()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Counts its drops in the shared counter: proves a value is dropped
/// exactly once, never leaked, and on which side of a call.
#[derive(Debug)]
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts its drop in the shared counter, then panics with
/// [`PANIC_ON_DROP`], also while its thread unwinds (where an uncaught one
/// aborts the process): use it in a child process (`in_child`) wherever an
/// unwind may drop it.
#[derive(Debug)]
pub struct PanicOnDrop(pub Arc<AtomicUsize>);

/// The message a dropped [`PanicOnDrop`] panics with.
pub const PANIC_ON_DROP: &str = "PanicOnDrop dropped";

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::panic::panic_any(PANIC_ON_DROP);
    }
}

/// A panic payload that panics when dropped, `n` levels deep: each drop
/// panics with `NestedPanic(n - 1)`, down to 0.
#[derive(Debug)]
pub struct NestedPanic(pub u32);

impl Drop for NestedPanic {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::panic::panic_any(NestedPanic(self.0 - 1));
        }
    }
}

/// A panic payload's text, or `"<not a string>"`. Pass `&*payload`: a
/// `&Box<dyn Any + Send>` would coerce to the box itself as the `Any`.
pub fn payload_text(payload: &(dyn Any + Send)) -> &str {
    handle_registry::panic::message(payload).unwrap_or("<not a string>")
}

/// Drops a payload whose `Drop` may panic, level after level, as a taker
/// of a resumed panic must; returns how many levels panicked.
pub fn drain(payload: Box<dyn Any + Send>) -> u32 {
    let mut payload = payload;
    let mut levels = 0;
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload))) {
            Ok(()) => return levels,
            Err(next) => {
                levels += 1;
                payload = next;
            }
        }
    }
}

/// Spins until `done()` holds, yielding after the first few hundred
/// spins (under Miri, whose threads take turns, at once). A pure spin on a
/// core it shares with the thread it waits for waits out a time slice per
/// hand-off: a 20 000-round ping-pong ran past the [`watchdog`] on a
/// loaded machine.
pub fn spin_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0;
    while !done() {
        if spins < 256 && !cfg!(miri) {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Aborts the process with `what` if not dropped within 20 s.
pub struct Watchdog(
    Option<mpsc::Sender<()>>,
    Option<std::thread::JoinHandle<()>>,
);

/// A [`Watchdog`] for the test `what` (off under Miri, which reports
/// deadlocks itself).
pub fn watchdog(what: &'static str) -> Watchdog {
    if cfg!(miri) {
        return Watchdog(None, None);
    }
    let (tx, rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(20)) {
            // Not `eprintln!`: the test harness captures that, also from
            // threads the test spawned, and the abort would lose it.
            let _ = writeln!(
                std::io::stderr(),
                "WATCHDOG: `{what}` hung for 20 s (deadlock?); aborting"
            );
            std::process::abort();
        }
    });
    Watchdog(Some(tx), Some(t))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.take());
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// Runs the test `name` in a child process (so that an abort is a test
/// failure, not the end of the harness) and asserts it succeeded. Returns
/// `true` in the child, where the caller runs the body itself; under Miri
/// (no processes) it returns `true` too.
pub fn in_child(name: &str) -> bool {
    if cfg!(miri) || std::env::var("HANDLE_REGISTRY_TEST_CHILD").as_deref() == Ok(name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HANDLE_REGISTRY_TEST_CHILD", name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child process failed ({:?}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
