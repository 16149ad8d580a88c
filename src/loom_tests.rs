//! Loom models of the slot protocol (see [`sync`](crate::sync) for what
//! they cover and what they do not). Compiled only under
//! `cfg(all(loom, test))`; `.ci/run` runs them with
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=4 RUSTFLAGS="--cfg loom --cfg handle_registry_core_only" \
//!     cargo test --release --lib loom_tests
//! ```
//!
//! Each model makes its own [`Registry`] inside the model (loom objects
//! live for one execution), saves before spawning (so the first page and
//! its free indices exist before any interleaving), runs two threads (three
//! in `three_restores`) of one to three operations each, and joins them
//! before it checks the outcome.
//! The saved value's storage is a loom cell: every guard's read or write,
//! and the drop (a write), must be ordered after the accesses before it by
//! the registry's borrows, or loom fails the model. Its `Drop` counts, and
//! records the thread it ran on.
//!
//! The models were checked against seeded bugs, each of which fails one:
//! an orphan's last release with `Release` instead of `AcqRel`
//! (`two_readers_vs_unref`: the drop races a reader), a borrow's exchange
//! with `Relaxed` instead of `Acquire`, a release's with `Relaxed` instead
//! of `Release`, an unref's with `Release` instead of `AcqRel` (a
//! causality violation on the value), and a release that does not wake
//! the waiters (a deadlock).

use std::ffi::c_void;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread::{self, ThreadId};

use crate::{Error, Registry};

/// The handshake of parked borrows, on a model slot.
mod parked;

/// Runs `f` under every interleaving up to the preemption bound:
/// `LOOM_MAX_PREEMPTIONS`, 4 if unset.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

/// A handle as an integer, to move between model threads.
fn ptr(handle: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(handle)
}

/// Who dropped a [`Val`], and how often.
#[derive(Default)]
struct Drops {
    count: AtomicUsize,
    on: Mutex<Vec<ThreadId>>,
}

impl Drops {
    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The one thread that dropped the value.
    fn dropped_on(&self) -> ThreadId {
        let on = self.on.lock().unwrap();
        assert_eq!(on.len(), 1, "dropped exactly once");
        on[0]
    }
}

/// The value storage user code touches through guards.
struct Data(UnsafeCell<u64>);

// SAFETY: every access goes through loom's cell, which fails the model on
// an access not ordered after the previous ones: shared guards only read,
// and the registry's borrows must order everything else. That is what the
// models check.
unsafe impl Sync for Data {}

/// A saved value.
struct Val {
    tag: u8,
    data: Data,
    drops: Arc<Drops>,
}

impl Val {
    fn new(tag: u8, drops: &Arc<Drops>) -> Val {
        Val {
            tag,
            data: Data(UnsafeCell::new(0)),
            drops: drops.clone(),
        }
    }

    /// Through an exclusive guard.
    fn write(&mut self) {
        // SAFETY: loom checks this write is ordered after every other
        // access (the exclusive borrow must make it so).
        self.data.0.with_mut(|p| unsafe { *p += 1 });
    }

    /// Through any guard.
    fn read(&self) -> u64 {
        // SAFETY: loom checks this read is ordered after every write.
        self.data.0.with(|p| unsafe { *p })
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        // A write access: after every guard's access, or loom fails.
        self.data.0.with_mut(|_| ());
        self.drops.count.fetch_add(1, Ordering::Relaxed);
        self.drops.on.lock().unwrap().push(thread::current().id());
    }
}

fn setup() -> (Arc<Registry>, Arc<Drops>, usize) {
    let registry = Arc::new(Registry::new());
    let drops = Arc::new(Drops::default());
    let p = registry.save(Val::new(1, &drops)).addr();
    (registry, drops, p)
}

/// Two exclusive restores of one handle on two threads: one waits for the
/// other (sets `WAITING`, parks), and is woken (no lost wake-up: loom
/// reports a deadlock); both writes land, in order.
#[test]
fn restore_waits_for_restore() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.restore::<Val>(ptr(p)).unwrap().write())
        };
        r.restore::<Val>(ptr(p)).unwrap().write();
        t.join().unwrap();
        let v = r.take::<Val>(ptr(p)).unwrap();
        assert_eq!(v.read(), 2);
        drop(v);
        assert_eq!(drops.count(), 1);
        assert!(r.is_empty());
    });
}

/// `restore` against `unref`: the value is dropped exactly once, by the
/// unref when it was not borrowed, else by the guard's release on the
/// borrowing thread; the handle is stale after.
#[test]
fn restore_vs_unref() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || match r.restore::<Val>(ptr(p)) {
                Ok(mut guard) => {
                    assert_eq!(guard.tag, 1);
                    guard.write();
                    true
                }
                Err(e) => {
                    assert_eq!(e, Error::Stale);
                    false
                }
            })
        };
        let t_id = t.thread().id();
        assert_eq!(r.unref(ptr(p)), Ok(()));
        let borrowed = t.join().unwrap();
        assert_eq!(drops.count(), 1);
        let on = drops.dropped_on();
        assert!(on == thread::current().id() || (borrowed && on == t_id));
        assert_eq!(r.restore::<Val>(ptr(p)).err(), Some(Error::Stale));
        assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
        assert!(r.is_empty());
    });
}

/// Two shared readers against `unref` on the main thread: the last one
/// out of an orphan drops it (its `AcqRel` exchange must order the other
/// reader's reads before the drop), exactly once. With reader records a
/// reader that published its entry, then found the word orphaned (and
/// answers `Stale`), settles too (readers R4, R5): the unref may have seen
/// its entry and left the drop to it. So the drop may run on either
/// reader's thread, or on the unref's.
#[test]
fn two_readers_vs_unref() {
    model(|| {
        let (r, drops, p) = setup();
        let reader = || {
            let r = r.clone();
            thread::spawn(move || match r.restore_ref::<Val>(ptr(p)) {
                Ok(guard) => {
                    assert_eq!(guard.read(), 0);
                    true
                }
                Err(e) => {
                    assert_eq!(e, Error::Stale);
                    false
                }
            })
        };
        let (a, b) = (reader(), reader());
        let ids = [a.thread().id(), b.thread().id()];
        assert_eq!(r.unref(ptr(p)), Ok(()));
        let read = [a.join().unwrap(), b.join().unwrap()];
        assert_eq!(drops.count(), 1);
        let on = drops.dropped_on();
        assert!(
            on == thread::current().id() || ids.contains(&on),
            "{read:?}"
        );
        assert_eq!(r.restore_ref::<Val>(ptr(p)).err(), Some(Error::Stale));
        assert!(r.is_empty());
    });
}

/// `take` against `unref`: exactly one of them removes the value; it is
/// dropped exactly once.
#[test]
fn take_vs_unref() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || match r.take::<Val>(ptr(p)) {
                Ok(v) => {
                    assert_eq!(v.tag, 1);
                    true
                }
                Err(e) => {
                    assert_eq!(e, Error::Stale);
                    false
                }
            })
        };
        let unreffed = r.unref(ptr(p));
        let taken = t.join().unwrap();
        assert_eq!(taken, unreffed == Err(Error::Stale));
        assert_eq!(drops.count(), 1);
        assert!(r.is_empty());
    });
}

/// An unref and a save on one thread (the save reuses the freed index)
/// against a restore of the old handle on another: the old handle reaches
/// the old value or is `Stale`, never the new value (the generation check),
/// and the new value is filled only after the old one was dropped.
#[test]
fn index_reuse_vs_stale_restore() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let (r, drops) = (r.clone(), drops.clone());
            thread::spawn(move || {
                r.unref(ptr(p)).unwrap();
                r.save(Val::new(2, &drops)).addr()
            })
        };
        match r.restore::<Val>(ptr(p)) {
            Ok(mut guard) => {
                assert_eq!(guard.tag, 1);
                guard.write();
            }
            Err(e) => assert_eq!(e, Error::Stale),
        }
        let q = t.join().unwrap();
        assert_ne!(p, q);
        assert_eq!(drops.count(), 1);
        assert_eq!(r.restore::<Val>(ptr(p)).err(), Some(Error::Stale));
        let new = r.take::<Val>(ptr(q)).unwrap();
        assert_eq!((new.tag, new.read()), (2, 0));
    });
}

/// A reader's release racing an exclusive `take` that waits for it: the
/// release sees `WAITING` (or the waiter sees the borrow gone) and the
/// taker is woken; the take always succeeds.
#[test]
fn take_waits_for_reader() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || match r.restore_ref::<Val>(ptr(p)) {
                Ok(guard) => assert_eq!(guard.read(), 0),
                Err(e) => assert_eq!(e, Error::Stale),
            })
        };
        let v = r.take::<Val>(ptr(p)).unwrap();
        assert_eq!(v.read(), 0);
        drop(v);
        t.join().unwrap();
        assert_eq!(drops.count(), 1);
        assert!(r.is_empty());
    });
}

/// Two unrefs of a value retained once (two references): the value goes
/// at the second, exactly once, and its count entry with it.
#[test]
fn counted_unref_vs_unref() {
    model(|| {
        let (r, drops, p) = setup();
        r.retain(ptr(p)).unwrap();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.unref(ptr(p)))
        };
        assert_eq!(r.unref(ptr(p)), Ok(()));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(drops.count(), 1);
        assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
        assert!(r.counts_is_empty());
        assert!(r.is_empty());
    });
}

/// `retain` against the last `unref`: either the retain lands first (the
/// value survives, one reference left) or the unref does (`Stale`, the
/// value dropped); a retain never revives a dying value.
#[test]
fn retain_vs_unref() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.unref(ptr(p)))
        };
        let retained = r.retain(ptr(p));
        assert_eq!(t.join().unwrap(), Ok(()));
        match retained {
            Ok(()) => {
                assert_eq!(drops.count(), 0);
                assert_eq!(r.ref_count(ptr(p)), Ok(1));
                assert_eq!(r.unref(ptr(p)), Ok(()));
            }
            Err(e) => assert_eq!(e, Error::Stale),
        }
        assert_eq!(drops.count(), 1);
        assert!(r.counts_is_empty());
        assert!(r.is_empty());
    });
}

/// A shared `restore_ref` against an exclusive `restore` on another
/// thread: whichever comes second waits (`WAITING` on an exclusive word, or
/// on a shared one) and is woken by the other's release.
#[test]
fn reader_vs_writer() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.restore::<Val>(ptr(p)).unwrap().write())
        };
        let seen = r.restore_ref::<Val>(ptr(p)).unwrap().read();
        assert!(seen <= 1);
        t.join().unwrap();
        assert_eq!(r.restore_ref::<Val>(ptr(p)).unwrap().read(), 1);
        assert_eq!(r.unref(ptr(p)), Ok(()));
        assert_eq!(drops.count(), 1);
    });
}

/// Reader records (readers R1–R4): the main thread holds a record borrow
/// and borrows again (nested) while another thread's `restore` may be
/// pending on the slot. The nested borrow never waits for that writer
/// (which waits for the record: a wait either way would deadlock), the
/// writer gets the value once both reads end, and every read sees either
/// the value before the write or none.
#[test]
fn nested_reader_vs_pending_writer() {
    model(|| {
        let (r, drops, p) = setup();
        let outer = r.restore_ref::<Val>(ptr(p)).unwrap();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.restore::<Val>(ptr(p)).unwrap().write())
        };
        let inner = r.restore_ref::<Val>(ptr(p)).unwrap();
        assert_eq!((outer.read(), inner.read()), (0, 0));
        drop(inner);
        drop(outer);
        t.join().unwrap();
        assert_eq!(r.restore_ref::<Val>(ptr(p)).unwrap().read(), 1);
        assert_eq!(r.unref(ptr(p)), Ok(()));
        assert_eq!(drops.count(), 1);
    });
}

/// Two `take`s of one handle: one waits for the other's borrow, then
/// finds the handle `Stale`; exactly one gets the value.
#[test]
fn take_vs_take() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.take::<Val>(ptr(p)).map(|v| v.tag))
        };
        let here = r.take::<Val>(ptr(p)).map(|v| v.tag);
        let there = t.join().unwrap();
        assert!(
            matches!(
                (here, there),
                (Ok(1), Err(Error::Stale)) | (Err(Error::Stale), Ok(1))
            ),
            "{here:?} {there:?}"
        );
        assert_eq!(drops.count(), 1);
        assert!(r.is_empty());
    });
}

/// `check` (a seqlock read of the type, no borrow) against an unref and a
/// save of another type into the same index: the old handle is a live
/// `Val` or `Stale`, never the new value's type.
#[test]
fn check_vs_reuse_with_another_type() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || {
                r.unref(ptr(p)).unwrap();
                r.save(7u32).addr()
            })
        };
        let checked = r.check::<Val>(ptr(p));
        assert!(matches!(checked, Ok(()) | Err(Error::Stale)), "{checked:?}");
        let q = t.join().unwrap();
        assert_eq!(drops.count(), 1);
        assert_eq!(r.check::<Val>(ptr(p)), Err(Error::Stale));
        assert_eq!(r.take::<u32>(ptr(q)), Ok(7));
    });
}

/// `retain` against `take`: the retain lands first (the take answers
/// `Retained` and changes nothing, even when the retain flagged the word
/// during the take's borrow) or the take does (the retain answers `Stale`).
#[test]
fn retain_vs_take() {
    model(|| {
        let (r, drops, p) = setup();
        let t = {
            let r = r.clone();
            thread::spawn(move || r.take::<Val>(ptr(p)).map(|v| v.tag))
        };
        let retained = r.retain(ptr(p));
        let taken = t.join().unwrap();
        match (retained, taken) {
            (Ok(()), Err(Error::Retained)) => {
                assert_eq!(drops.count(), 0);
                assert_eq!(r.ref_count(ptr(p)), Ok(2));
                assert_eq!(r.unref(ptr(p)), Ok(()));
                assert_eq!(r.take::<Val>(ptr(p)).map(|v| v.tag), Ok(1));
            }
            (Err(Error::Stale), Ok(1)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(drops.count(), 1);
        assert!(r.counts_is_empty());
        assert!(r.is_empty());
    });
}

/// Three exclusive restores of one handle (the main thread and two
/// others): two waiters at once, both woken by one release; the one that
/// loses the race flags the word again and parks again. Every write lands.
#[test]
fn three_restores() {
    model(|| {
        let (r, drops, p) = setup();
        let writer = || {
            let r = r.clone();
            thread::spawn(move || r.restore::<Val>(ptr(p)).unwrap().write())
        };
        let (a, b) = (writer(), writer());
        r.restore::<Val>(ptr(p)).unwrap().write();
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(r.take::<Val>(ptr(p)).unwrap().read(), 3);
        assert_eq!(drops.count(), 1);
    });
}
