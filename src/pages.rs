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

use crate::handle::Layout;
use crate::slot::Slot;
use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicPtr;

const FIRST_SHIFT: u32 = 6;
/// Slots in the first page.
const FIRST: usize = 1 << FIRST_SHIFT;
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
#[inline]
pub(crate) const fn locate(index: usize) -> (usize, usize) {
    if index < GROWING_TOTAL {
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
}

impl Pages {
    pub const fn new() -> Pages {
        Pages {
            directory: [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES],
        }
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

    /// Allocates the page holding `index` if needed, its slots vacant at
    /// generation `base`. Returns false when `index` is past every page.
    ///
    /// Only called under the free list's lock, so no two threads allocate
    /// the same page.
    pub fn ensure(&self, index: usize, base: u32) -> bool {
        let (page, _) = locate(index);
        let Some(entry) = self.directory.get(page) else {
            return false;
        };
        if entry.load(Ordering::Relaxed).is_null() {
            let slots: Box<[Slot]> = (0..page_len(page)).map(|_| Slot::vacant(base)).collect();
            // Release: the slots' initial words are visible to whoever
            // loads the pointer with `Acquire`.
            entry.store(Box::into_raw(slots).cast::<Slot>(), Ordering::Release);
        }
        true
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
            if !first.is_null() {
                let slice = std::ptr::slice_from_raw_parts_mut(first, page_len(page));
                // SAFETY: made by `Box::into_raw` of a slice of this length in
                // `ensure`; nothing refers to it once the registry is dropped.
                drop(unsafe { Box::from_raw(slice) });
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
    fn pages_appear_when_ensured() {
        let pages = Pages::new();
        assert!(pages.get(0).is_none());
        assert!(pages.ensure(70, 5));
        assert!(pages.get(0).is_none());
        let slot = pages.get(70).unwrap();
        assert_eq!(
            crate::slot::generation(slot.state.load(Ordering::Relaxed)),
            5
        );
        assert_eq!(pages.slots().count(), 128);
        assert!(pages.slots().any(|(i, s)| i == 70 && std::ptr::eq(s, slot)));
    }
}
