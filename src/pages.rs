//! Where slots live: pages that never move, found through a fixed directory.
//!
//! A lookup must reach a slot without any lock, and with any integer C
//! hands back it must touch only valid memory. So slots live in pages that
//! are allocated once and never moved or freed while the registry lives,
//! and an index is turned into a page and an offset by arithmetic alone.
//! The directory is a fixed array of page pointers, each null until its
//! page is allocated (under the free list's lock, see [`free`](crate::free))
//! and published with `Release`; a lookup loads it with `Acquire`, and a
//! null page means the index was never handed out (`Invalid`).
//!
//! The first pages double in size (64, 128, … 16 384 slots) so that a small
//! registry costs a few kilobytes; past that, pages are 16 384 slots (1 MiB)
//! each, so that spare capacity never exceeds one page however many handles
//! are live: 64 bytes per handle plus at most one partly used page.
//!
//! That partly used page costs address space, not memory: a page comes
//! zeroed and untouched (all-zero bytes are a vacant slot at generation 0;
//! see [`page_memory`](crate::page_memory) for where it comes from), and
//! only the free list writes a slot's word, when it first hands its index
//! out (see [`free`](crate::free)), so the slots past the high-water mark
//! are never resident. Reading one (`check` of a forged handle, the
//! leak report, a registry's drop) maps the shared zero page; a forged
//! handle given to `restore`, `restore_ref`, `take` or `unref` makes the
//! one OS page it names resident, since their compare-exchange is a write
//! for the MMU even when it fails (at most the page's 1 MiB in all;
//! `tests/adversarial_round3.rs` measures it). A lookup answers for a zero
//! word as for Vacant(`base`): the index was never handed out.

use crate::handle::Layout;
use crate::page_memory::{free_page, new_page};
use crate::slot::Slot;
use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicPtr;

const FIRST_SHIFT: u32 = 6;
/// Slots in the first page.
pub(crate) const FIRST: usize = 1 << FIRST_SHIFT;
/// How many pages double before sizes stay at `BIG`.
const GROWING: usize = 9;
/// Slots in every page past the growing ones.
const BIG: usize = FIRST << (GROWING - 1);
/// Slots in all growing pages together.
const GROWING_TOTAL: usize = FIRST * ((1 << GROWING) - 1);
/// Every index a handle can name: `0..=Layout::NATIVE.max_index()`.
const INDICES: usize = Layout::NATIVE.max_index() + 1;
/// Directory entries: enough pages for every index.
pub(crate) const PAGES: usize = GROWING + (INDICES.saturating_sub(GROWING_TOTAL)).div_ceil(BIG);

/// The page and offset of slot `index`.
///
/// The first page is a case of its own, though the growing pages' formula
/// covers it: a registry's first 64 handles live there, and the bit scan
/// that finds a growing page sits on the chain of dependent instructions
/// from the handle to its slot's state word, which every lookup waits on.
/// Skipping it there took 0.17 to 0.27 off the demo library's parse time
/// with plain `restore`, in raw-pointer units, in each of ten processes
/// (BENCHMARKS.md, "The first page").
#[inline]
pub(crate) const fn locate(index: usize) -> (usize, usize) {
    if index < FIRST {
        (0, index)
    } else if index < GROWING_TOTAL {
        let shifted = index + FIRST;
        let log = usize::BITS - 1 - shifted.leading_zeros();
        ((log - FIRST_SHIFT) as usize, shifted - (1 << log))
    } else {
        let past = index - GROWING_TOTAL;
        (GROWING + past / BIG, past % BIG)
    }
}

/// Slots in page `page`.
pub(crate) const fn page_len(page: usize) -> usize {
    if page < GROWING {
        FIRST << page
    } else {
        BIG
    }
}

/// The first index of page `page`.
const fn page_start(page: usize) -> usize {
    if page < GROWING {
        FIRST * ((1 << page) - 1)
    } else {
        GROWING_TOTAL + (page - GROWING) * BIG
    }
}

/// A registry's pages.
pub(crate) struct Pages {
    directory: [AtomicPtr<Slot>; PAGES],
    /// Whether page 0 is a [`StaticPage`], which `drop` must not free.
    static_first: bool,
}

/// A first page that is a `static`: the global registry's.
///
/// Its slots are at addresses the code knows, so the global registry's
/// first 64 handles are found from the index alone: no directory load,
/// no null check (see `Registry::slot`). The directory's entry 0 points
/// here too, so every other path (`ensure`, `slots`, `index_of`) treats it
/// as any page. Zeroed, it sits in `.bss`: like a mapped page, it costs
/// memory only for the slots the free list has written.
#[cfg(not(all(loom, test)))]
#[repr(transparent)]
pub(crate) struct StaticPage([Slot; FIRST]);

#[cfg(not(all(loom, test)))]
impl StaticPage {
    /// A page of vacant slots at generation 0.
    pub const fn zeroed() -> StaticPage {
        // SAFETY: all-zero bytes are a valid vacant `Slot` at generation 0
        // (argued field by field in `page_memory`, whose compile-time
        // assertions hold in this build), so an array of them is a valid
        // `StaticPage`.
        unsafe { std::mem::zeroed() }
    }

    /// The slot at `index`, which must be below `FIRST`.
    #[inline(always)]
    pub fn get(&self, index: usize) -> Option<&Slot> {
        self.0.get(index)
    }
}

impl Pages {
    pub const fn new() -> Pages {
        Pages {
            directory: [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES],
            static_first: false,
        }
    }

    /// Pages whose first page is `first`, already in place.
    #[cfg(not(all(loom, test)))]
    pub const fn with_static_first(first: &'static StaticPage) -> Pages {
        let mut pages = Pages::new();
        // Never written through this pointer but as `&Slot`, whose fields
        // are all atomics or `UnsafeCell`s: a `static`'s interior
        // mutability, as any other `&Slot` of it would use.
        let first: *const StaticPage = first;
        pages.directory[0] = AtomicPtr::new(first.cast_mut().cast());
        pages.static_first = true;
        pages
    }

    /// The slot at `index`, if its page exists.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Slot> {
        let (page, offset) = locate(index);
        let first = self.directory.get(page)?.load(Ordering::Acquire);
        if first.is_null() {
            return None;
        }
        // SAFETY: a non-null entry points to a page of `page_len(page)`
        // slots that lives as long as `self` (freed only in `drop`), and
        // `locate` keeps `offset` below that length.
        Some(unsafe { &*first.add(offset) })
    }

    /// Allocates the page holding `index` if needed, its slots vacant (at
    /// generation 0, or `base` under loom: see [`page_memory`](crate::page_memory)).
    /// Returns the slot at `index`, or `None` when `index` is past every
    /// page. The caller sets each index's word to `base` before handing it
    /// out ([`Slot::set_fresh`]).
    ///
    /// Only called under the free list's lock, so no two threads allocate
    /// the same page.
    pub fn ensure(&self, index: usize, base: u32) -> Option<&Slot> {
        let (page, offset) = locate(index);
        let entry = self.directory.get(page)?;
        let mut first = entry.load(Ordering::Relaxed);
        if first.is_null() {
            first = new_page(page_len(page), base);
            // Release: the slots' initial words are visible to whoever
            // loads the pointer with `Acquire`.
            entry.store(first, Ordering::Release);
        }
        // SAFETY: as in `get`. `Relaxed` is enough for the load above:
        // entries are written only under the free list's lock, which we
        // hold, so the lock orders every earlier write of this entry (and
        // of its page's slots) before it.
        Some(unsafe { &*first.add(offset) })
    }

    /// The index of `slot`, if it is one of ours.
    pub fn index_of(&self, slot: &Slot) -> Option<usize> {
        let addr = slot as *const Slot as usize;
        self.directory.iter().enumerate().find_map(|(page, entry)| {
            let first = entry.load(Ordering::Acquire) as usize;
            let offset = addr.wrapping_sub(first) / std::mem::size_of::<Slot>();
            (first != 0 && addr >= first && offset < page_len(page))
                .then(|| page_start(page) + offset)
        })
    }

    /// Every allocated slot with its index.
    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.directory.iter().enumerate().flat_map(|(page, entry)| {
            let first = entry.load(Ordering::Acquire);
            let len = if first.is_null() { 0 } else { page_len(page) };
            // SAFETY: as in `get`.
            (0..len).map(move |offset| (page_start(page) + offset, unsafe { &*first.add(offset) }))
        })
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        for (page, entry) in self.directory.iter_mut().enumerate() {
            let first = *entry.get_mut();
            let is_static = page == 0 && self.static_first;
            if !first.is_null() && !is_static {
                // SAFETY: made by `new_page` with this length in `ensure`;
                // nothing refers to it once the registry is dropped.
                unsafe { free_page(first, page_len(page)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_every_index_once_in_order() {
        let mut expected = (0, 0);
        for index in 0..GROWING_TOTAL + 3 * BIG {
            assert_eq!(locate(index), expected, "index {index}");
            assert_eq!(page_start(expected.0) + expected.1, index);
            expected.1 += 1;
            if expected.1 == page_len(expected.0) {
                expected = (expected.0 + 1, 0);
            }
        }
        let (last, _) = locate(Layout::NATIVE.max_index());
        assert_eq!(last, PAGES - 1);
    }

    #[test]
    fn tail_slots_read_vacant_and_fresh_indices_start_at_base() {
        use crate::free::FreeList;
        use crate::slot::{generation, LIVE};
        let (pages, free) = (Pages::new(), FreeList::new());
        let base = 9;
        let first = free.pop(&pages, base).unwrap();
        let slot = pages.get(first).unwrap();
        assert_eq!(slot.state.load(Ordering::Relaxed), crate::slot::at(base));
        // The batch the free list took is set; the rest of the page is not
        // (outside loom), and reads as vacant: not live, never borrowed.
        let handed = free.high_water();
        assert!(handed < page_len(0));
        for (index, slot) in pages.slots() {
            let word = slot.state.load(Ordering::Relaxed);
            assert_eq!(word & (LIVE | crate::slot::SHARED), 0, "index {index}");
            assert!(!crate::slot::is_borrowed(word), "index {index}");
            assert!(slot.vtable().is_none() && slot.site().is_none());
            let expected = if index < handed || cfg!(loom) {
                base
            } else {
                0
            };
            assert_eq!(generation(word), expected, "index {index}");
        }
        assert_eq!(pages.slots().count(), page_len(0));
        // Every index handed out later, into the tail or a new page, is
        // at `base` when the saver gets it.
        for _ in 0..2 * page_len(0) {
            let index = free.pop(&pages, base).unwrap();
            let word = pages.get(index).unwrap().state.load(Ordering::Relaxed);
            assert_eq!(word, crate::slot::at(base), "index {index}");
        }
        assert!(free.high_water() > page_len(0));
    }

    #[test]
    fn pages_appear_when_ensured() {
        let pages = Pages::new();
        assert!(pages.get(0).is_none());
        let slot = pages.ensure(70, 5).unwrap();
        assert!(pages.get(0).is_none());
        assert!(std::ptr::eq(pages.get(70).unwrap(), slot));
        // Vacant, at generation 0 until the free list hands it out (at 5
        // under loom, whose pages are built slot by slot).
        let word = slot.state.load(Ordering::Relaxed);
        assert_eq!(word & crate::slot::LIVE, 0);
        assert!([0, 5].contains(&crate::slot::generation(word)));
        assert_eq!(pages.slots().count(), 128);
        assert!(pages.slots().any(|(i, s)| i == 70 && std::ptr::eq(s, slot)));
    }
}
