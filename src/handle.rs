//! How a handle is packed into a `void*`.
//!
//! A handle is an integer, never an address: C may copy it, store it and
//! hand it back, but dereferencing it is meaningless and nothing in this
//! crate ever does. It is cast to `*mut c_void` only because that is the
//! type of every C `user_data` slot.
//!
//! # Layout on 64-bit targets
//!
//! ```text
//!  63                               32 31        24 23                      0
//! +-----------------------------------+------------+-------------------------+
//! |        generation (32 bits)       | registry   |  slot index + 1         |
//! |                                   |  id (8)    |  (24 bits)              |
//! +-----------------------------------+------------+-------------------------+
//! ```
//!
//! * **slot index + 1** (bits 0–23): the slot's index, plus one, so that
//!   the handle is never NULL (zero is [`Error::Null`](crate::Error::Null)
//!   when the whole word is zero, and [`Error::Invalid`](crate::Error::Invalid)
//!   when only these bits are). The index finds the slot's page and offset
//!   by arithmetic (see `pages.rs`). Up to about 16.7 million values can be
//!   live in one registry at once; beyond, `try_save` answers `Full` and
//!   `save` panics.
//! * **registry id** (bits 24–31): which [`Registry`](crate::Registry)
//!   issued the handle. The global registry is id 1, id 0 is never issued,
//!   so at most 254 other registries can be alive at once. Ids are reused
//!   after a registry is dropped, but the new registry's generations start
//!   past every generation the old one issued, so an old handle is `Stale`
//!   there, never a hit.
//! * **generation** (bits 32–63): how many times this slot has been emptied
//!   before. A handle matches only while its slot holds the value it was
//!   issued for; after `take`/`unref` the slot's generation moves on and the
//!   old handle is `Stale` forever, even when the slot holds a new value.
//!   A slot survives 2³² − 1 reuses. When its generation would wrap the slot
//!   is **retired** instead: it stays occupied by a tombstone and is never
//!   handed out again, so a wrap can cost memory (one slot per 2³² frees
//!   of that slot) but never resolve an old handle to a new value.
//!
//! # Layout on 32-bit targets
//!
//! Only 32 bits are available, so the same scheme is narrower: 16 bits of
//! index (65 535 live values), 4 bits of registry id (14 registries besides
//! the global one) and 12 bits of generation (a slot is retired after 4 095
//! reuses). Retirement keeps the guarantee intact, but a program that saves
//! and frees hundreds of millions of handles over its lifetime will
//! eventually see `Full` on a 32-bit target. 64-bit targets are the ones to
//! use for long-running processes.

use std::ffi::c_void;

/// Bit widths of the three fields of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub index_bits: u32,
    pub registry_bits: u32,
    pub generation_bits: u32,
}

impl Layout {
    #[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
    pub const BITS64: Layout = Layout {
        index_bits: 24,
        registry_bits: 8,
        generation_bits: 32,
    };
    #[cfg_attr(not(target_pointer_width = "32"), allow(dead_code))]
    pub const BITS32: Layout = Layout {
        index_bits: 16,
        registry_bits: 4,
        generation_bits: 12,
    };

    /// The layout of this target's `usize`.
    #[cfg(target_pointer_width = "64")]
    pub const NATIVE: Layout = Layout::BITS64;
    #[cfg(target_pointer_width = "32")]
    pub const NATIVE: Layout = Layout::BITS32;

    const fn mask(bits: u32) -> u64 {
        (1u64 << bits) - 1
    }

    /// The largest slot index a handle can name (index + 1 must fit).
    pub const fn max_index(self) -> usize {
        (Self::mask(self.index_bits) - 1) as usize
    }

    /// The largest registry id (0 is never issued).
    pub const fn max_registry(self) -> u32 {
        Self::mask(self.registry_bits) as u32
    }

    /// The largest generation; a slot at this generation is retired when freed.
    pub const fn max_generation(self) -> u32 {
        Self::mask(self.generation_bits) as u32
    }

    /// Packs the fields. Callers guarantee each fits its width.
    pub const fn encode(self, index: usize, registry: u32, generation: u32) -> u64 {
        (index as u64 + 1)
            | ((registry as u64) << self.index_bits)
            | ((generation as u64) << (self.index_bits + self.registry_bits))
    }

    /// Splits a handle into its fields, or says why it cannot be one.
    pub const fn decode(self, raw: u64) -> Result<Decoded, crate::Error> {
        if raw == 0 {
            return Err(crate::Error::Null);
        }
        let total = self.index_bits + self.registry_bits + self.generation_bits;
        if total < 64 && raw >> total != 0 {
            return Err(crate::Error::Invalid);
        }
        let index_plus_one = raw & Self::mask(self.index_bits);
        let registry = (raw >> self.index_bits) & Self::mask(self.registry_bits);
        if index_plus_one == 0 || registry == 0 {
            return Err(crate::Error::Invalid);
        }
        Ok(Decoded {
            index: (index_plus_one - 1) as usize,
            registry: registry as u32,
            generation: (raw >> (self.index_bits + self.registry_bits)) as u32,
        })
    }
}

impl Layout {
    /// The index and generation of `raw` if it names registry `registry`
    /// (never 0) and a non-zero index: the checks of [`decode`](Layout::decode)
    /// that a valid handle passes, fused for the fast path. `None` means
    /// "ask `decode` why".
    #[inline]
    pub const fn split_for(self, raw: usize, registry: u32) -> Option<(usize, u32)> {
        let raw = raw as u64;
        let index_plus_one = raw & Self::mask(self.index_bits);
        let own = (raw >> self.index_bits) & Self::mask(self.registry_bits);
        let total = self.index_bits + self.registry_bits + self.generation_bits;
        if own != registry as u64 || index_plus_one == 0 || (total < 64 && raw >> total != 0) {
            return None;
        }
        Some((
            (index_plus_one - 1) as usize,
            (raw >> (self.index_bits + self.registry_bits)) as u32,
        ))
    }
}

/// The fields of a handle that passed the structural checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub index: usize,
    pub registry: u32,
    pub generation: u32,
}

/// Turns an encoded handle into the `void*` C sees.
///
/// `without_provenance_mut` says what this is: an integer wearing a pointer
/// type, which must never be dereferenced.
#[inline]
pub(crate) fn to_ptr(raw: u64) -> *mut c_void {
    // Lossless: `Layout::NATIVE` never sets bits beyond `usize`.
    std::ptr::without_provenance_mut(raw as usize)
}

/// The integer inside a `void*` that C handed back.
#[inline]
pub(crate) fn from_ptr(ptr: *mut c_void) -> u64 {
    ptr.addr() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// The capacities the docs quote (README, this module, `try_save`):
    /// index + 1 must fit the field and never be zero, so one index value
    /// is lost.
    #[test]
    fn capacities_are_the_documented_ones() {
        assert_eq!(Layout::BITS64.max_index() + 1, 16_777_215);
        assert_eq!(Layout::BITS32.max_index() + 1, 65_535);
        assert_eq!(Layout::BITS32.max_registry() - 1, 14);
        assert_eq!(Layout::BITS64.max_registry() - 1, 254);
    }

    #[test]
    fn widths_fill_the_word() {
        for (layout, bits) in [(Layout::BITS64, 64), (Layout::BITS32, 32)] {
            assert_eq!(
                layout.index_bits + layout.registry_bits + layout.generation_bits,
                bits
            );
        }
        assert_eq!(
            Layout::NATIVE.index_bits
                + Layout::NATIVE.registry_bits
                + Layout::NATIVE.generation_bits,
            usize::BITS
        );
    }

    #[test]
    fn round_trips_extremes_in_both_layouts() {
        for layout in [Layout::BITS64, Layout::BITS32] {
            for index in [0, 1, layout.max_index()] {
                for registry in [1, layout.max_registry()] {
                    for generation in [0, 1, layout.max_generation()] {
                        let raw = layout.encode(index, registry, generation);
                        assert_ne!(raw, 0);
                        assert_eq!(
                            layout.decode(raw),
                            Ok(Decoded {
                                index,
                                registry,
                                generation
                            })
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sixty_four_bit_layout_is_as_documented() {
        let raw = Layout::BITS64.encode(0x12_3455, 0xAB, 0xDEAD_BEEF);
        assert_eq!(raw, 0xDEAD_BEEF_AB12_3456);
    }

    #[test]
    fn structural_garbage_is_refused() {
        let l = Layout::BITS64;
        assert_eq!(l.decode(0), Err(Error::Null));
        // index bits zero
        assert_eq!(l.decode(0x0100_0000), Err(Error::Invalid));
        // registry bits zero
        assert_eq!(l.decode(0x1), Err(Error::Invalid));
        // bits above a 32-bit layout
        assert_eq!(Layout::BITS32.decode(1 << 40), Err(Error::Invalid));
    }

    #[test]
    fn the_fast_split_agrees_with_decode() {
        let l = Layout::NATIVE;
        for raw in [
            l.encode(0, 1, 0),
            l.encode(5, 1, 9),
            l.encode(l.max_index(), 1, l.max_generation()),
            l.encode(5, 2, 9),
            0,
            1 << l.index_bits,
            u64::from(u32::MAX),
        ] {
            let fast = l.split_for(raw as usize, 1);
            match l.decode(raw) {
                Ok(d) if d.registry == 1 => assert_eq!(fast, Some((d.index, d.generation))),
                _ => assert_eq!(fast, None, "{raw:#x}"),
            }
        }
    }

    #[test]
    fn pointer_round_trip_is_lossless() {
        let raw = Layout::NATIVE.encode(7, 1, 3);
        assert_eq!(from_ptr(to_ptr(raw)), raw);
    }
}
