//! Per-thread reader records: shared borrows that never write the slot.
//!
//! # Why
//!
//! A shared borrow counted in the slot's state word is a read-modify-write
//! of that word, so readers of one handle on several cores bounce its line
//! and scale below one core. Here a reader publishes the handle it reads in
//! a *record* of its own thread (a line no other thread writes), checks the
//! slot's word once, and reads the value; its release clears the record.
//! No read-modify-write of the shared line per read. The cost moves to the
//! rare side: exclusive borrowers and removals of such a slot scan every
//! record (big-reader-lock / hazard-pointer style).
//!
//! # Records
//!
//! A [`Record`] holds [`ENTRIES`] entries, each a handle value (0: free)
//! and a nesting count. Only the thread that owns the record writes it;
//! any thread reads its handle fields. Records are allocated once, pushed
//! on a global list (`HEAD`, never shrinks) and never freed, so a scanner
//! may walk the list at any time. A thread gets one record on its first
//! record borrow (a free one from the list, or a new one) and gives it
//! back when its thread-locals are destroyed if every entry is free. A
//! record with live entries then (guards still to be dropped later in the
//! teardown, or forgotten ones) is *kept*: the release that frees its last
//! entry gives it back (`release_kept`), so a guard kept in a
//! thread-local costs no record for good; one a forgotten guard holds
//! stays owned by that thread forever and is never reused. A thread whose record was given back
//! (and one that can no longer register the give-back, late in its
//! teardown) makes no more record borrows: it uses the in-word count.
//! Records are keyed by nothing: a thread reaches its own through a
//! destructor-free thread-local pointer, so owner ids, which may be shared
//! at teardown (see [`thread`](crate::thread)), play no part.
//!
//! Entries hold handle values, which name one value of one registry for
//! the life of the process (see [`thread`](crate::thread)) and are
//! canonical (every valid handle has one integer), so a scanner looks for
//! exactly the handle it borrows or removes. A nested shared borrow of a
//! handle the thread already records increments the entry's count.
//!
//! # Protocol
//!
//! Write `h` for a handle of generation `g`, `E` for an entry of the
//! reader's record, `W` for the slot's state word (see
//! [`slot`](crate::slot)), `WRITERS` for the global count of threads
//! waiting for records. Every operation named below on `E`, `HEAD`,
//! `WRITERS` and `W` is `SeqCst` (the exclusive fast path's borrow
//! excepted: it never succeeds on a shared-mode word, see R2), so all of
//! them sit in one total order `S`, and each pair below is
//! the store-then-load of Dekker's algorithm: of two threads that each
//! write their own location then read the other's, at least one sees the
//! other's write.
//!
//! * **R1, record borrow** (`restore_ref`). If `E` already holds `h`
//!   (nesting): load `W`; `Stale`/`Invalid` unless it is live at `g`; else
//!   count + 1. The value cannot be gone: this thread's own entry keeps
//!   every writer out (R3) and every drop away (R5). Otherwise take a free
//!   entry (none: fall back to the in-word count), store `h` in it, then
//!   load `W`:
//!   - live at `g` with `SHARED` and without `EXCL`: borrowed;
//!   - live at `g` without `SHARED` and without `EXCL`: compare-exchange
//!     `W → W | SHARED` (shared mode, transition R2); success: borrowed;
//!     failure: look at the word it returned, as above;
//!   - `EXCL` (an exclusive borrow, held or pending): retract (R4) and
//!     fall back to the in-word path, which waits, or answers `Busy` or
//!     `WrongThread` as it always did;
//!   - not live at `g`: retract (R4), `Stale` or `Invalid`.
//!
//!   The type is checked after the borrow is held, as for every borrow.
//! * **R2, shared mode**: `SHARED` is set only on a live word without
//!   `EXCL`, and leaves it only with the removal of the value (R5): a live
//!   word never loses it. The exclusive fast path expects `g LIVE`
//!   exactly, so it fails on every shared-mode word.
//! * **R3, exclusive borrow of a shared-mode slot** (`restore`, `take`, a
//!   lend, a scope's reclaim): first, if this thread's own record holds
//!   `h`, answer `Busy` (never wait for oneself, and never before this
//!   check: a pending writer of `h` waits for this thread). Then take
//!   `EXCL` on the word as usual (announce; the compare-exchange is
//!   `SeqCst`), then scan every record for `h`. None: the borrow is held.
//!   Some: `WRITERS + 1`, take the registry's wait lock, rescan, park on
//!   the registry's condition variable while a record holds `h`, then
//!   `WRITERS - 1`. Meanwhile the word says `EXCL`, so new record readers
//!   retract and wait in the in-word path, and in-word readers wait as for
//!   any exclusive borrow: the writer is not starved. Ordering: a reader
//!   stores `E = h` then loads `W`; the writer stores `EXCL` then loads
//!   `E`. Either the reader's load follows the writer's store in `S` and
//!   sees `EXCL` (it retracts before touching the value), or the writer's
//!   load follows the reader's store and sees `h` (it waits). A reader's
//!   reads of the value happen before the writer's accesses: the writer's
//!   scan reads the reader's clearing store (R4) or a later store of the
//!   same thread, both releases. Releasing an exclusive borrow is the
//!   same exchange as before (`SHARED` stays), made `SeqCst` (see the
//!   Miri note below); a record reader whose load reads it acquires the
//!   writer's accesses.
//! * **R4, record release** (a guard's drop, or a retraction in R1):
//!   count - 1; at zero, store `E = 0`, then load `WRITERS`: non-zero,
//!   take the registry's wait lock and wake every waiter. Then load `W`:
//!   if it is exactly the orphan word of `g` (`slot::orphan`), settle (R5).
//!   No lost wake-up: the writer increments `WRITERS` then scans under the
//!   lock, the reader clears `E` then loads `WRITERS`. Either the reader
//!   sees the writer's increment (and notifies under the lock: before the
//!   writer's locked scan, which then sees `E` cleared, or while it
//!   parks, which wakes it), or the writer's scan follows the reader's
//!   clear in `S` and sees it. A writer woken for another reason rescans
//!   and parks again: it never spins.
//! * **R5, removal of a shared-mode slot, and who drops** (`unref`, a
//!   retained value's last `unref`, an unref of a borrowed value; `take`
//!   holds `EXCL` after R3 and removes as before, dropping `SHARED`): the
//!   removing exchange keeps `SHARED` on the orphan (`g+1 SHARED`, plus
//!   the in-word borrow bits if any). A shared-mode orphan without borrow
//!   bits is `slot::orphan(g)`. *Settling* it means: scan the records for
//!   `h`; if none, compare-exchange `orphan(g) → orphan(g) - SHARED`
//!   (vacant, or retired), and whoever succeeds drops the value and frees
//!   the index. Settling is attempted by the remover when the word it
//!   left has no borrow bits, by the last in-word borrower when its
//!   release leaves `orphan(g)`, and by every record reader after its R4
//!   clear when it loads `orphan(g)`. **Exactly once**: the settling
//!   exchange expects `orphan(g)` and makes the word vacant, which no one
//!   sets `SHARED` on again (R2 needs a live word; the index is not free
//!   until the settler frees it), so at most one settles. At least one
//!   does: take the last, in `S`, of the remover's exchange, the in-word
//!   releases and the record clears of `h`. It is followed by a load of
//!   `W` (or is the exchange that leaves `orphan(g)`) that sees every
//!   earlier exchange (no borrow bits left) and then a scan that sees
//!   every earlier clear (no entry left), so it settles, unless someone
//!   already did. No premature drop: a record reader that holds the value
//!   loaded `W` live after storing `E = h`; the remover's exchange comes
//!   later in `S`, and every settler's scan later still, so it sees `h`.
//!   The settler's exchange (acquiring the word's release sequence of
//!   in-word releases) and its scan (acquiring each reader's clearing
//!   store) order every reader's reads before the drop. A value that was
//!   last held by a record reader is thus dropped on that reader's thread;
//!   `unref` itself never waits: it drops only if its own scan finds no
//!   record.
//! * **R6, records and the list**: a new record is pushed on `HEAD` with a
//!   `SeqCst` exchange before its owner stores any entry, and scanners
//!   load `HEAD` with `SeqCst`, so a scan that follows an entry store in
//!   `S` reaches its record. A record given back (every entry free) is
//!   taken by the next owner with an `Acquire` exchange of its `owned`
//!   flag, which the give-back stored with `Release`.
//!
//! Miri note: the record operations pair with the word's read-modify-writes
//! through `S`; an `Acquire`/`Release` exchange is not in `S`, so every
//! exchange that may write a word carrying `SHARED` is `SeqCst`, the
//! release of an exclusive borrow included (Miri's data-race detector
//! reported a reader's read racing the next writer when that release was
//! `Release`; on x86 both are the same `lock cmpxchg`). The exchanges left
//! `Acquire` (the exclusive fast path's, the in-word reader's first
//! attempt) expect a word without `SHARED`, so they never succeed on a
//! shared-mode word. A waiter's setting of `W` stays `Relaxed` on any
//! word: it changes no borrow and publishes nothing. Its wake-up needs
//! only that the word's read-modify-writes have one order (a release
//! either sees `W` or makes the waiter's exchange fail), and the wake-up
//! itself goes through the wait lock.

use std::cell::Cell;
use std::ptr;

use crate::sync::atomic::{
    seqcst_pair, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering::*,
};
use crate::sync::{model_statics, thread_locals};

/// Entries per record: the handles one thread may hold record borrows of
/// at once (more go to the in-word count).
pub(crate) const ENTRIES: usize = 4;

/// One thread's reader record, on a line of its own.
#[repr(C, align(64))]
pub(crate) struct Record {
    /// The handle each entry holds, 0 when free. Written by the owner only.
    handles: [AtomicUsize; ENTRIES],
    /// How many borrows each entry stands for. Read and written by the
    /// owner only (atomic because the record is shared).
    counts: [AtomicU32; ENTRIES],
    /// Whether a thread owns the record.
    owned: AtomicBool,
    /// Set by the owner's lease when it found live entries at the
    /// thread's teardown (guards kept in thread-locals destroyed later):
    /// the release that frees the last entry gives the record back.
    /// Owner only.
    kept: AtomicBool,
    /// The next record of the list; set once, before the record is pushed.
    next: AtomicPtr<Record>,
}

model_statics! {
    /// Every record ever allocated, newest first.
    static HEAD: AtomicPtr<Record> = AtomicPtr::new(ptr::null_mut());
    /// Threads waiting in R3 for records to clear, in any registry.
    static WRITERS: AtomicUsize = AtomicUsize::new(0);
}

/// Gives the record back at thread exit (if all its entries are free).
struct Lease;

// `MINE` and `GONE` below are read with `try_with`: std's (`const`,
// without destructor) are never destroyed, and `try_with` compiles to the
// same code as `with` on them (std's accessor for them returns a reference,
// never null; a release build merges the two forms into one function);
// loom's are destroyed in turn at a model thread's end, where a failed
// access then counts as "no record". `LEASE` has a destructor: its
// `try_with` in `acquire` is a real check.
impl Drop for Lease {
    fn drop(&mut self) {
        let _ = GONE.try_with(|gone| gone.set(true));
        let mine = MINE.try_with(Cell::get).unwrap_or(ptr::null());
        // SAFETY: records are never freed.
        if let Some(record) = unsafe { mine.as_ref() } {
            if record.is_free() {
                let _ = MINE.try_with(|m| m.set(ptr::null()));
                record.owned.store(false, Release);
            } else {
                // Live entries (guards in thread-locals destroyed later, or
                // forgotten ones): the release that frees the last one
                // gives the record back (`release_kept`). A forgotten guard
                // keeps it ours forever: never reused.
                record.kept.store(true, Relaxed);
            }
        }
    }
}

thread_locals! {
    /// This thread's record, null if none. No destructor: readable to the
    /// end of the thread's teardown.
    static MINE: Cell<*const Record> = const { Cell::new(ptr::null()) };
    /// Set when the lease is gone: no new record for this thread.
    static GONE: Cell<bool> = const { Cell::new(false) };
    static LEASE: Lease = const { Lease };
}

impl Record {
    fn new() -> Record {
        Record {
            handles: std::array::from_fn(|_| AtomicUsize::new(0)),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            owned: AtomicBool::new(true),
            kept: AtomicBool::new(false),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn is_free(&self) -> bool {
        self.handles.iter().all(|h| h.load(Relaxed) == 0)
    }

    /// The entry holding `h`, if any (owner only).
    #[inline]
    pub fn find(&self, h: usize) -> Option<usize> {
        self.handles.iter().position(|e| e.load(Relaxed) == h)
    }

    /// Adds one nested borrow to entry `i` (owner only); false when the
    /// count would overflow.
    #[inline]
    pub fn nest(&self, i: usize) -> bool {
        let n = self.counts[i].load(Relaxed);
        if n == u32::MAX {
            return false;
        }
        self.counts[i].store(n + 1, Relaxed);
        true
    }

    /// R1: publishes `h` in a free entry (count 1), `SeqCst`; `None` when
    /// every entry is taken (owner only).
    #[inline]
    pub fn publish(&self, h: usize) -> Option<usize> {
        let i = self.find(0)?;
        self.counts[i].store(1, Relaxed);
        self.handles[i].store(h, SeqCst);
        seqcst_pair();
        Some(i)
    }

    /// R4: ends one borrow of entry `i`; true when it was the last one and
    /// the entry is now clear (`SeqCst`), and the caller must go on with
    /// R4 (owner only).
    #[inline]
    pub fn unpublish(&self, i: usize) -> bool {
        let n = self.counts[i].load(Relaxed);
        debug_assert!(n > 0, "release of a free reader entry");
        self.counts[i].store(n - 1, Relaxed);
        if n == 1 {
            self.handles[i].store(0, SeqCst);
            seqcst_pair();
            true
        } else {
            false
        }
    }
}

/// This thread's record, taken on first use; `None` when the thread may
/// not have one (late in its teardown).
#[inline]
pub(crate) fn mine() -> Option<&'static Record> {
    let p = MINE.try_with(Cell::get).unwrap_or(ptr::null());
    // SAFETY: records are never freed, and this one is ours.
    match unsafe { p.as_ref() } {
        Some(record) => Some(record),
        None => acquire(),
    }
}

/// After a release that cleared an entry of this thread's `record`: a
/// record its lease kept (live entries at the thread's teardown) goes
/// back to the list once every entry is free, as the lease would have
/// given it. Later record borrows of this thread find no record and
/// none to take (`GONE`), and use the in-word count.
#[inline]
pub(crate) fn release_kept(record: &Record) {
    if record.kept.load(Relaxed) {
        give_back_kept(record);
    }
}

#[cold]
fn give_back_kept(record: &Record) {
    if record.is_free() {
        record.kept.store(false, Relaxed);
        let _ = MINE.try_with(|m| m.set(ptr::null()));
        // No access to the record from this thread after this store.
        record.owned.store(false, Release);
    }
}

/// Whether this thread's record holds `h` (a borrow this thread made).
#[inline]
pub(crate) fn mine_holds(h: usize) -> bool {
    let p = MINE.try_with(Cell::get).unwrap_or(ptr::null());
    // SAFETY: records are never freed.
    unsafe { p.as_ref() }.is_some_and(|r| r.find(h).is_some())
}

#[cold]
fn acquire() -> Option<&'static Record> {
    if GONE.try_with(Cell::get).unwrap_or(true) || LEASE.try_with(|_| ()).is_err() {
        // Too late to promise the record back: no records from now on.
        let _ = GONE.try_with(|gone| gone.set(true));
        return None;
    }
    let mut p = HEAD.load(Acquire);
    // SAFETY: records are never freed.
    while let Some(record) = unsafe { p.as_ref() } {
        if !record.owned.load(Relaxed)
            && record
                .owned
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        {
            if MINE.try_with(|m| m.set(record)).is_err() {
                record.owned.store(false, Release);
                return None;
            }
            return Some(record);
        }
        p = record.next.load(Relaxed);
    }
    let record: &'static Record = Box::leak(Box::new(Record::new()));
    let mut head = HEAD.load(Relaxed);
    loop {
        record.next.store(head, Relaxed);
        // `SeqCst` (R6): before any entry of this record is stored.
        match HEAD.compare_exchange(
            head,
            record as *const Record as *mut Record,
            SeqCst,
            Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => head = now,
        }
    }
    if MINE.try_with(|m| m.set(record)).is_err() {
        record.owned.store(false, Release);
        return None;
    }
    Some(record)
}

/// R3/R5: whether any thread's record holds `h` (`SeqCst` loads).
pub(crate) fn any_holds(h: usize) -> bool {
    // After the caller's claim, orphaning or waiting-writer count.
    seqcst_pair();
    let mut p = HEAD.load(SeqCst);
    // SAFETY: records are never freed; `next` was set before the record
    // was published by the `HEAD` exchange this load synchronizes with.
    while let Some(record) = unsafe { p.as_ref() } {
        if record.handles.iter().any(|e| e.load(SeqCst) == h) {
            return true;
        }
        p = record.next.load(Acquire);
    }
    false
}

/// R3: registers a waiting writer (before its locked rescan).
pub(crate) fn writer_waits() {
    WRITERS.fetch_add(1, SeqCst);
}

/// R3: a waiting writer is done.
pub(crate) fn writer_done() {
    WRITERS.fetch_sub(1, SeqCst);
}

/// R4: whether a writer may be waiting for a record to clear (after the
/// caller cleared its entry).
#[inline]
pub(crate) fn writers_waiting() -> bool {
    WRITERS.load(SeqCst) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_publish_nest_and_clear() {
        let r = mine().unwrap();
        let h = 0x7777_0001;
        assert!(!mine_holds(h));
        let i = r.publish(h).unwrap();
        assert!(mine_holds(h) && any_holds(h));
        assert!(r.nest(i));
        assert!(!r.unpublish(i));
        assert!(any_holds(h));
        assert!(r.unpublish(i));
        assert!(!any_holds(h) && !mine_holds(h));
    }

    use crate::slot::{EXCLUSIVE, SHARED};
    use crate::{Error, Registry};
    use std::sync::atomic::AtomicBool;

    fn wait_for(mut cond: impl FnMut() -> bool) {
        while !cond() {
            std::thread::yield_now();
        }
    }

    /// A first record borrow puts the slot in shared mode; an exclusive
    /// borrow keeps it; a never-shared slot stays without it.
    #[test]
    fn shared_mode_is_set_by_the_first_record_borrow_and_stays() {
        let r = Registry::new();
        let p = r.save(1u8);
        let q = r.save(2u8);
        drop(r.restore::<u8>(q).unwrap());
        assert_eq!(r.word(q) & SHARED, 0);
        let g = r.restore_ref::<u8>(p).unwrap();
        assert_ne!(r.word(p) & SHARED, 0);
        assert_eq!(
            r.word(p) & !crate::slot::BORROW_BITS & 0xff,
            crate::slot::LIVE
        );
        drop(g);
        drop(r.restore::<u8>(p).unwrap());
        assert_ne!(r.word(p) & SHARED, 0);
        assert_eq!(r.take::<u8>(p), Ok(1));
        assert_eq!(r.take::<u8>(q), Ok(2));
    }

    /// A thread that holds a record borrow nests another one while a
    /// writer of the same handle is pending (announced, waiting for it):
    /// no deadlock. Once the handle is unreffed, the nested attempt is
    /// `Stale`, and the last release drops the value.
    #[test]
    fn nested_record_borrow_while_a_writer_is_pending() {
        for unref in [false, true] {
            let r = Registry::new();
            let drops = std::sync::Arc::new(AtomicUsize::new(0));
            struct D(std::sync::Arc<AtomicUsize>, u32);
            impl Drop for D {
                fn drop(&mut self) {
                    self.0.fetch_add(1, SeqCst);
                }
            }
            let p = r.save(D(drops.clone(), 3));
            let addr = p.addr();
            let wrote = AtomicBool::new(false);
            std::thread::scope(|s| {
                let g = r.restore_ref::<D>(p).unwrap();
                let writer = s.spawn(|| {
                    let p = std::ptr::without_provenance_mut(addr);
                    match r.restore::<D>(p) {
                        Ok(mut g) => {
                            assert!(!unref, "removed while it waited");
                            g.1 += 1;
                            wrote.store(true, SeqCst);
                        }
                        Err(e) => assert!(unref && e == Error::Stale, "{e:?}"),
                    }
                });
                wait_for(|| r.word(p) & EXCLUSIVE != 0);
                if unref {
                    r.unref(p).unwrap();
                    assert_eq!(r.restore_ref::<D>(p).err(), Some(Error::Stale));
                } else {
                    let nested = r.restore_ref::<D>(p).unwrap();
                    assert_eq!(nested.1, 3);
                    assert_eq!(r.restore::<D>(p).err(), Some(Error::Busy));
                    drop(nested);
                }
                assert!(!wrote.load(SeqCst));
                drop(g);
                writer.join().unwrap();
            });
            if unref {
                assert_eq!(drops.load(SeqCst), 1);
            } else {
                assert!(wrote.load(SeqCst));
                assert_eq!(r.take::<D>(p).map(|d| d.1), Ok(4));
            }
            assert!(r.is_empty());
        }
    }

    #[test]
    fn a_full_record_refuses_and_records_are_reused_only_when_free() {
        let hs: Vec<usize> = (0..ENTRIES).map(|i| 0x5555_0001 + (i << 8)).collect();
        let (entries, first) = std::thread::scope(|s| {
            s.spawn(|| {
                let r = mine().unwrap();
                let entries: Vec<usize> = hs.iter().map(|&h| r.publish(h).unwrap()).collect();
                assert!(r.publish(1).is_none(), "full");
                for &i in &entries[1..] {
                    r.unpublish(i);
                }
                // Entry 0 is left set: a forgotten guard.
                (entries, r as *const Record as usize)
            })
            .join()
            .unwrap()
        });
        assert_eq!(entries.len(), ENTRIES);
        assert!(any_holds(hs[0]), "the forgotten entry stays visible");
        // A thread that starts now never gets the record with a live entry.
        let second = std::thread::spawn(|| mine().unwrap() as *const Record as usize)
            .join()
            .unwrap();
        assert_ne!(first, second);
    }
}
