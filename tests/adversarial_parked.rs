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

mod common;

use common::{ptr, spin_until, watchdog, PanicOnDrop, INDEX_MASK};
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

/// The index bits of a handle.
fn index(p: *mut c_void) -> usize {
    p as usize & INDEX_MASK
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

/// Registries that live for the rest of the process and are not leaks:
/// Miri reports memory that no static reaches.
static KEPT: Mutex<Vec<&'static Registry>> = Mutex::new(Vec::new());

/// A private registry another thread may borrow for `'static`.
fn kept_registry() -> &'static Registry {
    let r: &'static Registry = Box::leak(Box::new(Registry::new()));
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    r
}

// ---------------------------------------------------------------------------
// The stale hot handle.

/// One owner thread, `attempts` times: makes `h` hot, takes it, saves the
/// next value in the same slot and parks it (without entering it, so `h`
/// stays hot), then restores the stale `h` while another thread unrefs
/// the new value. Returns how many new values were never dropped.
fn stale_hot_race(r: &'static Registry, with: bool) -> (usize, usize) {
    // Natively, a time budget and a sweep of delays; under Miri, a few
    // attempts, its scheduler's preemptions doing the sweeping.
    let (budget, max) = if cfg!(miri) {
        (Duration::MAX, 12)
    } else {
        (Duration::from_secs(4), usize::MAX)
    };
    let go = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let unreffer = {
        let (go, done, target) = (go.clone(), done.clone(), target.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            loop {
                let mut g = seen;
                spin_until(|| {
                    g = go.load(SeqCst);
                    g != seen
                });
                if g == usize::MAX {
                    return;
                }
                seen = g;
                r.unref(ptr(target.load(SeqCst))).unwrap();
                done.store(g, SeqCst);
            }
        })
    };
    let start = Instant::now();
    let (mut attempts, mut leaks) = (0, 0);
    while start.elapsed() < budget && attempts < max && leaks == 0 {
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
        if !cfg!(miri) {
            let delay = Duration::from_nanos((attempts as u64 * 37) % 8000);
            let t0 = Instant::now();
            while t0.elapsed() < delay {
                std::hint::spin_loop();
            }
        }
        let stale = if with {
            r.restore_with(h, |v: &mut Val| v.bump()).err()
        } else {
            r.restore::<Val>(h).err()
        };
        assert_eq!(stale, Some(Error::Stale));
        spin_until(|| done.load(SeqCst) == attempts);
        assert_eq!(first.load(SeqCst), 1);
        if dropped.load(SeqCst) != 1 {
            // Not late: nothing will ever drop it.
            std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
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
    let r: &'static Registry = kept_registry();
    let (attempts, leaks) = stale_hot_race(r, false);
    assert_eq!(leaks, 0, "a value never dropped after {attempts} attempts");
}

// The same through `restore_with` and the global registry's hot handle,
// whose leaked value stays in the process for good.
#[test]
fn stale_hot_restore_with_racing_an_unref_of_the_slots_next_value_drops_it() {
    let _s = serial();
    let _w = watchdog("stale_hot_restore_with_racing_an_unref_of_the_slots_next_value_drops_it");
    let (attempts, leaks) = stale_hot_race(global(), true);
    assert_eq!(leaks, 0, "a value never dropped after {attempts} attempts");
}

// ---------------------------------------------------------------------------
// Same answers parked or not.

/// One sequence of calls on `p`, a `Val` of `r` whose drops `drops`
/// counts; `warm` runs before each step while the value is live (it heats
/// the handle, or does nothing). Returns every answer, printed.
fn script(
    r: &Registry,
    p: *mut c_void,
    drops: &AtomicUsize,
    warm: &dyn Fn(&Registry, *mut c_void),
) -> Vec<String> {
    let mut out = Vec::new();
    warm(r, p);
    out.push(format!("{:?}", r.restore::<Val>(p).map(|mut g| g.bump())));
    warm(r, p);
    out.push(format!("{:?}", r.restore::<u64>(p).err()));
    warm(r, p);
    out.push(format!("{:?}", r.restore_with(p, |v: &mut u64| *v).err()));
    warm(r, p);
    out.push(format!("{:?}", r.restore_ref::<Val>(p).map(|g| g.n)));
    warm(r, p);
    out.push(format!("{:?}", r.restore_ref::<u8>(p).err()));
    warm(r, p);
    out.push(format!(
        "{:?} {:?} {:?}",
        r.check::<Val>(p),
        r.check::<u8>(p),
        r.ref_count(p)
    ));
    warm(r, p);
    {
        let mut g = r.restore::<Val>(p).unwrap();
        g.bump();
        out.push(format!("{:?}", r.restore::<Val>(p).err()));
        out.push(format!("{:?}", r.restore::<u64>(p).err()));
        out.push(format!("{:?}", r.restore_ref::<Val>(p).err()));
        out.push(format!("{:?}", r.take::<Val>(p).err()));
        out.push(format!("{:?}", r.restore_with(p, |v: &mut Val| v.n)));
        out.push(format!("{:?}", r.lend::<Val, _>(p, || ())));
        out.push(format!("{:?} {:?}", r.check::<Val>(p), r.ref_count(p)));
        out.push(format!("{:?} {:?}", r.retain(p), r.ref_count(p)));
        out.push(format!("{:?} {:?}", r.unref(p), r.ref_count(p)));
    }
    warm(r, p);
    out.push(format!("{:?}", r.restore_with(p, |v: &mut Val| v.n)));
    // Retained, then taken while parked.
    warm(r, p);
    out.push(format!("{:?}", r.retain(p)));
    out.push(format!("{:?}", r.take::<Val>(p).map(|v| v.n)));
    out.push(format!("{:?}", r.restore::<Val>(p).map(|g| g.n)));
    out.push(format!("{:?}", r.unref(p)));
    warm(r, p);
    {
        let g = r.restore::<Val>(p).unwrap();
        out.push(format!("{:?}", r.unref(p)));
        out.push(format!("{:?}", r.restore::<Val>(p).err()));
        out.push(format!("{:?}", r.check::<Val>(p)));
        out.push(format!("{:?}", r.unref(p)));
        out.push(format!("drops inside {}", drops.load(SeqCst)));
        drop(g);
        out.push(format!("drops after {}", drops.load(SeqCst)));
    }
    out.push(format!("{:?}", r.restore::<Val>(p).err()));
    out.push(format!("{:?}", r.restore_with(p, |v: &mut Val| v.n)));
    out.push(format!("{:?}", r.take::<Val>(p).err()));
    out.push(format!("{:?}", r.retain(p)));
    out.push(format!("{:?}", r.ref_count(p)));
    out.push(format!("{:?}", r.unref(p)));
    out.push(format!("drops {}", drops.load(SeqCst)));
    out
}

fn run_script(r: &'static Registry, parked: bool) -> Vec<String> {
    std::thread::spawn(move || {
        let (v, drops) = Val::new();
        let p = r.save(v);
        let warm: &dyn Fn(&Registry, *mut c_void) = if parked {
            &|r, p| heat::<Val>(r, p)
        } else {
            &|_, _| ()
        };
        script(r, p, &drops, warm)
    })
    .join()
    .unwrap()
}

// Attacks "the same answers as a handle that never parked": every call of
// `script` on a parked, hot handle (global registry) against a fresh one.
#[test]
fn a_parked_global_handle_answers_as_one_that_never_parked() {
    let _s = serial();
    let _w = watchdog("a_parked_global_handle_answers_as_one_that_never_parked");
    assert_eq!(run_script(global(), true), run_script(global(), false));
}

// The same on a private registry, whose hot handle is the shared entry.
#[test]
fn a_parked_private_handle_answers_as_one_that_never_parked() {
    let _s = serial();
    let _w = watchdog("a_parked_private_handle_answers_as_one_that_never_parked");
    let r: &'static Registry = kept_registry();
    assert_eq!(run_script(r, true), run_script(r, false));
}

/// Integers near `p`: every bit flipped, ±1, the extremes.
fn forged_near(p: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..usize::BITS).map(|b| p ^ (1 << b)).collect();
    v.extend([p + 1, p - 1, 0, 1, usize::MAX, p | 0xff, p & !0xffff]);
    v.retain(|&c| c != p);
    v
}

fn forged_answers(r: &Registry, cands: &[usize]) -> Vec<String> {
    cands
        .iter()
        .map(|&c| {
            format!(
                "{:#x}: {:?} {:?} {:?} {:?}",
                c,
                r.restore::<Val>(ptr(c)).map(|g| g.n),
                r.restore_with(ptr(c), |v: &mut Val| v.n),
                r.restore_ref::<Val>(ptr(c)).map(|g| g.n),
                r.check::<Val>(ptr(c))
            )
        })
        .collect()
}

// Attacks "no UB from any integer": integers next to this thread's hot
// handle (global and private) answer as on a thread with no hot handle,
// and the hot handle still works after each.
#[test]
fn forged_integers_next_to_hot_handles_answer_as_on_a_fresh_thread() {
    let _s = serial();
    let _w = watchdog("forged_integers_next_to_hot_handles_answer_as_on_a_fresh_thread");
    let private: &'static Registry = kept_registry();
    for r in [global(), private] {
        let (v, drops) = Val::new();
        let p = r.save(v);
        heat::<Val>(r, p);
        let cands = forged_near(p as usize);
        let here = forged_answers(r, &cands);
        let h = p as usize;
        let fresh = std::thread::spawn(move || forged_answers(r, &forged_near(h)))
            .join()
            .unwrap();
        assert_eq!(here, fresh);
        // Again from this thread, re-heated between each.
        for &c in &cands {
            heat::<Val>(r, p);
            let _ = r.restore::<Val>(ptr(c));
            let _ = r.restore_with(ptr(c), |v: &mut Val| v.n);
            r.restore::<Val>(p).unwrap().bump();
        }
        assert_eq!(r.take::<Val>(p).map(|v| v.n), Ok(cands.len() as u64));
        assert_eq!(drops.load(SeqCst), 1);
    }
}

// ---------------------------------------------------------------------------
// Removals while another thread has the handle parked.

// Attacks "dropped exactly once, on the last guard's thread": unref and
// take while the owner is parked outside (blocked on a channel) and while
// it is inside (holding a parked guard, blocked), round after round.
#[test]
fn unref_and_take_while_another_thread_has_it_parked() {
    let _s = serial();
    let _w = watchdog("unref_and_take_while_another_thread_has_it_parked");
    let rounds = if cfg!(miri) { 2 } else { 20 };
    for round in 0..rounds {
        let (v, drops) = Val::new();
        let h = handle_registry::save(v) as usize;
        let (to_owner, owner_rx) = mpsc::channel::<&'static str>();
        let (to_main, main_rx) = mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let p = ptr(h);
            heat::<Val>(global(), p);
            // Parked, outside.
            to_main.send(()).unwrap();
            if owner_rx.recv().unwrap() == "inside" {
                let mut g = handle_registry::restore::<Val>(p).unwrap();
                g.bump();
                to_main.send(()).unwrap();
                assert_eq!(owner_rx.recv().unwrap(), "leave");
                drop(g);
            }
            assert_eq!(owner_rx.recv().unwrap(), "removed");
            let after = handle_registry::restore::<Val>(p).err();
            to_main.send(()).unwrap();
            after
        });
        main_rx.recv().unwrap();
        match round % 4 {
            0 => {
                to_owner.send("outside").unwrap();
                assert_eq!(handle_registry::unref(ptr(h)), Ok(()));
                assert_eq!(
                    drops.load(SeqCst),
                    1,
                    "unref of a parked value, owner outside"
                );
            }
            1 => {
                to_owner.send("outside").unwrap();
                let v = handle_registry::take::<Val>(ptr(h)).unwrap();
                assert_eq!(v.n, 0);
            }
            2 => {
                to_owner.send("inside").unwrap();
                main_rx.recv().unwrap();
                // Never waits; the owner's leave drops it.
                assert_eq!(handle_registry::unref(ptr(h)), Ok(()));
                assert_eq!(handle_registry::unref(ptr(h)), Err(Error::Stale));
                assert_eq!(drops.load(SeqCst), 0);
                to_owner.send("leave").unwrap();
            }
            _ => {
                to_owner.send("inside").unwrap();
                main_rx.recv().unwrap();
                // Waits for the owner's leave.
                let stop = to_owner.clone();
                let leaver = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
                    stop.send("leave").unwrap();
                });
                let v = handle_registry::take::<Val>(ptr(h)).unwrap();
                assert_eq!(v.n, 1);
                leaver.join().unwrap();
            }
        }
        to_owner.send("removed").unwrap();
        main_rx.recv().unwrap();
        assert_eq!(owner.join().unwrap(), Some(Error::Stale));
        assert_eq!(drops.load(SeqCst), 1, "round {round}");
    }
}

// Attacks "never deadlocks, no update lost": two threads pass one handle
// back and forth in bursts long enough to park it, each burst stealing it
// from the other, mixing `restore`, `restore_with` and `restore_ref`.
#[test]
fn two_threads_ping_pong_one_parked_handle() {
    let _s = serial();
    let _w = watchdog("two_threads_ping_pong_one_parked_handle");
    let rounds = if cfg!(miri) { 3 } else { 40 };
    let burst = STREAK + 20;
    for r in [global(), kept_registry()] {
        let (v, drops) = Val::new();
        let h = r.save(v) as usize;
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    for round in 0..rounds {
                        // Alternate bursts, then overlap them.
                        if round % 2 == 0 {
                            barrier.wait();
                        }
                        for i in 0..burst {
                            match (i + t) % 7 {
                                0 => r.restore_with(ptr(h), |v: &mut Val| v.bump()).unwrap(),
                                1 => assert!(r.restore_ref::<Val>(ptr(h)).unwrap().n > 0 || i < 2),
                                _ => r.restore::<Val>(ptr(h)).unwrap().bump(),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let bumps_per_burst = (0..burst).filter(|i| i % 7 != 1).count()
            + (0..burst).filter(|i| (i + 1) % 7 != 1).count();
        assert_eq!(
            r.take::<Val>(ptr(h)).map(|v| v.n),
            Ok((rounds * bumps_per_burst) as u64)
        );
        assert_eq!(drops.load(SeqCst), 1);
    }
}

// ---------------------------------------------------------------------------
// Many parks, nested borrows, blocked and exiting owners.

// Attacks "never deadlocks": a thread parks 40 handles, then blocks inside
// nested parked guards of 10 of them (8 record entries, then real
// borrows); other threads take the 30 it is outside of at once and wait
// for the 10; the owner leaves in a scrambled order.
#[test]
fn steals_from_a_thread_parked_on_many_handles_and_blocked_inside_some() {
    let _s = serial();
    let _w = watchdog("steals_from_a_thread_parked_on_many_handles_and_blocked_inside_some");
    let (n, inside) = if cfg!(miri) { (12, 10) } else { (40, 10) };
    let r: &'static Registry = kept_registry();
    let mut drops = Vec::new();
    let hs: Vec<usize> = (0..n)
        .map(|_| {
            let (v, d) = Val::new();
            drops.push(d);
            r.save(v) as usize
        })
        .collect();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let owner = {
        let hs = hs.clone();
        std::thread::spawn(move || {
            for &h in &hs {
                heat::<Val>(r, ptr(h));
            }
            let mut guards: Vec<Option<_>> = hs[..inside]
                .iter()
                .map(|&h| {
                    let mut g = r.restore::<Val>(ptr(h)).unwrap();
                    g.bump();
                    Some(g)
                })
                .collect();
            // Nested: every other handle is Busy from inside.
            for &h in &hs[..inside] {
                assert_eq!(r.restore::<Val>(ptr(h)).err(), Some(Error::Busy));
            }
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            for i in [3, 0, 9, 1, 8, 2, 7, 4, 6, 5] {
                if i < inside {
                    guards[i] = None;
                }
            }
            assert!(guards.iter().all(Option::is_none));
        })
    };
    entered_rx.recv().unwrap();
    for &h in &hs[inside..] {
        assert_eq!(r.take::<Val>(ptr(h)).map(|v| v.n), Ok(0));
    }
    let waiters: Vec<_> = hs[..inside]
        .iter()
        .map(|&h| std::thread::spawn(move || r.take::<Val>(ptr(h)).map(|v| v.n)))
        .collect();
    std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 30 }));
    leave_tx.send(()).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Ok(1));
    }
    owner.join().unwrap();
    assert!(drops.iter().all(|d| d.load(SeqCst) == 1));
}

// Attacks teardown: a thread parks three handles and ends; another thread
// steals one, unrefs one, and a later thread (which may get the same owner
// id, and so inherit the park) keeps restoring the third.
#[test]
fn handles_parked_by_a_thread_that_ended() {
    let _s = serial();
    let _w = watchdog("handles_parked_by_a_thread_that_ended");
    for _ in 0..if cfg!(miri) { 1 } else { 5 } {
        let mut drops = Vec::new();
        let hs: Vec<usize> = (0..3)
            .map(|_| {
                let (v, d) = Val::new();
                drops.push(d);
                handle_registry::save(v) as usize
            })
            .collect();
        let parker = hs.clone();
        std::thread::spawn(move || {
            for &h in &parker {
                heat::<Val>(global(), ptr(h));
                handle_registry::restore::<Val>(ptr(h)).unwrap().bump();
            }
        })
        .join()
        .unwrap();
        handle_registry::restore::<Val>(ptr(hs[0])).unwrap().bump();
        assert_eq!(handle_registry::unref(ptr(hs[1])), Ok(()));
        assert_eq!(drops[1].load(SeqCst), 1);
        let h2 = hs[2];
        for _ in 0..2 {
            std::thread::spawn(move || {
                for _ in 0..STREAK + 10 {
                    handle_registry::restore::<Val>(ptr(h2)).unwrap().bump();
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(handle_registry::take::<Val>(ptr(hs[0])).map(|v| v.n), Ok(2));
        assert_eq!(
            handle_registry::take::<Val>(ptr(h2)).map(|v| v.n),
            Ok(1 + 2 * (STREAK as u64 + 10))
        );
        assert!(drops.iter().all(|d| d.load(SeqCst) == 1));
    }
}

// ---------------------------------------------------------------------------
// Forgotten guards.

/// What a thread answers about `p` after forgetting a guard of it; the
/// value is `Val` with drop counter `drops`.
fn after_forgetting(r: &Registry, p: *mut c_void, drops: &AtomicUsize) -> Vec<String> {
    std::mem::forget(r.restore::<Val>(p).unwrap());
    vec![
        format!("{:?}", r.restore::<Val>(p).err()),
        format!("{:?}", r.restore_with(p, |v: &mut Val| v.n)),
        format!("{:?}", r.restore_ref::<Val>(p).err()),
        format!("{:?}", r.take::<Val>(p).err()),
        format!("{:?}", r.check::<Val>(p)),
        format!("{:?}", r.unref(p)),
        format!("{:?}", r.restore::<Val>(p).err()),
        format!("{:?}", r.unref(p)),
        format!("drops {}", drops.load(SeqCst)),
    ]
}

// Attacks "a forgotten guard keeps its borrow, as an unparked one does":
// same answers after forgetting a parked guard as after forgetting a plain
// one; then eight forgotten parked guards fill the thread's record, and a
// ninth handle still parks, is stolen and is dropped once; dropping the
// registry drops every forgotten value once.
#[test]
fn forgotten_parked_guards() {
    let _s = serial();
    let _w = watchdog("forgotten_parked_guards");
    let r: &'static Registry = kept_registry();
    let parked = std::thread::spawn(move || {
        let (v, d) = Val::new();
        let p = r.save(v);
        heat::<Val>(r, p);
        after_forgetting(r, p, &d)
    })
    .join()
    .unwrap();
    let fresh = std::thread::spawn(move || {
        let (v, d) = Val::new();
        let p = r.save(v);
        after_forgetting(r, p, &d)
    })
    .join()
    .unwrap();
    assert_eq!(parked, fresh);

    let owned = Registry::new();
    let mut drops = Vec::new();
    std::thread::scope(|s| {
        let owned = &owned;
        let ninth = s
            .spawn(|| {
                let mut hs = Vec::new();
                for _ in 0..8 {
                    let (v, d) = Val::new();
                    drops.push(d);
                    let p = owned.save(v);
                    heat::<Val>(owned, p);
                    std::mem::forget(owned.restore::<Val>(p).unwrap());
                    hs.push(p as usize);
                }
                let (v, d) = Val::new();
                let p = owned.save(v);
                for _ in 0..3 * STREAK {
                    owned.restore::<Val>(p).unwrap().bump();
                }
                // Nested inside the ninth, once the record is full.
                let g = owned.restore::<Val>(p).unwrap();
                assert_eq!(owned.restore::<Val>(p).err(), Some(Error::Busy));
                drop(g);
                (p as usize, d)
            })
            .join()
            .unwrap();
        let (p, d) = ninth;
        assert_eq!(
            owned.restore::<Val>(ptr(p)).map(|g| g.n),
            Ok(3 * STREAK as u64)
        );
        assert_eq!(owned.unref(ptr(p)), Ok(()));
        assert_eq!(d.load(SeqCst), 1);
    });
    assert!(drops.iter().all(|d| d.load(SeqCst) == 0));
    drop(owned);
    assert!(drops.iter().all(|d| d.load(SeqCst) == 1));
}

// ---------------------------------------------------------------------------
// Drops that re-enter the registry, panics.

/// Drops by calling the registry: restores its own (stale) handle, every
/// handle in `others` (which the dropping thread may have parked), saves
/// and unrefs a new value, and unrefs `victim`.
struct Reentrant {
    me: usize,
    others: Vec<usize>,
    victim: usize,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        let mut log = Vec::new();
        log.push(format!(
            "me {:?}",
            handle_registry::restore::<Val>(ptr(self.me)).err()
        ));
        for &o in &self.others {
            for _ in 0..3 {
                log.push(format!(
                    "other {:?}",
                    handle_registry::restore_with(ptr(o), |v: &mut Val| v.bump())
                ));
            }
        }
        let fresh = handle_registry::save(7u32);
        log.push(format!("{:?}", handle_registry::take::<u32>(fresh)));
        if self.victim != 0 {
            log.push(format!(
                "victim {:?}",
                handle_registry::unref(ptr(self.victim))
            ));
        }
        self.log.lock().unwrap().extend(log);
    }
}

// Attacks re-entrancy: a value whose `Drop` uses the registry, dropped by
// the owner's leave (unreffed by another thread while the owner is
// inside), by another thread's unref (owner outside), and by the owner's
// own unref inside; the handles its `Drop` restores are hot and parked on
// the dropping thread or on the other one.
#[test]
fn drops_that_reenter_the_registry_during_park_and_steal() {
    let _s = serial();
    let _w = watchdog("drops_that_reenter_the_registry_during_park_and_steal");
    for case in 0..3 {
        let (a, da) = Val::new();
        let (b, db) = Val::new();
        let (c, dc) = Val::new();
        let (a, b, c) = (
            handle_registry::save(a) as usize,
            handle_registry::save(b) as usize,
            handle_registry::save(c) as usize,
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let x = handle_registry::save(Reentrant {
            me: 0,
            others: vec![a, b],
            victim: c,
            log: log.clone(),
        }) as usize;
        handle_registry::restore::<Reentrant>(ptr(x)).unwrap().me = x;
        let (tx, rx) = mpsc::channel::<()>();
        let (back, back_rx) = mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            for h in [a, b, c] {
                heat::<Val>(global(), ptr(h));
            }
            heat::<Reentrant>(global(), ptr(x));
            match case {
                0 => {
                    let g = handle_registry::restore::<Reentrant>(ptr(x)).unwrap();
                    back.send(()).unwrap();
                    rx.recv().unwrap(); // unreffed meanwhile
                    drop(g); // the leave drops it, here
                }
                1 => {
                    back.send(()).unwrap();
                    rx.recv().unwrap();
                }
                _ => {
                    let g = handle_registry::restore::<Reentrant>(ptr(x)).unwrap();
                    assert_eq!(handle_registry::unref(ptr(x)), Ok(()));
                    drop(g);
                    back.send(()).unwrap();
                    rx.recv().unwrap();
                }
            }
            // `a` is this thread's hot handle or was stolen: still fine.
            handle_registry::restore::<Val>(ptr(a)).unwrap().bump();
        });
        back_rx.recv().unwrap();
        if case != 2 {
            assert_eq!(handle_registry::unref(ptr(x)), Ok(()));
        }
        tx.send(()).unwrap();
        owner.join().unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 9, "{log:?}");
        assert_eq!(log[0], "me Some(Stale)");
        assert!(log[1..7].iter().all(|l| l == "other Ok(())"), "{log:?}");
        assert_eq!(log[7], "Ok(7)");
        assert_eq!(log[8], "victim Ok(())");
        assert_eq!(dc.load(SeqCst), 1);
        for (h, d) in [(a, &da), (b, &db)] {
            assert_eq!(d.load(SeqCst), 0);
            let n = if h == a { 4 } else { 3 };
            assert_eq!(handle_registry::take::<Val>(ptr(h)).map(|v| v.n), Ok(n));
            assert_eq!(d.load(SeqCst), 1);
        }
    }
}

// Attacks "never aborts": a panic unwinds through a parked guard whose
// value was unreffed meanwhile (by this thread, or by another) and whose
// `Drop` panics too; then a panicking `Drop` run by a parked guard's
// ordinary release; the hot handles keep working after each.
#[test]
fn panics_unwinding_through_parked_guards() {
    let _s = serial();
    let _w = watchdog("panics_unwinding_through_parked_guards");
    let private: &'static Registry = kept_registry();
    for r in [global(), private] {
        for by_other in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let p = r.save(PanicOnDrop(drops.clone()));
            let (v, vd) = Val::new();
            let q = r.save(v);
            heat::<Val>(r, q);
            heat::<PanicOnDrop>(r, p);
            let h = p as usize;
            let out = catch_unwind(AssertUnwindSafe(|| {
                let _g = r.restore::<PanicOnDrop>(p).unwrap();
                let _inner = r.restore::<Val>(q).unwrap();
                if by_other {
                    std::thread::spawn(move || r.unref(ptr(h)))
                        .join()
                        .unwrap()
                        .unwrap();
                } else {
                    r.unref(p).unwrap();
                }
                panic!("through the guard");
            }));
            let msg = out.unwrap_err();
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"through the guard"));
            assert_eq!(drops.load(SeqCst), 1);
            assert_eq!(r.restore::<PanicOnDrop>(p).err(), Some(Error::Stale));
            r.restore::<Val>(q).unwrap().bump();
            // A panicking drop by the guard's release, not unwinding.
            let p = r.save(PanicOnDrop(drops.clone()));
            heat::<PanicOnDrop>(r, p);
            let g = r.restore::<PanicOnDrop>(p).unwrap();
            r.unref(p).unwrap();
            let out = catch_unwind(AssertUnwindSafe(move || drop(g)));
            assert!(out.is_err());
            assert_eq!(drops.load(SeqCst), 2);
            assert_eq!(r.restore::<PanicOnDrop>(p).err(), Some(Error::Stale));
            heat::<Val>(r, q);
            r.restore_with(q, |v: &mut Val| v.bump()).unwrap();
            assert_eq!(r.take::<Val>(q).map(|v| v.n), Ok(2));
            assert_eq!(vd.load(SeqCst), 1);
        }
    }
}

// ---------------------------------------------------------------------------
// Thread-local teardown.

/// A thread-local destroyed after the crate's own (it is registered first,
/// before the thread's first registry call): holds a parked guard, and at
/// destruction uses the registry on handles the thread had parked.
struct Late {
    guard: Option<handle_registry::Guard<'static, Val>>,
    parked: Vec<usize>,
    answers: Option<mpsc::Sender<Vec<String>>>,
}

impl Drop for Late {
    fn drop(&mut self) {
        let mut out = Vec::new();
        // Still inside: nested restore is Busy, as before teardown.
        if let Some(g) = &self.guard {
            let h = self.parked[0];
            out.push(format!(
                "{:?}",
                handle_registry::restore::<Val>(ptr(h)).err()
            ));
            out.push(format!("n {}", g.n));
        }
        drop(self.guard.take());
        for &h in &self.parked {
            let (mut ok, mut errs) = (0, Vec::new());
            for _ in 0..STREAK + 3 {
                match handle_registry::restore::<Val>(ptr(h)) {
                    Ok(mut g) => {
                        g.bump();
                        ok += 1;
                    }
                    Err(e) => errs.push(e),
                }
            }
            errs.dedup();
            out.push(format!("ok {ok} {errs:?}"));
        }
        // A new value saved, heated and taken during teardown.
        let (v, _) = Val::new();
        let fresh = handle_registry::save(v);
        for _ in 0..STREAK + 3 {
            handle_registry::restore::<Val>(fresh).unwrap().bump();
        }
        out.push(format!(
            "{:?}",
            handle_registry::take::<Val>(fresh).map(|v| v.n)
        ));
        if let Some(tx) = self.answers.take() {
            let _ = tx.send(out);
        }
    }
}

thread_local! {
    static LATE: RefCell<Late> = const {
        RefCell::new(Late { guard: None, parked: Vec::new(), answers: None })
    };
}

// Attacks "guards stored in thread-locals destroyed after the crate's
// own": the thread ends inside a parked borrow (its guard in `LATE`),
// which another thread is waiting to take and a third has unreffed, and
// its last destructor restores, heats and takes handles; many threads
// after it park and get stolen from (its owner id must not be shared).
#[test]
fn a_parked_guard_in_a_late_thread_local() {
    let _s = serial();
    let _w = watchdog("a_parked_guard_in_a_late_thread_local");
    for take_it in [true, false] {
        let (v, d0) = Val::new();
        let (w, d1) = Val::new();
        let (h0, h1) = (
            handle_registry::save(v) as usize,
            handle_registry::save(w) as usize,
        );
        let (tx, rx) = mpsc::channel();
        let (inside_tx, inside_rx) = mpsc::channel::<()>();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            LATE.with(|_| ()); // registered before the crate's
            heat::<Val>(global(), ptr(h0));
            heat::<Val>(global(), ptr(h1));
            let mut g = handle_registry::restore::<Val>(ptr(h0)).unwrap();
            g.bump();
            LATE.with(|l| {
                let mut l = l.borrow_mut();
                l.guard = Some(g);
                l.parked = vec![h0, h1];
                l.answers = Some(tx);
            });
            inside_tx.send(()).unwrap();
            end_rx.recv().unwrap();
        });
        inside_rx.recv().unwrap();
        let waiter = take_it.then(|| {
            std::thread::spawn(move || handle_registry::take::<Val>(ptr(h0)).map(|v| v.n))
        });
        if !take_it {
            assert_eq!(handle_registry::unref(ptr(h0)), Ok(()));
        }
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 10 }));
        end_tx.send(()).unwrap();
        t.join().unwrap();
        let answers = rx.recv().unwrap();
        let steps = STREAK as u64 + 3;
        // Inside at teardown: Busy for a live value, Stale once unreffed.
        let nested = if take_it { "Some(Busy)" } else { "Some(Stale)" };
        assert_eq!(answers[..2], [nested, "n 1"]);
        if let Some(w) = waiter {
            // The waiter wins the value at some point of the destructor's
            // restores, which then answer `Stale`.
            let n = w.join().unwrap().unwrap();
            let ok = n - 1;
            let expect = if ok == steps {
                format!("ok {ok} []")
            } else {
                format!("ok {ok} [Stale]")
            };
            assert_eq!(answers[2], expect);
        } else {
            assert_eq!(answers[2], "ok 0 [Stale]");
        }
        assert_eq!(d0.load(SeqCst), 1);
        assert_eq!(answers[3], format!("ok {steps} []"));
        assert_eq!(answers[4], format!("Ok({steps})"));
        assert_eq!(
            handle_registry::take::<Val>(ptr(h1)).map(|v| v.n),
            Ok(steps)
        );
        assert_eq!(d1.load(SeqCst), 1);
    }
    // Threads after it: park and get stolen from, each.
    for _ in 0..if cfg!(miri) { 2 } else { 16 } {
        let (v, d) = Val::new();
        let h = handle_registry::save(v) as usize;
        let (tx, rx) = mpsc::channel::<()>();
        let (back, back_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            heat::<Val>(global(), ptr(h));
            back.send(()).unwrap();
            rx.recv().unwrap();
            handle_registry::restore::<Val>(ptr(h)).unwrap().bump();
        });
        back_rx.recv().unwrap();
        handle_registry::restore::<Val>(ptr(h)).unwrap().bump();
        tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(handle_registry::take::<Val>(ptr(h)).map(|v| v.n), Ok(2));
        assert_eq!(d.load(SeqCst), 1);
    }
}

// ---------------------------------------------------------------------------
// Registries dropped while hot.

// Attacks the private hot entry: a registry dropped while this thread has
// one of its handles hot (and, every other round, a forgotten parked
// guard of it), then new registries that reuse its id and perhaps its
// pages' addresses: old integers answer as on a fresh thread, new handles
// at the same index park, are stolen and drop once.
#[test]
fn registries_dropped_while_hot_then_recreated() {
    let _s = serial();
    let _w = watchdog("registries_dropped_while_hot_then_recreated");
    let rounds = if cfg!(miri) { 3 } else { 40 };
    let mut old: Vec<usize> = Vec::new();
    for round in 0..rounds {
        let r = Registry::new();
        let (v, d) = Val::new();
        let p = r.save(v);
        heat::<Val>(&r, p);
        if round % 2 == 1 {
            std::mem::forget(r.restore::<Val>(p).unwrap());
        }
        drop(r);
        assert_eq!(d.load(SeqCst), 1);
        old.push(p as usize);
        let r2 = Registry::new();
        let mut mine = Vec::new();
        let mut drops = Vec::new();
        while mine.len() < 3 {
            let (v, d) = Val::new();
            mine.push(r2.save(v) as usize);
            drops.push(d);
        }
        let ask = |r: &Registry, hs: &[usize]| -> Vec<String> {
            hs.iter()
                .map(|&h| {
                    format!(
                        "{:?} {:?}",
                        r.restore::<Val>(ptr(h)).map(|g| g.n),
                        r.restore_with(ptr(h), |v: &mut Val| v.n)
                    )
                })
                .collect()
        };
        let here = ask(&r2, &old);
        for &h in &mine {
            heat::<Val>(&r2, ptr(h));
        }
        let here_hot = ask(&r2, &old);
        let fresh = std::thread::scope(|s| s.spawn(|| ask(&r2, &old)).join().unwrap());
        assert_eq!(here, fresh);
        assert_eq!(here_hot, fresh);
        std::thread::scope(|s| {
            s.spawn(|| {
                for &h in &mine {
                    r2.restore::<Val>(ptr(h)).unwrap().bump();
                }
            });
        });
        for (&h, d) in mine.iter().zip(&drops) {
            assert_eq!(r2.take::<Val>(ptr(h)).map(|v| v.n), Ok(1));
            assert_eq!(d.load(SeqCst), 1);
        }
    }
}
