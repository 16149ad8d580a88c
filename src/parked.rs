//! Parked exclusive borrows: a `restore` without locked instructions.
//!
//! # Why
//!
//! A plain `restore` pays two locked instructions, the borrow's and the
//! release's compare-exchange; on some hosts each costs about 7 ns, against
//! 2.6 ns for a whole callback through a raw pointer. But the common caller
//! is one thread restoring one handle over and over (a C library's callback
//! loop). That thread may keep its exclusive borrow between callbacks,
//! *parked* in the slot's word, and enter and leave it with plain stores
//! and loads. Any other thread, or any other operation, that needs the slot
//! first makes the owner leave, with a process-wide barrier
//! (`membarrier`) standing in for the fence the owner no longer executes.
//!
//! # The pieces
//!
//! * `Parked(g, t)` is `g LIVE EXCL PARKED t` (see [`slot`](crate::slot)):
//!   exclusively borrowed by owner id `t`, but nobody is inside unless
//!   `t`'s *record* says so. A real exclusive borrow has no `PARKED`, and
//!   everyone meeting one waits, as before.
//! * Each owner id below [`IDS`] has a record, in a static table: the slots
//!   its thread is inside, at most [`ENTRIES`] at once. Only that thread
//!   writes it, with plain stores, on its own pair of cache lines.
//! * The **light** barrier, on the owner's side, is a compiler fence. The
//!   **heavy** one, on every other side, is
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: when it returns, every
//!   thread of the process has run a full barrier (or been switched out,
//!   which is one). Together they are a Dekker pair: when one thread
//!   stores X, light-fences, loads Y, and another writes Y, heavy-fences,
//!   loads X, at least one of the two loads sees the other's store. Under
//!   Miri both are `SeqCst` fences, which give the same guarantee in C11,
//!   so Miri runs every parked path; where `membarrier` is missing (not
//!   Linux, registration refused) and under loom, nothing parks and every
//!   path is the one before parking.
//!
//! # Transitions
//!
//! `T` is the owner id of the parking thread, `S` any other thread's.
//!
//! 1. **park** (the owner's release of a real borrow): `Excl(g, T)` →
//!    `Parked(g, T)` by its usual release exchange, when the word is plain
//!    (no `WAITING`, `COUNTED`, `SHARED`, `PINNED`), the thread may park
//!    (a live lease on an id below [`IDS`]) and has restored this slot
//!    [`STREAK`] times in a row (the policy below).
//! 2. **enter** (the owner's `restore`): unless the record already lists
//!    the slot (a nested restore: `Busy`, by the slow path), store the slot
//!    in a free entry (`Relaxed`), light barrier, load the word
//!    (`Acquire`). Exactly `Parked(g, T)`, and the type matches: inside, no
//!    locked instruction. Otherwise leave again (steps 3 and 4) and take
//!    the ordinary path.
//! 3. **leave** (the guard's drop): clear the entry (`Release`: a stealer
//!    that reads it cleared acquires every access made inside), light
//!    barrier, load the word. Still `Parked(g, T)`: done. Otherwise step 4.
//! 4. **after leaving**: a parked orphan with owner `T`, of generation `g`
//!    or of any other (an enter through the hot handle, below, may start
//!    from a generation the slot has left, and its listing still counts
//!    for a racing unref's step 7): try to dispose of it (step 8). Any
//!    other word with `WAITING` (at
//!    least `Parked(g, T) + WAITING`) may have a stealer waiting for this
//!    entry: take the wait lock and wake all (a spurious wake-up costs a
//!    waiter one more look).
//! 5. **steal** (any borrow, `take` or `restore_ref` by `S`, meeting
//!    `Parked(g, T)`): set `WAITING` by compare-exchange (`Acquire`: it
//!    reads the owner's park), heavy barrier, then under the wait lock read
//!    `T`'s record (`Acquire`). The slot is not listed: the owner is
//!    outside, and by the barrier its next enter sees `WAITING` and fails;
//!    turn `Parked(g, T) + WAITING` into `Live(g)`, wake all, retry. Listed:
//!    if the word, reloaded under the lock, is still the flagged word, wait
//!    on the condition variable; retry. No lost wake-up: the owner clears
//!    its entry after the barrier (else the read had seen it cleared), so
//!    its step 4 sees that `WAITING` (or a later word, and every transition
//!    that clears the flag wakes all) and takes the lock this thread holds
//!    until it waits. The reload matters: a word read before an unpark and
//!    a re-park may carry a `WAITING` that is no longer there, which the
//!    owner would never answer (loom found that deadlock in the model's
//!    first draft).
//! 6. **the owner's own slow path**: the owner, not inside, meeting its own
//!    `Parked(g, T)` (with `WAITING`, or `COUNTED` from a `retain`) turns
//!    it into `Live(g)` itself (no barrier: only `T` enters `T`'s parks)
//!    and wakes all if flagged. Inside (its record lists the slot): `Busy`.
//! 7. **unref** of `Parked(g, T)` never waits: it orphans the word like any
//!    borrowed word (`g+1 EXCL PARKED T`: stale at once). Then the owner
//!    knows from its own record whether it is inside; any other thread
//!    heavy-fences and reads `T`'s record. Not listed: step 8. Listed
//!    (inside, or in a failed enter about to leave): the owner's leave
//!    meets the orphan and disposes of it (step 4).
//! 8. **dispose**: compare-exchange the parked orphan's exact word to
//!    vacant; the winner drops the value and frees the index, and wakes
//!    all if the orphan carried `WAITING`. The unref and the owner may
//!    both try (the Dekker pair lets both see each other); the exchange
//!    picks one. So an unref that races the owner's next enter may return
//!    before the drop: the owner listed the slot before the unref read
//!    its record (and the unref left the drop to it), or won the exchange.
//!    The owner's failed enter then drops the value on its thread, in a
//!    `restore` that answers `Stale`: README documents it beside
//!    `restore_ref`'s same race.
//!
//! The loom models in `loom_tests/parked.rs` check this handshake on a
//! model slot, and fail with either barrier weakened, the disposers not
//! arbitrated, or step 5 without its reload.
//!
//! # Owner ids, thread-local teardown, forgotten guards
//!
//! * A dying thread gives its owner id back when its lease is destroyed and
//!   may go on using it, so two threads may share `T` for a while (see
//!   [`thread`](crate::thread)). The lease therefore stops this thread's
//!   parking first; and if the thread is still inside a parked borrow then
//!   (a guard alive during teardown), the id is never given back.
//! * A new thread that later gets `T` may enter `T`'s parked slots: it
//!   inherits the borrow, ordered after the old thread's last access by
//!   the id pool's lock, as an ordinary borrow would be.
//! * A guard forgotten with `mem::forget` keeps its entry: stealers wait,
//!   as they wait for a forgotten exclusive guard. The entry also keeps the
//!   thread from parking that slot's address again.
//!
//! # The hot handle
//!
//! Step 2 starts from the handle: its registry id, its index, the slot of
//! that index, this thread's parking id and the parked word they make.
//! The thread keeps the result for the last handle it entered parked, in
//! [`Parking`] (or [`PrivateHot`], below), and a `restore` of that handle
//! skips straight to step 2's store (for a registry other than the global
//! one, `restore` reads the entry after the split that checks the handle's
//! registry id; `restore_with` reads it first, the serial being check
//! enough). The cache
//! is only a shortcut to the same slot and word: it is set from the
//! values step 2 just used, with the thread's current parking id, and
//! cleared whenever that id changes ([`enable`], [`disable`]) or an enter
//! through it fails (unless a value's `Drop`, run by that failed enter,
//! panics first: the entry then stays, and costs only a miss); the word
//! loaded after the barrier still decides whether the thread enters.
//! Its listing, though, is seen by an unref like any other: if the slot
//! has moved on (the value taken, the index saved again and parked by
//! this thread, not yet entered), an unref of the new value racing this
//! failed enter may leave the drop to this thread, so step 4 disposes of
//! this thread's parked orphan whatever its generation (an adversarial
//! review found the leak when it required `g`); and a steal of the new
//! value may wait on that listing, so step 4 wakes on any `WAITING`.
//! `loom_tests/parked.rs` models both races.
//!
//! It has two entries: one for the global registry, a `static` whose
//! slots never move, and one for the last handle of any other registry.
//! A registry's slots stay put only while it lives, and a dropped
//! registry's id is reused, and its address may be; so the second entry
//! also holds the registry's serial, a number no other registry of the
//! process has, and only the registry with that serial reads the entry's
//! slot (`Registry::hot_private`). Two entries, not one tied to a serial,
//! so that the free functions compare the handle alone, as before other
//! registries had one.
//!
//! # When the barrier is refused
//!
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` is refused only without
//! a registration, which the process made before anything parked; a child
//! of `fork` may have lost it, so a refusal registers again, and failing
//! that, uses `MEMBARRIER_CMD_GLOBAL`, which needs none and waits for
//! every CPU. Were that refused too (the kernel accepted the registration,
//! so it has the call; the global command is refused on `nohz_full` CPUs,
//! and all of them by a seccomp filter installed after the registration),
//! no barrier could be proved, and the process aborts rather than let two
//! threads reach one value, as a scope whose guard escaped does: a case no
//! test machine produces. Waiting for the owner instead would hang: a
//! parked borrow is held for as long as its owner is away.
//!
//! # Policy: park only what keeps coming back
//!
//! A steal costs a `membarrier`: on the Intel host of 2026-11-27, 140 ns
//! alone, 200 ns with another thread asleep, and 0.4 to 18 µs (mostly 11
//! to 18) with another thread running on the other CPU, a virtual machine's
//! inter-processor interrupt; a whole stolen `restore` took 0.52 to
//! 0.58 µs at the median in a later probe, against 51 ns unparked. That is
//! tens to a thousand saved locked instructions.
//! So a thread parks a slot only after [`STREAK`] consecutive real borrows
//! of it, and starts counting again when it borrows a slot for real after
//! a full streak (its park was lost): a handle restored once and freed
//! elsewhere (a request) never parks, and a handle two threads pass back
//! and forth pays one steal per `STREAK` real borrows of its owner, about
//! doubling their cost at worst.

use std::cell::Cell;
use std::ptr;

use crate::slot::Slot;
use crate::sync::thread_locals;
use crate::sync::unmodelled::{AtomicPtr, AtomicU8};
use std::sync::atomic::Ordering;

/// Owner ids below this have a record and may park.
pub(crate) const IDS: usize = 1024;
/// Parked borrows one thread may be inside at once.
pub(crate) const ENTRIES: usize = 8;
/// Consecutive real borrows of one slot by one thread before it parks.
#[cfg(not(any(test, miri)))]
pub(crate) const STREAK: u32 = 1024;
/// Small enough that the unit tests and Miri reach the parked paths.
#[cfg(any(test, miri))]
pub(crate) const STREAK: u32 = 4;

/// One owner id's entries: the slots its thread is inside. 128 bytes, as
/// x86 processors fetch lines in pairs: two threads storing to the two
/// lines of one pair would slow each other down.
#[repr(align(128))]
struct Record {
    held: [AtomicPtr<Slot>; ENTRIES],
}

#[allow(clippy::declare_interior_mutable_const)] // an array initialiser
const EMPTY: Record = Record {
    held: [const { AtomicPtr::new(ptr::null_mut()) }; ENTRIES],
};

/// Indexed by owner id; 128 KiB of zeroed memory, resident only where
/// written.
static RECORDS: [Record; IDS] = [EMPTY; IDS];

thread_locals! {
    /// This thread's parking id and hot handle.
    static PARKING: Parking = const {
        Parking {
            id: Cell::new(0),
            hot: Cell::new(0),
            hot_slot: Cell::new(ptr::null()),
            hot_word: Cell::new(0),
        }
    };
    /// Which of this thread's entries are in use.
    static USED: Cell<u8> = const { Cell::new(0) };
    /// The slot of this thread's last real borrow, and how many in a row.
    static STREAK_OF: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
    /// This thread's hot handle of registries other than the global one.
    static PRIVATE_HOT: PrivateHot = const {
        PrivateHot {
            handle: Cell::new(0),
            serial: Cell::new(0),
            slot: Cell::new(ptr::null()),
            word: Cell::new(0),
        }
    };
}

/// A thread's parking state.
struct Parking {
    /// Its owner id while it may park; 0 when it may not.
    id: Cell<usize>,
    /// Its hot handle (see the module notes): the last handle of the global
    /// registry it entered parked, 0 (never a handle) when none; that
    /// handle's slot; and the parked word.
    hot: Cell<usize>,
    hot_slot: Cell<*const Slot>,
    hot_word: Cell<usize>,
}

/// A thread's hot handle of registries other than the global one: the
/// last such handle it entered parked, with its registry's serial (see
/// `Registry::hot_private`), a serial of 0 when none; its slot; the
/// parked word. A thread-local of its own, so that [`Parking`], which the
/// global registry's path reads, is as it was.
struct PrivateHot {
    handle: Cell<usize>,
    serial: Cell<u64>,
    slot: Cell<*const Slot>,
    word: Cell<usize>,
}

/// The slot and parked word of `handle` if it is this thread's hot handle.
#[inline(always)]
pub(crate) fn hot(handle: usize) -> Option<(*const Slot, usize)> {
    PARKING
        .try_with(|p| {
            // `handle` may be anything C passed; 0 is never a hot handle.
            (p.hot.get() == handle && handle != 0).then(|| (p.hot_slot.get(), p.hot_word.get()))
        })
        .ok()
        .flatten()
}

/// The slot and parked word of `handle` if it is this thread's hot handle
/// of the registry whose serial is `serial`, any registry but the global
/// one (whose serial, 0, is that of a cleared entry).
#[cfg_attr(all(loom, test), allow(dead_code))] // loom builds have no hot handle
#[inline(always)]
pub(crate) fn hot_private(handle: usize, serial: u64) -> Option<(*const Slot, usize)> {
    PRIVATE_HOT
        .try_with(|p| {
            // `handle` may be anything C passed: only a set entry, whose
            // serial is the registry's, holds a handle it issued.
            (p.handle.get() == handle && p.serial.get() == serial)
                .then(|| (p.slot.get(), p.word.get()))
        })
        .ok()
        .flatten()
}

/// Makes `handle` this thread's hot handle of the registry whose serial
/// is `serial`, neither 0 (a cleared entry) nor [`NO_SERIAL`], any
/// registry but the global one: `slot` is that registry's slot of its
/// index, and `word` as for [`set_hot`].
#[cfg_attr(all(loom, test), allow(dead_code))] // loom builds have no hot handle
#[inline(always)]
pub(crate) fn set_hot_private(handle: usize, serial: u64, slot: &Slot, word: usize) {
    debug_assert!(
        serial != 0 && serial != NO_SERIAL,
        "serial {serial} has no hot handle"
    );
    let _ = PRIVATE_HOT.try_with(|p| {
        p.handle.set(handle);
        p.serial.set(serial);
        p.slot.set(slot);
        p.word.set(word);
    });
}

/// The serial of a registry created after every other serial was handed
/// out, more registries than a process can create: it has no hot handle.
pub(crate) const NO_SERIAL: u64 = u64::MAX;

/// Makes `handle` this thread's hot handle of the global registry: `slot`
/// is the global registry's slot of its index, and `word` the parked word
/// of its generation and this thread's parking id, which step 2 just
/// entered.
#[cfg_attr(all(loom, test), allow(dead_code))] // loom builds have no hot handle
#[inline(always)]
pub(crate) fn set_hot(handle: usize, slot: &Slot, word: usize) {
    let _ = PARKING.try_with(|p| {
        p.hot.set(handle);
        p.hot_slot.set(slot);
        p.hot_word.set(word);
    });
}

/// Forgets this thread's hot handles: the global entry's handle 0 and the
/// private entry's serial 0 are values no registry's lookup matches.
#[cold]
pub(crate) fn clear_hot() {
    let _ = PARKING.try_with(|p| p.hot.set(0));
    let _ = PRIVATE_HOT.try_with(|p| p.serial.set(0));
}

/// Lets this thread park, if parking is supported, now that it holds owner
/// id `id` with a live lease.
pub(crate) fn enable(id: usize) {
    if id < IDS && supported() {
        let _ = PARKING.try_with(|p| p.id.set(id));
        clear_hot();
    }
}

/// Stops this thread's parking, as its lease is destroyed. Returns whether
/// it is still inside a parked borrow, in which case its id must never be
/// given back.
pub(crate) fn disable() -> bool {
    let _ = PARKING.try_with(|p| p.id.set(0));
    clear_hot();
    USED.try_with(Cell::get).unwrap_or(0) != 0
}

/// This thread's owner id if it may park.
#[inline(always)]
pub(crate) fn parking_id() -> Option<usize> {
    match PARKING.try_with(|p| p.id.get()) {
        Ok(0) | Err(_) => None,
        Ok(id) => Some(id),
    }
}

/// The entry of this thread's record that lists `slot`.
#[inline(always)]
fn find(record: &Record, used: u8, slot: *const Slot) -> Option<usize> {
    (0..ENTRIES)
        .find(|&i| used & (1 << i) != 0 && ptr::eq(record.held[i].load(Ordering::Relaxed), slot))
}

/// Step 2's first half: lists `slot` in owner `id`'s record (this
/// thread's), then runs the light barrier; the caller then loads the word.
/// `false`, having changed nothing, when the record lists it already or
/// is full.
#[inline(always)]
pub(crate) fn enter(id: usize, slot: &Slot) -> bool {
    let Ok(used) = USED.try_with(Cell::get) else {
        return false;
    };
    // `id` is a parking id, below `IDS`: the mask only spares a bounds check.
    let record = &RECORDS[id % IDS];
    if used == 0 {
        list_alone(record, slot);
        return true;
    }
    let Some(free) = nested_entry(record, used, slot) else {
        return false;
    };
    record.held[free].store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
    USED.with(|u| u.set(used | 1 << free));
    light_barrier();
    true
}

/// [`enter`] when this thread is inside no parked borrow, which keeps it
/// free of calls; `false`, having changed nothing, when it is inside one.
#[cfg_attr(all(loom, test), allow(dead_code))] // loom builds have no hot handle
#[inline(always)]
pub(crate) fn enter_alone(id: usize, slot: &Slot) -> bool {
    if !matches!(USED.try_with(Cell::get), Ok(0)) {
        return false;
    }
    list_alone(&RECORDS[id % IDS], slot);
    true
}

/// Step 2's first half when the thread is inside no parked borrow.
#[inline(always)]
fn list_alone(record: &Record, slot: &Slot) {
    record.held[0].store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
    let _ = USED.try_with(|u| u.set(1));
    light_barrier();
}

/// A free entry for an enter while the thread is inside other parked
/// borrows; `None` when it is inside this one already, or full.
#[cold]
fn nested_entry(record: &Record, used: u8, slot: &Slot) -> Option<usize> {
    if find(record, used, slot).is_some() {
        return None;
    }
    let free = (!used).trailing_zeros() as usize;
    (free < ENTRIES).then_some(free)
}

/// Step 3's first half (also the undoing of a failed enter): clears the
/// entry listing `slot`, then runs the light barrier; the caller then
/// loads the word.
#[inline(always)]
pub(crate) fn leave(id: usize, slot: &Slot) {
    if !leave_alone(id) {
        let used = USED.try_with(Cell::get).unwrap_or(0);
        leave_nested(&RECORDS[id % IDS], used, slot);
        light_barrier();
    }
}

/// [`leave`] when the thread is inside one parked borrow only, which is
/// then the caller's: clears entry 0 and runs the light barrier. `false`,
/// having changed nothing, when the thread is inside several. Kept small,
/// so that a guard's drop inlines into a trampoline.
#[inline(always)]
pub(crate) fn leave_alone(id: usize) -> bool {
    // Only this thread's enter sets `USED` and lists its slots, and only
    // its leave clears them (a guard is `!Send`); `USED` has no destructor.
    if !matches!(USED.try_with(Cell::get), Ok(1)) {
        return false;
    }
    RECORDS[id % IDS].held[0].store(ptr::null_mut(), Ordering::Release);
    let _ = USED.try_with(|u| u.set(0));
    light_barrier();
    true
}

/// [`leave`] while the thread is inside several parked borrows.
#[cold]
#[inline(never)]
fn leave_nested(record: &Record, used: u8, slot: &Slot) {
    // Always there, as in `leave_alone`.
    let found = find(record, used, slot);
    debug_assert!(found.is_some(), "a parked guard's slot is listed");
    if let Some(entry) = found {
        record.held[entry].store(ptr::null_mut(), Ordering::Release);
        let _ = USED.try_with(|u| u.set(used & !(1 << entry)));
    }
}

/// Whether this thread (owner id `id`, its own) is inside a parked borrow
/// of `slot`.
pub(crate) fn mine_holds(id: usize, slot: &Slot) -> bool {
    let used = USED.try_with(Cell::get).unwrap_or(0);
    id < IDS && used != 0 && find(&RECORDS[id], used, slot).is_some()
}

/// Steps 5 and 7: whether owner `id`'s thread is inside a parked borrow of
/// `slot`. The caller ran [`heavy_barrier`] after changing the word.
pub(crate) fn holds(id: usize, slot: &Slot) -> bool {
    id < IDS
        && RECORDS[id]
            .held
            .iter()
            .any(|entry| ptr::eq(entry.load(Ordering::Acquire), slot))
}

/// Counts a real exclusive borrow of `slot` by this thread, and says
/// whether its release should park it (the policy in the module notes).
#[inline]
pub(crate) fn streak(slot: &Slot) -> bool {
    let address = slot as *const Slot as usize;
    STREAK_OF
        .try_with(|s| {
            let (last, n) = s.get();
            // A real borrow after a full streak means the park was lost
            // (stolen, or unparked by this thread's own slow path): start
            // over, so that a handle passed back and forth pays a steal
            // only once per `STREAK` of its owner's restores.
            let n = if last == address && n < STREAK {
                n + 1
            } else {
                1
            };
            s.set((address, n));
            n >= STREAK
        })
        .unwrap_or(false)
}

/// The owner's side of the barrier pair.
#[inline(always)]
fn light_barrier() {
    #[cfg(miri)]
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(not(miri))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// Every other side's: after it, any owner's entry stored before is
/// visible, and any owner's load after its light barrier sees what this
/// thread wrote before.
#[cold]
pub(crate) fn heavy_barrier() {
    #[cfg(miri)]
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(all(not(miri), target_os = "linux"))]
    {
        // `supported` registered the process before anything parked. A
        // refusal can only mean a lost registration (a child of `fork`, on
        // kernels that do not carry it over): register again. The global
        // command needs no registration and gives the same guarantee,
        // slowly (it waits for every CPU to pass a quiescent state).
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0
            && (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0
                || membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0)
            && membarrier(MEMBARRIER_CMD_GLOBAL) != 0
        {
            // The kernel ran the registration, so it has the system call,
            // and the global command cannot be refused. Were it ever, no
            // barrier could be proved, and going on could let two threads
            // reach one value.
            std::process::abort();
        }
    }
}

/// Runs one `membarrier` command; its result (0 on success).
#[cfg(all(not(miri), target_os = "linux"))]
fn membarrier(command: libc::c_int) -> libc::c_long {
    // SAFETY: the system call takes no pointers, only the command and two
    // zero arguments (flags, CPU).
    unsafe { libc::syscall(libc::SYS_membarrier, command, 0, 0) }
}

#[cfg(all(not(miri), target_os = "linux"))]
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1 << 0;
#[cfg(all(not(miri), target_os = "linux"))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
#[cfg(all(not(miri), target_os = "linux"))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// 0: not asked yet; 1: yes; 2: no.
static SUPPORTED: AtomicU8 = AtomicU8::new(0);

/// Whether the heavy barrier is available (registering the process for it
/// the first time). Nothing parks without it.
fn supported() -> bool {
    match SUPPORTED.load(Ordering::Acquire) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let yes = register();
    SUPPORTED.store(if yes { 1 } else { 2 }, Ordering::Release);
    yes
}

#[cfg(miri)]
fn register() -> bool {
    true
}

#[cfg(all(not(miri), target_os = "linux", not(all(loom, test))))]
fn register() -> bool {
    // Registering twice (two threads racing here) is harmless.
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
}

#[cfg(all(not(miri), any(not(target_os = "linux"), all(loom, test))))]
fn register() -> bool {
    false
}

#[cfg(test)]
#[path = "parked_tests.rs"]
pub(crate) mod tests;
