//! Adversarial review of parked borrows (`src/parked.rs`), through the
//! public API only, as another crate would use it.
//!
//! A thread parks a handle after `STREAK` restores of it in a row (1024;
//! 4 under Miri, where the crate lowers it), and its next restore enters
//! the parked borrow and makes the handle its hot handle. Every test
//! compares what a parked (and hot) handle answers with what a handle that
//! never parked answers on a fresh thread, and counts drops.
//!
//! Every test holds `SERIAL`: answers for forged integers depend on which
//! registry ids are live, and the race tests want both CPUs.

use handle_registry::{Error, Registry};
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Restores in a row after which a thread parks a handle.
const STREAK: usize = if cfg!(miri) { 4 } else { 1024 };

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts the process with a message if the test is not done in 20 s
/// (nothing under Miri, whose clock is not the test's).
struct Watchdog(Arc<AtomicBool>);

fn watchdog(name: &'static str) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    if !cfg!(miri) {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(SeqCst) {
                if start.elapsed() > Duration::from_secs(20) {
                    eprintln!("watchdog: {name} still running after 20 s: hung");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

fn pp(a: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(a)
}

/// The index bits of a handle (layout in the notes of
/// `handle_registry::handle`: 24 bits on 64-bit targets, 16 on 32-bit).
fn index(p: *mut c_void) -> usize {
    let bits = if cfg!(target_pointer_width = "64") {
        24
    } else {
        16
    };
    p as usize & ((1 << bits) - 1)
}

/// A value that counts its drops and sees two `&mut` at once.
struct Val {
    n: u64,
    inside: AtomicBool,
    drops: Arc<AtomicUsize>,
}

impl Val {
    fn new() -> (Val, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        let v = Val {
            n: 0,
            inside: AtomicBool::new(false),
            drops: drops.clone(),
        };
        (v, drops)
    }

    fn bump(&mut self) {
        assert!(!self.inside.swap(true, SeqCst), "two &mut at once");
        self.n += 1;
        self.inside.store(false, SeqCst);
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        assert!(!self.inside.load(SeqCst), "dropped while borrowed");
        self.drops.fetch_add(1, SeqCst);
    }
}

/// `STREAK + 1` restores: the handle ends parked by this thread and hot.
fn heat<T: std::any::Any + Send>(r: &Registry, p: *mut c_void) {
    for _ in 0..=STREAK {
        drop(r.restore::<T>(p).expect("heat"));
    }
}

fn global() -> &'static Registry {
    Registry::global()
}

// ---------------------------------------------------------------------------
// The stale hot handle.

/// One owner thread, `attempts` times: makes `h` hot, takes it, saves the
/// next value in the same slot and parks it (without entering it, so `h`
/// stays hot), then restores the stale `h` while another thread unrefs
/// the new value. Returns how many new values were never dropped.
fn stale_hot_race(r: &'static Registry, with: bool, budget: Duration) -> (usize, usize) {
    let go = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let unreffer = {
        let (go, done, target) = (go.clone(), done.clone(), target.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            loop {
                let g = loop {
                    let g = go.load(SeqCst);
                    if g != seen {
                        break g;
                    }
                    std::hint::spin_loop();
                };
                if g == usize::MAX {
                    return;
                }
                seen = g;
                r.unref(pp(target.load(SeqCst))).unwrap();
                done.store(g, SeqCst);
            }
        })
    };
    let start = Instant::now();
    let (mut attempts, mut leaks) = (0, 0);
    while start.elapsed() < budget && leaks == 0 {
        attempts += 1;
        let (v, first) = Val::new();
        let h = r.save(v);
        heat::<Val>(r, h); // `h` is hot
        drop(r.take::<Val>(h).unwrap());
        let (v, dropped) = Val::new();
        let h2 = r.save(v);
        if index(h2) != index(h) {
            r.unref(h2).unwrap();
            continue;
        }
        // Exactly a streak: the last release parks `h2`, nothing enters it.
        for _ in 0..STREAK {
            drop(r.restore::<Val>(h2).unwrap());
        }
        target.store(h2 as usize, SeqCst);
        go.store(attempts, SeqCst);
        // Sweep the delay across the unref's barrier (a few µs).
        let delay = Duration::from_nanos((attempts as u64 * 37) % 8000);
        let t0 = Instant::now();
        while t0.elapsed() < delay {
            std::hint::spin_loop();
        }
        let stale = if with {
            r.restore_with(h, |v: &mut Val| v.bump()).err()
        } else {
            r.restore::<Val>(h).err()
        };
        assert_eq!(stale, Some(Error::Stale));
        while done.load(SeqCst) != attempts {
            std::hint::spin_loop();
        }
        assert_eq!(first.load(SeqCst), 1);
        if dropped.load(SeqCst) != 1 {
            // Not late: nothing will ever drop it.
            std::thread::sleep(Duration::from_millis(20));
            if dropped.load(SeqCst) == 0 {
                assert_eq!(r.restore::<Val>(h2).err(), Some(Error::Stale));
                leaks += 1;
            }
        }
    }
    go.store(usize::MAX, SeqCst);
    unreffer.join().unwrap();
    (attempts, leaks)
}

// Attacks "never lost": a stale `restore` of this thread's hot handle
// lists the slot in its record while another thread unrefs the slot's next
// value, which this thread has parked; the unref leaves the drop to the
// owner, whose leave does not do it (another generation).
#[test]
fn stale_hot_restore_racing_an_unref_of_the_slots_next_value_drops_it() {
    let _s = serial();
    let _w = watchdog("stale_hot_restore_racing_an_unref_of_the_slots_next_value_drops_it");
    let r: &'static Registry = Box::leak(Box::new(Registry::new()));
    let budget = Duration::from_millis(if cfg!(miri) { 0 } else { 4000 });
    let (attempts, leaks) = stale_hot_race(r, false, budget);
    assert_eq!(leaks, 0, "a value never dropped after {attempts} attempts");
}

// The same through `restore_with` and the global registry's hot handle,
// whose leaked value stays in the process for good.
#[test]
fn stale_hot_restore_with_racing_an_unref_of_the_slots_next_value_drops_it() {
    let _s = serial();
    let _w = watchdog("stale_hot_restore_with_racing_an_unref_of_the_slots_next_value_drops_it");
    let budget = Duration::from_millis(if cfg!(miri) { 0 } else { 4000 });
    let (attempts, leaks) = stale_hot_race(global(), true, budget);
    assert_eq!(leaks, 0, "a value never dropped after {attempts} attempts");
}
