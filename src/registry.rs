//! The registry: slots in pages, a free list, and the operations.
//!
//! # Concurrency protocol
//!
//! Read [`slot`] first: every borrow, release and removal is a
//! transition of one slot's state word, written down there with its
//! orderings. This module adds three rules around it.
//!
//! 1. **No lock on the way to a value.** A handle is decoded, its page is
//!    found through the fixed directory (see [`pages`](crate::pages)), and
//!    one compare-exchange on the slot's word borrows it (a shared borrow
//!    usually takes none: it goes through the thread's reader record, see
//!    [`readers`]). Locks are taken
//!    only by the free list (refilling or returning a batch of indices,
//!    allocating a page), by waiting, by a thread's first exclusive borrow
//!    (its owner id, see [`thread`]), by the log of refusals (see
//!    [`failures`](crate::failures)), and by the count table of retained
//!    handles (`retain`, and removals of a word with `COUNTED`: slot
//!    transitions 8 and 9), never while user code runs: a guard's holder,
//!    and a value's `Drop`, may use the registry freely. The count lock is
//!    released before any value is dropped and before waiters are woken,
//!    so no other lock is ever taken while it is held.
//! 2. **Waiting never holds a reference.** A thread blocked by another
//!    thread's borrow takes the registry's `wait_lock`, flags the word that
//!    blocked it (`WAITING`) and parks on `wake`. Whoever clears `WAITING`
//!    takes `wait_lock` and wakes everyone. Woken threads redo the whole
//!    lookup, so a value removed meanwhile answers `Stale`. A writer that
//!    waits for reader records (see [`readers`], R3) parks
//!    on the same lock and condition variable; record releases wake it
//!    (R4), and it too answers `Stale` if the value was removed meanwhile.
//! 3. **A value's `Drop` runs after the registry forgot it**: the slot is
//!    vacant (or retired) before the value is dropped, and the index is
//!    freed after, also when that `Drop` panics. A panicking `Drop` cannot
//!    corrupt anything.

use std::any::Any;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt;
use std::panic::Location;

use crate::sync::atomic::{fence, Ordering};
use crate::sync::unmodelled::{self, AtomicU64};
use crate::sync::{Condvar, Mutex};

use crate::failures::FailureLog;
use crate::free::{self, FreeList};
use crate::handle::{self, Layout};
use crate::pages::Pages;
#[cfg(not(all(loom, test)))]
use crate::pages::{StaticPage, FIRST};
use crate::slot::{
    self, Slot, COUNTED, EXCLUSIVE, LIVE, PARKED, PINNED, READER, RETIRED, SHARED, WAITING,
};
use crate::{parked, readers, thread, Error, Guard, Handle, SharedGuard};

const LAYOUT: Layout = Layout::NATIVE;
const GLOBAL_ID: u32 = 1;

/// A set of saved values, each reachable through an opaque handle.
///
/// Most programs use the process-wide [`Registry::global`] through the free
/// functions ([`save`](crate::save), [`restore`](crate::restore), …). A
/// crate that wraps a C library may want its own registry, so that handles
/// from other libraries are refused with [`Error::WrongRegistry`] and its
/// [`leak_report`](Registry::leak_report) lists only its own values: keep
/// it in a `static`. (Saves and unrefs in the global registry are a little
/// cheaper: it keeps a per-thread cache of free slots, which a registry
/// that can be dropped cannot.)
///
/// ```
/// use handle_registry::{Error, Registry};
/// use once_cell::sync::Lazy;
///
/// static MY_LIB: Lazy<Registry> = Lazy::new(Registry::new);
///
/// let p = MY_LIB.save(vec![1, 2, 3]);
/// MY_LIB.restore::<Vec<i32>>(p).unwrap().push(4);
/// assert_eq!(MY_LIB.take::<Vec<i32>>(p).unwrap(), [1, 2, 3, 4]);
/// // The global registry does not know this handle.
/// assert_eq!(handle_registry::unref(p), Err(Error::WrongRegistry));
/// ```
pub struct Registry {
    id: u32,
    /// The generation new slots start at (non-zero for a reused id).
    base: u32,
    /// This registry's number among every registry the process has
    /// created, never reused (ids are): what a thread's hot handle of a
    /// registry other than the global one is tied to (see
    /// [`hot_private`](Registry::hot_private)). 0 for the global
    /// registry, which has an entry of its own; [`parked::NO_SERIAL`], no
    /// hot handle, for a registry created after 2⁶⁴ − 2 others.
    #[cfg_attr(all(loom, test), allow(dead_code))] // loom builds have no hot handle
    serial: u64,
    pages: Pages,
    free: FreeList,
    /// Serialises waiting (protocol rule 2), steals of parked borrows
    /// included (see [`parked`], step 5).
    wait_lock: Mutex<()>,
    wake: Condvar,
    failures: FailureLog,
    /// Reference counts of retained handles (slot transitions 8 and 9),
    /// keyed by the handle's integer. Touched only by `retain` and by
    /// removals of a word with `COUNTED`.
    counts: Mutex<BTreeMap<u64, usize>>,
    /// Weak handles not yet known dead, see [`kinds`](crate::kinds).
    pub(crate) weak: Mutex<crate::kinds::weak::WeakList>,
}

/// Registry ids that may be handed out, with the generation they start at.
struct IdPool {
    free: Vec<(u32, u32)>,
    next: u32,
    /// The next [`serial`](Registry::serial) to hand out; `NO_SERIAL`
    /// once all are.
    next_serial: u64,
}

static IDS: unmodelled::Mutex<IdPool> = unmodelled::Mutex::new(IdPool {
    free: Vec::new(),
    next: GLOBAL_ID + 1,
    next_serial: 1,
});

/// Which registry ids are live, one bit each, so that a handle naming no
/// live registry is `Invalid` rather than `WrongRegistry`.
static LIVE_IDS: [AtomicU64; 4] = [
    AtomicU64::new(1 << GLOBAL_ID),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

fn set_live(id: u32, live: bool) {
    let bit = 1u64 << (id % 64);
    let word = &LIVE_IDS[id as usize / 64];
    if live {
        word.fetch_or(bit, Ordering::Relaxed);
    } else {
        word.fetch_and(!bit, Ordering::Relaxed);
    }
}

fn is_live(id: u32) -> bool {
    LIVE_IDS[id as usize / 64].load(Ordering::Relaxed) & (1 << (id % 64)) != 0
}

/// What a borrow asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
    /// Exclusive, by a caller that knows this thread holds no borrow of
    /// the handle (a scope taking its record back after its body
    /// returned): every other borrow is another thread's, to wait for,
    /// even where this thread's bookkeeping could not tell (a lost shared
    /// list, an owner id shared during thread-local teardown). Its borrow
    /// names [`thread::RECLAIMER`], no thread's id, so no thread takes it
    /// for its own.
    Reclaim,
}

#[cfg(not(all(loom, test)))]
static GLOBAL: Registry = Registry::with_pages(
    GLOBAL_ID,
    0,
    0,
    Pages::with_static_first(&GLOBAL_FIRST_PAGE),
);
#[cfg(all(loom, test))]
static GLOBAL: Registry = Registry::with_pages(GLOBAL_ID, 0, 0, Pages::new());

/// The global registry's first page (see [`Registry::slot`]).
#[cfg(not(all(loom, test)))]
static GLOBAL_FIRST_PAGE: StaticPage = StaticPage::zeroed();

impl Registry {
    /// The process-wide registry used by [`save`](crate::save),
    /// [`restore`](crate::restore) and the other free functions.
    ///
    /// ```
    /// use handle_registry::Registry;
    ///
    /// let p = Registry::global().save("hello");
    /// assert_eq!(*handle_registry::restore::<&str>(p).unwrap(), "hello");
    /// Registry::global().unref(p).unwrap();
    /// ```
    #[inline]
    pub fn global() -> &'static Registry {
        &GLOBAL
    }

    /// A new, independent registry.
    ///
    /// # Panics
    ///
    /// When 254 registries besides the global one are alive at once (14 on
    /// 32-bit targets); use [`Registry::try_new`] to get an error instead.
    ///
    /// ```
    /// let a = handle_registry::Registry::new();
    /// let b = handle_registry::Registry::new();
    /// let p = a.save(1u8);
    /// assert!(b.restore::<u8>(p).is_err());
    /// assert_eq!(a.take::<u8>(p), Ok(1));
    /// ```
    #[allow(clippy::new_without_default)]
    pub fn new() -> Registry {
        match Registry::try_new() {
            Ok(r) => r,
            Err(e) => panic!("handle_registry::Registry::new: {e}"),
        }
    }

    /// A new registry, or [`Error::TooManyRegistries`] when every registry
    /// id is taken by a live registry.
    ///
    /// ```
    /// let r = handle_registry::Registry::try_new().unwrap();
    /// assert!(r.is_empty());
    /// ```
    pub fn try_new() -> Result<Registry, Error> {
        let mut pool = IDS.lock();
        let (id, base) = if let Some(reused) = pool.free.pop() {
            reused
        } else if pool.next <= LAYOUT.max_registry() {
            pool.next += 1;
            (pool.next - 1, 0)
        } else {
            return Err(Error::TooManyRegistries);
        };
        // Under the pool's lock, so that holding it keeps every dead id
        // dead (the tests rely on it to tell `Invalid` from
        // `WrongRegistry` while other tests create registries).
        set_live(id, true);
        // Past the last serial, `NO_SERIAL` for good: more registries than
        // a process can create, but a wrap must not reuse a serial.
        let serial = pool.next_serial;
        if serial != parked::NO_SERIAL {
            pool.next_serial += 1;
        }
        drop(pool);
        Ok(Registry::with_pages(id, base, serial, Pages::new()))
    }

    const fn with_pages(id: u32, base: u32, serial: u64, pages: Pages) -> Registry {
        Registry {
            id,
            base,
            serial,
            pages,
            free: FreeList::new(),
            wait_lock: Mutex::new(()),
            wake: Condvar::new(),
            failures: FailureLog::new(),
            counts: Mutex::new(BTreeMap::new()),
            weak: Mutex::new(crate::kinds::weak::WeakList::new()),
        }
    }

    #[inline(always)]
    pub(crate) fn is_global(&self) -> bool {
        std::ptr::eq(self, &GLOBAL)
    }

    /// The slot at `index`, if its page exists.
    ///
    /// The global registry's first page is a `static`: through
    /// [`global`](Registry::global) (the free functions), `is_global` is
    /// known at compile time and the slot's address is the index scaled,
    /// without the directory load and its null check on the chain from the
    /// handle to the slot's word. That took 0.11 to 0.38 off a callback
    /// with plain `restore`, in raw-pointer units (BENCHMARKS.md, "The
    /// first page"). Another registry pays one compare of `self`.
    #[inline(always)]
    fn slot(&self, index: usize) -> Option<&Slot> {
        #[cfg(not(all(loom, test)))]
        if self.is_global() && index < FIRST {
            return GLOBAL_FIRST_PAGE.get(index);
        }
        self.pages.get(index)
    }

    /// Moves `value` into the registry and returns its handle, never NULL.
    ///
    /// The caller's source location is recorded for
    /// [`leak_report`](Registry::leak_report).
    ///
    /// # Panics
    ///
    /// When the registry is full (see [`try_save`](Registry::try_save)).
    /// The value is dropped first.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(String::from("state"));
    /// assert!(!p.is_null());
    /// assert_eq!(r.len(), 1);
    /// # r.unref(p).unwrap();
    /// ```
    #[track_caller]
    #[inline]
    pub fn save<T: Any + Send>(&self, value: T) -> *mut c_void {
        match self.try_save(value) {
            Ok(p) => p,
            Err((e, value)) => {
                drop(value);
                panic!("handle_registry: {e}")
            }
        }
    }

    /// Like [`save`](Registry::save), but a full registry is an error that
    /// gives the value back: [`Error::Full`] when every index the handle
    /// layout can express is live or retired (about 16.7 million live
    /// values on 64-bit targets, 65 535 on 32-bit; see
    /// [`handle`]).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.try_save(5u8).unwrap();
    /// assert_eq!(r.take::<u8>(p), Ok(5));
    /// ```
    #[track_caller]
    #[inline]
    pub fn try_save<T: Any + Send>(&self, value: T) -> Result<*mut c_void, (Error, T)> {
        let index = match self.alloc_index() {
            Ok(index) => index,
            Err(e) => return Err((e, value)),
        };
        let slot = self.slot(index).expect("a handed-out index has a page");
        // SAFETY: the index came from the free list: the slot is vacant and
        // ours until the handle is published, which `fill` does last.
        let generation = unsafe { slot.fill(value, Location::caller(), 0) };
        Ok(handle::to_ptr(LAYOUT.encode(index, self.id, generation)))
    }

    /// Saves `value` already borrowed exclusively by this thread (and, if
    /// `pinned`, unreachable from other threads until the borrow ends; see
    /// [`slot`]). Returns the handle, the slot and the word
    /// the borrow set, for the caller to end with
    /// [`vacate`](Registry::vacate).
    #[track_caller]
    pub(crate) fn save_borrowed<T: Any + Send>(
        &self,
        value: T,
        pinned: bool,
    ) -> Result<(*mut c_void, &Slot, usize), Error> {
        let id = thread::id().ok_or(Error::Busy)?;
        let index = self.alloc_index()?;
        let slot = self.slot(index).expect("a handed-out index has a page");
        let borrow = slot::exclusive(0, id) & !LIVE | if pinned { PINNED } else { 0 };
        // SAFETY: as in `try_save`.
        let generation = unsafe { slot.fill(value, Location::caller(), borrow) };
        let locked = slot::exclusive(generation, id) | (borrow & PINNED);
        Ok((
            handle::to_ptr(LAYOUT.encode(index, self.id, generation)),
            slot,
            locked,
        ))
    }

    #[inline]
    fn alloc_index(&self) -> Result<usize, Error> {
        if self.is_global() {
            free::pop_global(&self.free, &self.pages)
        } else {
            self.free.pop(&self.pages, self.base)
        }
    }

    #[inline]
    fn free_index(&self, index: usize) {
        if self.is_global() {
            free::push_global(&self.free, index)
        } else {
            self.free.push(index)
        }
    }

    pub(crate) fn free_list(&self) -> &FreeList {
        &self.free
    }

    /// Borrows the value exclusively, for reading and writing.
    ///
    /// If another thread holds a borrow of the same handle, this waits for
    /// it to end. If this thread does, it fails with [`Error::Busy`].
    /// Inside [`lend`](Registry::lend) on this thread it is served from the
    /// lend.
    ///
    /// # Panics
    ///
    /// Never itself. But if the handle is unreffed while the guard lives,
    /// the guard's drop drops the value, and a panic from the value's
    /// `Drop` comes out of that drop (it is discarded if the thread is
    /// already unwinding; inside a [`lend`](Registry::lend), the value is
    /// dropped when the lend ends, and its panic comes out of `lend`). In
    /// an `extern "C"` function, where nothing may unwind, keep the guard's
    /// drop inside the `catch_unwind` too when the value's `Drop` may
    /// panic.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(0u64);
    /// *r.restore::<u64>(p).unwrap() += 1;
    /// assert_eq!(*r.restore::<u64>(p).unwrap(), 1);
    /// # r.unref(p).unwrap();
    /// ```
    // Always: its fast paths belong in the trampoline, and LLVM may keep it
    // out of line as they grow, returning the guard through memory.
    #[inline(always)]
    pub fn restore<T: Any + Send>(&self, ptr: *mut c_void) -> Result<Guard<'_, T>, Error> {
        // The error comes back through memory and the borrow as scalars,
        // built into a guard in one place: a trampoline then keeps its
        // guard in registers whichever path served it.
        let mut error = Error::Busy;
        match self.borrow_for_guard::<T>(ptr, &mut error) {
            // SAFETY: a lend holds the borrow and marked itself in use for
            // us, or we hold the exclusive borrow; the slot holds a `T`.
            Some((slot, locked, true)) => Ok(unsafe { Guard::lent(self, slot, locked) }),
            // SAFETY: we hold the exclusive borrow of a slot holding a `T`.
            Some((slot, locked, false)) => Ok(unsafe { Guard::new(self, slot, locked) }),
            None => Err(error),
        }
    }

    /// What `restore` needs for a guard: the slot, the word the borrow set
    /// and whether a lend serves it; or `None` with the reason in `error`.
    #[inline(always)]
    fn borrow_for_guard<T: Any + Send>(
        &self,
        ptr: *mut c_void,
        error: &mut Error,
    ) -> Option<(&Slot, usize, bool)> {
        if let Some(lent) = crate::lend::claim::<T>(self, ptr) {
            return match lent {
                Ok(claim) => Some((claim.slot, claim.locked, true)),
                Err(e) => {
                    *error = self.refused(ptr, e, std::any::type_name::<T>());
                    None
                }
            };
        }
        if let Some((slot, locked)) = self.borrow_fast::<T>(ptr) {
            return Some((slot, locked, false));
        }
        self.restore_unlent::<T>(ptr, error)
            .map(|(slot, locked)| (slot, locked, false))
    }

    /// The owner's enter of its parked borrow `word` of `slot` (see
    /// [`parked`], step 2): no locked instruction. Returns the slot and the
    /// parked word; `None`, having changed nothing, when the thread holds
    /// it already, the word moved on, or the type differs.
    #[inline(always)]
    fn enter_parked<'s, T: Any + Send>(
        &self,
        slot: &'s Slot,
        word: usize,
    ) -> Option<(&'s Slot, usize)> {
        if !parked::enter(slot::borrow(word), slot) {
            return None;
        }
        if still_parked::<T>(slot, word) {
            return Some((slot, word));
        }
        self.leave_parked(slot, word);
        None
    }

    /// The owner's leave of its parked borrow `word` (steps 3 and 4).
    #[inline(always)]
    pub(crate) fn leave_parked(&self, slot: &Slot, word: usize) {
        parked::leave(slot::borrow(word), slot);
        self.check_after_leaving(slot, word);
    }

    /// [`leave_parked`](Registry::leave_parked) when the thread is inside
    /// this parked borrow only; `false`, having changed nothing, when it is
    /// inside several.
    #[inline(always)]
    pub(crate) fn leave_parked_alone(&self, slot: &Slot, word: usize) -> bool {
        if !parked::leave_alone(slot::borrow(word)) {
            return false;
        }
        self.check_after_leaving(slot, word);
        true
    }

    /// Step 4, after either leave: the word still `word` means no other
    /// thread came meanwhile, the common case.
    #[inline(always)]
    fn check_after_leaving(&self, slot: &Slot, word: usize) {
        let now = slot.state.load(Ordering::Acquire);
        if now != word {
            self.after_leaving(slot, word, now);
        }
    }

    /// Step 4: the owner left its parked borrow `word` and found `now`.
    ///
    /// A parked orphan of this thread's is tried whatever its generation.
    /// An enter through the hot handle starts from the word the handle was
    /// entered with, which the slot may have left since (the value taken,
    /// the index saved and parked again): it fails, but its listing may
    /// still make an unref racing it leave the drop to this thread (step
    /// 7). Trying is always safe. No thread is inside the orphan: only a
    /// thread with this owner id can be, by a listing in this id's record,
    /// and this thread is not (an enter lists a slot only when the thread
    /// is not inside it already), nor is a dying thread that shares the id
    /// (its lease stopped its parking first, see `thread`). And the
    /// exchange of step 8 picks one disposer. The generation test this once
    /// had leaked that value (`tests/adversarial_parked.rs`).
    #[cold]
    #[inline(never)]
    fn after_leaving(&self, slot: &Slot, word: usize, now: usize) {
        let parked_orphan = now & (LIVE | EXCLUSIVE | PARKED) == EXCLUSIVE | PARKED
            && slot::borrow(now) == slot::borrow(word);
        if parked_orphan {
            self.dispose_parked_orphan(slot, self.index_of_slot(slot), now);
        } else if now & WAITING != 0 {
            // A stealer may wait for the entry we just cleared.
            self.wake_waiters();
        }
    }

    /// Step 5 or 6: `seen` is a live parked word of the slot, met by a
    /// borrow's slow path. Makes it `Live` (waiting for the owner to leave
    /// if it is inside) and returns the word now, or `Busy` when the owner
    /// is this thread, inside.
    #[cold]
    #[inline(never)]
    fn unpark(&self, slot: &Slot, seen: usize) -> Result<usize, Error> {
        let owner = slot::borrow(seen);
        if Some(owner) == thread::known_id() {
            if parked::mine_holds(owner, slot) {
                return Err(Error::Busy);
            }
            if parked::parking_id() == Some(owner) {
                // Step 6: our own park, and only we enter it.
                self.unpark_word(slot, seen);
                return Ok(slot.state.load(Ordering::Relaxed));
            }
            // Our id may be shared (thread-local teardown): steal, as
            // another thread would.
        }
        let flagged = seen | WAITING;
        if seen & WAITING == 0 {
            // `Acquire`: reads the owner's park, and its accesses before.
            if let Err(now) =
                slot.state
                    .compare_exchange(seen, flagged, Ordering::Acquire, Ordering::Relaxed)
            {
                return Ok(now);
            }
        }
        parked::heavy_barrier();
        let waiting = self.wait_lock.lock();
        if !parked::holds(owner, slot) {
            drop(waiting);
            self.unpark_word(slot, flagged);
        } else if slot.state.load(Ordering::Relaxed) == flagged {
            drop(self.wake.wait(waiting));
        }
        Ok(slot.state.load(Ordering::Relaxed))
    }

    /// A parked word nobody is inside → `Live` (keeping `COUNTED`), waking
    /// all if it was flagged. Losing the exchange means another did it, or
    /// the word moved on; the caller reloads either way.
    fn unpark_word(&self, slot: &Slot, seen: usize) {
        // `AcqRel`: whoever borrows the `Live` word next acquires, through
        // this exchange, what the owner's leave released to us.
        let done = slot
            .state
            .compare_exchange(
                seen,
                slot::unborrowed(seen),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if done && seen & WAITING != 0 {
            self.wake_waiters();
        }
    }

    /// Step 7, after an unref made the parked word `orphan`: disposes of
    /// it unless its owner is inside (whose leave then does).
    #[cold]
    #[inline(never)]
    fn parked_orphaned(&self, slot: &Slot, index: usize, orphan: usize) {
        let owner = slot::borrow(orphan);
        if Some(owner) == thread::known_id() && parked::parking_id() == Some(owner) {
            if parked::mine_holds(owner, slot) {
                return;
            }
        } else {
            parked::heavy_barrier();
            if parked::holds(owner, slot) {
                return;
            }
        }
        self.dispose_parked_orphan(slot, index, orphan);
    }

    /// Step 8: one exchange picks the one disposer of a parked orphan.
    fn dispose_parked_orphan(&self, slot: &Slot, index: usize, orphan: usize) {
        let vacant = slot::unborrowed(orphan);
        if slot
            .state
            .compare_exchange(orphan, vacant, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            if orphan & WAITING != 0 {
                self.wake_waiters();
            }
            // SAFETY: our exchange made the slot vacant (or retired): the
            // owner is outside (its record, read after the barrier, or our
            // own) and can no longer enter, so the value is ours.
            unsafe { self.dispose(slot, index, vacant) };
        }
    }

    /// The slot and parked word of this thread's hot handle of the global
    /// registry (see [`parked`], "The hot handle"), if this is the global
    /// registry and `ptr` is that handle. Other registries have
    /// [`hot_private`](Registry::hot_private).
    #[cfg(not(all(loom, test)))]
    #[inline(always)]
    pub(crate) fn hot(&self, ptr: *mut c_void) -> Option<(&Slot, usize)> {
        if self.is_global() {
            if let Some((slot, word)) = parked::hot(ptr.addr()) {
                // SAFETY: a slot of the global entry is the global
                // registry's slot of the hot handle's index: only
                // `Registry::set_hot` on the global registry sets that
                // entry (through `parked::set_hot`). That registry is a
                // `static`, and its slots are never freed or moved.
                return Some((unsafe { &*slot }, word));
            }
        }
        None
    }

    /// The slot and parked word of this thread's hot handle of this
    /// registry, any registry but the global one, if `ptr` is that handle.
    ///
    /// Those registries share a second entry, tied to the registry's
    /// `serial` as well as to the handle: ids and even addresses are
    /// reused after a registry is dropped, serials never are, so an entry
    /// left by a dropped registry matches no live one.
    ///
    /// Apart from [`hot`](Registry::hot), and read in `borrow_fast` after
    /// the handle is split rather than beside the global entry: with one
    /// lookup for both entries, the compiler merged their tests, and the
    /// free functions' `restore` took 5 more instructions for the global
    /// entry alone (BENCHMARKS.md, "A hot handle for every registry").
    /// `restore_with`'s inline enter reads it without the split: the
    /// serial alone ties the entry to this registry.
    #[cfg(not(all(loom, test)))]
    #[inline(always)]
    pub(crate) fn hot_private(&self, ptr: *mut c_void) -> Option<(&Slot, usize)> {
        if let Some((slot, word)) = parked::hot_private(ptr.addr(), self.serial) {
            // SAFETY: a slot of this entry is a slot of the registry whose
            // serial the entry holds, at the hot handle's index: only
            // `Registry::set_hot` sets the entry (through
            // `parked::set_hot_private`), with the slot `borrow_fast` found
            // from that registry's pages and that registry's serial. No
            // other registry of the process has had or will have that
            // serial: a cleared entry's serial is 0, the global registry's
            // (which never reads this entry), and `NO_SERIAL`, which
            // registries past the last serial share, is never set. So the
            // slot is this registry's, which `&self` keeps alive, and whose
            // slots never move or are freed while it lives (`pages`).
            return Some((unsafe { &*slot }, word));
        }
        None
    }

    /// Step 2 through a hot handle: enters `slot` with `word`, or forgets
    /// the thread's hot handles.
    #[cfg(not(all(loom, test)))]
    #[inline(always)]
    fn enter_through_hot<'a, T: Any + Send>(
        &'a self,
        slot: &'a Slot,
        word: usize,
    ) -> Option<(&'a Slot, usize)> {
        let entered = self.enter_parked::<T>(slot, word);
        if entered.is_none() {
            parked::clear_hot();
        }
        entered
    }

    /// Makes `ptr` this thread's hot handle of this registry (see
    /// [`hot`](Registry::hot) and [`hot_private`](Registry::hot_private)):
    /// `slot` is this registry's slot of its index and `word` the parked
    /// word step 2 just entered.
    #[cfg(not(all(loom, test)))]
    #[inline(always)]
    fn set_hot(&self, ptr: *mut c_void, slot: &Slot, word: usize) {
        debug_assert!(word & slot::PARKED != 0, "a hot handle's word is parked");
        if self.is_global() {
            parked::set_hot(ptr.addr(), slot, word);
        } else if self.serial != parked::NO_SERIAL {
            parked::set_hot_private(ptr.addr(), self.serial, slot, word);
        }
    }

    /// The common cases of an exclusive borrow, kept free of calls so that
    /// they inline into a trampoline: this thread's hot handle (see
    /// [`parked`], "The hot handle"), or a valid handle of this registry, a
    /// thread with an owner id, and a free slot or one this thread parked.
    /// Anything else returns `None` and
    /// [`restore_unlent`](Registry::restore_unlent) starts over, and says
    /// why.
    #[inline(always)]
    fn borrow_fast<T: Any + Send>(&self, ptr: *mut c_void) -> Option<(&Slot, usize)> {
        #[cfg(not(all(loom, test)))]
        if let Some((slot, word)) = self.hot(ptr) {
            return self.enter_through_hot::<T>(slot, word);
        }
        let (index, generation) = LAYOUT.split_for(ptr.addr(), self.id)?;
        // Here, not beside the global entry's test: see `hot_private`.
        #[cfg(not(all(loom, test)))]
        if !self.is_global() {
            if let Some((slot, word)) = self.hot_private(ptr) {
                return self.enter_through_hot::<T>(slot, word);
            }
        }
        let slot = self.slot(index)?;
        let parking = parked::parking_id();
        let id = match parking {
            Some(id) => id,
            None => thread::known_id()?,
        };
        if parking.is_some() {
            // Parked by this thread: enter it. The load is a hint that
            // spares the record's stores for every other word; the load
            // after the barrier decides.
            let word = slot::parked(generation, id);
            if slot.state.load(Ordering::Relaxed) == word {
                let entered = self.enter_parked::<T>(slot, word);
                #[cfg(not(all(loom, test)))]
                if entered.is_some() {
                    self.set_hot(ptr, slot, word);
                }
                return entered;
            }
        }
        let locked = slot::exclusive(generation, id);
        let free = slot::at(generation) | LIVE;
        slot.state
            .compare_exchange(free, locked, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        if slot.holds::<T>() {
            return Some((slot, locked));
        }
        // SAFETY: we took this exclusive borrow just above.
        unsafe { self.release_exclusive(slot, locked) };
        None
    }

    /// `restore` outside a lend, after the fast path declined.
    /// Returns the borrowed slot and the word the borrow set, or `None`
    /// with the reason in `error`.
    #[inline(never)]
    fn restore_unlent<T: Any + Send>(
        &self,
        ptr: *mut c_void,
        error: &mut Error,
    ) -> Option<(&Slot, usize)> {
        self.borrow::<T>(ptr, Mode::Exclusive)
            .map_err(|e| *error = e)
            .ok()
    }

    /// Borrows the value shared, for reading, alongside other readers.
    ///
    /// Use this for `Sync` values that C calls back from several threads at
    /// once with the same `user_data` (a thread pool, a parallel traversal):
    /// readers never wait for each other, only for an exclusive
    /// [`restore`](Registry::restore). Mutate through atomics or locks in
    /// the value. Use `restore` when the value needs `&mut`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(AtomicUsize::new(0));
    /// let a = r.restore_ref::<AtomicUsize>(p).unwrap();
    /// let b = r.restore_ref::<AtomicUsize>(p).unwrap();
    /// a.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(b.load(Ordering::Relaxed), 1);
    /// # drop((a, b)); r.unref(p).unwrap();
    /// ```
    pub fn restore_ref<T: Any + Send + Sync>(
        &self,
        ptr: *mut c_void,
    ) -> Result<SharedGuard<'_, T>, Error> {
        if let Some(borrowed) = self.borrow_record::<T>(ptr) {
            return borrowed;
        }
        let (slot, _) = self.borrow::<T>(ptr, Mode::Shared)?;
        if !thread::push_shared(ptr as usize) {
            // Thread-local teardown took the list: an unrecorded shared
            // borrow could make a later exclusive request here wait for
            // itself, so refuse.
            // SAFETY: we took this shared borrow just above.
            unsafe { self.release_shared(slot) };
            return Err(Error::Busy);
        }
        // SAFETY: we hold a shared borrow of a slot holding a `T`.
        Ok(unsafe { SharedGuard::new(self, slot, ptr as usize, None) })
    }

    /// A shared borrow through this thread's reader record (transition R1
    /// of [`readers`]); `None` to fall back to the in-word
    /// count (no record, a full record, an exclusive borrow to wait for).
    #[inline]
    fn borrow_record<T: Any + Send + Sync>(
        &self,
        ptr: *mut c_void,
    ) -> Option<Result<SharedGuard<'_, T>, Error>> {
        let (slot, generation) = match self.lookup(ptr) {
            Ok(found) => found,
            Err(e) => return Some(Err(self.refused(ptr, e, std::any::type_name::<T>()))),
        };
        let record = readers::mine()?;
        // Canonical: `lookup` accepted it, and every valid handle has one
        // integer.
        let h = ptr.addr();
        let entry = if let Some(i) = record.find(h) {
            // Nested: our own entry keeps writers out and the value alive.
            let seen = slot.state.load(Ordering::SeqCst);
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                let e = self.refusal(ptr, seen, generation);
                return Some(Err(self.refused(ptr, e, std::any::type_name::<T>())));
            }
            if !record.nest(i) {
                return None;
            }
            i
        } else {
            let i = record.publish(h)?;
            let mut seen = slot.state.load(Ordering::SeqCst);
            loop {
                let blocked = seen & EXCLUSIVE != 0;
                if slot::generation(seen) != generation || seen & LIVE == 0 || blocked {
                    // SAFETY: entry `i` holds `h` of this slot, ours.
                    unsafe { self.release_record(slot, record, i, h) };
                    if blocked && slot::generation(seen) == generation && seen & LIVE != 0 {
                        return None;
                    }
                    let e = self.refusal(ptr, seen, generation);
                    return Some(Err(self.refused(ptr, e, std::any::type_name::<T>())));
                }
                if seen & SHARED != 0 {
                    break;
                }
                // Shared mode (R2).
                match slot.state.compare_exchange(
                    seen,
                    seen | SHARED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => break,
                    Err(now) => seen = now,
                }
            }
            i
        };
        if !slot.holds::<T>() {
            let found = slot.type_name();
            // SAFETY: we hold this record borrow.
            unsafe { self.release_record(slot, record, entry, h) };
            let e = Error::WrongType {
                expected: std::any::type_name::<T>(),
                found,
            };
            return Some(Err(self.refused(ptr, e, std::any::type_name::<T>())));
        }
        // SAFETY: we hold a record borrow (entry `entry` of our record) of
        // a slot holding a `T`.
        Some(Ok(unsafe {
            SharedGuard::new(self, slot, h, Some((record, entry)))
        }))
    }

    /// Ends one record borrow (transition R4): clears the entry at its
    /// last nesting, wakes waiting writers, settles an orphan.
    ///
    /// # Safety
    /// Entry `i` of this thread's `record` holds a borrow of `h`, a handle
    /// of this registry whose slot is `slot`.
    #[inline]
    pub(crate) unsafe fn release_record(
        &self,
        slot: &Slot,
        record: &readers::Record,
        i: usize,
        h: usize,
    ) {
        if !record.unpublish(i) {
            return;
        }
        if readers::writers_waiting() {
            self.wake_waiters();
        }
        let generation = handle_generation(h);
        if slot.state.load(Ordering::SeqCst) == slot::orphan(generation) {
            // SAFETY: the slot is `h`'s.
            unsafe { self.settle(slot, h, generation) };
        }
        // Last: it may give the record to another thread.
        readers::release_kept(record);
    }

    /// Drops the value of a shared-mode orphan if no record holds it
    /// (transition R5): at most one caller wins the exchange.
    ///
    /// # Safety
    /// `slot` is the slot of `h`, a handle of this registry of generation
    /// `generation`.
    #[cold]
    unsafe fn settle(&self, slot: &Slot, h: usize, generation: u32) {
        if readers::any_holds(h) {
            return;
        }
        let orphan = slot::orphan(generation);
        if slot
            .state
            .compare_exchange(
                orphan,
                orphan & !SHARED,
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            // SAFETY: our exchange made the slot vacant (or retired): its
            // value, left by every borrower, is ours.
            unsafe {
                self.dispose(
                    slot,
                    index_of(std::ptr::without_provenance_mut(h)),
                    orphan & !SHARED,
                )
            };
        }
    }

    /// R3: an exclusive borrow just announced on a shared-mode word waits
    /// until no record holds `h`.
    #[cold]
    fn await_records(&self, h: usize) {
        if !readers::any_holds(h) {
            return;
        }
        readers::writer_waits();
        let mut guard = self.wait_lock.lock();
        while readers::any_holds(h) {
            guard = self.wake.wait(guard);
        }
        drop(guard);
        readers::writer_done();
    }

    /// Removes the value and returns it. The handle is stale from now on.
    ///
    /// Waits while another thread borrows the value; fails with
    /// [`Error::Busy`] if this thread does (use [`unref`](Registry::unref)
    /// to free a value from inside its own borrow).
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(vec!['a']);
    /// assert_eq!(r.take::<Vec<char>>(p), Ok(vec!['a']));
    /// assert_eq!(r.take::<Vec<char>>(p), Err(Error::Stale));
    /// ```
    pub fn take<T: Any + Send>(&self, ptr: *mut c_void) -> Result<T, Error> {
        self.take_counted(ptr, false).map_err(|e| match e {
            Error::Retained => self.refused(ptr, e, std::any::type_name::<T>()),
            e => e,
        })
    }

    /// `take`, but a retained value is a quiet `Err(Retained)`, not a
    /// refusal in the failure log: for a caller that then reaches the value
    /// another way (a retained one-shot completion).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn take_unless_retained<T: Any + Send>(&self, ptr: *mut c_void) -> Result<T, Error> {
        self.take_counted(ptr, false)
    }

    /// `take`, where `force` removes a retained value whatever its count
    /// (a scope's end, see transition 9). `Retained` is returned, not
    /// logged: the caller decides whether it is a refusal.
    pub(crate) fn take_counted<T: Any + Send>(
        &self,
        ptr: *mut c_void,
        force: bool,
    ) -> Result<T, Error> {
        let (slot, locked) = self.borrow::<T>(ptr, Mode::Exclusive)?;
        // SAFETY: we hold the exclusive borrow that set `locked`.
        let vacant = unsafe { self.empty(ptr, slot, locked, force) }?;
        // SAFETY: `empty` made the slot vacant (or retired) by our hand, and
        // it holds a `T` (checked by `borrow`).
        Ok(unsafe { self.move_out_emptied::<T>(ptr, slot, vacant) })
    }

    /// The end of a removal that returns the value (`take`, `reclaim`):
    /// moves the value out, then frees the index unless the slot retired.
    ///
    /// # Safety
    /// `slot` is the slot of handle `ptr`, made vacant (or retired) with
    /// word `vacant` by the caller's own [`empty`](Registry::empty), and it
    /// holds a `T`.
    #[inline]
    unsafe fn move_out_emptied<T: Any + Send>(
        &self,
        ptr: *mut c_void,
        slot: &Slot,
        vacant: usize,
    ) -> T {
        // SAFETY: per the caller, the slot is out of every lookup's reach
        // and holds a `T`.
        let value = unsafe { slot.move_out::<T>() };
        if vacant & RETIRED == 0 {
            self.free_index(index_of(ptr));
        }
        value
    }

    /// Ends an exclusive borrow by removing the value (transition 5): the
    /// slot becomes vacant (or retired) and the caller owns the value in
    /// it. Returns the new word, or `Stale` if an unref orphaned the slot
    /// meanwhile (the borrow is then released, and the value dropped).
    ///
    /// A word with `COUNTED` is removed under the count lock (transition
    /// 9): with more than one reference out, the borrow is released and
    /// the answer is `Retained`, unless `force` (a scope's end), which
    /// removes whatever the count.
    ///
    /// # Safety
    /// The caller holds the exclusive borrow of `slot`, the slot of handle
    /// `ptr`, that set `locked`.
    unsafe fn empty(
        &self,
        ptr: *mut c_void,
        slot: &Slot,
        locked: usize,
        force: bool,
    ) -> Result<usize, Error> {
        let mut seen = locked;
        let mut counts = None;
        loop {
            if seen & LIVE == 0 {
                // Release outside the count lock: as the orphan's last
                // borrower we drop the value, which is user code.
                drop(counts);
                // SAFETY: per the caller.
                unsafe { self.release_exclusive(slot, locked) };
                return Err(Error::Stale);
            }
            if seen & COUNTED != 0 {
                let Some(table) = &counts else {
                    counts = Some(self.counts.lock());
                    seen = slot.state.load(Ordering::Relaxed);
                    continue;
                };
                let key = handle::from_ptr(ptr);
                if !force && table.get(&key).copied().unwrap_or(1) > 1 {
                    drop(counts);
                    // SAFETY: per the caller.
                    unsafe { self.release_exclusive(slot, locked) };
                    return Err(Error::Retained);
                }
            }
            // `removed` drops `SHARED`: our exclusive borrow waited out
            // every record reader (R3), and a reader that stores its entry
            // now sees no live word and never touches the value.
            let vacant = slot::removed(slot::unborrowed(seen), LAYOUT.max_generation());
            match slot
                .state
                .compare_exchange(seen, vacant, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Some(mut table) = counts {
                        if seen & COUNTED != 0 {
                            table.remove(&(handle::from_ptr(ptr)));
                        }
                    }
                    if seen & WAITING != 0 {
                        self.wake_waiters();
                    }
                    return Ok(vacant);
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Takes the value back for a caller that holds no borrow of it on
    /// this thread (see `Mode::Reclaim`): waits for every other borrow.
    pub(crate) fn reclaim<T: Any + Send>(&self, ptr: *mut c_void) -> Result<T, Error> {
        let (slot, locked) = self.borrow::<T>(ptr, Mode::Reclaim)?;
        // SAFETY: we hold the exclusive borrow that set `locked`. A scope's
        // record goes whatever its count (`force`): every copy turns stale.
        let vacant = unsafe { self.empty(ptr, slot, locked, true) }?;
        // SAFETY: as in `take_counted`.
        Ok(unsafe { self.move_out_emptied::<T>(ptr, slot, vacant) })
    }

    /// Ends an exclusive borrow by removing and dropping the value.
    ///
    /// # Safety
    /// The caller holds the exclusive borrow of the slot of handle `ptr`
    /// that set `locked`.
    pub(crate) unsafe fn vacate(&self, ptr: *mut c_void, slot: &Slot, locked: usize) {
        // SAFETY: per the caller. A scope's end removes its record whatever
        // its count (`force`).
        if let Ok(vacant) = unsafe { self.empty(ptr, slot, locked, true) } {
            // SAFETY: we just made it vacant; the value is ours.
            unsafe { self.dispose(slot, index_of(ptr), vacant) };
        }
    }

    /// Removes the value and drops it. The handle is stale from now on.
    ///
    /// Never waits. If the value is borrowed (on any thread, including this
    /// one), new lookups fail with [`Error::Stale`] at once and the value is
    /// dropped when the last guard is released, on that guard's thread.
    /// A call on another thread that races this one may drop it instead,
    /// and answer `Stale`: a [`restore_ref`](Registry::restore_ref), or the
    /// `restore` of a thread whose borrow of the value is parked between its
    /// calls (README, "`unref` of a borrowed value"). This call may then
    /// return before the value is dropped.
    ///
    /// If the value's `Drop` panics, the panic propagates to the caller
    /// that dropped it (after the registry has forgotten the value): this
    /// one, or the guard's or the racing call's.
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(42u8);
    /// r.unref(p).unwrap();
    /// assert_eq!(r.unref(p), Err(Error::Stale));
    /// ```
    #[inline]
    pub fn unref(&self, ptr: *mut c_void) -> Result<(), Error> {
        match self.unref_fast(ptr) {
            Some((slot, index, vacant)) => {
                // SAFETY: we made the slot vacant; its value is ours to
                // drop, and the index ours to free.
                unsafe { self.dispose(slot, index, vacant) };
                Ok(())
            }
            None => self.unref_slow(ptr),
        }
    }

    /// The common case of `unref`, kept free of calls: a valid handle of
    /// this registry whose slot is `Live(g)`, not borrowed, not counted,
    /// and `g` not the last generation. One compare-exchange makes it
    /// `Vacant(g + 1)` (transition 4); returns the slot, its index and
    /// that word. Anything else returns `None` having changed nothing, and
    /// [`unref_slow`](Registry::unref_slow) starts over.
    #[inline(always)]
    fn unref_fast(&self, ptr: *mut c_void) -> Option<(&Slot, usize, usize)> {
        let (index, generation) = LAYOUT.split_for(ptr.addr(), self.id)?;
        if generation == LAYOUT.max_generation() {
            return None;
        }
        let slot = self.slot(index)?;
        let vacant = slot::at(generation + 1);
        slot.state
            .compare_exchange(
                slot::at(generation) | LIVE,
                vacant,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        Some((slot, index, vacant))
    }

    #[cold]
    #[inline(never)]
    fn unref_slow(&self, ptr: *mut c_void) -> Result<(), Error> {
        self.try_unref(ptr).map_err(|e| self.refused(ptr, e, "_"))
    }

    pub(crate) fn try_unref(&self, ptr: *mut c_void) -> Result<(), Error> {
        self.unref_with(ptr, false)
    }

    /// `unref`; with `force`, a retained value is removed whatever its
    /// count (a [`Group`](crate::Group)'s clear): every reference goes.
    pub(crate) fn unref_with(&self, ptr: *mut c_void, force: bool) -> Result<(), Error> {
        let (slot, generation) = self.lookup(ptr)?;
        let mut seen = slot::at(generation) | LIVE;
        loop {
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                return Err(self.refusal(ptr, seen, generation));
            }
            if seen & COUNTED != 0 {
                return self.unref_counted(ptr, slot, generation, force);
            }
            // A shared-mode orphan keeps `SHARED` until settled (R5).
            let new = slot::removed(seen, LAYOUT.max_generation()) | (seen & SHARED);
            match slot
                .state
                .compare_exchange(seen, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) if seen & PARKED != 0 => {
                    self.parked_orphaned(slot, index_of(ptr), new);
                    return Ok(());
                }
                Ok(_) if slot::is_borrowed(seen) => return Ok(()), // orphaned
                Ok(_) if new & SHARED != 0 => {
                    // SAFETY: the slot is `ptr`'s, of generation `generation`.
                    unsafe { self.settle(slot, ptr.addr(), generation) };
                    return Ok(());
                }
                Ok(_) => {
                    // SAFETY: we made the slot vacant (or retired); its value
                    // is ours to drop, and the index ours to free.
                    unsafe { self.dispose(slot, index_of(ptr), new) };
                    return Ok(());
                }
                Err(now) => seen = now,
            }
        }
    }

    /// `unref` of a word with `COUNTED` (transition 9): drops one
    /// reference, and removes the value at the last, under the count lock.
    #[cold]
    #[inline(never)]
    fn unref_counted(
        &self,
        ptr: *mut c_void,
        slot: &Slot,
        generation: u32,
        force: bool,
    ) -> Result<(), Error> {
        let key = handle::from_ptr(ptr);
        let mut table = self.counts.lock();
        let mut seen = slot.state.load(Ordering::Relaxed);
        loop {
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                return Err(self.refusal(ptr, seen, generation));
            }
            if seen & COUNTED != 0 && !force {
                match table.get_mut(&key) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        return Ok(());
                    }
                    _ => {}
                }
            }
            let new = slot::removed(seen, LAYOUT.max_generation()) | (seen & SHARED);
            match slot
                .state
                .compare_exchange(seen, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => {
                    table.remove(&key);
                    // The value is dropped (by us, or by the last borrower)
                    // with the lock released: `Drop` is user code.
                    drop(table);
                    if seen & PARKED != 0 {
                        self.parked_orphaned(slot, index_of(ptr), new);
                    } else if slot::is_borrowed(seen) {
                        // The last borrower settles or drops it.
                    } else if new & SHARED != 0 {
                        // SAFETY: the slot is `ptr`'s, of generation `generation`.
                        unsafe { self.settle(slot, ptr.addr(), generation) };
                    } else {
                        // SAFETY: we made the slot vacant (or retired); its
                        // value is ours to drop, and the index ours to free.
                        unsafe { self.dispose(slot, index_of(ptr), new) };
                    }
                    return Ok(());
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Whether `ptr` names a live value of this registry (any type),
    /// without recording a refusal.
    pub(crate) fn is_live(&self, ptr: *mut c_void) -> bool {
        self.lookup(ptr).is_ok_and(|(slot, generation)| {
            let seen = slot.state.load(Ordering::Relaxed);
            slot::generation(seen) == generation && seen & LIVE != 0
        })
    }

    /// Adds one reference to the value `ptr` names: it is dropped only when
    /// every reference is gone, one [`unref`](Registry::unref) (or
    /// [`c_unref`](crate::c_unref), as a C destroy-notify) each. This is for
    /// C APIs that keep one `user_data` in several places, each with its
    /// own destroy-notify (`sqlite3_create_function_v2` for several
    /// functions, one closure connected to several GLib signals).
    ///
    /// While more than one reference is out, [`take`](Registry::take)
    /// answers [`Error::Retained`] and changes nothing. Retaining never
    /// waits and never borrows: it works on a borrowed value too. The
    /// value must be live: a removed handle is [`Error::Stale`]. A count
    /// already at `usize::MAX` is [`Error::Full`], and stays as it is.
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(String::from("shared by three destroy-notifies"));
    /// r.retain(p).unwrap();
    /// r.retain(p).unwrap();
    /// assert_eq!(r.take::<String>(p), Err(Error::Retained));
    /// r.unref(p).unwrap();
    /// r.unref(p).unwrap();
    /// assert_eq!(r.restore::<String>(p).unwrap().len(), 32); // still live
    /// r.unref(p).unwrap(); // the last reference: dropped
    /// assert_eq!(r.unref(p), Err(Error::Stale));
    /// ```
    pub fn retain(&self, ptr: *mut c_void) -> Result<(), Error> {
        self.try_retain(ptr).map_err(|e| self.refused(ptr, e, "_"))
    }

    fn try_retain(&self, ptr: *mut c_void) -> Result<(), Error> {
        let (slot, generation) = self.lookup(ptr)?;
        let mut table = self.counts.lock();
        let mut seen = slot.state.load(Ordering::Relaxed);
        loop {
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                return Err(self.refusal(ptr, seen, generation));
            }
            if seen & COUNTED != 0 {
                break;
            }
            match slot.state.compare_exchange(
                seen,
                seen | COUNTED,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        let n = table.entry(handle::from_ptr(ptr)).or_insert(1);
        // A count that wrapped (or saturated) would drop the value while
        // references are still out.
        *n = n.checked_add(1).ok_or(Error::Full)?;
        Ok(())
    }

    /// How many references to the value `ptr` names are out: 1 for a value
    /// never [`retain`](Registry::retain)ed, more after retains. An error
    /// as for [`check`](Registry::check) when the handle is not live.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(0u8);
    /// assert_eq!(r.ref_count(p), Ok(1));
    /// r.retain(p).unwrap();
    /// assert_eq!(r.ref_count(p), Ok(2));
    /// r.unref(p).unwrap();
    /// assert_eq!(r.ref_count(p), Ok(1));
    /// # r.unref(p).unwrap();
    /// ```
    pub fn ref_count(&self, ptr: *mut c_void) -> Result<usize, Error> {
        let (slot, generation) = self.lookup(ptr)?;
        let table = self.counts.lock();
        let seen = slot.state.load(Ordering::Relaxed);
        if slot::generation(seen) != generation || seen & LIVE == 0 {
            return Err(self.refusal(ptr, seen, generation));
        }
        Ok(if seen & COUNTED != 0 {
            table.get(&(handle::from_ptr(ptr))).copied().unwrap_or(1)
        } else {
            1
        })
    }

    /// Whether `ptr` names a live `T` in this registry, without borrowing
    /// it. The answer can change as soon as it is given (another thread may
    /// unref the handle); use it for diagnostics and early validation.
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(1u8);
    /// assert_eq!(r.check::<u8>(p), Ok(()));
    /// assert!(matches!(r.check::<u16>(p), Err(Error::WrongType { .. })));
    /// r.unref(p).unwrap();
    /// assert_eq!(r.check::<u8>(p), Err(Error::Stale));
    /// ```
    pub fn check<T: Any + Send>(&self, ptr: *mut c_void) -> Result<(), Error> {
        let (slot, generation) = self.lookup(ptr)?;
        loop {
            let seen = slot.state.load(Ordering::Acquire);
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                return Err(self.refusal(ptr, seen, generation));
            }
            let holds = slot.holds::<T>();
            let found = slot.type_name();
            // A seqlock read: the type is this value's only if the word did
            // not move meanwhile.
            fence(Ordering::Acquire);
            let again = slot.state.load(Ordering::Relaxed);
            if slot::generation(again) == generation && again & LIVE != 0 {
                return if holds {
                    Ok(())
                } else {
                    Err(Error::WrongType {
                        expected: std::any::type_name::<T>(),
                        found,
                    })
                };
            }
        }
    }

    /// How many values are live (saved and not yet taken or unreffed).
    ///
    /// It counts the slots, so it costs time in proportion to the most
    /// values ever live at once: use it for diagnostics, not in a loop.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(());
    /// assert_eq!(r.len(), 1);
    /// r.unref(p).unwrap();
    /// assert_eq!(r.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.pages
            .slots()
            .filter(|(_, s)| s.state.load(Ordering::Relaxed) & LIVE != 0)
            .count()
    }

    /// Whether no value is live.
    ///
    /// ```
    /// assert!(handle_registry::Registry::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owning [`Handle`] to `value` in this registry.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let h = r.handle(String::from("owned"));
    /// assert_eq!(r.len(), 1);
    /// drop(h);
    /// assert!(r.is_empty());
    /// ```
    #[track_caller]
    pub fn handle<T: Any + Send>(&self, value: T) -> Handle<'_, T> {
        let ptr = self.save(value);
        Handle::from_parts(self, ptr)
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn pages(&self) -> &Pages {
        &self.pages
    }

    pub(crate) fn failure_log(&self) -> &FailureLog {
        &self.failures
    }

    /// Records a refusal (see [`failures`](crate::failures)) and returns it.
    #[cold]
    pub(crate) fn refused(&self, ptr: *mut c_void, error: Error, expected: &'static str) -> Error {
        self.failures.note(ptr, error, expected);
        error
    }

    /// Decodes `ptr` and finds its slot; returns it with the handle's
    /// generation. Touches no memory but the directory and the slot.
    #[inline]
    fn lookup(&self, ptr: *mut c_void) -> Result<(&Slot, u32), Error> {
        let decoded = LAYOUT.decode(handle::from_ptr(ptr))?;
        if decoded.registry != self.id {
            return Err(if is_live(decoded.registry) {
                Error::WrongRegistry
            } else {
                Error::Invalid
            });
        }
        match self.slot(decoded.index) {
            Some(slot) => Ok((slot, decoded.generation)),
            None => Err(Error::Invalid),
        }
    }

    /// Why a handle of generation `generation` does not match the word
    /// `seen` of its slot, when the slot holds no value of that generation.
    #[cold]
    fn refusal(&self, _ptr: *mut c_void, seen: usize, generation: u32) -> Error {
        // A slot never handed out may still be all zero (Vacant(0), see
        // `page_memory`): it stands for Vacant(base), as every slot
        // handed out is at `base` or later, so that a handle of an earlier
        // registry with this id stays `Stale` there.
        let current = slot::generation(seen).max(self.base);
        if generation < current || (generation == current && seen & RETIRED != 0) {
            Error::Stale
        } else {
            // A newer generation, or the current one not issued yet.
            Error::Invalid
        }
    }

    /// Finds the `T` that `ptr` names and borrows it, waiting while another
    /// thread holds a conflicting borrow. Returns the slot and the word the
    /// borrow set.
    #[inline]
    fn borrow<T: Any + Send>(&self, ptr: *mut c_void, mode: Mode) -> Result<(&Slot, usize), Error> {
        match self.try_borrow::<T>(ptr, mode) {
            Ok(borrowed) => Ok(borrowed),
            Err(e) => Err(self.refused(ptr, e, std::any::type_name::<T>())),
        }
    }

    #[inline]
    fn try_borrow<T: Any + Send>(
        &self,
        ptr: *mut c_void,
        mode: Mode,
    ) -> Result<(&Slot, usize), Error> {
        let (slot, generation) = self.lookup(ptr)?;
        let free = slot::at(generation) | LIVE;
        let locked = match mode {
            Mode::Exclusive => match thread::id() {
                Some(id) => slot::exclusive(generation, id),
                None => return Err(Error::Busy),
            },
            Mode::Reclaim => slot::exclusive(generation, thread::RECLAIMER),
            Mode::Shared => free | READER,
        };
        let locked =
            match slot
                .state
                .compare_exchange(free, locked, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => locked,
                Err(seen) => self.borrow_slow(ptr, slot, generation, mode, locked, seen)?,
            };
        if slot.holds::<T>() {
            return Ok((slot, locked));
        }
        let found = slot.type_name();
        // SAFETY: we hold the borrow just taken.
        unsafe {
            match mode {
                Mode::Exclusive | Mode::Reclaim => self.release_exclusive(slot, locked),
                Mode::Shared => self.release_shared(slot),
            }
        }
        Err(Error::WrongType {
            expected: std::any::type_name::<T>(),
            found,
        })
    }

    /// The borrow's first exchange failed on `seen`: classify, retry, or
    /// wait (protocol rule 2).
    #[cold]
    #[inline(never)]
    fn borrow_slow(
        &self,
        ptr: *mut c_void,
        slot: &Slot,
        generation: u32,
        mode: Mode,
        exclusive_word: usize,
        mut seen: usize,
    ) -> Result<usize, Error> {
        // The id this thread had when `seen` was read. Never `thread::id()`:
        // it may assign the very id `seen` names (see `thread`).
        let me = thread::known_id();
        let mut waiting = None;
        loop {
            if slot::generation(seen) != generation || seen & LIVE == 0 {
                return Err(self.refusal(ptr, seen, generation));
            }
            if seen & PARKED != 0 {
                drop(waiting.take());
                seen = self.unpark(slot, seen)?;
                continue;
            }
            // R3: a thread that holds a record borrow of the handle never
            // waits for an exclusive borrow of it, pending or not.
            if mode != Mode::Shared && seen & SHARED != 0 && readers::mine_holds(ptr.addr()) {
                return Err(Error::Busy);
            }
            let readers = if seen & EXCLUSIVE != 0 {
                0
            } else {
                slot::borrow(seen)
            };
            let attempt = match mode {
                Mode::Exclusive | Mode::Reclaim if !slot::is_borrowed(seen) => {
                    Some(exclusive_word | (seen & (WAITING | COUNTED | SHARED)))
                }
                Mode::Shared if seen & EXCLUSIVE == 0 && readers < slot::MAX_BORROW => {
                    Some(seen + READER)
                }
                _ => None,
            };
            if let Some(new) = attempt {
                // `SeqCst`: on a shared-mode word this announces an
                // exclusive borrow to record readers (R3).
                match slot
                    .state
                    .compare_exchange(seen, new, Ordering::SeqCst, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if new & (EXCLUSIVE | SHARED) == EXCLUSIVE | SHARED {
                            drop(waiting);
                            self.await_records(ptr.addr());
                            let now = slot.state.load(Ordering::SeqCst);
                            if now & LIVE == 0 {
                                // Removed while we waited: as a woken waiter
                                // would, answer `Stale`; our release is the
                                // orphan's (R5).
                                // SAFETY: we hold the borrow that set `new`.
                                unsafe { self.release_exclusive(slot, new) };
                                return Err(self.refusal(ptr, now, generation));
                            }
                        }
                        return Ok(new);
                    }
                    Err(now) => {
                        seen = now;
                        continue;
                    }
                }
            }
            // Blocked by `seen` itself (never a fresh load: we may park on it).
            if seen & PINNED != 0 && Some(slot::borrow(seen)) != me {
                return Err(Error::WrongThread);
            }
            let mine = if mode == Mode::Reclaim {
                false
            } else if seen & EXCLUSIVE != 0 {
                Some(slot::borrow(seen)) == me
            } else if readers == slot::MAX_BORROW && mode == Mode::Shared {
                true // the count would overflow: refuse, as for a conflict
            } else {
                thread::may_hold_shared(ptr as usize)
            };
            if mine {
                return Err(Error::Busy);
            }
            let Some(guard) = waiting.take() else {
                waiting = Some(self.wait_lock.lock());
                seen = slot.state.load(Ordering::Relaxed);
                continue;
            };
            if seen & WAITING == 0 {
                if let Err(now) = slot.state.compare_exchange(
                    seen,
                    seen | WAITING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    seen = now;
                    waiting = Some(guard);
                    continue;
                }
            }
            waiting = Some(self.wake.wait(guard));
            seen = slot.state.load(Ordering::Relaxed);
        }
    }

    #[cold]
    fn wake_waiters(&self) {
        let _waiting = self.wait_lock.lock();
        self.wake.notify_all();
    }

    /// Ends an exclusive borrow that set the word `locked`: leaves it if
    /// parked, else releases (or parks) it.
    ///
    /// # Safety
    /// The caller holds that exclusive borrow of `slot`, a slot of `self`.
    #[inline(always)]
    pub(crate) unsafe fn release_exclusive(&self, slot: &Slot, locked: usize) {
        if locked & PARKED != 0 {
            self.leave_parked(slot, locked);
        } else {
            // SAFETY: per the caller.
            unsafe { self.release_or_park(slot, locked) }
        }
    }

    /// A [`Guard`]'s release outside its common cases, kept out of line so
    /// that the rest of its drop inlines into a trampoline.
    ///
    /// # Safety
    /// As for [`release_exclusive`](Registry::release_exclusive); `lent`
    /// says whether a lend served the borrow, as for the guard.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn release_guard(&self, slot: &Slot, locked: usize, lent: bool) {
        // The innermost lend was asked inline (`Guard::drop`).
        if lent && crate::lend::give_back_slow(slot) {
            return;
        }
        // SAFETY: per the caller; a lend that ended left us its borrow.
        unsafe { self.release_exclusive(slot, locked) }
    }

    /// Ends a real exclusive borrow: releases it, or parks it (step 1).
    ///
    /// # Safety
    /// As for [`release_exclusive`](Registry::release_exclusive); `locked`
    /// has no `PARKED`.
    #[inline(never)]
    pub(crate) unsafe fn release_or_park(&self, slot: &Slot, locked: usize) {
        let released = if self.parks(slot, locked) {
            locked | PARKED
        } else {
            slot::unborrowed(locked)
        };
        if slot
            .state
            // `SeqCst`, though `Release` is all the in-word protocol needs:
            // a shared-mode word (`locked` has `SHARED`) is read by record
            // readers with `SeqCst` loads (readers R3). Same instruction as
            // `Release` on x86 (`lock cmpxchg`).
            .compare_exchange(locked, released, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: per the caller.
            unsafe { self.release_slow(slot, Mode::Exclusive) }
        }
    }

    /// Whether the release of this thread's exclusive borrow `locked`
    /// should park it (step 1): a plain word of this thread's parking id,
    /// a slot it keeps restoring, and no entry of a forgotten guard for
    /// that address in its record.
    #[inline]
    fn parks(&self, slot: &Slot, locked: usize) -> bool {
        locked & (WAITING | COUNTED | SHARED | PINNED) == 0
            && parked::parking_id() == Some(slot::borrow(locked))
            && parked::streak(slot)
            && !parked::mine_holds(slot::borrow(locked), slot)
    }

    /// Ends one shared borrow.
    ///
    /// # Safety
    /// The caller holds a shared borrow of `slot`, a slot of `self`.
    #[inline]
    pub(crate) unsafe fn release_shared(&self, slot: &Slot) {
        // SAFETY: per the caller.
        unsafe { self.release_slow(slot, Mode::Shared) }
    }

    /// Ends a borrow whose word may carry more than the borrow: `WAITING`
    /// to clear (and wake), or an orphan to dispose of (transition 3).
    ///
    /// # Safety
    /// As for the two callers.
    unsafe fn release_slow(&self, slot: &Slot, mode: Mode) {
        let mut seen = slot.state.load(Ordering::Relaxed);
        loop {
            let mut new = match mode {
                Mode::Exclusive | Mode::Reclaim => slot::unborrowed(seen) | (seen & WAITING),
                Mode::Shared => seen - READER,
            };
            let last = !slot::is_borrowed(new);
            if last {
                new &= !WAITING;
            }
            let orphan_done = last && seen & LIVE == 0;
            // The last borrower of an orphan acquires the other borrowers'
            // releases before it drops the value. `SeqCst`: on a
            // shared-mode word this pairs with record operations (R5).
            match slot
                .state
                .compare_exchange(seen, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => {
                    if last && seen & WAITING != 0 {
                        self.wake_waiters();
                    }
                    if orphan_done && new & SHARED != 0 {
                        // Record readers may still hold it (R5).
                        let g = slot::orphaned_generation(new);
                        let h = LAYOUT.encode(self.index_of_slot(slot), self.id, g) as usize;
                        // SAFETY: `h` is the handle of this slot's orphan.
                        unsafe { self.settle(slot, h, g) };
                    } else if orphan_done {
                        // SAFETY: ours was the orphan's last borrow: the slot
                        // is now vacant (or retired) and its value ours.
                        unsafe { self.dispose(slot, self.index_of_slot(slot), new) };
                    }
                    return;
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Drops the value of a slot made vacant (or retired) by the caller,
    /// then frees its index unless retired, also when the drop panics.
    ///
    /// # Safety
    /// The caller made the slot vacant or retired with word `now`, and the
    /// value in it is not yet dropped.
    #[inline]
    unsafe fn dispose(&self, slot: &Slot, index: usize, now: usize) {
        if !slot.has_drop_glue() {
            if now & RETIRED == 0 {
                self.free_index(index);
            }
            return;
        }
        struct FreeOnExit<'a>(&'a Registry, usize, bool);
        impl Drop for FreeOnExit<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.free_index(self.1);
                }
            }
        }
        let _free = FreeOnExit(self, index, now & RETIRED == 0);
        if std::thread::panicking() {
            // SAFETY: per the caller.
            unsafe { Self::dispose_unwinding(slot) };
            return;
        }
        // SAFETY: per the caller.
        unsafe { slot.drop_value() }
    }

    /// Drops a value while this thread unwinds (a guard released by the
    /// unwind is the last borrower of an orphan, or an `unref` runs in a
    /// `Drop`): a panic out of the value's `Drop` would abort the process
    /// there, so it is caught and its payload dropped, as a registry being
    /// dropped does.
    ///
    /// # Safety
    /// As for [`dispose`](Registry::dispose).
    #[cold]
    #[inline(never)]
    unsafe fn dispose_unwinding(slot: &Slot) {
        // SAFETY: per the caller.
        crate::panic::catch_quietly(|| unsafe { slot.drop_value() });
    }

    /// The index of one of our slots (the slow path of an orphan's release,
    /// which has no handle at hand).
    #[cold]
    fn index_of_slot(&self, slot: &Slot) -> usize {
        self.pages
            .index_of(slot)
            .expect("a borrowed slot belongs to its registry")
    }

    #[cfg(test)]
    pub(crate) fn counts_is_empty(&self) -> bool {
        self.counts.lock().is_empty()
    }

    /// The state word of `ptr`'s slot.
    #[cfg(test)]
    pub(crate) fn word(&self, ptr: *mut c_void) -> usize {
        self.slot_of(ptr).state.load(Ordering::SeqCst)
    }

    /// `ptr`'s slot.
    #[cfg(test)]
    pub(crate) fn slot_of(&self, ptr: *mut c_void) -> &Slot {
        self.lookup(ptr).unwrap().0
    }

    #[cfg(test)]
    pub(crate) fn set_generation(&self, ptr: *mut c_void, generation: u32) -> *mut c_void {
        self.slot_of(ptr)
            .state
            .store(slot::at(generation) | LIVE, Ordering::Relaxed);
        handle::to_ptr(LAYOUT.encode(index_of(ptr), self.id, generation))
    }
}

/// The generation of a handle already decoded and checked once.
#[inline]
fn handle_generation(h: usize) -> u32 {
    (h as u64 >> (LAYOUT.index_bits + LAYOUT.registry_bits)) as u32
}

/// The slot index of a handle already decoded and checked once.
#[inline]
fn index_of(ptr: *mut c_void) -> usize {
    // The index bits of a valid handle are the index plus one (never 0).
    (handle::from_ptr(ptr) & ((1 << LAYOUT.index_bits) - 1)) as usize - 1
}

/// Step 2's second half (see [`parked`]), once the thread listed `slot` in
/// its record and ran the light barrier: the enter holds if the word is
/// still the parked `word` (no other thread asked for the slot meanwhile)
/// and the slot holds a `T`. One place for that rule, which both
/// `restore`'s and `restore_with`'s inline paths apply.
#[inline(always)]
pub(crate) fn still_parked<T: Any + Send>(slot: &Slot, word: usize) -> bool {
    slot.state.load(Ordering::Acquire) == word && slot.holds::<T>()
}

impl Drop for Registry {
    fn drop(&mut self) {
        // No guard can outlive `&self`, so every value is ours: live ones,
        // and orphans of guards that were forgotten.
        let mut panic = None;
        let mut next_base = u64::from(self.base);
        // Slots never handed out may read as Vacant(0) (`page_memory`):
        // they add at most 1, and a page exists only once `grow` set some
        // of its slots to `base` (or later), which add at least `base + 1`.
        // Reading them maps the OS's shared zero page, not fresh memory.
        for (_, slot) in self.pages.slots() {
            let word = slot.state.load(Ordering::Acquire);
            next_base = next_base.max(u64::from(slot::generation(word)) + 1);
            if word & (LIVE | SHARED) != 0 || slot::is_borrowed(word) {
                // SAFETY: owned, see above. Keep dropping the rest if one
                // value's `Drop` panics.
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                    slot.drop_value()
                }));
                if let Err(payload) = dropped {
                    crate::panic::keep_first(&mut panic, payload);
                }
            }
        }
        set_live(self.id, false);
        // The id may serve again, with generations past every one issued.
        if next_base <= u64::from(LAYOUT.max_generation()) {
            IDS.lock().free.push((self.id, next_base as u32));
        }
        if let Some(payload) = panic {
            crate::panic::resume_unless_unwinding(payload);
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
