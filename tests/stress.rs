//! Bounded threaded stress: several threads save, restore (exclusive and
//! shared), take and unref handles from one shared pool, racing on the same
//! handles. Checks that every value is dropped exactly once, that the only
//! errors are the ones a race can explain, and that nothing is left.
//!
//! Pure Rust: runs under Miri too, with far fewer iterations.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Barrier, Mutex};

use handle_registry::{Error, Registry};

const THREADS: usize = 4;
const STEPS: usize = if cfg!(miri) { 40 } else { 20_000 };

/// One drop counter per value ever saved.
static DROPS: [AtomicU8; THREADS * STEPS] = [const { AtomicU8::new(0) }; THREADS * STEPS];

struct Counted {
    id: usize,
    hits: AtomicU64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        DROPS[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

/// xorshift64: deterministic per thread, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn ptr(raw: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(raw)
}

/// What a race can explain: another thread removed the handle (`Stale`),
/// or this thread holds it (`Busy`).
fn raced(e: Error) -> bool {
    matches!(e, Error::Stale | Error::Busy)
}

#[test]
fn every_value_is_dropped_exactly_once() {
    let registry = Registry::new();
    let pool: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let saved = AtomicU64::new(0);
    let start = Barrier::new(THREADS);

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (registry, pool, saved, start) = (&registry, &pool, &saved, &start);
            s.spawn(move || {
                start.wait();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let pick = |rng: &mut Rng| {
                    let pool = pool.lock().unwrap();
                    (!pool.is_empty()).then(|| pool[rng.next() as usize % pool.len()])
                };
                for step in 0..STEPS {
                    match rng.next() % 8 {
                        0 | 1 => {
                            let id = t * STEPS + step;
                            let p = registry.save(Counted {
                                id,
                                hits: AtomicU64::new(0),
                            });
                            saved.fetch_add(1, Ordering::Relaxed);
                            pool.lock().unwrap().push(p as usize);
                        }
                        2 | 3 => {
                            let Some(p) = pick(&mut rng) else { continue };
                            match registry.restore::<Counted>(ptr(p)) {
                                Ok(g) => {
                                    g.hits.fetch_add(1, Ordering::Relaxed);
                                    // Waiting for another handle while holding
                                    // this one could deadlock against a thread
                                    // doing the reverse, as with any two locks;
                                    // the same handle again must say Busy (or
                                    // Stale, if another thread unreffed it).
                                    let again = registry.restore_ref::<Counted>(ptr(p));
                                    assert!(again.is_err_and(raced));
                                }
                                Err(e) => assert!(raced(e), "{e}"),
                            }
                        }
                        4 => {
                            let Some(p) = pick(&mut rng) else { continue };
                            match registry.restore_ref::<Counted>(ptr(p)) {
                                Ok(g) => {
                                    g.hits.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => assert!(raced(e), "{e}"),
                            }
                        }
                        5 => {
                            let Some(p) = pick(&mut rng) else { continue };
                            match registry.take::<Counted>(ptr(p)) {
                                Ok(v) => {
                                    pool.lock().unwrap().retain(|&x| x != p);
                                    drop(v);
                                }
                                Err(e) => assert!(raced(e), "{e}"),
                            }
                        }
                        _ => {
                            let Some(p) = pick(&mut rng) else { continue };
                            match registry.unref(ptr(p)) {
                                Ok(()) => pool.lock().unwrap().retain(|&x| x != p),
                                Err(e) => assert!(raced(e), "{e}"),
                            }
                        }
                    }
                }
            });
        }
    });

    for p in pool.into_inner().unwrap() {
        registry.unref(ptr(p)).unwrap();
    }
    assert!(registry.is_empty(), "{}", registry.leak_report());
    let saved = saved.load(Ordering::Relaxed) as usize;
    assert!(saved > 0);
    let mut dropped = 0;
    for (id, d) in DROPS.iter().enumerate() {
        match d.load(Ordering::SeqCst) {
            0 => {}
            1 => dropped += 1,
            n => panic!("value {id} dropped {n} times"),
        }
    }
    assert_eq!(dropped, saved, "every saved value dropped once");
}

/// Many threads fighting over a few handles: every exclusive increment must
/// land (no lost update, so borrows really exclude), readers must never see
/// a torn pair, and nobody may sleep through a wake-up (the test would hang).
#[test]
fn contended_handles_lose_no_update_and_no_wakeup() {
    const HANDLES: usize = 3;
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 100_000 };
    let registry = Registry::new();
    let handles: Vec<usize> = (0..HANDLES)
        .map(|_| registry.save((0u64, 0u64)) as usize)
        .collect();
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (registry, handles, start) = (&registry, &handles, &start);
            s.spawn(move || {
                start.wait();
                let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (t as u64 + 1));
                for _ in 0..ROUNDS {
                    let p = ptr(handles[rng.next() as usize % HANDLES]);
                    if rng.next() % 4 == 0 {
                        let pair = registry.restore_ref::<(u64, u64)>(p).unwrap();
                        assert_eq!(pair.0, pair.1, "torn read");
                    } else {
                        let mut pair = registry.restore::<(u64, u64)>(p).unwrap();
                        pair.0 += 1;
                        std::hint::spin_loop();
                        pair.1 += 1;
                    }
                }
            });
        }
    });
    let total: u64 = handles
        .iter()
        .map(|&p| {
            let (a, b) = registry.take::<(u64, u64)>(ptr(p)).unwrap();
            assert_eq!(a, b);
            a
        })
        .sum();
    // Each round either wrote once or read; count the writes the same way.
    let mut writes = 0;
    for t in 0..THREADS {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (t as u64 + 1));
        for _ in 0..ROUNDS {
            rng.next();
            if rng.next() % 4 != 0 {
                writes += 1;
            }
        }
    }
    assert_eq!(total, writes);
}
