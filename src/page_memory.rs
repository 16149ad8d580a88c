//! Where a page's memory comes from.
//!
//! A page of slots must be zeroed (all-zero bytes are a vacant slot at
//! generation 0) and 64-byte aligned, and it should cost RAM only for the
//! slots actually handed out: the free list writes a slot's word only when
//! it first hands its index out, so a page nobody wrote is address space,
//! not memory. Three sources, chosen at compile time:
//!
//! * **The OS** (64-bit Linux on x86_64 and aarch64): an anonymous private
//!   `mmap` of exactly the page's bytes. It is page-aligned (so
//!   slot-aligned), zero, and untouched until written. With 4 KiB OS pages
//!   (x86_64 always; most aarch64 kernels) every page is a whole number of
//!   them (64 slots of 64 bytes at least), so nothing but slots is ever
//!   resident: no allocator header, no padding. This is what makes a live
//!   handle cost 64 bytes of anonymous resident memory (`RssAnon`; the
//!   kernel's page tables add 8 bytes per 4 KiB, which it counts apart).
//!   On an aarch64 kernel with 16 or 64 KiB pages, the first, smaller pages
//!   each round up to one OS page once touched (a fixed cost, not one per
//!   handle). With transparent huge pages set to `always` (not the usual
//!   `madvise`), the kernel may back a range of pages with 2 MiB ones, and
//!   the untouched tail of the last page then becomes resident with them.
//! * **The allocator** (elsewhere, and under Miri): `alloc_zeroed` with
//!   room to align the slots by hand. A large zeroed allocation is fresh
//!   pages too, but the allocator's header puts the last slot of each
//!   page on one more OS page (0.25 B per handle).
//! * **Boxed slots** under loom, whose atomics carry bookkeeping that zero
//!   bytes are not: every slot is built, at generation `base`.
//!
//! `new_page` and `free_page` are the whole interface; pages are freed only
//! when their registry is dropped.

use crate::slot::Slot;

#[cfg(not(all(loom, test)))]
const _: () = {
    // All-zero bytes are a valid `Slot`, so a zeroed page's `len` slots are
    // initialised, field by field: `state` is an `AtomicUsize`, which has
    // the layout of a `usize` (zero: Vacant(0)); `vtable` and `site` are
    // `AtomicPtr`s, with the layout of a raw pointer (zero: null, "no
    // value", as `Slot::vacant` writes); `value` is a `sync::UnsafeCell`
    // (in this build a struct whose one field is a `std::cell::UnsafeCell`,
    // which has its content's layout) of a `MaybeUninit`, valid with any
    // bytes. No field has a niche or an invariant that zero breaks, and
    // `Slot` has no padding (three words, then 64 - 3 words of storage).
    // Slots have no drop glue either (values are dropped by the registry),
    // so a page is freed without visiting its slots.
    assert!(!std::mem::needs_drop::<Slot>());
    assert!(std::mem::size_of::<Slot>() == 64 && std::mem::align_of::<Slot>() == 64);
};

/// Anonymous mappings straight from the OS.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_pointer_width = "64",
    not(miri),
    not(all(loom, test))
))]
mod source {
    use super::Slot;
    use std::ffi::{c_int, c_long, c_void};

    // The C library's own declarations (std links it already); `off_t` is
    // `long` on these 64-bit Linux targets, for glibc and musl alike (the
    // `target_pointer_width` keeps out x32 and aarch64 ILP32, whose `long`
    // is 32 bits).
    unsafe extern "C" {
        fn mmap(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            offset: c_long,
        ) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> c_int;
    }
    // The values of Linux's generic ABI, which x86_64 and aarch64 share.
    const PROT_READ: c_int = 0x1;
    const PROT_WRITE: c_int = 0x2;
    const MAP_PRIVATE: c_int = 0x02;
    const MAP_ANONYMOUS: c_int = 0x20;

    fn bytes(len: usize) -> usize {
        len.checked_mul(std::mem::size_of::<Slot>())
            .expect("a page's size fits in usize")
    }

    /// A page of `len` vacant slots (see the module notes).
    pub(crate) fn new_page(len: usize, _base: u32) -> *mut Slot {
        let bytes = bytes(len);
        // SAFETY: a new anonymous private mapping (no address hint, no
        // file): it cannot alias any memory of the program.
        let first = unsafe {
            mmap(
                std::ptr::null_mut(),
                bytes,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        // `MAP_FAILED` is `(void*)-1`. Null is not an answer `mmap` gives
        // without `MAP_FIXED` unless the system lets processes map page
        // zero (`vm.mmap_min_addr` = 0); refusing it then only leaks that
        // one mapping, while a null page would read as "no page".
        if first.addr() == usize::MAX || first.is_null() {
            // Out of address space, or a refusal (a limit): what the
            // allocator's path would report too.
            let layout = std::alloc::Layout::from_size_align(bytes, 64)
                .expect("a page's size fits in isize");
            std::alloc::handle_alloc_error(layout);
        }
        // A mapping starts on an OS page, which is a multiple of 4 KiB.
        debug_assert_eq!(first.addr() % std::mem::align_of::<Slot>(), 0);
        first.cast()
    }

    /// Unmaps a page of `new_page`.
    ///
    /// # Safety
    /// `first` came from `new_page(len, _)` and nothing refers to the page.
    pub(crate) unsafe fn free_page(first: *mut Slot, len: usize) {
        // SAFETY: exactly the mapping `new_page` made, per the caller no
        // longer referred to.
        let failed = unsafe { munmap(first.cast(), bytes(len)) } != 0;
        // Only an invalid range fails, which `new_page`'s would not be;
        // nothing to do about it in a destructor but keep the mapping.
        debug_assert!(!failed, "munmap of a registry page failed");
    }
}

/// The allocator, with the slots aligned by hand.
#[cfg(all(
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_pointer_width = "64",
        not(miri)
    )),
    not(all(loom, test))
))]
mod source {
    use super::Slot;
    use std::mem::{align_of, size_of};

    /// The layout of a page of `len` slots.
    ///
    /// Word-aligned, not slot-aligned, with room to align the slots by
    /// hand: the system allocator serves `alloc_zeroed` with `calloc`
    /// (fresh, untouched pages of the OS for a large size) only up to its
    /// minimum alignment, and otherwise allocates and writes zeros over the
    /// whole block. The pointer the allocator returned is kept in the word
    /// before the first slot.
    fn page_layout(len: usize) -> std::alloc::Layout {
        let bytes = len
            .checked_mul(size_of::<Slot>())
            .and_then(|b| b.checked_add(align_of::<Slot>() + size_of::<usize>()))
            .expect("a page's size fits in usize");
        std::alloc::Layout::from_size_align(bytes, align_of::<usize>())
            .expect("a page's size fits in isize")
    }

    /// How far past the allocation its first slot is: at least a word (for
    /// the stored pointer), and slot-aligned.
    fn page_pad(raw: *mut u8) -> usize {
        let addr = raw.addr();
        (addr + size_of::<usize>()).next_multiple_of(align_of::<Slot>()) - addr
    }

    /// A page of `len` vacant slots (see the module notes).
    pub(crate) fn new_page(len: usize, _base: u32) -> *mut Slot {
        let layout = page_layout(len);
        // SAFETY: `layout` has a nonzero size (at least the pad).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        if raw.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let pad = page_pad(raw);
        // SAFETY: `pad` is at most a word plus a slot's alignment, and
        // `page_layout` reserved that much before the `len` slots.
        let first = unsafe { raw.add(pad) };
        // SAFETY: the word before `first` is in the allocation (`pad` is at
        // least a word) and word-aligned (`first` is slot-aligned); it is
        // nobody's but ours. It lies on the page's first OS page, whose
        // slots are the first ones handed out anyway.
        unsafe { first.sub(size_of::<usize>()).cast::<*mut u8>().write(raw) };
        first.cast::<Slot>()
    }

    /// Frees a page of `new_page`.
    ///
    /// # Safety
    /// `first` came from `new_page(len, _)` and nothing refers to the page.
    pub(crate) unsafe fn free_page(first: *mut Slot, len: usize) {
        // SAFETY: `new_page` stored the allocation's pointer in the word
        // before the first slot, and allocated it with this layout.
        unsafe {
            let raw = first
                .cast::<u8>()
                .sub(size_of::<usize>())
                .cast::<*mut u8>()
                .read();
            std::alloc::dealloc(raw, page_layout(len));
        }
    }
}

/// Boxed slots, for loom.
#[cfg(all(loom, test))]
mod source {
    use super::Slot;

    /// Under the model the atomics and the cell are loom's, which hold
    /// bookkeeping that zeroed memory is not: every slot is built, at
    /// generation `base` (which the free list stores again when it hands
    /// the index out: harmless).
    pub(crate) fn new_page(len: usize, base: u32) -> *mut Slot {
        let slots: Box<[Slot]> = (0..len).map(|_| Slot::vacant(base)).collect();
        Box::into_raw(slots).cast::<Slot>()
    }

    /// Frees a page of `new_page`.
    ///
    /// # Safety
    /// `first` came from `new_page(len, _)` and nothing refers to the page.
    pub(crate) unsafe fn free_page(first: *mut Slot, len: usize) {
        let slice = std::ptr::slice_from_raw_parts_mut(first, len);
        // SAFETY: made by `Box::into_raw` of a slice of this length.
        drop(unsafe { Box::from_raw(slice) });
    }
}

pub(crate) use source::{free_page, new_page};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::atomic::Ordering;

    #[test]
    #[cfg_attr(loom, ignore = "loom's atomics work only inside a model")]
    fn pages_are_zeroed_aligned_and_freed() {
        for len in [64, 128, 16_384] {
            let first = new_page(len, 0);
            assert_eq!(first.addr() % 64, 0);
            // SAFETY: `len` slots, all vacant at generation 0.
            let slots = unsafe { std::slice::from_raw_parts(first, len) };
            for slot in [&slots[0], &slots[len / 2], &slots[len - 1]] {
                assert_eq!(slot.state.load(Ordering::Relaxed), 0);
                assert!(slot.vtable().is_none() && slot.site().is_none());
            }
            slots[len - 1].state.store(7, Ordering::Relaxed);
            // SAFETY: from `new_page(len, _)`, and `slots` is not used after.
            unsafe { free_page(first, len) };
        }
    }
}
