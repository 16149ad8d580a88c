//! Shared borrows through per-thread reader records (`src/readers.rs`):
//! readers against writers and removals, teardown, forgotten guards, more
//! handles than a record holds.
//!
//! Pure Rust: these run under Miri too (counts scaled down there).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use handle_registry::{Error, Registry};

mod common;
use common::{ptr, rounds, OnDrop};

/// Counts its drops and remembers the thread of the last one.
struct Tally(Arc<AtomicUsize>, Arc<Mutex<Option<ThreadId>>>);

impl Drop for Tally {
    fn drop(&mut self) {
        *self.1.lock().unwrap() = Some(std::thread::current().id());
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn tally() -> (Tally, Arc<AtomicUsize>, Arc<Mutex<Option<ThreadId>>>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let thread = Arc::new(Mutex::new(None));
    (Tally(drops.clone(), thread.clone()), drops, thread)
}

/// Readers never see a half-written pair; the writer gets through.
#[test]
fn readers_against_a_writer_see_whole_values() {
    let r = Registry::new();
    let p = r.save((0u64, 0u64)) as usize;
    let n = rounds(2000, 30);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads < 10 {
                    let g = r.restore_ref::<(u64, u64)>(ptr(p)).unwrap();
                    assert_eq!(g.0, g.1, "a torn read");
                    reads += 1;
                }
            });
        }
        s.spawn(|| {
            for i in 1..=n as u64 {
                let mut g = r.restore::<(u64, u64)>(ptr(p)).unwrap();
                g.0 = i;
                g.1 = i;
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    assert_eq!(r.take::<(u64, u64)>(ptr(p)), Ok((n as u64, n as u64)));
}

/// Readers racing an `unref`: the value is dropped exactly once, and
/// readers answer `Stale` after.
#[test]
fn readers_against_unref_drop_once() {
    let r = Registry::new();
    for _ in 0..rounds(200, 4) {
        let (value, drops, _) = tally();
        let p = r.save(value) as usize;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    match r.restore_ref::<Tally>(ptr(p)) {
                        Ok(g) => drop(g),
                        Err(Error::Stale) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                });
            }
            std::thread::yield_now();
            r.unref(ptr(p)).unwrap();
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
    }
    assert!(r.is_empty());
}

/// A reader that holds the value when it is unreffed drops it, on its own
/// thread, when it lets go; `unref` never waits for it.
#[test]
fn the_last_reader_drops_an_unreffed_value_on_its_thread() {
    let r = Registry::new();
    let (value, drops, on) = tally();
    let p = r.save(value) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (r, drops) = (&r, &drops);
        let reader = s.spawn(move || {
            let g = r.restore_ref::<Tally>(ptr(p)).unwrap();
            let again = r.restore_ref::<Tally>(ptr(p)).unwrap(); // nested
            held_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
            // Unreffed meanwhile: a new borrow is stale, ours still valid.
            assert_eq!(r.restore_ref::<Tally>(ptr(p)).err(), Some(Error::Stale));
            drop(again);
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            drop(g);
            std::thread::current().id()
        });
        held_rx.recv().unwrap();
        r.unref(ptr(p)).unwrap(); // never waits
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        hold_tx.send(()).unwrap();
        let id = reader.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(*on.lock().unwrap(), Some(id));
    });
    assert!(r.is_empty());
}

/// The same thread asking for an exclusive borrow of what it reads:
/// `Busy`, never a wait; every other kind of borrow still works.
#[test]
fn exclusive_requests_under_ones_own_record_borrow_are_busy() {
    let r = Registry::new();
    let p = r.save(5u32);
    let g = r.restore_ref::<u32>(p).unwrap();
    assert_eq!(r.restore::<u32>(p).err(), Some(Error::Busy));
    assert_eq!(r.take::<u32>(p).err(), Some(Error::Busy));
    assert_eq!(*r.restore_ref::<u32>(p).unwrap(), 5);
    drop(g);
    *r.restore::<u32>(p).unwrap() += 1;
    let g = r.restore_ref::<u32>(p).unwrap();
    assert_eq!(*g, 6);
    assert_eq!(r.unref(p), Ok(()));
    assert_eq!(r.take::<u32>(p).err(), Some(Error::Stale));
    drop(g);
    assert!(r.is_empty());
}

/// A writer waits for the readers of another thread (with a record each,
/// or past a record's capacity) and gets through once they let go.
#[test]
fn a_writer_waits_for_every_reader_even_past_a_records_capacity() {
    let r = Registry::new();
    let hs: Vec<usize> = (0..7u32).map(|i| r.save(i) as usize).collect();
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (r, hs, released) = (&r, &hs, &released);
        s.spawn(move || {
            let guards: Vec<_> = hs
                .iter()
                .map(|&h| r.restore_ref::<u32>(ptr(h)).unwrap())
                .collect();
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            released.store(true, Ordering::SeqCst);
            drop(guards);
        });
        held_rx.recv().unwrap();
        let writers: Vec<_> = hs
            .iter()
            .map(|&h| {
                s.spawn(move || {
                    let mut g = r.restore::<u32>(ptr(h)).unwrap();
                    assert!(released.load(Ordering::SeqCst), "got past a reader");
                    *g += 10;
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
        release_tx.send(()).unwrap();
        for w in writers {
            w.join().unwrap();
        }
    });
    for (i, &h) in hs.iter().enumerate() {
        assert_eq!(r.take::<u32>(ptr(h)), Ok(i as u32 + 10));
    }
}

/// A guard forgotten on a thread that then exits: its record is never
/// handed to another thread, the handle's writers are the only ones who
/// would wait, and everything else goes on.
#[test]
fn a_forgotten_record_borrow_blocks_nothing_else() {
    let r = Registry::new();
    let (value, drops, _) = tally();
    let p = r.save(value) as usize;
    let q = r.save(1u64) as usize;
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(r.restore_ref::<Tally>(ptr(p)).unwrap()));
    });
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..rounds(500, 5) {
                    assert!(r.restore_ref::<Tally>(ptr(p)).is_ok());
                    assert_eq!(*r.restore_ref::<u64>(ptr(q)).unwrap(), 1);
                    *r.restore::<u64>(ptr(q)).unwrap() += 0;
                }
            });
        }
    });
    // The forgotten borrow keeps the value: an unref leaves it to a
    // borrower that never comes, as with a forgotten in-word borrow.
    assert_eq!(r.unref(ptr(p)), Ok(()));
    assert_eq!(r.restore_ref::<Tally>(ptr(p)).err(), Some(Error::Stale));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(r.take::<u64>(ptr(q)), Ok(1));
    drop(r); // the registry drops the orphan
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

thread_local! {
    static AT_EXIT: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

static TEARDOWN: once_cell::sync::Lazy<Registry> = once_cell::sync::Lazy::new(Registry::new);

/// `restore_ref` from a thread-local destructor, on a thread that used
/// records before (its record may be given back already) and on one that
/// never did; each borrow works, and a writer on another thread gets
/// through after.
#[test]
fn restore_ref_in_a_thread_local_destructor() {
    let r = &*TEARDOWN;
    let p = r.save(41u32) as usize;
    for used_before in [true, false] {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            AT_EXIT.with(|a| {
                a.borrow_mut().0 = Some(Box::new(move || {
                    let first = TEARDOWN.restore_ref::<u32>(ptr(p)).map(|g| *g);
                    let g = TEARDOWN.restore_ref::<u32>(ptr(p));
                    let nested = TEARDOWN.restore_ref::<u32>(ptr(p)).map(|g| *g);
                    let busy = TEARDOWN.restore::<u32>(ptr(p)).err();
                    drop(g);
                    let _ = tx.send((first, nested, busy));
                }))
            });
            if used_before {
                assert_eq!(*TEARDOWN.restore_ref::<u32>(ptr(p)).unwrap(), 41);
            }
        })
        .join()
        .unwrap();
        let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(got, (Ok(41), Ok(41), Some(Error::Busy)));
        *r.restore::<u32>(ptr(p)).unwrap() += 0;
    }
    assert_eq!(r.take::<u32>(ptr(p)), Ok(41));
}

/// Many threads, one handle, readers, writers and a final unref racing:
/// no torn read, one drop.
#[test]
fn mixed_readers_writers_and_unref() {
    let r = Registry::new();
    for _ in 0..rounds(50, 2) {
        let drops = Arc::new(AtomicUsize::new(0));
        struct Pair(u64, u64, Arc<AtomicUsize>);
        impl Drop for Pair {
            fn drop(&mut self) {
                self.2.fetch_add(1, Ordering::SeqCst);
            }
        }
        let p = r.save(Pair(0, 0, drops.clone())) as usize;
        std::thread::scope(|s| {
            for t in 0..3 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..rounds(300, 10) {
                        if (i + t) % 4 == 0 {
                            match r.restore::<Pair>(ptr(p)) {
                                Ok(mut g) => {
                                    g.0 += 1;
                                    g.1 += 1;
                                }
                                Err(Error::Stale) => return,
                                Err(e) => panic!("{e:?}"),
                            }
                        } else {
                            match r.restore_ref::<Pair>(ptr(p)) {
                                Ok(g) => assert_eq!(g.0, g.1),
                                Err(Error::Stale) => return,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                });
            }
            s.spawn(|| {
                std::thread::yield_now();
                r.unref(ptr(p)).unwrap();
            });
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
    assert!(r.is_empty());
}

/// One reader counted in the word (its record is full) and one in a
/// record, when the handle is unreffed: whichever lets go last drops the
/// value, once, in either order.
#[test]
fn in_word_and_record_readers_of_an_orphan_drop_once() {
    let r = Registry::new();
    for in_word_last in [false, true] {
        let (value, drops, _) = tally();
        let p = r.save(value) as usize;
        let fillers: Vec<usize> = (0..8u8).map(|i| r.save(i) as usize).collect();
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (r, fillers, drops) = (&r, &fillers, &drops);
            s.spawn(move || {
                // More handles than a record holds: `p` is counted in the word.
                let _fill: Vec<_> = fillers
                    .iter()
                    .map(|&f| r.restore_ref::<u8>(ptr(f)).unwrap())
                    .collect();
                let g = r.restore_ref::<Tally>(ptr(p)).unwrap();
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                drop(g);
                done_tx.send(()).unwrap();
            });
            held_rx.recv().unwrap();
            let g = r.restore_ref::<Tally>(ptr(p)).unwrap();
            r.unref(ptr(p)).unwrap();
            assert_eq!(r.restore_ref::<Tally>(ptr(p)).err(), Some(Error::Stale));
            if in_word_last {
                drop(g);
                assert_eq!(drops.load(Ordering::SeqCst), 0);
                go_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            } else {
                go_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                assert_eq!(drops.load(Ordering::SeqCst), 0);
                drop(g);
            }
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
        for f in fillers {
            r.unref(ptr(f)).unwrap();
        }
    }
    assert!(r.is_empty());
}
