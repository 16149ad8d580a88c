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
//! back a batch. The cache's destructor gives its indices back when the
//! thread exits; a save or unref from a thread-local destructor that runs
//! after it simply takes the lock. Other registries can be dropped while
//! threads still run, so they use the shared list directly.

use std::cell::RefCell;

use crate::sync::{thread_locals, Mutex};

use crate::handle::Layout;
use crate::pages::Pages;
use crate::Error;

/// Indices moved between a thread's cache and the shared list at once.
const BATCH: usize = 32;

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
    /// their pages.
    fn grow(&mut self, pages: &Pages, base: u32, n: usize) {
        let fresh = self.next..(self.next + n).min(Layout::NATIVE.max_index() + 1);
        for index in fresh.clone() {
            let allocated = pages.ensure(index, base);
            debug_assert!(allocated, "every index up to max_index has a page");
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

/// This thread's free indices of the global registry.
struct Cache(Vec<u32>);

impl Drop for Cache {
    fn drop(&mut self) {
        crate::Registry::global().free_list().give(self.0.drain(..));
    }
}

thread_locals! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache(Vec::new())) };
}

/// A free index of the global registry: from this thread's cache, refilled
/// in batches.
#[inline]
pub(crate) fn pop_global(list: &FreeList, pages: &Pages) -> Result<usize, Error> {
    let cached = CACHE.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        if let Some(index) = cache.0.pop() {
            return Some(Ok(index as usize));
        }
        Some(match list.take(pages, 0, &mut cache.0, BATCH) {
            0 => Err(Error::Full),
            _ => Ok(cache.0.pop().expect("just refilled") as usize),
        })
    });
    match cached {
        Ok(Some(result)) => result,
        // The cache is gone (thread-local teardown) or in use up the stack.
        _ => list.pop(pages, 0),
    }
}

/// Frees an index of the global registry into this thread's cache.
#[inline]
pub(crate) fn push_global(list: &FreeList, index: usize) {
    let cached = CACHE.try_with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return false;
        };
        cache.0.push(index as u32);
        if cache.0.len() >= 2 * BATCH {
            let keep = cache.0.len() - BATCH;
            list.give(cache.0.drain(keep..));
        }
        true
    });
    if !matches!(cached, Ok(true)) {
        list.push(index);
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
}
