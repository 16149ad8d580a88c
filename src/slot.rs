//! One handle's slot: its state word, its type, and the value stored inline.
//!
//! # Why slots look like this
//!
//! A `restore` is the operation every callback pays for, so a slot is laid
//! out around it: one 64-byte line per handle, aligned, holding a single
//! atomic *state word* that packs the generation, liveness and borrow state.
//! A borrow is then **one compare-exchange** whose expected value is built
//! from the handle itself: it checks generation, liveness and "not
//! borrowed" at once. Releasing is one more. No lock, no second line, and
//! no two handles share a cache line, so threads working on different
//! handles never slow each other down.
//!
//! Values of up to [`INLINE_BYTES`] (40 on 64-bit targets) whose alignment
//! is at most a word's are stored in the slot itself; larger ones are boxed
//! and the slot holds the box's pointer.
//!
//! # The state word
//!
//! ```text
//! 64-bit:  63          32 31                  8     7       6        5       4       3        2       1      0
//!         +-------------+----------------------+--------+--------+--------+-------+--------+--------+------+------+
//!         | generation  | borrow: owner id     | PARKED | SHARED | COUNTED| PINNED| RETIRED| WAITING| EXCL | LIVE |
//!         |  (32 bits)  | (EXCL) or readers(24)|        |        |        |       |        |        |      |      |
//!         +-------------+----------------------+--------+--------+--------+-------+--------+--------+------+------+
//! 32-bit:   generation 12 bits (31..20), borrow 12 bits (19..8), same flags.
//! ```
//!
//! The borrow field bounds both the number of threads that can hold an
//! owner id and the number of in-word readers of one value at once:
//! 2^24 - 1 on 64-bit targets, 4 095 on 32-bit ones (two bits fewer than
//! before `SHARED` and `PARKED` took their places; see
//! [`thread`](crate::thread) for what happens past it). Most shared borrows are not counted here at all but
//! in per-thread reader records (`SHARED` below).
//!
//! The generation is the handle's (see [`handle`](crate::handle)); the
//! owner id is a small per-thread number (see [`thread`](crate::thread)).
//!
//! # States and transitions
//!
//! Write `g` for the generation, `t` for a thread's owner id, `n` for a
//! reader count. `W` is the `WAITING` flag, which may ride on any borrowed
//! state.
//!
//! | state | word | meaning |
//! |---|---|---|
//! | Vacant(g) | `g` | no value; the index is free, or owned by the thread filling or emptying it |
//! | Live(g) | `g LIVE` | holds the value of handle generation `g`, not borrowed |
//! | Excl(g, t) | `g LIVE EXCL t [W]` | borrowed exclusively by thread `t` |
//! | Shared(g, n) | `g LIVE n [W]` | borrowed by `n ≥ 1` readers |
//! | Orphan(g') | `g' EXCL t [W]` or `g' n [W]` | removed while borrowed: not `LIVE`, generation already moved on; the last borrower drops the value |
//! | Retired | `max RETIRED` | the generation is exhausted; never reused |
//! | …, shared mode | any of the above with `SHARED` | readers may also hold the value through reader records |
//! | Orphan(g'), shared mode | `g' SHARED` (+ borrow bits while in-word borrows last) | removed while record readers may hold it; see [`readers`](crate::readers) |
//! | Parked(g, t) | `g LIVE EXCL PARKED t [W]` | exclusively borrowed by owner id `t`, which keeps the borrow between its restores; nobody is inside unless `t`'s record says so (see [`parked`](crate::parked)) |
//! | parked orphan | `g' EXCL PARKED t [W]` | a parked word removed; whoever wins one exchange disposes of it ([`parked`](crate::parked), step 8) |
//!
//! `SHARED` ("shared mode") is set on a live slot, by a compare-exchange,
//! the first time a reader borrows it through its thread's *reader record*
//! (see [`readers`](crate::readers), which states that protocol, with its
//! transitions R1 to R6). A reader record borrow never writes the word:
//! that is the point, many threads read one value without bouncing its
//! line. In exchange, every exclusive borrow of a shared-mode slot
//! announces itself on the word (it takes `EXCL` as usual) and then scans
//! the records, waiting until no record holds the handle; and every
//! removal of a shared-mode slot keeps `SHARED` on the orphan until the
//! last record reader is gone, when exactly one thread clears it and drops
//! the value. `SHARED` never leaves a live slot, so a word whose last
//! exchange expected no `SHARED` (the exclusive fast path, which builds its
//! expected word as `g LIVE`) can never race a record reader: plain
//! exclusive borrows of never-shared slots stay one compare-exchange.
//! Every read-modify-write of a word that may carry `SHARED` outside the
//! exclusive fast path is `SeqCst`, because it pairs with `SeqCst` record
//! operations (Dekker-style, see [`readers`](crate::readers)).
//!
//! `COUNTED` marks a live value that was [`retain`](crate::Registry::retain)ed
//! at least once: its reference count lives in the registry's side table
//! (see [`kinds::counted`](crate::kinds)), and every removal of such a
//! value goes through that table's lock. It rides on any live state (Live,
//! Excl, Shared; set by a compare-exchange that expects the live
//! generation) and leaves with the removal (`removed` drops it). A plain
//! handle never has it, so the fast paths, whose expected words are built
//! without it, are untouched: a counted value's borrow and unref simply
//! fail their first exchange and take the slow path, which keeps the flag.
//!
//! `PINNED` marks a slot published already borrowed by the thread that
//! saved it, for the whole of a [`scope`](crate::Registry::scope): its
//! value must not be reached from any other thread, so a borrow attempt
//! from another thread that meets it answers `WrongThread` instead of
//! waiting. It leaves with the borrow (the scope's end makes the slot
//! vacant directly, never `Live`).
//!
//! 1. **save** (Vacant(g) → Live(g)): the thread that owns a free index
//!    writes the type, the save site and the value, then *stores* the word
//!    with `Release`. A plain store is enough: no other thread writes a
//!    vacant slot's word (borrowers' compare-exchanges expect `LIVE` and
//!    fail; waiters only flag borrowed states; the previous value's last
//!    borrower finished its writes before the index was freed).
//! 2. **restore** (Live(g) → Excl(g, t)), **restore_ref** (Live(g) or
//!    Shared(g, n) → Shared(g, n + 1)): one compare-exchange, `Acquire`, so
//!    the saver's and the previous borrowers' writes to the value are
//!    visible. The type is checked after the borrow is held. A
//!    `restore_ref` first tries its thread's reader record, which leaves
//!    the word alone (or only adds `SHARED` once); the in-word count is its
//!    fallback (see [`readers`](crate::readers)). An exclusive borrow of a
//!    shared-mode word takes `EXCL` with a `SeqCst` exchange, then waits
//!    for the records (R3).
//! 3. **release**: one compare-exchange back, `Release` (`SeqCst` in the
//!    code, for the reader records: see [`readers`](crate::readers)), from
//!    the exact word the borrow set. It fails only when someone flagged the
//!    word meanwhile (a waiter set `W`, a `retain` set `COUNTED`, or an
//!    `unref` orphaned it); the slow path then clears `W` and wakes the
//!    waiters, or, as the last borrower of an orphan, makes the slot
//!    vacant, drops the value and frees the index. The last borrower's
//!    exchange is `AcqRel` at least: it acquires every other borrower's
//!    release (one release sequence of read-modify-writes) before it drops
//!    the value.
//! 4. **unref** (Live(g) → Vacant(g + 1) and drop; or borrowed →
//!    Orphan(g + 1)): one compare-exchange, `AcqRel`. The handle is stale
//!    the moment it succeeds, and unref never waits: a borrowed value is
//!    left to its last borrower. At the maximum generation the slot becomes
//!    Retired instead, and its index is never freed.
//! 5. **take**: an exclusive borrow (step 2, waiting if needed), then
//!    Excl(g, t) → Vacant(g + 1) or Retired, and the value is moved out.
//! 6. **waiting**: a thread blocked by another thread's borrow sets `W` on
//!    the exact word that blocked it, under the registry's wait lock, and
//!    parks. Whoever clears `W` (always together with ending a borrow)
//!    wakes all waiters under that lock, so a wake-up cannot fall between a
//!    waiter's flagging and its parking. Woken threads redo the lookup.
//! 7. **an index is freed only from Vacant**, by the thread that made it
//!    vacant, after the value was dropped: a saver who gets the index from
//!    the free list owns the slot outright.
//!
//! 8. **retain** (Live(g), Excl(g, t) or Shared(g, n) → the same word
//!    with `COUNTED`): under the registry's count lock, a compare-exchange
//!    loop that expects the live generation `g` (so it answers `Stale`
//!    against a removal that landed first), then the handle's count in the
//!    side table goes up by one (a first retain records 2). `Relaxed` is
//!    enough: retain never touches the value, and the count table is
//!    ordered by its lock.
//! 9. **counted removal**: an `unref` or `take` that sees `COUNTED` takes
//!    the count lock and re-reads the word. An `unref` with a count above
//!    one only decrements it; at the last reference it makes transition 4
//!    *while still holding the lock* and removes the table entry, then
//!    drops the lock before it drops the value. A `take` (transition 5)
//!    holding its exclusive borrow answers `Retained` when the count is
//!    above one, releasing the borrow and changing nothing; otherwise it
//!    removes under the lock as `unref` does. A scope's end removes its
//!    record whatever the count (every retained copy answers `Stale`
//!    after). Since every removal of a `COUNTED` word happens under the
//!    lock, and a removal that did not see `COUNTED` fails its exchange if
//!    a retain set it meanwhile, a retain can never revive a dying value:
//!    either its exchange lands first (and the removal sees the count), or
//!    the removal does (and the retain sees a new generation: `Stale`).
//!    Invariant: a table entry exists exactly while its handle's word is
//!    live with `COUNTED`.
//!
//! 10. **parking** (Excl(g, t) → Parked(g, t), and back to Live(g)): a
//!     thread that keeps restoring one handle ends its exclusive borrow by
//!     parking it instead of releasing it, and later enters and leaves it
//!     with plain stores and loads; any other thread (or path) that meets a
//!     parked word first makes the owner leave and turns it back into
//!     `Live(g)`. Only a plain exclusive word parks (no `WAITING`,
//!     `COUNTED`, `SHARED`, `PINNED`); `retain` may add `COUNTED` to a
//!     parked word, which then no longer matches the owner's fast path. The
//!     protocol, its orderings and its barrier pair are in
//!     [`parked`](crate::parked).
//!
//! Any integer that decodes to an index of an allocated page reaches a real
//! slot; every other integer is refused before memory is touched. A failed
//! exchange returns the word it saw, and the error is read off that word:
//! an older generation is `Stale`, a newer one `Invalid`, our own borrow
//! `Busy`, another thread's a reason to wait.

use std::any::{type_name, Any, TypeId};
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::Location;
use std::ptr;

use crate::handle::Layout;
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::UnsafeCell;

pub(crate) const LIVE: usize = 0b0001;
pub(crate) const EXCLUSIVE: usize = 0b0010;
pub(crate) const WAITING: usize = 0b0100;
pub(crate) const RETIRED: usize = 0b1000;
pub(crate) const PINNED: usize = 0b1_0000;
pub(crate) const COUNTED: usize = 0b10_0000;
/// Shared mode: reader records may hold the value (see `readers`).
pub(crate) const SHARED: usize = 0b100_0000;
/// A parked exclusive borrow (see `parked`).
pub(crate) const PARKED: usize = 0b1000_0000;
const BORROW_SHIFT: u32 = 8;
const GENERATION_SHIFT: u32 = usize::BITS - Layout::NATIVE.generation_bits;
/// The borrow field: an owner id or a reader count.
const BORROW_MASK: usize = ((1 << GENERATION_SHIFT) - 1) & !((1 << BORROW_SHIFT) - 1);
const GENERATION_MASK: usize = !((1 << GENERATION_SHIFT) - 1);
/// Every bit a borrow or a waiter may change.
pub(crate) const BORROW_BITS: usize = EXCLUSIVE | WAITING | PINNED | SHARED | PARKED | BORROW_MASK;
/// One reader.
pub(crate) const READER: usize = 1 << BORROW_SHIFT;
/// The largest owner id or reader count the borrow field holds.
pub(crate) const MAX_BORROW: usize = BORROW_MASK >> BORROW_SHIFT;

/// Bytes of value a slot stores without boxing.
pub(crate) const INLINE_BYTES: usize = 64 - 3 * size_of::<usize>();

type Storage = MaybeUninit<[usize; INLINE_BYTES / size_of::<usize>()]>;

/// What the registry knows of a value's type without knowing the type.
pub(crate) struct VTable {
    /// The type's id, as data where the compiler can compute it in a
    /// constant (Rust 1.91 and later: `build.rs` sets the cfg), so that the
    /// type check of every `restore` is a load and a compare, not an
    /// indirect call; as a function before that.
    #[cfg(handle_registry_const_type_id)]
    type_id: TypeId,
    #[cfg(not(handle_registry_const_type_id))]
    type_id: fn() -> TypeId,
    pub type_name: fn() -> &'static str,
    /// Drops the value stored in a slot (the caller owns the slot); `None`
    /// when there is nothing to do (an inline value without drop glue).
    drop_value: Option<unsafe fn(*mut Storage)>,
}

impl VTable {
    /// The id of the type this vtable was made for.
    #[inline]
    fn type_id(&self) -> TypeId {
        #[cfg(handle_registry_const_type_id)]
        return self.type_id;
        #[cfg(not(handle_registry_const_type_id))]
        return (self.type_id)();
    }
}

/// One handle's slot. 64 bytes, on a line of its own.
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub state: AtomicUsize,
    /// The value's type; null while vacant. Written only by the thread that
    /// owns a vacant slot, published by the `Release` store of `state`.
    vtable: AtomicPtr<VTable>,
    /// Where the value was saved, for the leak report.
    site: AtomicPtr<Location<'static>>,
    value: UnsafeCell<Storage>,
}

// SAFETY: the value is reached only by the thread that holds the slot's
// borrow (exclusive: `T: Send` moves access between threads like a mutex;
// shared: `restore_ref` requires `T: Sync`) or that owns the vacant slot;
// the protocol above orders those accesses. Every other field is atomic.
unsafe impl Sync for Slot {}
// SAFETY: values stored are `Send`; see above.
unsafe impl Send for Slot {}

// (Loom's atomics are larger: under the model a slot spans more lines.)
#[cfg(not(all(loom, test)))]
const _: () = assert!(size_of::<Slot>() == 64);

/// Per-type operations, as data.
struct Erased<T>(std::marker::PhantomData<T>);

impl<T: Any + Send> Erased<T> {
    const INLINE: bool = size_of::<T>() <= INLINE_BYTES && align_of::<T>() <= align_of::<usize>();
    // `TypeId::of` is const from Rust 1.91, past the crate's MSRV: the cfg
    // is only set where the compiler accepted it (`build.rs`).
    #[cfg_attr(handle_registry_const_type_id, allow(clippy::incompatible_msrv))]
    const VTABLE: VTable = VTable {
        #[cfg(handle_registry_const_type_id)]
        type_id: TypeId::of::<T>(),
        #[cfg(not(handle_registry_const_type_id))]
        type_id: TypeId::of::<T>,
        type_name: type_name::<T>,
        drop_value: if Self::INLINE && !std::mem::needs_drop::<T>() {
            None
        } else {
            Some(Self::drop_value)
        },
    };

    /// # Safety
    /// `storage` holds a `T` written by [`Slot::fill`], owned by the caller.
    unsafe fn drop_value(storage: *mut Storage) {
        // SAFETY: per the caller, and `fill` used the same representation.
        unsafe {
            if Self::INLINE {
                ptr::drop_in_place(storage.cast::<T>());
            } else {
                drop(Box::from_raw(storage.cast::<*mut T>().read()));
            }
        }
    }
}

/// The generation part of a word.
#[inline]
pub(crate) const fn generation(word: usize) -> u32 {
    ((word & GENERATION_MASK) >> GENERATION_SHIFT) as u32
}

/// The word of a slot at generation `g` with no other bit set.
#[inline]
pub(crate) const fn at(g: u32) -> usize {
    (g as usize) << GENERATION_SHIFT
}

/// The borrow field of a word.
#[inline]
pub(crate) const fn borrow(word: usize) -> usize {
    (word & BORROW_MASK) >> BORROW_SHIFT
}

/// The word that an exclusive borrow by owner `id` of `Live(g)` sets.
#[inline]
pub(crate) const fn exclusive(g: u32, id: usize) -> usize {
    at(g) | LIVE | EXCLUSIVE | (id << BORROW_SHIFT)
}

/// The word of owner `id`'s parked borrow of `Live(g)`.
#[inline]
pub(crate) const fn parked(g: u32, id: usize) -> usize {
    exclusive(g, id) | PARKED
}

/// `word` with its borrow, `WAITING`, `PINNED` and `PARKED` cleared.
#[inline]
pub(crate) const fn unborrowed(word: usize) -> usize {
    word & !(EXCLUSIVE | WAITING | PINNED | PARKED | BORROW_MASK)
}

/// Whether `word` is borrowed (by anyone, live or orphaned).
#[inline]
pub(crate) const fn is_borrowed(word: usize) -> bool {
    word & (EXCLUSIVE | BORROW_MASK) != 0
}

/// The word after `unref` or `take` of a slot at generation `g`, with the
/// borrow bits of `word` kept (they are zero unless orphaning). `SHARED`
/// is dropped: callers that must keep it (an orphan that record readers may
/// still hold) add it back.
#[inline]
pub(crate) fn removed(word: usize, max_generation: u32) -> usize {
    let g = generation(word);
    let keep = word & (EXCLUSIVE | WAITING | PINNED | PARKED | BORROW_MASK);
    if g == max_generation {
        at(g) | RETIRED | keep
    } else {
        at(g + 1) | keep
    }
}

/// The word of a shared-mode slot whose value of generation `g` was
/// removed and whose in-word borrows (if any) all ended: only the record
/// readers may still hold it (see [`readers`](crate::readers), R5).
#[inline]
pub(crate) fn orphan(g: u32) -> usize {
    removed(at(g) | LIVE, Layout::NATIVE.max_generation()) | SHARED
}

/// The generation of the value that the removed word `word` (not `LIVE`)
/// was orphaned from.
#[inline]
pub(crate) fn orphaned_generation(word: usize) -> u32 {
    if word & RETIRED != 0 {
        generation(word)
    } else {
        generation(word).wrapping_sub(1)
    }
}

impl Slot {
    /// An empty slot at generation `g`. (Not `const`: loom's atomics are
    /// not, see [`sync`](crate::sync).) Outside the model and the unit
    /// tests, pages are zeroed instead (see
    /// [`page_memory`](crate::page_memory)).
    #[cfg(test)]
    pub fn vacant(g: u32) -> Slot {
        Slot {
            state: AtomicUsize::new(at(g)),
            vtable: AtomicPtr::new(ptr::null_mut()),
            site: AtomicPtr::new(ptr::null_mut()),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Makes a slot never handed out Vacant(`base`), the registry's first
    /// generation, before the free list first hands its index out.
    ///
    /// A store, not a new `Slot` written over the old: other threads may
    /// load this word meanwhile through a forged handle (a lookup reaches
    /// any slot of an allocated page), and they see Vacant(0) or
    /// Vacant(`base`), which answer alike (see `Registry::refusal`).
    /// Nothing else writes a word that was never handed out: every
    /// read-modify-write of a word expects a value that a saver or a
    /// borrower produced.
    ///
    /// `Relaxed` is enough: the index reaches a saver only through the free
    /// list, whose mutex this store is made under (a later `take` locks it
    /// again), or through the cache of the thread that took it under that
    /// lock. Either way the store happens before the saver's `fill`, whose
    /// load then reads it (or a later store) by coherence, and whose
    /// `Release` store of the live word comes after it in the word's
    /// modification order, so whoever acquires the live word never reads
    /// the zero again.
    pub fn set_fresh(&self, base: u32) {
        self.state.store(at(base), Ordering::Relaxed);
    }

    /// Moves `value` in and makes the slot `Live` (transition 1), with
    /// the bits `borrow` set as well (zero, or an exclusive borrow by the
    /// caller's thread, `PINNED` or not). Returns the generation.
    ///
    /// # Safety
    /// The caller owns this vacant slot: it got its index from the free
    /// list and has not published it yet.
    pub unsafe fn fill<T: Any + Send>(
        &self,
        value: T,
        site: &'static Location<'static>,
        borrow: usize,
    ) -> u32 {
        let storage = self.value.write_ptr();
        // SAFETY: the slot is vacant and ours: nobody reads or writes the
        // storage until the `Release` store below publishes it.
        unsafe {
            if Erased::<T>::INLINE {
                storage.cast::<T>().write(value);
            } else {
                storage
                    .cast::<*mut T>()
                    .write(Box::into_raw(Box::new(value)));
            }
        }
        let vtable: &'static VTable = &Erased::<T>::VTABLE;
        // `Release`, though the state word publishes them: a reader that
        // peeks at the type without a borrow (`check`, the leak report: a
        // seqlock read) and sees these stores must then see the removal of
        // the slot's previous value (which happened before we got the
        // index) when it loads the word again after an `Acquire` fence.
        self.vtable
            .store(vtable as *const VTable as *mut VTable, Ordering::Release);
        self.site.store(
            site as *const Location<'static> as *mut _,
            Ordering::Release,
        );
        let word = self.state.load(Ordering::Relaxed);
        debug_assert_eq!(
            word & !GENERATION_MASK,
            0,
            "fill of a slot that is not vacant"
        );
        self.state.store(word | LIVE | borrow, Ordering::Release);
        generation(word)
    }

    /// The value's type table. Meaningful while the caller holds a borrow
    /// or owns the slot; otherwise it may belong to any value the slot held.
    #[inline]
    pub fn vtable(&self) -> Option<&'static VTable> {
        let vtable = self.vtable.load(Ordering::Relaxed);
        // SAFETY: only ever set from `&'static VTable` in `fill`.
        unsafe { vtable.as_ref() }
    }

    /// Where the value was saved (same caveat as [`vtable`](Slot::vtable)).
    pub fn site(&self) -> Option<&'static Location<'static>> {
        // SAFETY: only ever set from a `&'static Location` in `fill`.
        unsafe { self.site.load(Ordering::Relaxed).as_ref() }
    }

    /// Whether the value is a `T`. The caller holds a borrow or owns the slot.
    ///
    /// Compares type ids rather than vtable addresses: the same generic
    /// constant may live at several addresses (one per codegen unit).
    #[inline]
    pub fn holds<T: Any + Send>(&self) -> bool {
        self.vtable()
            .is_some_and(|v| v.type_id() == TypeId::of::<T>())
    }

    /// The name of the value's type, for errors.
    #[cold]
    pub fn type_name(&self) -> &'static str {
        self.vtable().map_or("(none)", |v| (v.type_name)())
    }

    /// A pointer to the `T` in this slot, without creating a reference.
    ///
    /// # Safety
    /// The slot holds a `T` (checked with [`holds`](Slot::holds)) and the
    /// caller holds a borrow of it or owns it.
    #[inline]
    pub unsafe fn value_ptr<T: Any + Send>(&self) -> *mut T {
        let storage = self.value.read_ptr();
        if Erased::<T>::INLINE {
            storage.cast::<T>()
        } else {
            // SAFETY: per the caller, `fill` stored a box pointer here and
            // nobody writes it while the borrow or ownership lasts.
            unsafe { storage.cast::<*mut T>().read() }
        }
    }

    /// Moves the `T` out.
    ///
    /// # Safety
    /// The caller owns the slot (it made it vacant), and it holds a `T`.
    pub unsafe fn move_out<T: Any + Send>(&self) -> T {
        let storage = self.value.write_ptr();
        // SAFETY: per the caller; the storage is not read again until the
        // next `fill`.
        unsafe {
            if Erased::<T>::INLINE {
                storage.cast::<T>().read()
            } else {
                *Box::from_raw(storage.cast::<*mut T>().read())
            }
        }
    }

    /// Whether [`drop_value`](Slot::drop_value) has anything to do (same
    /// caveat as [`vtable`](Slot::vtable)).
    #[inline]
    pub fn has_drop_glue(&self) -> bool {
        self.vtable().is_some_and(|v| v.drop_value.is_some())
    }

    /// Drops the value, whatever its type.
    ///
    /// # Safety
    /// The caller owns the slot (it made it vacant) and it holds a value
    /// not yet dropped or moved out.
    pub unsafe fn drop_value(&self) {
        let vtable = self.vtable().expect("a filled slot has a vtable");
        if let Some(drop_value) = vtable.drop_value {
            // SAFETY: per the caller.
            unsafe { drop_value(self.value.write_ptr()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_fields_do_not_overlap() {
        let g = Layout::NATIVE.max_generation();
        let w = parked(g, MAX_BORROW) | WAITING | RETIRED | PINNED | COUNTED | SHARED;
        assert_eq!(generation(w), g);
        assert_eq!(borrow(w), MAX_BORROW);
        assert_eq!(w & 0b1111_1111, 0b1111_1111);
        assert_eq!(unborrowed(w), at(g) | LIVE | RETIRED | COUNTED | SHARED);
        assert_eq!(orphan(g - 1), at(g) | SHARED);
        assert_eq!(at(g) & BORROW_MASK, 0);
        assert_eq!(generation(at(1)), 1);
    }

    #[test]
    fn removal_moves_the_generation_or_retires() {
        let max = Layout::NATIVE.max_generation();
        assert_eq!(removed(at(3) | LIVE, max), at(4));
        assert_eq!(
            removed(exclusive(3, 5) | WAITING, max),
            at(4) | EXCLUSIVE | WAITING | (5 << BORROW_SHIFT)
        );
        assert_eq!(removed(at(max) | LIVE, max), at(max) | RETIRED);
        // A removal drops `COUNTED`: a vacant word is its generation alone.
        assert_eq!(removed(at(3) | LIVE | COUNTED, max), at(4));
        assert_eq!(removed(at(3) | LIVE | SHARED, max), at(4));
        // A parked orphan stays parked, for its disposer to recognise.
        assert_eq!(removed(parked(3, 5), max), parked(4, 5) & !LIVE);
        assert_eq!(unborrowed(parked(3, 5) | WAITING), at(3) | LIVE);
        assert_eq!(orphan(max), at(max) | RETIRED | SHARED);
    }

    #[test]
    fn small_values_inline_large_ones_boxed() {
        const {
            assert!(Erased::<[u8; INLINE_BYTES]>::INLINE);
            assert!(!Erased::<[u8; INLINE_BYTES + 1]>::INLINE);
            assert!(Erased::<()>::INLINE);
        }
        for big in [false, true] {
            let slot = Slot::vacant(7);
            // SAFETY: a fresh slot is ours.
            unsafe {
                if big {
                    assert_eq!(slot.fill([9u8; 100], Location::caller(), 0), 7);
                    assert!(slot.holds::<[u8; 100]>());
                    assert_eq!((*slot.value_ptr::<[u8; 100]>())[99], 9);
                    assert_eq!(slot.move_out::<[u8; 100]>(), [9u8; 100]);
                } else {
                    slot.fill(String::from("x"), Location::caller(), 0);
                    assert!(slot.holds::<String>());
                    assert!(!slot.holds::<u8>());
                    assert_eq!(slot.type_name(), "alloc::string::String");
                    slot.drop_value();
                }
            }
            assert_eq!(slot.state.load(Ordering::Relaxed), at(7) | LIVE);
        }
    }
}
