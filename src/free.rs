//! Free indices: the registry's authority over which slot a `save` may
//! fill, with a per-thread cache so that saves and unrefs take no lock.
//!
//! An index is in exactly one place at a time: live (its slot holds a
//! value or is being filled or emptied by one thread), in the shared free
//! list below, or in one thread's cache. The shared list is a stack of
//! freed indices plus the first index never handed out, behind one
//! mutex; pages are allocated there, when the high-water
//! mark enters a new page, so a page exists before any index in it is
//! handed out.
//!
//! The global registry, which is the one the free functions use and which
//! lives as long as the process, also keeps a small stack of free indices
//! per thread: a `save` pops one, an `unref` pushes one, and only every
//! [`BATCH`] operations does a thread take the lock to refill or give
//! back a batch. Other registries can be dropped while threads still run,
//! so they use the shared list directly.
//!
//! # The per-thread cache
//!
//! The cache is a fixed array of [`CAP`] indices and a length, in a
//! `const` thread-local of plain `Cell`s with no destructor: reaching it is
//! one thread-relative address, with no lazy-initialisation or
//! destroyed-state check, so a pop or a push is a load, a compare, a load
//! or store of the entry, and a store of the length. Everything else is
//! on a cold path:
//!
//! | length | pop | push |
//! |---|---|---|
//! | `1..=CAP` (`0..CAP` for push) | served from the array | served into the array |
//! | `0` | refill a batch from the shared list (under its lock) | (served) |
//! | `CAP` | (served) | give the older half back, then push |
//! | `FRESH` | register `Flush`, then as for `0` | register `Flush`, then push |
//! | `CLOSED` | the shared list | the shared list |
//!
//! A second thread-local, [`Flush`], has a destructor: it is registered
//! the first time the thread uses its cache (the length starts at
//! `FRESH`, which no fast path serves), and when the thread's
//! thread-locals are destroyed it gives every cached index back and sets
//! the length to `CLOSED`, so a save or unref from a later thread-local
//! destructor takes the lock instead. A thread that first refills while
//! its thread-locals are already being destroyed finds `Flush` gone and
//! closes its cache at once (`FRESH → CLOSED`). Only the owning thread touches its cache, and
//! no reference into it is held across a call (a refill copies a batch
//! out of the shared list into a local array first, then pushes it entry
//! by entry), so a save made re-entrantly sees a consistent cache. One
//! re-entrant caller is not supported: a global allocator that saves. The
//! shared list allocates pages (and grows its stack) under its lock, so
//! that save would wait for the lock its own thread holds
//! (`tests/adversarial_round2_alloc.rs`, ignored, describes it; README
//! says so).

use std::cell::Cell;
use std::ptr;

use crate::sync::{thread_locals, Mutex};

use crate::handle::Layout;
use crate::pages::Pages;
use crate::Error;

/// Indices moved between a thread's cache and the shared list at once.
const BATCH: usize = 32;
/// Indices a thread's cache holds at most.
const CAP: usize = 2 * BATCH;
/// The length of a cache that no longer serves (see the module notes).
const CLOSED: usize = usize::MAX;
/// The length of a cache not used yet: its [`Flush`] is not registered.
const FRESH: usize = usize::MAX - 1;

/// The shared free list of one registry.
pub(crate) struct FreeList {
    inner: Mutex<Shared>,
}

struct Shared {
    /// Freed indices, most recent last.
    freed: Vec<u32>,
    /// The first index never handed out.
    next: usize,
}

impl FreeList {
    pub const fn new() -> FreeList {
        FreeList {
            inner: Mutex::new(Shared {
                freed: Vec::new(),
                next: 0,
            }),
        }
    }

    /// Moves up to `n` free indices to `out`, most recently freed first,
    /// allocating pages for new ones (their slots vacant at generation
    /// `base`). Returns how many it moved: zero when every index is live or
    /// retired.
    fn take(&self, pages: &Pages, base: u32, out: &mut Vec<u32>, n: usize) -> usize {
        let mut shared = self.inner.lock();
        if shared.freed.len() < n {
            shared.grow(pages, base, BATCH.max(n));
        }
        let moved = n.min(shared.freed.len());
        let from = shared.freed.len() - moved;
        out.extend(shared.freed.drain(from..));
        moved
    }

    /// [`take`](FreeList::take) into a buffer: fills the front of `out`,
    /// the most recently freed index last. Returns how many it moved.
    fn take_into(&self, pages: &Pages, base: u32, out: &mut [u32]) -> usize {
        let mut shared = self.inner.lock();
        if shared.freed.len() < out.len() {
            shared.grow(pages, base, BATCH.max(out.len()));
        }
        let moved = out.len().min(shared.freed.len());
        let from = shared.freed.len() - moved;
        for (to, index) in out.iter_mut().zip(shared.freed.drain(from..)) {
            *to = index;
        }
        moved
    }

    /// Returns indices to the shared list.
    fn give(&self, indices: impl Iterator<Item = u32>) {
        self.inner.lock().freed.extend(indices);
    }

    /// One free index for a registry without a thread cache.
    pub fn pop(&self, pages: &Pages, base: u32) -> Result<usize, Error> {
        let mut one = Vec::with_capacity(1);
        match self.take(pages, base, &mut one, 1) {
            0 => Err(Error::Full),
            _ => Ok(one[0] as usize),
        }
    }

    /// Frees one index of a registry without a thread cache.
    pub fn push(&self, index: usize) {
        self.give(std::iter::once(index as u32));
    }

    /// Every index ever handed out, for tests.
    #[cfg(test)]
    pub fn high_water(&self) -> usize {
        self.inner.lock().next
    }
}

impl Shared {
    /// Adds up to `n` never used indices under the freed ones, allocating
    /// their pages and setting their slots to generation `base`.
    ///
    /// The slots are set here, under the lock and before any of these
    /// indices is in the list, rather than when their page is allocated:
    /// a page comes zeroed and untouched (see
    /// [`page_memory`](crate::page_memory)), and the slots not handed out
    /// yet stay untouched, costing no resident memory.
    fn grow(&mut self, pages: &Pages, base: u32, n: usize) {
        let fresh = self.next..(self.next + n).min(Layout::NATIVE.max_index() + 1);
        for index in fresh.clone() {
            pages
                .ensure(index, base)
                .expect("every index up to max_index has a page")
                .set_fresh(base);
        }
        self.next = fresh.end;
        // Ordered so that indices popped one after the other are two slots
        // apart: two handles saved back to back then never share the pair
        // of cache lines that x86 prefetches together.
        let odd = fresh.clone().filter(|i| i % 2 == 1).rev();
        let even = fresh.filter(|i| i % 2 == 0).rev();
        let order: Vec<u32> = odd.chain(even).map(|i| i as u32).collect();
        self.freed.splice(0..0, order);
    }
}

/// This thread's free indices of the global registry: `slots[..len]`,
/// the most recently freed last, or `len` is `FRESH` or `CLOSED`.
struct Cache {
    len: Cell<usize>,
    slots: [Cell<u32>; CAP],
}

/// Gives this thread's cached indices back when its thread-locals are
/// destroyed, and closes the cache.
struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        let (indices, len) = CACHE.with(|cache| {
            let len = cache.len.replace(CLOSED).min(CAP);
            (cache.slots.each_ref().map(Cell::get), len)
        });
        crate::Registry::global()
            .free_list()
            .give(indices.into_iter().take(len));
    }
}

thread_locals! {
    static CACHE: Cache = const {
        Cache {
            len: Cell::new(FRESH),
            slots: [const { Cell::new(0) }; CAP],
        }
    };
    static FLUSH: Flush = const { Flush };
}

/// A free index of the global registry: from this thread's cache, refilled
/// in batches.
#[inline(always)]
pub(crate) fn pop_global(list: &FreeList, pages: &Pages) -> Result<usize, Error> {
    let cache = cache();
    let len = cache.len.get();
    // `len - 1 < CAP`: neither empty, fresh nor closed.
    match cache.slots.get(len.wrapping_sub(1)) {
        Some(index) => {
            cache.len.set(len - 1);
            Ok(index.get() as usize)
        }
        None => pop_slow(cache, list, pages),
    }
}

/// This thread's cache.
#[inline(always)]
fn cache() -> &'static Cache {
    let cache = CACHE.with(ptr::from_ref);
    // SAFETY: `CACHE` is a `const` thread-local without a destructor, so
    // its storage is valid, and never destroyed, for as long as this
    // thread runs; the reference never leaves this module, and every use
    // of it ends before the function that got it returns, on this thread.
    // It is shared and the fields are `Cell`s: re-entrant uses are fine.
    unsafe { &*cache }
}

/// [`pop_global`] from an empty or closed cache.
#[cold]
#[inline(never)]
fn pop_slow(cache: &Cache, list: &FreeList, pages: &Pages) -> Result<usize, Error> {
    if !open(cache) {
        return list.pop(pages, 0);
    }
    if let Some(index) = cache.len.get().checked_sub(1) {
        // Filled meanwhile (only by a re-entrant push).
        cache.len.set(index);
        return Ok(cache.slots[index].get() as usize);
    }
    let mut batch = [0u32; BATCH];
    let moved = list.take_into(pages, 0, &mut batch);
    let Some((&first, rest)) = batch[..moved].split_last() else {
        return Err(Error::Full);
    };
    // The rest in order, so that the next pops come out as the shared
    // list would have handed them out.
    for &index in rest {
        push_cached(cache, list, index as usize);
    }
    Ok(first as usize)
}

/// Frees an index of the global registry into this thread's cache.
#[inline(always)]
pub(crate) fn push_global(list: &FreeList, index: usize) {
    push_cached(cache(), list, index)
}

#[inline(always)]
fn push_cached(cache: &Cache, list: &FreeList, index: usize) {
    let len = cache.len.get();
    match cache.slots.get(len) {
        Some(slot) => {
            slot.set(index as u32);
            cache.len.set(len + 1);
        }
        None => push_slow(cache, list, index),
    }
}

/// [`push_global`] into a full or closed cache.
#[cold]
#[inline(never)]
fn push_slow(cache: &Cache, list: &FreeList, index: usize) {
    if !open(cache) {
        return list.push(index);
    }
    let len = cache.len.get();
    if len >= CAP {
        // Full: the older half goes back to the shared list.
        let older: [u32; BATCH] = std::array::from_fn(|i| cache.slots[i].get());
        for to in 0..CAP - BATCH {
            cache.slots[to].set(cache.slots[to + BATCH].get());
        }
        cache.len.set(CAP - BATCH);
        list.give(older.into_iter());
    }
    push_cached(cache, list, index);
}

/// Whether the cache serves (its length is in `0..=CAP`), registering its
/// [`Flush`] on first use; closes it if that is too late.
#[cold]
fn open(cache: &Cache) -> bool {
    match cache.len.get() {
        CLOSED => false,
        FRESH => {
            if FLUSH.try_with(|_| ()).is_ok() {
                cache.len.set(0);
                true
            } else {
                // Thread-local teardown: no destructor would give the
                // indices back.
                cache.len.set(CLOSED);
                false
            }
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_indices_come_two_apart_then_reused_ones_first() {
        let (list, pages) = (FreeList::new(), Pages::new());
        let popped: Vec<usize> = (0..4).map(|_| list.pop(&pages, 0).unwrap()).collect();
        assert_eq!(popped, [0, 2, 4, 6]);
        assert!(pages.get(BATCH - 1).is_some());
        assert_eq!(list.high_water(), BATCH);
        list.push(2);
        assert_eq!(list.pop(&pages, 0), Ok(2));
        let mut out = Vec::new();
        assert_eq!(list.take(&pages, 0, &mut out, BATCH), BATCH);
        assert_eq!(list.high_water(), 2 * BATCH);
    }

    /// Runs `f` on a fresh thread with a cache over a private list, and
    /// empties the cache before the thread ends, so that its `Flush` gives
    /// nothing to the global registry.
    fn on_fresh_thread(f: impl FnOnce(&FreeList, &Pages) + Send) {
        let (list, pages) = (FreeList::new(), Pages::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(cache().len.get(), FRESH);
                f(&list, &pages);
                let len = cache().len.get();
                if len != CLOSED {
                    cache().len.set(0);
                }
            });
        });
    }

    fn shared_len(list: &FreeList) -> usize {
        list.inner.lock().freed.len()
    }

    #[test]
    fn the_cache_hands_out_what_the_shared_list_would_in_the_same_order() {
        on_fresh_thread(|list, pages| {
            let reference = FreeList::new();
            let expected: Vec<usize> = (0..BATCH + 3)
                .map(|_| reference.pop(&Pages::new(), 0).unwrap())
                .collect();
            let got: Vec<usize> = (0..BATCH + 3)
                .map(|_| pop_global(list, pages).unwrap())
                .collect();
            assert_eq!(got, expected);
            // Two refills of a batch each: the second batch is partly cached.
            assert_eq!(cache().len.get(), BATCH - 3);
            assert_eq!(list.high_water(), 2 * BATCH);
        });
    }

    #[test]
    fn pushes_are_popped_last_in_first_out_and_a_full_cache_gives_half_back() {
        on_fresh_thread(|list, pages| {
            // A thread that only frees: the first push opens the cache.
            push_global(list, 1000);
            assert_eq!(cache().len.get(), 1);
            for i in 1..CAP {
                push_global(list, 1000 + i);
            }
            assert_eq!((cache().len.get(), shared_len(list)), (CAP, 0));
            push_global(list, 5000);
            // The older half went back; the newest stay cached.
            assert_eq!((cache().len.get(), shared_len(list)), (BATCH + 1, BATCH));
            assert_eq!(pop_global(list, pages), Ok(5000));
            assert_eq!(pop_global(list, pages), Ok(1000 + CAP - 1));
            let older = list.inner.lock().freed.clone();
            assert_eq!(older, (1000..1000 + BATCH as u32).collect::<Vec<u32>>());
        });
    }

    #[test]
    fn a_closed_cache_uses_the_shared_list() {
        on_fresh_thread(|list, pages| {
            cache().len.set(CLOSED);
            let index = pop_global(list, pages).unwrap();
            assert_eq!(cache().len.get(), CLOSED);
            // `pop` grew the shared list by a batch and took one.
            assert_eq!(shared_len(list), BATCH - 1);
            push_global(list, index);
            assert_eq!(shared_len(list), BATCH);
            assert_eq!(cache().len.get(), CLOSED);
        });
    }

    #[test]
    fn a_thread_that_frees_gives_its_cache_back_when_it_ends() {
        // Through the global registry, as users do: the thread unrefs
        // values saved here, and its cache goes back to the shared list.
        let r = crate::Registry::global();
        let handles: Vec<usize> = (0..3).map(|i| r.save(i) as usize).collect();
        std::thread::spawn(move || {
            for p in handles {
                r.unref(std::ptr::without_provenance_mut(p)).unwrap();
            }
            assert_eq!(cache().len.get(), 3);
        })
        .join()
        .unwrap();
    }
}
