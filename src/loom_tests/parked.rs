//! Loom models of the handshake of parked borrows, on a model slot: the
//! protocol, its transitions 1 to 8 and its barrier pair are stated in
//! [`parked`](crate::parked), and the registry's parked paths are off under
//! loom (its heavy barrier is a system call). The model follows the
//! registry's code transition by transition, with a `SeqCst` fence for
//! each side of the barrier pair, which gives the Dekker guarantee the real
//! pair gives.
//!
//! # What the models check
//!
//! Slot words here are a small encoding of the registry's (generation,
//! owner id, the four flags). The value is a loom cell: every access
//! (owner inside, stealer's borrow, the drop) must be ordered after the
//! previous ones, or loom fails the model; a lost wake-up is a deadlock.
//! The first three pass with `LOOM_MAX_PREEMPTIONS=7` (171 s; CI runs
//! them at 4, about 2 s). They were checked against seeded bugs (2026-11-27): with
//! either barrier weakened to an `Acquire` fence, all three fail (loom:
//! concurrent writes to the value); with step 8's two disposers not
//! arbitrated by an exchange, both unref models fail; without step 5's
//! reload, loom reports the deadlock. Two more (2026-11-28) start from a
//! stale enter, with a generation the slot has left: racing an unref of
//! the slot's next value, it fails when step 4 disposes only of an orphan
//! of the generation the owner entered with; racing a steal, loom reports
//! a deadlock when step 4 wakes only for that generation's flagged word.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::model;

const LIVE: usize = 0b0001;
const EXCL: usize = 0b0010;
const WAITING: usize = 0b0100;
const PARKED: usize = 0b1000;
const ID_SHIFT: u32 = 4;
const GENERATION_SHIFT: u32 = 8;
/// The parking thread's owner id, and any other thread's.
const OWNER: usize = 1;
const OTHER: usize = 2;

const fn at(g: usize) -> usize {
    g << GENERATION_SHIFT
}
const fn live(g: usize) -> usize {
    at(g) | LIVE
}
const fn exclusive(g: usize, id: usize) -> usize {
    live(g) | EXCL | (id << ID_SHIFT)
}
const fn parked(g: usize, id: usize) -> usize {
    exclusive(g, id) | PARKED
}
const fn generation(word: usize) -> usize {
    word >> GENERATION_SHIFT
}
const fn owner_of(word: usize) -> usize {
    (word >> ID_SHIFT) & 0xF
}

/// The owner's side of the Dekker pair: a compiler fence in the real code.
fn light_barrier() {
    fence(Ordering::SeqCst);
}

/// Every other thread's side: `membarrier` in the real code.
fn heavy_barrier() {
    fence(Ordering::SeqCst);
}

/// How the caller holds the slot.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Held {
    /// Inside a parked borrow (the owner's fast path).
    Parked,
    /// A real exclusive borrow, as today.
    Exclusive,
}

/// One slot, the owner's record, the registry's wait lock.
struct Slot {
    state: AtomicUsize,
    value: UnsafeCell<u64>,
    drops: AtomicUsize,
    /// `OWNER`'s record: 1 while it is inside this slot's parked borrow.
    held: AtomicUsize,
    lock: Mutex<()>,
    woken: Condvar,
}

// SAFETY: the value is reached through loom's cell, which fails the model
// on any access the protocol does not order: that is what is checked.
unsafe impl Sync for Slot {}

impl Slot {
    /// A live slot at generation 0 that `OWNER` restored and parked
    /// (transitions 1 and 2 of today's protocol, then park).
    fn parked_by_owner() -> Slot {
        Slot::parked_by_owner_at(0)
    }

    /// The same at generation `g`.
    fn parked_by_owner_at(g: usize) -> Slot {
        let slot = Slot {
            state: AtomicUsize::new(live(g)),
            value: UnsafeCell::new(0),
            drops: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            lock: Mutex::new(()),
            woken: Condvar::new(),
        };
        assert!(slot.borrow_slow(g, OWNER));
        slot.write();
        slot.release(g, OWNER, true);
        assert_eq!(slot.state.load(Ordering::Relaxed), parked(g, OWNER));
        slot
    }

    fn write(&self) {
        // SAFETY: loom checks the access is ordered after every other.
        self.value.with_mut(|p| unsafe { *p += 1 });
    }

    fn wake_all(&self) {
        let _lock = self.lock.lock().unwrap();
        self.woken.notify_all();
    }

    /// Steps 2 and 4: the owner's `restore`. `None`: stale.
    fn enter(&self, g: usize) -> Option<Held> {
        self.held.store(1, Ordering::Relaxed);
        light_barrier();
        if self.state.load(Ordering::Acquire) == parked(g, OWNER) {
            return Some(Held::Parked);
        }
        self.held.store(0, Ordering::Release);
        light_barrier();
        self.after_leaving();
        self.borrow_slow(g, OWNER).then_some(Held::Exclusive)
    }

    /// Step 3: the owner's guard drop.
    fn leave(&self, g: usize, held: Held) {
        match held {
            Held::Parked => {
                self.held.store(0, Ordering::Release);
                light_barrier();
                self.after_leaving();
            }
            Held::Exclusive => self.release(g, OWNER, true),
        }
    }

    /// Step 4, as the registry's `after_leaving`. A parked orphan of
    /// `OWNER`'s is disposed of whatever its generation, and any other
    /// word with `WAITING` wakes all: the owner may have entered with a
    /// generation the slot has left (a stale hot handle's enter), whose
    /// listing an unref or a stealer may still have seen.
    fn after_leaving(&self) {
        let word = self.state.load(Ordering::Acquire);
        if word & (LIVE | PARKED) == PARKED && owner_of(word) == OWNER {
            self.dispose(word);
        } else if word & WAITING != 0 {
            self.wake_all();
        }
    }

    /// Today's slow path, with steps 5 and 6 for parked words. `false`:
    /// stale.
    fn borrow_slow(&self, g: usize, me: usize) -> bool {
        loop {
            let word = self.state.load(Ordering::Acquire);
            if generation(word) != g || word & LIVE == 0 {
                return false;
            }
            if word == live(g) {
                if self
                    .state
                    .compare_exchange(word, exclusive(g, me), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if word & PARKED != 0 && owner_of(word) == me {
                // Step 6: our own park, with a waiter; we are outside.
                self.unpark(word);
                continue;
            }
            if word & PARKED != 0 {
                // Step 5.
                if word & WAITING == 0
                    && self
                        .state
                        .compare_exchange(
                            word,
                            word | WAITING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_err()
                {
                    continue;
                }
                heavy_barrier();
                let lock = self.lock.lock().unwrap();
                if self.held.load(Ordering::Acquire) == 0 {
                    drop(lock);
                    self.unpark(word | WAITING);
                } else if self.state.load(Ordering::Relaxed) == word | WAITING {
                    // Only while the flag is still there: a word read
                    // before an unpark may carry a `WAITING` the owner will
                    // never see (the model's first draft lost that wake-up).
                    drop(self.woken.wait(lock).unwrap());
                }
                continue;
            }
            // Another thread's real borrow: today's wait (flag the exact
            // word under the lock, then wait; its release wakes us).
            let lock = self.lock.lock().unwrap();
            let flagged = word & WAITING != 0
                || self
                    .state
                    .compare_exchange(word, word | WAITING, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if flagged && self.state.load(Ordering::Relaxed) == word | WAITING {
                drop(self.woken.wait(lock).unwrap());
            }
        }
    }

    /// `Parked + WAITING` → `Live`, waking all (steps 5 and 6). Losing the
    /// exchange means another did it, or the word moved on: retry.
    fn unpark(&self, word: usize) {
        let g = generation(word);
        if self
            .state
            .compare_exchange(word, live(g), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            && word & WAITING != 0
        {
            self.wake_all();
        }
    }

    /// Today's release of a real exclusive borrow; `park`: step 1.
    fn release(&self, g: usize, me: usize, park: bool) {
        let target = if park { parked(g, me) } else { live(g) };
        let mut seen = exclusive(g, me);
        loop {
            let new = if seen & LIVE == 0 {
                // Orphaned by an unref: the last borrower drops.
                at(g + 1)
            } else if seen & WAITING != 0 {
                live(g)
            } else {
                target
            };
            match self
                .state
                .compare_exchange(seen, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if seen & LIVE == 0 {
                        self.drop_value();
                    }
                    if seen & WAITING != 0 {
                        self.wake_all();
                    }
                    return;
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Step 7 (and today's unref of other words).
    fn unref(&self, g: usize, me: usize) {
        loop {
            let word = self.state.load(Ordering::Acquire);
            if generation(word) != g || word & LIVE == 0 {
                return;
            }
            let orphan = (word & !LIVE) + at(1);
            let new = if word == live(g) { at(g + 1) } else { orphan };
            if self
                .state
                .compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if word == live(g) {
                self.drop_value();
            } else if word & PARKED != 0 {
                assert_ne!(me, OWNER, "the models unref from the other thread");
                heavy_barrier();
                if self.held.load(Ordering::Acquire) == 0 {
                    self.dispose(orphan);
                }
            }
            return;
        }
    }

    /// Step 8.
    fn dispose(&self, orphan: usize) {
        let vacant = at(generation(orphan));
        if self
            .state
            .compare_exchange(orphan, vacant, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.drop_value();
            if orphan & WAITING != 0 {
                self.wake_all();
            }
        }
    }

    fn drop_value(&self) {
        self.write();
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Parks a slot on the model's main thread (the owner), runs `other` on a
/// second thread while the owner enters, writes and leaves `rounds` times
/// (skipping a round once the handle is stale), and returns the slot when
/// both are done.
fn against_the_owner(rounds: usize, other: impl FnOnce(&Slot) + Send + 'static) -> Arc<Slot> {
    let slot = Arc::new(Slot::parked_by_owner());
    let thread = {
        let slot = slot.clone();
        thread::spawn(move || other(&slot))
    };
    for _ in 0..rounds {
        if let Some(held) = slot.enter(0) {
            slot.write();
            slot.leave(0, held);
        }
    }
    thread.join().unwrap();
    slot
}

/// The owner, whose hot handle is still generation 0's, enters through
/// it while `other` runs on a second thread: the slot has left generation
/// 0 (its value taken, the index saved again at generation 1 and parked by
/// the owner), so the enter fails. Returns the slot when both are done.
fn stale_enter_against(other: impl FnOnce(&Slot) + Send + 'static) -> Arc<Slot> {
    let slot = Arc::new(Slot::parked_by_owner_at(1));
    let thread = {
        let slot = slot.clone();
        thread::spawn(move || other(&slot))
    };
    assert_eq!(slot.enter(0), None, "generation 0 is stale");
    thread.join().unwrap();
    slot
}

/// The other thread's borrow of generation `g` (a steal), its write and
/// its release; `false` when the handle was stale.
fn borrow_and_write(slot: &Slot, g: usize) -> bool {
    let live = slot.borrow_slow(g, OTHER);
    if live {
        slot.write();
        slot.release(g, OTHER, false);
    }
    live
}

/// The owner enters and leaves its parked borrow twice, writing each time,
/// while the other thread borrows the slot (a steal) and writes. All three
/// writes land, ordered; no lost wake-up.
#[test]
fn a_steal_waits_for_the_owner_inside() {
    model(|| {
        let slot = against_the_owner(2, |slot| assert!(borrow_and_write(slot, 0)));
        // SAFETY: both threads are done.
        assert_eq!(slot.value.with(|p| unsafe { *p }), 4);
        let word = slot.state.load(Ordering::Relaxed);
        assert!(word == live(0) || word == parked(0, OWNER), "{word:#x}");
    });
}

/// The other thread unrefs the parked handle while the owner enters it,
/// writes and leaves: the value is dropped exactly once, after the owner's
/// last access, and the slot ends vacant.
#[test]
fn an_unref_races_the_owners_fast_borrow() {
    model(|| {
        let slot = against_the_owner(1, |slot| slot.unref(0, OTHER));
        assert_eq!(slot.drops.load(Ordering::Relaxed), 1);
        assert_eq!(slot.state.load(Ordering::Relaxed), at(1));
    });
}

/// A steal and an unref from the other thread, back to back, against two
/// owner borrows: the unref removes the steal's `Live` word or the owner's
/// re-park, and the value still drops once.
#[test]
fn a_steal_then_an_unref_against_the_owner() {
    model(|| {
        let slot = against_the_owner(2, |slot| {
            borrow_and_write(slot, 0);
            slot.unref(0, OTHER);
        });
        assert_eq!(slot.drops.load(Ordering::Relaxed), 1);
        assert_eq!(slot.state.load(Ordering::Relaxed), at(1));
    });
}

/// The owner enters through a stale hot handle (see
/// [`stale_enter_against`]) while the other thread unrefs generation 1's
/// value. The failed enter's listing may make the unref leave the drop to
/// the owner, whose leave must then dispose of the orphan though it is not
/// of the generation it entered with. The value drops once (the
/// registry's step 4 once required the generation too, and leaked it:
/// `tests/adversarial_parked.rs`).
#[test]
fn a_stale_enter_races_an_unref_of_the_next_value() {
    model(|| {
        let slot = stale_enter_against(|slot| slot.unref(1, OTHER));
        assert_eq!(slot.drops.load(Ordering::Relaxed), 1);
        assert_eq!(slot.state.load(Ordering::Relaxed), at(2));
    });
}

/// The same stale enter racing a steal of the slot's next value: the
/// stealer may see the stale listing and wait, and only the owner's step 4
/// wakes it, though the word it finds is not of the generation it entered
/// with (a step 4 that woke only for `Parked(g, T) + WAITING` deadlocks
/// here; found by a review of the fix above).
#[test]
fn a_stale_enter_races_a_steal_of_the_next_value() {
    model(|| {
        let slot = stale_enter_against(|slot| assert!(borrow_and_write(slot, 1)));
        // SAFETY: both threads are done.
        assert_eq!(slot.value.with(|p| unsafe { *p }), 2);
    });
}
